"""Which process owns a socket: one pass over ``/proc/*/fd``, then vectorised lookups.

The kernel's sock_diag records carry a socket's inode (``idiag_inode``) but not its owner.
The only stock way to find the owner is to read every ``/proc/PID/fd/N`` link and keep
those that read ``socket:[INODE]``. That costs one ``readlink`` per open descriptor on the
system (a few microseconds each), so it is done only when asked, once per call, and the
result is an :class:`OwnerMap` that answers whole arrays of inodes at numpy speed.

What the walk cannot see: processes whose ``fd`` directory the caller may not read (other
users' processes, unless root), sockets with no descriptor (TIME_WAIT, orphans, request and
kernel sockets), and threads that unshared their descriptor table (only thread-group
leaders are listed in ``/proc``). Those inodes look up as unknown (-1 / None).
"""
from __future__ import annotations

import errno
import itertools
import os
from collections.abc import Iterable

import numpy as np

__all__ = ["OwnerMap", "socket_owners"]

# A process can exit, or close a descriptor, at any moment during the walk; and a
# non-root caller cannot read other users' fd directories. All of these just mean "not
# visible": skip silently.
_SKIP = (FileNotFoundError, PermissionError, ProcessLookupError)

_PREFIX = "socket:["
_STAT_READ = 1024  # /proc/PID/stat: field 22 comes well within this
_NAME_READ = 256  # "Name:\t" + 15 chars, each escaped at most to 2 (\n, \\): well within


class OwnerMap:
    """Socket inode -> owning process (pid and process name), for vectorised lookups.

    ``inodes`` (sorted, unique, uint64), ``pids`` (int32) and ``command_ids`` (int32, index
    into ``commands``, -1 when the name could not be read) are parallel arrays. A socket
    held by several processes (inherited across fork, or passed over a unix socket) is
    attributed to the OLDEST of them (the earliest start time in ``/proc/PID/stat``), which
    usually is the process that created it; when two started in the same clock tick, to
    the one that is the other's parent, then to the lower pid. (Not simply the lowest
    pid: once pids wrap around, a child forked now can have a lower pid than its parent,
    and any child holds all of its parent's descriptors between fork() and exec().)
    ``commands`` holds each process name once (``Name:`` of ``/proc/PID/status``, at most
    15 characters, with the kernel's escapes such as ``\\n`` left in).
    """

    __slots__ = ("inodes", "pids", "command_ids", "commands")

    def __init__(self, inodes: np.ndarray, pids: np.ndarray, command_ids: np.ndarray,
                 commands: list[str]) -> None:
        self.inodes = inodes
        self.pids = pids
        self.command_ids = command_ids
        self.commands = commands

    @classmethod
    def empty(cls) -> OwnerMap:
        """A map that knows no socket."""
        return cls(np.empty(0, np.uint64), np.empty(0, np.int32), np.empty(0, np.int32), [])

    def _index(self, inodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in self.inodes, found mask) for a flat uint64 array."""
        if len(self.inodes) == 0 or inodes.size == 0:
            return np.zeros(inodes.shape, np.intp), np.zeros(inodes.shape, bool)
        pos = np.searchsorted(self.inodes, inodes)
        np.minimum(pos, len(self.inodes) - 1, out=pos)
        return pos, self.inodes[pos] == inodes

    def lookup(self, inodes: np.ndarray | Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(pids, command_ids)``: int32 arrays shaped like ``inodes``.

        -1 marks an inode with no known owner (or, in ``command_ids``, a process whose
        name could not be read); ``self.commands[command_ids[i]]`` is the name.
        """
        q = np.asarray(inodes if isinstance(inodes, np.ndarray) else list(inodes))
        if q.size and q.dtype.kind not in "iu":
            raise TypeError(f"socket inodes must be integers, not {q.dtype}")
        shape = q.shape
        # Negative values wrap to huge ones, which no socket has: they come back as -1.
        flat = q.astype(np.uint64, copy=False).ravel()
        pids = np.full(flat.shape, -1, np.int32)
        cmds = np.full(flat.shape, -1, np.int32)
        pos, found = self._index(flat)
        if found.any():
            hit = pos[found]
            pids[found] = self.pids[hit]
            cmds[found] = self.command_ids[hit]
        return pids.reshape(shape), cmds.reshape(shape)

    def _one(self, inode: int) -> int:
        """Position of one inode, or -1."""
        if inode < 0:
            return -1
        pos, found = self._index(np.array([inode], np.uint64))
        return int(pos[0]) if found[0] else -1

    def pid_of(self, inode: int) -> int | None:
        """The owning pid of one socket inode, or None when unknown."""
        i = self._one(inode)
        return None if i < 0 else int(self.pids[i])

    def command_of(self, inode: int) -> str | None:
        """The owning process's name for one socket inode, or None when unknown."""
        i = self._one(inode)
        if i < 0 or self.command_ids[i] < 0:
            return None
        return self.commands[self.command_ids[i]]

    def __contains__(self, inode: object) -> bool:
        return isinstance(inode, (int, np.integer)) and self._one(int(inode)) >= 0

    def __len__(self) -> int:
        """The number of distinct socket inodes with a known owner."""
        return len(self.inodes)

    def __repr__(self) -> str:
        nproc = len(np.unique(self.pids))
        return f"<OwnerMap {len(self)} sockets of {nproc} processes>"


def _socket_inodes(fd_dir: str) -> list[int]:
    """The socket inodes behind one process's descriptors ([] if it vanished/is hidden)."""
    try:
        dfd = os.open(fd_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except _SKIP:
        return []
    try:
        try:
            names = os.listdir(dfd)
        except _SKIP:
            return []
        # readlink relative to the open directory: the kernel then resolves only the last
        # component instead of the whole /proc/PID/fd/N path (measured: a fifth less time).
        readlink = os.readlink
        links: list[str] = []
        append = links.append
        for name in names:
            try:
                append(readlink(name, dir_fd=dfd))
            except _SKIP:
                continue  # closed (or the process exited) since listdir
    finally:
        os.close(dfd)
    return [int(link[8:-1]) for link in links if link.startswith(_PREFIX)]


def _read_small(path: str, size: int = _NAME_READ) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except _SKIP:
        return None
    try:
        return os.read(fd, size)
    except _SKIP:
        return None
    finally:
        os.close(fd)


def _process_name(pid_dir: str) -> str | None:
    """``Name:`` from status (what ps and the original tool show), else ``comm``."""
    data = _read_small(f"{pid_dir}/status")
    if data and data.startswith(b"Name:"):
        value = data[5:].split(b"\n", 1)[0]
        # Only the one separating tab goes: the name itself may end in spaces.
        if value.startswith(b"\t"):
            value = value[1:]
        # 15 bytes can cut a UTF-8 character in half: keep the rest readable.
        return value.decode("utf-8", "replace")
    data = _read_small(f"{pid_dir}/comm")
    if data:
        return data.split(b"\n", 1)[0].decode("utf-8", "replace")
    return None


def _start_and_parent(pid_dir: str) -> tuple[int, int] | None:
    """(start time in clock ticks after boot, parent pid) from ``stat``; None if gone."""
    data = _read_small(f"{pid_dir}/stat", _STAT_READ)
    if not data:
        return None
    # The name, in parentheses, may itself contain ") ": the fields follow the last ")".
    # After it: state, ppid, ... starttime is the 20th (field 22 of proc(5)).
    rest = data[data.rfind(b")") + 1:].split()
    try:
        return int(rest[19]), int(rest[1])
    except (IndexError, ValueError):
        return None


def _oldest(pids: list[int], proc: str,
            seen: dict[int, tuple[int, int] | None]) -> int:
    """Which of several processes holding one socket it is attributed to (OwnerMap).
    ``seen`` keeps each process's stat for the other sockets of the same walk."""
    for p in pids:
        if p not in seen:
            seen[p] = _start_and_parent(f"{proc}/{p}")
    info = {p: seen[p] for p in pids}
    never = float("inf")  # exited since the walk, or hidden: last choice
    start = {p: (never if i is None else i[0]) for p, i in info.items()}
    first = min(start.values())
    tied = [p for p in pids if start[p] == first]
    parents = {info[p][1] for p in tied if info[p] is not None}
    return min(tied, key=lambda p: (p not in parents, p))


def _as_set(inodes: np.ndarray | Iterable[int]) -> set[int]:
    if isinstance(inodes, np.ndarray):
        if inodes.size and inodes.dtype.kind not in "iu":
            raise TypeError(f"socket inodes must be integers, not {inodes.dtype}")
        return set(inodes.ravel().tolist())  # tolist: plain ints hash fast
    return {int(i) for i in inodes}


def socket_owners(inodes: np.ndarray | Iterable[int] | None = None, *,
                  proc: str = "/proc") -> OwnerMap:
    """Walk ``PROC/[0-9]*/fd`` once and map socket inodes to their owning processes.

    ``inodes`` limits the result (and the process-name reads) to those sockets; None keeps
    every socket found. Processes that exit or deny access during the walk are skipped.
    ``proc`` is the procfs mount to read (a different one, e.g. of another pid namespace,
    or a test tree).
    """
    want = None if inodes is None else _as_set(inodes)
    if want is not None and not want:
        return OwnerMap.empty()
    try:
        entries = os.listdir(proc)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, f"{proc} does not exist: socket owners are read from procfs; "
            "mount it (mount -t proc proc /proc) or pass proc=") from None

    chunks: list[list[int]] = []   # socket inodes, one list per process kept
    pids: list[int] = []
    name_ids: list[int] = []
    names: dict[str, int] = {}
    for entry in entries:
        if not (entry.isascii() and entry.isdigit()):
            continue  # self, thread-self, sys, net, ...
        socks = _socket_inodes(f"{proc}/{entry}/fd")
        if want is not None and socks:
            socks = [i for i in socks if i in want]
        if not socks:
            continue
        # Read the name now, right after the fd walk of this pid, so that a pid reused
        # by a new process cannot lend its name to the old one's sockets.
        name = _process_name(f"{proc}/{entry}")
        chunks.append(socks)
        pids.append(int(entry))
        name_ids.append(-1 if name is None else names.setdefault(name, len(names)))

    if not chunks:
        return OwnerMap.empty()
    counts = np.fromiter(map(len, chunks), np.intp, len(chunks))
    total = int(counts.sum())
    ino = np.fromiter(itertools.chain.from_iterable(chunks), np.uint64, total)
    pid = np.repeat(np.asarray(pids, np.int32), counts)
    cid = np.repeat(np.asarray(name_ids, np.int32), counts)
    # Sort by inode, then pid: one group of rows per inode (duplicates from dup()ed
    # descriptors land side by side).
    order = np.lexsort((pid, ino))
    ino, pid, cid = ino[order], pid[order], cid[order]
    first = np.empty(total, bool)
    first[0] = True
    np.not_equal(ino[1:], ino[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], total)
    out_pid, out_cid = pid[starts], cid[starts]
    # Inodes held by more than one process (rare: inherited or passed sockets) go to the
    # oldest holder; stat is read for those processes only.
    seen: dict[int, tuple[int, int] | None] = {}
    for g in np.flatnonzero(pid[ends - 1] != pid[starts]).tolist():
        s, e = int(starts[g]), int(ends[g])
        holders = sorted(set(pid[s:e].tolist()))
        row = s + int(np.flatnonzero(pid[s:e] == _oldest(holders, proc, seen))[0])
        out_pid[g], out_cid[g] = pid[row], cid[row]
    return OwnerMap(ino[starts], out_pid, out_cid, list(names))


def owners_of(inodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pid, command) for each socket inode, from one pass over /proc: pid -1 and
    command '' where no process holds it (TIME-WAIT, orphans, inode 0) or /proc hides
    it (other users' processes, for an unprivileged caller)."""
    inodes = np.asarray(inodes)
    owners = socket_owners(inodes[inodes != 0])
    pids, cmd_ids = owners.lookup(inodes)
    names = np.array(owners.commands + [""], dtype=object)
    return pids, names[np.where(cmd_ids < 0, len(owners.commands), cmd_ids)]
