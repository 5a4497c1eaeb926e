"""The estats backend: the Web10G kernel's ``tcp_estats`` generic-netlink family.

At open: resolve the family through the controller, ask the module for its MIB
(TCPE_CMD_INIT) and match it against the registry's known layouts (124 at HEAD, 122 at
kernel-4.8 ... 4.13, the OtherReductions layout before), so values are decoded by the
module's own (table, index) numbering, never a compiled-in list. The per-connection work
happens in C (csrc/w10g_estats.c) through :mod:`web10g._estats`.

``peer=PORT`` (or ``WEB10G_ESTATS_PEER``) sends every request, the controller lookup
included, to that NETLINK_USERSOCK port instead of the kernel: the test seam for the
fake kernel in tests/fakekernel.

The peer is a test seam, and NETLINK_USERSOCK lets every local user send to any port
id, so what a peer-mode agent accepts is narrowed down:

- The socket is connected to the peer: the kernel refuses datagrams from any other port
  id (the sender gets ECONNREFUSED), and the receive loop drops any that were queued
  before (``NetlinkSocket.foreign`` counts them). In kernel mode only port id 0 is
  accepted.
- The peer must run as root or as the same user as this process (its credentials,
  SCM_CREDENTIALS, are checked on every datagram; PermissionError otherwise). A
  privileged process (euid 0) may use the seam, but then only with a root-owned peer:
  an unprivileged user cannot feed it replies, neither by forging datagrams nor by
  binding a port id that a stopped peer left behind.
- A value that is not a decimal port id in 1 ... 4294967295 is refused with
  :class:`PeerSettingError` (a BackendUnavailable and a ValueError), never an
  OverflowError. :func:`peer_from_env` parses the variable.
"""
from __future__ import annotations

import errno
import os
import re
import struct
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from web10g import errors, genl, mib
from web10g import rows as _rows
from web10g._estats import NO_DATA, Reader
from web10g._netlink import NetlinkSocket, parse_attrs
from web10g.backends.base import BaseAgent, Capabilities, Vars, _vars_key

VariableUnavailable = errors.VariableUnavailable

NETLINK_USERSOCK = 2
NETLINK_GENERIC = 16
CMD_WRITE_VAR, CMD_INIT, CMD_TIMESTAMP = 3, 4, 5
_WIDTHS = {"u8": 1, "u16": 2, "u32": 4, "s32": 4, "u64": 8}
# Replies are ~1.2 KB; the receive queue must hold a whole watch-list batch of them.
_RCVBUF = 4 << 20


PEER_ENV = "WEB10G_ESTATS_PEER"


class PeerSettingError(errors.BackendUnavailable, ValueError):
    """``peer=`` / ``WEB10G_ESTATS_PEER`` is not a netlink port id (1 ... 4294967295)."""


def check_peer(peer: Any, source: str = "peer") -> int:
    """``peer`` as a netlink port id; PeerSettingError naming ``source`` otherwise.

    Strings must be plain ASCII decimal digits (no sign, spaces, underscores or other
    scripts' digits)."""
    if isinstance(peer, str):
        if not re.fullmatch(r"[0-9]{1,10}", peer):
            raise PeerSettingError(
                f"{source}={peer!r} is not a netlink port id (decimal digits, 1 ... "
                f"4294967295); unset it to use the kernel")
        value = int(peer)
    elif isinstance(peer, (int, np.integer)) and not isinstance(peer, bool):
        value = int(peer)
    else:
        raise PeerSettingError(f"{source}={peer!r} is not a netlink port id (an int in "
                               "1 ... 4294967295)")
    if not 1 <= value <= 0xFFFFFFFF:
        raise PeerSettingError(f"{source}={peer!r} is out of range: netlink port ids are "
                               "1 ... 4294967295 (0 is the kernel)")
    return value


def peer_from_env() -> int | None:
    """The port id in ``WEB10G_ESTATS_PEER``, None when unset or empty."""
    text = os.environ.get(PEER_ENV)
    if not text:
        return None
    return check_peer(text, PEER_ENV)


def _genl(cmd: int) -> bytes:
    return bytes([cmd, 1, 0, 0])


def _attr(atype: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, atype) + payload + b"\0" * (-n % 4)


class EstatsAgent(BaseAgent):
    """Reads every connection the Web10G kernel instruments. Use :func:`web10g.open`.

    Threads may share it: each call holds the agent's lock (see web10g.backends.base);
    ``clone()`` gives another thread its own socket for parallel reads. ``peer``: see
    the module docstring (connected socket, sender and credential checks).
    """

    backend = "estats"
    capabilities = Capabilities(
        live=True, closed_flows=False, owners=True, kill=True,
        writable=frozenset(("LimCwnd", "LimRwin")), recordable=True,
        kernel_filter=False, activity_filter=True, namespaces=False, uid_inode=False,
        present_unit="MIB table (perf, path, stack, app, tune, extras)")

    def __init__(self, *, peer: int | None = None, netns: Any = None,
                 timeout: float = 5.0) -> None:
        if netns is not None:
            raise ValueError("the tcp_estats family is not namespace-aware: it can only be "
                             "used from the initial network namespace, and it lists the "
                             "connections of every namespace (web10g-abi.md section 2)")
        if peer is not None:
            peer = check_peer(peer)
        self.peer = peer
        self._timeout = timeout
        protocol = NETLINK_USERSOCK if peer is not None else NETLINK_GENERIC
        self._sock = NetlinkSocket(protocol, peer=peer or 0, timeout=timeout)
        try:
            self._sock.set_rcvbuf(_RCVBUF)
            self.family = genl.resolve(self._sock, "tcp_estats")
            self.tables = self._init()
            self.layout = mib.identify_layout(self.tables)
        except BaseException:
            self._sock.close()
            raise
        self._positions, self._widths = _positions(self.tables)
        # NEA_TIME_USEC carries nanoseconds from tag kernel-5.0 on (ABI section 9), and
        # only the HEAD layout can be that tag: decide from the first sample there.
        self._usec_mult = 1 if self.layout.name == "head" else 1000
        self._time_settled = self.layout.name != "head"
        self._readers: dict[Any, Reader] = {}
        self._seen: dict[Any, int] = {}
        self.notes: list[str] = []

    # -- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        self._readers.clear()
        self._sock.close()

    def __repr__(self) -> str:
        where = f" peer={self.peer}" if self.peer is not None else ""
        return f"<web10g agent backend=estats layout={self.layout.name}{where}>"

    def clone(self) -> EstatsAgent:
        """An independent agent on the same module (for another thread)."""
        return EstatsAgent(peer=self.peer, timeout=self._timeout)

    # -- the module's MIB -------------------------------------------------------------
    def _init(self) -> list[list[tuple[str, int]]]:
        msgs = self._sock.request(self.family.id, 0, _genl(CMD_INIT),
                                  call="tcp_estats INIT")
        if not msgs:
            raise errors.MalformedReply("tcp_estats INIT: the module sent no MIB description")
        tables: list[list[tuple[str, int]]] = [[] for _ in mib.TABLES]
        for atype, payload in parse_attrs(msgs[0], 16 + 4):
            if 19 <= atype <= 24:
                for vtype, var in parse_attrs(payload):
                    if vtype != 25:
                        continue
                    fields = dict(parse_attrs(var))
                    if 1 not in fields or 2 not in fields or len(fields[2]) < 4:
                        raise errors.MalformedReply(
                            "tcp_estats INIT: a variable lacks its name or type")
                    name = fields[1].split(b"\0", 1)[0].decode("ascii", "replace")
                    tables[atype - 19].append((name, struct.unpack_from("=I", fields[2])[0]))
        if not any(tables):
            raise errors.MalformedReply("tcp_estats INIT: the reply describes no variables")
        return tables

    def variables(self) -> list[mib.Variable]:
        """The variables of the running module's layout, in wire order."""
        return self.layout.variables()

    @property
    def mib_tables(self) -> list[list[tuple[str, int]]]:
        """The module's own INIT description: (name, type code) by table."""
        return self.tables

    def _unavailable_reason(self, v: mib.Variable) -> str:
        where = ("a stock-kernel (sock_diag) extra" if v.is_stock else
                 f"not in this module's layout ({self.layout.name})")
        return f"{v.name} is not available on the estats backend: {where}"

    def _presence(self, selected: list[mib.Variable]) -> _rows.Presence:
        return presence(selected, self._positions)

    def _reader(self, vars: Any, identity_only: bool = False) -> tuple[Reader, Any]:
        key = ("ids",) if identity_only else _vars_key(vars)
        reader = self._readers.get(key)
        if reader is None:
            if identity_only:
                dt = _rows.row_dtype(list(_rows.IDENTITY_FIELDS) + _rows.META_FIELDS, None)
                selected: list[mib.Variable] = []
            else:
                selected = self._select(vars)
                dt = self.dtype(vars)
            # State rides along in every read: it fills the identity column `state`.
            names = [v.name for v in selected]
            if "State" in self._positions and "State" not in names:
                names.append("State")
            st_t, st_i = self._positions.get("State", (-1, -1))
            reader = Reader(self._sock, self.family.id, dt,
                            {v.name: self._positions[v.name] for v in selected},
                            self._widths, self.layout.mask(names), state_table=st_t,
                            state_index=st_i, usec_mult=self._usec_mult)
            self._readers[key] = reader
            self._seen[key] = 0
        return reader, key

    def _settle_time(self, reader: Reader, rows: np.ndarray) -> None:
        """Pick microseconds or nanoseconds for NEA_TIME_USEC from a real sample."""
        sample = reader.time_sample
        if self._time_settled or sample is None:
            return
        sec, usec, max_usec = sample
        if max_usec >= 1_000_000:
            mult = 1                       # only nanoseconds exceed a second's worth
        else:
            now = time.time()
            mult = 1 if abs(sec + usec * 1e-9 - now) <= abs(sec + usec * 1e-6 - now) else 1000
        self._time_settled = True
        if mult != self._usec_mult:
            ts = rows["timestamp"]
            frac = ts % 1_000_000_000 // self._usec_mult
            rows["timestamp"] = ts - ts % 1_000_000_000 + frac * mult
            self._usec_mult = mult
            for r in self._readers.values():
                r.usec_mult = mult

    def _token(self, active_within: float | None) -> int | None:
        if active_within is None:
            return None
        return self.timestamp(int(active_within))

    # -- the API ---------------------------------------------------------------------
    def read_all(self, vars: Vars = None, *, filter: Any = None,
                 out: np.ndarray | None = None, states: Any = None, family: Any = None,
                 active_within: float | None = None) -> np.ndarray:
        """One row per connection: identity, timestamp, metadata, one column per variable.

        ``active_within`` (ms) asks the module for connections active that recently (its
        TIMESTAMP token filter). ``filter``/``states``/``family`` as on sock_diag, applied
        here with the kernel's semantics (the module filters by activity only);
        ``states=None`` keeps every connection the module lists (which is what
        "open" means on a Web10G kernel). ``out`` as on every backend.
        """
        reader, key = self._reader(vars)
        filtering = filter is not None or states is not None or family is not None
        target = self._target(reader.dtype, out, filtering, self._seen[key])
        arr, n, _ = reader.read_all(target, self._token(active_within))
        self._seen[key] = n
        self._settle_time(reader, arr[:n])
        keep = _rows.select(arr[:n], filter, states, family, default_states=False)
        return self._deliver(arr, n, keep, out, target)

    def list_conns(self, *, filter: Any = None, states: Any = None, family: Any = None,
                   active_within: float | None = None) -> np.ndarray:
        """Every connection's identity (LIST_CONNS).

        LIST_CONNS carries no state (the rows say 0), and the module lists only the
        connections it instruments, which are all in the "open" states. So a selection
        that covers every open state ("open", "all", the default) filters nothing, and a
        narrower one ("established") costs one READ_ALL of the state alone."""
        reader, key = self._reader(None, identity_only=True)
        target = self._fresh(reader.dtype, self._seen[key])
        arr, n, _ = reader.list_conns(target, self._token(active_within))
        self._seen[key] = n
        keep = _rows.select(arr[:n], filter, None, family, default_states=False)
        if states is not None:
            mask = _rows.parse_states(states)
            opened = _rows.STATE_GROUPS[_rows.DEFAULT_STATES]
            if mask & opened != opened:
                inside = self.read_all([], states=states)["cid"]
                ok = np.isin(arr[:n]["cid"], inside)
                keep = ok if keep is None else keep & ok
        return self._deliver(arr, n, keep, None, target)

    def read_vars(self, cid: int, vars: None | str | Iterable[Any] = None) -> np.void:
        """One connection's record (READ_VARS). Raises FlowNotFound when it has gone."""
        rows, problems = self.read_many([cid], vars)
        if int(cid) in problems:
            raise problems[int(cid)]
        if len(rows) != 1:       # read_many matched replies to requests; cannot happen
            raise errors.MalformedReply(f"tcp_estats READ_VARS of connection {cid}: "
                                        f"{len(rows)} rows for one request")
        return rows[0]

    def read_many(self, cids: Iterable[int], vars: None | str | Iterable[Any] = None
                  ) -> tuple[np.ndarray, dict[int, Exception]]:
        """READ_VARS for a watch list: all requests in one send where the socket allows.

        Returns the rows of the connections that answered, in request order, and for the
        others the exception explaining why (FlowNotFound, PermissionError, or
        MalformedReply when the module acknowledged a request without its data). Each
        reply is matched to its request (a data message naming another CID, or a second
        one, is a MalformedReply for the whole call).
        """
        ids = np.asarray(list(cids) if not isinstance(cids, np.ndarray) else cids)
        if ids.size and (ids.min() < 1 or ids.max() > 0x7FFFFFFF):
            raise ValueError("connection ids are between 1 and 2**31 - 1")
        reader, _ = self._reader(vars)
        arr, n, status = reader.read_vars(ids.astype(np.uint32))
        rows = arr[:n]
        self._settle_time(reader, rows)
        problems: dict[int, Exception] = {}
        for cid, err in zip(ids.tolist(), status.tolist()):
            if err == errno.EINVAL:
                problems[cid] = errors.FlowNotFound(
                    f"connection {cid} does not exist (any more): the module answered EINVAL")
            elif err == NO_DATA:
                problems[cid] = errors.MalformedReply(
                    f"tcp_estats READ_VARS of connection {cid}: the module acknowledged the "
                    "request but sent no data message for it")
            elif err == errno.EACCES:
                problems[cid] = PermissionError(
                    errno.EACCES, f"tcp_estats READ_VARS of connection {cid}: it belongs to "
                    "another user; read it as its owner or with CAP_SYS_ADMIN")
            elif err:
                problems[cid] = errors.from_errno(err, f"tcp_estats READ_VARS of {cid}")
        return rows, problems

    def write_var(self, cid: int, name: str, value: int) -> None:
        """Write a tunable (LimCwnd, LimRwin) of one connection (TCPE_CMD_WRITE_VAR)."""
        v = mib.lookup(name)
        if v.name not in self._positions:
            raise VariableUnavailable(f"{v.name} is not in this module's layout")
        if not v.writable:
            raise PermissionError(errno.EPERM, f"{v.name} is read-only; the writable "
                                  "variables are LimCwnd and LimRwin")
        value = int(value)
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"{v.name} takes 0 ... 4294967295 octets, not {value}")
        cid = int(cid)
        if not 1 <= cid <= 0x7FFFFFFF:
            raise ValueError("connection ids are between 1 and 2**31 - 1")
        payload = (_genl(CMD_WRITE_VAR) + _attr(14 | 0x8000, _attr(6, struct.pack("=I", cid)))
                   + _attr(15 | 0x8000, _attr(1, v.name.encode() + b"\0")
                           + _attr(2, struct.pack("=I", value))))
        try:
            self._sock.request(self.family.id, 0, payload, call=f"tcp_estats WRITE_VAR {v.name}")
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise errors.FlowNotFound(f"connection {cid} does not exist (any more)") from None
            if exc.errno == errno.EACCES:
                raise PermissionError(errno.EACCES, f"writing {v.name} of connection {cid}: "
                                      "it belongs to another user; write as its owner or "
                                      "with CAP_SYS_ADMIN") from None
            if exc.errno == errno.EPERM:
                raise PermissionError(errno.EPERM, f"the module refuses to write {v.name}: "
                                      "it is read-only there") from None
            raise

    def timestamp(self, delta_ms: int = 0) -> int:
        """The module's activity-clock token for "now minus delta_ms" (TCPE_CMD_TIMESTAMP)."""
        if not 0 <= delta_ms <= 0xFFFFFFFF:
            raise ValueError("delta_ms must fit in 32 bits")
        msgs = self._sock.request(self.family.id, 0, _genl(CMD_TIMESTAMP)
                                  + _attr(26, struct.pack("=I", delta_ms)),
                                  call="tcp_estats TIMESTAMP")
        for m in msgs:
            for atype, payload in parse_attrs(m, 16 + 4):
                if atype == 27 and len(payload) == 8:
                    return struct.unpack("=Q", payload)[0]
        raise errors.MalformedReply("tcp_estats TIMESTAMP: the reply carries no token")

    # -- availability ---------------------------------------------------------------
    @property
    def unavailable(self) -> set[str]:
        """Registry variables this module's layout does not have."""
        return {v.name for v in mib.variables() if not v.is_stock} - set(self._positions)

    def _no_closed_reason(self) -> str:
        return ("the Web10G module sends no end-of-flow notifications (its multicast group "
                "is never used); set net.ipv4.estats_delay a little above your sampling "
                "interval so closed connections stay readable for one more read_all()")

    # -- owners and kills, through the same kernel's sock_diag ------------------------------
    def socket_ids(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uid, inode) of each row: tcp_estats carries neither, so the same kernel's
        sock_diag table is matched by 4-tuple (best effort, as the classic tool's
        /proc/net/tcp pass); -1 where no socket matches."""
        uid = np.full(len(rows), -1, dtype=np.int64)
        inode = np.full(len(rows), -1, dtype=np.int64)
        table, at, hit = self._match(rows)
        uid[hit] = table["uid"][at[hit]]
        inode[hit] = table["inode"][at[hit]]
        return uid, inode

    def _match(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from web10g.backends.sockdiag import SockDiagAgent

        try:
            with SockDiagAgent() as sd:
                table = sd.list_conns(states="all")
        except OSError:
            return rows[:0], np.zeros(len(rows), dtype=np.intp), np.zeros(len(rows), bool)
        theirs, ours = _tuple_keys(table), _tuple_keys(rows)
        order = np.argsort(theirs)
        pos = np.minimum(np.searchsorted(theirs, ours, sorter=order), max(len(table) - 1, 0))
        if not len(table):
            return table, np.zeros(len(rows), dtype=np.intp), np.zeros(len(rows), bool)
        at = order[pos]
        return table, at, theirs[at] == ours

    def owners(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pid, command) of each row's socket (see ``socket_ids``), from /proc."""
        from web10g import procfs

        _, inode = self.socket_ids(rows)
        pids, names = procfs.owners_of(np.where(inode < 0, 0, inode).astype(np.uint32))
        pids = np.where(inode < 0, -1, pids)
        return pids, names

    def kill(self, cid: int) -> None:
        """Abort one connection: SOCK_DESTROY on the sock_diag socket with its 4-tuple
        (the Web10G module has no such command). Needs CAP_NET_ADMIN."""
        from web10g import tune
        from web10g.backends.sockdiag import SockDiagAgent

        rows = self.list_conns(states="all")
        rows = rows[rows["cid"] == int(cid)]
        if not len(rows):
            raise errors.FlowNotFound(f"connection {cid} does not exist (any more)")
        table, at, hit = self._match(rows)
        if not hit[0]:
            raise errors.FlowNotFound(f"connection {cid} has no socket in this network "
                                      "namespace's sock_diag table (it closed)")
        with SockDiagAgent() as sd:
            tune.kill(sd._sock, table[at[0]])

    # -- recordings -------------------------------------------------------------------------
    def recorder_state(self) -> tuple[dict[str, Any], Any]:
        return ({"tables": [[list(v) for v in t] for t in self.tables],
                 "family_id": self.family.id, "usec_mult": self._usec_mult}, self._sock)

    @staticmethod
    def replay_decoder(header: dict[str, Any]) -> ReplayDecoder:
        return ReplayDecoder(header)


def _positions(tables: list[list[tuple[str, int]]]
               ) -> tuple[dict[str, tuple[int, int]], dict[tuple[int, int], int]]:
    """{name: (table, index)} and {(table, index): wire width} of an INIT description."""
    positions: dict[str, tuple[int, int]] = {}
    widths: dict[tuple[int, int], int] = {}
    for t, table in enumerate(tables):
        for i, (name, code) in enumerate(table):
            positions[name] = (t, i)
            widths[(t, i)] = _WIDTHS[mib.wire_type_for(code, name)]
    return positions, widths


def presence(selected: list[mib.Variable], positions: dict[str, tuple[int, int]]
             ) -> _rows.Presence:
    """What `present` means in estats rows: bit t = table t was in the message."""
    return _rows.Presence("estats", {v.name: 1 << positions[v.name][0] for v in selected
                                     if v.name in positions})


def _tuple_keys(rows: np.ndarray) -> np.ndarray:
    """family, local address/port, remote address/port of each row as one byte string."""
    key = np.zeros(len(rows), dtype=[("f", "u1"), ("la", "V16"), ("lp", ">u2"),
                                     ("ra", "V16"), ("rp", ">u2")])
    key["f"], key["lp"], key["rp"] = rows["family"], rows["local_port"], rows["rem_port"]
    key["la"] = rows["local_addr"].view("V16").ravel()
    key["ra"] = rows["rem_addr"].view("V16").ravel()
    return key.view("S37").ravel()


class ReplayDecoder:
    """Decodes an estats recording's messages with the live C decoder."""

    backend = "estats"
    meta_fields: list[tuple[str, str]] = []

    def __init__(self, header: dict[str, Any]) -> None:
        tables = header.get("tables")
        try:
            if not isinstance(tables, list) or len(tables) != len(mib.TABLES):
                raise TypeError
            self.tables = [[(str(n), int(code)) for n, code in t] for t in tables]
            self.family_id = int(header.get("family_id", 0))
            self.usec_mult = int(header.get("usec_mult", 1))
        except (TypeError, ValueError):
            raise errors.RecordingError("the header's estats tables are not a list of "
                                        "(name, type) lists per MIB table", 12) from None
        if not (0 <= self.family_id <= 0xFFFF and self.usec_mult in (1, 1000)):
            raise errors.RecordingError("the header's family_id/usec_mult are out of range",
                                        12)
        self.layout = mib.identify_layout(self.tables)
        self._positions, self._widths = _positions(self.tables)
        self._readers: dict[np.dtype, Reader] = {}
        self._sink: NetlinkSocket | None = None

    def variables(self) -> list[mib.Variable]:
        return self.layout.variables()

    def presence(self, selected: list[mib.Variable]) -> _rows.Presence:
        return presence(selected, self._positions)

    def decode(self, frame: tuple[int, list[bytes], list[int]], dtype: np.dtype,
               out: np.ndarray | None) -> tuple[np.ndarray, int]:
        reader = self._readers.get(dtype)
        if reader is None:
            st = self._positions.get("State", (-1, -1))
            # the decoder needs a socket object; it sends nothing on a replay
            self._sink = self._sink or NetlinkSocket(NETLINK_USERSOCK)
            reader = Reader(self._sink, self.family_id, dtype,
                            {n: self._positions[n] for n in dtype.names or ()
                             if n in self._positions}, self._widths, (0,) * 6,
                            state_table=st[0], state_index=st[1], usec_mult=self.usec_mult)
            self._readers[dtype] = reader
        return reader.decode(frame[1], 1, out=out)

    def reset(self) -> None:
        pass
