# cython: language_level=3, boundscheck=False, wraparound=False
"""Recording frames as differences from the previous sample (csrc/w10g_delta.h).

The Recorder stores each sample's netlink messages XOR-ed with the same-index messages of
the sample before when their lengths match: idle flows' messages become nearly all zeros,
which zstd stores in a sixth of the bytes and compresses in about a third of the time.
``decode`` reverses it; it checks every length against the frame and the previous
sample, so a damaged frame is refused, never read past.
"""
from libc.stdint cimport uint8_t


cdef extern from "w10g_delta.h" nogil:
    long w10g_delta_encode(const uint8_t *prev, size_t plen, const uint8_t *cur,
                           size_t clen, uint8_t *out)
    int w10g_delta_decode(const uint8_t *prev, size_t plen, const uint8_t *delta,
                          size_t dlen, uint8_t *out)


cdef const uint8_t[::1] _bytes(object b):
    return b if len(b) else b"\0"      # a typed view of an empty buffer has no address


cdef class _Prev:
    """The previous sample (or none): a pointer and length valid while this lives."""
    cdef const uint8_t[::1] view
    cdef const uint8_t *ptr
    cdef size_t n

    def __cinit__(self, prev):
        self.ptr = NULL
        self.n = 0
        if prev is not None and len(prev):
            self.view = prev
            self.ptr = &self.view[0]
            self.n = len(prev)


def encode(prev, cur, uint8_t[::1] out not None):
    """Write ``cur`` as a difference from ``prev`` (``None``: no previous sample) into
    ``out[:len(cur)]``. Returns the number of messages stored XOR-ed, or -1 when ``cur``
    is not a sequence of (length, time, datagram) entries of whole netlink messages
    (store it plainly)."""
    cdef const uint8_t[::1] c = _bytes(cur)
    cdef size_t clen = len(cur)
    cdef _Prev p = _Prev(prev)
    cdef long r
    if <size_t>out.shape[0] < clen:
        raise ValueError(f"delta.encode: out has {out.shape[0]} bytes, {clen} needed")
    if clen == 0:
        return 0
    with nogil:
        r = w10g_delta_encode(p.ptr, p.n, &c[0], clen, &out[0])
    return r


def decode(prev, delta, uint8_t[::1] out not None):
    """Write the sample ``delta`` was made from, given the same ``prev`` (``None``: none),
    into ``out[:len(delta)]``. Returns False when ``delta`` is malformed or does not fit
    ``prev`` (what ``out`` then holds is undefined)."""
    cdef const uint8_t[::1] d = _bytes(delta)
    cdef size_t dlen = len(delta)
    cdef _Prev p = _Prev(prev)
    cdef int r
    if <size_t>out.shape[0] < dlen:
        raise ValueError(f"delta.decode: out has {out.shape[0]} bytes, {dlen} needed")
    if dlen == 0:
        return True
    with nogil:
        r = w10g_delta_decode(p.ptr, p.n, &d[0], dlen, &out[0])
    return r == 0
