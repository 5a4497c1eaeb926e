"""Network namespaces: name them, enter them, and open sock_diag sockets inside them.

A NETLINK_SOCK_DIAG socket sees only the TCP sockets of the network namespace it was
created in, and keeps that namespace for its whole life. To watch another namespace the
socket is therefore created while the calling thread is inside it (``setns(2)``), and the
thread then switches back (see :func:`open_socket`).

A namespace (the ``netns`` argument everywhere) is given as:

* ``None``: the calling thread's current namespace (nothing is switched);
* an ``int``: a process id, meaning that process's namespace (``/proc/PID/ns/net``);
* a ``str`` without ``/``: a name made by ``ip netns add NAME`` (``/run/netns/NAME``);
* a ``str`` or path-like with ``/``: any namespace file, e.g. ``/proc/PID/task/TID/ns/net``
  or a bind mount made by another tool.

Threads: ``setns`` moves only the calling thread, so one Python thread entering a namespace
briefly does not disturb the others (they keep theirs, sockets already open keep theirs).
Inside the block everything the thread creates belongs to the namespace: sockets, child
processes and new threads started from it. Do not ``await`` or ``yield`` inside
:func:`entered`: other coroutines resumed on the same thread would run inside the namespace.

Privilege: entering a namespace other than one's own needs ``CAP_SYS_ADMIN``; the resulting
:class:`~web10g.errors.MissingCapability` names the namespace. Reading the namespace of a
process one may not ptrace fails with ``PermissionError``.
"""
from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from typing import Union

from . import errors
from ._netlink import CLONE_NEWNET_FLAG, NetlinkSocket, setns

__all__ = ["NetnsSpec", "resolve", "entered", "open_socket", "inode", "names", "RUN_DIRS"]

#: What a ``netns`` argument may be (see the module docstring).
NetnsSpec = Union[str, int, "os.PathLike[str]", None]

#: Where ``ip netns`` keeps named namespaces, searched in this order. iproute2 uses
#: /var/run/netns, which on current systems is a symlink to /run/netns.
RUN_DIRS: tuple[str, ...] = ("/run/netns", "/var/run/netns")

_PTRACE_HINT = ("a process's namespace files need ptrace access to it: the same user, or root "
                "(CAP_SYS_PTRACE) in a user namespace that owns the process")
_SEARCH_HINT = ("a directory on the way may not be searched by this user: run as root (or "
                "with CAP_DAC_READ_SEARCH), or make the file reachable")
_HOW_TO = "list named namespaces with 'ip netns list', create one with 'ip netns add NAME'"


def _thread_ns_path() -> str:
    """The calling thread's own namespace file (not the process leader's)."""
    # /proc/thread-self exists since Linux 3.17; the task path works everywhere.
    if os.path.exists("/proc/thread-self"):
        return "/proc/thread-self/ns/net"
    return f"/proc/self/task/{threading.get_native_id()}/ns/net"


def _describe(netns: NetnsSpec, path: str) -> str:
    """How to name the namespace in a message: the way the caller gave it, and its file."""
    if isinstance(netns, int):
        return f"the network namespace of process {netns} ({path})"
    given = os.fsdecode(os.fspath(netns))  # type: ignore[arg-type]
    if given == path:
        return f"network namespace {path}"
    return f"network namespace {given!r} ({path})"


def _hint_for(path: str) -> str:
    """What reading ``path`` takes: ptrace access for /proc/PID/..., else directory access."""
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == "proc" and (parts[2].isdigit()
                                                   or parts[2] in ("self", "thread-self")):
        return _PTRACE_HINT
    return _SEARCH_HINT


def _exists(netns: NetnsSpec, path: str) -> bool:
    """Whether the namespace file is there; one that is there but may not be looked at
    raises PermissionError ("permission denied", naming what it takes), not "missing"."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except PermissionError as e:
        raise PermissionError(
            e.errno, f"permission denied: cannot look at {_describe(netns, path)}; "
            f"{_hint_for(path)}") from None
    return True


def resolve(netns: NetnsSpec) -> str | None:
    """Return the namespace file for ``netns``, or None for the current namespace.

    Raises ``FileNotFoundError`` for a name or path that does not exist (the message says
    how to list and create namespaces), ``PermissionError`` for one this process may not
    look at (the message says what it takes), ``ProcessLookupError`` for a pid with no
    process, ``TypeError``/``ValueError`` for arguments that cannot name a namespace.
    """
    if netns is None:
        return None
    if isinstance(netns, bool):  # bool is an int: refuse it rather than read pid 0/1
        raise TypeError("netns must be a name, a path, a pid or None, not a bool")
    if isinstance(netns, int):
        return _pid_path(netns)
    if not isinstance(netns, (str, bytes, os.PathLike)):
        raise TypeError(
            f"netns must be a name, a path, a pid or None, not {type(netns).__name__}")
    given = os.fsdecode(os.fspath(netns))
    if not given:
        raise ValueError("netns must not be an empty string: pass None for the current "
                         "namespace")
    if "/" in given:
        path = os.path.abspath(given)
        if not _exists(netns, path):
            raise FileNotFoundError(
                errno.ENOENT, f"network namespace file {given!r} does not exist; {_HOW_TO}, "
                "or give /proc/PID/ns/net of a process inside it")
        return path
    if given in (".", ".."):
        raise ValueError(f"{given!r} is not a namespace name")
    for d in RUN_DIRS:
        path = os.path.join(d, given)
        if _exists(netns, path):
            return path
    hint = ""
    if given.isdigit():
        hint = f" (to use the namespace of process {given}, pass the pid as an int)"
    raise FileNotFoundError(
        errno.ENOENT, f"no network namespace named {given!r} in {' or '.join(RUN_DIRS)}"
        f"{hint}; {_HOW_TO}")


def _pid_path(pid: int) -> str:
    if pid <= 0:
        raise ValueError(f"netns pid must be positive, not {pid}")
    if not os.path.exists(f"/proc/{pid}"):
        raise ProcessLookupError(
            errno.ESRCH, f"no process with pid {pid}, so no network namespace to use; "
            "check the pid (it may have exited)")
    return f"/proc/{pid}/ns/net"


def _open(netns: NetnsSpec, path: str) -> int:
    """Open a namespace file, turning the errors into ones that name the namespace."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if isinstance(netns, int):  # exited between resolve() and here
            raise ProcessLookupError(
                errno.ESRCH, f"process {netns} exited before its network namespace could "
                "be opened") from None
        raise FileNotFoundError(
            errno.ENOENT, f"{_describe(netns, path)} vanished before it could be opened; "
            f"{_HOW_TO}") from None
    except PermissionError as e:
        # /proc/PID/ns/* needs ptrace-read access to the process.
        raise PermissionError(
            e.errno,
            f"permission denied: cannot open {_describe(netns, path)}; {_hint_for(path)}",
        ) from None


def _same_file(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _setns(fd: int, what: str) -> None:
    """setns(fd, CLONE_NEWNET) with messages that name the namespace."""
    try:
        setns(fd, CLONE_NEWNET_FLAG)
    except errors.MissingCapability as e:
        raise errors.MissingCapability(
            e.errno, f"permission denied: cannot enter {what}: entering another network "
            "namespace (setns) needs CAP_SYS_ADMIN; run as root (or grant CAP_SYS_ADMIN)"
        ) from e
    except OSError as e:
        if e.errno == errno.EINVAL:
            # Not an nsfs file of type net: a regular file, another namespace type, or a
            # stale /run/netns entry whose bind mount is gone.
            raise OSError(
                errno.EINVAL, f"cannot enter {what}: it is not a network namespace file "
                "(a /proc/PID/ns/net link or a live 'ip netns' entry)") from e
        raise


@contextlib.contextmanager
def entered(netns: NetnsSpec) -> Iterator[None]:
    """Run the block with THIS THREAD in ``netns``, and always switch back after it.

    ``None`` and the thread's current namespace are no-ops (and need no privilege). Blocks
    nest: each one returns to the namespace the thread was in when it started.
    """
    path = resolve(netns)
    if path is None:
        yield
        return
    target = _open(netns, path)
    try:
        # Remember where this thread is now (not where the process leader is): nested
        # blocks and threads that entered elsewhere must come back to their own place.
        home = os.open(_thread_ns_path(), os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        os.close(target)
        raise
    try:
        if _same_file(target, home):
            # Already there: switching would only demand CAP_SYS_ADMIN for nothing.
            os.close(target)
            target = -1
            yield
            return
        _setns(target, _describe(netns, path))
        os.close(target)
        target = -1
        try:
            yield
        finally:
            try:
                setns(home, CLONE_NEWNET_FLAG)
            except OSError as e:
                # Should not happen (we had the right to leave), but never let the thread
                # go on silently in the wrong namespace.
                raise RuntimeError(
                    f"could not switch this thread back to its network namespace after "
                    f"{_describe(netns, path)}: {e}") from e
    finally:
        if target >= 0:
            os.close(target)
        os.close(home)


def open_socket(protocol: int, netns: NetnsSpec = None, **kw: object) -> NetlinkSocket:
    """Open a :class:`NetlinkSocket` inside ``netns``; it keeps that namespace for life.

    ``kw`` goes to :class:`NetlinkSocket` (``timeout``, ``rcvbuf``, ``groups``, ...). The
    calling thread is back in its own namespace when this returns.
    """
    with entered(netns):
        return NetlinkSocket(protocol, **kw)  # type: ignore[arg-type]


def inode(netns: NetnsSpec = None) -> int:
    """The namespace's inode number: equal numbers mean the same namespace.

    ``None`` means the calling thread's current namespace.
    """
    path = resolve(netns)
    if path is None:
        path = _thread_ns_path()
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        if isinstance(netns, int):
            raise ProcessLookupError(
                errno.ESRCH, f"process {netns} exited before its network namespace could "
                "be read") from None
        raise
    except PermissionError as e:
        raise PermissionError(
            e.errno,
            f"permission denied: cannot read {_describe(netns, path)}; {_hint_for(path)}",
        ) from None


def names() -> list[str]:
    """The names of the namespaces made by ``ip netns add`` (sorted, no duplicates)."""
    found: set[str] = set()
    for d in RUN_DIRS:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, PermissionError):
            found.update(os.listdir(d))
    return sorted(found)
