"""Sinks and the runner that isolates each one on its own thread.

A sink receives :class:`Item` objects (one sample's rows plus the flows that closed
since the previous sample). The rows are a view of the sampler's ring for sinks that say
they take views (``takes_views``: they copy what they need and check ``item.intact()``
afterwards), and a copy of their own for the others. Each sink runs on its own thread behind a
bounded queue (:class:`SinkRunner`): a sink that blocks (a hung disk, a slow network
filesystem) only fills its own queue, after which its samples are dropped and counted,
and sampling and the other sinks go on. A sink that raises is reported (log + metric)
and is given the next sample as usual; it recovers by itself when the cause goes away.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from web10g.collector.log import EventLog


@dataclass
class Item:
    seq: int
    t_ns: int                       # wall time of the sample (ns since the epoch)
    rows: np.ndarray                # owned by the item, or a view of a ring slot: check
    closed: np.ndarray | None       # final rows of flows that ended (or None)
    # rows that are a view of a slot of the sampler's ring: True while the slot still
    # holds this sample (None: the rows are owned, a copy)
    check: Callable[[], bool] | None = None

    def intact(self) -> bool:
        """False once the sampler has begun to overwrite the rows (a view's slot)."""
        return self.check is None or self.check()


class SampleOverwritten(Exception):
    """A sink was too far behind: the ring slot its sample was in has been reused."""


class Sink:
    """``takes_views``: the sink accepts items whose rows are a view of the sampler's
    ring: it copies what it keeps and calls ``item.intact()`` after copying, raising
    :class:`SampleOverwritten` (counted as a dropped sample) when that says False. Other
    sinks get rows they own."""

    name = "sink"
    takes_views = False

    def write(self, item: Item) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Called about twice a second and after each item (time-based work)."""

    def rotate(self) -> None:
        """SIGHUP: finish open files and start new ones."""

    def close(self) -> None:
        """Flush everything; called once, on the sink's thread."""

    def families(self) -> list[Any]:
        return []


_STOP = object()


class SinkRunner:
    def __init__(self, sink: Sink, log: EventLog, depth: int = 4) -> None:
        self.sink = sink
        self.name = sink.name
        self.log = log
        self.queue: queue.Queue[Any] = queue.Queue(depth)
        self.offered = 0
        self.written = 0
        self.dropped = 0
        self.overwritten = 0                # of the dropped: the ring slot was reused
        self.errors = 0
        self.last_error = ""
        self.failing = False
        self.busy_seconds = 0.0
        self._rotate = threading.Event()
        self._last_drop_log = 0.0
        self._closed = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"web10g-sink-{self.name}",
                                       daemon=True)
        self.thread.start()

    # -- producer side (the collector's main thread) ----------------------------------
    def offer(self, item: Item) -> bool:
        self.offered += 1
        try:
            self.queue.put_nowait(item)
            return True
        except queue.Full:
            self._drop()
            return False

    def _drop(self) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_drop_log >= 10.0:
            self._last_drop_log = now
            self.log.warning("sink_behind", sink=self.name, dropped_total=self.dropped,
                             queue=self.queue.maxsize)

    def request_rotate(self) -> None:
        self._rotate.set()

    def close(self, timeout: float) -> bool:
        """Ask the sink to flush and stop; False when it did not finish in time."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.queue.put(_STOP, timeout=0.2)
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self.thread.join(max(0.0, deadline - time.monotonic()))
        return self._closed.is_set()

    # -- the sink's thread ---------------------------------------------------------------
    def _guard(self, what: str, fn: Any, *a: Any) -> bool:
        t0 = time.monotonic()
        try:
            fn(*a)
        except SampleOverwritten:           # behind by a whole ring: a dropped sample
            self.overwritten += 1
            self._drop()
            return False
        except Exception as exc:  # noqa: BLE001 - reported; the sink keeps its thread
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.failing = True
            self.log.error("sink_error", sink=self.name, during=what, error=self.last_error,
                           errors_total=self.errors)
            return False
        finally:
            self.busy_seconds += time.monotonic() - t0
        if self.failing and what in ("write", "rotate"):
            self.failing = False
            self.log.info("sink_recovered", sink=self.name)
        return True

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=0.5)
            except queue.Empty:
                item = None
            if self._rotate.is_set():
                self._rotate.clear()
                self._guard("rotate", self.sink.rotate)
            if item is _STOP:
                self._guard("close", self.sink.close)
                self._closed.set()
                return
            if item is not None and self._guard("write", self.sink.write, item):
                self.written += 1
            self._guard("tick", self.sink.tick)


# -- the sinks ---------------------------------------------------------------------------

class ParquetSink(Sink):
    name = "parquet"
    takes_views = True

    def __init__(self, root: str, *, host: str, dtype: np.dtype, backend: str,
                 log: EventLog, rotate_seconds: float, rotate_bytes: int,
                 row_group_rows: int, compression_level: int,
                 retain_hours: float | None = None, retain_bytes: int | None = None,
                 metadata: dict[str, Any] | None = None,
                 expected_rows: int | None = None, interval: float | None = None) -> None:
        from web10g.collector.parquet import DatasetWriter, remove_stale_temps

        self.log = log
        removed = remove_stale_temps(root, host)
        for path in removed:
            log.warning("stale_temp_removed", sink=self.name, path=path,
                        reason="left by a writer that died; its open window is lost")
        self.files = 0
        self.bytes = 0
        self.root, self.host = root, host
        self.retain_hours, self.retain_bytes = retain_hours, retain_bytes
        self.pruned_files = 0
        self.pruned_bytes = 0
        self._prune()                   # a restart after a long stop: the limits hold now
        self.writer = DatasetWriter(root, host=host, dtype=dtype, backend=backend,
                                    rotate_seconds=rotate_seconds, rotate_bytes=rotate_bytes,
                                    row_group_rows=row_group_rows,
                                    compression_level=compression_level,
                                    metadata=metadata, on_file=self._done, background=True)
        if expected_rows:
            # the row-group buffers, allocated and faulted in before sampling starts
            self.writer.prepare(expected_rows, rotate_seconds / interval if interval else None)

    def _done(self, f: Any) -> None:
        self.files += 1
        self.bytes += f.bytes
        self.log.info("file_written", sink=self.name, path=f.path, rows=f.rows, bytes=f.bytes)
        self._prune(f.path)

    def _prune(self, protect: str | None = None) -> None:
        """Apply the retention limits to this host's files (after each file written)."""
        if self.retain_hours is None and self.retain_bytes is None:
            return
        from web10g.collector.parquet import prune

        r = prune(self.root, self.host, keep_hours=self.retain_hours,
                  keep_bytes=self.retain_bytes, protect=[protect] if protect else [])
        self.pruned_files += r.files
        self.pruned_bytes += r.bytes
        if r.files:
            self.log.info("files_pruned", sink=self.name, files=r.files, bytes=r.bytes,
                          kept_bytes=r.kept_bytes)
        for e in r.errors[:3]:
            self.log.warning("prune_failed", sink=self.name, error=e,
                             hint="the retention limits could not remove this file; "
                                  "check its owner and permissions")

    def write(self, item: Item) -> None:
        w = self.writer
        # the writer copies the rows into its column buffers (no copy kept of the slot)
        if not w.add(item.rows, t_ns=item.t_ns, intact=item.check):
            raise SampleOverwritten(f"sample {item.seq}")
        if item.closed is not None and len(item.closed):
            w.add(item.closed, final=True, t_ns=item.t_ns)

    def tick(self) -> None:
        self.writer.maybe_rotate()

    def rotate(self) -> None:
        self.writer.rotate()

    def close(self) -> None:
        self.writer.close()

    @property
    def rows_lost(self) -> int:
        return self.writer.rows_lost


class PrometheusSink(Sink):
    name = "prometheus"
    takes_views = True

    def __init__(self, agent: Any, variables: list[str], *, keys: list[str],
                 ipv4_prefix: int, ipv6_prefix: int, top_k: int, series_budget: int,
                 const_labels: dict[str, str]) -> None:
        from web10g.collector.prometheus import Aggregator

        self._agent = agent             # a clone of its own: listeners are read here
        self._listening: set[int] = set()
        self._listen_at = -1e9
        self.aggregator = Aggregator(variables, keys=keys, ipv4_prefix=ipv4_prefix,
                                     ipv6_prefix=ipv6_prefix, top_k=top_k,
                                     series_budget=series_budget, const_labels=const_labels,
                                     listening=lambda: self._listening)

    def _refresh_listeners(self) -> None:
        now = time.monotonic()
        if now - self._listen_at < 1.0:
            return
        self._listen_at = now
        if self._agent is None or not self._agent.capabilities.live:
            lo = _ephemeral_low()
            self._listening = set(range(1, lo))
            return
        rows = self._agent.list_conns(states="listen")
        self._listening = {int(p) for p in rows["local_port"]}

    def write(self, item: Item) -> None:
        self._refresh_listeners()
        if not self.aggregator.update(item.rows, item.closed, intact=item.check):
            raise SampleOverwritten(f"sample {item.seq}")

    def close(self) -> None:
        if self._agent is not None:
            self._agent.close()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class RecordSink(Sink):
    """The raw recording (``web10g logger --record``'s format), on an agent clone of its
    own: one extra dump per sample, whose reply bytes are kept. SIGHUP starts a new file
    (PATH-<UTC time>.w10g); the first file is PATH itself."""

    name = "record"
    takes_views = True              # it never reads the rows

    def __init__(self, path: str, agent: Any, *, filter: Any, states: Any,
                 log: EventLog) -> None:
        from web10g.recording import Recorder

        self._Recorder = Recorder
        self.path = path
        self.agent = agent
        self.filter, self.states = filter, states
        self.log = log
        self.recorder = Recorder(path, agent)

    def write(self, item: Item) -> None:
        self.recorder.sample(filter=self.filter, states=self.states)

    def rotate(self) -> None:
        self.recorder.close()
        stem, ext = os.path.splitext(self.path)
        new = f"{stem}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}{ext or '.w10g'}"
        self.recorder = self._Recorder(new, self.agent)
        self.log.info("recording_rotated", sink=self.name, path=new)

    def close(self) -> None:
        self.recorder.close()
        self.agent.close()
