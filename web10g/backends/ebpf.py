"""The ebpf backend: the RFC 4898 MIB on a stock kernel, from BPF instruments.

Root loads the instruments once (``web10g ebpf load``, :mod:`web10g.backends.ebpf_loader`):
sock_ops on the cgroup v2 root and tp_btf tracepoints keep per-socket counters in
``BPF_MAP_TYPE_SK_STORAGE``; a BPF TCP iterator pinned under ``/sys/fs/bpf/web10g/``
emits one fixed-size record per socket (tcp_sock fields through BTF + the counters).
This agent reads that iterator with plain ``open()`` + ``read()`` (no capability, no
libbpf) and decodes the records in C without the GIL (csrc/w10g_ebpf.c). The iterator
walks the reader's network namespace.

Rows: the same identity columns, RFC 4898 names and units as the other backends.
``present`` bits: 1 = the socket is a full tcp_sock (the iterator's fields), 2 = its
event counters run since the flow's start (flows older than the programs read as
unavailable for those), 4 = sequence numbers are shown (root and the flow's owner only).
Writes (LimCwnd, LimRwin), kill and closed() use the BPF syscall on root's pins: root.
"""
from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
import threading
import warnings
from typing import Any

import numpy as np

from web10g import errors, mib
from web10g import netns as _netns
from web10g import rows as _rows
from web10g.backends import ebpf_loader as L
from web10g.backends.base import BaseAgent, Capabilities, Vars, _vars_key

try:
    from web10g import _ebpf
except ImportError:  # an install that did not build the extension
    _ebpf = None  # type: ignore[assignment]

P_INFO, P_COUNTERS, P_SEQ = 1, 2, 4
SEQ_VARS = mib.SEQUENCE_VARS
_STORAGE_HOOKS = frozenset(("sockops", "cong", "retrans", "probe", "sent", "drops"))
_ALL_STATES = 0x3FFF


def _read_sysctl(name: str, default: int) -> int:
    try:
        with open(f"/proc/sys/net/ipv4/{name}") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _variables() -> list[mib.Variable]:
    return mib.variables(backend="ebpf")


def presence(selected: list[mib.Variable]) -> _rows.Presence:
    """What ``present`` means in ebpf rows, per variable."""
    bits = {}
    for v in selected:
        e = v.ebpf
        b = P_INFO if "iter" in e.hooks or not e.hooks else 0  # type: ignore[union-attr]
        if _STORAGE_HOOKS & set(e.hooks):  # type: ignore[union-attr]
            b |= P_COUNTERS
        if v.name in SEQ_VARS:
            b |= P_SEQ | P_INFO
        bits[v.name] = b
    return _rows.Presence("ebpf", bits, stats_bits=P_INFO)


# -- the bpf() syscall, for root's writes and the ring buffer ----------------------------------

_SYS_BPF = 321
_BPF_MAP_LOOKUP_ELEM, _BPF_MAP_UPDATE_ELEM, _BPF_OBJ_GET, _BPF_OBJ_GET_INFO_BY_FD = 1, 2, 7, 15
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, 128)
    rc = _libc.syscall(_SYS_BPF, cmd, buf, 128)
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return int(rc)


def _obj_get(path: str) -> int:
    p = ctypes.create_string_buffer(path.encode())
    try:
        return _bpf(_BPF_OBJ_GET, struct.pack("<QIIi", ctypes.addressof(p), 0, 0, 0))
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES):
            raise errors.MissingCapability(
                exc.errno, f"opening {path} needs the BPF syscall (CAP_BPF): writes, kill "
                "and closed() on the ebpf backend are root's") from None
        if exc.errno == errno.ENOENT:
            raise L.NotLoaded(f"{path} does not exist: the ebpf programs are not loaded "
                              "(web10g ebpf load)") from None
        raise


def _map_max_entries(fd: int) -> int:
    info = ctypes.create_string_buffer(80)
    _bpf(_BPF_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", fd, len(info), ctypes.addressof(info)))
    return int(struct.unpack_from("<5I", info.raw)[4])   # type, id, key, value, max_entries


def _read_fd(fd: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _map_lookup(fd: int, key: bytes, size: int) -> bytes:
    k = ctypes.create_string_buffer(key)
    v = ctypes.create_string_buffer(size)
    _bpf(_BPF_MAP_LOOKUP_ELEM, struct.pack("<IIQQQ", fd, 0, ctypes.addressof(k),
                                           ctypes.addressof(v), 0))
    return v.raw


def _map_update(fd: int, key: bytes, value: bytes) -> None:
    k = ctypes.create_string_buffer(key)
    v = ctypes.create_string_buffer(value)
    _bpf(_BPF_MAP_UPDATE_ELEM, struct.pack("<IIQQQ", fd, 0, ctypes.addressof(k),
                                           ctypes.addressof(v), 0))


class EbpfAgent(BaseAgent):
    """Reads every TCP flow of one network namespace through the pinned BPF iterator.

    Use ``web10g.open("ebpf")`` after root ran ``web10g ebpf load``. One thread at a
    time; ``clone()`` for another.
    """

    backend = "ebpf"
    meta_fields: list[tuple[str, str]] = []

    @classmethod
    def describe_variables(cls) -> str | None:
        from web10g.cli.ebpf import format_getmib  # class and hook of each variable

        return format_getmib()
    capabilities = Capabilities(
        live=True, closed_flows=True, owners=True, kill=True,
        writable=frozenset(("LimCwnd", "LimRwin")), recordable=True, kernel_filter=False,
        default_states=True, namespaces=True, uid_inode=True,
        present_unit="record part (tcp_sock, counters since the flow's start, "
                     "sequence numbers)")

    def __init__(self, netns: Any = None, pin_dir: str | None = None) -> None:
        if _ebpf is None:
            raise L.NotBuilt("the ebpf backend's decoder (web10g._ebpf) is not compiled: "
                             "python setup.py build_ext --inplace")
        reason = L.not_built_reason()
        self.pin_dir = os.path.abspath(
            pin_dir or os.environ.get("WEB10G_EBPF_PIN_DIR") or L.DEFAULT_PIN_DIR)
        self._iter = os.path.join(self.pin_dir, "iter")
        self._fields = os.path.join(self.pin_dir, "fields")
        if reason and not os.path.exists(self._iter):
            raise L.NotBuilt(reason)
        self.netns = _netns.resolve(netns)
        with _netns.entered(netns):
            self._sysctls = (_read_sysctl("tcp_timestamps", 1), _read_sysctl("tcp_sack", 1),
                             _read_sysctl("tcp_ecn", 2))
            self._netns_ino = os.stat("/proc/thread-self/ns/net").st_ino
        self.header = self._header()
        hooks = self.header["hooks"]
        try:
            pins = set(os.listdir(self.pin_dir))
        except OSError:
            pins = None
        if pins is not None:
            for _g, _, bit, _, pin in L.GROUPS:
                if hooks & bit and pin not in pins:
                    hooks &= ~bit
        self.hooks = hooks
        self.hz = self.header["hz"]
        self._unavailable = set(mib.ebpf_availability(hooks)[1]) & {
            v.name for v in _variables()}
        self._decoders: dict[Any, Any] = {}
        self._seen: dict[Any, int] = {}
        self._tap: bytearray | None = None
        self._ring: _Ring | None = None
        #: close records the ring buffer lost (full) since watch_closed(), any namespace
        self.closed_lost = 0
        self._busy = threading.Lock()
        self.notes: list[str] = []
        if self.header["reader_uid"] != 0:
            self.notes.append("sequence numbers (SndUna, SndNxt, SndMax, RcvNxt, SndInitial, "
                              "RecInitial) are shown only for this user's own flows")

    # -- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        self._decoders.clear()
        if self._ring is not None:
            self._ring.close()
            self._ring = None

    def __repr__(self) -> str:
        where = f" netns={self.netns}" if self.netns else ""
        return f"<web10g agent backend=ebpf pins={self.pin_dir}{where}>"

    def clone(self) -> EbpfAgent:
        return EbpfAgent(netns=self.netns, pin_dir=self.pin_dir)

    # -- reading ---------------------------------------------------------------------
    def _open_iter(self, path: str | None = None) -> int:
        # (entering a namespace that is gone raises its own FileNotFoundError, which
        # names the namespace: only the open below means "not loaded")
        path = path or self._iter
        with _netns.entered(self.netns):
            try:
                return L.open_pin(path)            # root's pin, not through a link
            except FileNotFoundError:
                raise L.NotLoaded(L.not_loaded_message(self.pin_dir)) from None
            except L.UnsafePinDir:
                raise
            except PermissionError:
                raise PermissionError(errno.EACCES, f"{path} is readable by root only: "
                                      "run as root, or have root load with 'web10g ebpf "
                                      "load --reader-group GROUP' and join that group") from None

    def _header(self) -> dict[str, Any]:
        fd = self._open_iter()
        try:
            raw = os.read(fd, L.HDR.size)
        finally:
            os.close(fd)
        return L.parse_header(raw)

    def variables(self) -> list[mib.Variable]:
        return _variables()

    def _unavailable_reason(self, v: mib.Variable) -> str:
        e = v.ebpf
        why = (e.note if e else "") or "no source"
        return (f"{v.name} is not available on the ebpf backend ({why}); web10g getmib "
                "--backend ebpf lists each variable with its hook")

    def _presence(self, selected: list[mib.Variable]) -> _rows.Presence:
        return presence(selected)

    @property
    def unavailable(self) -> set[str]:
        """Variables whose hook this kernel refused (or the load left out)."""
        return set(self._unavailable)

    def _decoder(self, vars: Vars, states: Any, family: Any) -> tuple[Any, str]:
        """The decoder of one selection, and the reader pin to read for it."""
        key = (_vars_key(vars), states if not isinstance(states, list) else tuple(states),
               family)
        entry = self._decoders.get(key)
        if entry is None:
            if len(self._decoders) >= 32:
                self._decoders.pop(next(iter(self._decoders)))
            dec = _ebpf.Decoder(
                self.dtype(vars), states=_rows.parse_states(states),
                families=_rows.parse_family(family), sysctls=self._sysctls, hz=self.hz)
            entry = self._decoders[key] = (dec, self.reader_pin(vars))
        return entry

    def reader_pin(self, vars: Vars = None) -> str:
        """The pinned reader that ``read_all(vars)`` reads: ``fields`` when no selected
        variable needs the storage's counters (it skips the per-socket storage lookup, a
        chain of dependent cache misses: about a fifth of a full read), else ``iter``."""
        if self.hooks & L.HOOK_FIELDS and not any(
                _STORAGE_HOOKS & set(v.ebpf.hooks)  # type: ignore[union-attr]
                for v in self._select(vars)):
            return self._fields
        return self._iter

    def _read(self, dec: Any, target: np.ndarray, path: str) -> tuple[np.ndarray, int]:
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this ebpf agent is in use by another thread: clone() it "
                               "for each thread")
        try:
            if path != self._iter and not os.path.exists(path):
                # a reload without the fields reader (an older loader): the full one
                # serves every selection
                self.hooks &= ~L.HOOK_FIELDS
                self._decoders.clear()
                path = self._iter
            fd = self._open_iter(path)
            try:
                arr, n = dec.read(fd, target, keep=self._tap is not None)
            finally:
                os.close(fd)
            if self._tap is not None:
                raw = dec.last_bytes()
                self._tap += struct.pack("<Iq", 8 + len(raw), dec.last_now_ns)
                self._tap += struct.pack("<q", dec.last_offset_ns) + raw
            return arr, n
        finally:
            self._busy.release()

    def read_all(self, vars: Vars = None, *, filter: Any = None,
                 out: np.ndarray | None = None, states: Any = None,
                 family: Any = None) -> np.ndarray:
        """One row per flow (see the module docstring); the ``out=`` contract of every
        backend. ``states``/``family`` are applied by the decoder, ``filter`` (ss-style)
        by the same evaluator the replays use."""
        dec, path = self._decoder(vars, states, family)
        key = dec.dtype
        filtering = filter is not None
        if filtering:
            from web10g import filter as _filter

            _filter.compile(filter)             # a malformed filter fails before reading
        target = self._target(dec.dtype, out, filtering, self._seen.get(key, 0))
        arr, n = self._read(dec, target, path)
        self._seen[key] = n
        keep = _rows.select(arr[:n], filter, None, None, default_states=False) if filtering \
            else None
        return self._deliver(arr, n, keep, out, target)

    def list_conns(self, *, filter: Any = None, states: Any = None,
                   family: Any = None) -> np.ndarray:
        """The identity of every flow."""
        return self.read_all([], filter=filter, states=states, family=family)

    def read_vars(self, cid: int, vars: Vars = None) -> np.void:
        rows = self.read_all(vars, states="all")
        hit = np.flatnonzero(rows["cid"] == int(cid))
        if not hit.size:
            raise errors.FlowNotFound(f"flow {cid} does not exist in this network namespace "
                                      "(it closed, or never existed)")
        return rows[hit[0]]

    def owners(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from web10g import procfs

        return procfs.owners_of(rows["inode"])

    # -- writes and kills (root) ---------------------------------------------------------------
    def _act(self, pin: str, cid: int, op: int, value: int) -> int:
        fd = _obj_get(os.path.join(self.pin_dir, "ctl"))
        try:
            _map_update(fd, struct.pack("<I", 0), struct.pack("<QIIiI", cid, op, value, 0, 0))
            path = os.path.join(self.pin_dir, pin)
            if not os.path.exists(path):
                raise errors.NotSupported(f"the kernel refused the ebpf {pin} program at "
                                          "load time (web10g ebpf status)")
            with _netns.entered(self.netns):
                it = L.open_pin(path)
            try:
                raw = _read_fd(it)
            finally:
                os.close(it)
        finally:
            os.close(fd)
        if len(raw) < 4:
            raise errors.FlowNotFound(f"flow {cid} does not exist in this network namespace")
        return int(struct.unpack_from("<i", raw)[0])

    def write_var(self, cid: int, name: str, value: Any) -> None:
        """LimCwnd (octets; through TCP_BPF_SNDCWND_CLAMP in segments of the current MSS:
        it also sets ssthresh, and under cubic/reno it bounds growth rather than cutting
        a larger cwnd at once; bbr applies it at the next ACK) or LimRwin (TCP_WINDOW_CLAMP).
        Root only (the BPF syscall)."""
        v = mib.lookup(name)
        value = int(value)
        if v.name == "LimCwnd":
            mss = int(self.read_vars(cid, ["CurMSS"])["CurMSS"]) or 536
            segs = min(max(value // mss, 1), 0x7FFFFFFF) if value < 0xFFFFFFFF else 0x7FFFFFFF
            rc = self._act("write", cid, 1, segs)
        elif v.name == "LimRwin":
            rc = self._act("write", cid, 2, min(max(value, 0), 0x7FFFFFFF))
        else:
            raise errors.NotSupported(f"{v.name} is not writable on the ebpf backend "
                                      "(LimCwnd and LimRwin are)")
        if rc < 0:
            raise OSError(-rc, f"bpf_setsockopt for {v.name} failed: {os.strerror(-rc)}")

    def kill(self, cid: int) -> None:
        """Abort one flow (bpf_sock_destroy): the owner gets ECONNABORTED, the peer a
        reset. Root only."""
        rc = self._act("kill", cid, 3, 0)
        if rc < 0:
            raise OSError(-rc, f"bpf_sock_destroy failed: {os.strerror(-rc)}")

    # -- ends of flows -------------------------------------------------------------------------
    def watch_closed(self) -> None:
        """Start collecting close records (the ring buffer; root). One consumer per
        loaded instrument set: two agents watching share (and split) the records."""
        if self._ring is None:
            if not self.hooks & L.HOOK_RING:
                raise errors.NotSupported("the close-record ring buffer was not loaded")
            self._ring = _Ring(os.path.join(self.pin_dir, "closed"),
                               os.path.join(self.pin_dir, "drops"))

    def closed(self, vars: Vars = None) -> np.ndarray:
        """Final statistics (taken at TCP_CLOSE, before tcp_disconnect zeroes counters)
        of the flows of this namespace that closed since the previous call.

        The ring buffer holds about 8,300 records (4 MiB); flows that close while it is
        full are lost, never waited for: the kernel counts them, and this call warns
        (RuntimeWarning) with how many were lost since the previous call (in any
        namespace); ``closed_lost`` is the total since the watch began."""
        self.watch_closed()
        assert self._ring is not None
        raw = self._ring.take()
        lost = self._ring.lost()
        if lost:
            self.closed_lost += lost
            warnings.warn(f"{lost:,} close records were lost since the previous closed(): "
                          "the ebpf ring buffer (4 MiB, about 8,300 flows) was full; call "
                          "closed() more often", RuntimeWarning, stacklevel=2)
        dec = _ebpf.Decoder(self.dtype(vars), states=_ALL_STATES, sysctls=self._sysctls,
                            hz=self.hz)
        arr, n = dec.decode(raw, np.empty(max(16, len(raw) // _ebpf.REC_SIZE), dec.dtype),
                            offset_ns=_ebpf.clock_offset(), netns_ino=self._netns_ino)
        return arr[:n]

    # -- recordings -----------------------------------------------------------------------------
    def recorder_state(self) -> tuple[dict[str, Any], Any]:
        return ({"sysctls": list(self._sysctls), "hz": self.hz, "hooks": self.hooks},
                _Tap(self))

    @staticmethod
    def replay_decoder(header: dict[str, Any]) -> ReplayDecoder:
        return ReplayDecoder(header)


class _Tap:
    """What Recorder taps: the raw iterator bytes of each read."""

    def __init__(self, agent: EbpfAgent) -> None:
        self._agent = agent

    def tap_start(self) -> None:
        self._agent._tap = bytearray()

    def tap_take(self, stop: bool = True) -> bytes:
        raw = bytes(self._agent._tap or b"")
        self._agent._tap = None if stop else bytearray()
        return raw


class _Ring:
    """A consumer of the pinned BPF ring buffer of close records (mmap, no libbpf)."""

    BUSY, DISCARD = 1 << 31, 1 << 30

    def __init__(self, path: str, drops: str | None = None) -> None:
        self._fd = _obj_get(path)
        # the counter of records the programs could not reserve (ring full)
        try:
            self._drops_fd = _obj_get(drops) if drops and os.path.exists(drops) else -1
        except BaseException:
            os.close(self._fd)
            raise
        self._drops_seen = self._drops()
        page = mmap.PAGESIZE
        self.size = _map_max_entries(self._fd)
        self._cons = mmap.mmap(self._fd, page, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._data = mmap.mmap(self._fd, page + 2 * self.size, mmap.MAP_SHARED,
                               mmap.PROT_READ, offset=page)
        self._page = page
        # start now: what closed before the watch is not ours
        self._cons[0:8] = self._data[0:8]

    def take(self) -> bytes:
        cons = struct.unpack_from("<Q", self._cons, 0)[0]
        prod = struct.unpack_from("<Q", self._data, 0)[0]
        mask = self.size - 1
        out = bytearray()
        base = self._page
        while cons < prod:
            hdr_off = base + (cons & mask)
            hdr = struct.unpack_from("<I", self._data, hdr_off)[0]
            if hdr & self.BUSY:
                break
            n = hdr & ~(self.BUSY | self.DISCARD)
            if not hdr & self.DISCARD:
                out += self._data[hdr_off + 8:hdr_off + 8 + n]
            cons += (n + 8 + 7) & ~7
        struct.pack_into("<Q", self._cons, 0, cons)
        return bytes(out)

    def _drops(self) -> int:
        if self._drops_fd < 0:
            return 0
        try:
            raw = _map_lookup(self._drops_fd, struct.pack("<I", 0), 8)
        except OSError:
            return 0
        return int(struct.unpack("<Q", raw)[0])

    def lost(self) -> int:
        """Records lost (ring full) since the previous call."""
        now = self._drops()
        lost, self._drops_seen = now - self._drops_seen, now
        return max(lost, 0)

    def close(self) -> None:
        self._cons.close()
        self._data.close()
        os.close(self._fd)
        if self._drops_fd >= 0:
            os.close(self._drops_fd)


class ReplayDecoder:
    """Decodes an ebpf recording's iterator bytes with the live C decoder."""

    backend = "ebpf"
    meta_fields: list[tuple[str, str]] = []

    def __init__(self, header: dict[str, Any]) -> None:
        sysctls = header.get("sysctls", (1, 1, 2))
        hz = header.get("hz", 0)
        if (not isinstance(hz, int) or not isinstance(sysctls, list | tuple)
                or len(sysctls) != 3 or not all(isinstance(x, int) for x in sysctls)):
            raise errors.RecordingError("the header's ebpf hz/sysctls are not integers", 12)
        self._sysctls = tuple(int(x) & 0xFF for x in sysctls)
        self._hz = hz & 0xFFFFFFFF
        self._decoders: dict[Any, Any] = {}

    def variables(self) -> list[mib.Variable]:
        return _variables()

    def presence(self, selected: list[mib.Variable]) -> _rows.Presence:
        return presence(selected)

    def decode(self, frame: tuple[int, list[bytes], list[int]], dtype: np.dtype,
               out: np.ndarray | None) -> tuple[np.ndarray, int]:
        t_ns, dgrams, times = frame
        dec = self._decoders.get(dtype)
        if dec is None:
            dec = self._decoders[dtype] = _ebpf.Decoder(dtype, states=_ALL_STATES,
                                                        sysctls=self._sysctls, hz=self._hz)
        if not dgrams:
            return dec.decode(b"", out, now_ns=t_ns)
        for d in dgrams:
            if len(d) < 8:
                raise errors.RecordingError("an ebpf datagram is shorter than its clock offset",
                                            0)
        offset = struct.unpack_from("<q", dgrams[0])[0]
        data = b"".join(d[8:] for d in dgrams)
        return dec.decode(data, out, now_ns=times[0] if times else t_ns, offset_ns=offset)

    def reset(self) -> None:
        self._decoders.clear()


__all__ = ["EbpfAgent", "ReplayDecoder", "presence", "SEQ_VARS"]
