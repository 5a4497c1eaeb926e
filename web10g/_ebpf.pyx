# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""ebpf iterator records decoded by C straight into numpy structured arrays.

A :class:`Decoder` holds the column offsets of one output dtype (checked once, here),
the state and family masks, and a reusable read buffer. ``read(fd, out)`` reads the
pinned iterator to its end and decodes every record without the GIL, each read()'s
records right after that read (while they are in the cache; ``keep=True`` keeps the
whole output instead, for recordings); rows beyond ``out``'s capacity go to a spill
area and ``out`` is grown afterwards. Errors are raised after the nogil block.
"""
import errno as _errno
import os

import numpy as np
cimport numpy as cnp

from libc.stdint cimport uint8_t, uint32_t, int64_t
from libc.stdlib cimport free
from libc.string cimport memset
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME, CLOCK_MONOTONIC

from web10g._ebpf cimport (
    W10G_EB_NFIELDS, W10G_EB_P_INFO, W10G_EB_P_COUNTERS, W10G_EB_P_SEQ, w10g_eb_config,
    w10g_eb_sink, w10g_eb_decode, w10g_eb_read_all, w10g_eb_read_decode, w10g_eb_field_name,
    w10g_eb_field_kind, w10g_eb_plan, w10g_eb_row_offset, w10g_eb_row_size,
    w10g_eb_rec_size, w10g_eb_hdr_size, w10g_eb_fields_size,
)
from web10g._rows cimport check_out, grow_rows
from web10g import errors

cnp.import_array()

P_INFO = W10G_EB_P_INFO
P_COUNTERS = W10G_EB_P_COUNTERS
P_SEQ = W10G_EB_P_SEQ
REC_SIZE = w10g_eb_rec_size()
#: the fields reader's records: REC_SIZE cut before the counters
FIELDS_SIZE = w10g_eb_fields_size()
HDR_SIZE = w10g_eb_hdr_size()

#: Every column the decoder can produce, in its order, and each column's store kind.
FIELD_NAMES = tuple(w10g_eb_field_name(i).decode() for i in range(W10G_EB_NFIELDS))
FIELD_KINDS = tuple(w10g_eb_field_kind(i).decode() for i in range(W10G_EB_NFIELDS))

_KIND_DTYPES = {
    "U8": np.dtype(np.uint8), "U16": np.dtype(np.uint16), "U32": np.dtype(np.uint32),
    "U64": np.dtype(np.uint64), "I32": np.dtype(np.int32), "I64": np.dtype(np.int64),
    "A16": np.dtype(("u1", (16,))),
}


cdef int _build_config(w10g_eb_config *cfg, object dtype) except -1:
    cdef int i
    index = {name: i for i, name in enumerate(FIELD_NAMES)}
    for i in range(W10G_EB_NFIELDS):
        cfg.off[i] = -1
    for name in dtype.names or ():
        if name not in index:
            raise ValueError(f"the ebpf decoder cannot fill column {name!r}")
        ftype, offset = dtype.fields[name][:2]
        i = index[name]
        want = _KIND_DTYPES[FIELD_KINDS[i]]
        if ftype != want:
            raise TypeError(f"column {name!r} must be {want}, not {ftype}")
        cfg.off[i] = offset
    w10g_eb_plan(cfg, dtype.itemsize)
    return 0


cdef int64_t _clock(int which) noexcept nogil:
    cdef timespec ts
    clock_gettime(which, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


def row_layout():
    """The decoder's whole row (struct w10g_eb_row): ({column: offset}, sizeof)."""
    return ({FIELD_NAMES[i]: w10g_eb_row_offset(i) for i in range(W10G_EB_NFIELDS)},
            w10g_eb_row_size())


def clock_offset():
    """CLOCK_REALTIME - CLOCK_MONOTONIC now (ns)."""
    return _clock(CLOCK_REALTIME) - _clock(CLOCK_MONOTONIC)


cdef class Decoder:
    """Decodes ebpf records of one column selection, state mask and family set."""

    cdef w10g_eb_config cfg
    cdef readonly object dtype
    cdef uint32_t state_mask
    cdef uint32_t family_mask
    cdef uint8_t *buf
    cdef size_t cap
    cdef size_t used
    cdef readonly uint32_t hz
    cdef readonly uint32_t hooks
    cdef readonly int64_t last_now_ns
    cdef readonly int64_t last_offset_ns

    def __cinit__(self):
        self.buf = NULL
        self.cap = 0
        self.used = 0

    def __init__(self, dtype, *, unsigned int states=0xFFF, families=(2, 10),
                 sysctls=(1, 1, 2), unsigned int hz=0):
        dtype = np.dtype(dtype)
        _build_config(&self.cfg, dtype)
        self.cfg.sysctl_timestamps, self.cfg.sysctl_sack, self.cfg.sysctl_ecn = sysctls
        self.dtype = dtype
        self.state_mask = states
        self.family_mask = (1 if 2 in families else 0) | (2 if 10 in families else 0)
        self.hz = hz

    def __dealloc__(self):
        free(self.buf)

    @property
    def direct(self):
        """True when rows are decoded in place: the dtype is the decoder's whole row
        (every column, in its order); otherwise through a row of every column and run
        copies."""
        return bool(self.cfg.direct)

    @property
    def copy_runs(self):
        """How many copies move a decoded row's selected columns into the output."""
        return 0 if self.cfg.direct else self.cfg.nruns

    cdef int _prepare(self, w10g_eb_sink *sink, cnp.ndarray out) except -1:
        memset(sink, 0, sizeof(w10g_eb_sink))
        sink.cfg = &self.cfg
        sink.rows = <char *>cnp.PyArray_DATA(out)
        sink.itemsize = self.dtype.itemsize
        sink.capacity = out.shape[0]
        sink.hz = self.hz
        sink.state_mask = self.state_mask
        sink.family_mask = self.family_mask
        return 0

    cdef object _finish(self, out, w10g_eb_sink *sink):
        return grow_rows(out, self.dtype, sink.rows, sink.itemsize, sink.capacity,
                         &sink.spill, sink.n,
                         max(2 * sink.capacity, sink.n + sink.n // 4, <size_t>64))

    def read(self, int fd, out=None, *, bint keep=False):
        """Read ``fd`` (a freshly opened pinned iterator) to its end and decode it into
        ``out``; ``(array, n)`` as the sock_diag Dumper. ``keep``: keep the raw bytes for
        :meth:`last_bytes` (recordings); otherwise each read() is decoded as it arrives
        in a buffer that stays in the cache."""
        cdef w10g_eb_sink sink
        cdef int rc, drc = 0
        cdef size_t used = 0
        out = check_out(out, self.dtype)
        self._prepare(&sink, out)
        with nogil:
            sink.now_ns = _clock(CLOCK_REALTIME)
            sink.mono_to_real_ns = sink.now_ns - _clock(CLOCK_MONOTONIC)
            if keep:
                rc = w10g_eb_read_all(fd, &self.buf, &self.cap, &used)
                if rc == 0:
                    drc = w10g_eb_decode(self.buf, used, &sink)
            else:
                rc = w10g_eb_read_decode(fd, &self.buf, &self.cap, &sink, &used)
        if not keep and (rc == -_errno.EBADMSG or rc == -_errno.ENOMEM):
            drc, rc = rc, 0                 # a decoding error, not a read error
        self.used = used if keep else 0
        self.last_now_ns = sink.now_ns
        self.last_offset_ns = sink.mono_to_real_ns
        if rc < 0:
            free(sink.spill)
            raise OSError(-rc, f"reading the ebpf iterator: {os.strerror(-rc)}")
        if drc < 0:
            free(sink.spill)
            raise self._error(drc, &sink)
        if sink.headers == 0:
            free(sink.spill)
            raise errors.MalformedReply("the ebpf iterator's output has no web10g header "
                                        "(another program is pinned there?)")
        self.hz = sink.hz
        self.hooks = sink.hooks
        return self._finish(out, &sink), sink.n

    def last_bytes(self):
        """The raw bytes of the last ``read(keep=True)`` (for recordings)."""
        return (<char *>self.buf)[:self.used] if self.used else b""

    def decode(self, const uint8_t[::1] data, out=None, *, long long now_ns=0,
               long long offset_ns=0, unsigned int netns_ino=0):
        """Decode recorded iterator bytes or ring-buffer records; ``(array, n)``."""
        cdef w10g_eb_sink sink
        cdef int drc
        cdef size_t n = data.shape[0]
        out = check_out(out, self.dtype)
        self._prepare(&sink, out)
        sink.now_ns = now_ns
        sink.mono_to_real_ns = offset_ns
        sink.netns_ino = netns_ino
        with nogil:
            drc = w10g_eb_decode(&data[0] if n else NULL, n, &sink)
        if drc < 0:
            free(sink.spill)
            raise self._error(drc, &sink)
        if sink.headers:
            self.hz = sink.hz
            self.hooks = sink.hooks
        return self._finish(out, &sink), sink.n

    cdef object _error(self, int rc, w10g_eb_sink *sink):
        if rc == -_errno.ENOMEM:
            return MemoryError()
        return errors.MalformedReply(
            f"malformed ebpf record at byte {sink.bad_offset} (the BPF object and this "
            "package disagree on the record layout: rebuild, then reload with "
            "'web10g ebpf load --reload')")
