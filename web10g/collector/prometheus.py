"""The Prometheus / OpenMetrics exporter: flows aggregated into a bounded set of series.

Flows are too many and too short-lived to be series of their own, so each sample is
folded into groups keyed by configurable labels (default: ``local_port`` -- the port of a
listening service, or "ephemeral" for the client side of a connection --, ``remote_net``
-- the remote /24 or /64 --, and ``state``):

* counters (``web10g_flow_bytes_acked_total``, ``..._bytes_received_total``,
  ``..._segments_retransmitted_total``, ``..._timeouts_total``): the sum, over the flows of
  a group, of each flow's counter increase since the previous sample. A flow first seen
  after the collector started counts from 0; flows already open at the first sample
  count from that sample on. When a flow ends, its final counters (the end-of-flow
  notifications of ``agent.closed()``) are folded in, so a counter never goes backwards
  and the bytes of a flow that lived between two samples are not lost;
* a gauge ``web10g_flows`` (flows per group, so per state);
* histograms ``web10g_flow_rtt_seconds``, ``web10g_flow_cwnd_bytes``,
  ``web10g_flow_delivery_rate_bytes_per_second``: one observation per flow per sample.

Optional per-flow series for the top-K flows by throughput (``top_k``). Every series
counts against a hard budget (``series_budget``, default 2,000): a group that would
exceed it is folded into the group whose labels are all "other", a top-K flow that
would exceed it is left out, and both are counted in
``web10g_exporter_series_dropped_total`` (once per group key, once per flow).

A scrape never reads the kernel: it renders the state of the latest sample (cached per
sample and format).
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from web10g import mib
from web10g import rows as _rows

KEYS = ("local_port", "remote_port", "remote_net", "local_addr", "state")
DEFAULT_KEYS = ("local_port", "remote_net", "state")

# (metric name, variable, HELP prefix) of the counters; the variable's registry
# description completes the HELP text.
COUNTERS = [
    ("web10g_flow_bytes_acked", "HCThruOctetsAcked", "Bytes acknowledged by the peer"),
    ("web10g_flow_bytes_received", "HCThruOctetsReceived", "Bytes received in order"),
    ("web10g_flow_segments_retransmitted", "SegsRetrans", "Segments retransmitted"),
    ("web10g_flow_timeouts", "Timeouts", "Retransmission timeouts"),
]
# (metric name, candidate variables in order, scale to the base unit, buckets)
HISTOGRAMS = [
    ("web10g_flow_rtt_seconds", ("rtt_us", "SmoothedRTT"), {"rtt_us": 1e-6, "SmoothedRTT": 1e-3},
     (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
      2.5)),
    ("web10g_flow_cwnd_bytes", ("CurCwnd",), {"CurCwnd": 1.0},
     (4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)),
    ("web10g_flow_delivery_rate_bytes_per_second", ("delivery_rate_bytes_per_s",),
     {"delivery_rate_bytes_per_s": 1.0},
     (1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10)),
]
#: the variables the exporter reads (those the backend has)
WANTED = sorted({v for _, v, _ in COUNTERS} | {v for _, vs, _, _ in HISTOGRAMS for v in vs})
TOP_SERIES = 3          # per top-K flow: bytes acked counter, throughput, rtt
TOMBSTONE_SECONDS = 120.0


def wanted_vars(available: Iterable[str]) -> list[str]:
    have = set(available)
    return [v for v in WANTED if v in have]


def _help(metric: str, var: str | None, lead: str) -> str:
    if var is None:
        return lead
    try:
        v = mib.lookup(var)
    except LookupError:
        return lead
    return f"{lead} (from {v.name}, {v.units}): {v.description}"


def _net_labels(family: np.ndarray, addr: np.ndarray, v4: int, v6: int) -> np.ndarray:
    """Masked remote prefixes as (n, 16) bytes (family-specific prefix lengths)."""
    out = np.ascontiguousarray(addr).copy()
    is6 = family == socket.AF_INET6
    mask4 = np.zeros(16, np.uint8)
    mask6 = np.zeros(16, np.uint8)
    for mask, bits in ((mask4, v4), (mask6, v6)):
        full, rest = divmod(bits, 8)
        mask[:full] = 0xFF
        if rest and full < 16:
            mask[full] = (0xFF << (8 - rest)) & 0xFF
    out &= np.where(is6[:, None], mask6, mask4)
    return out


class Aggregator:
    """Folds samples (and closed flows) into group counters, gauges and histograms."""

    def __init__(self, variables: Iterable[str], *, keys: Iterable[str] = DEFAULT_KEYS,
                 ipv4_prefix: int = 24, ipv6_prefix: int = 64, top_k: int = 0,
                 series_budget: int = 2000, const_labels: dict[str, str] | None = None,
                 listening: Callable[[], set[int]] | None = None) -> None:
        self.keys = tuple(keys)
        for k in self.keys:
            if k not in KEYS:
                raise ValueError(f"unknown aggregation key {k!r}: choose from {', '.join(KEYS)}")
        if not 0 <= ipv4_prefix <= 32 or not 0 <= ipv6_prefix <= 128:
            raise ValueError("prefix lengths: IPv4 0..32, IPv6 0..128")
        self.v4, self.v6 = ipv4_prefix, ipv6_prefix
        have = set(variables)
        self.counters = [(m, v, h) for m, v, h in COUNTERS if v in have]
        self.hists = []
        for m, cands, scales, bounds in HISTOGRAMS:
            var = next((c for c in cands if c in have), None)
            if var is not None:
                self.hists.append((m, var, scales[var], np.asarray(bounds, float)))
        self.top_k = int(top_k)
        self.budget = int(series_budget)
        self.const_labels = dict(const_labels or {})
        self.listening = listening or (lambda: set())
        self.per_group = (len(self.counters) + 1 +
                          sum(len(b) + 3 for _, _, _, b in self.hists))
        self.lock = threading.Lock()
        self.generation = 0
        # groups
        self.group_ids: dict[tuple[str, ...], int] = {}
        self.group_labels: list[tuple[str, ...]] = []
        self.totals = np.zeros((0, len(self.counters)))
        self.flows = np.zeros(0, np.int64)
        self.hcounts = [np.zeros((0, len(b) + 1), np.int64) for _, _, _, b in self.hists]
        self.hsums = [np.zeros(0) for _ in self.hists]
        self.dropped_keys: set[tuple[str, ...]] = set()
        self.dropped_flows: set[int] = set()
        self.series_dropped = 0
        self.other_gid: int | None = None
        # per-flow state: sorted cids, their last counter values and groups
        self.prev_cid = np.zeros(0, np.uint64)
        self.prev_val = np.zeros((0, len(self.counters)), np.uint64)
        self.prev_gid = np.zeros(0, np.int64)
        self.limbo: dict[int, tuple[np.ndarray, int]] = {}   # vanished: (values, group)
        self.limbo_time: dict[int, float] = {}
        self.tombstones: dict[int, float] = {}           # closed flows (never counted again)
        self.first = True
        self.top: list[tuple[dict[str, str], float, float, float]] = []
        self.samples = 0
        self.closed_folded = 0
        self.last_sample_time = 0.0

    # -- groups ----------------------------------------------------------------------
    @property
    def series(self) -> int:
        return len(self.group_labels) * self.per_group + len(self.top) * TOP_SERIES

    def _gid(self, labels: tuple[str, ...]) -> int:
        gid = self.group_ids.get(labels)
        if gid is not None:
            return gid
        # keep room for the "other" group from the start
        reserve = 0 if self.other_gid is not None else self.per_group
        if (len(self.group_labels) + 1) * self.per_group + reserve > self.budget:
            if labels not in self.dropped_keys:
                self.dropped_keys.add(labels)
                self.series_dropped += self.per_group
            if self.other_gid is None:
                self.other_gid = self._new_group(tuple("other" for _ in self.keys))
            self.group_ids[labels] = self.other_gid      # sticky: always folded there
            return self.other_gid
        return self._new_group(labels)

    def _new_group(self, labels: tuple[str, ...]) -> int:
        gid = len(self.group_labels)
        self.group_ids[labels] = gid
        self.group_labels.append(labels)
        self.totals = np.vstack([self.totals, np.zeros((1, len(self.counters)))])
        self.flows = np.append(self.flows, 0)
        self.hcounts = [np.vstack([h, np.zeros((1, h.shape[1]), np.int64)])
                        for h in self.hcounts]
        self.hsums = [np.append(s, 0.0) for s in self.hsums]
        return gid

    def _groups(self, rows: np.ndarray) -> np.ndarray:
        """The group id of each row (vectorised: distinct keys are formatted once)."""
        n = len(rows)
        if not n:
            return np.zeros(0, np.int64)
        parts: list[np.ndarray] = []
        listening = None
        for k in self.keys:
            if k == "local_port":
                if listening is None:
                    listening = np.array(sorted(self.listening()), np.uint16)
                lp = rows["local_port"]
                parts.append(np.where(np.isin(lp, listening), lp, 0).astype(np.uint64))
            elif k == "remote_port":
                parts.append(rows["rem_port"].astype(np.uint64))
            elif k == "state":
                parts.append(rows["state"].astype(np.uint64))
            else:
                side = "rem_addr" if k == "remote_net" else "local_addr"
                a = (_net_labels(rows["family"], rows[side], self.v4, self.v6)
                     if k == "remote_net" else np.ascontiguousarray(rows[side]))
                w = a.view(np.uint64).reshape(n, 2)
                parts += [w[:, 0], w[:, 1], rows["family"].astype(np.uint64)]
        if not parts:
            return np.zeros(n, np.int64) + self._gid(())
        order = np.lexsort(parts[::-1])
        keys = np.stack([p[order] for p in parts], axis=1)
        change = np.ones(n, bool)
        change[1:] = np.any(keys[1:] != keys[:-1], axis=1)
        starts = np.flatnonzero(change)
        seg = np.cumsum(change) - 1
        gids_u = np.array([self._gid(self._label_of(rows[int(order[s])])) for s in starts],
                          np.int64)
        out = np.empty(n, np.int64)
        out[order] = gids_u[seg]
        return out

    def _label_of(self, row: np.void) -> tuple[str, ...]:
        from web10g._netlink import format_addresses

        out = []
        for k in self.keys:
            if k == "local_port":
                lp = int(row["local_port"])
                out.append(str(lp) if lp in self.listening() else "ephemeral")
            elif k == "remote_port":
                out.append(str(int(row["rem_port"])))
            elif k == "state":
                out.append(mib.STATE_NAMES.get(int(row["state"]), str(int(row["state"]))))
            else:
                side = "rem_addr" if k == "remote_net" else "local_addr"
                fam = np.array([row["family"]])
                a = np.asarray(row[side]).reshape(1, 16)
                if k == "remote_net":
                    a = _net_labels(fam, a, self.v4, self.v6)
                t = format_addresses(a, fam)[0]
                t = t.decode() if isinstance(t, bytes) else str(t)
                if k == "remote_net":
                    t += f"/{self.v6 if int(row['family']) == socket.AF_INET6 else self.v4}"
                out.append(t)
        return tuple(out)

    # -- folding -----------------------------------------------------------------------
    def _values(self, rows: np.ndarray) -> np.ndarray:
        vals = np.zeros((len(rows), len(self.counters)), np.uint64)
        for j, (_, var, _) in enumerate(self.counters):
            col = rows[var].astype(np.uint64)
            ok = _rows.available(rows, var)
            vals[:, j] = np.where(ok, col, 0)
        return vals

    def _widths(self, rows: np.ndarray) -> list[int]:
        return [rows.dtype.fields[var][0].itemsize * 8 for _, var, _ in self.counters]

    @staticmethod
    def _diff(cur: np.ndarray, prev: np.ndarray, widths: list[int]) -> np.ndarray:
        d = np.empty(cur.shape, np.float64)
        for j, w in enumerate(widths):
            if w >= 64:
                dd = cur[:, j].astype(np.int64) - prev[:, j].astype(np.int64)
                d[:, j] = np.maximum(dd, 0)
            else:                           # wrap in the counter's own width
                d[:, j] = (cur[:, j] - prev[:, j]) & np.uint64((1 << w) - 1)
        return d

    def update(self, rows: np.ndarray, closed: np.ndarray | None = None,
               now: float | None = None) -> None:
        """Fold one sample and the flows that closed since the previous one."""
        now = time.monotonic() if now is None else now
        rep = _rows.reported(rows)
        if not rep.all():                   # rows without statistics (TIME-WAIT, ...)
            rows = rows[rep]
        with self.lock:
            self._update(rows, closed, now)
            self.generation += 1
            self.samples += 1
            self.last_sample_time = time.time()

    def _update(self, rows: np.ndarray, closed: np.ndarray | None, now: float) -> None:
        tomb = self.tombstones
        if tomb and len(rows):
            dead = np.fromiter(tomb.keys(), np.uint64, len(tomb))
            rows = rows[~np.isin(rows["cid"], dead)]
        gids = self._groups(rows)
        G = len(self.group_labels)
        nc = len(self.counters)
        vals = self._values(rows) if nc else np.zeros((len(rows), 0), np.uint64)
        cids = rows["cid"].astype(np.uint64)
        order = np.argsort(cids, kind="stable")
        scid, sval, sg = cids[order], vals[order], gids[order]
        widths = self._widths(rows) if nc else []
        # counters: increases since the previous sample
        pos = np.searchsorted(self.prev_cid, scid)
        pos_c = np.minimum(pos, max(len(self.prev_cid) - 1, 0))
        seen = (pos < len(self.prev_cid)) & (self.prev_cid[pos_c] == scid) if len(
            self.prev_cid) else np.zeros(len(scid), bool)
        base = np.zeros_like(sval)
        if len(self.prev_cid):
            base[seen] = self.prev_val[pos_c[seen]]
        if self.limbo:                          # flows that skipped a sample
            for i in np.flatnonzero(~seen).tolist():
                v = self.limbo.pop(int(scid[i]), None)
                if v is not None:
                    base[i] = v[0]
                    seen[i] = True
                    self.limbo_time.pop(int(scid[i]), None)
        if self.first:
            base = sval.copy()                  # open before we started: from now on
        delta = self._diff(sval, base, widths) if nc else np.zeros((len(scid), 0))
        for j in range(nc):
            self.totals[:, j] += np.bincount(sg, weights=delta[:, j], minlength=G)[:G]
        # vanished flows wait (in limbo) for their end-of-flow record
        if len(self.prev_cid):
            gone = ~np.isin(self.prev_cid, scid)
            for c, v, g in zip(self.prev_cid[gone].tolist(), self.prev_val[gone],
                               self.prev_gid[gone].tolist()):
                self.limbo[c] = (v, g)
                self.limbo_time[c] = now
        self.prev_cid, self.prev_val, self.prev_gid = scid, sval, sg
        # closed flows: final counters minus what was counted
        if closed is not None and len(closed) and nc:
            closed = closed[_rows.reported(closed)]
            # a flow's last increase goes to the group it was counted in while open
            cg = self._groups(closed).copy()
            G = len(self.group_labels)
            self._grow(G)
            cvals = self._values(closed)
            ccids = closed["cid"].astype(np.uint64)
            cbase = np.zeros_like(cvals)
            keep = np.ones(len(closed), bool)
            idx = np.searchsorted(self.prev_cid, ccids)
            for i, c in enumerate(ccids.tolist()):
                if c in tomb:
                    keep[i] = False
                    continue
                j = int(idx[i])
                if j < len(self.prev_cid) and int(self.prev_cid[j]) == c:
                    cbase[i] = self.prev_val[j]
                    cg[i] = self.prev_gid[j]
                elif c in self.limbo:
                    cbase[i], cg[i] = self.limbo.pop(c)
                    self.limbo_time.pop(c, None)
                elif self.first:
                    keep[i] = False
                tomb[c] = now
            if keep.any():
                d = self._diff(cvals[keep], cbase[keep], self._widths(closed))
                for j in range(nc):
                    self.totals[:, j] += np.bincount(cg[keep], weights=d[:, j],
                                                     minlength=G)[:G]
                self.closed_folded += int(keep.sum())
            if len(ccids):
                drop = np.isin(self.prev_cid, ccids)
                if drop.any():
                    self.prev_cid, self.prev_val, self.prev_gid = (
                        self.prev_cid[~drop], self.prev_val[~drop], self.prev_gid[~drop])
        self.first = False
        G = len(self.group_labels)
        self._grow(G)
        # gauges and histograms of this sample
        self.flows = np.bincount(gids, minlength=G)[:G].astype(np.int64)
        for h, (_, var, scale, bounds) in enumerate(self.hists):
            ok = _rows.available(rows, var)
            x = rows[var][ok].astype(np.float64) * scale
            g = gids[ok]
            b = np.searchsorted(bounds, x, side="left")
            nb = len(bounds) + 1
            counts = np.bincount(g * nb + b, minlength=G * nb)[:G * nb].reshape(G, nb)
            self.hcounts[h] += counts
            self.hsums[h] += np.bincount(g, weights=x, minlength=G)[:G]
        # expire limbo and tombstones
        cut = now - TOMBSTONE_SECONDS
        if self.limbo_time and min(self.limbo_time.values()) < cut:
            for c in [c for c, t in self.limbo_time.items() if t < cut]:
                self.limbo.pop(c, None)
                self.limbo_time.pop(c, None)
        if tomb and min(tomb.values()) < cut:
            for c in [c for c, t in tomb.items() if t < cut]:
                del tomb[c]
        self._top(rows, scid, delta, order)

    def _grow(self, G: int) -> None:
        while len(self.flows) < G:
            self.flows = np.append(self.flows, 0)
        if self.totals.shape[0] < G:
            self.totals = np.vstack([self.totals,
                                     np.zeros((G - self.totals.shape[0], self.totals.shape[1]))])
        for h in range(len(self.hcounts)):
            if self.hcounts[h].shape[0] < G:
                extra = G - self.hcounts[h].shape[0]
                self.hcounts[h] = np.vstack([self.hcounts[h],
                                             np.zeros((extra, self.hcounts[h].shape[1]),
                                                      np.int64)])
                self.hsums[h] = np.append(self.hsums[h], np.zeros(extra))

    def _top(self, rows: np.ndarray, scid: np.ndarray, delta: np.ndarray,
             order: np.ndarray) -> None:
        self.top = []
        if self.top_k <= 0 or not len(rows) or not self.counters:
            return
        room = (self.budget - len(self.group_labels) * self.per_group) // TOP_SERIES
        k = min(self.top_k, len(rows))
        thr = delta[:, 0]
        pick = np.argsort(-thr, kind="stable")[:k]
        if k > room:
            for i in pick[max(room, 0):]:
                c = int(scid[i])
                if c not in self.dropped_flows:
                    if len(self.dropped_flows) > 100_000:
                        self.dropped_flows.clear()
                    self.dropped_flows.add(c)
                    self.series_dropped += TOP_SERIES
            pick = pick[:max(room, 0)]
        if not len(pick):
            return
        sel = rows[order[pick]]
        local, remote = _rows.endpoints(sel)
        rtt = None
        if self.hists and self.hists[0][0] == "web10g_flow_rtt_seconds":
            _, var, scale, _ = self.hists[0]
            rtt = sel[var].astype(float) * scale
        acked_var = self.counters[0][1]
        for j, i in enumerate(pick):
            labels = {"cid": str(int(scid[i])), "local": str(local[j]),
                      "remote": str(remote[j])}
            self.top.append((labels, float(sel[acked_var][j]), float(thr[i]),
                             float(rtt[j]) if rtt is not None else float("nan")))

    # -- rendering ---------------------------------------------------------------------
    def families(self) -> list[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        const = self.const_labels
        names = list(const) + list(self.keys)
        cv = list(const.values())
        out: list[Any] = []
        with self.lock:
            labels = [cv + list(g) for g in self.group_labels]
            for j, (metric, var, lead) in enumerate(self.counters):
                f: Any = CounterMetricFamily(metric, _help(metric, var, lead), labels=names)
                for g, lab in enumerate(labels):
                    f.add_metric(lab, float(self.totals[g, j]))
                out.append(f)
            f = GaugeMetricFamily("web10g_flows", "Flows in the latest sample, by group "
                                  "(state is one of the keys)", labels=names)
            for g, lab in enumerate(labels):
                f.add_metric(lab, float(self.flows[g]))
            out.append(f)
            for h, (metric, var, _, bounds) in enumerate(self.hists):
                f = HistogramMetricFamily(
                    metric, _help(metric, var, "Per-flow values, one observation per flow "
                                  "per sample"), labels=names)
                for g, lab in enumerate(labels):
                    cum = np.cumsum(self.hcounts[h][g])
                    buckets = [(_le(b), float(cum[i])) for i, b in enumerate(bounds)]
                    buckets.append(("+Inf", float(cum[-1])))
                    f.add_metric(lab, buckets, float(self.hsums[h][g]))
                out.append(f)
            if self.top_k > 0 and self.counters:
                tl = list(const) + ["cid", "local", "remote"]
                fa = CounterMetricFamily("web10g_top_flow_bytes_acked",
                                         _help("", self.counters[0][1],
                                               "Bytes acknowledged, per flow, top-K flows "
                                               "by throughput"), labels=tl)
                ft = GaugeMetricFamily("web10g_top_flow_throughput_bytes_per_second",
                                       "Acknowledged bytes per second over the last "
                                       "sample interval, top-K flows", labels=tl)
                fr = GaugeMetricFamily("web10g_top_flow_rtt_seconds",
                                       "Smoothed RTT, top-K flows", labels=tl)
                for top_lab, acked, thr, rtt in self.top:
                    lv = cv + [top_lab["cid"], top_lab["local"], top_lab["remote"]]
                    fa.add_metric(lv, acked)
                    ft.add_metric(lv, thr)
                    fr.add_metric(lv, rtt)
                out += [fa, ft, fr]
            f = CounterMetricFamily("web10g_exporter_series_dropped",
                                    "Series not exported because of the series budget",
                                    labels=list(const))
            f.add_metric(cv, float(self.series_dropped))
            out.append(f)
            f = GaugeMetricFamily("web10g_exporter_series", "Series the exporter exports "
                                  "(flow groups and top-K flows)", labels=list(const))
            f.add_metric(cv, float(self.series))
            out.append(f)
            f = GaugeMetricFamily("web10g_exporter_series_budget", "The series budget",
                                  labels=list(const))
            f.add_metric(cv, float(self.budget))
            out.append(f)
        return out


def _le(b: float) -> str:
    return repr(float(b)) if float(b) != int(b) else f"{float(b):.1f}"


class _Registry:
    """What prometheus_client's encoders need: ``collect()``."""

    def __init__(self, sources: list[Callable[[], list[Any]]]) -> None:
        self.sources = sources

    def collect(self) -> Any:
        for s in self.sources:
            yield from s()


class Exporter:
    """An HTTP endpoint serving /metrics from cached renderings of the latest state."""

    def __init__(self, address: str, sources: list[Callable[[], list[Any]]],
                 generation: Callable[[], int], log: Any = None) -> None:
        host, port = parse_address(address)
        self.registry = _Registry(sources)
        self.generation = generation
        self.scrapes = 0
        self._cache: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                if path not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                if path == "/":
                    body = b"web10g exporter: see /metrics\n"
                    ctype = "text/plain; charset=utf-8"
                else:
                    body, ctype = exporter.render(self.headers.get("Accept", ""))
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                pass

        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        self.server = Server((host, port), Handler)
        self.address = self.server.server_address[:2]
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        name="web10g-exporter", daemon=True)
        self._thread.start()

    def render(self, accept: str) -> tuple[bytes, str]:
        from prometheus_client.exposition import choose_encoder

        encoder, ctype = choose_encoder(accept)
        gen = self.generation()
        with self._lock:
            self.scrapes += 1
            hit = self._cache.get(ctype)
            if hit is not None and hit[0] == gen:
                return hit[1], ctype
            body = encoder(self.registry)
            self._cache[ctype] = (gen, body)
        return body, ctype

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT or PORT."""
    text = text.strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.isdigit():
        host, port = "127.0.0.1", text
    else:
        raise ValueError(f"--prometheus wants HOST:PORT, not {text!r}")
    try:
        return host or "0.0.0.0", int(port)
    except ValueError:
        raise ValueError(f"--prometheus wants HOST:PORT, not {text!r}") from None
