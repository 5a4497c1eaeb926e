"""``web10g.monitor()``: record the flows of a test while it runs, get per-flow results.

    with web10g.monitor(filter="dport = :5201", interval=0.1) as m:
        run_iperf()
    m.result.flows["throughput_sent_bps"], m.result.frame()

A background sampler reads the matching flows at the interval while the block runs;
where the backend has end-of-flow notifications (``agent.capabilities.closed_flows``:
sock_diag's destroy notifications), flows that end during the block also deliver their
final statistics, so a transfer shorter than the interval is still
seen in full.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from web10g import deltas
from web10g import rows as _rows

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
        """The per-flow summary as a pandas DataFrame: one row per flow, indexed by
        ``flow`` ("local -> remote" endpoint text), with the cid as a column."""
        from web10g.frames import _pandas

        pd = _pandas()
        cols = {k: v for k, v in self.flows.items()
                if np.ndim(v) == 1 and k not in ("local_addr", "rem_addr")}
        frame = pd.DataFrame(cols)
        if "local" in cols and "remote" in cols:
            frame.index = pd.Index([f"{a} -> {b}" for a, b in zip(cols["local"],
                                                                  cols["remote"])],
                                   name="flow")
        return frame

    def __repr__(self) -> str:
        return (f"<MonitorResult {len(self.flows.get('cid', []))} flows, "
                f"{len(self.snapshots)} samples over {self.duration:.2f} s>")


class Monitor:
    """The context manager behind :func:`web10g.monitor`; ``result`` is set on exit.

    ``agent`` monitors through an open agent (any backend, a replay included) instead
    of opening one with ``backend``/``netns``; the monitor samples through its clone.
    ``states=None`` is the package's default rule (open connections). The sampler's
    ring keeps at most ``capacity`` samples and ``max_bytes`` bytes (the oldest are
    dropped past that and ``result.stats.dropped`` counts them; flows keep their first
    and last values through the baseline and the end-of-flow records).
    """

    def __init__(self, *, filter: Any = None, interval: float = 0.1, vars: Any = None,
                 backend: str = "auto", netns: Any = None, states: Any = None,
                 capacity: int = 100_000, max_bytes: int = 256 << 20,
                 agent: Any = None) -> None:
        import web10g

        self._own_agent = agent is None
        self._agent = web10g.open(backend, netns=netns) if agent is None else agent
        self.filter = filter
        self.states = states
        wanted = list(DEFAULT_VARS if vars is None else vars)
        have = {v.name for v in self._agent.variables()}
        # the µs RTT where the backend has it (SmoothedRTT is whole ms: 0 on loopback)
        if "rtt_us" in have and "rtt_us" not in wanted:
            wanted.append("rtt_us")
        self.vars = [n for n in wanted if n in have] if vars is None else wanted
        try:
            self._sampler = self._agent.sampler(self.vars, interval=interval, filter=filter,
                                                states=states, capacity=capacity,
                                                strict=False, max_bytes=max_bytes)
        except BaseException:
            if self._own_agent:
                self._agent.close()
            raise
        self.result: MonitorResult | None = None
        self._t0 = 0.0

    def __enter__(self) -> Monitor:
        import time

        caps = self._agent.capabilities
        if caps.closed_flows:
            self._agent.watch_closed()
        # what exists before the block: flows not in it started inside and count from 0
        self._baseline = (self._agent.read_all(["SegsOut"], filter=self.filter,
                                               states=self.states)
                          if caps.live else np.zeros(0, self._agent.dtype(["SegsOut"])))
        self._t0 = time.monotonic()
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import time

        try:
            if not self._sampler.finished:
                self._sampler.wait(1, timeout=max(1.0, self._sampler.interval * 3))
        finally:
            self._sampler.stop()
        closed = np.zeros(0, dtype=self._sampler.dtype)
        notes = []
        snaps = [s.rows for s in self._sampler.snapshots() if s.ok]
        if self._agent.capabilities.closed_flows:
            ended = self._agent.closed(self.vars)
            # A flow aborted with SO_LINGER 0 is notified with its remote port cleared,
            # so the filter may no longer match it: flows sampled in the block are kept
            # by cid, and get back the endpoints of their last sample.
            _rows.restore_identity(ended, [self._baseline] + snaps)
            keep = _rows.select(ended, self.filter, self.states, None, default_states=False)
            if keep is not None:
                known = np.concatenate([self._baseline["cid"]] + [s["cid"] for s in snaps])
                keep |= np.isin(ended["cid"], known)
            closed = ended if keep is None else ended[keep]
        elif self._agent.capabilities.live:
            notes.append(f"the {self._agent.backend} backend sends no end-of-flow "
                         "notifications: flows that ended between samples are summarised "
                         "from their last sample")
        if self._sampler.stats.dropped:
            notes.append(f"the sampler's ring was full: {self._sampler.stats.dropped} "
                         "oldest samples were dropped (raise capacity/max_bytes or the "
                         "interval)")
        if self._own_agent:
            self._agent.close()
        self.result = MonitorResult(snaps, closed,
                                    deltas.summarize(snaps, closed, self._baseline),
                                    self._sampler.stats, time.monotonic() - self._t0, notes)


def monitor(**kw: Any) -> Monitor:
    """Sample the flows matching ``filter`` every ``interval`` seconds while the ``with``
    block runs; ``.result`` holds per-flow summaries and the samples."""
    return Monitor(**kw)
