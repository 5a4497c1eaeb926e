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
from libc.stdint cimport int64_t, uint8_t
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

    /* One value of column c of the row at rp (row i). */
    static inline char *w10g_put_col(char *p, const char *rp, const struct w10g_col *c)
    {
        const char *v = rp + c->off;
        switch (c->op) {
        case W10G_OP_U8: return w10g_put_u32(p, *(const uint8_t *)v);
        case W10G_OP_U16: { uint16_t x; memcpy(&x, v, 2); return w10g_put_u32(p, x); }
        case W10G_OP_U32: { uint32_t x; memcpy(&x, v, 4); return w10g_put_u32(p, x); }
        case W10G_OP_U64: { uint64_t x; memcpy(&x, v, 8); return w10g_put_u64(p, x); }
        case W10G_OP_I8: return w10g_put_i64(p, *(const int8_t *)v);
        case W10G_OP_I16: { int16_t x; memcpy(&x, v, 2); return w10g_put_i64(p, x); }
        case W10G_OP_I32: { int32_t x; memcpy(&x, v, 4); return w10g_put_i64(p, x); }
        case W10G_OP_I64: { int64_t x; memcpy(&x, v, 8); return w10g_put_i64(p, x); }
        case W10G_OP_F32: {
            float x;
            memcpy(&x, v, 4);
            return p + snprintf(p, 32, "%.9g", (double)x);
        }
        case W10G_OP_F64: {
            double x;
            memcpy(&x, v, 8);
            return p + snprintf(p, 32, "%.17g", x);
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
            return p;
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
            return p + 6;
        }
        default:
            for (int k = 0; k < c->width && v[k]; k++)
                *p++ = v[k];
            return p;
        }
    }

    /* Columns [j0, ncol) of row i (the separator before each but the row's first). */
    static inline char *w10g_put_cols(char *p, const char *rp, Py_ssize_t i,
                                      const struct w10g_col *cols, Py_ssize_t j0,
                                      Py_ssize_t ncol, const char *sep, size_t seplen)
    {
        for (Py_ssize_t j = j0; j < ncol; j++) {
            const struct w10g_col *c = &cols[j];
            if (j) {
                if (seplen == 1) {
                    *p++ = sep[0];
                } else {
                    memcpy(p, sep, seplen);
                    p += seplen;
                }
            }
            if (c->blank && c->blank[i])
                continue;
            p = w10g_put_col(p, rp, c);
        }
        return p;
    }

    static inline char *w10g_put_end(char *p, const char *end, size_t endlen)
    {
        if (endlen == 1) {
            *p++ = end[0];
        } else {
            memcpy(p, end, endlen);
            p += endlen;
        }
        return p;
    }

    /* Rows [first, first + n) of the array at base. */
    static char *w10g_format(char *p, const char *base, Py_ssize_t first, Py_ssize_t n,
                             Py_ssize_t itemsize, const struct w10g_col *cols, Py_ssize_t ncol,
                             const char *sep, size_t seplen, const char *end, size_t endlen)
    {
        for (Py_ssize_t i = first; i < first + n; i++) {
            p = w10g_put_cols(p, base + i * itemsize, i, cols, 0, ncol, sep, seplen);
            p = w10g_put_end(p, end, endlen);
        }
        return p;
    }

    /* The previous sample, for w10g_format_reuse: its rows, the blank masks of its
       columns (NULL where a column had none), its text, and where each row's text
       continues after its first field (tail) and ends (stop). */
    struct w10g_prev {
        const char *base;
        Py_ssize_t n;
        const uint8_t *const *blank;
        const char *text;
        const int64_t *tail;
        const int64_t *stop;
    };

    /* w10g_format of all n rows, into text (which p starts), reusing the previous
       sample's text of every row whose printed bytes (the nspan spans: every column's
       but the first, the sample's time, and an address's family) and blank flags are
       the previous sample's row's at the same position: an idle flow prints the same
       text but for its time. The new text's tail/stop offsets go to tail and stop;
       returns the end, *reused the rows reused. */
    static char *w10g_format_reuse(char *text, const char *base, Py_ssize_t n,
                                   Py_ssize_t itemsize, const struct w10g_col *cols,
                                   Py_ssize_t ncol, const char *sep, size_t seplen,
                                   const char *end, size_t endlen,
                                   const struct w10g_prev *prev, const int64_t *span,
                                   Py_ssize_t nspan, int64_t *tail, int64_t *stop,
                                   Py_ssize_t *reused)
    {
        char *p = text;
        Py_ssize_t r = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            const char *rp = base + i * itemsize;
            int same = 0;
            if (i < prev->n) {
                const char *pp = prev->base + i * itemsize;
                same = 1;
                for (Py_ssize_t k = 0; same && k < nspan; k++)
                    same = memcmp(rp + span[2 * k], pp + span[2 * k],
                                  (size_t)span[2 * k + 1]) == 0;
                for (Py_ssize_t j = 0; same && j < ncol; j++) {
                    if (cols[j].blank || prev->blank[j])
                        same = cols[j].blank && prev->blank[j] &&
                               cols[j].blank[i] == prev->blank[j][i];
                }
            }
            p = w10g_put_cols(p, rp, i, cols, 0, 1, sep, seplen);
            tail[i] = p - text;
            if (same) {
                size_t len = (size_t)(prev->stop[i] - prev->tail[i]);
                memcpy(p, prev->text + prev->tail[i], len);
                p += len;
                r++;
            } else {
                p = w10g_put_cols(p, rp, i, cols, 1, ncol, sep, seplen);
                p = w10g_put_end(p, end, endlen);
            }
            stop[i] = p - text;
        }
        *reused = r;
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

    struct w10g_prev:
        const char *base
        Py_ssize_t n
        const uint8_t *const *blank
        const char *text
        const int64_t *tail
        const int64_t *stop

    void w10g_fmt_init()
    size_t w10g_col_max(const w10g_col *c) nogil
    char *w10g_format_reuse(char *text, const char *base, Py_ssize_t n, Py_ssize_t itemsize,
                            const w10g_col *cols, Py_ssize_t ncol, const char *sep,
                            size_t seplen, const char *end, size_t endlen,
                            const w10g_prev *prev, const int64_t *span, Py_ssize_t nspan,
                            int64_t *tail, int64_t *stop, Py_ssize_t *reused) nogil
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


cdef class TextCache:
    """The previous sample's rows and text, for ``format_rows(..., cache=)`` over samples
    taken one after another (the logger). A row whose bytes (all but its first column,
    the sample's time) and blank flags are those of the previous sample's row at the
    same position -- the same flow with nothing changed, an idle flow -- is not formatted
    again: its time is, and the rest of its text is copied. The rows given are kept (a
    reference, not a copy) until the next call, and must not be changed meanwhile
    (``read_all()`` returns a new array, or one nothing else refers to any more). When
    fewer than a fifth of the rows could be reused (busy flows), the next 15 calls do not
    compare (comparing reads the previous rows again), and the one after tries again."""

    cdef object key
    cdef object rows
    cdef list blanks
    cdef object tail
    cdef object stop
    cdef char *text[2]
    cdef size_t cap[2]
    cdef int cur
    cdef int rest                        # calls left that do not compare (busy flows)
    cdef readonly Py_ssize_t reused      # rows reused by the last call
    cdef readonly Py_ssize_t formatted   # rows formatted by the last call

    def __cinit__(self):
        self.text[0] = self.text[1] = NULL
        self.cap[0] = self.cap[1] = 0
        self.cur = 0
        self.rest = 0
        self.blanks = []

    def __dealloc__(self):
        free(self.text[0])
        free(self.text[1])

    def clear(self):
        """Forget the previous sample (its rows are no longer referred to)."""
        self.key = self.rows = self.tail = self.stop = None
        self.blanks = []
        self.rest = 0

    cdef char *_buffer(self, size_t cap) except NULL:
        """The text buffer not holding the previous sample's text, at least ``cap``."""
        cdef int k = 1 - self.cur
        cdef char *p
        if self.cap[k] < cap:
            p = <char *>malloc(cap + cap // 4)
            if p == NULL:
                raise MemoryError()
            free(self.text[k])
            self.text[k] = p
            self.cap[k] = cap + cap // 4
        return self.text[k]


def format_rows(cnp.ndarray rows not None, columns, bytes sep=b",", bytes end=b"\n",
                blank=None, file=None, TextCache cache=None):
    """``columns``: [(name, kind)] with kind one of KIND_*; returns the text as bytes.

    KIND_ADDR formats a 16-byte address column with the row's ``family``; KIND_TIME an
    int64 ns timestamp as ``sec.usec``; KIND_STR a NUL-padded bytes column. ``blank``
    maps column names to a boolean array (one per row): True prints an empty field (a
    value the kernel did not report). With ``file`` (a file object, flushed first, or a
    file descriptor) the text is written there straight from the formatter's buffer and
    the number of bytes written is returned instead. ``cache`` (a :class:`TextCache`,
    used when the first column is the only KIND_TIME one): rows unchanged since the
    previous call with the same cache reuse their text.
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
        if (cache is not None and ncol and n and columns[0][1] == KIND_TIME
                and all(k != KIND_TIME for _, k in columns[1:])):
            return _format_reuse(cache, rows, columns, cols, ncol, per_row, sep, end,
                                 keep, file)
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


cdef object _format_reuse(TextCache cache, cnp.ndarray rows, list columns, w10g_col *cols,
                          Py_ssize_t ncol, size_t per_row, bytes sep, bytes end,
                          list masks, object file):
    """format_rows through ``cache``: the whole sample into one of the cache's two text
    buffers (the other holds the previous sample's), then to ``file`` or bytes."""
    cdef Py_ssize_t n = rows.shape[0], itemsize = rows.dtype.itemsize, j, reused = 0, nspan
    cdef w10g_prev prev
    cdef const uint8_t **pblank = <const uint8_t **>malloc(ncol * sizeof(uint8_t *))
    cdef char *text
    cdef char *p
    cdef const char *base = <const char *>cnp.PyArray_DATA(rows)
    cdef const char *csep = sep
    cdef const char *cend = end
    cdef size_t seplen = len(sep), endlen = len(end)
    cdef int64_t[::1] tail
    cdef int64_t[::1] stop
    cdef int64_t[::1] span
    cdef cnp.ndarray pr
    if pblank == NULL:
        raise MemoryError()
    try:
        key = (tuple(columns), sep, end, rows.dtype)
        prev.n = 0
        prev.base = NULL
        prev.text = NULL
        prev.tail = prev.stop = NULL
        prev.blank = pblank
        for j in range(ncol):
            pblank[j] = NULL
        # Comparing a row with the previous sample's reads both from memory; when few
        # rows were reusable last time (busy flows), the next 15 samples are formatted
        # without comparing, and the 16th tries again.
        compare = cache.rest == 0
        if not compare:
            cache.rest -= 1
        if (compare and cache.key == key and cache.rows is not None
                and not np.may_share_memory(rows, cache.rows)):
            pr = cache.rows
            prev.base = <const char *>cnp.PyArray_DATA(pr)
            prev.n = pr.shape[0]
            prev.text = cache.text[cache.cur]
            tail = cache.tail
            stop = cache.stop
            prev.tail = &tail[0]
            prev.stop = &stop[0]
            for j in range(ncol):
                m = cache.blanks[j]
                if m is not None:
                    pblank[j] = <const uint8_t *>cnp.PyArray_DATA(m)
        # the bytes a row's text depends on, but for the time: each column's and an
        # address's family, in merged spans (padding and unprinted fields left out)
        parts = sorted([(cols[j].off, cols[j].width) for j in range(1, ncol)]
                       + [(cols[j].aux, 1) for j in range(1, ncol) if cols[j].op == W10G_OP_ADDR])
        merged = []
        for o, w in parts:
            last = merged[len(merged) - 1] if merged else None
            if last is not None and o <= last[0] + last[1]:
                last[1] = max(last[1], o + w - last[0])
            else:
                merged.append([o, w])
        nspan = len(merged)
        span = np.array(merged if merged else [[0, 0]], np.int64).reshape(-1)
        text = cache._buffer(n * per_row + 64)
        new_tail = np.empty(n, np.int64)
        new_stop = np.empty(n, np.int64)
        tail = new_tail
        stop = new_stop
        with nogil:
            p = w10g_format_reuse(text, base, n, itemsize, cols, ncol, csep, seplen, cend,
                                  endlen, &prev, &span[0], nspan, &tail[0], &stop[0],
                                  &reused)
        # the new sample becomes the previous one
        mask_of = {}
        for m in masks:
            mask_of[<size_t>cnp.PyArray_DATA(m)] = m
        cache.blanks = [mask_of.get(<size_t>cols[j].blank) if cols[j].blank != NULL
                        else None for j in range(ncol)]
        cache.key, cache.rows, cache.tail, cache.stop = key, rows, new_tail, new_stop
        cache.cur = 1 - cache.cur
        cache.reused, cache.formatted = reused, n - reused
        if compare and prev.n and reused * 5 < n:
            cache.rest = 15
        if file is None:
            return PyBytes_FromStringAndSize(text, p - text)
        return _write_all(file, text, p - text)
    finally:
        free(pblank)


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
