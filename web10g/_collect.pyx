# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Wide rows -> contiguous columns, in C, for the collector's sinks.

The sinks read a few dozen columns of every sample (20,000 flows ten times a second).
numpy reads a structured array's column as a strided copy, one column at a time, so
every column pulls every row's cache lines through again (and a subarray column such as
an address goes element by element). :func:`gather` copies any set of fields in one
pass over the rows, in blocks that stay in L1, into columns the caller owns (reused from
sample to sample, so no page is faulted in per sample), optionally in a given row order.
"""
import numpy as np
cimport numpy as cnp

from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc

cnp.import_array()

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__x86_64__)
    #include <emmintrin.h>
    #endif

    #define W10G_BLOCK 64

    /* Stores that bypass the cache (non-temporal): the columns written here are far
       larger than any cache and read again only seconds later, so reading each line
       before writing it (what a normal store does) would be wasted memory traffic. */
    #if defined(__x86_64__)
    static inline void w10g_put8(uint8_t *d, const uint8_t *s)
    {
        long long v;
        memcpy(&v, s, 8);
        _mm_stream_si64((long long *)d, v);
    }
    static inline void w10g_put4(uint8_t *d, const uint8_t *s)
    {
        int v;
        memcpy(&v, s, 4);
        _mm_stream_si32((int *)d, v);
    }
    static inline void w10g_fence(void) { _mm_sfence(); }
    #else
    static inline void w10g_put8(uint8_t *d, const uint8_t *s) { memcpy(d, s, 8); }
    static inline void w10g_put4(uint8_t *d, const uint8_t *s) { memcpy(d, s, 4); }
    static inline void w10g_fence(void) { }
    #endif

    /* Copy nf fields of n rows: dst[j][r] = row(perm ? perm[r] : r)[off[j] .. +size[j]].
       Rows are taken in blocks of W10G_BLOCK, and each block is copied field by field
       with a loop specialised for the field's size: the block stays in L1 while its
       fields are spread over the columns. */
    static void w10g_gather(const uint8_t *base, Py_ssize_t stride, const int64_t *perm,
                            Py_ssize_t n, int nf, const Py_ssize_t *off,
                            const Py_ssize_t *size, uint8_t *const *dst, int stream)
    {
        const uint8_t *src[W10G_BLOCK];
        for (Py_ssize_t r0 = 0; r0 < n; r0 += W10G_BLOCK) {
            Py_ssize_t m = n - r0 < W10G_BLOCK ? n - r0 : W10G_BLOCK;
            for (Py_ssize_t i = 0; i < m; i++)
                src[i] = base + (perm ? perm[r0 + i] : r0 + i) * stride;
            for (int j = 0; j < nf; j++) {
                const Py_ssize_t o = off[j], w = size[j];
                uint8_t *d = dst[j] + r0 * w;
                switch (w) {
                case 1:
                    for (Py_ssize_t i = 0; i < m; i++) d[i] = src[i][o];
                    break;
                case 2:
                    for (Py_ssize_t i = 0; i < m; i++) memcpy(d + 2 * i, src[i] + o, 2);
                    break;
                case 4:
                    if (stream && ((uintptr_t)d & 3) == 0) {
                        for (Py_ssize_t i = 0; i < m; i++) w10g_put4(d + 4 * i, src[i] + o);
                    } else {
                        for (Py_ssize_t i = 0; i < m; i++) memcpy(d + 4 * i, src[i] + o, 4);
                    }
                    break;
                case 8:
                    if (stream && ((uintptr_t)d & 7) == 0) {
                        for (Py_ssize_t i = 0; i < m; i++) w10g_put8(d + 8 * i, src[i] + o);
                    } else {
                        for (Py_ssize_t i = 0; i < m; i++) memcpy(d + 8 * i, src[i] + o, 8);
                    }
                    break;
                case 16:
                    if (stream && ((uintptr_t)d & 7) == 0) {
                        for (Py_ssize_t i = 0; i < m; i++) {
                            w10g_put8(d + 16 * i, src[i] + o);
                            w10g_put8(d + 16 * i + 8, src[i] + o + 8);
                        }
                    } else {
                        for (Py_ssize_t i = 0; i < m; i++) memcpy(d + 16 * i, src[i] + o, 16);
                    }
                    break;
                default:
                    for (Py_ssize_t i = 0; i < m; i++) memcpy(d + w * i, src[i] + o, w);
                }
            }
        }
        w10g_fence();
    }

    /* out[j * k + s] = src[s * n + j] for s < k, j < n (elements of w bytes): k samples
       of the same n flows, sample-major, made flow-major. The output is written in order
       (with stores that bypass the cache); the k source streams each advance one element
       per flow, so each source line is read once and used for every element it holds. */
    static void w10g_transpose(const uint8_t *src, uint8_t *out, Py_ssize_t n,
                               Py_ssize_t k, Py_ssize_t w)
    {
        const Py_ssize_t step = n * w;
        uint8_t *b = out;
        int aligned = ((uintptr_t)out & (w >= 8 ? 7 : 3)) == 0;
        for (Py_ssize_t j = 0; j < n; j++) {
            const uint8_t *a = src + j * w;
            if (w == 8 && aligned) {
                for (Py_ssize_t s = 0; s < k; s++, b += 8) w10g_put8(b, a + s * step);
            } else if (w == 4 && aligned) {
                for (Py_ssize_t s = 0; s < k; s++, b += 4) w10g_put4(b, a + s * step);
            } else if (w == 16 && aligned) {
                for (Py_ssize_t s = 0; s < k; s++, b += 16) {
                    w10g_put8(b, a + s * step);
                    w10g_put8(b + 8, a + s * step + 8);
                }
            } else if (w == 1) {
                for (Py_ssize_t s = 0; s < k; s++, b++) *b = a[s * step];
            } else if (w == 2) {
                for (Py_ssize_t s = 0; s < k; s++, b += 2) memcpy(b, a + s * step, 2);
            } else {
                for (Py_ssize_t s = 0; s < k; s++, b += w) memcpy(b, a + s * step, w);
            }
        }
        w10g_fence();
    }
    """
    void w10g_transpose(const uint8_t *src, uint8_t *out, Py_ssize_t n, Py_ssize_t k,
                        Py_ssize_t w) nogil
    void w10g_gather(const uint8_t *base, Py_ssize_t stride, const int64_t *perm,
                     Py_ssize_t n, int nf, const Py_ssize_t *off, const Py_ssize_t *size,
                     uint8_t *const *dst, int stream) nogil


def gather(rows, fields, outs, Py_ssize_t start=0, perm=None, bint stream=False):
    """Copy fields of ``rows`` into columns: ``outs[j][start + i]`` receives field ``j``
    of row ``perm[i]`` (of row ``i`` without ``perm``), for every row (every ``perm``
    entry). ``fields`` holds (byte offset, byte size) pairs within a row; each of
    ``outs`` is a C-contiguous, writable array whose rows are that many bytes (a (k, 16)
    uint8 array for an address, say). ``stream``: write 4-, 8- and 16-byte fields with
    stores that bypass the cache (for columns read again only much later). Returns the
    number of rows copied."""
    cdef cnp.ndarray arr = rows
    cdef cnp.ndarray p
    cdef cnp.ndarray o
    cdef Py_ssize_t n, nrows, stride, itemsize, i, w
    cdef int nf = len(fields)
    cdef const int64_t *pp = NULL
    if arr.ndim != 1:
        raise ValueError("rows must be one-dimensional")
    nrows = arr.shape[0]
    stride = arr.strides[0]
    itemsize = arr.dtype.itemsize
    if len(outs) != nf:
        raise ValueError("one output per field")
    if perm is not None:
        p = np.ascontiguousarray(perm, dtype=np.int64)
        if p.ndim != 1:
            raise ValueError("perm must be one-dimensional")
        n = p.shape[0]
        if n and (int(p.min()) < 0 or int(p.max()) >= nrows):
            raise IndexError("perm holds a row number out of range")
        pp = <const int64_t *>cnp.PyArray_DATA(p)
    else:
        n = nrows
    if start < 0:
        raise ValueError("start must not be negative")
    if n == 0 or nf == 0:
        return n
    if stride < itemsize and nrows > 1:
        raise ValueError("rows overlap")
    cdef Py_ssize_t *off = <Py_ssize_t *>malloc(nf * sizeof(Py_ssize_t))
    cdef Py_ssize_t *size = <Py_ssize_t *>malloc(nf * sizeof(Py_ssize_t))
    cdef uint8_t **dst = <uint8_t **>malloc(nf * sizeof(uint8_t *))
    if off == NULL or size == NULL or dst == NULL:
        free(off)
        free(size)
        free(dst)
        raise MemoryError()
    keep = []
    try:
        for i in range(nf):
            fo, fw = fields[i]
            off[i], size[i] = fo, fw
            if off[i] < 0 or size[i] <= 0 or off[i] + size[i] > itemsize:
                raise ValueError(f"field {i} ({fo}, {fw}) is not inside a {itemsize}-byte row")
            o = outs[i]
            if not (o.flags.c_contiguous and o.flags.writeable):
                raise ValueError(f"output {i} must be C-contiguous and writable")
            w = o.itemsize
            for k in range(1, o.ndim):
                w *= o.shape[k]
            if o.ndim < 1 or w != size[i]:
                raise ValueError(f"output {i} has rows of {w} bytes, the field {size[i]}")
            if o.shape[0] < start + n:
                raise ValueError(f"output {i} holds {o.shape[0]} rows, {start + n} needed")
            keep.append(o)
            dst[i] = <uint8_t *>cnp.PyArray_DATA(o) + start * size[i]
        with nogil:
            w10g_gather(<const uint8_t *>cnp.PyArray_DATA(arr), stride, pp, n, nf, off,
                        size, dst, stream)
    finally:
        free(off)
        free(size)
        free(dst)
    return n


def transpose(src, out, Py_ssize_t n, Py_ssize_t k):
    """``out[j * k + s] = src[s * n + j]`` for ``s < k``, ``j < n``: k samples of the
    same n flows, stored one sample after the other, as each flow's k values together.
    ``src`` and ``out`` are C-contiguous arrays of the same element type (rows of any
    width: an (m, 16) address column moves 16 bytes at a time) holding at least n * k
    rows; ``out`` is written, not ``src``."""
    cdef cnp.ndarray a = src
    cdef cnp.ndarray b = out
    cdef Py_ssize_t w, i
    if n < 0 or k < 0:
        raise ValueError("n and k must not be negative")
    if a.dtype != b.dtype or a.ndim != b.ndim or a.ndim < 1:
        raise ValueError("src and out must have the same element type and shape")
    for i in range(1, a.ndim):
        if a.shape[i] != b.shape[i]:
            raise ValueError("src and out must have the same element type and shape")
    if not (a.flags.c_contiguous and b.flags.c_contiguous and b.flags.writeable):
        raise ValueError("src and out must be C-contiguous, out writable")
    if a.shape[0] < n * k or b.shape[0] < n * k:
        raise ValueError(f"{n * k} rows needed")
    if cnp.PyArray_DATA(a) == cnp.PyArray_DATA(b):
        raise ValueError("out must not be src")
    w = a.itemsize
    for i in range(1, a.ndim):
        w *= a.shape[i]
    if n and k:
        with nogil:
            w10g_transpose(<const uint8_t *>cnp.PyArray_DATA(a), <uint8_t *>cnp.PyArray_DATA(b),
                           n, k, w)


def address(cnp.ndarray arr not None):
    """The address of ``arr``'s first byte. ``arr.ctypes.data`` says the same through a
    new ctypes object per call (and numpy keeps a few of them); ``__array_interface__``
    describes every field of a structured dtype first (0.1 ms for 165 columns)."""
    return <size_t>cnp.PyArray_DATA(arr)
