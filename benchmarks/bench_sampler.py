"""The background sampler and deltas.

Target (issue 13): the sampler at 100 Hz over 2,000 sockets, every variable, the default
ring (capacity 1,000, max_bytes 256 MiB, default prefaulting), misses no deadline from its
first pass through the ring on, over 30 s, in three consecutive runs. Each run is a new
sampler; the first lap is reported on its own.

Also measured: a sampled read against a bare read_all(out=) of the same selection, the
two alternating in time (the bare read runs in the idle time right after each of the
sampler's samples, in a separate run from the three above); 10 Hz over 20,000 sockets
(information); steady-state allocation per sample (tracemalloc); deltas over a ring of
1,000 snapshots of 10,000 flows against one dump of them (issue 5: per snapshot, less
than one dump).
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import _common  # noqa: F401
import numpy as np
from _common import Results, add_results_args, machine_lines, median, paired_ratio
from _pairs import Pairs

import web10g
from web10g import deltas
from web10g.sampler import DEFAULT_MAX_BYTES

DELTA_VARS = ["HCThruOctetsAcked", "HCThruOctetsReceived", "SegsRetrans", "CurCwnd", "rtt_us",
              "SegsOut"]


def missed_run(agent, hz: float, seconds: float) -> dict:
    """One sampler of every variable with the default ring, for ``seconds``."""
    t0 = time.perf_counter()
    s = agent.sampler(None, interval=1 / hz, strict=False)
    setup = time.perf_counter() - t0
    lap = s.capacity
    with s:
        first_lap_done = s.wait(lap, timeout=lap / hz * 4 + 5)
        missed_lap = s.stats.missed
        samples_lap = s.stats.samples
        lap_max = float(np.max(s.stats.durations)) * 1e3 if samples_lap else None
        time.sleep(max(0.0, seconds - samples_lap / hz))
        stats = s.stats
        d = np.sort(stats.durations)
        out = {"hz": hz, "seconds": seconds, "samples": stats.samples, "missed": stats.missed,
               "missed_first_lap": missed_lap, "first_lap_complete": bool(first_lap_done),
               "failed": stats.failed, "ring_slots": s.capacity,
               "prefaulted": s.prefaulted, "read_ms_max_lap1": lap_max,
               "ring_bytes": s.ring_bytes, "slot_rows": s._slot_rows,
               "row_bytes": s.dtype.itemsize, "columns": len(s.dtype.names),
               "read_ms_median": float(np.median(d)) * 1e3,
               "read_ms_p99": float(d[int(len(d) * 0.99) - 1]) * 1e3 if len(d) else None,
               "read_ms_max": float(d[-1]) * 1e3 if len(d) else None,
               "setup_s": setup}
    return out


def cost_run(agent, hz: float, samples: int) -> dict:
    """Sampler reads and bare read_all(out=) alternating: the bare read right after each
    sample, in the idle time before the next deadline."""
    buf = np.empty(64, dtype=agent.dtype(None))
    for _ in range(3):
        buf = agent.read_all(out=buf).base        # grown to fit, then reused
    bare, sampled = [], []
    with agent.sampler(None, interval=1 / hz, strict=False, capacity=50) as s:
        s.wait(5)
        for _ in range(samples):
            if not s.wait(1, timeout=5):
                break
            st = s.stats
            last = st._durations[(st.samples - 1) % len(st._durations)]
            t0 = time.perf_counter()
            agent.read_all(out=buf)
            bare.append(time.perf_counter() - t0)
            sampled.append(float(last))
        missed = s.stats.missed
    return {"bare_ms": median(bare) * 1e3, "sampled_ms": median(sampled) * 1e3,
            "ratio": paired_ratio(sampled, bare), "pairs": len(bare),
            "missed_with_bare_reads": missed}


def alloc_run(agent, hz: float, seconds: float) -> float:
    capacity = 20
    with agent.sampler(DELTA_VARS, interval=1 / hz, capacity=capacity, strict=False) as s:
        s.wait(2 * capacity, timeout=seconds + 10)
        tracemalloc.start()
        s.wait(2 * capacity, timeout=seconds + 10)
        m0 = tracemalloc.get_traced_memory()[0]
        k0 = s.stats.samples
        time.sleep(seconds)
        m1 = tracemalloc.get_traced_memory()[0]
        k1 = s.stats.samples
        tracemalloc.stop()
    return (m1 - m0) / max(k1 - k0, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=None, help="per run (default 30, "
                   "--quick 5)")
    add_results_args(p)
    args = p.parse_args(argv)
    seconds = args.seconds or (5 if args.quick else 30)
    out = Results("bench_sampler", args, "the background sampler and deltas")
    print("web10g sampler and deltas benchmark")
    print("\n".join(machine_lines()))

    runs = []
    with Pairs(2000) as pairs, web10g.open("sock_diag") as agent:
        for k in range(args.runs):
            r = missed_run(agent, 100.0, seconds)
            runs.append(r)
            print(f"run {k + 1}: {r['samples']} samples, {r['missed']} missed "
                  f"({r['missed_first_lap']} in the first lap of {r['ring_slots']} slots)",
                  flush=True)
        cost = cost_run(agent, 100.0, 100 if args.quick else 400)
        sockets = pairs.sockets
    what = {"sockets": sockets, "rate_hz": 100, "variables": "all",
            "columns": runs[0]["columns"], "states": "open (default)",
            "ring": f"default: capacity 1000, max_bytes {DEFAULT_MAX_BYTES >> 20} MiB -> "
                    f"{runs[0]['ring_slots']} slots of {runs[0]['slot_rows']} rows",
            "seconds_per_run": seconds}
    out.table("sampler_missed", f"Sampler at 100 Hz over {sockets:,} sockets, every variable, "
              "default ring: missed deadlines",
              ["run", "samples", "missed", "missed in lap 1", "ring slots", "ring MiB",
               "prefaulted", "read ms median", "p99", "max", "max in lap 1", "setup s"],
              [[k + 1, r["samples"], r["missed"], r["missed_first_lap"], r["ring_slots"],
                f"{r['ring_bytes'] / 2**20:.0f}", "yes" if r["prefaulted"] else "no",
                f"{r['read_ms_median']:.2f}", f"{r['read_ms_p99']:.2f}",
                f"{r['read_ms_max']:.2f}", f"{r['read_ms_max_lap1']:.2f}",
                f"{r['setup_s']:.2f}"]
               for k, r in enumerate(runs)],
              notes=[f"{seconds:g} s per run, consecutive runs, a new sampler each; lap 1 = the "
                     "first pass through the ring; prefaulted: the default (prefault=None) "
                     "touches the whole ring before starting when a lap takes <= 60 s; "
                     "setup s includes that; median/p99/max: the last 1,000 reads",
                     "a deadline is missed when a read ends more than one period after the "
                     "next deadline (the sampler then skips ahead)"],
              what=what, readme=True)
    worst = max(r["missed"] for r in runs)
    out.target("sampler_missed", f"sampler missed deadlines, 100 Hz, {sockets:,} sockets, every "
               f"variable, default ring, worst of {len(runs)} runs x {seconds:g} s", worst, 0,
               "==", unit="", what=what,
               detail="per run: " + ", ".join(str(r["missed"]) for r in runs))
    out.table("sampler_cost", "A sampled read against a bare read_all(out=) of every variable,"
              " alternating (wall time)", ["sockets", "pairs", "bare ms", "sampled ms",
                                           "sampled/bare"],
              [[f"{sockets:,}", cost["pairs"], f"{cost['bare_ms']:.2f}",
                f"{cost['sampled_ms']:.2f}", f"{cost['ratio']:.2f}x"]],
              notes=["the bare read runs in the main thread right after each sample (a separate "
                     f"run; it missed {cost['missed_with_bare_reads']} deadlines with them)"],
              what={"sockets": sockets, "variables": "all", "rate_hz": 100})
    out.target("sampler_cost", "sampled read / bare read_all(out=) (issue 5)", cost["ratio"],
               1.1, "<=", what={"sockets": sockets, "variables": "all"})
    out.figure("runs", runs)
    out.figure("cost", cost)

    if not args.quick:
        with Pairs(20000) as pairs, web10g.open("sock_diag") as agent:
            r20 = missed_run(agent, 10.0, 10)
        out.table("sampler_10hz", f"Sampler at 10 Hz over {pairs.sockets:,} sockets, every "
                  "variable, default ring (information)",
                  ["samples", "missed", "ring slots", "read ms median", "max"],
                  [[r20["samples"], r20["missed"], r20["ring_slots"],
                    f"{r20['read_ms_median']:.2f}", f"{r20['read_ms_max']:.2f}"]])
        out.figure("run_10hz_20k", r20)

    with Pairs(2000) as pairs, web10g.open("sock_diag") as agent:
        per = alloc_run(agent, 100.0, 2 if args.quick else 5)
    out.table("sampler_alloc", "Steady-state allocation per sample (tracemalloc)",
              ["sockets", "variables", "traced bytes per sample"],
              [[f"{pairs.sockets:,}", len(DELTA_VARS), f"{per:+.1f}"]],
              what={"variables": DELTA_VARS, "ring": "capacity 20"})
    out.figure("traced_bytes_per_sample", per)

    # deltas over a ring of snapshots of 10,000 flows
    nflows, nsnap = (10000, 1000) if not args.quick else (10000, 100)
    with Pairs(nflows) as pairs, web10g.open("sock_diag") as agent:
        base = agent.read_all(DELTA_VARS, states="established")
        dump = []
        for _ in range(7):
            t0 = time.perf_counter()
            agent.read_all(DELTA_VARS, states="established")
            dump.append(time.perf_counter() - t0)
        dump_ms = median(dump) * 1e3
    rng = np.random.default_rng(1)
    ring = []
    for k in range(nsnap):          # counters advance, a few flows come and go
        snap = base.copy()
        snap["timestamp"] += k * 10_000_000
        snap["HCThruOctetsAcked"] += np.uint64(k * 1448)
        snap["SegsOut"] += np.uint32(k)
        if k % 100 == 50:
            snap = snap[rng.permutation(len(snap))[: len(snap) - 5]]
        ring.append(snap)
    t0 = time.perf_counter()
    res = deltas.series(ring)
    took = time.perf_counter() - t0
    assert len(res) == nsnap - 1
    per = took / (nsnap - 1) * 1e3
    what_d = {"flows": len(base), "snapshots": nsnap, "variables": DELTA_VARS,
              "states": "established"}
    out.table("deltas", "deltas.series over a ring of snapshots against one dump of the flows",
              ["snapshots", "flows each", "deltas total ms", "per snapshot ms", "one dump ms"],
              [[nsnap, f"{len(base):,}", f"{took * 1e3:.0f}", f"{per:.2f}", f"{dump_ms:.2f}"]],
              notes=["the dump is timed right before (deltas need no kernel)"], what=what_d)
    out.target("deltas", "deltas per snapshot / one dump (issue 5)", per / dump_ms, 1.0, "<",
               what=what_d)
    out.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
