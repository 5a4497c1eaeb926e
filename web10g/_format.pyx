# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Rows as delimited text, in C: the logger's hot path (thousands of flows, many
columns, several times a second) must not format values one Python object at a time.

Each column is resolved once per call to one operation (kind x width); per value the
work is a table look-up for the digit count and two digits per step written straight
into the output, with no call into libc (the old loop paid a variable-length memcpy for
each number and another for each separator). Only the columns asked for are read.
"""
import os

import numpy as np
cimport numpy as cnp

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t
from libc.stdlib cimport malloc, free

cnp.import_array()

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include <stdio.h>
    #include <arpa/inet.h>

    /* "00".."99" */
    static const char w10g_d2[201] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    static const uint32_t w10g_p10[10] = {
        1u, 10u, 100u, 1000u, 10000u, 100000u, 1000000u, 10000000u, 100000000u,
        1000000000u};
    /* "0".."255" with their lengths, for dotted quads */
    static char w10g_octet[256][4];
    static uint8_t w10g_octet_len[256];

    static void w10g_fmt_init(void)
    {
        for (int i = 0; i < 256; i++) {
            w10g_octet_len[i] = (uint8_t)snprintf(w10g_octet[i], 4, "%d", i);
        }
    }

    static inline char *w10g_put_u32(char *p, uint32_t v)
    {
        if (v < 10) {
            *p = (char)('0' + v);
            return p + 1;
        }
        /* digits: log10 from the bit length (x 1233 / 4096), corrected by one compare */
        int t = ((32 - __builtin_clz(v)) * 1233) >> 12;
        int n = t + (v >= w10g_p10[t]);
        char *e = p + n, *q = e;
        while (v >= 100) {
            uint32_t r = v % 100;
            v /= 100;
            q -= 2;
            memcpy(q, w10g_d2 + 2 * r, 2);
        }
        if (v >= 10)
            memcpy(q - 2, w10g_d2 + 2 * v, 2);
        else
            q[-1] = (char)('0' + v);
        return e;
    }

    /* exactly 8 digits, zero-padded */
    static inline char *w10g_put_8(char *p, uint32_t v)
    {
        for (int i = 6; i >= 0; i -= 2) {
            memcpy(p + i, w10g_d2 + 2 * (v % 100), 2);
            v /= 100;
        }
        return p + 8;
    }

    static char *w10g_put_u64(char *p, uint64_t v)
    {
        if (v <= UINT32_MAX)
            return w10g_put_u32(p, (uint32_t)v);
        /* above 2^32 (octet counters, rates): the part above 10^8, then 8 digits */
        uint32_t low = (uint32_t)(v % 100000000u);
        p = w10g_put_u64(p, v / 100000000u);
        return w10g_put_8(p, low);
    }

    static inline char *w10g_put_i64(char *p, int64_t s)
    {
        if (s < 0) {
            *p++ = '-';
            return w10g_put_u64(p, (uint64_t)0 - (uint64_t)s);
        }
        return w10g_put_u64(p, (uint64_t)s);
    }

    enum {
        W10G_OP_U8, W10G_OP_U16, W10G_OP_U32, W10G_OP_U64,
        W10G_OP_I8, W10G_OP_I16, W10G_OP_I32, W10G_OP_I64,
        W10G_OP_F32, W10G_OP_F64, W10G_OP_ADDR, W10G_OP_TIME, W10G_OP_STR,
    };

    struct w10g_col {
        int op;
        int width;
        Py_ssize_t off;
        Py_ssize_t aux;             /* W10G_OP_ADDR: the family column's offset */
        const uint8_t *blank;       /* per row: print an empty field (NULL: never) */
    };

    /* The worst-case text of one value of this column, separator excluded. */
    static size_t w10g_col_max(const struct w10g_col *c)
    {
        switch (c->op) {
        case W10G_OP_U8: return 3;
        case W10G_OP_U16: return 5;
        case W10G_OP_U32: return 10;
        case W10G_OP_I8: return 4;
        case W10G_OP_I16: return 6;
        case W10G_OP_I32: return 11;
        case W10G_OP_U64: case W10G_OP_I64: return 20;
        case W10G_OP_F32: case W10G_OP_F64: return 32;     /* snprintf's bound */
        case W10G_OP_ADDR: return 46;                      /* INET6_ADDRSTRLEN */
        case W10G_OP_TIME: return 28;
        default: return (size_t)c->width;
        }
    }

    /* Rows [first, first + n) of the array at base. */
    static char *w10g_format(char *p, const char *base, Py_ssize_t first, Py_ssize_t n,
                             Py_ssize_t itemsize, const struct w10g_col *cols, Py_ssize_t ncol,
                             const char *sep, size_t seplen, const char *end, size_t endlen)
    {
        const char sep0 = seplen ? sep[0] : 0;
        for (Py_ssize_t i = first; i < first + n; i++) {
            const char *rp = base + i * itemsize;
            for (Py_ssize_t j = 0; j < ncol; j++) {
                const struct w10g_col *c = &cols[j];
                if (j) {
                    if (seplen == 1) {
                        *p++ = sep0;
                    } else {
                        memcpy(p, sep, seplen);
                        p += seplen;
                    }
                }
                if (c->blank && c->blank[i])
                    continue;
                const char *v = rp + c->off;
                switch (c->op) {
                case W10G_OP_U8: p = w10g_put_u32(p, *(const uint8_t *)v); break;
                case W10G_OP_U16: { uint16_t x; memcpy(&x, v, 2); p = w10g_put_u32(p, x); break; }
                case W10G_OP_U32: { uint32_t x; memcpy(&x, v, 4); p = w10g_put_u32(p, x); break; }
                case W10G_OP_U64: { uint64_t x; memcpy(&x, v, 8); p = w10g_put_u64(p, x); break; }
                case W10G_OP_I8: p = w10g_put_i64(p, *(const int8_t *)v); break;
                case W10G_OP_I16: { int16_t x; memcpy(&x, v, 2); p = w10g_put_i64(p, x); break; }
                case W10G_OP_I32: { int32_t x; memcpy(&x, v, 4); p = w10g_put_i64(p, x); break; }
                case W10G_OP_I64: { int64_t x; memcpy(&x, v, 8); p = w10g_put_i64(p, x); break; }
                case W10G_OP_F32: {
                    float x;
                    memcpy(&x, v, 4);
                    p += snprintf(p, 32, "%.9g", (double)x);
                    break;
                }
                case W10G_OP_F64: {
                    double x;
                    memcpy(&x, v, 8);
                    p += snprintf(p, 32, "%.17g", x);
                    break;
                }
                case W10G_OP_ADDR: {
                    const uint8_t fam = *(const uint8_t *)(rp + c->aux);
                    const uint8_t *a = (const uint8_t *)v;
                    if (fam == 2) {
                        /* dotted quad from a table: glibc's inet_ntop goes through sprintf */
                        for (int w = 0; w < 4; w++) {
                            if (w)
                                *p++ = '.';
                            memcpy(p, w10g_octet[a[w]], 4);
                            p += w10g_octet_len[a[w]];
                        }
                    } else if (fam == 10 && inet_ntop(fam, a, p, 46) != NULL) {
                        p += strlen(p);
                    }
                    break;
                }
                case W10G_OP_TIME: {
                    int64_t s;
                    memcpy(&s, v, 8);
                    p = w10g_put_u64(p, (uint64_t)(s / 1000000000));
                    /* ".%06u" without snprintf */
                    uint32_t us = (uint32_t)((uint64_t)(s / 1000 % 1000000));
                    *p++ = '.';
                    memcpy(p, w10g_d2 + 2 * (us / 10000), 2);
                    memcpy(p + 2, w10g_d2 + 2 * (us / 100 % 100), 2);
                    memcpy(p + 4, w10g_d2 + 2 * (us % 100), 2);
                    p += 6;
                    break;
                }
                default:
                    for (int k = 0; k < c->width && v[k]; k++)
                        *p++ = v[k];
                    break;
                }
            }
            if (endlen == 1) {
                *p++ = end[0];
            } else {
                memcpy(p, end, endlen);
                p += endlen;
            }
        }
        return p;
    }
    """
    enum:
        W10G_OP_U8, W10G_OP_U16, W10G_OP_U32, W10G_OP_U64
        W10G_OP_I8, W10G_OP_I16, W10G_OP_I32, W10G_OP_I64
        W10G_OP_F32, W10G_OP_F64, W10G_OP_ADDR, W10G_OP_TIME, W10G_OP_STR

    struct w10g_col:
        int op
        int width
        Py_ssize_t off
        Py_ssize_t aux
        const uint8_t *blank

    void w10g_fmt_init()
    size_t w10g_col_max(const w10g_col *c) nogil
    char *w10g_format(char *p, const char *base, Py_ssize_t first, Py_ssize_t n,
                      Py_ssize_t itemsize,
                      const w10g_col *cols, Py_ssize_t ncol, const char *sep, size_t seplen,
                      const char *end, size_t endlen) nogil

w10g_fmt_init()

# column kinds
KIND_UINT, KIND_INT, KIND_FLOAT, KIND_ADDR, KIND_TIME, KIND_STR = range(6)

_INT_OPS = {
    (KIND_UINT, 1): W10G_OP_U8, (KIND_UINT, 2): W10G_OP_U16, (KIND_UINT, 4): W10G_OP_U32,
    (KIND_UINT, 8): W10G_OP_U64, (KIND_INT, 1): W10G_OP_I8, (KIND_INT, 2): W10G_OP_I16,
    (KIND_INT, 4): W10G_OP_I32, (KIND_INT, 8): W10G_OP_I64,
}


# Bytes of worst-case text per chunk when writing to a file (well inside L2).
cdef size_t _FILE_CHUNK = 128 * 1024


def format_rows(cnp.ndarray rows not None, columns, bytes sep=b",", bytes end=b"\n",
                blank=None, file=None):
    """``columns``: [(name, kind)] with kind one of KIND_*; returns the text as bytes.

    KIND_ADDR formats a 16-byte address column with the row's ``family``; KIND_TIME an
    int64 ns timestamp as ``sec.usec``; KIND_STR a NUL-padded bytes column. ``blank``
    maps column names to a boolean array (one per row): True prints an empty field (a
    value the kernel did not report). With ``file`` (a file object, flushed first, or a
    file descriptor) the text is written there straight from the formatter's buffer and
    the number of bytes written is returned instead.
    """
    cdef Py_ssize_t n = rows.shape[0], ncol = len(columns), j
    cdef Py_ssize_t itemsize = rows.dtype.itemsize
    cdef w10g_col *cols = <w10g_col *>malloc(max(ncol, 1) * sizeof(w10g_col))
    cdef size_t per_row, cap
    cdef Py_ssize_t chunk, first, count, written
    cdef char *start
    cdef char *p
    cdef const char *base
    cdef cnp.ndarray mask
    cdef list keep = []
    cdef const char *csep = sep
    cdef const char *cend = end
    cdef size_t seplen = len(sep), endlen = len(end)
    if cols == NULL:
        raise MemoryError()
    if not rows.flags.c_contiguous:
        rows = np.ascontiguousarray(rows)
    try:
        per_row = len(end)
        for j, (name, kind) in enumerate(columns):
            ftype, off = rows.dtype.fields[name][:2]
            cols[j].off = off
            cols[j].width = ftype.itemsize
            cols[j].aux = rows.dtype.fields["family"][1] if kind == KIND_ADDR else 0
            cols[j].blank = NULL
            if kind in (KIND_UINT, KIND_INT):
                op = _INT_OPS.get((kind, ftype.itemsize))
                if op is None or ftype.kind not in "uib":
                    raise TypeError(f"column {name!r} is not an integer")
                cols[j].op = op
            elif kind == KIND_FLOAT:
                if ftype.kind != "f" or ftype.itemsize not in (4, 8):
                    raise TypeError(f"column {name!r} is not a float32/float64")
                cols[j].op = W10G_OP_F32 if ftype.itemsize == 4 else W10G_OP_F64
            elif kind == KIND_ADDR:
                if ftype.itemsize < 16:
                    raise TypeError(f"column {name!r} is not a 16-byte address")
                cols[j].op = W10G_OP_ADDR
            elif kind == KIND_TIME:
                if ftype.itemsize != 8:
                    raise TypeError(f"column {name!r} is not an int64 time")
                cols[j].op = W10G_OP_TIME
            elif kind == KIND_STR:
                cols[j].op = W10G_OP_STR
            else:
                raise ValueError(f"unknown column kind {kind!r}")
            if blank is not None and name in blank:
                mask = np.ascontiguousarray(blank[name], dtype=np.bool_)
                if mask.shape[0] != n:
                    raise ValueError(f"blank[{name!r}] has {mask.shape[0]} rows, not {n}")
                keep.append(mask)
                cols[j].blank = <const uint8_t *>cnp.PyArray_DATA(mask)
            per_row += w10g_col_max(&cols[j]) + len(sep)
        # The text goes to a scratch buffer kept from call to call (a fresh one of this
        # size is a new mapping each time: a page fault per 4 KiB of text), then into a
        # bytes object of its exact size. To a file it goes in chunks of rows that fit
        # in the cache: the 5 MB of text of a 20,000-flow sample, formatted whole, would
        # be written to memory no cache keeps and evict what the next kernel dump reads.
        chunk = n if file is None else max(1, min(n, <Py_ssize_t>(_FILE_CHUNK // per_row)))
        cap = chunk * per_row + 64
        start = _scratch_take(cap)
        base = <const char *>cnp.PyArray_DATA(rows)
        try:
            if file is None:
                with nogil:
                    p = w10g_format(start, base, 0, n, itemsize, cols, ncol, csep, seplen,
                                    cend, endlen)
                return PyBytes_FromStringAndSize(start, p - start)
            first = 0
            written = 0
            while first < n:
                count = min(chunk, n - first)
                with nogil:
                    p = w10g_format(start, base, first, count, itemsize, cols, ncol, csep,
                                    seplen, cend, endlen)
                written += _write_all(file, start, p - start)
                first += count
            return written
        finally:
            _scratch_give(start)
    finally:
        free(cols)


cdef extern from "<unistd.h>" nogil:
    ssize_t c_write "write" (int fd, const void *buf, size_t n)

cdef extern from "<errno.h>" nogil:
    int errno
    int EINTR


cdef Py_ssize_t _write_all(object file, const char *buf, Py_ssize_t n) except -1:
    cdef int fd
    cdef ssize_t w
    cdef Py_ssize_t done = 0
    cdef int err = 0
    if isinstance(file, int):
        fd = file
    else:
        try:
            fd = file.fileno()
        except (AttributeError, OSError, ValueError):   # io.BytesIO and the like
            file.write(PyBytes_FromStringAndSize(buf, n))
            return n
        file.flush()                        # what was written through the object first
    with nogil:
        while done < n:
            w = c_write(fd, buf + done, <size_t>(n - done))
            if w < 0:
                if errno == EINTR:
                    continue
                err = errno
                break
            done += w
    if err:
        raise OSError(err, f"writing the formatted rows: {os.strerror(err)}")
    return done


# One scratch buffer, reused; a second caller at the same time (another thread, while
# the first formats without the GIL) gets its own. Taken and given back with the GIL.
cdef char *_scratch = NULL
cdef size_t _scratch_cap = 0
cdef bint _scratch_busy = False


cdef char *_scratch_take(size_t cap) except NULL:
    global _scratch, _scratch_cap, _scratch_busy
    cdef char *p
    if _scratch_busy:
        p = <char *>malloc(cap)
        if p == NULL:
            raise MemoryError()
        return p
    if cap > _scratch_cap:
        free(_scratch)
        _scratch = <char *>malloc(cap + cap // 4)
        if _scratch == NULL:
            _scratch_cap = 0
            raise MemoryError()
        _scratch_cap = cap + cap // 4
    _scratch_busy = True
    return _scratch


cdef void _scratch_give(char *p) noexcept:
    global _scratch_busy
    if p == _scratch:
        _scratch_busy = False
    else:
        free(p)


def kind_of(dtype_field) -> int:
    """The formatter kind for a numpy field type."""
    t = np.dtype(dtype_field)
    if t.kind in "ub":
        return KIND_UINT
    if t.kind == "i":
        return KIND_INT
    if t.kind == "f":
        return KIND_FLOAT
    if t.kind == "S":
        return KIND_STR
    raise TypeError(f"no text format for {t}")
