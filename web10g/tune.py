"""Writable ("tune") variables on a stock kernel, and SOCK_DESTROY.

A stock kernel has no Web10G write path, only the socket's own options, and those need a
descriptor. For another process's socket we duplicate its descriptor with ``pidfd_open``
+ ``pidfd_getfd`` (Linux 5.6): the copy refers to the same open file, so ``setsockopt``
on it changes the owner's connection (the owner is not told). That needs ptrace-attach
rights over the owner. Sockets with no descriptor (TIME_WAIT, orphans, request sockets)
cannot be written at all. :func:`kill` needs no descriptor: SOCK_DESTROY over sock_diag,
which needs CAP_NET_ADMIN.
"""
from __future__ import annotations

import contextlib
import ctypes
import difflib
import errno
import fcntl
import operator
import os
import platform
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from web10g import errors, mib

if TYPE_CHECKING:
    from web10g._netlink import NetlinkSocket

__all__ = ["NotSupported", "WritableSpec", "WRITABLE", "UNSUPPORTED", "find_socket_fd",
           "duplicated", "write_var", "read_tunables", "kill"]


NotSupported = errors.NotSupported


TCP_MAXSEG, TCP_WINDOW_CLAMP, TCP_CONGESTION, TCP_NOTSENT_LOWAT = 2, 10, 13, 25  # linux/tcp.h
TCP_CA_NAME_MAX = 16  # including the NUL
# asm-generic numbers (x86, arm, powerpc, s390, mips ...); arch/*/include/uapi/asm/socket.h
# has the exceptions. The pidfd syscalls have one number everywhere but alpha (+110).
_ARCH = platform.machine()
SO_RCVBUFFORCE = 0x100B if _ARCH.startswith(("parisc", "sparc", "alpha")) else 33
SO_MAX_PACING_RATE = 0x4048 if _ARCH.startswith("parisc") else (
    0x31 if _ARCH.startswith("sparc") else 47)
NR_PIDFD_OPEN, NR_PIDFD_GETFD = (544, 548) if _ARCH.startswith("alpha") else (434, 438)
SOCK_DESTROY = 21
CAP_NET_ADMIN = 12
U32_MAX, U64_MAX = 2**32 - 1, 2**64 - 1
_RFC_TIME_WAIT = 11

_PTRACE = ("ptrace-attach rights over the owning process: its uid (with Yama's "
           "kernel.yama.ptrace_scope allowing it) or CAP_SYS_PTRACE")
_NO_FD = ("it has no file descriptor (TIME_WAIT, an orphan still flushing after close, a "
          "request or kernel socket), and a stock kernel writes sockets only through "
          "socket options on a descriptor")


@dataclass(frozen=True)
class WritableSpec:
    """How one writable name is written on a stock kernel."""

    name: str
    level: int          # setsockopt level and option
    optname: int
    mechanism: str
    unit: str
    minimum: int        # value range (ints only)
    maximum: int
    privilege: str
    note: str = ""


_FD = "a descriptor: the socket's owner, or " + _PTRACE
WRITABLE: dict[str, WritableSpec] = {s.name: s for s in (
    WritableSpec(
        "LimRwin", socket.IPPROTO_TCP, TCP_WINDOW_CLAMP,
        "setsockopt SO_RCVBUF (SO_RCVBUFFORCE with CAP_NET_ADMIN) to value/2, then "
        "TCP_WINDOW_CLAMP", "octets", 4096, 2**31 - 1,
        _FD + "; CAP_NET_ADMIN above 2 * net.core.rmem_max",
        note="The value is the clamp itself, not Web10G's min(value, 65535 << rcv_wscale): "
             "the kernel never advertises more than that anyway. The receive buffer is "
             "locked at the value (autotuning stays off for the socket from then on): "
             "Linux otherwise rewrites the clamp from the buffer size. The kernel may then "
             "lower the clamp to the buffer's len/truesize share, and rounds the window up "
             "to 1 << rcv_wscale. Below 4096 octets (the kernel's minimum buffer is ~2.3 "
             "KiB) no limit can be kept."),
    WritableSpec(
        "cc_algorithm", socket.IPPROTO_TCP, TCP_CONGESTION, "setsockopt TCP_CONGESTION",
        "name", 0, 0, _FD + "; CAP_NET_ADMIN for algorithms outside "
        "net.ipv4.tcp_allowed_congestion_control"),
    WritableSpec(
        "max_pacing_rate_bytes_per_s", socket.SOL_SOCKET, SO_MAX_PACING_RATE,
        "setsockopt SO_MAX_PACING_RATE", "bytes/s", 0, U64_MAX, _FD,
        note="u64 where the kernel's unsigned long is 64-bit (4.20+), else u32 saturated; "
             "2**64-1 means unlimited."),
    WritableSpec(
        "notsent_lowat_bytes", socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT,
        "setsockopt TCP_NOTSENT_LOWAT", "octets", 0, U32_MAX, _FD,
        note="Stock extra without a tcp_info column; 0 means net.ipv4.tcp_notsent_lowat."),
)}

UNSUPPORTED: dict[str, str] = {
    "LimCwnd": "LimCwnd cannot be written on a stock kernel: no socket option clamps the "
               "congestion window. What works: bpf_setsockopt(SOL_TCP, "
               "TCP_BPF_SNDCWND_CLAMP, segments) from a cgroup sock_ops program, or from a "
               "BPF TCP iterator (5.15+) for existing sockets (CAP_BPF + CAP_NET_ADMIN); "
               "the route metric 'ip route ... cwnd N lock' for new connections "
               "(CAP_NET_ADMIN); without BPF, cap the rate instead with "
               "max_pacing_rate_bytes_per_s (SO_MAX_PACING_RATE).",
    "LimSsthresh": "LimSsthresh cannot be written on a stock kernel: Linux has no ssthresh "
                   "clamp. Only new connections can get an initial ssthresh, through the "
                   "route metric 'ip route ... ssthresh N lock' (CAP_NET_ADMIN); to limit "
                   "throughput use max_pacing_rate_bytes_per_s (SO_MAX_PACING_RATE).",
    "LimMSS": "LimMSS cannot be written on an existing connection: TCP_MAXSEG counts only "
              "when set before connect()/listen(); the kernel does not lower an established "
              "connection's MSS. For new connections: the route metric 'ip route ... advmss "
              "N' (CAP_NET_ADMIN) or bpf_setsockopt(TCP_MAXSEG) at connection setup. The "
              "current MSS reads as CurMSS.",
}


# ------------------------------------------------------------------ reaching the socket

def _no_fd(inode: int) -> errors.FlowNotFound:
    return errors.FlowNotFound(f"socket inode {inode} cannot be written: {_NO_FD}")


def find_socket_fd(inode: int) -> tuple[int, int]:
    """(pid, fd) holding ``socket:[inode]``: the lowest pid, then its lowest fd."""
    inode = operator.index(inode)
    if inode == 0:  # sock_diag reports inode 0 for sockets without a struct socket
        raise _no_fd(0)
    target, hidden = f"socket:[{inode}]", 0
    for pid in sorted(int(e) for e in os.listdir("/proc") if e.isdigit()):
        try:
            fds = sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))
            for fd in fds:
                with contextlib.suppress(FileNotFoundError):  # closed since listdir
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid, fd
        except PermissionError:  # fd/ and its links need ptrace-read access
            hidden += 1
        except (FileNotFoundError, ProcessLookupError):
            pass  # exited meanwhile
    if hidden:
        raise errors.from_errno(
            errno.EACCES, f"finding the owner of socket:[{inode}]", capability="CAP_SYS_PTRACE",
            detail=f"no visible process holds it, and the descriptors of {hidden} processes "
                   "are hidden from this caller",
            hint=f"reading and writing another process's socket needs {_PTRACE}; or {_NO_FD}")
    raise errors.FlowNotFound(f"no process holds socket:[{inode}]: the flow is gone, or "
                              + _NO_FD)


_libc = ctypes.CDLL(None, use_errno=True)


def _syscall(nr: int, *args: int) -> int:
    rc = _libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(rc)


def _pidfd_getfd(pid: int, fd: int) -> int:
    """Copy descriptor ``fd`` of process ``pid`` into this process; return the copy."""
    call = f"pidfd_getfd(pid {pid}, fd {fd})"
    try:
        pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else _syscall(NR_PIDFD_OPEN,
                                                                                pid, 0)
        try:
            return _syscall(NR_PIDFD_GETFD, pidfd, fd, 0)
        finally:
            os.close(pidfd)  # needed only for the copy itself
    except OSError as e:
        if e.errno == errno.EPERM:  # __ptrace_may_access(PTRACE_MODE_ATTACH_REALCREDS)
            raise errors.from_errno(e.errno, call, capability="CAP_SYS_PTRACE",
                                    hint=f"this needs {_PTRACE}") from None
        if e.errno == errno.ENOSYS:
            raise NotSupported(f"{call}: needs Linux 5.6 (pidfd_getfd) to reach another "
                               "process's socket") from None
        if e.errno in (errno.EBADF, errno.ESRCH):
            raise errors.FlowNotFound(f"{call}: the process exited or closed the "
                                      "descriptor meanwhile") from None
        raise errors.from_errno(e.errno or 0, call) from None


_HOLDER_TRIES = 3


@contextlib.contextmanager
def duplicated(inode: int) -> Iterator[socket.socket]:
    """``socket:[inode]`` duplicated from its owner, for socket options only. The copy
    holds a reference to the socket and is always closed on exit."""
    for attempt in range(_HOLDER_TRIES):
        # The holder found can be gone by the time its descriptor is copied (a child
        # forked by the owner holds all its descriptors until exec, then closes them):
        # look again, the socket may still have other holders.
        pid, fd = find_socket_fd(inode)
        try:
            newfd = _pidfd_getfd(pid, fd)
        except errors.FlowNotFound:
            if attempt == _HOLDER_TRIES - 1:
                raise
            continue
        if os.fstat(newfd).st_ino == inode:
            break
        os.close(newfd)                      # fd closed and its number reused meanwhile
        if attempt == _HOLDER_TRIES - 1:
            raise errors.FlowNotFound(f"process {pid} closed socket:[{inode}] meanwhile")
    try:
        # socket(fileno=) sets O_NONBLOCK when a default timeout is set, and that flag
        # lives in the open file description the owner shares with us: put it back.
        flags = fcntl.fcntl(newfd, fcntl.F_GETFL)
        sock = socket.socket(fileno=newfd)
    except BaseException:
        os.close(newfd)
        raise
    try:
        if fcntl.fcntl(newfd, fcntl.F_GETFL) != flags:
            fcntl.fcntl(newfd, fcntl.F_SETFL, flags)
        yield sock
    finally:
        sock.close()  # only our descriptor: the owner's connection is untouched


# ---------------------------------------------------------------------------- writing

def _resolve(name: str) -> WritableSpec:
    if not isinstance(name, str):
        raise TypeError(f"variable name must be str, not {type(name).__name__}")
    keys = {k.lower(): k for k in (*WRITABLE, *UNSUPPORTED)}
    key = keys.get(name.lower())
    if key is None:
        try:
            key = mib.lookup(name).name  # RFC-style names (tcpEStatsTune...), any case
        except mib.UnknownVariable as e:
            close = difflib.get_close_matches(name.lower(), keys, n=3, cutoff=0.6)
            raise mib.UnknownVariable(
                name, dict.fromkeys([keys[c] for c in close] + e.suggestions)) from None
    if key in UNSUPPORTED:
        raise NotSupported(UNSUPPORTED[key])
    if key not in WRITABLE:
        raise ValueError(f"{key} is read-only; writable on sock_diag: {', '.join(WRITABLE)}")
    return WRITABLE[key]


def _proc_words(path: str) -> list[str]:
    try:
        with open(path) as fh:
            return fh.read().split()
    except OSError:
        return []


def _has_cap(cap: int) -> bool:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def _check_cc(value: Any) -> bytes:
    if isinstance(value, bytes):  # as read from the cc_algorithm column
        value = value.rstrip(b"\0").decode("ascii", "replace")
    if not isinstance(value, str):
        raise TypeError(f"cc_algorithm takes a name (str), not {type(value).__name__}")
    available = _proc_words("/proc/sys/net/ipv4/tcp_available_congestion_control")
    if value not in available:  # lists loaded algorithms only
        raise ValueError(f"congestion control {value!r} is not available; loaded: "
                         f"{' '.join(available)} (modprobe tcp_{value} would add it)")
    allowed = _proc_words("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
    if value not in allowed and not _has_cap(CAP_NET_ADMIN):  # the kernel's EPERM rule
        raise errors.from_errno(
            errno.EPERM, f"setting congestion control {value!r}", capability="CAP_NET_ADMIN",
            hint="without CAP_NET_ADMIN the kernel allows only "
                 f"tcp_allowed_congestion_control: {' '.join(allowed)}")
    return value.encode() + b"\0"


def _check_int(spec: WritableSpec, value: Any) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{spec.name} takes an integer ({spec.unit}), "
                        f"not {type(value).__name__}") from None
    if not spec.minimum <= value <= spec.maximum:
        raise ValueError(f"{spec.name} must be within {spec.minimum}..{spec.maximum} "
                         f"{spec.unit}, not {value}. {spec.note}".rstrip())
    return value


def _lock_rcvbuf(sock: socket.socket, window: int) -> None:
    # TCP_WINDOW_CLAMP alone does not last on Linux 6.x (verified on 6.18): receive-buffer
    # autotuning sets window_clamp = tcp_win_from_space(new sk_rcvbuf) whenever it grows
    # the buffer, and tcp_measure_rcv_mss resets it from sk_rcvbuf whenever the skb
    # len/truesize ratio changes. SO_RCVBUF sets SOCK_RCVBUF_LOCK (autotuning off), and a
    # buffer of `window` bytes never yields a clamp above `window` (the ratio is <= 1).
    half = window // 2  # the kernel doubles SO_RCVBUF values
    if _has_cap(CAP_NET_ADMIN):
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, half)
        return
    rmem_max = int((_proc_words("/proc/sys/net/core/rmem_max") or ["212992"])[0])
    if half > rmem_max:  # SO_RCVBUF would silently cap the buffer below the clamp
        raise errors.from_errno(errno.EPERM, f"LimRwin {window}", capability="CAP_NET_ADMIN",
                                hint=f"a buffer above 2 * net.core.rmem_max ({rmem_max}) "
                                     "needs SO_RCVBUFFORCE, i.e. CAP_NET_ADMIN")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, half)


def _writable_inode(ident: Any) -> int:
    inode = int(ident["inode"])
    if inode == 0 or int(ident["state"]) == _RFC_TIME_WAIT:
        raise _no_fd(inode)
    return inode


def write_var(ident: Any, name: str, value: Any) -> None:
    """Set ``name`` to ``value`` on flow ``ident`` (a row with identity columns)."""
    spec = _resolve(name)
    if spec.name == "cc_algorithm":
        number, payload = 0, _check_cc(value)
    else:
        number = _check_int(spec, value)
        # The kernel reads an int; values >= 2**31 pass as their u32 bits.
        payload = struct.pack("=I", min(number, U32_MAX))
    inode = _writable_inode(ident)
    with duplicated(inode) as sock:
        try:
            if spec.name == "LimRwin":
                _lock_rcvbuf(sock, number)
            elif (spec.name == "max_pacing_rate_bytes_per_s"
                  and len(sock.getsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, 8)) == 8):
                # sk_getsockopt fills 8 bytes exactly when the kernel's unsigned long is
                # 64-bit, which is when sk_setsockopt reads 8; else the saturated u32
                # above (~0U means unlimited there too).
                payload = struct.pack("=Q", number)
            sock.setsockopt(spec.level, spec.optname, payload)
        except OSError as e:
            if isinstance(e, errors.Web10GError):
                raise
            call = f"{spec.mechanism} on socket:[{inode}]"
            if e.errno in (errno.EINVAL, errno.ENOENT):
                raise ValueError(f"{call}: the kernel rejected {value!r}: "
                                 f"{os.strerror(e.errno)}") from None
            raise errors.from_errno(e.errno or 0, call, capability="CAP_NET_ADMIN") from None


def read_tunables(ident: Any) -> dict[str, int | str]:
    """The tunables of flow ``ident``, read with getsockopt on a duplicate."""
    with duplicated(_writable_inode(ident)) as sock:
        tcp = socket.IPPROTO_TCP
        rate = sock.getsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, 8)
        pacing = struct.unpack("=Q" if len(rate) == 8 else "=I", rate)[0]
        if len(rate) == 4 and pacing == U32_MAX:
            pacing = U64_MAX  # the 32-bit form reports "unlimited" saturated
        cc = sock.getsockopt(tcp, TCP_CONGESTION, TCP_CA_NAME_MAX)
        return {
            "LimRwin": sock.getsockopt(tcp, TCP_WINDOW_CLAMP),
            "CurMSS": sock.getsockopt(tcp, TCP_MAXSEG),  # mss_cache once connected
            "cc_algorithm": cc.split(b"\0", 1)[0].decode("ascii", "replace"),
            "max_pacing_rate_bytes_per_s": pacing,
            "notsent_lowat_bytes": sock.getsockopt(tcp, TCP_NOTSENT_LOWAT) & U32_MAX,
        }


# ---------------------------------------------------------------------------- destroy

def _addr(ident: Any, name: str) -> bytes:
    raw = ident[name]  # u1[16] in agent rows; bytes accepted too
    data = raw.tobytes() if hasattr(raw, "tobytes") else bytes(raw)
    if len(data) != 16:
        raise ValueError(f"{name} must be 16 bytes, not {len(data)}")
    return data


def kill(sock: NetlinkSocket, ident: Any) -> None:
    """Abort flow ``ident`` with SOCK_DESTROY: the peer gets an RST, the owner ECONNABORTED.

    The request carries the cookie, so a newer connection on the same 4-tuple is never
    hit (the kernel answers ESTALE to a cookie mismatch).
    """
    cookie = int(ident["cid"])
    # idiag_if 0: rows carry no interface, so a link-local IPv6 socket bound to one
    # is not found (ENOENT). idiag_states does not matter to exact lookups.
    req = (struct.pack("=BBBBI", int(ident["family"]), socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
           + struct.pack("!HH", int(ident["local_port"]), int(ident["rem_port"]))
           + _addr(ident, "local_addr") + _addr(ident, "rem_addr")
           + struct.pack("=III", 0, cookie & U32_MAX, cookie >> 32))
    try:
        sock.request(SOCK_DESTROY, 0, req, call="SOCK_DESTROY")
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ESTALE):
            raise errors.FlowNotFound(f"SOCK_DESTROY: no flow with cookie {cookie} (any "
                                      "more)") from None
        if e.errno == errno.EOPNOTSUPP:
            raise NotSupported("SOCK_DESTROY is not supported by this kernel: it was built "
                               "without CONFIG_INET_DIAG_DESTROY") from None
        if e.errno in (errno.EPERM, errno.EACCES):
            raise errors.from_errno(e.errno, "SOCK_DESTROY", capability="CAP_NET_ADMIN") from e
        raise
