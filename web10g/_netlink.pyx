# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Netlink sockets over libmnl: open, bind, one request, the receive loop.

A transaction (send one request, receive until the ACK / NLMSG_DONE / an error) runs
entirely without the GIL; the data messages go to a C callback given by the caller (the
backends' decoders) and errors are collected in an ``nl_status`` and raised afterwards.
"""
from libc.errno cimport (
    errno, EINTR, EAGAIN, EBADMSG, ENOMEM, ENOBUFS, EINVAL, ENOSPC, EPROTO, ECONNREFUSED,
    EPERM,
)
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES, PyBUF_WRITABLE
from libc.stdint cimport uint16_t, uint32_t, int32_t, int64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy, memset
from posix.time cimport timeval

cimport web10g._mnl as mnl
from web10g._linux cimport (
    nlmsghdr, nlmsgerr, nlattr, sockaddr_nl, genlmsghdr,
    AF_NETLINK, SOL_SOCKET, SO_RCVTIMEO, SOCK_CLOEXEC, MSG_DONTWAIT,
    NETLINK_EXT_ACK, NETLINK_CAP_ACK, NETLINK_ADD_MEMBERSHIP, NETLINK_DROP_MEMBERSHIP,
    NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_ACK_TLVS, NLM_F_CAPPED,
    NLMSG_HDRLEN, NLA_TYPE_MASK, NLMSGERR_ATTR_MSG,
    GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_NAME,
)

from web10g import errors

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    struct iovec:
        void *iov_base
        size_t iov_len
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    struct ucred:
        int pid
        unsigned int uid
        unsigned int gid
    cmsghdr *CMSG_FIRSTHDR(msghdr *msg)
    cmsghdr *CMSG_NXTHDR(msghdr *msg, cmsghdr *c)
    unsigned char *CMSG_DATA(cmsghdr *c)
    size_t CMSG_LEN(size_t n)
    ssize_t recvmsg(int fd, msghdr *msg, int flags)
    int connect(int fd, const sockaddr *addr, socklen_t addrlen)
    int SCM_CREDENTIALS
    int SO_PASSCRED
    ssize_t sendto(int fd, const void *buf, size_t n, int flags,
                   const sockaddr *addr, socklen_t addrlen)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen)
    int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
    int MSG_TRUNC
    int SO_RCVBUFFORCE
    int SO_RCVBUF

cdef extern from "<sys/socket.h>":
    int SOL_NETLINK

cdef extern from "w10g_errno.h" nogil:
    void w10g_set_errno(int e)

cdef extern from "<unistd.h>" nogil:
    unsigned int geteuid()

# The errno range: an NLMSG_ERROR / NLMSG_DONE value outside -MAX_ERRNO..0 is malformed.
cdef enum:
    MAX_ERRNO = 4095

cdef extern from "<time.h>" nogil:
    ctypedef int clockid_t
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk, timespec *ts)
    clockid_t CLOCK_REALTIME


cdef inline int64_t _now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec

# The spec measured that the kernel sizes each dump datagram from the largest receive
# length offered, capped at 32 KiB; a smaller buffer truncates datagrams (MSG_TRUNC) and
# loses records. 64 KiB is the fixed choice (stock-kernel-mapping.md section 1.5).
DEFAULT_RCVBUF = 65536
DEFAULT_TIMEOUT = 10.0

_STAGE_NAMES = {
    STAGE_SEND: "send",
    STAGE_RECV: "receive",
    STAGE_PARSE: "reply check",
    STAGE_KERNEL: "kernel",
    STAGE_DECODE: "decode",
    STAGE_ERRVAL: "reply check",
    STAGE_PEER: "peer check",
}


cdef bint frames_ok(const char *buf, size_t n) noexcept nogil:
    """Whether a datagram is exactly a sequence of whole netlink messages.

    Checked before libmnl walks it: libmnl 1.0.4's mnl_nlmsg_ok compares nlmsg_len as a
    signed int, so a length >= 2^31 passes and the message would run past the datagram.
    """
    cdef uint32_t mlen
    cdef size_t step
    while n > 0:
        if n < <size_t>NLMSG_HDRLEN:
            return False
        memcpy(&mlen, buf, 4)
        if mlen < <uint32_t>NLMSG_HDRLEN or mlen > n:
            return False
        step = _nla_align(mlen)
        if step > n:
            step = n
        buf += step
        n -= step
    return True


cdef inline bint _stale(const char *buf, size_t n, uint32_t first) noexcept nogil:
    """Whether a datagram answers a request sent before sequence number ``first``: its
    first message carries an older non-zero one (a late ACK or error of an earlier
    request). Such datagrams are skipped, not decoded and not failed on."""
    cdef uint32_t s
    if n < <size_t>NLMSG_HDRLEN:
        return False
    memcpy(&s, buf + 8, 4)
    return s != 0 and <uint32_t>(first - s - 1) < <uint32_t>0x7FFFFFFF


cdef struct run_ctx:
    mnl.mnl_cb_t cb
    void *data
    nl_status *st
    # batch mode (transact_batch): one status per request, indexed by seq - first_seq
    int *status
    uint32_t first_seq
    uint32_t nreq
    uint32_t pending


cdef inline size_t _nla_align(size_t n) noexcept nogil:
    return (n + 3) & ~(<size_t>3)


cdef void _read_extack(const nlmsghdr *nlh, size_t off, nl_status *st) noexcept nogil:
    """Copy NLMSGERR_ATTR_MSG from the TLVs that start ``off`` bytes into the payload."""
    cdef size_t total = nlh.nlmsg_len
    if <size_t>NLMSG_HDRLEN + off > total:
        return
    cdef const nlattr *a = <const nlattr *>(<const char *>nlh + NLMSG_HDRLEN + off)
    cdef int remaining = <int>(total - NLMSG_HDRLEN - off)
    cdef size_t n
    while mnl.mnl_attr_ok(a, remaining):
        if (a.nla_type & NLA_TYPE_MASK) == NLMSGERR_ATTR_MSG:
            n = mnl.mnl_attr_get_payload_len(a)
            if n > sizeof(st.extack) - 1:
                n = sizeof(st.extack) - 1
            memcpy(st.extack, mnl.mnl_attr_get_payload(a), n)
            st.extack[n] = 0
            return
        remaining -= <int>_nla_align(a.nla_len)
        a = mnl.mnl_attr_next(a)


cdef int _on_data(const nlmsghdr *nlh, void *arg) noexcept nogil:
    cdef run_ctx *ctx = <run_ctx *>arg
    cdef int ret
    ctx.st.messages += 1
    if ctx.cb == NULL:
        return mnl.MNL_CB_OK
    w10g_set_errno(0)
    ret = ctx.cb(nlh, ctx.data)
    if ret == mnl.MNL_CB_ERROR and ctx.st.err == 0:
        ctx.st.err = errno if errno != 0 else EBADMSG
        ctx.st.stage = STAGE_DECODE
    return ret


cdef int _on_noop(const nlmsghdr *nlh, void *arg) noexcept nogil:
    return mnl.MNL_CB_OK


cdef int _on_error(const nlmsghdr *nlh, void *arg) noexcept nogil:
    cdef run_ctx *ctx = <run_ctx *>arg
    cdef nl_status *st = ctx.st
    cdef nlmsgerr e
    cdef size_t off
    cdef uint32_t idx
    if nlh.nlmsg_len < <uint32_t>NLMSG_HDRLEN + sizeof(nlmsgerr):
        st.err = EBADMSG
        st.stage = STAGE_PARSE
        return mnl.MNL_CB_ERROR
    memcpy(&e, mnl.mnl_nlmsg_get_payload(nlh), sizeof(nlmsgerr))
    if e.error > 0 or e.error < -MAX_ERRNO:
        # not an errno (INT_MIN would even overflow the negation): the reply is malformed
        st.err = EBADMSG
        st.stage = STAGE_ERRVAL
        st.bad_error = e.error
        return mnl.MNL_CB_ERROR
    if ctx.status != NULL:
        # Batch: every request ends with its own ACK or error; record it and go on.
        idx = nlh.nlmsg_seq - ctx.first_seq
        if idx >= ctx.nreq or ctx.status[idx] != -1:
            st.err = EPROTO         # an answer to no request of this batch, or a second one
            st.stage = STAGE_PARSE
            return mnl.MNL_CB_ERROR
        ctx.status[idx] = -e.error
        ctx.pending -= 1
        return mnl.MNL_CB_STOP if ctx.pending == 0 else mnl.MNL_CB_OK
    if e.error == 0:
        return mnl.MNL_CB_STOP          # the ACK: end of a non-dump transaction
    st.err = -e.error
    st.stage = STAGE_KERNEL
    if nlh.nlmsg_flags & NLM_F_ACK_TLVS:
        # The TLVs follow the echoed request: its header only when capped, else all of it.
        off = sizeof(int)
        off += sizeof(nlmsghdr) if (nlh.nlmsg_flags & NLM_F_CAPPED) else e.msg.nlmsg_len
        _read_extack(nlh, off, st)
    return mnl.MNL_CB_ERROR


cdef int _on_done(const nlmsghdr *nlh, void *arg) noexcept nogil:
    cdef nl_status *st = (<run_ctx *>arg).st
    cdef int32_t err = 0
    # NLMSG_DONE carries an int: 0, or a negative errno when the dump failed partway.
    if mnl.mnl_nlmsg_get_payload_len(nlh) >= sizeof(int32_t):
        memcpy(&err, mnl.mnl_nlmsg_get_payload(nlh), sizeof(int32_t))
    if err > 0 or err < -MAX_ERRNO:
        st.err = EBADMSG
        st.stage = STAGE_ERRVAL
        st.bad_error = err
        return mnl.MNL_CB_ERROR
    if err != 0:
        st.err = -err
        st.stage = STAGE_KERNEL
        if nlh.nlmsg_flags & NLM_F_ACK_TLVS:
            _read_extack(nlh, sizeof(int32_t), st)
        return mnl.MNL_CB_ERROR
    return mnl.MNL_CB_STOP


cdef int _on_overrun(const nlmsghdr *nlh, void *arg) noexcept nogil:
    cdef nl_status *st = (<run_ctx *>arg).st
    st.err = ENOBUFS
    st.stage = STAGE_KERNEL
    return mnl.MNL_CB_ERROR


# Control-message handlers for types 0..NLMSG_MIN_TYPE-1, so libmnl's defaults (which
# drop the extended-ack text and ignore NLMSG_DONE's error) are never used.
cdef mnl.mnl_cb_t _ctl[16]
for _i in range(16):
    _ctl[_i] = _on_noop
_ctl[2] = _on_error     # NLMSG_ERROR
_ctl[3] = _on_done      # NLMSG_DONE
_ctl[4] = _on_overrun   # NLMSG_OVERRUN


# A growable buffer that collects whole data messages, for the Python-level request().
cdef struct msgbuf:
    char *data
    size_t len
    size_t cap


cdef int _collect(const nlmsghdr *nlh, void *arg) noexcept nogil:
    cdef msgbuf *b = <msgbuf *>arg
    cdef size_t n = nlh.nlmsg_len        # libmnl checked it fits in the datagram
    cdef size_t need = _nla_align(n)
    cdef size_t cap
    cdef char *p
    if b.len + need > b.cap:
        cap = b.cap * 2 if b.cap else 4096
        while cap < b.len + need:
            cap *= 2
        p = <char *>realloc(b.data, cap)
        if p == NULL:
            w10g_set_errno(ENOMEM)
            return mnl.MNL_CB_ERROR
        b.data = p
        b.cap = cap
    memcpy(b.data + b.len, nlh, n)
    memset(b.data + b.len + n, 0, need - n)
    b.len += need
    return mnl.MNL_CB_OK


cdef class TapData:
    """One sample's datagrams from a socket's tap (see ``NetlinkSocket.tap_take``): memory
    handed over, not copied, and read through the buffer protocol (``tap_take`` returns
    a read-only memoryview of it). ``NetlinkSocket.tap_recycle`` gives the memory back
    for the next sample once nothing reads it: a fresh 10 MB buffer per sample costs a
    page fault per 4 KiB."""

    cdef char *data
    cdef size_t length
    cdef size_t cap
    cdef Py_ssize_t exports

    def __cinit__(self):
        self.data = NULL
        self.length = self.cap = 0
        self.exports = 0

    def __dealloc__(self):
        free(self.data)
        self.data = NULL

    def __len__(self):
        return self.length

    def __getbuffer__(self, Py_buffer *view, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("tap data is read-only")
        view.buf = <void *>(self.data if self.data != NULL else <char *>b"")
        view.obj = self
        view.len = <Py_ssize_t>self.length
        view.readonly = 1
        view.itemsize = 1
        view.format = <char *>b"B" if flags & PyBUF_FORMAT else NULL
        view.ndim = 1
        view.shape = &view.len if flags & PyBUF_ND else NULL
        view.strides = &view.itemsize if flags & PyBUF_STRIDES else NULL
        view.suboffsets = NULL
        view.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1


cdef class NetlinkSocket:
    """One netlink socket of protocol ``protocol`` (``socket.NETLINK_*``).

    ``peer`` sends requests to that netlink port id instead of the kernel (port 0): the
    estats backend talks to a user-space peer over NETLINK_USERSOCK this way. Datagrams
    are accepted from the expected sender only: port id 0, or with a peer the peer's
    port id (the socket is connected to it, so the kernel refuses other senders) sent
    by a process running as root or as our effective uid (SCM_CREDENTIALS; else
    PermissionError). Others are dropped and counted in ``foreign``. ``timeout``
    bounds every wait for a reply; ``groups`` are multicast groups to join at once.
    Close it with :meth:`close`, a ``with`` block, or by dropping the last reference.
    """

    def __cinit__(self):
        self.nl = NULL
        self.rxbuf = self.rxbuf0 = NULL
        self.tap = NULL
        self.tap_len = self.tap_cap = self.tap_hint = 0
        self.tap_pool = []
        self.tapping = False

    def __init__(self, int protocol, *, groups=(), unsigned int peer=0,
                 double timeout=DEFAULT_TIMEOUT, size_t rcvbuf=DEFAULT_RCVBUF):
        cdef int one = 1
        cdef timeval tv
        cdef int fd
        if rcvbuf < 32768:
            raise ValueError(f"rcvbuf={rcvbuf} is too small: dump datagrams reach 32 KiB")
        self.protocol = protocol
        self.peer = peer
        self.nl = mnl.mnl_socket_open2(protocol, SOCK_CLOEXEC)
        if self.nl == NULL:
            raise errors.from_errno(errno, f"socket(AF_NETLINK, {_proto_name(protocol)})")
        if mnl.mnl_socket_bind(self.nl, 0, mnl.MNL_SOCKET_AUTOPID) < 0:
            err = errno
            self.close()
            raise errors.from_errno(err, f"bind({_proto_name(protocol)})")
        self.portid = mnl.mnl_socket_get_portid(self.nl)
        fd = mnl.mnl_socket_get_fd(self.nl)
        memset(&self.dest, 0, sizeof(self.dest))
        self.dest.nl_family = AF_NETLINK
        self.dest.nl_pid = peer
        self.euid = geteuid()
        if peer:
            # Connected to the peer, the socket takes unicasts from the peer's port id only
            # (the kernel refuses other senders with ECONNREFUSED; NETLINK_USERSOCK lets
            # every local user send to any port id). The receive loop checks the sender's
            # port id as well (a datagram queued between bind and connect), and its
            # credentials: SO_PASSCRED.
            if connect(fd, <const sockaddr *>&self.dest, sizeof(sockaddr_nl)) < 0:
                err = errno
                self.close()
                raise errors.from_errno(err, f"connect({_proto_name(protocol)} to port {peer})")
            if setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0:
                err = errno
                self.close()
                raise errors.from_errno(err, "setsockopt(SO_PASSCRED)")
            self.check_creds = True
        # Extended acks carry the kernel's reason for EINVAL; capped acks do not echo the
        # whole request back. Both are best effort: old kernels lack them.
        setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one))
        setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one))
        if timeout > 0:
            tv.tv_sec = <long>timeout
            tv.tv_usec = <long>((timeout - tv.tv_sec) * 1e6)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv))
        self.rxlen = rcvbuf
        self.rxbuf = self.rxbuf0 = <char *>malloc(rcvbuf)
        if self.rxbuf == NULL:
            self.close()
            raise MemoryError("netlink receive buffer")
        self.seq = 0
        for g in groups:
            self.join_group(g)

    def __dealloc__(self):
        if self.nl != NULL:
            mnl.mnl_socket_close(self.nl)
            self.nl = NULL
        free(self.rxbuf0)
        self.rxbuf = self.rxbuf0 = NULL
        free(self.tap)
        self.tap = NULL

    def close(self):
        """Close the socket (idempotent)."""
        if self.nl != NULL:
            mnl.mnl_socket_close(self.nl)
            self.nl = NULL

    @property
    def closed(self):
        return self.nl == NULL

    def fileno(self):
        self._check_open()
        return mnl.mnl_socket_get_fd(self.nl)

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self.nl == NULL else f"port {self.portid}"
        peer = f" peer {self.peer}" if self.peer else ""
        return f"<NetlinkSocket {_proto_name(self.protocol)} {state}{peer}>"

    def _check_open(self):
        if self.nl == NULL:
            raise ValueError("I/O operation on a closed netlink socket")

    def join_group(self, unsigned int group):
        """Join multicast group ``group`` (NETLINK_ADD_MEMBERSHIP)."""
        self._check_open()
        if setsockopt(mnl.mnl_socket_get_fd(self.nl), SOL_NETLINK, NETLINK_ADD_MEMBERSHIP,
                      &group, sizeof(group)) < 0:
            raise errors.from_errno(errno, f"join multicast group {group}")

    def leave_group(self, unsigned int group):
        self._check_open()
        if setsockopt(mnl.mnl_socket_get_fd(self.nl), SOL_NETLINK, NETLINK_DROP_MEMBERSHIP,
                      &group, sizeof(group)) < 0:
            raise errors.from_errno(errno, f"leave multicast group {group}")

    cdef uint32_t next_seq(self) noexcept nogil:
        self.seq += 1
        if self.seq == 0:       # 0 means "any" to libmnl's check; never use it
            self.seq = 1
        return self.seq

    cdef int acquire(self) except -1:
        if self.nl == NULL:
            raise ValueError("I/O operation on a closed netlink socket")
        if self.busy:
            raise RuntimeError(
                "this netlink socket is in use by another thread: "
                "netlink allows one request at a time per socket; open one agent per thread")
        self.busy = True
        return 0

    cdef void release(self) noexcept:
        self.busy = False

    cdef int drain(self) noexcept nogil:
        """Discard whatever a failed transaction left queued (the rest of a dump)."""
        cdef ssize_t n
        cdef int fd = mnl.mnl_socket_get_fd(self.nl)
        while True:
            n = recv(fd, self.rxbuf0, self.rxlen, MSG_DONTWAIT)
            if n < 0 and errno == EINTR:
                continue
            if n < 0:
                break
        self.dirty = False
        return 0

    cdef int rx_target(self) noexcept nogil:
        """Point rxbuf where the next datagram goes: with the tap on, straight into the
        tap behind room for its header (no copy afterwards), else the socket's buffer.
        -1 (errno ENOMEM) when the tap cannot grow."""
        cdef size_t need, cap
        cdef char *p
        if not self.tapping:
            self.rxbuf = self.rxbuf0
            return 0
        need = self.tap_len + 12 + self.rxlen
        if need > self.tap_cap:
            cap = self.tap_cap * 2 if self.tap_cap else max(<size_t>1 << 20, self.tap_hint)
            while cap < need:
                cap *= 2
            p = <char *>realloc(self.tap, cap)
            if p == NULL:
                self.rxbuf = self.rxbuf0
                w10g_set_errno(ENOMEM)
                return -1
            self.tap = p
            self.tap_cap = cap
        self.rxbuf = self.tap + self.tap_len + 12
        return 0

    cdef int tap_append(self, size_t n) noexcept nogil:
        """Keep the datagram just received (already in the tap, see rx_target): write
        its header in front of it."""
        cdef uint32_t len32 = <uint32_t>n
        if self.rxbuf != self.tap + self.tap_len + 12:
            return -1                       # received elsewhere: cannot happen
        memcpy(self.tap + self.tap_len, &len32, 4)
        memcpy(self.tap + self.tap_len + 4, &self.rx_ns, 8)
        self.tap_len += 12 + n
        return 0

    def tap_start(self):
        """Start keeping every datagram received (see tap_take)."""
        self.tapping = True
        self.tap_len = 0

    def tap_take(self, bint stop=False):
        """The datagrams received since tap_start/the last take, as a read-only
        memoryview of (u32 length, i64 receive time in ns, datagram) entries; the tap is
        emptied (and stopped with ``stop``).

        The memory is handed over, not copied: the tap continues in memory given back
        with :meth:`tap_recycle`, or new memory."""
        cdef TapData d = TapData.__new__(TapData)
        cdef TapData old
        if self.tap_len:
            d.data, d.length, d.cap = self.tap, self.tap_len, self.tap_cap
            self.tap_hint = self.tap_len
            self.tap = NULL
            self.tap_cap = 0
            while self.tap_pool:
                old = self.tap_pool.pop()
                if old.exports == 0 and old.data != NULL:
                    self.tap, self.tap_cap = old.data, old.cap
                    old.data = NULL
                    old.length = old.cap = 0
                    break
        self.tap_len = 0
        self.rxbuf = self.rxbuf0
        if stop:
            self.tapping = False
        return memoryview(d)

    def tap_recycle(self, data):
        """Give back what :meth:`tap_take` returned once it has been read: its memory
        holds a later sample. Anything else, or data still read elsewhere (another
        memoryview of it), is left alone."""
        cdef TapData d
        if isinstance(data, memoryview):
            owner = data.obj
            try:
                data.release()
            except BufferError:             # views of it are alive: it is still read
                return
            data = owner
        if not isinstance(data, TapData):
            return
        d = <TapData>data
        if d.exports == 0 and d.data != NULL and len(self.tap_pool) < 2:
            self.tap_pool.append(d)

    cdef ssize_t recv_checked(self, int flags, nl_status *st) noexcept nogil:
        """recvmsg() one datagram into rxbuf, from the expected sender only.

        Only the kernel (port id 0) or, with a peer, the peer's port id is the expected
        sender: datagrams from any other port id are dropped (counted in ``foreign``) and
        the next one is awaited. With a peer, the sender's credentials must also say root
        or our own effective uid. Returns the length; -1 with errno set when the socket
        call fails (ENOSPC: the datagram was longer than rxbuf); -2 with ``st`` filled
        (STAGE_PEER) when the peer runs as another user.
        """
        cdef sockaddr_nl addr
        cdef iovec iov
        cdef msghdr msg
        cdef size_t cbuf[8]         # 64 aligned bytes: room for CMSG_SPACE(struct ucred)
        cdef cmsghdr *c
        cdef ucred cred
        cdef bint have_cred
        cdef ssize_t n
        cdef int fd = mnl.mnl_socket_get_fd(self.nl)
        while True:
            if self.rx_target() < 0:
                return -1
            memset(&msg, 0, sizeof(msg))
            msg.msg_name = &addr
            msg.msg_namelen = sizeof(addr)
            iov.iov_base = self.rxbuf
            iov.iov_len = self.rxlen
            msg.msg_iov = &iov
            msg.msg_iovlen = 1
            if self.check_creds:
                msg.msg_control = cbuf
                msg.msg_controllen = sizeof(cbuf)
            n = recvmsg(fd, &msg, flags)
            if n < 0:
                return -1
            if (msg.msg_namelen != sizeof(sockaddr_nl) or addr.nl_family != AF_NETLINK
                    or addr.nl_pid != self.peer):
                self.foreign += 1       # not from the kernel / the peer: never decoded
                continue
            if msg.msg_flags & MSG_TRUNC:
                w10g_set_errno(ENOSPC)
                return -1
            if self.check_creds:
                have_cred = False
                c = CMSG_FIRSTHDR(&msg)
                while c != NULL:
                    if (c.cmsg_level == SOL_SOCKET and c.cmsg_type == SCM_CREDENTIALS
                            and c.cmsg_len >= CMSG_LEN(sizeof(ucred))):
                        memcpy(&cred, CMSG_DATA(c), sizeof(ucred))
                        have_cred = True
                        break
                    c = CMSG_NXTHDR(&msg, c)
                if not have_cred or (cred.uid != 0 and cred.uid != self.euid):
                    st.err = EPERM
                    st.stage = STAGE_PEER
                    st.sender_uid = cred.uid if have_cred else 0xFFFFFFFF
                    return -2
            return n

    cdef ssize_t receive(self, nl_status *st) noexcept nogil:
        """Block for the next datagram of a reply; its length, or -1 (st filled)."""
        cdef ssize_t n
        while True:
            n = self.recv_checked(0, st)
            if n >= 0:
                break
            if n == -2:
                self.dirty = True
                return -1
            if errno != EINTR:      # EINTR is a signal, not NLM_F_DUMP_INTR: retry
                st.err = errno
                st.stage = STAGE_RECV
                self.dirty = True
                return -1
        if self.accept(<size_t>n, st) < 0:
            return -1
        return n

    cdef int accept(self, size_t n, nl_status *st) noexcept nogil:
        """Checks and bookkeeping of every datagram received: framing, the receive time
        the decoders stamp rows with, the tap."""
        st.datagrams += 1
        if not frames_ok(self.rxbuf, n):
            st.err = EBADMSG
            st.stage = STAGE_PARSE
            self.dirty = True
            return -1
        self.rx_ns = _now_ns()
        if self.tapping and self.tap_append(n) < 0:
            st.err = ENOMEM
            st.stage = STAGE_RECV
            self.dirty = True
            return -1
        return 0

    cdef int receive_pending(self, mnl.mnl_cb_t cb, void *data, nl_status *st,
                             uint32_t *overruns) noexcept nogil:
        """Decode every datagram already queued (multicast notifications); never block.

        An overflowed queue (ENOBUFS: the kernel dropped notifications) is counted in
        ``overruns`` and reading goes on. Returns 0, or -1 with ``st`` filled.
        """
        cdef run_ctx ctx
        cdef ssize_t n
        cdef int ret
        memset(st, 0, sizeof(nl_status))
        memset(&ctx, 0, sizeof(ctx))
        ctx.cb = cb
        ctx.data = data
        ctx.st = st
        while True:
            n = self.recv_checked(MSG_DONTWAIT, st)
            if n == -2:
                return -1
            if n < 0:
                if errno == EINTR:
                    continue
                if errno == ENOBUFS:
                    overruns[0] += 1
                    continue
                if errno == EAGAIN:
                    return 0
                st.err = errno
                st.stage = STAGE_RECV
                return -1
            if self.accept(<size_t>n, st) < 0:
                self.dirty = False          # nothing of a reply is pending here
                return -1
            # Notifications carry sequence number 0 and port id 0: libmnl accepts both.
            ret = mnl.mnl_cb_run2(self.rxbuf, <size_t>n, 0, 0, _on_data, &ctx, _ctl, 16)
            if ret == mnl.MNL_CB_ERROR:
                if st.err == 0:
                    st.err = errno if errno != 0 else EBADMSG
                    st.stage = STAGE_PARSE
                return -1

    def set_rcvbuf(self, int nbytes):
        """Enlarge the kernel-side receive queue (for notification bursts).

        SO_RCVBUFFORCE when allowed (CAP_NET_ADMIN), else SO_RCVBUF (capped by
        net.core.rmem_max). Returns the size the kernel granted.
        """
        cdef int fd, got = 0
        cdef socklen_t sz = sizeof(got)
        self._check_open()
        fd = mnl.mnl_socket_get_fd(self.nl)
        if setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &nbytes, sizeof(nbytes)) < 0:
            if setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &nbytes, sizeof(nbytes)) < 0:
                raise errors.from_errno(errno, "setsockopt(SO_RCVBUF)")
        getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &sz)
        return got

    cdef int transact(self, void *req, size_t reqlen, mnl.mnl_cb_t cb, void *data,
                      nl_status *st) noexcept nogil:
        """Send ``req`` and run the receive loop until the reply ends; 0 or -1 (see st).

        The request's nlmsg_seq must already be set (next_seq()). Call with the socket
        acquired; no GIL needed.
        """
        cdef run_ctx ctx
        cdef ssize_t n
        cdef int ret
        cdef uint32_t seq = (<nlmsghdr *>req).nlmsg_seq
        memset(st, 0, sizeof(nl_status))
        memset(&ctx, 0, sizeof(ctx))
        ctx.cb = cb
        ctx.data = data
        ctx.st = st
        if self.dirty or self.peer:
            # a peer answers asynchronously: a datagram it sent after an earlier reply's
            # end (or a duplicate) may be queued now; it is no part of this reply
            self.drain()
        n = sendto(mnl.mnl_socket_get_fd(self.nl), req, reqlen, 0,
                   <const sockaddr *>&self.dest, sizeof(sockaddr_nl))
        if n < 0:
            st.err = errno
            st.stage = STAGE_SEND
            return -1
        while True:
            n = self.receive(st)
            if n < 0:
                return -1
            if _stale(self.rxbuf, <size_t>n, seq):
                continue
            w10g_set_errno(0)
            ret = mnl.mnl_cb_run2(self.rxbuf, <size_t>n, seq, self.portid,
                                  _on_data, &ctx, _ctl, 16)
            if ret == mnl.MNL_CB_ERROR:
                if st.err == 0:
                    # libmnl's own checks: EINTR = NLM_F_DUMP_INTR, EPROTO = sequence,
                    # ESRCH = port id, EBADMSG = framing.
                    st.err = errno if errno != 0 else EBADMSG
                    st.stage = STAGE_PARSE
                if st.stage != STAGE_KERNEL:
                    self.dirty = True
                return -1
            if ret == mnl.MNL_CB_STOP:
                return 0

    cdef int transact_batch(self, void *req, size_t reqlen, uint32_t nreq, uint32_t first_seq,
                            mnl.mnl_cb_t cb, void *data, int *status,
                            nl_status *st) noexcept nogil:
        """Send ``nreq`` requests (sequence numbers first_seq.. in one buffer) with one
        send, and receive until each has its ACK or error.

        ``status[i]`` becomes 0 or the positive errno of request i. Data messages go to
        ``cb`` in arrival order; a protocol that answers requests in order (and data
        before the ACK) lets the caller attribute them. Returns 0 or -1 (see st).
        """
        cdef run_ctx ctx
        cdef ssize_t n
        cdef int ret
        cdef uint32_t i
        memset(st, 0, sizeof(nl_status))
        memset(&ctx, 0, sizeof(ctx))
        ctx.cb = cb
        ctx.data = data
        ctx.st = st
        ctx.status = status
        ctx.first_seq = first_seq
        ctx.nreq = nreq
        ctx.pending = nreq
        for i in range(nreq):
            status[i] = -1                  # no answer yet
        if nreq == 0:
            return 0
        if self.dirty or self.peer:
            # a peer answers asynchronously: a datagram it sent after an earlier reply's
            # end (or a duplicate) may be queued now; it is no part of this reply
            self.drain()
        n = sendto(mnl.mnl_socket_get_fd(self.nl), req, reqlen, 0,
                   <const sockaddr *>&self.dest, sizeof(sockaddr_nl))
        if n < 0:
            st.err = errno
            st.stage = STAGE_SEND
            return -1
        while ctx.pending > 0:
            n = self.receive(st)
            if n < 0:
                return -1
            if _stale(self.rxbuf, <size_t>n, first_seq):
                continue
            w10g_set_errno(0)
            # seq 0: the batch's replies carry many sequence numbers; _on_error checks them
            ret = mnl.mnl_cb_run2(self.rxbuf, <size_t>n, 0, self.portid, _on_data, &ctx,
                                  _ctl, 16)
            if ret == mnl.MNL_CB_ERROR:
                if st.err == 0:
                    st.err = errno if errno != 0 else EBADMSG
                    st.stage = STAGE_PARSE
                self.dirty = True
                return -1
        return 0

    cdef object error_from(self, nl_status *st, str call):
        detail = st.extack.decode("utf-8", "replace") if st.extack[0] else None
        where = f"{call} ({_STAGE_NAMES.get(st.stage, 'netlink')})"
        if st.stage == STAGE_PARSE and st.err == EINTR:
            return errors.DumpInterrupted(
                EINTR, f"{call}: the kernel marked the dump inconsistent (NLM_F_DUMP_INTR) "
                "because its tables changed while it ran; retry the dump")
        if st.stage == STAGE_PARSE and st.err == EBADMSG:
            return errors.MalformedReply(
                f"{call}: datagram {st.datagrams} of the reply is not a sequence of whole "
                "netlink messages (a length runs past its end)")
        if st.stage == STAGE_DECODE and st.err in (EBADMSG, EINVAL):
            return errors.MalformedReply(
                f"{call}: message {st.messages} of the reply is malformed and was rejected")
        if st.stage == STAGE_ERRVAL:
            return errors.MalformedReply(
                f"{call}: the reply's error message carries {st.bad_error}, which is not a "
                f"negative errno (-{MAX_ERRNO} ... -1) nor 0")
        if st.stage == STAGE_PEER:
            who = ("an unknown user" if st.sender_uid == 0xFFFFFFFF
                   else f"uid {st.sender_uid}")
            return PermissionError(
                EPERM, f"{call}: refusing the replies of netlink port {self.peer}: they "
                f"come from a process of {who}, and this process (uid {self.euid}) accepts "
                "a test peer (WEB10G_ESTATS_PEER) only when it runs as root or as the same "
                "user")
        if st.stage == STAGE_SEND and st.err == ECONNREFUSED and self.peer:
            return errors.from_errno(
                st.err, where, hint=f"nothing listens on netlink port {self.peer} any more: "
                "the peer (WEB10G_ESTATS_PEER) has stopped")
        if st.stage == STAGE_RECV and st.err == EAGAIN:
            who = f"netlink port {self.peer}" if self.peer else "the kernel"
            return errors.KernelTimeout(
                EAGAIN, f"{call}: no reply from {who} before the timeout; "
                "is it still running?")
        return errors.from_errno(st.err, where, detail=detail)

    def request(self, int msg_type, int flags=0, payload=b"", *, bint dump=False,
                str call=None):
        """Send one request and return the data messages of the reply as bytes.

        The header is built here: NLM_F_REQUEST, plus NLM_F_DUMP for ``dump`` or NLM_F_ACK
        otherwise (the ACK is what ends a non-dump reply). Meant for rare requests (family
        lookup, tests); the backends decode their hot replies in C instead.
        """
        cdef const unsigned char[::1] body = memoryview(payload).cast("B")
        cdef size_t plen = body.shape[0]
        cdef size_t total = NLMSG_HDRLEN + _nla_align(plen)
        cdef nl_status st
        cdef msgbuf buf
        cdef int rc
        cdef nlmsghdr *nlh
        cdef char *req
        if total > 0xFFFF_FFFF:
            raise ValueError("request too large for one netlink message")
        call = call or f"netlink request type {msg_type}"
        req = <char *>malloc(total)
        if req == NULL:
            raise MemoryError()
        memset(req, 0, total)
        if plen:
            memcpy(req + NLMSG_HDRLEN, &body[0], plen)
        nlh = <nlmsghdr *>req
        nlh.nlmsg_len = <uint32_t>total
        nlh.nlmsg_type = <uint16_t>msg_type
        nlh.nlmsg_flags = <uint16_t>(flags | NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK))
        buf.data = NULL
        buf.len = 0
        buf.cap = 0
        self.acquire()
        try:
            with nogil:
                nlh.nlmsg_seq = self.next_seq()
                rc = self.transact(req, total, _collect, &buf, &st)
            if rc < 0:
                raise self.error_from(&st, call)
            return _split(buf.data, buf.len)
        finally:
            self.release()
            free(req)
            free(buf.data)

    def resolve_family(self, str name):
        """Ask the generic-netlink controller about family ``name``.

        Returns a dict: id, name, version, hdrsize, maxattr, ops ({cmd: flags}) and
        mcast_groups ({name: id}). Raises FileNotFoundError (ENOENT) when it is not
        registered; :func:`web10g.genl.resolve` turns that into FamilyNotFound.
        """
        if self.protocol != 16 and not self.peer:   # NETLINK_GENERIC
            raise ValueError("resolve_family needs a NETLINK_GENERIC socket (or a peer)")
        bname = name.encode() + b"\0"
        if len(bname) > 16:     # GENL_NAMSIZ; the kernel answers EINVAL otherwise
            raise ValueError(f"generic netlink family names have at most 15 characters: "
                             f"{name!r}")
        payload = bytes([CTRL_CMD_GETFAMILY, 1, 0, 0]) + _attr(CTRL_ATTR_FAMILY_NAME, bname)
        msgs = self.request(GENL_ID_CTRL, 0, payload,
                            call=f"generic netlink controller lookup of {name!r}")
        if not msgs:
            raise errors.MalformedReply(
                f"the controller answered the lookup of {name!r} with no family message")
        return _parse_family(msgs[0])


cdef list _split(const char *data, size_t n):
    """Cut the collected buffer back into one bytes object per message."""
    cdef list out = []
    cdef size_t off = 0
    cdef uint32_t mlen
    while off + NLMSG_HDRLEN <= n:
        memcpy(&mlen, data + off, 4)
        if mlen < <uint32_t>NLMSG_HDRLEN or off + mlen > n:
            break
        out.append(data[off:off + mlen])
        off += _nla_align(mlen)
    return out


def _attr(int atype, bytes payload):
    n = 4 + len(payload)
    pad = (-n) % 4
    return n.to_bytes(2, "little") + atype.to_bytes(2, "little") + payload + b"\0" * pad


cpdef list parse_attrs(const unsigned char[::1] buf, size_t offset=0):
    """Walk the attributes in ``buf[offset:]``; return [(type & NLA_TYPE_MASK, payload)].

    Bounds-checked with libmnl's mnl_attr_ok: a truncated or overlong attribute ends the
    walk instead of reading past the buffer.
    """
    cdef list out = []
    cdef size_t n = buf.shape[0]
    if offset >= n:
        return out
    cdef const nlattr *a = <const nlattr *>&buf[offset]
    cdef int remaining = <int>(n - offset)
    cdef const char *p
    cdef uint16_t plen
    while mnl.mnl_attr_ok(a, remaining):
        p = <const char *>mnl.mnl_attr_get_payload(a)
        plen = mnl.mnl_attr_get_payload_len(a)
        out.append((a.nla_type & NLA_TYPE_MASK, p[:plen]))
        remaining -= <int>_nla_align(a.nla_len)
        a = mnl.mnl_attr_next(a)
    return out


cdef dict _parse_family(bytes msg):
    cdef dict fam = {"ops": {}, "mcast_groups": {}}
    for atype, val in parse_attrs(msg, NLMSG_HDRLEN + sizeof(genlmsghdr)):
        if atype == 1 and len(val) >= 2:
            fam["id"] = int.from_bytes(val[:2], "little")
        elif atype == 2:
            fam["name"] = val.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif atype in (3, 4, 5) and len(val) >= 4:
            fam[{3: "version", 4: "hdrsize", 5: "maxattr"}[atype]] = \
                int.from_bytes(val[:4], "little")
        elif atype == 6:
            for _, op in parse_attrs(val):
                d = {t: int.from_bytes(v[:4], "little") for t, v in parse_attrs(op) if len(v) >= 4}
                if 1 in d:
                    fam["ops"][d[1]] = d.get(2, 0)
        elif atype == 7:
            for _, grp in parse_attrs(val):
                g = dict(parse_attrs(grp))
                if 1 in g and 2 in g and len(g[2]) >= 4:
                    gname = g[1].split(b"\0", 1)[0].decode("utf-8", "replace")
                    fam["mcast_groups"][gname] = int.from_bytes(g[2][:4], "little")
    if "id" not in fam:
        raise errors.MalformedReply("the controller's reply has no CTRL_ATTR_FAMILY_ID")
    return fam


def _proto_name(int protocol):
    return {0: "NETLINK_ROUTE", 2: "NETLINK_USERSOCK", 4: "NETLINK_SOCK_DIAG",
            16: "NETLINK_GENERIC"}.get(protocol, f"netlink protocol {protocol}")


cdef extern from "<sched.h>" nogil:
    int c_setns "setns" (int fd, int nstype)
    int CLONE_NEWNET


def setns(int fd, int nstype=0):
    """setns(2) for the calling thread (Python < 3.12 has no os.setns).

    ``fd`` is an open namespace file (/proc/PID/ns/net, /run/netns/NAME); ``nstype`` 0
    accepts any type, CLONE_NEWNET insists on a network namespace.
    """
    if c_setns(fd, nstype) < 0:
        raise errors.from_errno(errno, "setns(network namespace)", capability="CAP_SYS_ADMIN")


CLONE_NEWNET_FLAG = CLONE_NEWNET


cdef extern from "<arpa/inet.h>" nogil:
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)


def format_addresses(addr, family):
    """Addresses as text, in bulk: ``addr`` is an (n, 16) uint8 array of raw addresses
    (network order, IPv4 in the first 4 bytes), ``family`` n address families
    (2 = AF_INET, 10 = AF_INET6). Returns an array of str; unknown families give ''."""
    import numpy as np
    a = np.ascontiguousarray(addr, dtype=np.uint8).reshape(-1, 16)
    f = np.ascontiguousarray(family, dtype=np.uint8).reshape(-1)
    if a.shape[0] != f.shape[0]:
        raise ValueError("addr and family must have the same number of rows")
    out = np.zeros(a.shape[0], dtype="S46")
    cdef const unsigned char[:, ::1] av = a
    cdef const unsigned char[::1] fv = f
    cdef char[:, ::1] ov = out.view(np.int8).reshape(-1, 46)
    cdef Py_ssize_t i, n = a.shape[0]
    with nogil:
        for i in range(n):
            if fv[i] == 2 or fv[i] == 10:
                inet_ntop(fv[i], &av[i, 0], &ov[i, 0], 46)
    return out.astype("U46")
