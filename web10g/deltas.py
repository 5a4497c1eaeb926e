"""Deltas and rates between snapshots, vectorised, aligned by flow (cid).

Counters become increases (Counter32 modulo 2^32, so a wrap reads as the step it was;
Counter64 modulo 2^64) and, with the elapsed time, per-second rates; gauges stay values.
Flows only in the newer snapshot are ``new``, flows only in the older one ``vanished``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from web10g import mib
from web10g import rows as _rows

_NOT_VARIABLES = frozenset(name for name, _ in mib.IDENTITY_FIELDS) | {
    "timestamp", "present", "tcp_info_len"}


@dataclass
class Delta:
    rows: np.ndarray        # flows in both snapshots (newer order): increases, gauges, rates
    new: np.ndarray         # rows of the newer snapshot whose flow is not in the older
    vanished: np.ndarray    # rows of the older snapshot whose flow is not in the newer
    interval: float         # seconds between the snapshots (median over flows)


def counters(dtype: np.dtype) -> list[str]:
    """The counter columns of a row type (by the registry's type: Counter32/Counter64)."""
    out = []
    for name in dtype.names or ():
        if name in _NOT_VARIABLES:
            continue
        try:
            v = mib.lookup(name)
        except LookupError:
            continue
        if v.is_counter and dtype.fields[name][0].kind == "u":
            out.append(name)
    return out


reported = _rows.reported


def align(prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ip, ic) with prev[ip]["cid"] == cur[ic]["cid"], in cur's order.

    Consecutive dumps of an unchanged socket table come back in the same order: that
    case costs one comparison. A dump can rarely report a socket twice (the kernel's
    walk is not atomic); the last report wins.
    """
    pc, cc = prev["cid"], cur["cid"]
    if len(pc) == len(cc) and np.array_equal(pc, cc):
        idx = np.arange(len(cc))
        return idx, idx
    _, last_p = np.unique(pc[::-1], return_index=True)
    last_p = len(pc) - 1 - last_p
    _, last_c = np.unique(cc[::-1], return_index=True)
    last_c = len(cc) - 1 - last_c
    common, ip, ic = np.intersect1d(pc[last_p], cc[last_c], assume_unique=True,
                                    return_indices=True)
    ip, ic = last_p[ip], last_c[ic]
    order = np.argsort(ic, kind="stable")
    return ip[order], ic[order]


def _out_dtype(dt: np.dtype, cnames: list[str], rates: bool) -> np.dtype:
    """The delta rows' type: the snapshot's fields where the snapshot has them (so its
    rows go over in one block copy), then ``dt`` and the rates."""
    names = list(dt.names or ())
    formats = [dt.fields[n][0] for n in names]
    offsets = [dt.fields[n][1] for n in names]
    extra = ["dt"] + ([f"{n}_per_s" for n in cnames] if rates else [])
    base = -(-dt.itemsize // 8) * 8
    for i, n in enumerate(extra):
        names.append(n)
        formats.append(np.dtype("f8"))
        offsets.append(base + 8 * i)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": base + 8 * len(extra)})


def delta(prev: np.ndarray, cur: np.ndarray, *, rates: bool = True) -> Delta:
    """The change from ``prev`` to ``cur`` (two read_all results of the same selection)."""
    if prev.dtype.names != cur.dtype.names:
        raise ValueError("the two snapshots have different columns: sample the same "
                         "variables to compare them")
    # plain arrays: the rows' own indexing (names, suggestions) is not needed here
    prev = np.ascontiguousarray(prev).view(np.ndarray)
    cur = np.ascontiguousarray(cur).view(np.ndarray)
    ip, ic = align(prev, cur)
    rp, rc = reported(prev), reported(cur)
    ok = rp[ip] & rc[ic]
    same = len(ip) == len(prev) == len(cur) and bool(ok.all()) and np.array_equal(
        ip, np.arange(len(ip)))
    if same:
        # the same flows in the same order, all reporting (idle sampling): no gather
        a, b = prev, cur
        n_new = n_gone = 0
    else:
        ip, ic = ip[ok], ic[ok]
        a, b = prev[ip], cur[ic]
    cnames = counters(cur.dtype)
    out = np.empty(len(b), dtype=_out_dtype(cur.dtype, cnames, rates))
    if len(b):
        out.view(np.uint8).reshape(len(b), out.itemsize)[:, :cur.itemsize] = \
            b.view(np.uint8).reshape(len(b), cur.itemsize)
    dt = (b["timestamp"].astype(np.int64) - a["timestamp"].astype(np.int64)) / 1e9
    out["dt"] = dt
    safe = np.where(dt > 0, dt, np.nan)
    for name in cnames:
        # unsigned subtraction in the column's own width is the modular difference
        step = b[name] - a[name]
        out[name] = step
        if rates:
            out[f"{name}_per_s"] = step / safe
    interval = float(np.median(dt)) if len(dt) else float("nan")
    if same:
        return Delta(out, cur[:n_new], prev[:n_gone], interval)
    in_cur = np.zeros(len(cur), dtype=bool)
    in_cur[ic] = True
    in_prev = np.zeros(len(prev), dtype=bool)
    in_prev[ip] = True
    return Delta(out, cur[~in_cur], prev[~in_prev], interval)


def series(snapshots: Sequence[np.ndarray], *, rates: bool = True) -> list[Delta]:
    """Deltas between every consecutive pair of snapshots (a ring, oldest first)."""
    return [delta(a, b, rates=rates) for a, b in zip(snapshots, snapshots[1:])]


def summarize(snapshots: Sequence[np.ndarray], final: np.ndarray | None = None,
              baseline: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per flow, over a series of snapshots (oldest first): bytes sent and received (the
    HC counters' increase; a flow first seen after the first snapshot started inside the
    series and counts from zero), throughput, RTT min/median/p99 over samples that have
    one (rtt_us, else SmoothedRTT), retransmits (SegsRetrans increase) and the cwnd range.
    ``final`` rows (e.g. destroy notifications) extend the counters of flows that ended,
    without entering the gauge statistics. ``baseline`` (default: the first snapshot)
    says which flows existed before: the others count from zero. Returns column arrays,
    one entry per cid.
    """
    snaps = [s[reported(s)] for s in snapshots]
    snaps = [s for s in snaps if len(s)]
    ended_cids = None
    if final is not None:
        # every final row says its flow ended; only those with statistics extend the
        # counters (a flow aborted with SO_LINGER 0 is notified with its counters zeroed)
        ended_cids = final["cid"]
        final = final[reported(final)]
    parts = snaps + ([final] if final is not None and len(final) else [])
    if not parts:
        return {"cid": np.zeros(0, dtype=np.uint64)}
    allrows = np.concatenate(parts)
    is_final = np.zeros(len(allrows), dtype=bool)
    if final is not None and len(final):
        is_final[-len(final):] = True
    order = np.lexsort((is_final, allrows["timestamp"], allrows["cid"]))
    rows, is_final = allrows[order], is_final[order]
    cids, start, count = np.unique(rows["cid"], return_index=True, return_counts=True)
    end = start + count - 1
    before = baseline if baseline is not None else (snaps[0] if snaps else None)
    started_inside = (~np.isin(cids, before["cid"]) if before is not None
                      else np.ones(len(cids), bool))
    out: dict[str, np.ndarray] = {"cid": cids, "samples": count}
    t0, t1 = rows["timestamp"][start], rows["timestamp"][end]
    out["first_ns"], out["last_ns"] = t0, t1
    duration = (t1 - t0) / 1e9
    out["duration_s"] = duration
    names = rows.dtype.names
    for col, key in (("HCThruOctetsAcked", "bytes_sent"),
                     ("HCThruOctetsReceived", "bytes_received"),
                     ("SegsRetrans", "retransmits")):
        if col in names:
            # the sum of per-step increases, so a 32-bit wrap between samples still counts
            v = rows[col]
            step = np.zeros(len(v), dtype=v.dtype)
            step[1:] = v[1:] - v[:-1]
            step[start] = np.where(started_inside, v[start], 0)
            out[key] = np.add.reduceat(step.astype(np.uint64), start)
    with np.errstate(invalid="ignore", divide="ignore"):
        for key in ("sent", "received"):
            if f"bytes_{key}" in out:
                out[f"throughput_{key}_bps"] = np.where(
                    duration > 0, out[f"bytes_{key}"] * 8 / duration, np.nan)
    gauge = ~is_final
    rtt = (rows["rtt_us"] / 1000.0 if "rtt_us" in names
           else rows["SmoothedRTT"].astype(float) if "SmoothedRTT" in names else None)
    if rtt is not None:
        rtt = np.where(gauge & (rtt > 0), rtt, np.nan)     # 0: no RTT sample yet
        seg = [rtt[s:e + 1] for s, e in zip(start, end)]
        with np.errstate(all="ignore"), _quiet():
            out["rtt_min_ms"] = np.array([np.nanmin(x) if np.isfinite(x).any() else np.nan
                                          for x in seg])
            out["rtt_median_ms"] = np.array([np.nanmedian(x) if np.isfinite(x).any()
                                             else np.nan for x in seg])
            out["rtt_p99_ms"] = np.array([np.nanpercentile(x, 99) if np.isfinite(x).any()
                                          else np.nan for x in seg])
    if "CurCwnd" in names:
        # 0 = no MSS yet (a handshake): not a window the flow ran with
        cw = np.where(gauge & (rows["CurCwnd"] > 0), rows["CurCwnd"].astype(np.float64), np.nan)
        with _quiet():
            out["cwnd_min"] = np.array([np.nanmin(cw[s:e + 1]) if np.isfinite(cw[s:e + 1]).any()
                                        else np.nan for s, e in zip(start, end)])
            out["cwnd_max"] = np.array([np.nanmax(cw[s:e + 1]) if np.isfinite(cw[s:e + 1]).any()
                                        else np.nan for s, e in zip(start, end)])
    out["ended"] = np.logical_or.reduceat(is_final, start) if len(start) else np.zeros(0, bool)
    if ended_cids is not None and len(ended_cids):
        out["ended"] |= np.isin(cids, ended_cids)
    for col in ("local_port", "rem_port", "family", "local_addr", "rem_addr"):
        if col in names:
            out[col] = rows[col][end]
    if all(c in names for c in ("family", "local_addr", "rem_addr", "local_port", "rem_port")):
        out["local"], out["remote"] = _rows.endpoints(rows[end])
    return out


def _quiet() -> Any:
    """Silence numpy's all-NaN warnings (flows without an RTT sample yet)."""
    import warnings

    ctx = warnings.catch_warnings()
    return _Quiet(ctx)


class _Quiet:
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def __enter__(self) -> None:
        import warnings

        self.ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: Any) -> None:
        self.ctx.__exit__(*exc)
