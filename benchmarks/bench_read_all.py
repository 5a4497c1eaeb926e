"""read_all() against the kernel floor, ss -tin and pyroute2, from 1,000 to 100,000 sockets.

For each size N this script holds N established loopback TCP sockets (N/2 pairs, see
_pairs.py) and times one full sample by each method, interleaved call by call (rounds,
order shuffled each round (seeded); dump_floor runs in its interactive mode, one socket, one
process) so that load from other work hits them alike. Ratios are paired per round.

  floor        dump_floor.c sending exactly the request read_all() sends (its plan's
               idiag_ext and state mask, both families); datagrams read into a 64 KiB
               buffer and discarded: the kernel + recv, the least any reader pays
  read_all     agent.read_all(states="all"): every variable (ext 0xFF), a new array the
               caller owns (the default); the caller drops it before the next call
  kept         the same, but the caller keeps its last 3 results: every call needs
               memory nobody has touched yet (page faults included)
  out=buf      agent.read_all(out=buf, states="all") into a preallocated array
  no Max/Min   read_all(out=) of every variable but the 14 derived ones (MaxRTT, ...)
  floor ss     dump_floor with ss's information: ext INFO|CONG, ss's states
  read_all ss  read_all() of the same information: every tcp_info variable and
               cc_algorithm, in the states `ss -t` lists (all but LISTEN, CLOSE,
               TIME-WAIT, SYN-RECV)
  ss -tin      the whole `ss -tin` process, stdout to /dev/null
  ss+parse     `ss -tinH` captured and split into one dict per socket in Python
  pyroute2     DiagSocket.get_sock_stats(..., extensions=0xFF) for both families plus
               get_attr("INET_DIAG_INFO") per message (optional; not interleaved: slow)

Targets (issue 13): read_all <= 1.1x the floor of the same request at 20,000 and 100,000
sockets; ss -tin >= 8x read_all of the same information at 20,000; (issue 5)
pyroute2 >= 100x read_all. Results: printed, and written as JSON (see _common.Results).

    python3 benchmarks/bench_read_all.py                 # full run (several minutes)
    python3 benchmarks/bench_read_all.py --quick         # smoke run, < 60 s
    python3 benchmarks/bench_read_all.py --sizes 1000,20000
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import _common  # noqa: F401  (sets sys.path for the in-place build)
import numpy as np
from _common import Results, add_results_args, loadavg, machine_lines, median, meminfo_kib
from _common import paired_ratio as paired
from _pairs import Pairs, PairsError

import web10g

FULL_SIZES = (1_000, 10_000, 20_000, 50_000, 100_000)
QUICK_SIZES = (1_000, 5_000)
FLOOR_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dump_floor.c")
STATES = 0xFFF
EXT_ALL = 0xFF
TARGET_FLOOR = 1.1          # read_all / floor(same request), at 20k and 100k
TARGET_FLOOR_SIZES = (20_000, 100_000)
TARGET_SS = 8.0             # ss -tin / read_all(same information), at 20k
TARGET_SS_SIZES = (20_000,)
TARGET_PYROUTE2 = 100.0     # pyroute2 / read_all, from 10,000 sockets (issue 5: at 1,000
TARGET_PYROUTE2_MIN_N = 10_000  # the kernel's fixed hash walk dominates both; a figure there)
KIB_PER_SOCKET = 24         # generous: kernel socket + file + holder objects
# ss's default state filter (SS_CONN): every state but LISTEN, CLOSE, TIME-WAIT, SYN-RECV
SS_STATES = 0xFFF & ~((1 << 10) | (1 << 7) | (1 << 6) | (1 << 3))
KEPT = 3                    # results the "kept" caller holds on to


def repeats_for(n: int, quick: bool) -> int:
    if quick:
        return 5
    if n <= 1_000:
        return 30
    if n <= 20_000:
        return 21
    if n <= 50_000:
        return 11
    return 9


# ---- the kernel floor --------------------------------------------------------------

def build_floor(tmpdir: str) -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which(
        "clang")
    if not cc:
        sys.exit("bench_read_all: no C compiler found (cc/gcc/clang): the kernel-floor "
                 "program benchmarks/dump_floor.c must be compiled; install one "
                 "(make deps) or set CC")
    exe = os.path.join(tmpdir, "dump_floor")
    res = subprocess.run([cc, "-O2", "-o", exe, FLOOR_SRC], capture_output=True, text=True)
    if res.returncode:
        sys.exit(f"bench_read_all: compiling {FLOOR_SRC} with {cc} failed:\n{res.stderr}")
    return exe


class FloorServer:
    """dump_floor in interactive mode: one socket, one process, a dump on request."""

    def __init__(self, exe: str, states: int = STATES, families: str = "0") -> None:
        # families "0": both in one walk (what read_all sends); "46": one
        # SOCK_DIAG_BY_FAMILY dump per family (what ss sends)
        self.proc = subprocess.Popen([exe, "-i", "-s", hex(states), "-f", families],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)

    def run(self, ext: int, iterations: int = 1, states: int | None = None) -> dict:
        assert self.proc.stdin and self.proc.stdout
        extra = "" if states is None else f" {states:#x}"
        self.proc.stdin.write(f"{ext:#x} {iterations}{extra}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"dump_floor exited (status {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


# ---- the baselines -----------------------------------------------------------------

def ss_plain() -> None:
    subprocess.run(["ss", "-tin"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)


def ss_parsed() -> int:
    """ss -tinH, each socket as (fields of its first line, dict of its info line)."""
    out = subprocess.run(["ss", "-tinH"], stdout=subprocess.PIPE, check=True).stdout
    rows: list[list] = []
    for line in out.decode().splitlines():
        if line[:1] in ("\t", " "):
            info = {}
            for tok in line.split():
                key, sep, val = tok.partition(":")
                info[key] = val if sep else True
            if rows:
                rows[-1][1] = info
        elif line:
            rows.append([line.split(), None])
    return len(rows)


class Pyroute2Reader:
    def __init__(self) -> None:
        from pyroute2 import DiagSocket

        self.ds = DiagSocket()
        self.ds.bind()

    def __call__(self) -> int:
        n = 0
        for fam in (socket.AF_INET, socket.AF_INET6):
            for msg in self.ds.get_sock_stats(family=fam, states=STATES,
                                              extensions=EXT_ALL):
                msg.get_attr("INET_DIAG_INFO")
                n += 1
        return n

    def close(self) -> None:
        self.ds.close()


def pyroute2_status() -> str | None:
    """None if pyroute2 is usable, else the reason to print."""
    try:
        import pyroute2  # noqa: F401
        from pyroute2 import DiagSocket  # noqa: F401
    except ImportError:
        return "pyroute2 not installed (pip install web10g[bench])"
    return None


# ---- one size ----------------------------------------------------------------------

KEYS = ("floor", "ra", "kept", "out", "nd", "fss", "rss", "ss", "ssp")


def ss_vars(agent) -> list[str]:
    """What `ss -tin` prints, as variables: every tcp_info one and the cc name."""
    return [v.name for v in agent.variables()
            if v.sock_diag.group == "tcp_info" or v.name == "cc_algorithm"]


def measure_size(n_target: int, args: argparse.Namespace, floor: FloorServer, agent,
                 agent_kept, pr2_reason: str | None, pr2_per_socket: list[float]) -> dict:
    """Time every method at this size, interleaved call by call: each round runs every
    method once in a new order (seeded shuffle), so that no method always follows the
    same one (a rotation would: a method that churns memory or caches would then always
    weigh on the same neighbour)."""
    rounds = args.repeat or repeats_for(n_target, args.quick)
    big = n_target >= 50_000
    res: dict = {"N": n_target, "load_before": loadavg()}
    dt_all = agent.dtype(None)
    buf = np.empty(int(n_target * 1.25) + 4096, dtype=dt_all)
    buf.view(np.uint8)[...] = 0          # fault its pages in now, not while timing
    have_ss = shutil.which("ss") is not None and not args.no_ss
    nd_vars = [v.name for v in agent.variables() if v.sock_diag.match != "derived"]
    nd_buf = np.empty(len(buf), dtype=agent.dtype(nd_vars))
    nd_buf.view(np.uint8)[...] = 0
    sv = ss_vars(agent)
    # the requests the plans send: the floors send exactly these
    plan_all, _ = agent._plan(None, None, "all", None)
    plan_ss, _ = agent._plan(sv, None, SS_STATES, None)
    res["request"] = {"ext": plan_all.ext, "states": plan_all.states,
                      "columns": len(dt_all.names), "itemsize": dt_all.itemsize}
    res["request_ss"] = {"ext": plan_ss.ext, "states": plan_ss.states, "columns": len(sv)}
    wall: dict[str, list] = {k: [None] * rounds for k in KEYS}
    cpu: dict[str, list] = {k: [None] * rounds for k in KEYS}
    ss_user: list[float] = []
    ss_sys: list[float] = []
    kept: collections.deque = collections.deque(maxlen=KEPT)

    def py_call(fn):
        def timed() -> tuple[float, float]:
            c0 = time.thread_time()
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0, time.thread_time() - c0
        return timed

    def floor_call(ext, states, key):
        def timed() -> tuple[float, float]:
            f = floor.run(ext, 1, states)
            res[key] = f
            return f["times_ns"][0] / 1e9, f["cpu_ns"][0] / 1e9
        return timed

    def ss_call() -> tuple[float, float]:
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        ss_plain()
        t = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        ss_user.append(r1.ru_utime - r0.ru_utime)
        ss_sys.append(r1.ru_stime - r0.ru_stime)
        return t, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)

    methods = [("floor", floor_call(plan_all.ext, plan_all.states, "floor_json")),
               ("ra", py_call(lambda: agent.read_all(states="all"))),
               ("kept", py_call(lambda: kept.append(agent_kept.read_all(states="all")))),
               ("out", py_call(lambda: agent.read_all(out=buf, states="all"))),
               ("nd", py_call(lambda: agent.read_all(nd_vars, out=nd_buf, states="all"))),
               ("fss", floor_call(plan_ss.ext, plan_ss.states, "floor_ss_json")),
               ("rss", py_call(lambda: agent.read_all(sv, states=SS_STATES)))]
    if have_ss:
        methods += [("ss", ss_call), ("ssp", py_call(ss_parsed))]

    for _ in range(2):                    # warm-up: plans, buffers, page cache for ss
        for _key, fn in methods:
            fn()
    kept.clear()
    res["rows"] = len(agent.read_all(states="all"))
    res["rows_ss"] = len(agent.read_all(sv, states=SS_STATES))
    if have_ss:
        res["ss_rows"] = ss_parsed()
    gc.collect()
    rng = random.Random(n_target)
    for i in range(rounds):
        for key, fn in rng.sample(methods, len(methods)):
            if key == "ssp" and big and i % 2:
                continue                  # 3+ s per call at 100k: every other round
            wall[key][i], cpu[key][i] = fn()
    kept.clear()
    for key in KEYS:
        w = [x for x in wall[key] if x is not None]
        c = [x for x in cpu[key] if x is not None]
        res[key] = median(w) if w else None
        res[key + "_cpu"] = median(c) if c else None
    res["ss_user"] = median(ss_user) if ss_user else None
    res["ss_sys"] = median(ss_sys) if ss_sys else None
    res["repeat"] = rounds
    res["paired"] = {
        "ra/floor": paired(wall["ra"], wall["floor"]),
        "kept/floor": paired(wall["kept"], wall["floor"]),
        "out/floor": paired(wall["out"], wall["floor"]),
        "nd/floor": paired(wall["nd"], wall["floor"]),
        "ra/out": paired(wall["ra"], wall["out"]),
        "kept/out": paired(wall["kept"], wall["out"]),
        "rss/fss": paired(wall["rss"], wall["fss"]),
        "ss/rss": paired(wall["ss"], wall["rss"]),
        "ss/fss": paired(wall["ss"], wall["fss"]),
        "ssp/rss": paired(wall["ssp"], wall["rss"]),
        "ra/floor cpu": paired(cpu["ra"], cpu["floor"]),
        "out/floor cpu": paired(cpu["out"], cpu["floor"]),
        "kept/floor cpu": paired(cpu["kept"], cpu["floor"]),
        "ss/rss cpu": paired(cpu["ss"], cpu["rss"]),
    }
    res["rounds_wall"] = wall
    res["rounds_cpu"] = cpu
    # keeping a sample: web10g.rows.copy (one byte copy) against numpy's own copy of the
    # structured array (field by field), both of a read_all() result of every variable
    from web10g.rows import copy as rows_copy
    sample = agent.read_all(states="all")
    for key, fn, arg in (("copy_rows", rows_copy, sample), ("copy_numpy", np.copy, sample)):
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn(arg)
            ts.append(time.perf_counter() - t0)
        res[key] = median(ts)
    sample = None

    # pyroute2: slow; few repeats, capped by size and by time
    res["pr2"] = None
    if pr2_reason:
        res["pr2_note"] = pr2_reason
    elif args.no_pyroute2:
        res["pr2_note"] = "skipped (--no-pyroute2)"
    elif n_target > args.pyroute2_max:
        est = median(pr2_per_socket) * res["rows"] if pr2_per_socket else None
        res["pr2_note"] = (f"skipped above {args.pyroute2_max:,} sockets"
                           + (f" (extrapolated ~{est * 1e3:,.0f} ms)" if est else ""))
        res["pr2_est"] = est
    else:
        reader = Pyroute2Reader()
        try:
            t0 = time.perf_counter()
            res["pr2_rows"] = reader()       # warm-up, also the count cross-check
            first = time.perf_counter() - t0
            k = 1 if args.quick else (5 if first < 2 else 3 if first < 10 else 1)
            vals = []
            for _ in range(k):
                t0 = time.perf_counter()
                reader()
                vals.append(time.perf_counter() - t0)
            res["pr2"] = median(vals)
            pr2_per_socket.append(res["pr2"] / max(1, res["pr2_rows"]))
        finally:
            reader.close()
    res["load_after"] = loadavg()
    return res


# ---- output ------------------------------------------------------------------------

def ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:,.2f}"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}x" if x < 10 else f"{x:,.0f}x"


def report(results: list[dict], notes: list[str], out: Results) -> None:
    what = {"variables": "every sock_diag variable", "families": "inet+inet6",
            "request": results[0]["request"] if results else None,
            "request_ss": results[0]["request_ss"] if results else None}
    rows = []
    for r in results:
        note = r.get("pr2_note") or ""
        pr2 = ms(r["pr2"]) if r["pr2"] is not None else ("-" if note else "n/a")
        rows.append([f"{r['N']:,}", f"{r['rows']:,}", r["repeat"], ms(r["floor"]), ms(r["ra"]),
                     ms(r["kept"]), ms(r["out"]), ms(r["nd"]), ms(r["fss"]), ms(r["rss"]),
                     ms(r["ss"]), ms(r["ssp"]), pr2])
    req = what["request"] or {}
    req_ss = what["request_ss"] or {}
    out.table("read_all_wall", "Median wall time of one full sample, ms (every method once per "
              "round, interleaved)",
              ["N", "rows", "rounds", "floor", "read_all", "kept", "out=buf", "no Max/Min",
               "floor ss", "read_all ss", "ss -tin", "ss+parse", "pyroute2"], rows,
              notes=[f"floor, read_all, kept, out=buf, no Max/Min: every variable "
                     f"({req.get('columns')} columns, {req.get('itemsize')} B/row), "
                     f"idiag_ext {req.get('ext', 0):#x}, states {req.get('states', 0):#x} "
                     "(all), inet+inet6",
                     "floor ss, read_all ss: tcp_info + cc_algorithm "
                     f"({(what['request_ss'] or {}).get('columns')} columns), idiag_ext "
                     f"{(what['request_ss'] or {}).get('ext', 0):#x}, states "
                     f"{SS_STATES:#x} (ss's default filter)",
                     f"kept: the caller holds its last {KEPT} results (fresh memory each call);"
                     " read_all: the caller drops each result",
                     "ss+parse every other round from 50,000 sockets"] + [
                         f"pyroute2 at {r['N']:,}: {r['pr2_note']}" for r in results
                         if r.get("pr2_note")],
              what=what)
    rows = []
    for r in results:
        extra = (r["ra_cpu"] - r["floor_cpu"]) / max(1, r["rows"]) * 1e6
        pr = r["paired"]
        rows.append([f"{r['N']:,}", ms(r["floor_cpu"]), ms(r["ra_cpu"]), ms(r["kept_cpu"]),
                     ms(r["out_cpu"]), f"{extra:.3f}", fmt_ratio(pr["ra/floor cpu"]),
                     fmt_ratio(pr["kept/floor cpu"]), fmt_ratio(pr["out/floor cpu"]),
                     ms(r["ss_user"]), ms(r["ss_sys"])])
    out.table("read_all_cpu", "CPU time per sample (user + system of the dumping thread), ms;"
              " ratios paired per round", ["N", "floor", "read_all", "kept", "out=buf",
                                           "read_all-floor us/row", "read_all/floor",
                                           "kept/floor", "out=buf/floor", "ss user",
                                           "ss sys"], rows,
              notes=["CPU time leaves out waiting for a CPU while other work runs"], what=what)
    rows = []
    for r in results:
        pr = r["paired"]
        pr_txt = fmt_ratio(r["pr2"] / r["ra"]) if r["pr2"] else (
            f"~{r['pr2_est'] / r['ra']:,.0f}x (extrap.)" if r.get("pr2_est") else "-")
        rows.append([f"{r['N']:,}", f"{r['rows']:,}", ms(r["floor"]), ms(r["ra"]),
                     fmt_ratio(pr["ra/floor"]), fmt_ratio(pr["kept/floor"]),
                     fmt_ratio(pr["out/floor"]), fmt_ratio(pr["nd/floor"]),
                     fmt_ratio(pr["rss/fss"]), fmt_ratio(pr["ss/rss"]),
                     fmt_ratio(pr["ss/fss"]), fmt_ratio(pr["ssp/rss"]), pr_txt])
    out.table("read_all_ratios", "read_all() against the kernel floor and ss (wall-time ratios, "
              "median of per-round ratios)",
              ["sockets", "rows", "floor ms", "read_all ms", "read_all/floor", "kept/floor",
               "out=/floor", "no Max/Min/floor", "read_all ss/floor ss", "ss -tin/read_all ss",
               "ss -tin/floor ss", "ss+parse/read_all ss", "pyroute2/read_all"], rows,
              notes=["floor = dump_floor.c sending the same request and discarding the replies",
                     f"read_all = every variable ({req.get('columns')} columns, ext "
                     f"{req.get('ext', 0):#x}, all states); read_all ss = tcp_info + "
                     f"cc_algorithm in ss's states (ext {req_ss.get('ext', 0):#x})",
                     "kept = the caller keeps its last 3 results, so every call gets untouched"
                     " memory"], what=what, readme=True)
    out.table("keep_copy", "Keeping a sample: copies of a read_all() result of every variable"
              " (wall, median of 5)", ["sockets", "rows", "read_all ms", "web10g.rows.copy ms",
                                       "numpy .copy() ms", "numpy/rows.copy"],
              [[f"{r['N']:,}", f"{r['rows']:,}", ms(r["ra"]), ms(r["copy_rows"]),
                ms(r["copy_numpy"]), fmt_ratio(r["copy_numpy"] / r["copy_rows"])]
               for r in results],
              notes=["read_all() already returns an array the caller owns (no copy on the "
                     "path); web10g.rows.copy is the fast way to copy rows (one byte copy)"],
              what=what, readme=True)
    rows = []
    for r in results:
        f, fs = r["floor_json"], r["floor_ss_json"]
        rows.append([f"{r['N']:,}", f"{r['rows']:,}", f"{f['records']:,}",
                     f"{r['rows_ss']:,}", f"{fs['records']:,}",
                     f"{r.get('ss_rows', 0):,}" if r.get("ss_rows") is not None else "-",
                     f"{r['pr2_rows']:,}" if r.get("pr2_rows") is not None else "-",
                     f"{f['bytes'] / max(1, f['records']):.0f}", f"{f['datagrams']}",
                     f"{r['setup_s']:.2f}", f"{r['load_before']} -> {r['load_after']}"])
    out.table("read_all_checks", "Cross-checks and context",
              ["N", "read_all rows", "floor recs", "read_all ss rows", "floor ss recs",
               "ss rows", "pyroute2 rows", "B/rec", "datagrams", "setup s",
               "load before -> after"], rows, align="rrrrrrrrrrl",
              notes=["row counts may differ by the sockets other programs open or close "
                     "meanwhile"] + [f"note: {n}" for n in notes])
    print()
    for r in results:
        pr = r["paired"]
        w = {"sockets": r["N"], "rows": r["rows"], **(r["request"] or {}), "families": "4,6",
             "variables": "all"}
        if r["N"] in TARGET_FLOOR_SIZES or args_quick_sizes(results, r):
            out.target(f"read_all_floor_{r['N']}",
                       f"read_all() of every variable / kernel floor, {r['N']:,} sockets",
                       pr["ra/floor"], TARGET_FLOOR, "<=", what=w,
                       detail=f"paired wall ratio over {r['repeat']} rounds; CPU ratio "
                              f"{fmt_ratio(pr['ra/floor cpu'])}; out= {fmt_ratio(pr['out/floor'])}"
                              f"; kept {fmt_ratio(pr['kept/floor'])}")
        if r["N"] in TARGET_SS_SIZES and r.get("ss") is not None:
            out.target(f"ss_read_all_{r['N']}",
                       f"ss -tin / read_all() of the same information, {r['N']:,} sockets",
                       pr["ss/rss"], TARGET_SS, ">=",
                       what={"sockets": r["N"], **(r["request_ss"] or {}),
                             "variables": "tcp_info + cc_algorithm"},
                       detail=f"CPU ratio {fmt_ratio(pr['ss/rss cpu'])}; bound: ss -tin / "
                              f"kernel floor of the same request {fmt_ratio(pr['ss/fss'])} "
                              "(a reader that asks the kernel cannot beat its floor)")
        if r["pr2"] and r["N"] >= TARGET_PYROUTE2_MIN_N:
            out.target(f"pyroute2_{r['N']}", f"pyroute2 / read_all(), {r['N']:,} sockets",
                       r["pr2"] / r["ra"], TARGET_PYROUTE2, ">=")
    for r in results:
        out.figure(f"size_{r['N']}", {k: v for k, v in r.items()
                                       if k not in ("floor_json", "floor_ss_json")})


def args_quick_sizes(results: list[dict], r: dict) -> bool:
    """--quick has no 20k/100k: its largest size stands in (marked in the id)."""
    return bool(ARGS and ARGS.quick and r is results[-1])


ARGS: argparse.Namespace | None = None


def main(argv: list[str] | None = None) -> int:
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small N, few repeats")
    ap.add_argument("--sizes", help="comma-separated socket counts (default: "
                    f"{','.join(map(str, FULL_SIZES))}; --quick: "
                    f"{','.join(map(str, QUICK_SIZES))})")
    ap.add_argument("--repeat", type=int, default=0, help="rounds: timed calls per method "
                    "(default: 30 for 1k, 21 up to 20k, 11 for 50k, 9 for 100k)")
    ap.add_argument("--pyroute2-max", type=int, default=20_000,
                    help="largest N at which pyroute2 is timed (default 20000)")
    ap.add_argument("--no-pyroute2", action="store_true")
    ap.add_argument("--no-ss", action="store_true")
    add_results_args(ap)
    args = ap.parse_args(argv)
    ARGS = args
    if args.sizes:
        sizes = sorted({int(s.replace("_", "").replace(",", "")) for s in
                        args.sizes.split(",") if s.strip()})
    else:
        sizes = list(QUICK_SIZES if args.quick else FULL_SIZES)
    out = Results("bench_read_all", args, "read_all() against the kernel floor, ss, pyroute2")

    print("web10g read_all() benchmark" + (" (--quick)" if args.quick else ""))
    for line in machine_lines():
        print(line)
    pr2_reason = pyroute2_status()
    if not pr2_reason:
        import pyroute2
        print(f"pyroute2: {getattr(pyroute2, '__version__', '?')}")
    else:
        print(f"pyroute2: {pr2_reason}")
    if shutil.which("ss"):
        ver = subprocess.run(["ss", "-V"], capture_output=True, text=True).stdout.strip()
        print(f"ss      : {ver}")
        out.figure("ss_version", ver)
    else:
        print("ss      : not found (install iproute2); the ss columns are skipped")
        args.no_ss = True
    sys.stdout.flush()

    notes: list[str] = []
    results: list[dict] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="web10g-bench-") as tmp, \
            contextlib.ExitStack() as held, web10g.open(backend="sock_diag") as agent, \
            web10g.open(backend="sock_diag") as agent_kept:
        # "kept" has its own agent: the arrays it keeps must not be the ones read_all()
        # of the dropping caller would recycle
        floor = FloorServer(build_floor(tmp))
        held.callback(floor.close)
        baseline = len(agent.read_all(states="all"))
        print(f"sockets already present: {baseline} (all states); the table's N is the "
              "number of sockets added")
        current = 0
        pr2_per_socket: list[float] = []
        for n in sizes:
            need_kib = (n - current) * KIB_PER_SOCKET + 512 * 1024
            if meminfo_kib("MemAvailable") and meminfo_kib("MemAvailable") < need_kib:
                note = (f"skipped N={n:,}: needs ~{need_kib >> 10:,} MiB, "
                        f"{meminfo_kib('MemAvailable') >> 10:,} MiB available")
                print(note, flush=True)
                notes.append(note)
                continue
            print(f"\n== N = {n:,}: opening {n - current:,} more sockets ...", end=" ",
                  flush=True)
            try:
                p = held.enter_context(Pairs(n - current)) if n > current else None
            except (PairsError, OSError) as exc:
                note = f"skipped N={n:,} and above: could not open the sockets ({exc})"
                print(f"\n{note}", flush=True)
                notes.append(note)
                break
            setup = p.setup_s if p else 0.0
            print(f"{setup:.2f} s ({p.procs if p else 0} holder processes); measuring ...",
                  end=" ", flush=True)
            current = n
            t0 = time.perf_counter()
            r = measure_size(n, args, floor, agent, agent_kept, pr2_reason, pr2_per_socket)
            r["setup_s"] = setup
            results.append(r)
            print(f"{time.perf_counter() - t0:.1f} s: read_all {ms(r['ra'])} ms, floor "
                  f"{ms(r['floor'])} ms ({fmt_ratio(r['paired']['ra/floor'])}), ss "
                  f"{ms(r['ss'])} ms", flush=True)
        t_down = time.perf_counter()
    if results:
        print(f"\nteardown of all pairs: {time.perf_counter() - t_down:.2f} s; "
              f"total run {time.perf_counter() - t_start:.0f} s; load now {loadavg()}")
        report(results, notes, out)
    else:
        print("no size could be measured")
    out.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
