"""The replay backend: an agent whose samples come from a recording.

``web10g.open(replay=PATH)``. The recording's header names the backend that made it;
that backend's ``replay_decoder(header)`` decodes the kept kernel replies with the same
C code as a live read, so every variable, filter, tool, sampler and monitor works
offline. The rows are those of the recording backend (same dtype, same ``present``
meaning); ``agent.backend`` names it and ``agent.capabilities.live`` is False.

A recording is untrusted input: whatever is wrong with the file (header, frames, the
replies in them) raises :class:`~web10g.errors.RecordingError` naming the offset, and
memory is bounded by one frame (see web10g.recording).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from web10g import errors, mib
from web10g import rows as _rows
from web10g.backends.base import BaseAgent, Capabilities, Vars

Frame = tuple[int, list[bytes], list[int]]


class ReplayAgent(BaseAgent):
    """Each ``read_all()`` returns the next recorded sample; ``list_conns()`` and
    ``read_vars()`` look into the current one. At the end, :class:`EndOfRecording` (an
    EOFError). ``clone()`` opens the recording again from its start, so a sampler
    (its own clone) replays every sample as fast as it can be decoded.
    """

    replay = True

    def __init__(self, path: str | os.PathLike) -> None:
        from web10g.backends import backend_class
        from web10g.recording import Recording

        self.recording = Recording(path)           # the header is validated there
        cls = backend_class(self.recording.backend)
        try:
            self._decoder = cls.replay_decoder(  # type: ignore[attr-defined]
                self.recording.header)
        except errors.RecordingError:
            raise
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            # validate_header should have caught it; a file's fault either way
            raise errors.RecordingError(
                f"the header's {self.recording.backend} decoder inputs are not usable "
                f"({type(exc).__name__}: {exc})", 12) from None
        self.backend = self._decoder.backend
        #: the estats module layout the recording was made with (None for sock_diag)
        self.layout = getattr(self._decoder, "layout", None)
        self.meta_fields = self._decoder.meta_fields
        live = cls.capabilities
        self.capabilities = Capabilities(
            live=False, kernel_filter=False, default_states=live.default_states,
            uid_inode=live.uid_inode, present_unit=live.present_unit)
        # states=None means what it meant live: a backend that kept only the open states
        # by default (sock_diag in the kernel, ebpf in its decoder) gets the same filter
        # here, even when the recording sampled states="all".
        self._default_states = live.default_states
        self._frames: Iterator[Frame] = self.recording.frames()
        self._current: Frame | None = None
        self._seen: dict[Any, int] = {}
        self.samples = 0
        self.notes: list[str] = []

    # -- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        self._frames.close()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"<web10g agent backend={self.backend} replay={self.recording.path!r}>"

    def clone(self) -> ReplayAgent:
        """The same recording, from its first sample."""
        return ReplayAgent(self.recording.path)

    # -- columns ---------------------------------------------------------------------
    def variables(self) -> list[mib.Variable]:
        return self._decoder.variables()  # type: ignore[no-any-return]

    def _unavailable_reason(self, v: mib.Variable) -> str:
        return f"{v.name} is not in this {self.backend} recording"

    def _presence(self, selected: list[mib.Variable]) -> _rows.Presence | None:
        return self._decoder.presence(selected)  # type: ignore[no-any-return]

    # -- samples ---------------------------------------------------------------------
    def _next(self) -> Frame:
        try:
            self._current = next(self._frames)
        except StopIteration:
            raise errors.EndOfRecording(
                f"the recording {self.recording.path} has no more samples (after "
                f"{self.samples})") from None
        self.samples += 1
        return self._current

    def _decode(self, frame: Frame, dtype: np.dtype, out: np.ndarray | None,
                filter: Any, states: Any, family: Any) -> np.ndarray:
        filtering = (filter is not None or states is not None or family is not None
                     or self._default_states)
        target = self._target(dtype, out, filtering, self._seen.get(dtype, 0))
        try:
            arr, n = self._decoder.decode(frame, dtype, target)
        except errors.RecordingError:
            raise
        except errors.MalformedReply as exc:
            # the recorded replies (or the header's decoder inputs) are damaged
            raise errors.RecordingError(f"a recorded sample does not decode ({exc})",
                                        self.recording.frame_offset) from None
        self._seen[dtype] = n
        keep = _rows.select(arr[:n], filter, states, family,
                            default_states=self._default_states)
        return self._deliver(arr, n, keep, out, target)

    def read_all(self, vars: Vars = None, *, filter: Any = None,
                 out: np.ndarray | None = None, states: Any = None, family: Any = None,
                 **_: Any) -> np.ndarray:
        """The next recorded sample (as ``read_all`` of the recording backend)."""
        dtype = self.dtype(vars)
        return self._decode(self._next(), dtype, out, filter, states, family)

    def samples_iter(self, vars: Vars = None, **kw: Any) -> Iterator[np.ndarray]:
        """Every remaining sample, in order."""
        while True:
            try:
                yield self.read_all(vars, **kw)
            except errors.EndOfRecording:
                return

    def list_conns(self, *, filter: Any = None, states: Any = None,
                   family: Any = None, **_: Any) -> np.ndarray:
        """The identities in the current sample (the first, before any read_all)."""
        frame = self._current or self._next()
        return self._decode(frame, self.dtype([]), None, filter, states, family)

    def read_vars(self, cid: int, vars: Vars = None) -> np.void:
        """One flow's row in the current sample (the first, before any read_all)."""
        frame = self._current or self._next()
        rows = self._decode(frame, self.dtype(vars), None, None, "all", None)
        hit = np.flatnonzero(rows["cid"] == int(cid))
        if not hit.size:
            raise errors.FlowNotFound(f"flow {cid} is not in the current recorded sample")
        return rows[hit[0]]

    def write_var(self, cid: int, name: str, value: Any) -> None:
        raise errors.NotSupported("a recording cannot be written to")

    def kill(self, cid: int) -> None:
        raise errors.NotSupported("a recording's flows cannot be aborted")

    def _no_closed_reason(self) -> str:
        return ("a recording holds samples only; closed flows are the cids that stop "
                "appearing between samples")
