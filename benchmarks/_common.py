"""Helpers shared by the benchmark scripts: machine description, timing, tables, and the
results every script writes as JSON (see benchmarks/README.md, "Results as data").

A script makes one :class:`Results`, prints its tables through ``res.table(...)``, states
its targets through ``res.target(...)`` (PASS/MISS), and ends with ``res.save()``, which
writes ``<script>-<UTC time>.json`` into ``--results-dir`` (or $WEB10G_BENCH_RESULTS, as
`make bench` sets it, or benchmarks/results/). benchmarks/report.py reads a directory of
them: it prints every target of the run and rewrites README.md's performance section
from the tables marked ``readme=True``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

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


# ---- results as data ---------------------------------------------------------------------

SCHEMA = "web10g-bench/1"
RESULTS_ENV = "WEB10G_BENCH_RESULTS"
DEFAULT_RESULTS_DIR = os.path.join(HERE, "results")


def add_results_args(parser: argparse.ArgumentParser) -> None:
    """--results-dir and --json, the flags every script takes (beside --quick)."""
    parser.add_argument("--results-dir", default=None,
                        help=f"where to write the JSON results (default: ${RESULTS_ENV}, "
                        "else benchmarks/results/)")
    parser.add_argument("--json", dest="json_path", default=None,
                        help="write the JSON results to exactly this file")


def git_commit() -> str:
    """The checkout's commit, with "+dirty" when files differ from it."""
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev or "unknown") + ("+dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    import numpy

    import web10g

    return {
        "cpu": cpu_model(), "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(), "arch": platform.machine(),
        "mem_total_gib": round(meminfo_kib("MemTotal") / 2**20, 1),
        "python": platform.python_version(), "numpy": numpy.__version__,
        "web10g": web10g.__version__, "commit": git_commit(),
    }


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Results:
    """One script's results: tables, targets and free-form figures, saved as JSON.

    ``what`` (on tables and targets) says what was read: variables, extensions, states,
    sockets, ring size... so that no figure stands without its request.
    """

    def __init__(self, script: str, args: argparse.Namespace | None = None,
                 description: str = "") -> None:
        self.script = script
        self.args = args
        self.data: dict[str, Any] = {
            "schema": SCHEMA, "script": script, "description": description,
            "argv": sys.argv[1:], "quick": bool(getattr(args, "quick", False)),
            "started": _utc_now(), "load_start": loadavg(), "machine": machine_info(),
            "tables": [], "targets": [], "figures": {},
        }

    def table(self, id: str, title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]],
              *, notes: Sequence[str] = (), what: dict[str, Any] | None = None,
              readme: bool = False, align: str | None = None, show: bool = True) -> None:
        """Print a table (title, table, notes) and keep it; ``readme`` puts it in README.md."""
        cells = [[str(c) for c in r] for r in rows]
        if show:
            print()
            print(title)
            print()
            print(table(headers, cells, align))
            for n in notes:
                print(f"  {n}")
        self.data["tables"].append({"id": id, "title": title, "headers": list(headers),
                                    "rows": cells, "notes": list(notes), "what": what or {},
                                    "readme": readme, "align": align})

    def target(self, id: str, text: str, value: float | None, limit: float, op: str = "<=",
               *, unit: str = "x", what: dict[str, Any] | None = None,
               detail: str = "") -> bool | None:
        """A target of the issue: PASS when ``value op limit``; None (no verdict) when the
        value could not be measured. Printed at once, kept for report.py."""
        ok = None
        if value is not None and value == value:        # not None, not NaN
            ok = {"<=": value <= limit, ">=": value >= limit, "==": value == limit,
                  "<": value < limit, ">": value > limit}[op]
        verdict = "PASS" if ok else ("MISS" if ok is False else "n/a")
        shown = "-" if value is None else (f"{value:.3g}" if isinstance(value, float)
                                           else str(value))
        print(f"target {verdict:4s} {text}: {shown}{unit} (target {op} {limit:g}{unit})"
              + (f"; {detail}" if detail else ""))
        self.data["targets"].append({"id": id, "text": text, "value": value, "limit": limit,
                                     "op": op, "unit": unit, "pass": ok, "what": what or {},
                                     "detail": detail})
        return ok

    def figure(self, key: str, value: Any) -> None:
        self.data["figures"][key] = value

    def save(self) -> str:
        self.data["finished"] = _utc_now()
        self.data["load_end"] = loadavg()
        path = getattr(self.args, "json_path", None)
        if not path:
            d = (getattr(self.args, "results_dir", None) or os.environ.get(RESULTS_ENV)
                 or DEFAULT_RESULTS_DIR)
            os.makedirs(d, exist_ok=True)
            stamp = self.data["started"].replace("-", "").replace(":", "")
            path = os.path.join(d, f"{self.script}-{stamp}.json")
        with open(path, "w") as fh:
            json.dump(self.data, fh, indent=1, default=_jsonable)
            fh.write("\n")
        print(f"\nresults: {os.path.relpath(path)}")
        return path


def _jsonable(x: Any) -> Any:
    try:
        import numpy

        if isinstance(x, numpy.generic):
            return x.item()
    except ImportError:
        pass
    return str(x)


def paired_ratio(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """Median over rounds of a[i] / b[i] (rounds where either is missing are skipped)."""
    rs = [x / y for x, y in zip(a, b) if x is not None and y]
    return median(rs) if rs else None
