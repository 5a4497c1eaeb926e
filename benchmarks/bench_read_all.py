"""read_all() against the kernel floor, ss -tin and pyroute2, from 1,000 to 100,000 sockets.

For each size N this script holds N established loopback TCP sockets (N/2 pairs, see
_pairs.py) and measures the median wall time of one full sample of every TCP socket in
the namespace (AF_INET then AF_INET6, every state) by:

  floor 0x02   dump_floor.c: the same dump request with idiag_ext = INFO only; every
               datagram read into a 64 KiB buffer and discarded (kernel + recv only)
  floor 0xFF   the same with idiag_ext = 0xFF: exactly the request read_all() sends
  read_all     web10g agent.read_all(states="all"): every variable (~150 columns), into
               a new array the caller owns (the default)
  out=buf      agent.read_all(out=buf) into a preallocated array
  no Max/Min   read_all(out=) of every variable but the 14 derived ones (MaxRTT, ...,
               kept per flow in the decoder's flow table): isolates that table's cost
  ss -tin      the whole `ss -tin` process, stdout to /dev/null
  ss+parse     `ss -tinH` captured and split into one dict per socket in Python
  pyroute2     DiagSocket.get_sock_stats(family, states=0xFFF, extensions=0xFF) for both
               families, plus get_attr("INET_DIAG_INFO") on every message (pyroute2
               decodes attributes lazily; read_all decodes tcp_info for every row)

The methods are interleaved call by call (rounds, rotated order; dump_floor runs in its
interactive mode) so that load from other work hits them alike; ratios are paired per
round. CPU times (this thread's user + system time) are reported beside wall times.
Targets: read_all <= 1.2x floor(0xFF) at 20,000 and 100,000 sockets; >= 8x faster than
ss -tin; >= 100x faster than pyroute2.

    python3 benchmarks/bench_read_all.py                 # full run (several minutes)
    python3 benchmarks/bench_read_all.py --quick         # smoke run, < 60 s
    python3 benchmarks/bench_read_all.py --sizes 1000,20000
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import _common  # noqa: F401  (sets sys.path for the in-place build)
import numpy as np
from _common import loadavg, machine_lines, median, meminfo_kib, table
from _pairs import Pairs, PairsError

import web10g

FULL_SIZES = (1_000, 10_000, 20_000, 50_000, 100_000)
QUICK_SIZES = (1_000, 5_000)
FLOOR_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dump_floor.c")
STATES = 0xFFF
EXT_ALL = 0xFF
TARGET_FLOOR = 1.2          # read_all / floor(0xFF), at 20k and 100k
TARGET_FLOOR_SIZES = (20_000, 100_000)
TARGET_SS = 8.0             # ss -tin / read_all
TARGET_PYROUTE2 = 100.0     # pyroute2 / read_all
KIB_PER_SOCKET = 24         # generous: kernel socket + file + holder objects


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

    def __init__(self, exe: str) -> None:
        self.proc = subprocess.Popen([exe, "-i", "-s", hex(STATES)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)

    def run(self, ext: int, iterations: int = 1) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{ext:#x} {iterations}\n")
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

def measure_size(n_target: int, args: argparse.Namespace, floor: FloorServer, agent,
                 pr2_reason: str | None, pr2_per_socket: list[float]) -> dict:
    """Time every method at this size, interleaved call by call.

    Each round runs every method once, in an order rotated from round to round, so that
    the methods see the same machine (other load drifts over seconds). Ratios are taken
    per round (paired) and their median reported.
    """
    rounds = args.repeat or repeats_for(n_target, args.quick)
    big = n_target >= 50_000
    res: dict = {"N": n_target, "load_before": loadavg()}
    buf = np.empty(int(n_target * 1.25) + 4096, dtype=agent.dtype(None))
    buf.view(np.uint8)[...] = 0          # fault its pages in now, not while timing
    have_ss = shutil.which("ss") is not None and not args.no_ss
    keys = ("f02", "fFF", "ra", "out", "nd", "ss", "ssp")
    # read_all without the 14 derived columns (MaxRTT, MinRTO, ...: running max/min kept
    # per flow in a hash table): separates the decoder from the flow-table cost.
    nd_vars = [v.name for v in agent.variables() if v.sock_diag.match != "derived"]
    nd_buf = np.empty(len(buf), dtype=agent.dtype(nd_vars))
    nd_buf.view(np.uint8)[...] = 0
    wall: dict[str, list] = {k: [None] * rounds for k in keys}
    cpu: dict[str, list] = {k: [None] * rounds for k in keys}
    ss_user: list[float] = []
    ss_sys: list[float] = []

    def py_call(fn):
        def timed() -> tuple[float, float]:
            c0 = time.thread_time()
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0, time.thread_time() - c0
        return timed

    def floor_call(ext):
        def timed() -> tuple[float, float]:
            f = floor.run(ext)
            res["floor02" if ext == 0x02 else "floorFF"] = f
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

    methods = [("f02", floor_call(0x02)), ("fFF", floor_call(EXT_ALL)),
               ("ra", py_call(lambda: agent.read_all(states="all"))),
               ("out", py_call(lambda: agent.read_all(out=buf, states="all"))),
               ("nd", py_call(lambda: agent.read_all(nd_vars, out=nd_buf, states="all")))]
    if have_ss:
        methods += [("ss", ss_call), ("ssp", py_call(ss_parsed))]

    # warm-up: plans, buffers, page cache for ss
    for _ in range(2):
        for _key, fn in methods:
            fn()
    res["rows"] = len(agent.read_all(states="all"))
    if have_ss:
        res["ss_rows"] = ss_parsed()
    gc.collect()
    for i in range(rounds):
        k = i % len(methods)
        for key, fn in methods[k:] + methods[:k]:
            if key == "ssp" and big and i % 2:
                continue                  # 3+ s per call at 100k: every other round
            wall[key][i], cpu[key][i] = fn()
    for key in keys:
        w = [x for x in wall[key] if x is not None]
        c = [x for x in cpu[key] if x is not None]
        res[key] = median(w) if w else None
        res[key + "_cpu"] = median(c) if c else None
        res[key + "_n"] = len(w)
    res["ss_user"] = median(ss_user) if ss_user else None
    res["ss_sys"] = median(ss_sys) if ss_sys else None
    res["repeat"] = rounds

    def paired(a: str, b: str, table: dict) -> float | None:
        rs = [x / y for x, y in zip(table[a], table[b]) if x is not None and y]
        return median(rs) if rs else None

    res["paired"] = {
        "ra/fFF": paired("ra", "fFF", wall), "ra/f02": paired("ra", "f02", wall),
        "out/fFF": paired("out", "fFF", wall), "nd/fFF": paired("nd", "fFF", wall),
        "ss/ra": paired("ss", "ra", wall),
        "ss/f02": paired("ss", "f02", wall), "ssp/ra": paired("ssp", "ra", wall),
        "ra/fFF cpu": paired("ra", "fFF", cpu), "out/fFF cpu": paired("out", "fFF", cpu),
        "nd/fFF cpu": paired("nd", "fFF", cpu),
    }

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
            res["pr2_n"] = len(vals)
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


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or not b else fmt_ratio(a / b)


def verdict(ok: bool | None) -> str:
    return "" if ok is None else (" ok" if ok else " MISS")


def report(results: list[dict], notes: list[str]) -> None:
    print()
    print("Median wall time of one full sample (AF_INET + AF_INET6, states 0xFFF), in ms; "
          "reps = rounds\n(every method once per round, interleaved; ss+parse every other "
          "round from 50,000)")
    print()
    rows = []
    for r in results:
        note = r.get("pr2_note") or ""
        pr2 = (ms(r["pr2"]) if r["pr2"] is not None
               else note if note.startswith("pyroute2 not installed") else "n/a")
        rows.append([f"{r['N']:,}", f"{r['rows']:,}", r["repeat"], ms(r["f02"]), ms(r["fFF"]),
                     ms(r["ra"]), ms(r["out"]), ms(r["nd"]), ms(r["ss"]), ms(r["ssp"]), pr2,
                     f"{r['ra'] / max(1, r['rows']) * 1e6:.2f}"])
    print(table(["N", "rows", "reps", "floor 0x02", "floor 0xFF", "read_all", "out=buf",
                 "no Max/Min", "ss -tin", "ss+parse", "pyroute2", "read_all us/sock"], rows))
    print("  no Max/Min: read_all(out=) of every variable except the 14 derived ones (MaxRTT,"
          " MinRTO, ...,\n  kept per flow in the decoder's flow table): the flow table's "
          "cost is out=buf minus this")
    pr2_notes = sorted({r["pr2_note"] for r in results if r.get("pr2_note")})
    for note in pr2_notes:
        if "extrapolated" not in note:
            print(f"  pyroute2: {note}")
    for r in results:
        if r.get("pr2_note") and "extrapolated" in r["pr2_note"]:
            print(f"  pyroute2 at {r['N']:,}: {r['pr2_note']}")
    print()
    print("CPU time per sample (user + system time of the dumping thread; waiting for a CPU "
          "while other\nwork runs is not counted), in ms; ratios paired per round; ss: its "
          "process's user and system time")
    print()
    rows = []
    for r in results:
        extra = (r["ra_cpu"] - r["fFF_cpu"]) / max(1, r["rows"]) * 1e6
        pr = r["paired"]
        rows.append([f"{r['N']:,}", ms(r["f02_cpu"]), ms(r["fFF_cpu"]), ms(r["ra_cpu"]),
                     ms(r["out_cpu"]), ms(r["nd_cpu"]), f"{extra:.2f}",
                     fmt_ratio(pr["ra/fFF cpu"]), fmt_ratio(pr["out/fFF cpu"]),
                     fmt_ratio(pr["nd/fFF cpu"]), ms(r["ss_user"]), ms(r["ss_sys"])])
    print(table(["N", "floor 0x02", "floor 0xFF", "read_all", "out=buf", "no Max/Min",
                 "read_all-floor us/row", "read_all/floor", "out=buf/floor",
                 "no Max/Min/floor", "ss user", "ss sys"], rows))
    print("  /floor = /floor(0xFF), the same request as read_all")
    print()
    print("Ratios of wall times, paired: the median over rounds of each round's ratio "
          "(pyroute2: of medians)")
    print()
    rows = []
    for r in results:
        pr = r["paired"]
        f_ok = (pr["ra/fFF"] <= TARGET_FLOOR) if r["N"] in TARGET_FLOOR_SIZES else None
        ss_ok = (pr["ss/ra"] >= TARGET_SS) if pr["ss/ra"] else None
        pr_ok = (r["pr2"] / r["ra"] >= TARGET_PYROUTE2) if r["pr2"] else None
        pr_txt = ratio(r["pr2"], r["ra"]) + verdict(pr_ok) if r["pr2"] else (
            f"~{r['pr2_est'] / r['ra']:,.0f}x (extrap.)" if r.get("pr2_est") else "n/a")
        rows.append([f"{r['N']:,}",
                     fmt_ratio(pr["ra/fFF"]) + verdict(f_ok),
                     fmt_ratio(pr["ra/f02"]),
                     fmt_ratio(pr["out/fFF"]),
                     fmt_ratio(pr["nd/fFF"]),
                     fmt_ratio(pr["ss/ra"]) + verdict(ss_ok),
                     fmt_ratio(pr["ss/f02"]),
                     fmt_ratio(pr["ssp/ra"]),
                     pr_txt])
    print(table(["N", "read_all/floor(0xFF)", "read_all/floor(0x02)", "out=buf/floor(0xFF)",
                 "no Max/Min/floor(0xFF)", "ss/read_all", "ss/floor(0x02)",
                 "ss+parse/read_all", "pyroute2/read_all"], rows))
    print("  targets: read_all/floor(0xFF) <= 1.20x at 20,000 and 100,000 | ss/read_all >= 8x"
          " | pyroute2/read_all >= 100x")
    print("  ss/floor(0x02): what a reader costing nothing beyond the cheapest kernel dump "
          "would gain\n  over ss here; ss/read_all can exceed it only through noise")
    print()
    print("Cross-checks and context")
    print()
    rows = []
    for r in results:
        f2, ff = r["floor02"], r["floorFF"]
        rows.append([f"{r['N']:,}", f"{r['rows']:,}", f"{f2['records']:,}", f"{ff['records']:,}",
                     f"{r.get('ss_rows', 0):,}" if r.get("ss_rows") is not None else "-",
                     f"{r['pr2_rows']:,}" if r.get("pr2_rows") is not None else "-",
                     f"{ff['bytes'] / max(1, ff['records']):.0f}",
                     f"{f2['bytes'] / max(1, f2['records']):.0f}",
                     f"{ff['datagrams']}", f"{r['setup_s']:.2f}",
                     f"{r['load_before']} -> {r['load_after']}"])
    print(table(["N", "read_all rows", "floor 0x02 recs", "floor 0xFF recs", "ss rows",
                 "pyroute2 rows", "B/rec 0xFF", "B/rec 0x02", "datagrams 0xFF",
                 "setup s", "load (1/5/15 min) before -> after"], rows,
                align="rrrrrrrrrrl"))
    print("  ss rows: `ss -t` shows no LISTEN/TIME-WAIT/SYN-RECV sockets; the dumps show all"
          " states")
    print("  setup s: time to open this size's additional pairs (sizes grow incrementally)")
    for note in notes:
        print(f"  note: {note}")


def main(argv: list[str] | None = None) -> int:
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
    args = ap.parse_args(argv)
    if args.sizes:
        sizes = sorted({int(s.replace("_", "").replace(",", "")) for s in
                        args.sizes.split(",") if s.strip()})
    else:
        sizes = list(QUICK_SIZES if args.quick else FULL_SIZES)

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
    else:
        print("ss      : not found (install iproute2); the ss columns are skipped")
        args.no_ss = True
    sys.stdout.flush()

    notes: list[str] = []
    results: list[dict] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="web10g-bench-") as tmp, \
            contextlib.ExitStack() as held, web10g.open(backend="sock_diag") as agent:
        floor = FloorServer(build_floor(tmp))
        held.callback(floor.close)
        baseline = len(agent.read_all())
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
            r = measure_size(n, args, floor, agent, pr2_reason, pr2_per_socket)
            r["setup_s"] = setup
            results.append(r)
            print(f"{time.perf_counter() - t0:.1f} s: read_all {ms(r['ra'])} ms, floor(0xFF) "
                  f"{ms(r['fFF'])} ms, ss {ms(r['ss'])} ms, pyroute2 "
                  f"{ms(r['pr2']) if r['pr2'] else r.get('pr2_note', '-')}", flush=True)
        t_down = time.perf_counter()
    if results:
        print(f"\nteardown of all pairs: {time.perf_counter() - t_down:.2f} s; "
              f"total run {time.perf_counter() - t_start:.0f} s; load now {loadavg()}")
        report(results, notes)
    else:
        print("no size could be measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
