"""Helpers shared by the benchmark scripts: machine description, timing, tables."""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:           # run from a checkout with the in-place build
    sys.path.insert(0, ROOT)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def meminfo_kib(key: str) -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "?"


def machine_lines() -> list[str]:
    import numpy

    import web10g

    lines = [
        f"machine : {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"{cpu_model()}",
        f"kernel  : {platform.release()} ({platform.machine()})",
        f"memory  : {meminfo_kib('MemTotal') / 2**20:.1f} GiB total, "
        f"{meminfo_kib('MemAvailable') / 2**20:.1f} GiB available",
        f"software: Python {platform.python_version()}, numpy {numpy.__version__}, "
        f"web10g {web10g.__version__}",
        f"load    : {loadavg()} (1/5/15 min) at start; other work on the machine adds noise",
    ]
    try:
        with open("/proc/sys/net/ipv4/tcp_ehash_entries") as fh:
            lines.append(f"tcp_ehash_entries: {fh.read().strip()} (the hash every dump walks)")
    except OSError:
        pass
    return lines


def time_calls(fn: Callable[[], object], repeat: int, warmup: int = 2) -> list[float]:
    """Seconds per call of ``fn``, ``repeat`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]],
          align: str | None = None) -> str:
    """Fixed-width text table; ``align`` is one of 'l'/'r' per column (default right)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    align = align or "r" * len(headers)

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(r, widths, align)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(cells[0]), sep] + [fmt(r) for r in cells[1:]])
