# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""tcp_estats requests and their replies decoded by C into numpy structured arrays.

A :class:`Reader` holds the decoder's configuration for one output dtype (which
(table, index) goes to which column, with the width the module's INIT implies) and the
masks to send. Its methods drive the module's batched commands to completion without
the GIL: LIST_CONNS and READ_ALL page through the CID table (one page-sized batch per
request, ABI 4.3), READ_VARS for a watch list goes out as many requests in one send.
"""
import numpy as np
cimport numpy as cnp

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int8_t, int32_t, int64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memset

cimport web10g._mnl as mnl
from web10g._linux cimport nlmsghdr, genlmsghdr, nlattr, NLM_F_REQUEST, NLM_F_ACK
from web10g._netlink cimport NetlinkSocket, nl_status, STAGE_DECODE, frames_ok

from web10g._rows cimport check_out, grow_rows
from web10g import errors

cnp.import_array()

cdef extern from "<stdint.h>":
    uint32_t UINT32_MAX


cdef extern from "w10g_estats.h" nogil:
    enum:
        W10G_ES_TABLES
        W10G_ES_MAX_INDEX
        W10G_ES_NIDENT

    struct w10g_es_config:
        int32_t ident[W10G_ES_NIDENT]
        int32_t off[W10G_ES_TABLES][W10G_ES_MAX_INDEX]
        uint8_t width[W10G_ES_TABLES][W10G_ES_MAX_INDEX]
        uint16_t family_id
        int64_t usec_mult
        int8_t state_table
        int8_t state_index

    struct w10g_es_sink:
        const w10g_es_config *cfg
        uint8_t cmd
        uint8_t cid_adjust
        uint8_t ordered
        uint64_t min_cid
        const uint32_t *req_cids
        const int *req_status
        uint8_t *req_got
        uint32_t req_n
        uint32_t req_at
        char *rows
        size_t itemsize
        size_t capacity
        size_t n
        char *spill
        size_t spill_cap
        uint32_t batch_rows
        uint32_t max_cid
        uint32_t first_sec
        uint32_t first_usec
        uint32_t max_usec
        uint8_t have_time
        uint32_t bad_index
        const char *bad_reason

    int w10g_es_on_message(const nlmsghdr *nlh, void *sink) noexcept


cdef enum:
    CMD_LIST_CONNS = 0
    CMD_READ_ALL = 1
    CMD_READ_VARS = 2
    ATTR_MASK = 13
    ATTR_4TUPLE = 14
    ATTR_TIMESTAMP = 27
    NEA_CID = 6
    REQ_MAX = 128           # the largest request we build (READ_ALL + mask + token: 120)

cdef enum:
    # read_vars() status of a request the module acknowledged without its data message
    ES_NO_DATA = -2

NO_DATA = ES_NO_DATA

IDENT_NAMES = ("cid", "family", "state", "local_port", "rem_port", "local_addr", "rem_addr",
               "uid", "inode", "timestamp", "present")
_IDENT_DTYPES = {"cid": "u8", "family": "u1", "state": "u1", "local_port": "u2",
                 "rem_port": "u2", "local_addr": ("u1", (16,)), "rem_addr": ("u1", (16,)),
                 "uid": "u4", "inode": "u4", "timestamp": "i8", "present": "u2"}
_WIDTH_DTYPES = {1: ("u1", "i1"), 2: ("u2", "i2"), 4: ("u4", "i4"), 8: ("u8", "i8")}


cdef size_t _build(char *buf, uint16_t family_id, uint8_t cmd, uint32_t seq, int64_t cid,
                   const uint64_t *masks, bint has_token, uint64_t token) noexcept nogil:
    """One request into ``buf`` (REQ_MAX bytes); returns its length.

    Always NLM_F_ACK: success without data sends nothing else, so the ACK is the only
    end-of-reply marker (ABI 4.1); never NLM_F_DUMP (no command has a dump handler).
    """
    cdef nlmsghdr *nlh = mnl.mnl_nlmsg_put_header(buf)
    cdef genlmsghdr *g
    cdef nlattr *nest
    cdef int t
    nlh.nlmsg_type = family_id
    nlh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK
    nlh.nlmsg_seq = seq
    g = <genlmsghdr *>mnl.mnl_nlmsg_put_extra_header(nlh, sizeof(genlmsghdr))
    g.cmd = cmd
    g.version = 1
    if cid >= 0:
        nest = mnl.mnl_attr_nest_start(nlh, ATTR_4TUPLE)
        mnl.mnl_attr_put_u32(nlh, NEA_CID, <uint32_t>cid)
        mnl.mnl_attr_nest_end(nlh, nest)
    if masks != NULL:
        nest = mnl.mnl_attr_nest_start(nlh, ATTR_MASK)
        for t in range(W10G_ES_TABLES):
            mnl.mnl_attr_put_u64(nlh, t + 1, masks[t])
        mnl.mnl_attr_nest_end(nlh, nest)
    if has_token:
        mnl.mnl_attr_put_u64(nlh, ATTR_TIMESTAMP, token)    # exactly 8 bytes (ABI 3.5)
    return nlh.nlmsg_len


cdef class Reader:
    """Decodes tcp_estats replies into rows of one dtype."""

    cdef NetlinkSocket sock
    cdef w10g_es_config cfg
    cdef uint64_t masks[6]
    cdef readonly object dtype
    cdef readonly int batch_limit
    cdef w10g_es_sink last

    def __init__(self, NetlinkSocket sock not None, int family_id, dtype, positions,
                 widths, masks, *, int state_table=-1, int state_index=-1,
                 int64_t usec_mult=1, int batch_limit=1000):
        """``positions``: {column: (table, index)} for the variable columns of ``dtype``;
        ``widths``: {(table, index): payload bytes} for every variable INIT described;
        ``masks``: six u64 request masks."""
        cdef int t, i
        dtype = np.dtype(dtype)
        self.sock = sock
        self.dtype = dtype
        self.batch_limit = batch_limit
        memset(&self.cfg, 0, sizeof(self.cfg))
        memset(&self.last, 0, sizeof(self.last))
        for t in range(W10G_ES_TABLES):
            self.masks[t] = masks[t]
            for i in range(W10G_ES_MAX_INDEX):
                self.cfg.off[t][i] = -1
        for i, name in enumerate(IDENT_NAMES):
            self.cfg.ident[i] = -1
            if name in dtype.names:
                ftype, off = dtype.fields[name][:2]
                if ftype != np.dtype(_IDENT_DTYPES[name]):
                    raise TypeError(f"column {name!r} must be {np.dtype(_IDENT_DTYPES[name])}")
                self.cfg.ident[i] = off
        for (t, i), w in widths.items():
            if (not (0 <= t < W10G_ES_TABLES and 0 <= i < W10G_ES_MAX_INDEX)
                    or w not in (1, 2, 4, 8)):
                raise ValueError(f"bad variable position or width: {(t, i, w)}")
            self.cfg.width[t][i] = w
        for name in dtype.names:
            if name in IDENT_NAMES:
                continue
            if name not in positions:
                raise ValueError(f"the estats decoder cannot fill column {name!r}")
            t, i = positions[name]
            ftype, off = dtype.fields[name][:2]
            if ftype.itemsize != self.cfg.width[t][i] or ftype.kind not in "uif":
                raise TypeError(f"column {name!r} is {ftype}, but the module sends "
                                f"{self.cfg.width[t][i]} bytes")
            self.cfg.off[t][i] = off
        self.cfg.family_id = family_id
        self.cfg.usec_mult = usec_mult
        self.cfg.state_table = state_table
        self.cfg.state_index = state_index

    @property
    def usec_mult(self):
        return self.cfg.usec_mult

    @usec_mult.setter
    def usec_mult(self, int64_t value):
        self.cfg.usec_mult = value

    @property
    def time_sample(self):
        """(sec, usec, max usec) of the last call's first message, or None."""
        if not self.last.have_time:
            return None
        return self.last.first_sec, self.last.first_usec, self.last.max_usec

    cdef object _check_out(self, out):
        return check_out(out, self.dtype)

    cdef void _prepare(self, w10g_es_sink *sink, cnp.ndarray out, uint8_t cmd):
        # Everything a call changes lives in its sink (on the caller's stack): calls on
        # one Reader from several threads share only the read-only cfg.
        memset(sink, 0, sizeof(w10g_es_sink))
        sink.cfg = &self.cfg
        sink.cmd = cmd
        # READ_ALL reports every CID plus one (ABI 5.3): the decoder subtracts it, and the
        # reported maximum is exactly where the next batch must start.
        sink.cid_adjust = 1 if cmd == CMD_READ_ALL else 0
        sink.min_cid = sink.cid_adjust
        sink.rows = <char *>cnp.PyArray_DATA(out)
        sink.itemsize = self.dtype.itemsize
        sink.capacity = out.shape[0]

    cdef object _finish(self, out, w10g_es_sink *sink):
        self.last = sink[0]         # for time_sample; no pointer of it is used after
        self.last.spill = NULL
        self.last.req_cids = NULL
        self.last.req_status = NULL
        self.last.req_got = NULL
        return grow_rows(out, self.dtype, sink.rows, sink.itemsize, sink.capacity,
                         &sink.spill, sink.n,
                         max(2 * sink.capacity, sink.n + sink.n // 4, <size_t>64))

    cdef object _error(self, nl_status *st, w10g_es_sink *sink, str call):
        if st.stage == STAGE_DECODE and st.err != 12:
            why = sink.bad_reason.decode() if sink.bad_reason != NULL else "malformed"
            return errors.MalformedReply(f"{call}: message {sink.bad_index} of the reply is "
                                         f"malformed: {why}")
        return self.sock.error_from(st, call)

    def _paginate(self, uint8_t cmd, out, token):
        """LIST_CONNS / READ_ALL from CID 0 until a request yields no data (ABI 4.3)."""
        cdef w10g_es_sink sink
        cdef nl_status st
        cdef char req[REQ_MAX]
        cdef size_t reqlen
        cdef int rc = 0
        cdef int64_t start = 0
        cdef uint32_t seq
        cdef bint has_token = token is not None
        cdef uint64_t tok = token if has_token else 0
        cdef const uint64_t *masks = self.masks if cmd == CMD_READ_ALL else NULL
        cdef int rounds = 0
        cdef int64_t nxt
        out = self._check_out(out)
        self._prepare(&sink, out, cmd)
        sink.ordered = True
        self.sock.acquire()
        try:
            with nogil:
                while True:
                    seq = self.sock.next_seq()
                    reqlen = _build(req, self.cfg.family_id, cmd, seq, start, masks,
                                    has_token, tok)
                    sink.batch_rows = 0
                    sink.max_cid = 0
                    rc = self.sock.transact(req, reqlen, <mnl.mnl_cb_t>w10g_es_on_message,
                                            &sink, &st)
                    if rc < 0 or sink.batch_rows == 0:
                        break
                    rounds += 1
                    # LIST_CONNS reports true CIDs: resume after the largest.
                    nxt = <int64_t>sink.max_cid + (0 if cmd == CMD_READ_ALL else 1)
                    if nxt <= start or nxt > 0x7FFFFFFF:
                        break      # a module that does not advance: stop rather than loop
                    start = nxt
        finally:
            self.sock.release()
        if rc < 0:
            free(sink.spill)
            raise self._error(&st, &sink, "tcp_estats " + ("READ_ALL" if cmd else "LIST_CONNS"))
        return self._finish(out, &sink), sink.n, rounds + 1

    def list_conns(self, out=None, token=None):
        """Every connection's identity; ``(array, n, requests)``."""
        return self._paginate(CMD_LIST_CONNS, out, token)

    def read_all(self, out=None, token=None):
        """Every readable connection's selected variables; ``(array, n, requests)``."""
        return self._paginate(CMD_READ_ALL, out, token)

    def read_vars(self, cids, out=None):
        """READ_VARS for many CIDs, as few sends as the socket buffers allow.

        Returns ``(array, n, status)``: rows in request order for the CIDs that answered,
        and per CID 0, the errno the module gave (EINVAL: gone, EACCES: not yours), or
        :data:`NO_DATA` when the module acknowledged the request without its data message.
        Every data message must answer the oldest request still waiting and name its CID
        (MalformedReply otherwise): replies are matched to requests, never taken in
        arrival order alone.
        """
        cdef const uint32_t[::1] ids = np.ascontiguousarray(cids, dtype=np.uint32)
        cdef Py_ssize_t total = ids.shape[0]
        cdef w10g_es_sink sink
        cdef nl_status st
        cdef int rc = 0
        cdef size_t chunk = max(1, min(self.batch_limit, total))
        cdef size_t reqlen, pos, k, i
        cdef uint32_t first
        cdef char *buf
        cdef int[::1] status = np.zeros(total, dtype=np.intc)
        cdef uint8_t *got
        cdef bint both = False
        out = self._check_out(out)
        self._prepare(&sink, out, CMD_READ_VARS)
        buf = <char *>malloc(chunk * REQ_MAX)
        got = <uint8_t *>calloc(chunk, 1)
        if buf == NULL or got == NULL:
            free(buf)
            free(got)
            raise MemoryError()
        sink.req_got = got
        try:
            self.sock.acquire()
        except BaseException:
            free(buf)
            free(got)
            raise
        try:
            with nogil:
                pos = 0
                while pos < <size_t>total:
                    k = min(chunk, <size_t>total - pos)
                    if <size_t>self.sock.seq + k + 2 > <size_t>UINT32_MAX:
                        self.sock.seq = 0       # keep the batch's numbers consecutive
                    first = self.sock.seq + 1
                    reqlen = 0
                    for i in range(k):
                        reqlen += _build(buf + reqlen, self.cfg.family_id, CMD_READ_VARS,
                                         self.sock.next_seq(), ids[pos + i], self.masks,
                                         False, 0)
                    sink.req_cids = &ids[pos]
                    sink.req_status = &status[pos]
                    sink.req_n = <uint32_t>k
                    sink.req_at = 0
                    memset(got, 0, k)
                    rc = self.sock.transact_batch(buf, reqlen, <uint32_t>k, first,
                                                  <mnl.mnl_cb_t>w10g_es_on_message, &sink,
                                                  &status[pos], &st)
                    if rc < 0:
                        break
                    for i in range(k):
                        if status[pos + i] == 0 and not got[i]:
                            status[pos + i] = ES_NO_DATA
                        elif status[pos + i] != 0 and got[i]:
                            both = True     # data, then an error for the same request
                    if both:
                        break
                    pos += k
        finally:
            self.sock.release()
            free(buf)
            free(got)
        if rc < 0:
            free(sink.spill)
            raise self._error(&st, &sink, "tcp_estats READ_VARS")
        if both:
            free(sink.spill)
            raise errors.MalformedReply(
                "tcp_estats READ_VARS: the module sent a connection's data and then an error "
                "for the same request")
        return self._finish(out, &sink), sink.n, np.asarray(status)

    def decode(self, datagrams, int cmd, *, out=None):
        """Decode recorded reply datagrams of ``cmd`` with the same C path as live reads
        (for tests, fuzzing and replays); ``(array, n)``. Control messages (the ACK) are
        skipped; a malformed message raises MalformedReply."""
        cdef w10g_es_sink sink
        cdef const unsigned char[::1] view
        cdef int rc
        if not 0 <= cmd <= 255:
            raise ValueError(f"cmd {cmd} is not a tcp_estats command")
        out = self._check_out(out)
        self._prepare(&sink, out, <uint8_t>cmd)
        for i, d in enumerate(datagrams):
            view = d
            if view.shape[0] == 0:
                continue
            if not frames_ok(<const char *>&view[0], view.shape[0]):
                free(sink.spill)
                raise errors.MalformedReply(
                    f"recorded datagram {i} is not a sequence of whole netlink messages")
            with nogil:
                rc = mnl.mnl_cb_run(&view[0], view.shape[0], 0, 0,
                                    <mnl.mnl_cb_t>w10g_es_on_message, &sink)
            if rc == mnl.MNL_CB_ERROR:
                free(sink.spill)
                why = sink.bad_reason.decode() if sink.bad_reason != NULL else "malformed"
                raise errors.MalformedReply(f"recorded datagram {i}: message "
                                            f"{sink.bad_index} is malformed: {why}")
        return self._finish(out, &sink), sink.n
