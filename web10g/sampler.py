"""Sampling at a fixed rate into a preallocated ring of snapshots, on a background thread.

``agent.sampler(vars, interval=0.01)`` opens its own agent (netlink sockets are one
request at a time, so the thread must not share the caller's), then on a deadline
schedule of the monotonic clock reads every flow into the next slot of a ring. Each
slot keeps its array across laps, so steady-state sampling allocates nothing per sample;
the dumps run without the GIL. Missed deadlines, dropped samples and failed reads are
counted and kept, never hidden; a failed read is a snapshot with ``error`` set and
sampling goes on.

Ring memory is bounded: ``max_bytes`` (default 256 MiB) caps the ring, so the number of
snapshots kept is ``min(capacity, max_bytes // slot size)``, where a slot holds the flows
the first read found (plus a quarter, and a slot grows when flows outnumber it).

Prefaulting (``prefault=None``, the default, decides by the lap): when one pass through
the ring takes at most a minute, every slot is allocated and its pages touched before
sampling starts (a page fault, or the kernel compacting memory for a huge page, in the
first pass stalled a 100 Hz sampler by tens of ms); for slower rings, where memory
would be committed long before it is used, each slot is allocated and faulted in one
sample ahead, in the idle time after a read. ``prefault=True``/``False`` force either.

On a recording (``agent.capabilities.live`` is False) the sampler replays every sample
in order as fast as it can decode them (each row keeps its recorded time) and stops at
the recording's end: ``finished`` is then True.
"""
from __future__ import annotations

import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_MAX_BYTES = 256 << 20
PREFAULT_LAP_S = 60.0      # prefault=None: prefault the ring when one lap takes at most this

@dataclass
class Snapshot:
    """One sample: its rows (a view into the ring: copy it to keep it past a lap), when it
    was due and taken, how long it took, and the error of a failed read."""

    seq: int
    deadline: float            # monotonic seconds the sample was due
    started: float             # monotonic seconds the read began
    duration: float            # seconds the read took
    rows: np.ndarray
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class SamplerStats:
    samples: int = 0           # reads done (including failed ones)
    failed: int = 0            # reads that raised
    missed: int = 0            # deadlines skipped because a read ran late
    dropped: int = 0           # snapshots overwritten before the reader took them
    waited: float = 0.0        # seconds the sampler waited for a full ring (overwrite=False)
    # the last 1000 read times, in a preallocated ring (no allocation per sample)
    _durations: np.ndarray = field(default_factory=lambda: np.zeros(1000))

    def record(self, took: float) -> None:
        self._durations[self.samples % len(self._durations)] = took
        self.samples += 1

    @property
    def durations(self) -> np.ndarray:
        n = min(self.samples, len(self._durations))
        return self._durations[:n]

    @property
    def achievable_hz(self) -> float:
        """Samples per second the reads allow (median read time)."""
        if not self.samples:
            return float("nan")
        med = float(np.median(self.durations))
        return 1.0 / med if med > 0 else float("inf")

    def __repr__(self) -> str:
        return (f"SamplerStats(samples={self.samples}, failed={self.failed}, "
                f"missed={self.missed}, dropped={self.dropped}, waited={self.waited:.3f}, "
                f"achievable_hz={self.achievable_hz:.1f})")


class Sampler:
    """A background sampler; use as a context manager or call start()/stop()."""

    def __init__(self, agent: Any, vars: Any = None, *, interval: float,
                 filter: Any = None, states: Any = None, capacity: int = 1000,
                 overwrite: bool = True, strict: bool = True,
                 max_bytes: int = DEFAULT_MAX_BYTES, prefault: bool | None = None) -> None:
        if not interval > 0:
            raise ValueError("interval must be a positive number of seconds")
        if capacity < 2:
            raise ValueError("capacity must be at least 2 snapshots")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.interval = float(interval)
        self.capacity = int(capacity)
        self.overwrite = overwrite
        self.vars = vars
        self.filter = filter
        self.states = states
        self.stats = SamplerStats()
        self.max_bytes = int(max_bytes)
        self.live = bool(agent.capabilities.live)
        self.finished = False                    # a replay reached its end
        self._source = agent
        self._agent = agent.clone()              # the thread's own sockets
        self.dtype = self._agent.dtype(vars)
        self._read = self._agent.reader(vars, filter=filter, states=states)
        self._slots: list[np.ndarray | None] = [None] * capacity
        self._slot_rows = 64
        empty = np.empty(0, dtype=self.dtype)
        self._meta = [Snapshot(-1, 0.0, 0.0, 0.0, empty) for k in range(capacity)]
        self._head = 0                           # next slot to write
        self._tail = 0                           # oldest snapshot not yet taken by read()
        self._count = 0                          # snapshots written
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probe(strict, prefault)

    @property
    def ring_bytes(self) -> int:
        """Bytes the ring's slots hold now."""
        return sum(a.nbytes for a in self._slots if a is not None)

    def _probe(self, strict: bool, prefault: bool | None) -> None:
        """One read before starting: sizes the slots, and an interval shorter than a read
        is reported now, with the rate the flow count allows."""
        t0 = time.perf_counter()
        rows = self._read(np.empty(64, dtype=self.dtype))
        took = time.perf_counter() - t0
        # Size the slots for the flows there are (plus room to grow), so a lap of the
        # ring reuses memory instead of allocating it sample by sample; the byte budget
        # decides how many snapshots the ring keeps.
        self._slot_rows = max(64, int(len(rows) * 1.25) + 64)
        slot_bytes = self._slot_rows * self.dtype.itemsize
        self.capacity = max(2, min(self.capacity, self.max_bytes // slot_bytes))
        del self._slots[self.capacity:], self._meta[self.capacity:]
        if prefault is None:
            prefault = self.live and self.capacity * self.interval <= PREFAULT_LAP_S
        self.prefaulted = bool(prefault)
        for i in range(self.capacity if prefault else 1):
            self._ready(i)
        if not self.live:
            # The probe took the recording's first sample: start again from the top.
            self._agent.close()
            self._agent = self._source.clone()
            self._read = self._agent.reader(self.vars, filter=self.filter, states=self.states)
            return
        if took > self.interval:
            msg = (f"an interval of {self.interval * 1000:g} ms is too short for "
                   f"{len(rows)} flows: one read takes {took * 1000:.1f} ms, so at most "
                   f"about {1 / took:.0f} samples per second are achievable")
            if strict:
                self._agent.close()
                raise ValueError(msg + "; use a longer interval, a filter, or fewer "
                                 "variables (or strict=False to sample as fast as it can)")
            warnings.warn(msg, RuntimeWarning, stacklevel=3)

    def _slot(self, i: int) -> np.ndarray:
        arr = self._slots[i]
        if arr is None:
            arr = self._slots[i] = np.empty(self._slot_rows, dtype=self.dtype)
        return arr

    def _ready(self, i: int) -> None:
        """Allocate slot ``i`` if needed and fault its pages in (one write per page)."""
        if self._slots[i] is None:
            self._slot(i).view(np.uint8)[::4096] = 0

    # -- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        start = time.monotonic()
        slot = 0
        stats = self.stats
        while not self._stop.is_set():
            deadline = start + slot * self.interval if self.live else time.monotonic()
            delay = deadline - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            with self._cond:
                if self._count - self._tail >= self.capacity:
                    if self.overwrite:
                        self._tail += 1
                        stats.dropped += 1
                    else:
                        t0 = time.monotonic()
                        while (self._count - self._tail >= self.capacity
                               and not self._stop.is_set()):
                            self._cond.wait(0.1)
                        stats.waited += time.monotonic() - t0
                        if self._stop.is_set():
                            break
                i = self._count % self.capacity
            started = time.monotonic()
            error = None
            buf = self._slot(i)
            try:
                rows = self._read(buf)
                if rows.base is not None and rows.base is not buf:
                    self._slots[i] = rows.base     # the slot grew: keep the larger array
            except EOFError:                       # a replay's end: done, not a failure
                self.finished = True
                with self._cond:
                    self._stop.set()
                    self._cond.notify_all()
                break
            except Exception as exc:  # noqa: BLE001 - a failed sample is recorded, not fatal
                error = f"{type(exc).__name__}: {exc}"
                rows = buf[:0]
                stats.failed += 1
            took = time.monotonic() - started
            stats.record(took)
            with self._cond:
                snap = self._meta[i]               # reused: no allocation per sample
                snap.seq, snap.deadline, snap.started = self._count, deadline, started
                snap.duration, snap.rows, snap.error = took, rows, error
                self._count += 1
                self._cond.notify_all()
            slot += 1
            self._ready((i + 1) % self.capacity)    # the next slot: now, not in its read
            now = time.monotonic()
            if self.live and now > start + (slot + 1) * self.interval:  # a period late
                behind = int((now - start) // self.interval) - slot
                stats.missed += behind
                slot += behind

    # -- control ---------------------------------------------------------------------
    def start(self) -> Sampler:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="web10g-sampler",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        self._agent.close()

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading ---------------------------------------------------------------------
    def wait(self, n: int = 1, timeout: float | None = None) -> bool:
        """Block until ``n`` more snapshots than now exist (or the timeout passes)."""
        with self._cond:
            target = self._count + n
            return self._cond.wait_for(lambda: self._count >= target or self._stop.is_set(),
                                       timeout)

    def snapshots(self, copy: bool = True) -> list[Snapshot]:
        """Every snapshot in the ring, oldest first (copies unless ``copy=False``)."""
        with self._cond:
            first = max(self._count - self.capacity, 0)
            out = []
            for k in range(first, self._count):
                s = self._meta[k % self.capacity]
                out.append(_copied(s) if copy else s)
            return out

    def read(self) -> list[Snapshot]:
        """The snapshots taken since the last read(), as copies (frees their slots for a
        sampler created with overwrite=False)."""
        with self._cond:
            first = max(self._tail, self._count - self.capacity)
            out = [_copied(self._meta[k % self.capacity]) for k in range(first, self._count)]
            self._tail = self._count
            self._cond.notify_all()
        return out

    def latest(self) -> Snapshot | None:
        with self._cond:
            if not self._count:
                return None
            return _copied(self._meta[(self._count - 1) % self.capacity])

    def __len__(self) -> int:
        with self._cond:
            return min(self._count, self.capacity)


def _copied(s: Snapshot) -> Snapshot:
    from web10g.rows import copy

    return Snapshot(s.seq, s.deadline, s.started, s.duration, copy(s.rows), s.error)

