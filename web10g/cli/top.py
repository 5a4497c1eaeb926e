"""``web10g top``: a live view of the flows, busiest first, refreshed in place.

Each frame compares two consecutive samples: throughput is the bytes acknowledged per
second between them (wrap-safe, per flow, by web10g.deltas). On a terminal the frame is
redrawn in place; piped, frames are printed one after another. Ctrl-C quits.
"""
from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

import numpy as np

from web10g import deltas, mib
from web10g.cli import _common as c

HEADER_LINES = 2            # the summary line and the column headings
_HOME, _CLEAR, _CLEAR_EOL, _CLEAR_BELOW = "\x1b[H", "\x1b[2J", "\x1b[K", "\x1b[J"
_HIDE_CURSOR, _SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def human(value: float, unit: str, scale: int = 1000) -> str:
    """``value`` with an SI prefix: 12.3 MB/s. NaN (unknown) is "-"."""
    if not math.isfinite(value):
        return "-"
    for prefix in ("", "K", "M", "G"):
        if abs(value) < 999.95:         # 999.96 would print as "1000.0"
            return f"{value:.1f} {prefix}{unit}"
        value /= scale
    return f"{value:.1f} T{unit}"


def columns_for(agent: Any) -> list[str]:
    """The variables top reads, among those the agent (backend or recording) has."""
    have = {v.name for v in agent.variables()}
    if "HCThruOctetsAcked" not in have:
        raise c.ToolError(f"the {agent.backend} backend has no HCThruOctetsAcked: "
                          "top cannot compute throughput")
    rtt = "rtt_us" if "rtt_us" in have else "SmoothedRTT"
    return [n for n in ("HCThruOctetsAcked", rtt, "CurCwnd", "SegsRetrans", "cc_algorithm")
            if n in have]


def rates(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Bytes acknowledged per second for each row of ``cur`` since ``prev`` (aligned by
    cid, wrap-safe); NaN for flows new in ``cur``."""
    out = np.full(len(cur), np.nan)
    if not len(prev) or not len(cur):
        return out
    _, ic = deltas.align(prev, cur)
    # delta() aligns the same way, so its rows are cur[ic], in that order
    out[ic] = deltas.delta(prev, cur).rows["HCThruOctetsAcked_per_s"]
    return out


def _rtt_ms(rows: np.ndarray) -> np.ndarray:
    names = rows.dtype.names or ()
    if "rtt_us" in names:
        return rows["rtt_us"] / 1000.0
    if "SmoothedRTT" in names:
        return rows["SmoothedRTT"].astype(float)
    return np.full(len(rows), np.nan)


def render(rows: np.ndarray, rate: np.ndarray, *, read_s: float, limit: int | None,
           backend: str = "", width: int | None = None) -> list[str]:
    """One frame: the summary line, the column headings and the busiest ``limit`` flows."""
    from web10g.sockdiag import endpoints

    names = rows.dtype.names or ()
    busy = np.where(np.isfinite(rate), rate, -1.0)        # new flows after measured ones
    order = np.lexsort((rows["cid"], -rows["HCThruOctetsAcked"].astype(np.float64), -busy))
    shown = order[:limit] if limit is not None else order
    when = (datetime.fromtimestamp(int(rows["timestamp"].max()) / 1e9) if len(rows)
            else datetime.now()).strftime("%H:%M:%S.%f")[:-3]
    total = float(np.nansum(rate)) if len(rate) else 0.0
    count = f"{len(rows)} flows" + (f" ({len(shown)} shown)" if len(shown) < len(rows) else "")
    summary = (f"web10g top: {count}, sample {when}, read {read_s * 1000:.1f} ms, "
               f"total {human(total, 'B/s')}" + (f" [{backend}]" if backend else ""))
    top = rows[shown]
    local, remote = endpoints(top) if len(top) else (np.zeros(0, str), np.zeros(0, str))
    aw = max([len("local")] + [len(s) for s in local.tolist() + remote.tolist()])
    cc = "cc_algorithm" in names
    head = (f"{'local':<{aw}} {'remote':<{aw}} {'state':<11} {'throughput':>11} "
            f"{'rtt ms':>8} {'cwnd':>9} {'retrans':>7}" + (" cc" if cc else ""))
    lines = [summary, head]
    rtt = _rtt_ms(top)
    for i, r in enumerate(top):
        line = (f"{local[i]:<{aw}} {remote[i]:<{aw}} "
                f"{mib.STATE_NAMES.get(int(r['state']), '?'):<11} "
                f"{human(float(rate[shown[i]]), 'B/s'):>11} {rtt[i]:8.3f} "
                f"{human(float(r['CurCwnd']), 'B') if 'CurCwnd' in names else '-':>9} "
                f"{int(r['SegsRetrans']) if 'SegsRetrans' in names else '-':>7}")
        if cc:
            line += " " + r["cc_algorithm"].decode("ascii", "replace")
        lines.append(line)
    if width is not None:
        # a wrapped line would push the frame down and break the in-place redraw
        lines = [ln[:width] for ln in lines]
    return lines


class Screen:
    """Where frames go: redrawn in place on a terminal, appended otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.frames = 0

    def rows_available(self) -> int:
        """Flow rows that fit under the headings, leaving the cursor a line of its own."""
        return max(1, shutil.get_terminal_size().lines - HEADER_LINES - 1)

    def width(self) -> int | None:
        return shutil.get_terminal_size().columns if self.tty else None

    def show(self, lines: Sequence[str]) -> None:
        if not self.tty:
            self.out.write("\n".join(lines) + "\n\n")
        else:
            # Clear the screen once, then overwrite in place (home, clear each line's
            # tail, clear below): wiping the whole screen every frame flickers.
            start = _HIDE_CURSOR + _CLEAR + _HOME if not self.frames else _HOME
            self.out.write(start + "".join(ln + _CLEAR_EOL + "\n" for ln in lines)
                           + _CLEAR_BELOW)
        self.out.flush()
        self.frames += 1

    def close(self) -> None:
        if self.tty and self.frames:
            self.out.write(_SHOW_CURSOR)
            self.out.flush()


def main(argv: list[str] | None = None, prog: str = "web10g-top") -> int:
    p = c.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    c.add_loop(p)
    c.add_filter(p)
    c.add_backend(p)
    p.add_argument("--top", type=int, metavar="N",
                   help="show the N busiest flows (default: as many as fit the terminal)")
    args = p.parse_args(argv)

    def body() -> int:
        c.stop_on_sigterm()
        interval = c.interval_of(args)
        if args.top is not None and args.top < 1:
            raise c.ToolError("--top must be at least 1")
        screen = Screen(sys.stdout)
        try:
            with c.open_agent(args) as agent:
                names = columns_for(agent)
                states = ([s.strip() for s in args.states.split(",")] if args.states
                          else "open" if agent.backend == "sock_diag" else None)
                replay = bool(getattr(agent, "replay", False))
                # ticks() replays as fast as it can; someone watching wants the pace
                pace = None if replay and screen.tty else agent
                # One more sample than frames: the first only gives the rates a base.
                frames = None if args.count is None else args.count + 1
                prev: np.ndarray | None = None
                for _ in c.ticks(interval, frames, pace):
                    t0 = time.perf_counter()
                    rows = agent.read_all(names, filter=args.filter, states=states)
                    took = time.perf_counter() - t0
                    rows = rows.copy()      # read_all reuses its buffer on the next read
                    if prev is not None:
                        limit = args.top if args.top is not None else screen.rows_available()
                        screen.show(render(rows, rates(prev, rows), read_s=took,
                                           limit=limit, backend=agent.backend,
                                           width=screen.width()))
                    prev = rows
        except KeyboardInterrupt:
            return 0                        # Ctrl-C is how a live view is left
        finally:
            screen.close()
        return 0

    return c.run_tool(prog, body)


if __name__ == "__main__":
    sys.exit(main())
