"""``web10g top``: a live view of the flows, busiest first, refreshed in place.

Each frame compares two consecutive samples: throughput is the bytes acknowledged per
second between them (wrap-safe, per flow, by web10g.deltas).

On a terminal the view fills the window and follows its size: as many flows as fit, and
when the window is narrow the least useful columns go first (acked, cc, state, retrans,
cwnd, rtt; never the sort column), then the endpoints are shortened from the left so
their ports stay. Keys: q quits (so does Ctrl-C), s/S cycle the sort column, and
t, r, c, x sort by throughput, RTT, cwnd and retransmits. With --count N it stops after
N frames and leaves the last one on the screen.

Piped (stdout not a terminal) or with --once, it prints one table, or --count N of them
separated by blank lines, as wide as the table needs (--width to choose), and exits.
The live view is drawn by rich (pip install 'web10g[top]'); printed tables need nothing.
"""
from __future__ import annotations

import argparse
import math
import os
import select
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from web10g import deltas, mib
from web10g.cli import _common as c
from web10g.rows import endpoints

# Sort orders: name -> the key that selects it (s and S cycle through them in this
# order). Every order is largest first; flows with no value (a new flow's throughput)
# come last, ties go to the busier flow.
SORTS: dict[str, str] = {"throughput": "t", "rtt": "r", "cwnd": "c", "retrans": "x"}
SORT_KEYS = {key: name for name, key in SORTS.items()}

# The columns, in display order: (id, heading, right-aligned).
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("local", "local", False), ("remote", "remote", False), ("state", "state", False),
    ("throughput", "throughput", True), ("acked", "acked", True), ("rtt", "rtt ms", True),
    ("cwnd", "cwnd", True), ("retrans", "retrans", True), ("cc", "cc", False))
# Too narrow a window drops these first (the sort column stays), then shortens the
# endpoints, then drops the local one.
DROP_FIRST = ("acked", "cc", "state", "retrans", "cwnd", "rtt")
# Numeric columns are as wide as their widest value ("999.9 KB/s"), so that the live
# view does not shift sideways from one frame to the next.
MIN_WIDTH = {"throughput": 10, "acked": 8, "cwnd": 8, "rtt": 6}
MIN_ENDPOINT = 12           # "…1.2.3:45678": still ends with the port
LAST_ENDPOINT = 9           # the remote end alone, at the narrowest: "…0.1:5201"
GAP = 1                     # spaces between columns
# Rows around the flows in the live view: the summary, the headings and the key line.
CHROME_LINES = 3
RICH_MISSING = "the live view needs rich: pip install 'web10g[top]'"


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


def sorts_for(names: list[str]) -> list[str]:
    """The sort orders the variables read allow, in cycling order."""
    needs = {"throughput": {"HCThruOctetsAcked"}, "rtt": {"rtt_us", "SmoothedRTT"},
             "cwnd": {"CurCwnd"}, "retrans": {"SegsRetrans"}}
    return [s for s, need in needs.items() if need & set(names)]


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


def _column(rows: np.ndarray, name: str) -> np.ndarray:
    if name in (rows.dtype.names or ()):
        return rows[name].astype(np.float64)
    return np.full(len(rows), np.nan)


def sort_order(rows: np.ndarray, rate: np.ndarray, sort: str) -> np.ndarray:
    """Row indices, the largest ``sort`` value first; unknown values last, then ties by
    throughput, bytes acknowledged and cid."""
    if sort == "throughput":
        key = rate
    elif sort == "rtt":
        key = _rtt_ms(rows)
    else:
        key = _column(rows, {"cwnd": "CurCwnd", "retrans": "SegsRetrans"}[sort])

    def desc(v: np.ndarray) -> np.ndarray:
        return -np.where(np.isfinite(v), v, -np.inf)

    return np.lexsort((rows["cid"], desc(_column(rows, "HCThruOctetsAcked")), desc(rate),
                       desc(key)))


@dataclass
class Sample:
    """What one frame shows: a sample, its flows' rates since the previous one."""

    rows: np.ndarray
    rate: np.ndarray
    read_s: float
    backend: str


def glyphs() -> tuple[str, str]:
    """The ellipsis and the sort mark: "…" and "▼" when stdout can encode them."""
    try:
        "…▼".encode(sys.stdout.encoding or "ascii")
        return "…", "▼"
    except (LookupError, UnicodeEncodeError):
        return "~", "*"


def shorten(text: str, width: int) -> str:
    """``text`` in ``width`` cells, cut on the left: an endpoint keeps its port."""
    if len(text) <= width:
        return text
    return glyphs()[0] + text[len(text) - width + 1:] if width > 1 else text[-width:]


def cells(sample: Sample, shown: np.ndarray) -> dict[str, list[str]]:
    """The text of every column, for the rows ``shown`` (in that order)."""
    rows = sample.rows[shown]
    names = rows.dtype.names or ()
    local, remote = endpoints(rows) if len(rows) else (np.zeros(0, str), np.zeros(0, str))
    out = {"local": local.tolist(), "remote": remote.tolist(),
           "state": [mib.STATE_NAMES.get(int(s), "?") for s in rows["state"]],
           "throughput": [human(float(v), "B/s") for v in sample.rate[shown]],
           "acked": [human(float(v), "B") for v in rows["HCThruOctetsAcked"]],
           "rtt": [f"{v:.3f}" if math.isfinite(v) else "-" for v in _rtt_ms(rows)]}
    if "CurCwnd" in names:
        out["cwnd"] = [human(float(v), "B") for v in rows["CurCwnd"]]
    if "SegsRetrans" in names:
        out["retrans"] = [str(int(v)) for v in rows["SegsRetrans"]]
    if "cc_algorithm" in names:
        out["cc"] = [v.decode("ascii", "replace") for v in rows["cc_algorithm"]]
    if not ({"rtt_us", "SmoothedRTT"} & set(names)):
        del out["rtt"]
    return out


def layout(natural: dict[str, int], width: int | None, sort: str) -> dict[str, int]:
    """The columns shown and their widths, in display order, to fit ``width`` cells."""
    widths = {k: natural[k] for k, _, _ in COLUMNS if k in natural}

    def total() -> int:
        return sum(widths.values()) + GAP * (len(widths) - 1)

    if width is None:
        return widths
    for k in DROP_FIRST:
        if total() <= width:
            return widths
        if k != sort:
            widths.pop(k, None)
    # shorten the endpoints, the longer one first, down to MIN_ENDPOINT each
    while total() > width:
        k = max(("local", "remote"), key=lambda e: widths.get(e, 0))
        if widths.get(k, 0) <= MIN_ENDPOINT:
            break
        widths[k] -= 1
    if total() > width and "local" in widths:
        del widths["local"]             # the remote end tells flows apart best
        widths["remote"] = min(natural["remote"],
                               max(LAST_ENDPOINT, widths["remote"] + width - total()))
    return widths                       # if still too wide, the lines are cut


def fit_parts(parts: list[tuple[str, int]], width: int | None) -> str:
    """Join ``parts`` (text, keep priority: 0 always) dropping the least important ones
    (highest number) until the line fits ``width``."""
    keep = list(parts)
    while width is not None and len("".join(t for t, _ in keep)) > width:
        worst = max(p for _, p in keep)
        if worst == 0:
            break
        keep = [(t, p) for t, p in keep if p != worst]
    line = "".join(t for t, _ in keep)
    return line if width is None else line[:width]


def summary(sample: Sample, shown: int, sort: str, width: int | None) -> str:
    rows, rate = sample.rows, sample.rate
    when = (datetime.fromtimestamp(int(rows["timestamp"].max()) / 1e9) if len(rows)
            else datetime.now()).strftime("%H:%M:%S.%f")[:-3]
    total = float(np.nansum(rate)) if len(rate) else 0.0
    count = f"{len(rows)} flows" + (f" ({shown} shown)" if shown < len(rows) else "")
    return fit_parts([("web10g top: ", 1), (f"{count} by {sort}", 0),
                      (f", sample {when}", 4), (f", read {sample.read_s * 1000:.1f} ms", 5),
                      (f", total {human(total, 'B/s')}", 2),
                      (f" [{sample.backend}]" if sample.backend else "", 3)], width)


def key_line(sorts: list[str], sort: str, width: int | None, status: str) -> Any:
    """The keys, the active sort key highlighted; shorter forms when narrow."""
    from rich.text import Text

    for style in ("long", "short", "keys"):
        line = Text(no_wrap=True, overflow="crop")
        if status:
            line.append(status + "  ", "bold")
        line.append("q" if style == "keys" else "q quit", "bold")
        line.append(" s" if style == "keys" else "  s sort", "bold")
        for name in sorts:
            label = {"long": f"  {SORTS[name]} {name}", "short": f" {SORTS[name]}:{name[:4]}",
                     "keys": f" {SORTS[name]}"}[style]
            line.append(label[:len(label) - len(label.lstrip())])
            line.append(label.lstrip(), "reverse bold" if name == sort else "")
        if width is None or line.cell_len <= width:
            break
    return line


@dataclass
class Frame:
    """One frame laid out: the summary line, the columns kept with their widths and
    headings, and the cells of the rows shown (endpoints already shortened)."""

    summary: str
    widths: dict[str, int]
    heads: dict[str, str]
    rows: list[list[str]]
    cut: int | None = None      # the width lines are cut at

    def lines(self) -> list[str]:
        """As plain text: the summary, the headings, a line per flow."""
        right = {k for k, _, r in COLUMNS if r}

        def line(values: list[str]) -> str:
            return (" " * GAP).join(v.rjust(w) if k in right else v.ljust(w)
                                    for (k, w), v in zip(self.widths.items(),
                                                         values))[:self.cut].rstrip()

        return [self.summary, line([self.heads[k] for k in self.widths]),
                *map(line, self.rows)]


def frame(sample: Sample, *, sort: str, limit: int | None, width: int | None,
          mark: str = "") -> Frame:
    """The busiest ``limit`` flows by ``sort`` laid out for ``width`` cells (None: every
    column, at its natural width); ``mark`` follows the sort column's heading."""
    order = sort_order(sample.rows, sample.rate, sort)
    shown = order[:limit] if limit is not None else order
    text = cells(sample, shown)
    heads = {k: h + (mark if k == sort else "") for k, h, _ in COLUMNS}
    natural = {k: max([len(heads[k]), MIN_WIDTH.get(k, 0)] + [len(v) for v in vals])
               for k, vals in text.items()}
    widths = layout(natural, width, sort)
    for k in ("local", "remote"):
        if k in widths and widths[k] < natural[k]:
            text[k] = [shorten(v, widths[k]) for v in text[k]]
    rows = [list(r) for r in zip(*(text[k] for k in widths))] if len(shown) else []
    return Frame(summary(sample, len(shown), sort, width), widths, heads, rows, width)


def live_view(f: Frame, *, sort: str, sorts: list[str], width: int, height: int,
              status: str) -> Any:
    """A frame for the live view: a rich renderable exactly ``height`` lines tall (the
    summary, the table, blank lines, the key line)."""
    from rich.console import Group
    from rich.table import Column, Table
    from rich.text import Text

    right = {k for k, _, r in COLUMNS if r}
    table = Table(*(Column(f.heads[k], width=w, no_wrap=True, overflow="crop",
                           justify="right" if k in right else "left",
                           header_style="bold reverse" if k == sort else "")
                    for k, w in f.widths.items()),
                  box=None, padding=(0, GAP, 0, 0), pad_edge=False, show_edge=False,
                  header_style="reverse", expand=False)
    for r in f.rows:
        table.add_row(*map(Text, r))     # Text: "[::1]:22" is no markup
    blank = [Text("")] * max(0, height - CHROME_LINES - len(f.rows))
    return Group(Text(f.summary, style="bold", no_wrap=True, overflow="crop"), table,
                 *blank, key_line(sorts, sort, width, status))


# -- the terminal ---------------------------------------------------------------------------

@contextmanager
def cbreak(fd: int | None) -> Iterator[int | None]:
    """Keys as they are typed (no echo, no Enter), the terminal restored on the way out.
    ``fd`` None (stdin not a terminal): no keys."""
    if fd is None:
        yield None
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def keys(fd: int | None, timeout: float) -> str:
    """The keys typed within ``timeout`` seconds (returns at the first ones), escape
    sequences (arrows, function keys) left out."""
    if fd is None:
        time.sleep(max(0.0, timeout))
        return ""
    ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
    if not ready:
        return ""
    data = os.read(fd, 64).decode("latin-1")
    if not data:                        # the terminal went away: as if q
        return "q"
    out, i = [], 0
    while i < len(data):
        if data[i] == "\x1b":           # ESC [ ... final byte, or ESC O x
            i += 1
            if i < len(data) and data[i] in "[O":
                i += 1
                while i < len(data) and not ("@" <= data[i] <= "~"):
                    i += 1
            i += 1
            continue
        out.append(data[i])
        i += 1
    return "".join(out)


def terminal_size(fallback: tuple[int, int] = (80, 24)) -> tuple[int, int]:
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
        return size.columns, size.lines
    except (OSError, ValueError):
        return fallback


# -- the tool ---------------------------------------------------------------------------------

def sort_arg(text: str) -> str:
    t = text.strip().lower()
    if t in SORT_KEYS:
        return SORT_KEYS[t]
    if t == "retransmits":
        return "retrans"
    if t in SORTS:
        return t
    raise argparse.ArgumentTypeError(
        f"unknown sort {text!r}: one of {', '.join(SORTS)} (or {', '.join(SORT_KEYS)})")


def main(argv: list[str] | None = None, prog: str = "web10g-top") -> int:
    p = c.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    c.add_loop(p)
    c.add_filter(p)
    c.add_backend(p)
    p.add_argument("--top", type=int, metavar="N",
                   help="show the N busiest flows (default: as many as fit the terminal; "
                        "all of them when piped)")
    p.add_argument("--sort", type=sort_arg, default="throughput", metavar="KEY",
                   help="sort by throughput (t, the default), rtt (r), cwnd (c) or "
                        "retrans (x); largest first")
    p.add_argument("--once", action="store_true",
                   help="print one table and exit, as when piped")
    p.add_argument("--width", type=int, metavar="COLS",
                   help="lay the table out for COLS columns (default: the terminal's "
                        "width; piped, as wide as the table needs)")
    args = p.parse_args(argv)

    def body() -> int:
        c.stop_on_sigterm()
        interval = c.interval_of(args)
        if args.top is not None and args.top < 1:
            raise c.ToolError("--top must be at least 1")
        if args.width is not None and args.width < 20:
            raise c.ToolError("--width must be at least 20")
        if args.once and args.count is not None:
            raise c.ToolError("give either --once or --count N, not both")
        live = sys.stdout.isatty() and not args.once
        try:
            with c.open_agent(args) as agent:
                names = columns_for(agent)
                sorts = sorts_for(names)
                if args.sort not in sorts:
                    raise c.ToolError(f"cannot sort by {args.sort}: the {agent.backend} "
                                      "backend does not provide it")
                states = [s.strip() for s in args.states.split(",")] if args.states else None
                tool = Top(agent, args, names, states, sorts, interval)
                return tool.live() if live else tool.print_frames()
        except KeyboardInterrupt:
            return 0                        # Ctrl-C is how a live view is left

    return c.run_tool(prog, body)


class Top:
    """Sampling and showing: frames printed one after another, or the live view."""

    def __init__(self, agent: Any, args: argparse.Namespace, names: list[str],
                 states: Any, sorts: list[str], interval: float) -> None:
        self.agent, self.args, self.names, self.states = agent, args, names, states
        self.sorts, self.sort, self.interval = sorts, args.sort, interval
        self.prev: np.ndarray | None = None

    def read(self) -> Sample | None:
        """The next sample, None the first time (it only gives the rates a base)."""
        t0 = time.perf_counter()
        rows = self.agent.read_all(self.names, filter=self.args.filter, states=self.states)
        took = time.perf_counter() - t0
        rows = rows.copy()      # read_all reuses its buffer on the next read
        prev, self.prev = self.prev, rows
        if prev is None:
            return None
        return Sample(rows, rates(prev, rows), took, self.agent.backend)

    def print_frames(self) -> int:
        """Piped or --once: --count N tables (one by default), blank lines between. Plain
        text: as fast for a hundred thousand flows as for ten."""
        width = self.args.width
        if width is None and sys.stdout.isatty():
            width = terminal_size()[0]
        frames = 1 if self.args.count is None else self.args.count
        printed = 0
        # One more sample than frames; ticks() replays a recording as fast as it can.
        for _ in c.ticks(self.interval, frames + 1, self.agent):
            sample = self.read()
            if sample is None:
                continue
            f = frame(sample, sort=self.sort, limit=self.args.top, width=width)
            sys.stdout.write(("\n" if printed else "") + "\n".join(f.lines()) + "\n")
            sys.stdout.flush()
            printed += 1
        return 0

    def live(self) -> int:
        """The live view: redrawn in place in the terminal's alternate screen, keys read
        from stdin when it is a terminal."""
        try:
            from rich.console import Console
            from rich.live import Live
            from rich.text import Text
        except ImportError:
            raise c.ToolError(RICH_MISSING) from None

        console = Console(highlight=False, emoji=False, markup=False)
        fd = sys.stdin.fileno() if sys.stdin.isatty() else None
        sample: Sample | None = None
        status = "" if self.agent.capabilities.live else "replay"
        size = terminal_size((console.width, console.height))
        frames = 0
        ended = False

        def limit(height: int) -> int:
            room = max(0, height - CHROME_LINES)
            return room if self.args.top is None else min(self.args.top, room)

        def draw() -> Any:
            nonlocal size
            size = terminal_size(size)
            width = self.args.width or size[0]
            console.size = (width, size[1])
            if sample is None:
                return Text("web10g top: the recording ends before a second sample, q quits"
                            if ended else "web10g top: measuring, the rates need a second "
                            f"sample ({self.interval:g} s)", no_wrap=True, overflow="crop")
            f = frame(sample, sort=self.sort, limit=limit(size[1]), width=width,
                      mark=glyphs()[1])
            return live_view(f, sort=self.sort, sorts=self.sorts, width=width,
                             height=size[1], status=status)

        self.read()     # before the screen changes: a bad filter shows as it is
        with cbreak(fd), Live(console=console, screen=True, auto_refresh=False,
                              redirect_stdout=False, redirect_stderr=False) as screen:
            start = time.monotonic()
            slot = 0
            screen.update(draw(), refresh=True)
            while self.args.count is None or frames < self.args.count:
                due = start + (slot + 1) * self.interval
                typed = keys(fd, 0.25 if ended else min(due - time.monotonic(), 0.25))
                redraw = terminal_size(size) != size        # the window was resized
                for k in typed:
                    if k in "qQ\x03\x04":
                        return 0
                    if k in "sS":
                        step = 1 if k == "s" else -1
                        self.sort = self.sorts[(self.sorts.index(self.sort) + step)
                                               % len(self.sorts)]
                        redraw = True
                    elif SORT_KEYS.get(k.lower()) in self.sorts:
                        self.sort = SORT_KEYS[k.lower()]
                        redraw = True
                if not ended and time.monotonic() >= due:
                    slot += 1
                    now = time.monotonic()
                    if now > start + (slot + 1) * self.interval:    # late: skip ahead
                        slot = int((now - start) // self.interval)
                    try:
                        sample = self.read()
                        frames += 1
                    except EOFError:                # a replay's end: stay until q
                        ended, status = True, "end of recording"
                        if fd is None:
                            break
                    redraw = True
                if redraw:
                    screen.update(draw(), refresh=True)
        # a counted run (or a replay's end with no keys to quit by) leaves its last frame
        # behind, as many rows as the live view had
        if sample is not None:
            f = frame(sample, sort=self.sort, limit=limit(size[1]),
                      width=self.args.width or size[0])
            sys.stdout.write("\n".join(f.lines()) + "\n")
            sys.stdout.flush()
        return 0


if __name__ == "__main__":
    sys.exit(main())
