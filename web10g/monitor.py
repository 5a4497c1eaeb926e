"""``web10g.monitor()``: record the flows of a test while it runs, get per-flow results.

    with web10g.monitor(filter="dport = :5201", interval=0.1) as m:
        run_iperf()
    m.result.flows["throughput_sent_bps"], m.result.frame()

A background sampler reads the matching flows at the interval while the block runs;
on sock_diag, flows that end during the block also deliver their final statistics from
the kernel's destroy notifications, so a transfer shorter than the interval is still
seen in full.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from web10g import deltas
from web10g import filter as _filter

DEFAULT_VARS = ["HCThruOctetsAcked", "HCThruOctetsReceived", "SegsRetrans", "CurCwnd",
                "SmoothedRTT", "CurMSS"]


@dataclass
class MonitorResult:
    snapshots: list[np.ndarray]            # the samples, oldest first
    closed: np.ndarray                     # final rows of flows that ended in the block
    flows: dict[str, np.ndarray]           # per-flow summary (web10g.deltas.summarize)
    stats: Any                             # the sampler's SamplerStats
    duration: float = 0.0
    notes: list[str] = field(default_factory=list)

    def frame(self, form: str = "wide") -> Any:
        """All samples (and the final rows of closed flows) as a pandas DataFrame."""
        from web10g.frames import to_pandas

        return to_pandas(self.snapshots + ([self.closed] if len(self.closed) else []),
                         form=form)

    def summary(self) -> Any:
        """The per-flow summary as a pandas DataFrame (one row per flow)."""
        from web10g.frames import _pandas

        pd = _pandas()
        cols = {k: v for k, v in self.flows.items() if np.ndim(v) == 1}
        return pd.DataFrame(cols)

    def __repr__(self) -> str:
        return (f"<MonitorResult {len(self.flows.get('cid', []))} flows, "
                f"{len(self.snapshots)} samples over {self.duration:.2f} s>")


class Monitor:
    """The context manager behind :func:`monitor`; ``result`` is set on exit."""

    def __init__(self, *, filter: Any = None, interval: float = 0.1, vars: Any = None,
                 backend: str = "auto", netns: Any = None, states: Any = "connected",
                 capacity: int = 100_000) -> None:
        import web10g

        self._agent = web10g.open(backend, netns=netns)
        self.filter = filter
        wanted = list(DEFAULT_VARS if vars is None else vars)
        if self._agent.backend == "sock_diag" and "rtt_us" not in wanted:
            wanted.append("rtt_us")
        self.vars = wanted
        self._sampler = self._agent.sampler(self.vars, interval=interval, filter=filter,
                                            states=states, capacity=capacity, strict=False)
        self.result: MonitorResult | None = None
        self._t0 = 0.0

    def __enter__(self) -> Monitor:
        import time

        if self._agent.backend == "sock_diag":
            self._agent.watch_closed()
        # what exists before the block: flows not in it started inside and count from 0
        self._baseline = self._agent.read_all(["SegsOut"], filter=self.filter,
                                              states=self._sampler.states).copy()
        self._t0 = time.monotonic()
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import time

        try:
            self._sampler.wait(1, timeout=max(1.0, self._sampler.interval * 3))
        finally:
            self._sampler.stop()
        closed = np.zeros(0, dtype=self._sampler.dtype)
        notes = []
        if self._agent.backend == "sock_diag":
            ended = self._agent.closed(self.vars)
            closed = ended[_filter.mask(self.filter, ended)]
        else:
            notes.append("estats sends no end-of-flow notifications: flows that ended "
                         "between samples are summarised from their last sample")
        self._agent.close()
        snaps = [s.rows for s in self._sampler.snapshots() if s.ok]
        self.result = MonitorResult(snaps, closed,
                                    deltas.summarize(snaps, closed, self._baseline),
                                    self._sampler.stats, time.monotonic() - self._t0, notes)


def monitor(**kw: Any) -> Monitor:
    """Sample the flows matching ``filter`` every ``interval`` seconds while the ``with``
    block runs; ``.result`` holds per-flow summaries and the samples."""
    return Monitor(**kw)
