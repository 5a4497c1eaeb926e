"""The collector: one sampler, many sinks, signals, and its own health metrics.

The main thread takes each snapshot out of the sampler's ring -- without copying it: the
sinks get a view of the ring slot and copy the columns they need, checking afterwards
that the sampler has not begun to reuse the slot (a sink that far behind drops the
sample, counted); a sink that keeps rows as they are gets a copy --, collects the final
counters of flows that closed (``agent.closed()``, when the backend has end-of-flow
notifications), and offers both to every sink without waiting: each sink has its own
thread and a bounded queue (see :mod:`web10g.collector.sinks`). Sampling
runs on the sampler's thread on a deadline grid, so nothing a sink does delays it;
deadlines that are missed anyway (an overloaded machine) are counted.

``stop()`` (SIGTERM, SIGINT) stops sampling, hands the last samples over, and lets every
sink flush (the Parquet window is written and renamed) before the process exits 0.
``request_rotate()`` (SIGHUP) makes file sinks finish their files and open new ones.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, NamedTuple

import numpy as np

from web10g import __version__
from web10g.collector.config import Config
from web10g.collector.log import EventLog
from web10g.collector.sinks import Item, ParquetSink, PrometheusSink, RecordSink, Sink, SinkRunner
from web10g.rows import copy as copy_rows

#: the dataset's default variables: counters, RTT, windows, rates, limits
DEFAULT_VARS = [
    "HCThruOctetsAcked", "HCThruOctetsReceived", "HCDataOctetsOut", "HCDataOctetsIn",
    "SegsOut", "SegsIn", "SegsRetrans", "OctetsRetrans", "Timeouts", "CongSignals",
    "SmoothedRTT", "RTTVar", "MinRTT", "rtt_us", "min_rtt_us", "CurRTO",
    "CurCwnd", "CurSsthresh", "CurMSS", "PipeSize", "CurRwinRcvd", "CurRwinSent",
    "SndLimTimeRwin", "SndLimTimeCwnd", "SndLimTimeSnd",
    "delivery_rate_bytes_per_s", "pacing_rate_bytes_per_s", "cc_algorithm",
]


class Collector:
    def __init__(self, config: Config, *, log: EventLog | None = None,
                 agent: Any = None, extra_sinks: list[Sink] | None = None) -> None:
        self.config = config
        self.log = log or EventLog(fmt=config.log_format, level=config.log_level)
        self._agent = agent
        self._extra = list(extra_sinks or [])
        self._stop = threading.Event()
        self._rotate = threading.Event()
        self.runners: list[SinkRunner] = []
        self.sampler: Any = None
        self.exporter: Any = None
        self.aggregator: Any = None
        self.samples = 0
        self.failed_samples = 0
        self.closed_flows = 0
        self.closed_errors = 0
        self.last_flows = 0
        self.last_sample_ns = 0
        self.generation = 0
        self.started = threading.Event()
        self.host = ""
        self.vars: list[str] | None = None

    # -- control (any thread, signal handlers) --------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def request_rotate(self) -> None:
        self._rotate.set()

    # -- set-up ---------------------------------------------------------------------------
    def _open_agent(self) -> Any:
        import web10g

        c = self.config
        if c.replay:
            return web10g.open(replay=c.replay)
        return web10g.open(c.backend, netns=c.netns)

    def _select_vars(self, agent: Any) -> list[str] | None:
        from web10g import mib
        from web10g.collector.prometheus import wanted_vars

        have = [v.name for v in agent.variables()]
        if self.config.all_vars:
            return None
        if self.config.vars:
            chosen = [mib.lookup(v).name for v in self.config.vars]
        else:
            chosen = [v for v in DEFAULT_VARS if v in set(have)]
        if self.config.prometheus:
            chosen += [v for v in wanted_vars(have) if v not in chosen]
        unavailable = agent.unavailable
        return [v for v in chosen if v not in unavailable]

    def _build_sinks(self, agent: Any, dtype: np.dtype) -> list[Sink]:
        from web10g.collector.parquet import check_host, default_host

        c = self.config
        self.host = check_host(c.host or default_host())
        sinks: list[Sink] = []
        if c.parquet:
            sinks.append(ParquetSink(
                c.parquet, host=self.host, dtype=dtype, backend=agent.backend, log=self.log,
                rotate_seconds=c.rotate_seconds, rotate_bytes=c.rotate_bytes,
                retain_hours=c.retain_hours, retain_bytes=c.retain_bytes,
                row_group_rows=c.row_group_rows, compression_level=c.compression_level,
                metadata={"interval_s": c.interval, "filter": c.filter or "",
                          "states": c.states or "open"},
                expected_rows=getattr(self.sampler, "_slot_rows", None), interval=c.interval))
        if c.prometheus:
            names = list(dtype.names or ())
            clone = agent.clone() if agent.capabilities.live else None
            p = PrometheusSink(clone, names, keys=list(c.prom_keys),
                               ipv4_prefix=c.ipv4_prefix, ipv6_prefix=c.ipv6_prefix,
                               top_k=c.top_k, series_budget=c.series_budget,
                               const_labels={"host": self.host})
            self.aggregator = p.aggregator
            sinks.append(p)
        if c.record:
            sinks.append(RecordSink(c.record, agent.clone(), filter=c.filter,
                                    states=self._states(), log=self.log))
        return sinks + self._extra

    def _states(self) -> Any:
        s = self.config.states
        return [x.strip() for x in s.split(",")] if s else None

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> int:
        """Sample until stop() (or ``count`` samples, or a replay's end); 0 when every
        sink flushed."""
        agent = self._agent or self._open_agent()
        own_agent = self._agent is None
        try:
            return self._run(agent)
        finally:
            if own_agent:
                agent.close()

    def _run(self, agent: Any) -> int:
        c = self.config
        self.vars = self._select_vars(agent)
        dtype = agent.dtype(self.vars)
        closed_ok = bool(agent.capabilities.closed_flows)
        if closed_ok:
            agent.watch_closed()
        # the sampler first (not started): its probe read tells the sinks how many flows
        # to make room for
        self.sampler = agent.sampler(self.vars, interval=c.interval, filter=c.filter,
                                     states=self._states(), capacity=16, strict=False)
        try:
            sinks = self._build_sinks(agent, dtype)
            self.runners = [SinkRunner(s, self.log, self._depth(s)) for s in sinks]
            if c.prometheus:
                from web10g.collector.prometheus import Exporter

                sources = [self.families] + [s.families for s in sinks]
                texts = [self.aggregator.render] if self.aggregator is not None else []
                self.exporter = Exporter(c.prometheus, sources, self._generation, self.log,
                                         texts=texts)
        except BaseException:
            self.sampler.stop()
            raise
        self.log.info("started", version=__version__, backend=agent.backend,
                      host=self.host, netns=c.netns or "", interval=c.interval,
                      variables=len(dtype.names), sinks=",".join(r.name for r in self.runners),
                      prometheus=("%s:%d" % tuple(self.exporter.address)) if self.exporter
                      else "", parquet=c.parquet or "", pid=os.getpid())
        self.sampler.start()
        self.started.set()
        try:
            while not self._stop.is_set():
                self.sampler.wait(1, timeout=min(0.5, max(c.interval, 0.01)))
                self._drain(agent, closed_ok)
                if self._rotate.is_set():
                    self._rotate.clear()
                    self.log.info("rotate_requested")
                    for r in self.runners:
                        r.request_rotate()
                if c.count is not None and self.samples >= c.count:
                    break
                if self.sampler.finished and not len(self.sampler):
                    self._drain(agent, closed_ok)
                    break
        finally:
            self.log.info("stopping", samples=self.samples)
            self.sampler.stop()
            self._drain(agent, closed_ok)
            ok = True
            for r in self.runners:
                if not r.close(c.shutdown_timeout):
                    ok = False
                    self.log.error("sink_not_flushed", sink=r.name,
                                   timeout_s=c.shutdown_timeout)
            if self.exporter is not None:
                self.exporter.close()
            st = self.sampler.stats
            self.log.info("stopped", samples=self.samples, failed=st.failed,
                          missed=st.missed, **{f"{r.name}_dropped": r.dropped
                                               for r in self.runners},
                          **{f"{r.name}_errors": r.errors for r in self.runners})
        return 0 if ok else 1

    def _drain(self, agent: Any, closed_ok: bool) -> None:
        views = self._views_ok()
        snaps = _take_views(self.sampler) if views else [
            _Taken(s.seq, s.rows, s.error) for s in self.sampler.read()]
        closed = None
        if closed_ok:
            try:
                closed = agent.closed(self.vars)
                if self.config.filter and len(closed):
                    # end-of-flow records come for every flow of the namespace: keep
                    # those the sampling filter selects (same semantics, client-side)
                    from web10g import rows as _rows

                    keep = _rows.select(closed, filter=self.config.filter,
                                        default_states=False)
                    if keep is not None:
                        closed = closed[keep]
            except Exception as exc:  # noqa: BLE001 - counted, sampling goes on
                self.closed_errors += 1
                self.log.error("closed_flows_failed", error=f"{type(exc).__name__}: {exc}")
        good = []
        for s in snaps:
            if s.error:
                self.failed_samples += 1
                self.log.error("sample_failed", seq=s.seq, error=s.error)
            else:
                good.append(s)
        if closed is not None and len(closed):
            self.closed_flows += len(closed)
        if not good and (closed is None or not len(closed)):
            return
        if not good:
            # closed flows with no new sample: deliver them with an empty sample
            empty = np.empty(0, dtype=closed.dtype)
            items = [Item(-1, time.time_ns(), empty, closed)]
        else:
            items = []
            for k, s in enumerate(good):
                rows = s.rows
                t_ns = int(rows["timestamp"][0]) if len(rows) else time.time_ns()
                items.append(Item(s.seq, t_ns, rows,
                                  closed if k == len(good) - 1 else None,
                                  _SlotCheck(self.sampler, s.seq) if views else None))
            self.samples += len(good)
            self.last_flows = len(good[-1].rows)
            self.last_sample_ns = items[-1].t_ns
        copies = views and any(not r.sink.takes_views for r in self.runners)
        for item in items:
            owned: Item | None = item
            if copies and item.check is not None:
                # a sink that keeps rows as they are gets its own copy, made once and
                # only if the slot still holds the sample (else the sample is dropped)
                rows = copy_rows(item.rows)
                owned = Item(item.seq, item.t_ns, rows, item.closed) if item.intact() \
                    else None
            for r in self.runners:
                if r.sink.takes_views:
                    r.offer(item)
                elif owned is not None:
                    r.offer(owned)
                else:
                    r.offered += 1
                    r._drop()
        self.generation += 1

    def _depth(self, sink: Sink) -> int:
        """A sink's queue: ``sink_queue`` samples; a sink that takes views of the ring
        queues nothing but references, and may fall up to half the ring behind (a
        Parquet row group written at once, on a busy machine, needs that slack)."""
        if sink.takes_views and self._views_ok():
            return max(self.config.sink_queue, self.sampler.capacity // 2)
        return self.config.sink_queue

    def _views_ok(self) -> bool:
        """Hand the sinks views of the ring's slots (no copy per sample) when the ring
        holds well more samples than a sink may have queued: a slot is written again
        ``capacity`` samples later, and a sink checks after copying that it was not."""
        return self.sampler.capacity >= 2 * (self.config.sink_queue + 2)

    def _generation(self) -> Any:
        agg = self.aggregator.generation if self.aggregator is not None else 0
        return (self.generation, agg)

    # -- own metrics ------------------------------------------------------------------------
    def families(self) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        h = ["host"]
        hv = [self.host]
        st = self.sampler.stats if self.sampler is not None else None
        out: list[Any] = []

        def counter(name: str, doc: str, value: float) -> None:
            f = CounterMetricFamily(name, doc, labels=h)
            f.add_metric(hv, float(value))
            out.append(f)

        def gauge(name: str, doc: str, value: float) -> None:
            f = GaugeMetricFamily(name, doc, labels=h)
            f.add_metric(hv, float(value))
            out.append(f)

        counter("web10g_collector_samples", "Samples taken and handed to the sinks",
                self.samples)
        counter("web10g_collector_sample_failures", "Samples whose kernel read failed",
                self.failed_samples)
        counter("web10g_collector_missed_samples", "Sampling deadlines missed (a read "
                "ran late)", st.missed if st else 0)
        counter("web10g_collector_closed_flows", "End-of-flow records folded in",
                self.closed_flows)
        gauge("web10g_collector_flows", "Flows in the latest sample", self.last_flows)
        gauge("web10g_collector_last_sample_timestamp_seconds",
              "Wall time of the latest sample", self.last_sample_ns / 1e9)
        if st is not None and st.samples:
            gauge("web10g_collector_sample_duration_seconds",
                  "Median time of one kernel read (last 1000)", float(np.median(st.durations)))
        if self.exporter is not None:
            gauge("web10g_exporter_connections", "HTTP connections open to the exporter",
                  self.exporter.connections)
            counter("web10g_exporter_connections_refused", "Connections closed on arrival "
                    "because the exporter already served its most at once, all busy",
                    self.exporter.refused)
            counter("web10g_exporter_connections_evicted", "Connections closed to make "
                    "room for a new one: they had waited longest for a request",
                    self.exporter.evicted)
        labels = h + ["sink"]
        fams: dict[str, Any] = {
            "dropped": CounterMetricFamily(
                "web10g_collector_sink_dropped_samples",
                "Samples a sink missed because it was behind (its queue was full)",
                labels=labels),
            "errors": CounterMetricFamily(
                "web10g_collector_sink_errors", "Failures of a sink (disk full, "
                "permissions, ...); see the log", labels=labels),
            "written": CounterMetricFamily(
                "web10g_collector_sink_samples", "Samples a sink has processed",
                labels=labels),
            "failing": GaugeMetricFamily(
                "web10g_collector_sink_failing", "1 while a sink's last operation failed",
                labels=labels),
        }
        for r in self.runners:
            lv = hv + [r.name]
            fams["dropped"].add_metric(lv, float(r.dropped))
            fams["errors"].add_metric(lv, float(r.errors))
            fams["written"].add_metric(lv, float(r.written))
            fams["failing"].add_metric(lv, 1.0 if r.failing else 0.0)
        out += list(fams.values())
        for r in self.runners:
            s = r.sink
            if isinstance(s, ParquetSink):
                counter("web10g_collector_parquet_files", "Parquet files completed "
                        "(renamed into the dataset)", s.files)
                counter("web10g_collector_parquet_bytes", "Bytes of completed Parquet "
                        "files", s.bytes)
                counter("web10g_collector_parquet_rows_lost", "Rows of windows dropped "
                        "after a write failure", s.rows_lost)
                counter("web10g_collector_parquet_pruned_files", "Files deleted by the "
                        "retention limits (--retain-hours, --retain-bytes)", s.pruned_files)
                counter("web10g_collector_parquet_pruned_bytes", "Bytes of files deleted by "
                        "the retention limits", s.pruned_bytes)
        return out


class _Taken(NamedTuple):
    seq: int
    rows: np.ndarray
    error: str | None


def _take_views(sampler: Any) -> list[_Taken]:
    """What ``Sampler.read()`` returns, without its copy: the snapshots taken since the
    last call, whose rows are views of the ring's slots. The slot of sample ``seq`` is
    written again when sample ``seq + capacity`` starts (the sampler's count is then
    ``seq + capacity``); :class:`_SlotCheck` says whether that has happened yet."""
    with sampler._cond:
        cap = sampler.capacity
        count = sampler._count
        first = max(sampler._tail, count - cap)
        out = []
        for k in range(first, count):
            s = sampler._meta[k % cap]
            out.append(_Taken(s.seq, s.rows, s.error))
        sampler._tail = count
        sampler._cond.notify_all()
    return out


class _SlotCheck:
    """True while the ring slot of sample ``seq`` still holds it (call it after copying
    from the view: the copy is then the sample as it was read)."""

    __slots__ = ("sampler", "limit")

    def __init__(self, sampler: Any, seq: int) -> None:
        self.sampler = sampler
        self.limit = seq + sampler.capacity

    def __call__(self) -> bool:
        return bool(self.sampler._count < self.limit)
