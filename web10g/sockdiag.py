"""The sock_diag backend: every TCP flow of a network namespace from stock Linux.

One NETLINK_SOCK_DIAG socket, reused; one :class:`~web10g._sockdiag.Dumper` per
(columns, filter, states, families) selection, cached, each with its own reusable output
buffer. The per-flow work happens in C (csrc/w10g_sockdiag.c); this module only
chooses columns, extensions and filters, and turns kernel errors into clear ones.
"""
from __future__ import annotations

import errno
import os
import platform
import socket
import struct
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from web10g import errors, mib
from web10g import filter as _filter
from web10g import netns as _netns
from web10g._netlink import format_addresses
from web10g._sockdiag import ACCECN_BITFIELD, DERIVED, FIELD_NAMES, Dumper

NETLINK_SOCK_DIAG = 4
CAP_NET_ADMIN = 12

# Metadata columns every sock_diag row carries after the identity block: when the
# datagram was read, which parts of the record the kernel sent, and tcp_info's length.
META_FIELDS = [("timestamp", "i8"), ("present", "u2"), ("tcp_info_len", "u2")]
IDENTITY_NAMES = tuple(name for name, _ in mib.IDENTITY_FIELDS)
_ALWAYS = frozenset(IDENTITY_NAMES) | {"timestamp", "present", "tcp_info_len"}

# `present` bits (csrc/w10g_sockdiag.h) by the registry's source group.
PRESENT_BITS = {
    "tcp_info": 1 << 0, "client": 1 << 0, "meminfo": 1 << 1, "skmeminfo": 1 << 2,
    "cong": 1 << 3, "tos": 1 << 4, "class_id": 1 << 5, "shutdown": 1 << 6, "mark": 1 << 7,
    "cgroup": 1 << 8, "sockopt": 1 << 9, "bbr": 1 << 10, "dctcp": 1 << 11, "vegas": 1 << 12,
}
# idiag_ext bits each group needs (mapping section 1.2). inet_diag fields, SHUTDOWN,
# MARK, CGROUP_ID and SOCKOPT come without asking.
EXT_BITS = {
    "tcp_info": 0x02, "client": 0x02, "meminfo": 0x01, "skmeminfo": 0x40, "cong": 0x08,
    "tos": 0x10 | 0x20, "class_id": 0x20, "bbr": 0x04, "dctcp": 0x04, "vegas": 0x04,
    "shutdown": 0x80,
}
# Columns only a CAP_NET_ADMIN requester is sent (mapping section 1.6).
PRIVILEGED_GROUPS = {"class_id": "INET_DIAG_CLASS_ID", "mark": "INET_DIAG_MARK"}

# Kernel TCP states (the idiag_states bits) by the names people use for them.
KERNEL_STATES = {
    "established": 1, "synsent": 2, "synrecv": 3, "synreceived": 3, "finwait1": 4,
    "finwait2": 5, "timewait": 6, "close": 7, "closed": 7, "closewait": 8, "lastack": 9,
    "listen": 10, "closing": 11, "newsynrecv": 12, "boundinactive": 13,
}
STATE_GROUPS = {
    "all": 0xFFF,
    "connected": 0xFFF & ~((1 << 10) | (1 << 7)),              # not listening, not closed
    "synchronized": 0xFFF & ~((1 << 10) | (1 << 7) | (1 << 2)),  # ... nor SYN-SENT
    "bucket": (1 << 3) | (1 << 6),                               # SYN-RECV and TIME-WAIT
    # what a Web10G kernel lists: established until destroyed (no listeners, no
    # TIME-WAIT minisockets, no handshakes); the classic tools' default
    "open": (1 << 1) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11),
}
FAMILIES = {None: (socket.AF_INET, socket.AF_INET6), "inet": (socket.AF_INET,),
            "inet6": (socket.AF_INET6,), 4: (socket.AF_INET,), 6: (socket.AF_INET6,),
            socket.AF_INET: (socket.AF_INET,), socket.AF_INET6: (socket.AF_INET6,)}

_DUMP_RETRIES = 3


class VariableUnavailable(errors.Web10GError, LookupError):
    """A variable the chosen backend cannot supply on this kind of kernel."""


def _kernel_version() -> tuple[int, int]:
    try:
        major, minor = platform.release().split(".")[:2]
        return int(major), int("".join(c for c in minor if c.isdigit()) or 0)
    except ValueError:
        return (0, 0)


def _has_capability(cap: int) -> bool:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def _read_sysctl(name: str, default: int) -> int:
    try:
        with open(f"/proc/sys/net/ipv4/{name}") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def parse_states(states: None | int | str | Iterable[str | int]) -> int:
    """The idiag_states bit mask for a state selection.

    ``None`` = every classic state; an int is taken as the kernel bit mask itself; names
    ("established", "time-wait", "listen", ... and the groups "connected",
    "synchronized", "bucket", "all") may be given alone or in an iterable.
    """
    if states is None:
        return STATE_GROUPS["all"]
    if isinstance(states, (int, np.integer)):
        if not 0 < int(states) <= 0xFFFFFFFF:
            raise ValueError(f"states bit mask {states!r} is out of range")
        return int(states)
    items = [states] if isinstance(states, str) else list(states)
    mask = 0
    for item in items:
        key = str(item).lower().replace("-", "").replace("_", "").replace(" ", "")
        if key in STATE_GROUPS:
            mask |= STATE_GROUPS[key]
        elif key in KERNEL_STATES:
            mask |= 1 << KERNEL_STATES[key]
        else:
            from difflib import get_close_matches

            close = get_close_matches(key, list(KERNEL_STATES) + list(STATE_GROUPS), n=3)
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown TCP state {item!r}{hint}")
    if not mask:
        raise ValueError("the state selection is empty")
    return mask


class SockDiagAgent:
    """Reads every TCP flow of one network namespace through NETLINK_SOCK_DIAG.

    Use :func:`web10g.open`. Not thread-safe: one agent per thread (netlink allows one
    request at a time per socket).
    """

    backend = "sock_diag"

    def __init__(self, netns: Any = None) -> None:
        self.netns = _netns.resolve(netns)
        self._sock = _netns.open_socket(NETLINK_SOCK_DIAG, netns)
        with _netns.entered(netns):
            # Read inside the namespace: /proc/sys/net shows the reader's namespace.
            self._sysctls = (_read_sysctl("tcp_timestamps", 1), _read_sysctl("tcp_sack", 1),
                             _read_sysctl("tcp_ecn", 2))
        self.kernel = _kernel_version()
        self.privileged = _has_capability(CAP_NET_ADMIN)
        self._flags = ACCECN_BITFIELD if self.kernel >= (7, 0) else 0
        self._plans: dict[tuple, tuple[Dumper, list[np.ndarray]]] = {}
        self._last: np.ndarray | None = None
        self._tcp_info_len = 0
        self._closed_watch: Any = None
        self.notes: list[str] = []

    # -- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        self._plans.clear()
        if self._closed_watch is not None:
            self._closed_watch.close()
            self._closed_watch = None
        self._sock.close()

    def __enter__(self) -> SockDiagAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f" netns={self.netns}" if self.netns else ""
        return f"<web10g agent backend=sock_diag{where}>"

    def clone(self) -> SockDiagAgent:
        """An independent agent on the same namespace (for another thread)."""
        return SockDiagAgent(netns=self.netns)

    def sampler(self, vars: Any = None, *, interval: float, **kw: Any) -> Any:
        """A background sampler of this agent's flows: see :class:`web10g.sampler.Sampler`."""
        from web10g.sampler import Sampler

        return Sampler(self, vars, interval=interval, **kw)

    # -- columns ---------------------------------------------------------------------
    def variables(self) -> list[mib.Variable]:
        """Every variable this backend can supply (the columns of ``vars=None``)."""
        return [v for v in mib.variables(backend="sock_diag") if v.name != "tcp_info_len"]

    def _select(self, vars: None | str | Iterable[str]) -> list[mib.Variable]:
        if vars is None:
            return self.variables()
        names = [vars] if isinstance(vars, str) else list(vars)
        out: list[mib.Variable] = []
        seen: set[str] = set()
        for name in names:
            if name in _ALWAYS:
                continue        # identity and metadata columns are always there
            v = mib.lookup(name) if isinstance(name, str) else name
            if v.name in _ALWAYS:
                continue
            if not v.sock_diag.available:
                raise VariableUnavailable(
                    f"{v.name} is not available on the sock_diag backend: a stock kernel "
                    f"does not export it ({v.sock_diag.note or v.sock_diag.source or 'n/a'}). "
                    "It needs a Web10G kernel (backend='estats'); "
                    "web10g getmib --backend sock_diag lists what a stock kernel supplies")
            if v.name in seen:
                raise ValueError(f"variable {v.name} is selected twice")
            seen.add(v.name)
            out.append(v)
        return out

    def dtype(self, vars: None | str | Iterable[str] = None) -> np.dtype:
        """The dtype of ``read_all(vars)`` rows: identity, metadata, then the variables."""
        fields: list[Any] = list(mib.IDENTITY_FIELDS) + META_FIELDS
        fields += [(v.name, v.dtype) for v in self._select(vars)]
        return np.dtype(fields, align=True)

    # -- plans: one Dumper per selection ----------------------------------------------
    def _plan(self, vars: Any, filter: Any, states: Any, family: Any,
              identity_only: bool = False) -> tuple[Dumper, list[np.ndarray]]:
        vkey = None if vars is None else (vars,) if isinstance(vars, str) else tuple(
            v if isinstance(v, str) else v.name for v in vars)
        key = (vkey, filter if isinstance(filter, (str, type(None))) else repr(filter),
               states if not isinstance(states, list) else tuple(states), family,
               identity_only)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        if identity_only:
            dt = np.dtype(list(mib.IDENTITY_FIELDS) + [("bound_ifindex", "u4")], align=True)
            selected: list[mib.Variable] = []
            ext = 0
        else:
            selected = self._select(vars)
            dt = self.dtype(vars)
            groups = {v.sock_diag.group for v in selected} | {"tcp_info"}
            ext = 0
            for g in groups:
                ext |= EXT_BITS.get(g or "", 0)
            self._note_privileges(groups)
        if family not in FAMILIES:
            raise ValueError(f"family must be None, 'inet', 'inet6', 4 or 6, not {family!r}")
        flags = self._flags
        if any(v.sock_diag.match == "derived" for v in selected):
            flags |= DERIVED
        dumper = Dumper(self._sock, dt, ext=ext, states=parse_states(states),
                        bytecode=_filter.compile(filter), families=FAMILIES[family],
                        flags=flags, sysctls=self._sysctls)
        if len(self._plans) >= 32:          # a program cycling through selections
            self._plans.pop(next(iter(self._plans)))
        plan = (dumper, [np.empty(0, dtype=dt)])
        self._plans[key] = plan
        return plan

    def _note_privileges(self, groups: set[str | None]) -> None:
        if self.privileged:
            return
        for group, attr in PRIVILEGED_GROUPS.items():
            if group in groups:
                note = (f"{attr} is sent only to a requester with CAP_NET_ADMIN: its "
                        "columns read as unavailable (present bit clear); run as root or "
                        "grant CAP_NET_ADMIN to get them")
                if note not in self.notes:
                    self.notes.append(note)
                    warnings.warn(note, RuntimeWarning, stacklevel=4)

    def _run(self, dumper: Dumper, out: np.ndarray) -> tuple[np.ndarray, int]:
        # inet_diag never sets NLM_F_DUMP_INTR today; a kernel that does gets retried.
        for attempt in range(_DUMP_RETRIES):
            try:
                return dumper.dump(out)
            except errors.DumpInterrupted:
                if attempt == _DUMP_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    # -- the API ---------------------------------------------------------------------
    def read_all(self, vars: None | str | Iterable[str] = None, *, filter: Any = None,
                 out: np.ndarray | None = None, states: Any = None,
                 family: Any = None) -> np.ndarray:
        """One row per flow: identity, timestamp, metadata, one column per variable.

        ``vars`` None = every variable this backend has. ``filter`` is an ss-style string
        ("dport = :5201 or sport = :22") or a :mod:`web10g.filter` expression, run by the
        kernel. ``states`` selects TCP states (default: all), ``family`` 'inet'/'inet6'.
        ``out`` is a preallocated array of ``agent.dtype(vars)`` to fill; the result is a
        view of its first rows, or of a larger array when the flows outnumbered it (keep
        using ``result.base`` then). Without ``out`` the agent reuses its own buffer, so
        a result is valid until the next call with the same selection: copy it to keep it.
        """
        dumper, buf = self._plan(vars, filter, states, family)
        arr, n = self._run(dumper, buf[0] if out is None else out)
        if out is None:
            buf[0] = arr
        rows = arr[:n]
        if filter is None and states is None and family is None:
            self._last = rows
        if n and self._tcp_info_len == 0:
            self._tcp_info_len = int(rows["tcp_info_len"].max())
        return rows

    def reader(self, vars: Any = None, *, filter: Any = None, states: Any = None,
               family: Any = None) -> Any:
        """``read(out) -> rows``: read_all for one fixed selection with its plan resolved
        once, for loops that sample many times (no per-call lookup or allocation beyond
        the returned view)."""
        dumper, _ = self._plan(vars, filter, states, family)
        dump = dumper.dump

        def read(out: np.ndarray) -> np.ndarray:
            arr, n = dump(out)
            return arr[:n]
        return read

    def list_conns(self, *, filter: Any = None, states: Any = None,
                   family: Any = None) -> np.ndarray:
        """The identity of every flow (no statistics: the cheapest dump there is)."""
        dumper, buf = self._plan(None, filter, states, family, identity_only=True)
        arr, n = self._run(dumper, buf[0])
        buf[0] = arr
        rows = arr[:n].copy()
        if filter is None and states is None and family is None:
            self._last = rows
        return rows

    def read_vars(self, cid: int, vars: None | str | Iterable[str] = None) -> np.void:
        """One flow's record, by an exact kernel lookup (not a dump).

        Raises :class:`web10g.errors.FlowNotFound` when the flow has gone.
        """
        cid = int(cid)
        ident = self._find(cid)
        if ident is None:
            raise errors.FlowNotFound(f"flow {cid} does not exist in this network namespace "
                                      "(it closed, or never existed)")
        dumper, buf = self._plan(vars, None, None, None)
        sockid = struct.pack("!HH", int(ident["local_port"]), int(ident["rem_port"]))
        sockid += ident["local_addr"].tobytes() + ident["rem_addr"].tobytes()
        ifindex = int(ident["bound_ifindex"]) if "bound_ifindex" in ident.dtype.names else 0
        sockid += struct.pack("=IQ", ifindex, cid)
        try:
            arr, n = dumper.lookup(int(ident["family"]), sockid, np.empty(1, dumper.dtype))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESTALE):
                raise errors.FlowNotFound(f"flow {cid} has gone (it closed since it was "
                                          "listed)") from None
            raise
        if n != 1:
            raise errors.FlowNotFound(f"flow {cid} has gone (the kernel returned no record)")
        return arr[0]

    def _find(self, cid: int) -> np.void | None:
        for attempt in range(2):
            if self._last is None or attempt:
                self.list_conns()
            assert self._last is not None
            hit = np.flatnonzero(self._last["cid"] == cid)
            if hit.size:
                return self._last[hit[0]]
        return None

    # -- availability ---------------------------------------------------------------
    @property
    def unavailable(self) -> set[str]:
        """Variables of this backend the running kernel does not provide at all."""
        out = set()
        for v in self.variables():
            sd = v.sock_diag
            if sd.group in PRIVILEGED_GROUPS and not self.privileged:
                out.add(v.name)
            elif v.name in ("ecn_mode", "options2") and self.kernel < (7, 0):
                out.add(v.name)
            elif (self._tcp_info_len and sd.tcpi_offset is not None and sd.tcpi_width
                  and sd.tcpi_offset + sd.tcpi_width > self._tcp_info_len):
                out.add(v.name)
        return out

    def available(self, rows: np.ndarray, name: str) -> np.ndarray:
        """Per row: did the kernel report ``name`` (so a 0 is a real 0)?"""
        if name in _ALWAYS:
            return np.ones(len(rows), dtype=bool)
        v = mib.lookup(name)
        if v.name in self.unavailable:
            return np.zeros(len(rows), dtype=bool)
        return available(rows, v)

    def write_var(self, cid: int, name: str, value: int | str) -> None:
        """Write a tunable of one flow on a stock kernel (web10g.tune): LimRwin
        (TCP_WINDOW_CLAMP), cc_algorithm, max_pacing_rate_bytes_per_s,
        notsent_lowat_bytes — on the owner's socket through pidfd_getfd, which needs
        ptrace rights over the owner. LimCwnd/LimSsthresh/LimMSS raise NotSupported
        saying what would work instead."""
        from web10g import tune

        ident = self._find(int(cid))
        if ident is None:
            raise errors.FlowNotFound(f"flow {cid} does not exist in this network namespace")
        tune.write_var(ident, name, value)

    def kill(self, cid: int) -> None:
        """Abort one flow (SOCK_DESTROY): the peer gets an RST, the owner ECONNABORTED.
        Needs CAP_NET_ADMIN."""
        from web10g import tune

        ident = self._find(int(cid))
        if ident is None:
            raise errors.FlowNotFound(f"flow {cid} does not exist in this network namespace")
        tune.kill(self._sock, ident)

    def owners(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pid, command) of each row's socket, from one pass over /proc.

        pid is -1 and command '' where no process holds the socket (TIME_WAIT, orphans)
        or /proc hides it (other users' processes, for an unprivileged caller).
        """
        from web10g import procfs

        return procfs.owners_of(rows["inode"])

    def closed(self, vars: None | str | Iterable[str] = None) -> np.ndarray:
        """Final statistics of the flows destroyed since the previous call.

        The first call subscribes to the kernel's destroy notifications (and returns
        what ended since the agent was opened, if it subscribed at open); flows that end
        between two samples still deliver their last values here.
        """
        from web10g._closed import ClosedWatch

        if self._closed_watch is None:
            self._closed_watch = ClosedWatch(self, self.netns)
        return self._closed_watch.read(vars)

    def watch_closed(self) -> None:
        """Start collecting destroy notifications now (``closed()`` returns them)."""
        from web10g._closed import ClosedWatch

        if self._closed_watch is None:
            self._closed_watch = ClosedWatch(self, self.netns)


def available(rows: np.ndarray, var: mib.Variable | str) -> np.ndarray:
    """Per row, whether the kernel reported ``var`` in that record (sock_diag rows)."""
    if isinstance(var, str) and var in _ALWAYS:
        return np.ones(len(rows), dtype=bool)
    v = mib.lookup(var) if isinstance(var, str) else var
    sd = v.sock_diag
    bit = PRESENT_BITS.get(sd.group or "", 0)
    ok = (rows["present"] & bit) != 0 if bit else np.ones(len(rows), dtype=bool)
    if sd.tcpi_offset is not None and sd.tcpi_width:
        ok &= rows["tcp_info_len"] >= sd.tcpi_offset + sd.tcpi_width
    return ok


def addresses(rows: np.ndarray, which: str = "local") -> np.ndarray:
    """Addresses of ``rows`` as text ("local" or "rem"), in bulk."""
    if which not in ("local", "rem"):
        raise ValueError("which must be 'local' or 'rem'")
    return format_addresses(rows[f"{which}_addr"], rows["family"])


def endpoints(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """"addr:port" text of both ends ([addr]:port for IPv6), in bulk."""
    res = []
    for side in ("local", "rem"):
        addr = addresses(rows, side)
        v6 = rows["family"] == socket.AF_INET6
        addr = np.where(v6, np.char.add(np.char.add("[", addr), "]"), addr)
        res.append(np.char.add(np.char.add(addr, ":"), rows[f"{side}_port"].astype(str)))
    return res[0], res[1]


__all__: Sequence[str] = ["SockDiagAgent", "VariableUnavailable", "available", "addresses",
                          "endpoints", "parse_states", "FIELD_NAMES"]
