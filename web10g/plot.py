"""Plots of flows over time: throughput, cwnd, RTT and retransmits of the busiest flows.

``plot(source, "out.png")`` takes a list of snapshots (row arrays from ``read_all``), a
monitor result (anything with ``.snapshots``), or the path of a recording, and writes a
PNG with one subplot per quantity and one line per flow. :func:`plot_data` computes the
same series without drawing (no matplotlib needed), for tests and other renderers.

matplotlib is an optional extra (``pip install 'web10g[plot]'``); it is imported when
plotting, and drawn through its Agg canvas directly so the caller's pyplot backend and
global state are left alone.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import recfunctions

from web10g import deltas

# quantity -> (y-axis label, columns it can be computed from, first present wins)
QUANTITIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "throughput": ("throughput sent (bit/s)", ("HCThruOctetsAcked",)),
    "received": ("throughput received (bit/s)", ("HCThruOctetsReceived",)),
    "cwnd": ("cwnd (KB)", ("CurCwnd",)),
    "rtt": ("RTT (ms)", ("rtt_us", "SmoothedRTT")),
    "retransmits": ("retransmits since first sample", ("SegsRetrans",)),
}
DEFAULT_VARS = ("throughput", "cwnd", "rtt", "retransmits")

# Identity columns kept for the legend and for aligning flows between samples.
_KEEP = ("cid", "family", "local_addr", "rem_addr", "local_port", "rem_port", "timestamp")
# Counters that rank flows by bytes moved (both directions: a receiver is busy too).
_MOVED = ("HCThruOctetsAcked", "HCThruOctetsReceived")

# Figure geometry, in inches at DPI: chosen so every size is a whole number of pixels.
DPI = 100
WIDTH_IN = 10.0
_TITLE_IN = 0.75
_PANEL_IN = 2.25
_LEGEND_ROW_IN = 0.25

_NO_MATPLOTLIB = "plotting needs matplotlib: pip install 'web10g[plot]'"


@dataclass
class PlotData:
    """Per flow (rows) and sample (columns) series; NaN where a flow is absent."""

    cids: np.ndarray                      # the flows drawn, busiest first
    labels: list[str]                     # "local -> remote" per flow
    seconds: np.ndarray                   # (flows, samples): time since the first sample
    values: dict[str, np.ndarray] = field(default_factory=dict)   # quantity -> (flows, samples)
    samples: int = 0                      # snapshots in the source
    flows: int = 0                        # distinct flows in the source
    bytes_moved: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))


def legend_columns(nflows: int) -> int:
    return 1 if nflows <= 1 else 2


def figure_size(nvars: int, nflows: int) -> tuple[int, int]:
    """The PNG's (width, height) in pixels for ``nvars`` subplots and ``nflows`` lines."""
    rows = math.ceil(nflows / legend_columns(nflows)) if nflows else 0
    height = _TITLE_IN + _PANEL_IN * nvars + _LEGEND_ROW_IN * (rows + 1)
    return round(WIDTH_IN * DPI), round(height * DPI)


# -- the data -----------------------------------------------------------------------------

def _check_vars(vars: str | Sequence[str]) -> list[str]:
    names = [vars] if isinstance(vars, str) else list(vars)
    if not names:
        raise ValueError("nothing to plot: give at least one of " + ", ".join(QUANTITIES))
    for n in names:
        if n not in QUANTITIES:
            raise ValueError(f"unknown quantity {n!r}: choose from {', '.join(QUANTITIES)}")
    return names


def _columns_for(names: Sequence[str], have: Iterable[str]) -> dict[str, str]:
    """quantity -> the column it is computed from, among ``have``."""
    have = set(have)
    out = {}
    for n in names:
        label, candidates = QUANTITIES[n]
        col = next((c for c in candidates if c in have), None)
        if col is None:
            raise ValueError(f"cannot plot {n}: the samples have no "
                             f"{' or '.join(candidates)} column")
        out[n] = col
    return out


def _is_path(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike))


def _read_recording(path: str | os.PathLike, names: Sequence[str]) -> list[np.ndarray]:
    from web10g.backends.replay import ReplayAgent

    with ReplayAgent(path) as agent:
        have = {v.name for v in agent.variables()}
        cols = set(_columns_for(names, have).values()) | {m for m in _MOVED if m in have}
        # only the columns drawn: a long recording of many flows stays small in memory
        return [_reduce(rows, cols) for rows in agent.samples_iter(sorted(cols))]


def _arrays(source: Any) -> list[np.ndarray]:
    """Row arrays from a list of arrays, sampler Snapshots, or an object with .snapshots."""
    items = getattr(source, "snapshots", source)
    if callable(items):                       # Sampler.snapshots() is a method
        items = items()
    if isinstance(items, np.ndarray):
        raise TypeError("give a list of snapshots (row arrays), not one array")
    out = []
    for it in items:
        if getattr(it, "error", None):        # a failed read of a sampler: no rows
            continue
        out.append(np.asarray(getattr(it, "rows", it)))
    return out


def _reduce(rows: np.ndarray, cols: Iterable[str]) -> np.ndarray:
    """A compact copy of the identity and ``cols`` columns (a copy: sampler rows are views
    into a ring that is overwritten, and every snapshot gets the same dtype)."""
    have = rows.dtype.names or ()
    names = [n for n in _KEEP if n in have] + sorted(set(cols))
    return recfunctions.repack_fields(rows[names]).copy()


def _last_report(rows: np.ndarray) -> np.ndarray:
    """One row per cid (a dump can report a socket twice; the last report wins, as in
    web10g.deltas.align)."""
    _, idx = np.unique(rows["cid"][::-1], return_index=True)
    if len(idx) == len(rows):
        return rows
    return rows[np.sort(len(rows) - 1 - idx)]


def plot_data(source: Any, *, vars: str | Sequence[str] = DEFAULT_VARS,
              top: int | None = 10) -> PlotData:
    """The series :func:`plot` draws: the ``top`` flows by bytes moved (all when None)."""
    names = _check_vars(vars)
    if top is not None and top < 1:
        raise ValueError("top must be at least 1 flow")
    if _is_path(source):
        snaps = _read_recording(source, names)
    else:
        raw = _arrays(source)
        for i in range(1, len(raw)):
            # reads into one reused out= buffer are views of it: keeping those without a
            # copy makes every "snapshot" the latest one, and a plot of nothing but zeros
            if np.may_share_memory(raw[i - 1], raw[i]):
                raise ValueError(f"snapshots {i - 1} and {i} are the same memory (read_all "
                                 "with one out= buffer): keep web10g.rows.copy() of each")
        if len(raw) >= 2:
            have = set(raw[0].dtype.names or ())
            need = set(_columns_for(names, have).values()) | {m for m in _MOVED if m in have}
            for i, r in enumerate(raw):
                missing = sorted(need - set(r.dtype.names or ()))
                if missing:
                    raise ValueError(f"snapshot {i} has no {', '.join(missing)} column: "
                                     "sample the same variables every time")
            raw = [_reduce(r, need) for r in raw]
        snaps = raw
    if len(snaps) < 2:
        raise ValueError(f"plotting needs at least two samples, got {len(snaps)}: "
                         "throughput and retransmits are differences between samples")
    cols = _columns_for(names, snaps[0].dtype.names or ())

    # Rank every flow by bytes moved over the whole series (wrap-safe per-step sums).
    summary = deltas.summarize(snaps)
    if len(summary["cid"]) == 0:
        raise ValueError(f"no flows in the {len(snaps)} samples: nothing to plot")
    moved = np.zeros(len(summary["cid"]), dtype=np.uint64)
    for key in ("bytes_sent", "bytes_received"):
        if key in summary:
            moved += summary[key]
    # busiest first; equal totals keep cid order so the choice is reproducible
    order = np.lexsort((summary["cid"], -moved.astype(np.float64)))
    chosen = order[: top if top is not None else len(order)]
    cids = summary["cid"][chosen]

    nflows, nsamples = len(cids), len(snaps)
    t0 = min(int(s["timestamp"].min()) for s in snaps if len(s))
    seconds = np.full((nflows, nsamples), np.nan)
    values = {n: np.full((nflows, nsamples), np.nan) for n in names}
    sorter = np.argsort(cids)
    retrans = np.zeros(nflows)              # running sum of SegsRetrans increases
    last = snaps[0][:0]                     # each chosen flow's latest row so far

    def slots(rows: np.ndarray) -> np.ndarray:
        return sorter[np.searchsorted(cids, rows["cid"], sorter=sorter)]

    for k, snap in enumerate(snaps):
        rows = _last_report(snap[np.isin(snap["cid"], cids)])
        if not len(rows):
            continue
        f = slots(rows)
        seconds[f, k] = (rows["timestamp"].astype(np.int64) - t0) / 1e9
        # Against each flow's previous appearance (not the previous sample), so a flow
        # missing from some samples resumes with the change over the whole gap.
        d = deltas.delta(last, rows)
        g = slots(d.rows)
        for name, col in cols.items():
            if name in ("throughput", "received"):
                values[name][g, k] = d.rows[f"{col}_per_s"] * 8
            elif name == "retransmits":
                retrans[g] += d.rows[col]
                values[name][f, k] = retrans[f]     # 0 at a flow's first appearance
            elif name == "rtt":
                ms = rows[col] / 1000.0 if col == "rtt_us" else rows[col].astype(float)
                values[name][f, k] = ms
            elif name == "cwnd":
                values[name][f, k] = rows[col] / 1000.0
        keep = ~np.isin(last["cid"], rows["cid"])
        last = np.concatenate([last[keep], rows])
    from web10g.rows import endpoints

    label_rows = last[np.argsort(last["cid"])]
    at = np.searchsorted(label_rows["cid"], cids)
    local, remote = endpoints(label_rows[at])
    labels = [f"{a} -> {b}" for a, b in zip(local.tolist(), remote.tolist())]
    return PlotData(cids=cids, labels=labels, seconds=seconds, values=values,
                    samples=nsamples, flows=len(summary["cid"]), bytes_moved=moved[chosen])


# -- drawing ------------------------------------------------------------------------------

def _isolated(y: np.ndarray) -> np.ndarray:
    """Finite points with no finite neighbour: a line through them draws nothing."""
    ok = np.isfinite(y)
    left = np.concatenate([[False], ok[:-1]])
    right = np.concatenate([ok[1:], [False]])
    return ok & ~left & ~right


def plot(source: Any, path: str | os.PathLike, *,
         vars: str | Sequence[str] = DEFAULT_VARS, top: int | None = 10,
         title: str | None = None) -> Path:
    """Render the ``top`` flows (by bytes moved) of ``source`` to a PNG at ``path``.

    ``source`` is a list of snapshots (row arrays, oldest first), an object with
    ``.snapshots`` (a monitor result or a sampler), or the path of a recording. One
    subplot per quantity in ``vars`` (throughput, received, cwnd, rtt, retransmits), x
    in seconds since the first sample, one line per flow; a flow missing from some
    samples has a gap there. Needs at least two samples. Returns the path written.
    """
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import EngFormatter, MaxNLocator
    except ImportError:
        raise ImportError(_NO_MATPLOTLIB) from None
    data = plot_data(source, vars=vars, top=top)
    names = list(data.values)
    nflows = len(data.cids)
    width, height = figure_size(len(names), nflows)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    # one colour per flow, the same in every subplot
    palette = colormaps["tab10" if nflows <= 10 else "tab20"]
    handles = []
    for ax, name in zip(axes, names):
        for i in range(nflows):
            colour = palette(i % palette.N)
            x, y = data.seconds[i], data.values[name][i]
            (line,) = ax.plot(x, y, color=colour, linewidth=1.2)
            lone = _isolated(np.where(np.isfinite(x), y, np.nan))
            if lone.any():      # a sample between gaps would otherwise be invisible
                ax.plot(x[lone], y[lone], "o", color=colour, markersize=3)
            if ax is axes[0]:
                handles.append(line)
        ax.set_ylabel(QUANTITIES[name][0], fontsize=9)
        ax.grid(True, alpha=0.3)
        if name in ("throughput", "received"):
            ax.yaxis.set_major_formatter(EngFormatter(unit="b/s"))
        elif name == "retransmits":
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))   # segments are whole
        if name in ("throughput", "received", "cwnd", "retransmits"):
            finite = data.values[name][np.isfinite(data.values[name])]
            # all zero (idle flows): a 0..1 axis instead of matplotlib's +-0.05 around 0
            ax.set_ylim(0, None if finite.size and finite.max() > 0 else 1)
    axes[-1].set_xlabel("seconds since the first sample")
    span = np.nanmax(data.seconds) if np.isfinite(data.seconds).any() else 0.0
    if title is None:
        title = (f"web10g: the {nflows} busiest of {data.flows} flows by bytes moved, "
                 f"{data.samples} samples over {span:.1f} s")
        if _is_path(source):
            title += f" ({Path(source).name})"
    fig.suptitle(title)
    fig.legend(handles, data.labels, loc="outside lower center",
               ncols=legend_columns(nflows), fontsize=8, frameon=False)
    out = Path(path)
    from web10g._files import create_output

    # no symlink followed, nothing but a regular file replaced (web10g._files)
    with create_output(out, overwrite=True) as fh:
        fig.savefig(fh, format="png", dpi=DPI)
    return out


__all__ = ["plot", "plot_data", "PlotData", "figure_size", "QUANTITIES", "DEFAULT_VARS"]
