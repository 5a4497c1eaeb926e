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
import struct
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from web10g import errors, mib
from web10g import filter as _filter
from web10g import netns as _netns
from web10g import rows as _rows
from web10g._sockdiag import ACCECN_BITFIELD, DERIVED, FIELD_NAMES, Dumper, FlowTable
from web10g.backends.base import BaseAgent, Capabilities, Vars, _vars_key

NETLINK_SOCK_DIAG = 4
CAP_NET_ADMIN = 12

# Metadata after timestamp and present: tcp_info's length as the kernel sent it.
META_FIELDS = [("tcp_info_len", "u2")]
_ALWAYS = frozenset(_rows.IDENTITY_NAMES) | {"timestamp", "present", "tcp_info_len"}

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

SKNLGRP_INET_TCP_DESTROY = 1
SKNLGRP_INET6_TCP_DESTROY = 3
# Room for bursts of closes between two reads (~400 bytes each); the kernel drops
# notifications beyond the queue and we report how often that happened.
CLOSED_QUEUE_BYTES = 32 << 20

_DUMP_RETRIES = 3


VariableUnavailable = errors.VariableUnavailable
parse_states = _rows.parse_states


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


class SockDiagAgent(BaseAgent):
    """Reads every TCP flow of one network namespace through NETLINK_SOCK_DIAG.

    Use :func:`web10g.open`. Threads may share it (calls are serialised, see
    :mod:`web10g.backends.base`); ``clone()`` gives a thread its own for parallel reads.
    """

    backend = "sock_diag"
    meta_fields = META_FIELDS
    capabilities = Capabilities(
        live=True, closed_flows=True, owners=True, kill=True,
        writable=frozenset(("LimRwin", "cc_algorithm", "max_pacing_rate_bytes_per_s",
                            "notsent_lowat_bytes")),
        recordable=True, kernel_filter=True, default_states=True, namespaces=True,
        uid_inode=True,
        present_unit="reply part (tcp_info, meminfo, congestion, ...)")

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
        self._plans: dict[tuple, tuple[Dumper, list[int]]] = {}
        self._last: np.ndarray | None = None
        self._tcp_info_len = 0
        self._closed_watch: ClosedWatch | None = None
        self.notes: list[str] = []

    # -- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        self._plans.clear()
        if self._closed_watch is not None:
            self._closed_watch.close()
            self._closed_watch = None
        self._sock.close()

    def __repr__(self) -> str:
        where = f" netns={self.netns}" if self.netns else ""
        return f"<web10g agent backend=sock_diag{where}>"

    def clone(self) -> SockDiagAgent:
        """An independent agent on the same namespace (for another thread)."""
        return SockDiagAgent(netns=self.netns)

    # -- columns ---------------------------------------------------------------------
    def variables(self) -> list[mib.Variable]:
        """Every variable this backend can supply (the columns of ``vars=None``)."""
        return _variables()

    def _unavailable_reason(self, v: mib.Variable) -> str:
        return (f"{v.name} is not available on the sock_diag backend: a stock kernel "
                f"does not export it ({v.sock_diag.note or v.sock_diag.source or 'n/a'}). "
                "It needs a Web10G kernel (backend='estats'); "
                "web10g getmib --backend sock_diag lists what a stock kernel supplies")

    def _presence(self, selected: list[mib.Variable]) -> _rows.Presence:
        return presence(selected)

    # -- plans: one Dumper per selection ----------------------------------------------
    def _plan(self, vars: Vars, filter: Any, states: Any, family: Any,
              identity_only: bool = False) -> tuple[Dumper, list[int]]:
        key = (_vars_key(vars), filter if isinstance(filter, (str, type(None))) else repr(filter),
               states if not isinstance(states, list) else tuple(states), family,
               identity_only)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        families = _rows.parse_family(family)
        if identity_only:
            dt = _rows.row_dtype(list(_rows.IDENTITY_FIELDS) + [("bound_ifindex", "u4")], None)
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
        flags = self._flags
        if any(v.sock_diag.match == "derived" for v in selected):
            flags |= DERIVED
        dumper = Dumper(self._sock, dt, ext=ext, states=_rows.parse_states(states),
                        bytecode=_filter.compile(filter), families=families,
                        flags=flags, sysctls=self._sysctls)
        if len(self._plans) >= 32:          # a program cycling through selections
            self._plans.pop(next(iter(self._plans)))
        plan = (dumper, [0])                # [rows seen last time]: sizes the next result
        self._plans[key] = plan
        return plan

    def _note_privileges(self, groups: set[str | None]) -> None:
        if self.privileged:
            return
        for group, attr in PRIVILEGED_GROUPS.items():
            if group in groups:
                note = (f"{attr} is sent only to a requester with CAP_NET_ADMIN: its "
                        "columns read as unavailable; run as root or grant CAP_NET_ADMIN "
                        "to get them")
                if note not in self.notes:
                    self.notes.append(note)
                    warnings.warn(note, RuntimeWarning, stacklevel=4)

    def _run(self, dumper: Dumper, out: np.ndarray | None) -> tuple[np.ndarray, int]:
        # inet_diag never sets NLM_F_DUMP_INTR today; a kernel that does gets retried.
        for attempt in range(_DUMP_RETRIES):
            try:
                return dumper.dump(out)
            except errors.DumpInterrupted:
                if attempt == _DUMP_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    # -- the API ---------------------------------------------------------------------
    def read_all(self, vars: Vars = None, *, filter: Any = None,
                 out: np.ndarray | None = None, states: Any = None,
                 family: Any = None) -> np.ndarray:
        """One row per flow: identity, timestamp, metadata, one column per variable.

        ``vars`` None = every variable this backend has. ``filter`` is an ss-style string
        ("dport = :5201 or sport = :22") or a :mod:`web10g.filter` expression, run by the
        kernel. ``states`` selects TCP states (default: the open connections, see
        :data:`web10g.rows.DEFAULT_STATES`), ``family`` 'inet'/'inet6'. Without ``out``
        the result is a new array the caller owns. With ``out`` (an array of
        ``agent.dtype(vars)``) the result is a view of its first rows, or of a larger
        array when the flows outnumbered it (``result.base``): nothing is allocated
        but that growth.
        """
        dumper, seen = self._plan(vars, filter, states, family)
        # out=None: the Dumper sizes a new array, or reuses one of an earlier result
        # that nothing refers to any more (no page faults for a fresh array each call)
        arr, n = self._run(dumper, out)
        seen[0] = n
        rows = _rows.as_rows(arr[:n])
        if filter is None and states is None and family is None:
            self._last = rows
        if n and self._tcp_info_len == 0:
            self._tcp_info_len = int(rows["tcp_info_len"].max())
        return rows

    def reader(self, vars: Vars = None, *, filter: Any = None, states: Any = None,
               family: Any = None) -> Any:
        """``read(out) -> rows``: read_all for one fixed selection with its plan resolved
        once, for loops that sample many times (no per-call lookup or allocation beyond
        the returned view)."""
        dumper, _ = self._plan(vars, filter, states, family)
        dump = dumper.dump

        def read(out: np.ndarray) -> np.ndarray:
            arr, n = dump(out)
            return _rows.as_rows(arr[:n])
        return read

    def list_conns(self, *, filter: Any = None, states: Any = None,
                   family: Any = None) -> np.ndarray:
        """The identity of every flow (no statistics: the cheapest dump there is)."""
        dumper, seen = self._plan(None, filter, states, family, identity_only=True)
        arr, n = self._run(dumper, self._fresh(dumper.dtype, seen[0]))
        seen[0] = n
        rows = _rows.as_rows(arr[:n])
        if filter is None and states is None and family is None:
            self._last = rows
        return rows

    def read_vars(self, cid: int, vars: Vars = None) -> np.void:
        """One flow's record, by an exact kernel lookup (not a dump).

        Raises :class:`web10g.errors.FlowNotFound` when the flow has gone.
        """
        cid = int(cid)
        ident = self._find(cid)
        if ident is None:
            raise errors.FlowNotFound(f"flow {cid} does not exist in this network namespace "
                                      "(it closed, or never existed)")
        dumper, _ = self._plan(vars, None, None, None)
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
        # A cookie can name any socket, listening and TIME-WAIT ones included.
        for attempt in range(2):
            if self._last is None or attempt:
                dumper, seen = self._plan(None, None, "all", None, identity_only=True)
                arr, n = self._run(dumper, self._fresh(dumper.dtype, seen[0]))
                seen[0] = n
                self._last = arr[:n]
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

    # -- writes, owners, ends of flows ---------------------------------------------------
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

    def closed(self, vars: Vars = None) -> np.ndarray:
        """Final statistics of the flows destroyed since the previous call.

        The first call subscribes to the kernel's destroy notifications (and returns
        what ended since ``watch_closed()``, if it was called); flows that end between
        two samples still deliver their last values here. A flow aborted with SO_LINGER
        0 is the exception: the kernel zeroes its counters and its remote port before
        notifying, so its row says only that it ended (no tcp_info in ``present``; see
        ``web10g.rows.restore_identity``).
        """
        self.watch_closed()
        assert self._closed_watch is not None
        return self._closed_watch.read(vars)

    def watch_closed(self) -> None:
        """Start collecting destroy notifications now (``closed()`` returns them)."""
        if self._closed_watch is None:
            self._closed_watch = ClosedWatch(self)

    # -- recordings -----------------------------------------------------------------------
    def recorder_state(self) -> tuple[dict[str, Any], Any]:
        return {"sysctls": list(self._sysctls), "flags": self._flags}, self._sock

    @staticmethod
    def replay_decoder(header: dict[str, Any]) -> ReplayDecoder:
        return ReplayDecoder(header)


class ClosedWatch:
    """End-of-flow capture: the kernel's sock_diag destroy notifications.

    A NETLINK_SOCK_DIAG socket that joins SKNLGRP_INET_TCP_DESTROY /
    SKNLGRP_INET6_TCP_DESTROY receives one record per destroyed TCP socket of its
    namespace, carrying the final tcp_info (mapping section 5.3); no capability is
    needed. This is the stock kernel's answer to Web10G's estats_delay: flows that end
    between two samples still deliver their last values. The records are decoded by the
    same C decoder as dumps.
    """

    def __init__(self, agent: SockDiagAgent) -> None:
        self._agent = agent
        self._sock = _netns.open_socket(NETLINK_SOCK_DIAG, agent.netns)
        self._sock.set_rcvbuf(CLOSED_QUEUE_BYTES)
        self._sock.join_group(SKNLGRP_INET_TCP_DESTROY)
        self._sock.join_group(SKNLGRP_INET6_TCP_DESTROY)
        self._dumpers: dict[Any, Dumper] = {}
        self.overruns = 0

    def read(self, vars: Vars = None) -> np.ndarray:
        key = _vars_key(vars)
        dumper = self._dumpers.get(key)
        if dumper is None:
            # The decoder config is all a Dumper needs here; it sends no request.
            dumper = self._dumpers[key] = Dumper(
                self._sock, self._agent.dtype(vars), flags=self._agent._flags,
                sysctls=self._agent._sysctls)
        arr, n, overruns = dumper.receive(np.empty(64, dumper.dtype))
        if overruns:
            self.overruns += overruns
            warnings.warn(f"the kernel dropped destroy notifications {overruns} time(s): "
                          "call closed() more often", RuntimeWarning, stacklevel=3)
        out = arr[:n]
        _withhold_disconnected(out)
        return _rows.as_rows(out)

    def close(self) -> None:
        self._sock.close()


def _withhold_disconnected(rows: np.ndarray) -> None:
    """Mark the destroy records of disconnected flows as carrying no statistics.

    A connection aborted with SO_LINGER 0 (or dissolved by connect(AF_UNSPEC)) goes
    through tcp_disconnect() before it is destroyed: the kernel zeroes its counters,
    clears its remote port (and an unbound local address) and only then sends the
    notification. Those zeros are not the flow's final values: a consumer that took
    them as such would see every counter go backwards (a 2**64 byte "increase"). Such
    a record is told apart by a zero remote port with a remote address still set (no
    connection has remote port 0; a listener or a socket never connected has neither).
    Its tcp_info is withheld (``present``), so it says only *that* the flow ended;
    the last sample holds its last values, and rows.restore_identity() its endpoints.
    """
    if not len(rows) or "rem_port" not in (rows.dtype.names or ()):
        return
    gone = (rows["rem_port"] == 0) & rows["rem_addr"].any(axis=1)
    if gone.any():
        rows["present"][gone] &= ~np.asarray(PRESENT_BITS["tcp_info"], rows["present"].dtype)


class ReplayDecoder:
    """Decodes a sock_diag recording's datagrams with the live C decoder."""

    backend = "sock_diag"
    meta_fields = META_FIELDS

    def __init__(self, header: dict[str, Any]) -> None:
        flags, sysctls = header.get("flags", 0), header.get("sysctls", (1, 1, 2))
        if (not isinstance(flags, int) or not isinstance(sysctls, list | tuple)
                or len(sysctls) != 3 or not all(isinstance(x, int) for x in sysctls)):
            raise errors.RecordingError("the header's sock_diag flags/sysctls are not "
                                        "integers", 12)
        self._flags = flags & 0xFFFFFFFF
        self._sysctls = tuple(int(x) & 0xFF for x in sysctls)
        self._flowtables: dict[Any, FlowTable] = {}

    def variables(self) -> list[mib.Variable]:
        return _variables()

    def presence(self, selected: list[mib.Variable]) -> _rows.Presence:
        return presence(selected)

    def decode(self, frame: tuple[int, list[bytes], list[int]], dtype: np.dtype,
               out: np.ndarray | None) -> tuple[np.ndarray, int]:
        from web10g._sockdiag import decode_datagrams

        t_ns, dgrams, times = frame
        flows = self._flowtables.setdefault(dtype, FlowTable())
        derived = any(v.sock_diag.match == "derived" for v in _variables()
                      if v.name in (dtype.names or ()))
        return decode_datagrams(dgrams, dtype, timestamp_ns=t_ns, sysctls=self._sysctls,
                                flags=self._flags | (DERIVED if derived else 0),
                                flows=flows, timestamps=times, out=out)

    def reset(self) -> None:
        self._flowtables.clear()


def _variables() -> list[mib.Variable]:
    return [v for v in mib.variables(backend="sock_diag") if v.name != "tcp_info_len"]


def presence(selected: list[mib.Variable]) -> _rows.Presence:
    """What `present` means in sock_diag rows: the reply part that carries each
    variable, and the tcp_info length it needs."""
    bits, need = {}, {}
    for v in selected:
        sd = v.sock_diag
        bit = PRESENT_BITS.get(sd.group or "", 0)
        if bit:
            bits[v.name] = bit
        if sd.tcpi_offset is not None and sd.tcpi_width:
            need[v.name] = sd.tcpi_offset + sd.tcpi_width
    return _rows.Presence("sock_diag", bits, min_len=need, stats_bits=PRESENT_BITS["tcp_info"])


# Row helpers kept importable from here for code written against earlier releases.
available = _rows.available
addresses = _rows.addresses
endpoints = _rows.endpoints

__all__: Sequence[str] = ["SockDiagAgent", "ClosedWatch", "ReplayDecoder", "presence",
                          "FIELD_NAMES"]
