# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""sock_diag dumps decoded by C straight into numpy structured arrays.

A :class:`Dumper` holds its prebuilt request and the decoder's column offsets for one
output dtype (checked once, here). ``dump(out)`` runs the dump without the GIL: for both
address families one walk of the kernel's socket tables (the compatibility request,
below), else one per family; the C decoder writes each record into the next row of
``out``; rows beyond its capacity go to a spill area and ``out`` is grown (geometrically)
afterwards, so no row is lost. Errors are raised after the nogil block.
"""
import errno as _errno

import numpy as np
cimport numpy as cnp

from libc.stdint cimport uint8_t, uint16_t, uint32_t, int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset

cimport web10g._mnl as mnl
from web10g._linux cimport nlmsghdr, NLMSG_HDRLEN, NLM_F_REQUEST, NLM_F_DUMP, NLM_F_ACK
from web10g._netlink cimport NetlinkSocket, nl_status, STAGE_DECODE, frames_ok
from web10g._sockdiag cimport (
    W10G_SD_NFIELDS, W10G_SD_ACCECN_BITFIELD, W10G_SD_DERIVED, W10G_SD_STREAM_MIN,
    w10g_sd_config, w10g_sd_done,
    w10g_flowtab, w10g_sd_sink, w10g_sd_on_message, w10g_sd_field_name, w10g_sd_field_kind,
    w10g_sd_kind_width, w10g_sd_plan, w10g_sd_row_offset, w10g_sd_row_size,
    w10g_flowtab_end_dump, w10g_flowtab_free, w10g_tcp_info_field,
    w10g_tcp_info_size,
)
from web10g._rows cimport check_out, grow_rows
from cpython.object cimport PyObject
from cpython.list cimport PyList_GET_ITEM

cdef extern from "Python.h":
    Py_ssize_t Py_REFCNT(PyObject *o)
from web10g import errors

cnp.import_array()

cdef enum:
    TCPDIAG_GETSOCK = 18
    SOCK_DIAG_BY_FAMILY = 20
    REQ_V2_SIZE = 56        # sizeof(struct inet_diag_req_v2)
    REQ_V1_SIZE = 60        # sizeof(struct inet_diag_req)

# Both families in one walk. A SOCK_DIAG_BY_FAMILY request names one family, and the
# kernel walks every bucket of the established hash (262,144 here) and every socket in
# it for each family asked: for a machine of IPv4 flows the IPv6 dump finds nothing and
# still costs a fifth of the IPv4 one (4.6 against 22 ms at 20,000 flows). The older
# request, TCPDIAG_GETSOCK with struct inet_diag_req, dumps with family AF_UNSPEC: one
# walk, both families, the same records (typed TCPDIAG_GETSOCK), bytecode filters
# included. A kernel that refuses it (it has been in every kernel since 2.6, but a
# kernel may drop it) gets the per-family requests from then on.
cdef bint _one_walk_refused = False
ACCECN_BITFIELD = W10G_SD_ACCECN_BITFIELD
DERIVED = W10G_SD_DERIVED

#: Every column the decoder can produce, in its order, and each column's store kind.
FIELD_NAMES = tuple(w10g_sd_field_name(i).decode() for i in range(W10G_SD_NFIELDS))
FIELD_KINDS = tuple(w10g_sd_field_kind(i).decode() for i in range(W10G_SD_NFIELDS))
FIELD_WIDTHS = tuple(w10g_sd_kind_width(w10g_sd_field_kind(i)) for i in range(W10G_SD_NFIELDS))

# numpy type of each store kind, to check a dtype once against the decoder.
_KIND_DTYPES = {
    "U8": np.dtype(np.uint8), "U16": np.dtype(np.uint16), "U32": np.dtype(np.uint32),
    "U64": np.dtype(np.uint64), "I32": np.dtype(np.int32), "I64": np.dtype(np.int64),
    "F64": np.dtype(np.float64), "S16": np.dtype("S16"), "A16": np.dtype(("u1", (16,))),
}


cdef int _build_config(w10g_sd_config *cfg, object dtype) except -1:
    cdef int i
    names = dtype.names or ()
    index = {name: i for i, name in enumerate(FIELD_NAMES)}
    for i in range(W10G_SD_NFIELDS):
        cfg.off[i] = -1
    for name in names:
        if name not in index:
            raise ValueError(f"the sock_diag decoder cannot fill column {name!r}")
        ftype, offset = dtype.fields[name][:2]
        i = index[name]
        want = _KIND_DTYPES[FIELD_KINDS[i]]
        if ftype != want:
            raise TypeError(f"column {name!r} must be {want}, not {ftype}")
        cfg.off[i] = offset
    w10g_sd_plan(cfg, dtype.itemsize)
    return 0


cdef char *_dump_request(uint16_t msg_type, size_t body_size, bytes attr,
                         size_t *length) except NULL:
    """A zeroed dump request of ``msg_type`` with a body of ``body_size`` bytes (filled
    by the caller) and ``attr`` after it; malloc'd, its size in ``*length``."""
    cdef size_t n = NLMSG_HDRLEN + body_size + len(attr)
    cdef char *req = <char *>malloc(n)
    cdef nlmsghdr *hdr = <nlmsghdr *>req
    if req == NULL:
        raise MemoryError()
    memset(req, 0, n)
    hdr.nlmsg_len = <uint32_t>n
    hdr.nlmsg_type = msg_type
    hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP
    if attr:
        memcpy(req + NLMSG_HDRLEN + body_size, <char *>attr, len(attr))
    length[0] = n
    return req


cdef class Dumper:
    """sock_diag dumps of one column selection, filter and state set."""

    cdef NetlinkSocket sock
    cdef w10g_sd_config cfg
    cdef w10g_flowtab flows
    cdef readonly object dtype
    cdef readonly int ext
    cdef readonly unsigned int states
    cdef readonly tuple families
    cdef readonly bint filtered
    cdef char *req
    cdef size_t reqlen
    cdef char *req1
    cdef size_t req1len
    cdef bint derived
    cdef list _pool
    cdef readonly size_t last_rows
    cdef readonly unsigned long recycled, allocated

    def __cinit__(self):
        self.req = NULL
        self.req1 = NULL
        memset(&self.flows, 0, sizeof(self.flows))
        self._pool = []

    def __init__(self, NetlinkSocket sock not None, dtype, *, int ext=0,
                 unsigned int states=0xFFF, bytes bytecode=b"", families=(2, 10),
                 unsigned int flags=0, sysctls=(1, 1, 2)):
        cdef uint8_t *body
        cdef bytes attr
        dtype = np.dtype(dtype)
        _build_config(&self.cfg, dtype)
        self.derived = bool(flags & W10G_SD_DERIVED)
        self.cfg.flags = flags
        self.cfg.sysctl_timestamps, self.cfg.sysctl_sack, self.cfg.sysctl_ecn = sysctls
        self.sock = sock
        self.dtype = dtype
        self.ext = ext
        self.states = states
        self.families = tuple(families)
        self.filtered = bool(bytecode)
        # One request buffer; the family byte and the sequence number change per dump.
        attr = b""
        if bytecode:
            n = 4 + len(bytecode)
            attr = n.to_bytes(2, "little") + (1).to_bytes(2, "little") + bytecode
            attr += b"\0" * (-n % 4)
        self.req = _dump_request(SOCK_DIAG_BY_FAMILY, REQ_V2_SIZE, attr, &self.reqlen)
        body = <uint8_t *>(self.req + NLMSG_HDRLEN)
        body[1] = 6                                  # IPPROTO_TCP
        body[2] = <uint8_t>ext
        memcpy(body + 4, &states, 4)
        if 2 in self.families and 10 in self.families:
            self.req1 = _dump_request(TCPDIAG_GETSOCK, REQ_V1_SIZE, attr, &self.req1len)
            body = <uint8_t *>(self.req1 + NLMSG_HDRLEN)
            body[3] = <uint8_t>ext                   # idiag_family 0: both
            memcpy(body + 52, &states, 4)            # after the 48-byte socket id

    def __dealloc__(self):
        free(self.req)
        free(self.req1)
        w10g_flowtab_free(&self.flows)

    @property
    def one_walk(self):
        """True when a dump asks for both families in one walk (TCPDIAG_GETSOCK)."""
        return self.req1 != NULL and not _one_walk_refused

    @property
    def direct(self):
        """True when rows are decoded in place: the dtype is the decoder's whole row
        (every column, in its order); otherwise through a scratch row and run copies."""
        return bool(self.cfg.direct)

    @property
    def copy_runs(self):
        """How many copies move a decoded row's selected columns into the output."""
        return 0 if self.cfg.direct else self.cfg.nruns

    @property
    def flows_tracked(self):
        """Flows whose running max/min the decoder keeps (derived columns only)."""
        return self.flows.nprev

    @property
    def flow_lookups(self):
        """(rows found where the last dump had them, rows that needed the index)."""
        return self.flows.hits, self.flows.probes

    cdef object _check_out(self, out):
        return check_out(out, self.dtype)

    cdef object _finish(self, out, w10g_sd_sink *sink):
        """Move spilled rows into a grown array (x2, geometric); free the spill."""
        w10g_sd_done(sink)
        return grow_rows(out, self.dtype, sink.rows, sink.itemsize, sink.capacity,
                         &sink.spill, sink.n,
                         max(2 * sink.capacity, sink.n + sink.n // 4, <size_t>64))

    cdef int _prepare(self, w10g_sd_sink *sink, cnp.ndarray out) except -1:
        memset(sink, 0, sizeof(w10g_sd_sink))
        sink.cfg = &self.cfg
        sink.rows = <char *>cnp.PyArray_DATA(out)
        sink.itemsize = self.dtype.itemsize
        sink.capacity = out.shape[0]
        sink.stream = sink.capacity * sink.itemsize >= W10G_SD_STREAM_MIN
        sink.rxbuf = <const char *const *>&self.sock.rxbuf
        sink.rx_ns = &self.sock.rx_ns
        sink.flows = &self.flows if self.derived else NULL
        return 0

    cdef object _fresh(self):
        """An array for a result the caller will own (``dump()`` without ``out``).

        A new array costs a page fault per 4 KiB on every sample (read_all() of every
        variable at 100,000 flows is 87 MB: ~20% on top of the dump). So the arrays of
        earlier results are kept (the last two) and one is reused once nothing but this
        pool refers to it any more: the caller has dropped that result and every view
        of it, so nobody can see the reuse; while it is held, it is left alone.
        """
        cdef Py_ssize_t i
        cdef object arr
        cdef Py_ssize_t need = max(<Py_ssize_t>64,
                                   <Py_ssize_t>(self.last_rows + self.last_rows // 8 + 16))
        for i in range(len(self._pool)):
            if Py_REFCNT(<PyObject *>PyList_GET_ITEM(self._pool, i)) == 1:
                arr = self._pool[i]
                if (<cnp.ndarray>arr).shape[0] >= need:
                    self.recycled += 1
                    return arr
                del self._pool[i]           # too small now: let it go
                break
        self.allocated += 1
        return np.empty(need, dtype=self.dtype)

    cdef _keep(self, object arr):
        cdef Py_ssize_t i
        for i in range(len(self._pool)):
            if self._pool[i] is arr:
                return
        if len(self._pool) >= 2:
            # replace one that is free, else the oldest
            for i in range(len(self._pool)):
                if Py_REFCNT(<PyObject *>PyList_GET_ITEM(self._pool, i)) == 1:
                    del self._pool[i]
                    break
            else:
                del self._pool[0]
        self._pool.append(arr)

    def dump(self, out=None):
        """Dump every family into ``out``; return ``(array, n)``.

        ``array`` is ``out`` itself, or a larger copy when the flows outnumbered its
        capacity; its first ``n`` rows are this sample. Without ``out``, an array for the
        caller to own: new, or one of an earlier result nothing refers to any more.
        """
        cdef w10g_sd_sink sink
        cdef nl_status st
        cdef int rc = 0
        cdef uint8_t fam
        cdef list fams = list(self.families)
        cdef bint pooled = out is None
        out = self._fresh() if pooled else self._check_out(out)
        self._prepare(&sink, out)
        self.sock.acquire()
        try:
            if self.one_walk:
                with nogil:
                    (<nlmsghdr *>self.req1).nlmsg_seq = self.sock.next_seq()
                    rc = self.sock.transact(self.req1, self.req1len,
                                            <mnl.mnl_cb_t>w10g_sd_on_message, &sink, &st)
                if rc < 0 and st.stage != STAGE_DECODE and st.messages == 0 and \
                        st.err in (_errno.EINVAL, _errno.ENOENT, _errno.EOPNOTSUPP):
                    _refuse_one_walk()
                    rc = 0
                else:
                    fams = []
            for f in fams:
                fam = f
                with nogil:
                    self.req[NLMSG_HDRLEN] = <char>fam
                    (<nlmsghdr *>self.req).nlmsg_seq = self.sock.next_seq()
                    rc = self.sock.transact(self.req, self.reqlen,
                                            <mnl.mnl_cb_t>w10g_sd_on_message, &sink, &st)
                if rc < 0:
                    break
        finally:
            self.sock.release()
        if rc < 0:
            free(sink.spill)
            raise self._error(&st, &sink, "sock_diag dump")
        if self.derived:
            w10g_flowtab_end_dump(&self.flows)
        arr = self._finish(out, &sink)
        self.last_rows = sink.n
        if pooled:
            self._keep(arr)
        return arr, sink.n

    def lookup(self, int family, bytes sockid not None, out=None):
        """One socket by its exact id (48 bytes of inet_diag_sockid); ``(array, n)``."""
        cdef w10g_sd_sink sink
        cdef nl_status st
        cdef int rc
        cdef char req[16 + 56]
        cdef nlmsghdr *hdr = <nlmsghdr *>req
        if len(sockid) != 48:
            raise ValueError("sockid must be 48 bytes (struct inet_diag_sockid)")
        out = self._check_out(out)
        self._prepare(&sink, out)
        memset(req, 0, sizeof(req))
        hdr.nlmsg_len = sizeof(req)
        hdr.nlmsg_type = SOCK_DIAG_BY_FAMILY
        hdr.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK
        req[16] = <char>family
        req[17] = 6
        req[18] = <char>self.ext
        memset(req + 20, 0xFF, 4)                    # every state
        memcpy(req + 24, <char *>sockid, 48)
        self.sock.acquire()
        try:
            with nogil:
                hdr.nlmsg_seq = self.sock.next_seq()
                rc = self.sock.transact(req, sizeof(req), <mnl.mnl_cb_t>w10g_sd_on_message,
                                        &sink, &st)
        finally:
            self.sock.release()
        if rc < 0:
            free(sink.spill)
            raise self._error(&st, &sink, "sock_diag lookup")
        return self._finish(out, &sink), sink.n

    def receive(self, out=None):
        """Decode the notifications already queued on this Dumper's socket (joined to
        the destroy groups); never blocks. Returns ``(array, n, overruns)``."""
        cdef w10g_sd_sink sink
        cdef nl_status st
        cdef int rc
        cdef uint32_t overruns = 0
        out = self._check_out(out)
        self._prepare(&sink, out)
        self.sock.acquire()
        try:
            with nogil:
                rc = self.sock.receive_pending(<mnl.mnl_cb_t>w10g_sd_on_message, &sink, &st,
                                               &overruns)
        finally:
            self.sock.release()
        if rc < 0:
            free(sink.spill)
            raise self._error(&st, &sink, "sock_diag destroy notifications")
        return self._finish(out, &sink), sink.n, overruns

    cdef object _error(self, nl_status *st, w10g_sd_sink *sink, str call):
        w10g_sd_done(sink)
        if st.stage == STAGE_DECODE and st.err != 12:   # not ENOMEM
            return errors.MalformedReply(
                f"{call}: record {sink.bad_offset} of the kernel's reply is malformed "
                "(a length points past the message); nothing was decoded from it")
        return self.sock.error_from(st, call)


def _refuse_one_walk(refused=True):
    """The kernel refused TCPDIAG_GETSOCK: per-family dumps from now on (the tests also
    call this, to run both paths)."""
    global _one_walk_refused
    _one_walk_refused = refused


cdef class FlowTable:
    """The per-flow running max/min behind the derived columns, for decoding a series of
    recorded samples (a live Dumper keeps its own)."""
    cdef w10g_flowtab flows

    def __cinit__(self):
        memset(&self.flows, 0, sizeof(self.flows))

    def __dealloc__(self):
        w10g_flowtab_free(&self.flows)

    def __len__(self):
        return self.flows.nprev


def decode_datagrams(datagrams, dtype, *, int64_t timestamp_ns=0, unsigned int flags=0,
                     sysctls=(1, 1, 2), out=None, FlowTable flows=None, timestamps=None):
    """Decode recorded dump datagrams (bytes) with the C decoder; ``(array, n)``.

    The same code path as a live dump, minus the socket: for replays, tests and fuzzing.
    Every row gets ``timestamp_ns``, or its datagram's entry of ``timestamps``.
    NLMSG_DONE ends a datagram's records; a malformed
    record raises MalformedReply. With ``flows`` (one sample per call, in order) the
    derived Max*/Min* columns are kept across calls as a live agent keeps them;
    without, they read 0.
    """
    cdef w10g_sd_config cfg
    cdef w10g_sd_sink sink
    cdef int rc
    cdef const unsigned char[::1] view
    dtype = np.dtype(dtype)
    _build_config(&cfg, dtype)
    cfg.flags = flags if flows is not None else flags & ~W10G_SD_DERIVED
    cfg.sysctl_timestamps, cfg.sysctl_sack, cfg.sysctl_ecn = sysctls
    out = check_out(out, dtype)
    memset(&sink, 0, sizeof(sink))
    sink.cfg = &cfg
    sink.rows = <char *>cnp.PyArray_DATA(out)
    sink.itemsize = dtype.itemsize
    sink.capacity = out.shape[0]
    sink.stream = sink.capacity * sink.itemsize >= W10G_SD_STREAM_MIN
    sink.now_ns = timestamp_ns
    sink.fixed_time = 1
    if flows is not None:
        sink.flows = &flows.flows
    for i, d in enumerate(datagrams):
        view = d
        if view.shape[0] == 0:
            continue
        if not frames_ok(<const char *>&view[0], view.shape[0]):
            free(sink.spill)
            raise errors.MalformedReply(
                f"recorded datagram {i} is not a sequence of whole netlink messages")
        if timestamps is not None:
            sink.now_ns = timestamps[i]
        with nogil:
            rc = mnl.mnl_cb_run(&view[0], view.shape[0], 0, 0,
                                <mnl.mnl_cb_t>w10g_sd_on_message, &sink)
        if rc == mnl.MNL_CB_ERROR:
            free(sink.spill)
            raise errors.MalformedReply(
                f"recorded datagram: record {sink.bad_offset} is malformed")
    w10g_sd_done(&sink)
    if flows is not None:
        w10g_flowtab_end_dump(&flows.flows)
    return grow_rows(out, dtype, sink.rows, sink.itemsize, sink.capacity, &sink.spill,
                     sink.n, sink.n), sink.n


def row_layout():
    """The decoder's whole row (struct w10g_sd_row): ({column: offset}, sizeof)."""
    return ({FIELD_NAMES[i]: w10g_sd_row_offset(i) for i in range(W10G_SD_NFIELDS)},
            w10g_sd_row_size())


def tcp_info_layout():
    """The C decoder's struct tcp_info: ({field: (offset, size)}, sizeof)."""
    cdef const char *name
    cdef size_t off, size
    cdef int i = 0
    fields = {}
    while w10g_tcp_info_field(i, &name, &off, &size) == 0:
        fields[name.decode()] = (off, size)
        i += 1
    return fields, w10g_tcp_info_size()
