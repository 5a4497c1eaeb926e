"""Steady-state polling allocates nothing per sample.

Part 1 (tracemalloc, ~10,000 sockets): after a warm-up, the memory Python and numpy have
allocated and still hold must not grow over 1,000 polls of ``agent.read_all(out=buf)``,
nor of ``agent.read_all()`` (a new array the caller owns each call: the agent recycles the
array of an earlier result once nothing refers to it, so a caller that drops its results
costs no new memory either). The transient peak per poll is reported too.

Part 2 (RSS, ~1,000 sockets): the resident set size from /proc/self/statm over 20,000
polls of ``read_all(out=buf)`` (and 5,000 of ``read_all()``), printed at the start,
every 10% and at the end. RSS also sees what tracemalloc cannot: C-level malloc in the
decoder and libmnl.

On a 2-vCPU VM one poll costs a few ms even with few sockets (each dump walks the whole
established hash, twice); --polls changes the run's length, --quick runs everything
small (< 60 s). Results also as JSON (see _common.Results).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc

import _common  # noqa: F401  (sets sys.path for the in-place build)
import numpy as np
from _common import Results, add_results_args, loadavg, machine_lines
from _pairs import Pairs

import web10g

PAGE = os.sysconf("SC_PAGE_SIZE")
FLAT_KIB = 64          # growth allowance after the first 10% (RSS moves in pages)


def prefaulted(n: int, dtype: np.dtype) -> np.ndarray:
    """np.empty, with every page written once: otherwise RSS grows the first time a
    sample has more rows than any before (pages of the buffer touched for the first
    time), which is not an allocation."""
    buf = np.empty(n, dtype=dtype)
    buf.view(np.uint8)[...] = 0
    return buf


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def kib(n: float) -> str:
    return f"{n / 1024:,.1f} KiB"


def traced_growth(poll, polls: int, label: str) -> list:
    """tracemalloc: held memory before/after ``polls`` polls, and the transient peak."""
    for _ in range(20):
        poll()
    gc.collect()
    tracemalloc.start(10)
    try:
        for _ in range(10):
            poll()
        gc.collect()
        snap0 = tracemalloc.take_snapshot()
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        for _ in range(polls):
            poll()
        elapsed = time.perf_counter() - t0
        cur_nogc, peak = tracemalloc.get_traced_memory()
        gc.collect()
        cur, _ = tracemalloc.get_traced_memory()
        snap1 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = cur - base
    own = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    top = [s for s in snap1.filter_traces(own).compare_to(snap0.filter_traces(own), "lineno")
           if s.size_diff > 0][:3] if growth > 0 else []
    verdict = "none" if growth <= 0 else ("~0" if growth / polls < 1 else "GROWS")
    row = [label, f"{polls:,}", f"{base:,}", f"{cur:,}", f"{growth:+,}",
           f"{growth / polls:+.3f}", f"{peak - base:,}", f"{elapsed / polls * 1e3:.2f}",
           verdict]
    return [row, top, cur_nogc - base]


def rss_run(poll, polls: int, label: str) -> tuple[list[str], bool]:
    """Poll ``polls`` times, printing RSS at the start, every 10% and at the end."""
    for _ in range(50):
        poll()
    gc.collect()
    marks = {max(1, polls * k // 10): k * 10 for k in range(1, 11)}
    start = rss_bytes()
    samples = [start]
    print(f"  {label}: {polls:,} polls", flush=True)
    print(f"    {'start':>6}  RSS {start / 2**20:9.3f} MiB", flush=True)
    ref = start
    t0 = time.perf_counter()
    for i in range(1, polls + 1):
        poll()
        if i in marks:
            r = rss_bytes()
            samples.append(r)
            if marks[i] == 10:
                ref = r
            print(f"    {marks[i]:>5}%  RSS {r / 2**20:9.3f} MiB  ({r - start:+,} B since "
                  f"start; {time.perf_counter() - t0:6.1f} s)", flush=True)
    per_poll = (time.perf_counter() - t0) / polls
    end = samples[-1]
    flat = end - ref <= FLAT_KIB * 1024
    summary = [
        f"  {label}: {polls:,} polls, {per_poll * 1e3:.2f} ms/poll: RSS {start / 2**20:.3f} MiB "
        f"at start, {end / 2**20:.3f} MiB at end ({end - start:+,} B), min..max "
        f"{min(samples) / 2**20:.3f}..{max(samples) / 2**20:.3f} MiB",
        f"    since 10%: {end - ref:+,} B ({(end - ref) / max(1, polls - polls // 10):+.3f} "
        f"B/poll) -> {'FLAT' if flat else 'NOT FLAT'} (allowance {FLAT_KIB} KiB)",
    ]
    print("\n".join(summary), flush=True)
    return summary, flat


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (< 60 s)")
    ap.add_argument("--traced-sockets", type=int, default=None,
                    help="sockets for the tracemalloc part (default 10000; quick 1000)")
    ap.add_argument("--traced-polls", type=int, default=None,
                    help="polls for the tracemalloc part (default 1000; quick 200)")
    ap.add_argument("--rss-sockets", type=int, default=1_000,
                    help="sockets for the RSS part (default 1000)")
    ap.add_argument("--polls", type=int, default=None,
                    help="RSS polls of read_all(out=buf) (default 20000; quick 2000)")
    ap.add_argument("--polls-internal", type=int, default=None,
                    help="RSS polls of read_all() (default 5000; quick 1000)")
    add_results_args(ap)
    args = ap.parse_args(argv)
    res = Results("bench_memory", args, "steady-state polling allocates nothing")
    q = args.quick
    traced_sockets = args.traced_sockets or (1_000 if q else 10_000)
    traced_polls = args.traced_polls or (200 if q else 1_000)
    polls = args.polls or (2_000 if q else 20_000)
    polls_int = args.polls_internal or (1_000 if q else 5_000)

    print("web10g steady-state memory benchmark" + (" (--quick)" if q else ""))
    for line in machine_lines():
        print(line)
    sys.stdout.flush()
    ok = True
    with web10g.open(backend="sock_diag") as agent:
        # ---- part 1: tracemalloc -------------------------------------------------
        with Pairs(traced_sockets) as p:
            rows = len(agent.read_all())
            print(f"\n== Part 1: tracemalloc, {p.sockets:,} sockets held ({rows:,} rows per "
                  f"sample; setup {p.setup_s:.2f} s)", flush=True)
            dt = agent.dtype(None)
            buf = prefaulted(int(rows * 1.5) + 1024, dt)
            print(f"  preallocated out buffer: {len(buf):,} rows x {dt.itemsize} B = "
                  f"{buf.nbytes / 2**20:.1f} MiB", flush=True)

            def poll_out() -> None:
                agent.read_all(out=buf)

            def poll_internal() -> None:
                agent.read_all()

            results = [traced_growth(poll_out, traced_polls, "read_all(out=buf)"),
                       traced_growth(poll_internal, traced_polls, "read_all()")]
            # read_all(): each result the caller's own (no two held results share
            # memory); dropped results are recycled (few distinct arrays over 20 calls)
            held = [agent.read_all() for _ in range(3)]
            shared = any(np.shares_memory(a, b) for i, a in enumerate(held)
                         for b in held[i + 1:])
            del held
            ptrs = {agent.read_all().__array_interface__["data"][0] for _ in range(20)}
            outp = {agent.read_all(out=buf).__array_interface__["data"][0] for _ in range(5)}
        res.table("memory_traced", "Memory held after polls (tracemalloc, after gc.collect())",
                  ["call", "polls", "traced before B", "traced after B", "growth B",
                   "B/poll", "transient peak B", "ms/poll", "verdict"],
                  [r[0] for r in results], align="lrrrrrrrl",
                  notes=["traced = memory allocated through Python/numpy and still held; "
                         "transient peak = the most held at once during the polls (result "
                         "views, freed each poll); tracemalloc slows the Python side"],
                  what={"sockets": traced_sockets, "variables": "all", "states": "open"},
                  readme=True)
        for row, top, _ in results:
            if top:
                print(f"  {row[0]}: largest increases (tracemalloc, by line):")
                for s in top:
                    print(f"    {s}")
            if row[-1] == "GROWS":
                ok = False
        print(f"  read_all(): 3 results held at once share memory: {shared}; dropped results "
              f"recycled: {len(ptrs)} distinct array(s) over 20 calls")
        print(f"  read_all(out=buf): results point into buf: "
              f"{outp == {buf.__array_interface__['data'][0]}}")
        res.figure("held_results_share_memory", shared)
        res.figure("distinct_arrays_20_calls", len(ptrs))
        if shared or len(ptrs) > 3:
            ok = False

        # ---- part 2: RSS ------------------------------------------------------------
        with Pairs(args.rss_sockets) as p:
            rows = len(agent.read_all())
            print(f"\n== Part 2: RSS from /proc/self/statm, {p.sockets:,} sockets held "
                  f"({rows:,} rows per sample); load {loadavg()}", flush=True)
            buf = prefaulted(int(rows * 1.5) + 1024, agent.dtype(None))

            def poll_out2() -> None:
                agent.read_all(out=buf)

            def poll_int2() -> None:
                agent.read_all()

            out_lines, flat1 = rss_run(poll_out2, polls, "read_all(out=buf)")
            int_lines, flat2 = rss_run(poll_int2, polls_int, "read_all()")
        ok = ok and flat1 and flat2
        print("\nRSS summary (the arrays read_all() recycles are not prefaulted: a sample "
              "with more rows than any before\ntouches pages of one for the first time, "
              "which shows in RSS without being an allocation)")
        for line in out_lines + int_lines:
            print(line)
        res.table("memory_rss", "RSS over many polls (/proc/self/statm)",
                  ["call", "polls", "flat after 10%"],
                  [["read_all(out=buf)", f"{polls:,}", "yes" if flat1 else "NO"],
                   ["read_all()", f"{polls_int:,}", "yes" if flat2 else "NO"]],
                  notes=out_lines + int_lines,
                  what={"sockets": args.rss_sockets, "variables": "all", "states": "open",
                        "allowance_kib": FLAT_KIB}, readme=True)
    print(f"\nresult: {'no per-poll allocation detected' if ok else 'MEMORY GROWS (see above)'}"
          f"; load now {loadavg()}")
    res.figure("ok", ok)
    res.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
