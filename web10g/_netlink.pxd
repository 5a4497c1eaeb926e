# cython: language_level=3
"""The netlink socket core, declared for other Cython modules (the backends' decoders)."""
from libc.stdint cimport uint32_t, int32_t, int64_t

cimport web10g._mnl as mnl
from web10g._linux cimport sockaddr_nl

# Where a transaction failed; kept in nl_status.stage so the error message can name it.
cdef enum nl_stage:
    STAGE_NONE = 0
    STAGE_SEND = 1
    STAGE_RECV = 2
    STAGE_PARSE = 3     # libmnl's checks (sequence, port id, NLM_F_DUMP_INTR, framing)
    STAGE_KERNEL = 4    # the kernel answered NLMSG_ERROR, or NLMSG_DONE with an error
    STAGE_DECODE = 5    # the caller's data callback rejected a message
    STAGE_ERRVAL = 6    # NLMSG_ERROR / NLMSG_DONE carried a value outside -4095..0
    STAGE_PEER = 7      # the peer's datagrams come from a process of another user

cdef struct nl_status:
    int err                 # positive errno, 0 when fine
    int stage               # nl_stage
    uint32_t messages       # data messages handed to the callback
    uint32_t datagrams      # datagrams received
    char extack[256]        # the kernel's extended-ack text, NUL-terminated ("" if none)
    int32_t bad_error       # STAGE_ERRVAL: the value received
    uint32_t sender_uid     # STAGE_PEER: the uid the peer's datagrams came from

cdef bint frames_ok(const char *buf, size_t n) noexcept nogil


cdef class NetlinkSocket:
    cdef mnl.mnl_socket *nl
    cdef readonly int protocol
    cdef readonly unsigned int portid
    cdef readonly unsigned int peer
    cdef sockaddr_nl dest
    cdef char *rxbuf        # where the next datagram is received: rxbuf0, or the tap's end
    cdef char *rxbuf0       # the receive buffer this socket owns
    cdef size_t rxlen
    cdef uint32_t seq
    cdef bint busy
    cdef bint dirty         # a failed transaction may have left datagrams queued
    cdef bint check_creds   # peer mode: accept only datagrams sent as root or as us
    cdef uint32_t euid      # our effective uid when the socket was opened
    cdef readonly unsigned long foreign     # datagrams dropped: not from the expected sender
    # the tap: when on, every datagram is received straight into it, each behind a
    # (u32 length, i64 rx_ns) header: recordings of exactly what the kernel sent, with
    # no copy (see tap_take)
    cdef int64_t rx_ns      # CLOCK_REALTIME when the last datagram was received
    cdef bint tapping
    cdef char *tap
    cdef size_t tap_len
    cdef size_t tap_cap
    cdef size_t tap_hint    # the last sample's length: a new tap starts that large
    cdef list tap_pool      # TapData given back (tap_recycle): their memory is reused
    cdef int rx_target(self) noexcept nogil
    cdef int tap_append(self, size_t n) noexcept nogil
    cdef ssize_t recv_checked(self, int flags, nl_status *st) noexcept nogil
    cdef ssize_t receive(self, nl_status *st) noexcept nogil
    cdef int accept(self, size_t n, nl_status *st) noexcept nogil

    cdef uint32_t next_seq(self) noexcept nogil
    cdef int transact(self, void *req, size_t reqlen, mnl.mnl_cb_t cb, void *data,
                      nl_status *st) noexcept nogil
    cdef int drain(self) noexcept nogil
    cdef int transact_batch(self, void *req, size_t reqlen, uint32_t nreq, uint32_t first_seq,
                            mnl.mnl_cb_t cb, void *data, int *status,
                            nl_status *st) noexcept nogil
    cdef int receive_pending(self, mnl.mnl_cb_t cb, void *data, nl_status *st,
                             uint32_t *overruns) noexcept nogil
    cdef int acquire(self) except -1
    cdef void release(self) noexcept
    cdef object error_from(self, nl_status *st, str call)
