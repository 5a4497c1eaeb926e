# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Rows as delimited text, in C: the logger's hot path (thousands of flows, many
columns, several times a second) must not format values one Python object at a time."""
import numpy as np
cimport numpy as cnp

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, strlen

cnp.import_array()

cdef extern from "<stdint.h>":
    uint32_t UINT32_MAX

cdef extern from "<stdio.h>" nogil:
    int snprintf(char *buf, size_t n, const char *fmt, ...)

cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, unsigned int size)

# column kinds
KIND_UINT, KIND_INT, KIND_FLOAT, KIND_ADDR, KIND_TIME, KIND_STR = range(6)


cdef struct col_t:
    int kind
    int width
    Py_ssize_t off
    Py_ssize_t aux          # KIND_ADDR: the family column's offset


# "00".."99": two digits per division, the classic trick for fast integer printing
cdef char DIGITS[201]
for _k in range(100):
    DIGITS[2 * _k] = 48 + _k // 10
    DIGITS[2 * _k + 1] = 48 + _k % 10


cdef inline char *put_u32(char *p, uint32_t v) noexcept nogil:
    # 32-bit divisions by constants compile to multiplies; most statistics fit
    cdef char tmp[12]
    cdef int n = 12
    cdef uint32_t q
    while v >= 100:
        q = v // 100
        n -= 2
        memcpy(&tmp[n], &DIGITS[2 * (v - q * 100)], 2)
        v = q
    if v >= 10:
        n -= 2
        memcpy(&tmp[n], &DIGITS[2 * v], 2)
    else:
        n -= 1
        tmp[n] = <char>(48 + v)
    memcpy(p, &tmp[n], 12 - n)
    return p + (12 - n)


cdef char *put_u64(char *p, uint64_t v) noexcept nogil:
    # above 2^32 (rare: octet counters, rates), print the part above 10^9 and then nine
    # zero-padded digits, so the 32-bit routine does the work
    cdef uint32_t low
    cdef int i
    if v <= <uint64_t>UINT32_MAX:
        return put_u32(p, <uint32_t>v)
    low = <uint32_t>(v % 1000000000)
    p = put_u64(p, v // 1000000000)
    for i in range(8, -1, -1):
        p[i] = <char>(48 + low % 10)
        low //= 10
    return p + 9


def format_rows(cnp.ndarray rows not None, columns, bytes sep=b",", bytes end=b"\n"):
    """``columns``: [(name, kind)] with kind one of KIND_*; returns the text as bytes.

    KIND_ADDR formats a 16-byte address column with the row's ``family``; KIND_TIME an
    int64 ns timestamp as ``sec.usec``; KIND_STR a NUL-padded bytes column.
    """
    cdef Py_ssize_t n = rows.shape[0], ncol = len(columns), i, j
    cdef Py_ssize_t itemsize = rows.dtype.itemsize
    cdef col_t *cols = <col_t *>malloc(max(ncol, 1) * sizeof(col_t))
    cdef const char *base
    cdef const char *rp
    cdef char *buf = NULL
    cdef char *p
    cdef size_t cap, used
    cdef size_t seplen = len(sep), endlen = len(end)
    cdef const char *csep = sep
    cdef const char *cend = end
    cdef uint64_t u
    cdef int64_t s
    cdef double d
    cdef uint8_t fam
    cdef int w
    if cols == NULL:
        raise MemoryError()
    if not rows.flags.c_contiguous:
        rows = np.ascontiguousarray(rows)
    try:
        for j, (name, kind) in enumerate(columns):
            ftype, off = rows.dtype.fields[name][:2]
            cols[j].kind = kind
            cols[j].off = off
            cols[j].width = ftype.itemsize
            cols[j].aux = rows.dtype.fields["family"][1] if kind == KIND_ADDR else 0
            if kind in (KIND_UINT, KIND_INT) and ftype.itemsize not in (1, 2, 4, 8):
                raise TypeError(f"column {name!r} is not an integer")
        # worst case per value: 46 (IPv6 text) or 24 digits, plus the separator
        cap = <size_t>(n * (ncol * (48 + seplen) + endlen)) + 1
        buf = <char *>malloc(cap)
        if buf == NULL:
            raise MemoryError()
        base = <const char *>cnp.PyArray_DATA(rows)
        with nogil:
            p = buf
            for i in range(n):
                rp = base + i * itemsize
                for j in range(ncol):
                    if j:
                        memcpy(p, csep, seplen)
                        p += seplen
                    if cols[j].kind == 0:
                        if cols[j].width == 4:
                            p = put_u32(p, (<const uint32_t *>(rp + cols[j].off))[0])
                        elif cols[j].width == 8:
                            memcpy(&u, rp + cols[j].off, 8)
                            p = put_u64(p, u)
                        elif cols[j].width == 2:
                            p = put_u32(p, (<const uint16_t *>(rp + cols[j].off))[0])
                        else:
                            p = put_u32(p, (<const uint8_t *>(rp + cols[j].off))[0])
                    elif cols[j].kind == 1:
                        if cols[j].width == 4:
                            s = (<const int32_t *>(rp + cols[j].off))[0]
                        else:
                            memcpy(&s, rp + cols[j].off, 8)
                        if s < 0:
                            p[0] = 45
                            p += 1
                            p = put_u64(p, <uint64_t>(-s))
                        else:
                            p = put_u64(p, <uint64_t>s)
                    elif cols[j].kind == 2:
                        memcpy(&d, rp + cols[j].off, 8)
                        p += snprintf(p, 32, "%.17g", d)
                    elif cols[j].kind == 3:
                        fam = (<const uint8_t *>(rp + cols[j].aux))[0]
                        if fam == 2:
                            # dotted quad by hand: glibc's inet_ntop goes through sprintf
                            for w in range(4):
                                if w:
                                    p[0] = 46
                                    p += 1
                                p = put_u32(p, (<const uint8_t *>(rp + cols[j].off))[w])
                        elif (fam == 10
                                and inet_ntop(fam, rp + cols[j].off, p, 46) != NULL):
                            p += strlen(p)
                    elif cols[j].kind == 4:
                        memcpy(&s, rp + cols[j].off, 8)
                        p = put_u64(p, <uint64_t>(s // 1000000000))
                        # ".%06u" without snprintf
                        u = <uint64_t>(s // 1000 % 1000000)
                        p[0] = 46
                        for w in range(6, 0, -1):
                            p[w] = <char>(48 + u % 10)
                            u //= 10
                        p += 7
                    else:
                        for u in range(<uint64_t>cols[j].width):
                            if rp[cols[j].off + u] == 0:
                                break
                            p[0] = rp[cols[j].off + u]
                            p += 1
                memcpy(p, cend, endlen)
                p += endlen
            used = p - buf
        return buf[:used]
    finally:
        free(cols)
        free(buf)


def kind_of(dtype_field) -> int:
    """The formatter kind for a numpy field type."""
    t = np.dtype(dtype_field)
    if t.kind == "u":
        return KIND_UINT
    if t.kind == "i":
        return KIND_INT
    if t.kind == "f":
        return KIND_FLOAT
    if t.kind == "S":
        return KIND_STR
    raise TypeError(f"no text format for {t}")
