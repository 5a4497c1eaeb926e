"""FakeKernel: a user-space responder that speaks the tcp_estats ABI (web10g-abi.md).

It binds a NETLINK_USERSOCK socket; clients address every request (the controller lookup
included) to its port id instead of the kernel (port 0).  For each netlink message it
receives it does what ``netlink_rcv_skb`` + the generic-netlink core + the DLKM handlers
would do, and answers the sender's port:

* at most one data datagram (module replies: seq 0, pid 0, flags 0, §4.2), then
* exactly one NLMSG_ERROR datagram (seq = the request's, pid = the client's) when the
  request asked for an ACK or failed.

Several requests in one datagram are processed in order, each with its own replies, like
the kernel does.  The fake never crashes on garbage: framing errors end the datagram as
in the kernel; unexpected internal exceptions are recorded in ``internal_errors`` and
answered with EINVAL so a client never hangs.
"""
from __future__ import annotations

import errno
import select
import socket
import struct
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from web10g import mib  # the variable registry only; no netlink code of web10g is used

from . import const as C
from .encode import (
    PAD_ALIGN,
    PAD_ALWAYS,
    PAD_NEVER,
    Attr,
    MsgSize,
    PolicyError,
    SkbWriter,
    nla_parse,
    nlmsg_done,
    nlmsg_error,
    parse_nested,
    split_messages,
)
from .flows import INCREMENTS, OWNERS, RTT_SAMPLES_PER_TICK, Flow, initial_values, parse_endpoint

NETLINK_USERSOCK = 2

# Nest policies of the module (§3.5).  Every violation is reported as EINVAL.
TUPLE_POLICY = {
    C.NEA_REM_ADDR: ("max", 16), C.NEA_REM_PORT: ("min", 2),
    C.NEA_LOCAL_ADDR: ("max", 16), C.NEA_LOCAL_PORT: ("min", 2),
    C.NEA_ADDR_TYPE: ("min", 1), C.NEA_CID: ("min", 4),
}
MASK_POLICY = {m: ("min", 8) for m in range(1, 7)}
WRITE_POLICY = {C.NEA_WRITE_VAR: ("string", 0), C.NEA_WRITE_VAL: ("min", 4)}
# The controller's policy for GETFAMILY (name: NLA_NUL_STRING of at most 15 characters).
CTRL_POLICY = {
    C.CTRL_ATTR_FAMILY_ID: ("min", 2),
    C.CTRL_ATTR_FAMILY_NAME: ("nulstring", C.GENL_NAMSIZ - 1),
}

_NAME_CUT = 20   # WRITE_VAR compares only the first 20 characters of the name (§5.5)


class Request(tuple):
    """One request received for the tcp_estats family: unpacks as ``(cmd, attrs)``.

    ``attrs`` maps decoded top-level attributes: "4tuple" -> {"cid": .., "rem_port": ..},
    "mask" -> {"perf": .., ...} (present members only), "write" -> {"var": str,
    "val": int}, "timestamp" -> int, "timestamp_delta" -> int; any other attribute type
    -> its raw payload under the integer type.  Extra attributes: ``seq``, ``flags``,
    ``portid`` (the sender), ``datagram`` (index of the datagram it arrived in, so a
    test can see that several requests were batched into one send) and ``raw`` (the
    message bytes).
    """

    def __new__(cls, cmd: int, attrs: dict, *, seq: int, flags: int, portid: int,
                datagram: int, raw: bytes) -> Request:
        self = super().__new__(cls, (cmd, attrs))
        self.seq, self.flags, self.portid, self.datagram, self.raw = (
            seq, flags, portid, datagram, raw)
        return self

    @property
    def cmd(self) -> int:
        return self[0]

    @property
    def attrs(self) -> dict:
        return self[1]


def _decode_request_attrs(tb: dict[int, Attr]) -> dict[Any, Any]:
    """Best-effort readable view of a request's attributes (for test assertions)."""
    out: dict[Any, Any] = {}
    names = {1: "rem_addr", 2: "rem_port", 3: "local_addr", 4: "local_port",
             5: "addr_type", 6: "cid"}
    for t, a in tb.items():
        try:
            if t == C.NLE_ATTR_4TUPLE:
                d = {}
                for m, ma in parse_nested(a, 6).items():
                    if m in (C.NEA_REM_ADDR, C.NEA_LOCAL_ADDR):
                        d[names[m]] = ma.payload
                    elif m in (C.NEA_REM_PORT, C.NEA_LOCAL_PORT):
                        d[names[m]] = ma.get_u16()
                    elif m == C.NEA_ADDR_TYPE:
                        d[names[m]] = ma.get_u8()
                    else:
                        d[names[m]] = ma.get_u32()
                out["4tuple"] = d
            elif t == C.NLE_ATTR_MASK:
                out["mask"] = {C.TABLES[m - 1]: ma.get_u64()
                               for m, ma in parse_nested(a, 6).items()}
            elif t == C.NLE_ATTR_WRITE:
                d = {}
                for m, ma in parse_nested(a, 2).items():
                    if m == C.NEA_WRITE_VAR:
                        d["var"] = ma.payload.split(b"\0", 1)[0].decode("latin-1")
                    else:
                        d["val"] = ma.get_u32()
                out["write"] = d
            elif t == C.NLE_ATTR_TIMESTAMP:
                out["timestamp"] = a.get_u64()
            elif t == C.NLE_ATTR_TIMESTAMP_DELTA:
                out["timestamp_delta"] = a.get_u32()
            else:
                out[t] = a.payload
        except Exception:  # noqa: BLE001 - a view for tests; never fail on garbage
            out[t] = a.payload
    return out


class _Reply(Exception):
    """Raised by a handler to end the request with an errno (no data datagram)."""

    def __init__(self, err: int) -> None:
        super().__init__(err)
        self.err = err


def _signed32(v: int) -> int:
    return v - 2**32 if v >= 2**31 else v


class FakeKernel:
    """A fake Web10G kernel + tcp_estats DLKM on a NETLINK_USERSOCK socket.

    Parameters
    ----------
    layout: "head" (kernel-4.18/5.0), "middle" (kernel-4.8..4.13) or "old"
        (dlkm-3.19..kernel-4.7, centos) variable layout (§11.2).
    family_id: the id the controller hands out (dynamic in a real kernel).
    page_payload: room of one LIST_CONNS/READ_ALL batch (SKB_WITH_OVERHEAD(PAGE_SIZE)).
    maxattr: CTRL_ATTR_MAXATTR and the top-level parse limit; default 28 for head/middle,
        27 for old (pre-kernel-4.7; pass 28 to model kernel-4.7 or the centos branch).
    time_unit: unit of NEA_TIME_USEC: "ns" (kernel-5.0 bug) or "us"; default "ns" for
        head, "us" for the older layouts.
    pad_u64: False = never pad (x86-64/arm64, all tags before kernel-4.7); True = the
        strict-alignment rule of nla_put_u64_64bit (a zero-length NLE_ATTR_PAD wherever a
        u64 payload would otherwise not be 8-aligned in the datagram, VALS nests and
        TIMESTAMP alike); "always" = a filler before every u64 (not a real kernel; a
        client stress mode).
    seed: salt for initial sequence numbers and the generic value formula.
    hz: jiffies per second of the fake activity clock (TIMESTAMP tokens).
    privileged: pretend the client has CAP_SYS_ADMIN (owner checks pass).
    start_time_us: epoch µs that StartTimeStamp values are based on (default: now).
    """

    def __init__(self, layout: str = "head", *, family_id: int = 0x1B,
                 page_payload: int = 3776, maxattr: int | None = None,
                 time_unit: str | None = None, pad_u64: bool | str = False, seed: int = 0,
                 hz: int = 1000, privileged: bool = False,
                 start_time_us: int | None = None, mcast_group_id: int | None = None) -> None:
        self.layout = mib.layout(layout)
        if not C.GENL_ID_CTRL < family_id <= 0xFFFF:
            raise ValueError("family_id must be in 0x11..0xFFFF")
        if maxattr is None:
            maxattr = 27 if layout == "old" else 28
        if maxattr not in (27, 28):
            raise ValueError("maxattr is 27 (before kernel-4.7) or 28")
        if time_unit is None:
            time_unit = "ns" if layout == "head" else "us"
        if time_unit not in ("ns", "us"):
            raise ValueError("time_unit must be 'ns' or 'us'")
        pad_mode = {False: PAD_NEVER, True: PAD_ALIGN, "always": PAD_ALWAYS,
                    "align": PAD_ALIGN, "never": PAD_NEVER}.get(pad_u64)
        if pad_mode is None:
            raise ValueError("pad_u64 must be False, True or 'always'")
        if pad_mode != PAD_NEVER and maxattr < 28:
            raise ValueError("NLE_ATTR_PAD exists only from kernel-4.7 (maxattr 28)")
        self.layout_name = layout
        self.family_id = family_id
        self.page_payload = page_payload
        self.maxattr = maxattr
        self.time_unit = time_unit
        self.pad_mode = pad_mode
        self.seed = seed
        self.hz = hz
        self.privileged = privileged
        self.mcast_group_id = (family_id + 1) if mcast_group_id is None else mcast_group_id
        self.start_time_us = (int(time.time()) * 1_000_000 if start_time_us is None
                              else start_time_us)

        # Mutable knobs a test may flip at any time.
        self.registered = True        # False: the module is not loaded (ENOENT)
        self.auto_tick = False        # tick(1) before answering every READ_ALL/READ_VARS
        self.on_request: Callable[[int, FakeKernel], None] | None = None
        # Misbehaviour, for tests of the client's defences: called for every request of
        # the tcp_estats family as tamper(request, data datagrams, the NLMSG_ERROR/ACK
        # datagram or None); returns the datagrams to send instead, in order (drop the
        # data, duplicate it, send it after the ACK, replace the ACK, ...). It runs with
        # the fake's lock held; ``nlmsg_error`` / ``error_datagram`` build control
        # messages.
        self.tamper: Callable[[Request, list[bytes], bytes | None], list[bytes]] | None = None
        # Sample time source: None = real CLOCK_REALTIME, an int = fixed ns since the
        # epoch, or a callable returning ns.
        self.wallclock_ns: int | Callable[[], int] | None = None
        # The fake jiffies clock.  Default puts the token of §13.6 (TIMESTAMP with delta
        # 5000 ms at HZ 1000) at exactly 0x00000001000a3b2c.
        self.jiffies = 0x1_000A_3B2C + 5000 * hz // 1000
        self.next_cid = 1

        # Records for assertions.
        self.requests: list[Request] = []
        self.ctrl_requests: list[bytes] = []
        self.written: list[tuple[int, str, int]] = []
        self.internal_errors: list[str] = []
        self.dropped = 0              # reply datagrams the client did not take in time
        self.datagrams_sent = 0       # reply datagrams handed to the kernel
        self.datagrams_received = 0

        self._flows: dict[int, Flow] = {}
        self._wires = {v.name: v.wire for t in self.layout.tables for v in t}
        self._lower_names = {v.name.lower(): v for t in self.layout.tables for v in t}
        self._lock = threading.RLock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.portid: int | None = None

    # =============================================================== lifecycle
    def start(self) -> FakeKernel:
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_USERSOCK)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        except OSError:
            pass
        sock.bind((0, 0))
        # Blocking sends with a timeout: a client that does not read its socket for 2 s
        # loses the reply (counted in ``dropped``) instead of wedging the fake.
        sock.settimeout(2.0)
        self._sock = sock
        self.portid = sock.getsockname()[0]
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"FakeKernel-{self.portid}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> FakeKernel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ============================================================ flow control
    @property
    def flows(self) -> Mapping[int, Flow]:
        """Read-only live view CID -> Flow (do not mutate the Flow objects directly)."""
        return MappingProxyType(self._flows)

    def add_flow(self, local: tuple[str, int] = ("10.0.0.1", 22),
                 remote: tuple[str, int] = ("192.0.2.7", 51000), *, owner: str = "self",
                 values: dict[str, int] | None = None, cid: int | None = None) -> int:
        """Add an established connection; returns its CID (ascending from 1, or ``cid``).

        IPv4 or IPv6 follows from the address syntax (both ends must agree).  ``values``
        are applied with :meth:`set_value` after the deterministic initial values.
        """
        if owner not in OWNERS:
            raise ValueError(f"owner must be one of {OWNERS}")
        lt, laddr, lport, lhost = parse_endpoint(local)
        rt, raddr, rport, rhost = parse_endpoint(remote)
        if lt != rt:
            raise ValueError("local and remote must be the same address family")
        with self._lock:
            if cid is None:
                cid = self.next_cid
                while cid in self._flows:
                    cid += 1
            if not 1 <= cid < 2**31 or cid in self._flows:
                raise ValueError(f"CID {cid} is invalid or in use")
            self.next_cid = max(self.next_cid, cid + 1)
            base = initial_values(self.layout, cid, seed=self.seed,
                                  start_time_us=self.start_time_us)
            inc = {k: v for k, v in INCREMENTS.items() if k in self._wires}
            inc["HCSumRTT"] = RTT_SAMPLES_PER_TICK * base["SampleRTT"]
            flow = Flow(cid=cid, local=(lhost, lport), remote=(rhost, rport), addr_type=lt,
                        local_addr=laddr, rem_addr=raddr, owner=owner,
                        created=self.jiffies, activity=self.jiffies, base=base, inc=inc,
                        wires=self._wires)
            for name, value in (values or {}).items():   # validate before publishing
                flow.set(self._var(name).name, value)
            self._flows[cid] = flow
            return cid

    def remove_flow(self, cid: int) -> None:
        with self._lock:
            del self._flows[cid]

    def _var(self, name: str) -> mib.Variable:
        try:
            return self._lower_names[name.lower()]
        except KeyError:
            raise KeyError(f"{name!r} is not a variable of the {self.layout_name} layout") \
                from None

    def set_value(self, cid: int, name: str, value: int) -> None:
        """Make variable ``name`` of flow ``cid`` read ``value`` now (see flows.py)."""
        with self._lock:
            self._flows[cid].set(self._var(name).name, value)

    def expected(self, cid: int, name: str) -> int:
        """The value the fake reports for ``name`` of ``cid`` right now (s32 signed).

        With ``auto_tick`` a READ ticks *before* answering, so after a reply has been
        received ``expected`` equals what it carried."""
        with self._lock:
            return self._flows[cid].value(self._var(name).name)

    def values(self, cid: int) -> dict[str, int]:
        """All variables of ``cid`` as ``expected`` would report them."""
        with self._lock:
            return self._flows[cid].values()

    def set_increment(self, cid: int, name: str, per_tick: int) -> None:
        """Change how much ``name`` advances per tick (keeps the current value)."""
        with self._lock:
            flow = self._flows[cid]
            name = self._var(name).name
            current = flow.value(name)
            flow.inc[name] = per_tick
            flow.set(name, current)

    def tick(self, n: int = 1) -> None:
        """Advance the fake clock by ``n`` seconds and every non-idle flow by ``n`` ticks.

        A non-idle flow's counters move by ``INCREMENTS`` per tick and its last activity
        becomes "now"."""
        if n < 0:
            raise ValueError("time does not run backwards")
        with self._lock:
            self.jiffies = (self.jiffies + n * self.hz) % 2**64
            for flow in self._flows.values():
                if not flow.idle:
                    flow.ticks += n
                    flow.activity = self.jiffies

    def msecs_to_jiffies(self, ms: int) -> int:
        return -(-ms * self.hz // 1000)           # rounds up, like the kernel

    def set_activity(self, cid: int, ms_ago: int, *, idle: bool = True) -> None:
        """Last send/receive of ``cid`` was ``ms_ago`` ms ago on the fake clock.

        By default the flow also becomes idle (tick() no longer advances it or refreshes
        its activity), so it stays out of "active within N ms" filters as time passes."""
        with self._lock:
            flow = self._flows[cid]
            flow.activity = (self.jiffies - self.msecs_to_jiffies(ms_ago)) % 2**64
            flow.idle = idle

    def timestamp_token(self, delta_ms: int = 0) -> int:
        """What TIMESTAMP with ``delta_ms`` answers now."""
        return (self.jiffies - self.msecs_to_jiffies(delta_ms)) % 2**64

    # ================================================================= serving
    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        buf = bytearray(1 << 20)
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([sock], [], [], 0.05)
                if not ready:
                    continue
                n, (port, _groups) = sock.recvfrom_into(buf)
            except (BlockingIOError, InterruptedError, TimeoutError):
                continue
            except OSError:
                if self._stop.is_set():
                    break
                continue                    # e.g. ENOBUFS: our own receive queue overran
            data = bytes(buf[:n])
            with self._lock:
                try:
                    self._handle_datagram(data, port)
                except Exception:  # noqa: BLE001 - must never die
                    self.internal_errors.append(traceback.format_exc())

    def _send(self, data: bytes, port: int) -> None:
        try:
            assert self._sock is not None
            self._sock.sendto(data, (port, 0))
            self.datagrams_sent += 1
        except OSError:                       # closed client, timeout, ...
            self.dropped += 1

    def wait_sent(self, count: int, timeout: float = 5.0) -> None:
        """Block until ``datagrams_sent`` reaches ``count`` (a test's barrier before the
        client's next call, when the fake was told to answer late)."""
        deadline = time.monotonic() + timeout
        while self.datagrams_sent < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the fake sent {self.datagrams_sent} of {count} datagrams")
            time.sleep(0.001)

    @staticmethod
    def error_datagram(request: Request, err: int) -> bytes:
        """An NLMSG_ERROR for ``request`` carrying the raw s32 ``err`` (any value, e.g.
        INT_MIN or a positive one: a misbehaving kernel for ``tamper``)."""
        msg = nlmsg_error(request.raw, -1, request.portid)
        return msg[:16] + struct.pack("=i", err) + msg[20:]

    def _handle_datagram(self, data: bytes, port: int) -> None:
        """netlink_rcv_skb(): every complete message in turn."""
        dgram = self.datagrams_received
        self.datagrams_received += 1
        for off, nlen, msg in split_messages(data):
            nl_type, flags = struct.unpack_from("=HH", data, off + 4)
            nreq = len(self.requests)
            try:
                replies, err = self._dispatch(data, off, nlen, msg, port, dgram)
            except Exception:  # noqa: BLE001
                self.internal_errors.append(traceback.format_exc())
                replies, err = [], -errno.EINVAL
            # err None: a dump, finished by NLMSG_DONE instead of an ACK.
            ack = (nlmsg_error(msg, err, port)
                   if err is not None and (err or flags & C.NLM_F_ACK) else None)
            out = list(replies) + ([ack] if ack is not None else [])
            if self.tamper is not None and len(self.requests) > nreq:
                try:
                    out = list(self.tamper(self.requests[-1], list(replies), ack))
                except Exception:  # noqa: BLE001
                    self.internal_errors.append(traceback.format_exc())
            for r in out:
                self._send(r, port)

    def _dispatch(self, data: bytes, off: int, nlen: int, msg: bytes, port: int,
                  dgram: int) -> tuple[list[bytes], int | None]:
        _len, nl_type, flags, seq, _pid = struct.unpack_from("=IHHII", msg, 0)
        if not flags & C.NLM_F_REQUEST:
            return [], 0                      # only requests are handled; ACK if asked
        if nl_type < C.NLMSG_MIN_TYPE:
            return [], 0                      # control messages (incl. family id 0): ACK
        if nl_type == C.GENL_ID_CTRL:
            self.ctrl_requests.append(msg)
            return self._ctrl(data, off, nlen, msg, port)
        if nl_type != self.family_id or not self.registered:
            return [], -errno.ENOENT          # genl: no family with that id
        if nlen < C.NLMSG_HDRLEN + C.GENL_HDRLEN:
            return [], -errno.EINVAL
        cmd = msg[16]
        tb = nla_parse(data, off + 20, off + nlen, self.maxattr)  # no top-level policy
        self.requests.append(Request(cmd, _decode_request_attrs(tb), seq=seq, flags=flags,
                                     portid=port, datagram=dgram, raw=msg))
        if cmd >= C.NUM_COMMANDS:
            return [], -errno.EOPNOTSUPP      # genl_get_cmd() found no op
        if flags & C.NLM_F_DUMP == C.NLM_F_DUMP:
            return [], -errno.EOPNOTSUPP      # no op has a dumpit (§4.1)
        if self.on_request is not None:
            try:
                self.on_request(cmd, self)
            except Exception:  # noqa: BLE001
                self.internal_errors.append(traceback.format_exc())
        if self.auto_tick and cmd in (C.TCPE_CMD_READ_ALL, C.TCPE_CMD_READ_VARS):
            self.tick(1)
        handler = (self._list_conns, self._read_all, self._read_vars, self._write_var,
                   self._init, self._timestamp)[cmd]
        try:
            return handler(tb), 0
        except _Reply as r:
            return [], r.err

    # ============================================================== controller
    def _family_message(self, w: SkbWriter, seq: int, port: int, flags: int) -> None:
        """CTRL_CMD_NEWFAMILY for tcp_estats, attributes in ctrl_fill_info() order
        (verified against a live kernel's reply for nlctrl): NAME, ID, VERSION, HDRSIZE,
        MAXATTR, OPS, MCAST_GROUPS; the controller's nests carry no NLA_F_NESTED."""
        m = w.msg_start(C.GENL_ID_CTRL, flags, seq, port, cmd=C.CTRL_CMD_NEWFAMILY,
                        version=C.CTRL_VERSION)
        w.put_string(C.CTRL_ATTR_FAMILY_NAME, C.FAMILY_NAME)
        w.put_u16(C.CTRL_ATTR_FAMILY_ID, self.family_id)
        w.put_u32(C.CTRL_ATTR_VERSION, C.FAMILY_VERSION)
        w.put_u32(C.CTRL_ATTR_HDRSIZE, 0)
        w.put_u32(C.CTRL_ATTR_MAXATTR, self.maxattr)
        ops = w.nest_start(C.CTRL_ATTR_OPS, nested_flag=False)
        for i, cmd in enumerate(range(C.NUM_COMMANDS)):
            op = w.nest_start(i + 1, nested_flag=False)
            w.put_u32(C.CTRL_ATTR_OP_ID, cmd)
            w.put_u32(C.CTRL_ATTR_OP_FLAGS, C.GENL_CMD_CAP_DO)
            w.nest_end(op)
        w.nest_end(ops)
        grps = w.nest_start(C.CTRL_ATTR_MCAST_GROUPS, nested_flag=False)
        g = w.nest_start(1, nested_flag=False)
        w.put_u32(C.CTRL_ATTR_MCAST_GRP_ID, self.mcast_group_id)
        w.put_string(C.CTRL_ATTR_MCAST_GRP_NAME, C.MCAST_GROUP_NAME)
        w.nest_end(g)
        w.nest_end(grps)
        w.msg_end(m)

    def _ctrl(self, data: bytes, off: int, nlen: int, msg: bytes,
              port: int) -> tuple[list[bytes], int | None]:
        """The generic-netlink controller, GETFAMILY only (§2.1).

        Unlike the module, the controller's reply carries the request's seq and the
        client's port id."""
        if nlen < C.NLMSG_HDRLEN + C.GENL_HDRLEN:
            return [], -errno.EINVAL
        _len, _t, flags, seq, _pid = struct.unpack_from("=IHHII", msg, 0)
        if msg[16] != C.CTRL_CMD_GETFAMILY:
            return [], -errno.EOPNOTSUPP
        if flags & C.NLM_F_DUMP == C.NLM_F_DUMP:
            # Dump of all families: here just tcp_estats (if loaded), NLM_F_MULTI, then
            # NLMSG_DONE in its own datagram and no ACK.
            out = []
            if self.registered:
                w = SkbWriter()
                self._family_message(w, seq, port, C.NLM_F_MULTI)
                out.append(w.getvalue())
            out.append(nlmsg_done(seq, port))
            return out, None
        try:
            tb = nla_parse(data, off + 20, off + nlen, C.CTRL_ATTR_MAX, CTRL_POLICY)
        except PolicyError as e:
            return [], -e.errno
        err, found = -errno.EINVAL, False
        # ctrl_getfamily(): the id is looked up first, a name (if given) overrides it.
        if C.CTRL_ATTR_FAMILY_ID in tb:
            found = self.registered and tb[C.CTRL_ATTR_FAMILY_ID].get_u16() == self.family_id
            err = -errno.ENOENT
        if C.CTRL_ATTR_FAMILY_NAME in tb:
            name = tb[C.CTRL_ATTR_FAMILY_NAME].payload.split(b"\0", 1)[0]
            found = self.registered and name == C.FAMILY_NAME.encode()
            err = -errno.ENOENT
        if not found:
            return [], err
        w = SkbWriter()
        self._family_message(w, seq, port, 0)
        return [w.getvalue()], 0

    # ========================================================= request parsing
    def _start_cid(self, tb: dict[int, Attr]) -> int:
        """LIST_CONNS / READ_ALL: optional 4TUPLE{NEA_CID} start (§5.2)."""
        if C.NLE_ATTR_4TUPLE not in tb:
            return 0
        cid = self._tuple_cid(tb)
        if cid < 0:
            raise _Reply(-errno.EINVAL)
        return cid

    @staticmethod
    def _tuple_cid(tb: dict[int, Attr]) -> int:
        """The signed NEA_CID of the request's 4TUPLE nest; EINVAL when absent/invalid."""
        a = tb.get(C.NLE_ATTR_4TUPLE)
        if a is None:
            raise _Reply(-errno.EINVAL)
        try:
            nt = parse_nested(a, C.NEA_CID, TUPLE_POLICY)
        except PolicyError:
            raise _Reply(-errno.EINVAL) from None
        if C.NEA_CID not in nt:
            raise _Reply(-errno.EINVAL)
        return _signed32(nt[C.NEA_CID].get_u32())

    def _masks(self, tb: dict[int, Attr]) -> tuple[int, ...]:
        """§6.1: absent nest or absent member = all; bits beyond the table ignored."""
        full = self.layout.all_masks
        a = tb.get(C.NLE_ATTR_MASK)
        if a is None:
            return full
        try:
            nm = parse_nested(a, 6, MASK_POLICY)
        except PolicyError:
            raise _Reply(-errno.EINVAL) from None
        return tuple(nm[t + 1].get_u64() & full[t] if t + 1 in nm else full[t]
                     for t in range(C.NUM_TABLES))

    def _token(self, tb: dict[int, Attr]) -> int | None:
        a = tb.get(C.NLE_ATTR_TIMESTAMP)
        return None if a is None else a.get_u64()        # read as 8 bytes regardless

    def _active_since(self, flow: Flow, token: int | None) -> bool:
        """time_after_eq64(activity, token): wrap-safe jiffies comparison."""
        if token is None:
            return True
        d = (flow.activity - token) % 2**64
        return d < 2**63

    def _can_read(self, flow: Flow) -> bool:
        return self.privileged or flow.readable

    def _can_write(self, flow: Flow) -> bool:
        return self.privileged or flow.writable

    # ============================================================ reply pieces
    def _writer(self, capacity: int | None = None) -> SkbWriter:
        return SkbWriter(capacity, self.pad_mode)

    def _put_tuple(self, w: SkbWriter, flow: Flow, cid: int) -> None:
        """§8: six members in fixed order; ports in host order; CID as given."""
        n = w.nest_start(C.NLE_ATTR_4TUPLE)
        w.put(C.NEA_REM_ADDR, flow.rem_addr)
        w.put_u16(C.NEA_REM_PORT, flow.remote[1])
        w.put(C.NEA_LOCAL_ADDR, flow.local_addr)
        w.put_u16(C.NEA_LOCAL_PORT, flow.local[1])
        w.put_u8(C.NEA_ADDR_TYPE, flow.addr_type)
        w.put_u32(C.NEA_CID, cid)
        w.nest_end(n)

    def _now_ns(self) -> int:
        src = self.wallclock_ns
        if src is None:
            return time.time_ns()
        return src() if callable(src) else int(src)

    def _put_time(self, w: SkbWriter) -> None:
        """§9: seconds + sub-second part in µs, or in ns at kernel-5.0 (HEAD)."""
        ns = self._now_ns()
        sec, sub = divmod(ns, 1_000_000_000)
        if self.time_unit == "us":
            sub //= 1000
        n = w.nest_start(C.NLE_ATTR_TIME)
        w.put_u32(C.NEA_TIME_SEC, sec & 0xFFFFFFFF)
        w.put_u32(C.NEA_TIME_USEC, sub)
        w.nest_end(n)

    def _put_vals(self, w: SkbWriter, flow: Flow, masks: tuple[int, ...]) -> None:
        """§6.2: all six VALS nests, each with one attribute per selected variable."""
        for t, table in enumerate(self.layout.tables):
            n = w.nest_start(C.NLE_ATTR_PERF_VALS + t)
            mask = masks[t]
            for i, var in enumerate(table):
                if not mask >> i & 1:
                    continue
                v = flow.value(var.name)
                if var.wire == "u64":
                    w.put_u64_64bit(i, v, C.NLE_ATTR_PAD)
                elif var.wire == "u32":
                    w.put_u32(i, v)
                elif var.wire == "s32":
                    w.put_s32(i, v)
                elif var.wire == "u8":
                    w.put_u8(i, v)
                else:                                  # u16: no variable uses it
                    w.put_u16(i, v)
            w.nest_end(n)

    def _module_msg(self, w: SkbWriter, cmd: int) -> int:
        """Module data messages: type = family id, flags 0, seq 0, pid 0 (§4.2)."""
        return w.msg_start(self.family_id, 0, 0, 0, cmd=cmd, version=C.FAMILY_VERSION)

    def _batch(self, cmd: int, start: int, eligible: Callable[[Flow], bool],
               fill: Callable[[SkbWriter, Flow], None]) -> list[bytes]:
        """One page-sized batch (§4.3).

        Before visiting each connection the free room is compared with the size of the
        message appended last (initially 16); the batch ends when the room is smaller.
        A message that still does not fit is cancelled and ends the batch; if it was the
        first one, the module reports ENOBUFS.  No data messages -> no data datagram:
        the bare ACK is the end-of-list signal."""
        w = self._writer(self.page_payload)
        last = 16
        for cid in sorted(c for c in self._flows if c >= start):
            if w.tailroom < last:
                break
            flow = self._flows[cid]
            if not eligible(flow):
                continue
            m = self._module_msg_or_none(w, cmd)
            if m is None:
                break
            try:
                fill(w, flow)
            except MsgSize:
                w.cancel(m)
                break
            last = w.msg_end(m)
        if len(w) == 0:
            if any(c >= start and eligible(self._flows[c]) for c in self._flows):
                raise _Reply(-errno.ENOBUFS)       # not even the first message fitted
            return []
        return [w.getvalue()]

    def _module_msg_or_none(self, w: SkbWriter, cmd: int) -> int | None:
        try:
            return self._module_msg(w, cmd)
        except MsgSize:
            return None

    # ================================================================ handlers
    def _list_conns(self, tb: dict[int, Attr]) -> list[bytes]:
        """§5.2: tuples with the true CID; no access restriction."""
        start = self._start_cid(tb)
        token = self._token(tb)

        def fill(w: SkbWriter, flow: Flow) -> None:
            self._put_tuple(w, flow, flow.cid)

        return self._batch(C.TCPE_CMD_LIST_CONNS, start,
                           lambda f: self._active_since(f, token), fill)

    def _read_all(self, tb: dict[int, Attr]) -> list[bytes]:
        """§5.3: TIME, 4TUPLE (CID + 1 — the quirk), six VALS; unreadable flows skipped."""
        start = self._start_cid(tb)
        masks = self._masks(tb)
        token = self._token(tb)

        def fill(w: SkbWriter, flow: Flow) -> None:
            self._put_time(w)
            self._put_tuple(w, flow, flow.cid + 1)
            self._put_vals(w, flow, masks)

        return self._batch(C.TCPE_CMD_READ_ALL, start,
                           lambda f: self._can_read(f) and self._active_since(f, token), fill)

    def _read_vars(self, tb: dict[int, Attr]) -> list[bytes]:
        """§5.4: one message; EINVAL for any bad/unknown CID, EACCES for others' flows."""
        cid = self._tuple_cid(tb)
        if cid < 1:
            raise _Reply(-errno.EINVAL)
        masks = self._masks(tb)
        flow = self._flows.get(cid)
        if flow is None:
            raise _Reply(-errno.EINVAL)
        if not self._can_read(flow):
            raise _Reply(-errno.EACCES)
        w = self._writer()
        m = self._module_msg(w, C.TCPE_CMD_READ_VARS)
        self._put_time(w)
        self._put_tuple(w, flow, cid)
        self._put_vals(w, flow, masks)
        w.msg_end(m)
        return [w.getvalue()]

    def _write_var(self, tb: dict[int, Attr]) -> list[bytes]:
        """§5.5, errors strictly in the documented order; success = ACK only."""
        # 1. tuple / CID
        cid = self._tuple_cid(tb)
        if cid < 1:
            raise _Reply(-errno.EINVAL)
        # 2. write nest with a name
        a = tb.get(C.NLE_ATTR_WRITE)
        if a is None:
            raise _Reply(-errno.EINVAL)
        try:
            nw = parse_nested(a, C.NEA_WRITE_VAL, WRITE_POLICY)
        except PolicyError:
            raise _Reply(-errno.EINVAL) from None
        if C.NEA_WRITE_VAR not in nw:
            raise _Reply(-errno.EINVAL)
        # 3. name: up to the NUL, cut to 20 characters, ASCII case-insensitive, exact
        raw = nw[C.NEA_WRITE_VAR].payload.split(b"\0", 1)[0][:_NAME_CUT].lower()
        var = None
        for table in self.layout.tables:               # perf -> extras, first match
            for v in table:
                if v.name.lower().encode() == raw:
                    var = v
                    break
            if var is not None:
                break
        if var is None:
            raise _Reply(-errno.EINVAL)
        # 4. value
        if C.NEA_WRITE_VAL not in nw:
            raise _Reply(-errno.EINVAL)
        val = nw[C.NEA_WRITE_VAL].get_u32()
        # 5. connection, 6. access (uid match or CAP_SYS_ADMIN), 7. writability
        flow = self._flows.get(cid)
        if flow is None:
            raise _Reply(-errno.EINVAL)
        if not self._can_write(flow):
            raise _Reply(-errno.EACCES)
        if var.name == "LimCwnd":
            mss = flow.value("CurMSS")
            clamp = min(val // mss, 65535) if mss else 65535
            flow.set("LimCwnd", (clamp * mss) & 0xFFFFFFFF)
        elif var.name == "LimRwin":
            wscale = max(flow.value("WinScaleSent"), 0)   # -1: no scaling -> shift 0
            flow.set("LimRwin", min(val, 65535 << wscale) & 0xFFFFFFFF)
        else:
            raise _Reply(-errno.EPERM)
        self.written.append((cid, var.name, val))
        return []

    def _init(self, tb: dict[int, Attr]) -> list[bytes]:
        """§5.1: NUM_TABLES, NUM_VARS, six VARS nests of {NAME\\0, TYPE} in index order."""
        w = self._writer()
        m = self._module_msg(w, C.TCPE_CMD_INIT)
        w.put_u32(C.NLE_ATTR_NUM_TABLES, C.NUM_TABLES)
        w.put_u32(C.NLE_ATTR_NUM_VARS, self.layout.total)
        for t, table in enumerate(self.layout.tables):
            n = w.nest_start(C.NLE_ATTR_PERF_VARS + t)
            for var in table:
                v = w.nest_start(C.NLE_ATTR_VAR)
                w.put_string(C.NEA_VAR_NAME, var.name)
                w.put_u32(C.NEA_VAR_TYPE, var.type_code)
                w.nest_end(v)
            w.nest_end(n)
        w.msg_end(m)
        return [w.getvalue()]

    def _timestamp(self, tb: dict[int, Attr]) -> list[bytes]:
        """§5.6: token = now - delta on the activity clock (delta read as 4 bytes)."""
        a = tb.get(C.NLE_ATTR_TIMESTAMP_DELTA)
        delta = 0 if a is None else a.get_u32()
        w = self._writer()
        m = self._module_msg(w, C.TCPE_CMD_TIMESTAMP)
        w.put_u64_64bit(C.NLE_ATTR_TIMESTAMP, self.timestamp_token(delta), C.NLE_ATTR_PAD)
        w.msg_end(m)
        return [w.getvalue()]
