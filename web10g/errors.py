"""Exceptions, and the one function that turns an errno into one.

Every error a caller can see is either a builtin ``OSError`` subclass (so ``except
PermissionError`` works as everywhere in Python) or one of the few domain classes below,
each of which also derives from the builtin that fits it. Messages say which call failed
and what to do about it.
"""
from __future__ import annotations

import errno as _errno
import os
import re
from collections.abc import Iterable

__all__ = [
    "Web10GError",
    "FamilyNotFound",
    "DumpInterrupted",
    "ReceiveOverrun",
    "MalformedReply",
    "FlowNotFound",
    "MissingCapability",
    "KernelTimeout",
    "VariableUnavailable",
    "UnknownVariable",
    "UnknownColumn",
    "LayoutMismatch",
    "NotSupported",
    "FilterError",
    "RecordError",
    "RecordingError",
    "EndOfRecording",
    "BackendUnavailable",
    "ToolError",
    "from_errno",
]


class Web10GError(Exception):
    """Base of the package's own exception classes."""


class FamilyNotFound(Web10GError, FileNotFoundError):
    """A generic-netlink family is not registered (its kernel module is not loaded)."""

    def __init__(self, family: str, hint: str | None = None) -> None:
        self.family = family
        msg = f"generic netlink family {family!r} is not registered in this kernel"
        if hint:
            msg += f": {hint}"
        super().__init__(_errno.ENOENT, msg)

    def __str__(self) -> str:
        return self.strerror or ""


class DumpInterrupted(Web10GError, InterruptedError):
    """The kernel flagged a dump as inconsistent (NLM_F_DUMP_INTR); retry it."""


class ReceiveOverrun(Web10GError, OSError):
    """The socket's receive queue overflowed (ENOBUFS): messages were lost."""


class MalformedReply(Web10GError, ValueError):
    """A kernel (or peer) reply does not have the shape the protocol promises."""


class FlowNotFound(Web10GError, LookupError):
    """The flow asked for does not exist (any more)."""


class MissingCapability(Web10GError, PermissionError):
    """The operation needs a capability the process does not have."""


class KernelTimeout(Web10GError, TimeoutError):
    """No reply arrived within the socket's timeout."""


class VariableUnavailable(Web10GError, LookupError):
    """A variable the chosen backend cannot supply on this kind of kernel."""


class BackendUnavailable(Web10GError, RuntimeError):
    """A backend that cannot run here (not built, or the kernel lacks what it needs);
    the message says what to install or enable."""


class UnknownVariable(Web10GError, KeyError, ValueError):
    """A variable name that is in no table; ``suggestions`` holds close spellings."""

    def __init__(self, name: object, suggestions: Iterable[str] = ()) -> None:
        super().__init__(name)
        self.name = name
        self.suggestions = list(suggestions)

    def __str__(self) -> str:  # KeyError.__str__ would repr() the whole message
        msg = f"unknown variable {self.name!r}"
        if self.suggestions:
            msg += "; did you mean: " + ", ".join(self.suggestions) + "?"
        return msg


class UnknownColumn(UnknownVariable):
    """A column name that a rows array does not have (``rows["MARK"]``)."""

    def __str__(self) -> str:
        msg = f"no column {self.name!r} in these rows"
        if self.suggestions:
            msg += "; did you mean: " + ", ".join(self.suggestions) + "?"
        return msg


class LayoutMismatch(Web10GError, ValueError):
    """An INIT variable list that matches no known tcp_estats layout."""

    def __init__(self, message: str, *, nearest: str | None = None,
                 table: str | None = None, index: int | None = None,
                 got: tuple[str, int] | None = None,
                 expected: tuple[str, int] | None = None) -> None:
        super().__init__(message)
        self.nearest, self.table, self.index = nearest, table, index
        self.got, self.expected = got, expected


class NotSupported(Web10GError, NotImplementedError):
    """The kernel offers no way to do this (the message says what would work)."""


_FILTER_CONTEXT = 60        # characters of a filter shown on each side of an error


class FilterError(Web10GError, ValueError):
    """A filter that cannot be parsed or compiled. For text input, ``position`` indexes it."""

    def __init__(self, reason: str, text: str | None = None, position: int | None = None):
        self.reason, self.text, self.position = reason, text, position
        super().__init__(reason)

    def __str__(self) -> str:
        if self.text is None or self.position is None:
            return f"invalid filter: {self.reason}"
        shown = re.sub(r"\s", " ", self.text)  # keep the caret aligned under tabs/newlines
        # a long filter (generated, or hostile) is shown as a window around the position
        start = max(0, self.position - _FILTER_CONTEXT)
        end = min(len(shown), self.position + _FILTER_CONTEXT)
        left, right = ("..." if start else ""), ("..." if end < len(shown) else "")
        caret = len(left) + self.position - start
        return (f"invalid filter: {self.reason} at position {self.position}\n"
                f"  {left}{shown[start:end]}{right}\n  {' ' * caret}^")


class RecordError(MalformedReply):
    """A classic record file that is damaged, truncated or not in the assumed layout."""

    def __init__(self, offset: int, message: str) -> None:
        self.offset = offset
        super().__init__(f"record file, offset {offset} (0x{offset:x}): {message}")


class RecordingError(MalformedReply):
    """A recording that is damaged or truncated; ``offset`` is where."""

    def __init__(self, message: str, offset: int) -> None:
        self.offset = offset
        super().__init__(f"recording, offset {offset}: {message}")


class EndOfRecording(Web10GError, EOFError):
    """A replay has no more samples."""


class ToolError(Web10GError):
    """A failure a command-line tool reports as ``prog: message`` and exit status 1."""


# What to do, by errno, when the call site has nothing more specific to say.
_HINTS: dict[int, str] = {
    _errno.EPERM: "run as root or grant the capability named above",
    _errno.EACCES: "the object belongs to another user: run as its owner or as root",
    _errno.ENOENT: "the object asked for does not exist (any more)",
    _errno.EINVAL: "the kernel rejected the request as malformed; this is a bug in web10g "
    "or an unexpected kernel: please report it with the kernel version",
    _errno.EBUSY: "another dump is still running on this socket: use one socket per thread",
    _errno.ENOBUFS: "the socket's receive queue overflowed and messages were lost: "
    "read more often or enlarge the receive buffer",
    _errno.EOPNOTSUPP: "this kernel does not support the operation "
    "(a kernel option or module is missing)",
    _errno.EPROTONOSUPPORT: "this kernel lacks the netlink protocol: "
    "load its module (for sock_diag: modprobe inet_diag tcp_diag)",
    _errno.ENOSPC: "a reply was larger than the receive buffer and was truncated",
    _errno.EPROTO: "a reply did not match the request (stale messages on the socket)",
    _errno.ESRCH: "a reply came from an unexpected netlink port",
    _errno.EAGAIN: "no reply arrived in time: the kernel (or peer) is not answering",
    _errno.EBADMSG: "the reply is malformed",
}

# errno -> the class to raise when no domain class is asked for.
_CLASSES: dict[int, type[OSError]] = {
    _errno.EINTR: DumpInterrupted,
    _errno.ENOBUFS: ReceiveOverrun,
    _errno.EAGAIN: KernelTimeout,
    _errno.ETIMEDOUT: KernelTimeout,
    _errno.EBADMSG: MalformedReply,  # type: ignore[dict-item]
}


def from_errno(
    err: int,
    call: str,
    *,
    detail: str | None = None,
    hint: str | None = None,
    capability: str | None = None,
) -> Exception:
    """Return (not raise) the exception for ``err`` reported by ``call``.

    ``err`` may be given with either sign (netlink reports negative errnos). ``detail``
    is extra text from the kernel (the extended-ack message); ``hint`` replaces the
    default advice; ``capability`` names the capability an EPERM means is missing and
    makes the result a :class:`MissingCapability`.
    """
    err = abs(int(err))
    strerror = os.strerror(err)
    name = _errno.errorcode.get(err, str(err))
    msg = f"{call} failed: {strerror} ({name})"
    if detail:
        msg += f": {detail}"
    if capability and err in (_errno.EPERM, _errno.EACCES):
        advice = hint or f"this needs {capability}: run as root or grant {capability}"
        return MissingCapability(err, f"{msg}. {advice}")
    default = hint or _HINTS.get(err)
    if default:
        msg += f". {default}"
    cls = _CLASSES.get(err)
    if cls is MalformedReply:
        return MalformedReply(msg)
    if cls is not None:
        return cls(err, msg)
    # OSError(errno, msg) picks the builtin subclass itself: PermissionError for
    # EPERM/EACCES, FileNotFoundError for ENOENT, InterruptedError, ...
    return OSError(err, msg)
