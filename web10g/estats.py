"""The estats backend: the Web10G kernel's ``tcp_estats`` generic-netlink family.

At open: resolve the family through the controller, ask the module for its MIB
(TCPE_CMD_INIT) and match it against the registry's known layouts (124 at HEAD, 122 at
kernel-4.8 ... 4.13, the OtherReductions layout before), so values are decoded by the
module's own (table, index) numbering, never a compiled-in list. The per-connection work
happens in C (csrc/w10g_estats.c) through :mod:`web10g._estats`.

``peer=PORT`` (or ``WEB10G_ESTATS_PEER``) sends every request, the controller lookup
included, to that NETLINK_USERSOCK port instead of the kernel: the test seam for the
fake kernel in tests/fakekernel.
"""
from __future__ import annotations

import errno
import socket
import struct
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from web10g import errors, genl, mib
from web10g import filter as _filter
from web10g._estats import Reader
from web10g._netlink import NetlinkSocket, parse_attrs
from web10g.sockdiag import VariableUnavailable, parse_states

NETLINK_USERSOCK = 2
NETLINK_GENERIC = 16
CMD_WRITE_VAR, CMD_INIT, CMD_TIMESTAMP = 3, 4, 5
META_FIELDS = [("timestamp", "i8"), ("present", "u2")]
_ALWAYS = frozenset(name for name, _ in mib.IDENTITY_FIELDS) | {"timestamp", "present"}
_WIDTHS = {"u8": 1, "u16": 2, "u32": 4, "s32": 4, "u64": 8}
# Kernel TCP state bit (idiag_states numbering, as parse_states returns) -> RFC 4898 state.
_KERNEL_BIT_TO_RFC = {k: int(mib.KERNEL_TO_RFC_STATE[k]) for k in range(1, 14)}
# Replies are ~1.2 KB; the receive queue must hold a whole watch-list batch of them.
_RCVBUF = 4 << 20


def _genl(cmd: int) -> bytes:
    return bytes([cmd, 1, 0, 0])


def _attr(atype: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, atype) + payload + b"\0" * (-n % 4)


class EstatsAgent:
    """Reads every connection the Web10G kernel instruments. Use :func:`web10g.open`."""

    backend = "estats"

    def __init__(self, *, peer: int | None = None, netns: Any = None,
                 timeout: float = 5.0) -> None:
        if netns is not None:
            raise ValueError("the tcp_estats family is not namespace-aware: it can only be "
                             "used from the initial network namespace, and it lists the "
                             "connections of every namespace (web10g-abi.md section 2)")
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
        self._positions: dict[str, tuple[int, int]] = {}
        self._widths: dict[tuple[int, int], int] = {}
        for t, table in enumerate(self.tables):
            for i, (name, code) in enumerate(table):
                self._positions[name] = (t, i)
                self._widths[(t, i)] = _WIDTHS[mib.wire_type_for(code, name)]
        # NEA_TIME_USEC carries nanoseconds from tag kernel-5.0 on (ABI section 9), and
        # only the HEAD layout can be that tag: decide from the first sample there.
        self._usec_mult = 1 if self.layout.name == "head" else 1000
        self._time_settled = self.layout.name != "head"
        self._readers: dict[Any, Reader] = {}
        self._buffers: dict[Any, np.ndarray] = {}
        self.notes: list[str] = []

    # -- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        self._readers.clear()
        self._sock.close()

    def __enter__(self) -> EstatsAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" peer={self.peer}" if self.peer is not None else ""
        return f"<web10g agent backend=estats layout={self.layout.name}{where}>"

    def clone(self) -> EstatsAgent:
        """An independent agent on the same module (for another thread)."""
        return EstatsAgent(peer=self.peer, timeout=self._timeout)

    def sampler(self, vars: Any = None, *, interval: float, **kw: Any) -> Any:
        """A background sampler: see :class:`web10g.sampler.Sampler`."""
        from web10g.sampler import Sampler

        return Sampler(self, vars, interval=interval, **kw)

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

    def _select(self, vars: None | str | Iterable[Any]) -> list[mib.Variable]:
        if vars is None:
            return self.variables()
        names = [vars] if isinstance(vars, str) else list(vars)
        out: list[mib.Variable] = []
        for name in names:
            if name in _ALWAYS:
                continue
            v = mib.lookup(name) if isinstance(name, str) else name
            if v.name not in self._positions:
                where = ("a stock-kernel (sock_diag) extra" if v.is_stock else
                         f"not in this module's layout ({self.layout.name})")
                raise VariableUnavailable(
                    f"{v.name} is not available on the estats backend: {where}")
            if any(o.name == v.name for o in out):
                raise ValueError(f"variable {v.name} is selected twice")
            out.append(v)
        return out

    def dtype(self, vars: None | str | Iterable[Any] = None) -> np.dtype:
        """The dtype of ``read_all(vars)`` rows: identity, metadata, then the variables."""
        fields: list[Any] = list(mib.IDENTITY_FIELDS) + META_FIELDS
        fields += [(v.name, v.dtype) for v in self._select(vars)]
        return np.dtype(fields, align=True)

    def _reader(self, vars: Any, identity_only: bool = False) -> tuple[Reader, Any]:
        key = ("ids",) if identity_only else (
            None if vars is None else (vars,) if isinstance(vars, str)
            else tuple(v if isinstance(v, str) else v.name for v in vars))
        reader = self._readers.get(key)
        if reader is None:
            if identity_only:
                dt = np.dtype(list(mib.IDENTITY_FIELDS) + META_FIELDS, align=True)
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
            self._buffers[key] = np.empty(0, dtype=dt)
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

    @staticmethod
    def _client_side(rows: np.ndarray, filter: Any, states: Any, family: Any) -> np.ndarray:
        # The module filters only by activity; ports, addresses, states and families are
        # applied here, vectorised, with the same semantics as the kernel's bytecode.
        if filter is None and states is None and family is None:
            return rows
        keep = _filter.mask(filter, rows)
        if states is not None:
            mask_bits = parse_states(states)
            wanted = {rfc for bit, rfc in _KERNEL_BIT_TO_RFC.items() if mask_bits >> bit & 1}
            keep &= np.isin(rows["state"], list(wanted))
        if family is not None:
            fam = {"inet": socket.AF_INET, "inet6": socket.AF_INET6, 4: socket.AF_INET,
                   6: socket.AF_INET6}.get(family, family)
            keep &= rows["family"] == fam
        return rows if keep.all() else rows[keep]

    # -- the API ---------------------------------------------------------------------
    def read_all(self, vars: None | str | Iterable[Any] = None, *, filter: Any = None,
                 out: np.ndarray | None = None, states: Any = None, family: Any = None,
                 active_within: float | None = None) -> np.ndarray:
        """One row per connection: identity, timestamp, metadata, one column per variable.

        ``active_within`` (ms) asks the module for connections active that recently (its
        TIMESTAMP token filter). ``filter``/``states``/``family`` as on sock_diag.
        """
        reader, key = self._reader(vars)
        arr, n, _ = reader.read_all(self._buffers[key] if out is None else out,
                                    self._token(active_within))
        if out is None:
            self._buffers[key] = arr
        rows = arr[:n]
        self._settle_time(reader, rows)
        return self._client_side(rows, filter, states, family)

    def reader(self, vars: Any = None, *, filter: Any = None, states: Any = None,
               family: Any = None) -> Any:
        """``read(out) -> rows`` for one fixed selection (see SockDiagAgent.reader)."""
        def read(out: np.ndarray) -> np.ndarray:
            return self.read_all(vars, filter=filter, states=states, family=family, out=out)
        return read

    def list_conns(self, *, filter: Any = None, states: Any = None, family: Any = None,
                   active_within: float | None = None) -> np.ndarray:
        """Every connection's identity (LIST_CONNS; state needs no extra request here)."""
        reader, _ = self._reader(None, identity_only=True)
        arr, n, _ = reader.list_conns(None, self._token(active_within))
        rows = arr[:n].copy()
        if filter is None and states is None and family is None:
            return rows
        return self._client_side(rows, filter, states, family)

    def read_vars(self, cid: int, vars: None | str | Iterable[Any] = None) -> np.void:
        """One connection's record (READ_VARS). Raises FlowNotFound when it has gone."""
        rows, problems = self.read_many([cid], vars)
        if int(cid) in problems:
            raise problems[int(cid)]
        return rows[0]

    def read_many(self, cids: Iterable[int], vars: None | str | Iterable[Any] = None
                  ) -> tuple[np.ndarray, dict[int, Exception]]:
        """READ_VARS for a watch list: all requests in one send where the socket allows.

        Returns the rows of the connections that answered, and for the others the
        exception explaining why (FlowNotFound, PermissionError).
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

    def available(self, rows: np.ndarray, name: str) -> np.ndarray:
        """Per row: did the module report ``name``'s table in that message?"""
        if name in _ALWAYS:
            return np.ones(len(rows), dtype=bool)
        v = mib.lookup(name)
        if v.name not in self._positions:
            return np.zeros(len(rows), dtype=bool)
        table = self._positions[v.name][0]
        return (rows["present"] & (1 << table)) != 0

    def closed(self, vars: Any = None) -> np.ndarray:
        raise errors.Web10GError(
            "the Web10G module sends no end-of-flow notifications (its multicast group is "
            "never used); set net.ipv4.estats_delay a little above your sampling interval so "
            "closed connections stay readable for one more read_all()")
