"""Fuzzing throughput: executions per second per target and total executions.

Reads the figures `make fuzz` (fuzz/run.py) leaves in fuzz/ledger.jsonl (the committed
record of every run, one line per run and target) and in this checkout's
fuzz/work/history.jsonl (the same lines; a line in both counts once), and prints, per
target, the latest run's executions, seconds and executions per second, and the
executions summed over every run recorded (the corpus in fuzz/work/corpus/ carries over
between runs, so they add up to one long campaign). Target of issue 12: at least 10
million executions per target without a finding.

    python3 benchmarks/bench_fuzz.py                  # report what the runs left
    python3 benchmarks/bench_fuzz.py --run 60         # first fuzz every target 60 s (niced)
    python3 benchmarks/bench_fuzz.py --history FILE   # another history file

The fuzzers run niced (nice 10, two targets at a time): executions per second depend
on what else the machine does; the load at the start of each run is in the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from _common import ROOT, Results, add_results_args, machine_lines

HISTORY = os.path.join(ROOT, "fuzz", "work", "history.jsonl")
LEDGER = os.path.join(ROOT, "fuzz", "ledger.jsonl")
GOAL = 10_000_000


def load(*paths: str) -> list[dict]:
    """The runs recorded in ``paths``, each (run, target) once, in time order."""
    runs = []
    seen: set[tuple[str, str]] = set()
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    run = json.loads(line)
                except ValueError:
                    continue
                fresh = [t for t in run.get("targets", [])
                         if (run.get("started", ""), t.get("target", "")) not in seen]
                seen.update((run.get("started", ""), t.get("target", "")) for t in fresh)
                if fresh:
                    runs.append(dict(run, targets=fresh))
    # a line that sums earlier runs ("order": 0) goes before the runs it preceded
    runs.sort(key=lambda r: (r.get("order", 1), str(r.get("started", ""))))
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--history", nargs="+", default=[LEDGER, HISTORY],
                    help="history files (default: fuzz/ledger.jsonl and fuzz/work/history.jsonl)")
    ap.add_argument("--run", type=float, metavar="SECONDS",
                    help="run fuzz/run.py --seconds SECONDS (every target) first")
    ap.add_argument("--quick", action="store_true", help="with --run: 10 s per target")
    add_results_args(ap)
    args = ap.parse_args()
    if args.quick and args.run is None:
        args.run = 10.0
    if args.run:
        subprocess.run([sys.executable, os.path.join(ROOT, "fuzz", "run.py"), "--seconds",
                        str(args.run)], cwd=ROOT, check=False)
    res = Results("bench_fuzz", args, "fuzz executions per second per target and total "
                  "executions (from fuzz/run.py's history)")
    for line in machine_lines():
        print(line)
    runs = load(*args.history)
    if not runs:
        print(f"\nno fuzz runs recorded in {', '.join(args.history)}: run `make fuzz` first "
              "(or --run SECONDS)")
        res.save()
        return 1
    latest: dict[str, dict] = {}
    total: dict[str, dict[str, float]] = {}
    for run in runs:
        for t in run["targets"]:
            name = t["target"]
            if not t.get("aggregate"):
                latest[name] = dict(t, started=run["started"])
            acc = total.setdefault(name, {"executions": 0, "seconds": 0.0, "crashes": 0,
                                          "runs": 0, "clean": 0})
            # executions since the last finding: a run that found something (a crash or
            # a Python finding) starts the count again after it
            found = bool(t["crashes"] or t.get("python_findings"))
            acc["clean"] = 0 if found else acc["clean"] + t["executions"]
            acc["executions"] += t["executions"]
            acc["seconds"] += t["seconds"]
            acc["crashes"] += len(t["crashes"])
            acc["runs"] += t.get("runs", 1)     # a line may sum several earlier runs
    rows = []
    for name, t in latest.items():
        acc = total[name]
        rows.append((name, t["kind"], t["started"], f"{t['executions']:,}",
                     f"{t['seconds']:.0f}", f"{t['exec_per_s']:,}", f"{int(acc['runs'])}",
                     f"{int(acc['executions']):,}", f"{acc['seconds'] / 3600:.2f}",
                     f"{int(acc['crashes'])}", f"{len(t['python_findings'])}",
                     f"{int(acc['clean']):,}", t.get("cov") or "-"))
    grand = sum(int(a["executions"]) for a in total.values())
    res.table("fuzz", "Fuzz targets: latest run and all recorded runs",
              ["target", "kind", "latest run (UTC)", "execs", "s", "exec/s", "runs",
               "total execs", "total h", "crashes", "py findings", "execs since a finding",
               "cov"],
              rows, align="lllrrrrrrrrrr",
              notes=[f"total executions over every target and run: {grand:,}",
                     "crashes: hard crashes (sanitizer, OOM, timeout) whose inputs are under "
                     "fuzz/work/findings/<target>/; py findings: Python exceptions other than "
                     "web10g's documented errors, one file per signature there too",
                     "an OOM or timeout whose input passes when run again alone (the "
                     "harness process grew under atheris) is recorded as unreproduced in "
                     "the run's line, not as a crash",
                     "execs since a finding: executions of the runs after the last run "
                     "that found something (that run not counted); the goal counts these",
                     "niced (nice 10), two targets at a time on a shared machine"],
              what={"history": [os.path.relpath(h, ROOT) for h in args.history], "goal": GOAL},
              readme=True)
    for name in latest:
        res.target(f"execs_{name}", f"{name}: executions since the last finding",
                   int(total[name]["clean"]), GOAL, ">=", unit="",
                   detail=f"{int(total[name]['executions']):,} recorded in all")
    res.figure("totals", total)
    res.figure("latest", latest)
    res.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
