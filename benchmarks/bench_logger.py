"""The logger and recordings over many flows, each against its baseline in the same run.

Logger (issue 13): `web10g logger` at 10 Hz over 20,000 sockets (CSV to /dev/null) costs
at most 1.3x the kernel floor of the logger's own request (its plan's idiag_ext and
states, sent by dump_floor.c at the same 10 Hz, its replies discarded). Both run at the
same time, the logger in its own process and the floor in another, and their CPU time
(user + system, from /proc) is compared window by window (paired ratios, median).

Formatter: the logger's C CSV formatter alone, ns per value, on the rows of that request;
and with the logger's text cache, over samples whose rows are unchanged (idle flows: the
text is copied) and over samples where every row changed (busy flows: formatted).
The logger's ratio is measured on idle held sockets, so it has the cache's benefit: the
last figure is what busy flows cost instead.

Recording (issue 4/5): a recorded sample costs at most 1.3x a bare read_all() of every
variable, counting the compressor thread's CPU, and stores at most 150 bytes per flow
compressed. Blocks of recorded and bare samples alternate; the sockets are idle loopback
pairs (busy flows compress less: their counters move).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import _common  # noqa: F401
from _common import Results, add_results_args, machine_lines, median, paired_ratio
from _pairs import Pairs
from bench_read_all import FloorServer, build_floor

import web10g
from web10g import _format
from web10g.recording import Recorder

TARGET_LOGGER = 1.3
TARGET_RECORD = 1.3
TARGET_RECORD_BYTES = 150
HZ = 10.0
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (or one of its threads)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def logger_names(agent) -> list[str]:
    """The logger's default columns (the classic Web10G variables)."""
    return [v.name for v in agent.variables() if not v.is_stock]


def logger_vs_floor(agent, floor: FloorServer, seconds: float, window: float) -> dict:
    names = logger_names(agent)
    plan, _ = agent._plan(names, None, None, None)
    ext, states = plan.ext, plan.states
    windows = int(seconds / window)
    warm = 2.0
    count = int((warm + seconds + 2 * window) * HZ)
    proc = subprocess.Popen([sys.executable, "-m", "web10g", "logger", "--count", str(count),
                             "--interval", str(1 / HZ), "-o", os.devnull],
                            cwd=_common.ROOT, stdout=subprocess.DEVNULL)
    try:
        time.sleep(warm)                       # imports, plan, first samples
        log_cpu, floor_cpu, log_share, floor_share = [], [], [], []
        t_next = time.monotonic()
        c_log = proc_cpu(proc.pid)
        t_win = time.monotonic()
        for _ in range(windows):
            dumps = []
            end = t_win + window
            while True:                        # the floor, paced at the same rate
                now = time.monotonic()
                if now >= end:
                    break
                if now >= t_next:
                    dumps.append(floor.run(ext, 1, states)["cpu_ns"][0] / 1e9)
                    t_next += 1 / HZ
                else:
                    time.sleep(min(t_next, end) - now)
            c1 = proc_cpu(proc.pid)
            t1 = time.monotonic()
            if proc.poll() is not None:
                break
            samples = (t1 - t_win) * HZ
            log_cpu.append((c1 - c_log) / samples)
            floor_cpu.append(median(dumps) if dumps else None)
            log_share.append((c1 - c_log) / (t1 - t_win))
            floor_share.append(sum(dumps) / (t1 - t_win))
            c_log, t_win = c1, t1
    finally:
        proc.kill()
        proc.wait()
    return {"ext": ext, "states": states, "columns": len(names) + 6, "windows": len(log_cpu),
            "window_s": window, "logger_ms": median(log_cpu) * 1e3,
            "floor_ms": median([x for x in floor_cpu if x]) * 1e3,
            "logger_share": median(log_share), "floor_share": median(floor_share),
            "ratio": paired_ratio(log_cpu, floor_cpu)}


def formatter_speed(agent) -> dict:
    names = logger_names(agent)
    rows = agent.read_all(names)
    lead = [("timestamp", _format.KIND_TIME), ("cid", _format.KIND_UINT),
            ("local_addr", _format.KIND_ADDR), ("local_port", _format.KIND_UINT),
            ("rem_addr", _format.KIND_ADDR), ("rem_port", _format.KIND_UINT)]
    cols = lead + [(n, _format.kind_of(rows.dtype.fields[n][0])) for n in names]
    values = max(1, len(rows) * len(cols))

    def timed(cache: _format.TextCache | None, busy: bool) -> tuple[float, int]:
        """Median seconds per sample; the samples are copies of ``rows`` with a new
        time, and (``busy``) every row's first variable changed: no text to reuse."""
        times = []
        for k in range(12):
            r = rows.copy()
            r["timestamp"] += k * 100_000_000
            if busy:
                r[names[0]] += k
            t0 = time.perf_counter()
            text = _format.format_rows(r, cols, cache=cache)
            times.append(time.perf_counter() - t0)
        return median(times[2:]), len(text)

    t, size = timed(None, False)
    t_idle, _ = timed(_format.TextCache(), False)
    t_busy, _ = timed(_format.TextCache(), True)
    return {"rows": len(rows), "columns": len(cols), "ms": t * 1e3,
            "ns_per_value": t / values * 1e9, "bytes": size,
            "ms_idle_cached": t_idle * 1e3, "ms_busy_cached": t_busy * 1e3}


def recording_vs_bare(agent, blocks: int, per_block: int) -> dict:
    bare, rec_main = [], []
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder(os.path.join(tmp, "bench.w10g"), agent)
        tid = rec._thread.native_id
        pid = os.getpid()
        for _ in range(2):
            agent.read_all()
            rec.sample()
        comp0 = proc_cpu(pid, tid)
        for b in range(blocks):
            order = (("bare", "rec") if b % 2 == 0 else ("rec", "bare"))
            for kind in order:
                c0 = time.thread_time()
                for _ in range(per_block):
                    if kind == "bare":
                        agent.read_all()
                    else:
                        rec.sample()
                (bare if kind == "bare" else rec_main).append(
                    (time.thread_time() - c0) / per_block)
        while rec._queue.qsize():               # let the compressor finish its queue
            time.sleep(0.01)
        time.sleep(0.2)
        comp = proc_cpu(pid, tid) - comp0
        rec.close()
        nrec = blocks * per_block
        comp_per = comp / nrec
        per_flow = rec.stored_bytes / max(1, rec.flows)
        raw_per_flow = rec.raw_bytes / max(1, rec.flows)
        codec = {2: "zstd", 1: "zlib"}.get(rec._codec, "none")
    with_comp = [x + comp_per for x in rec_main]
    return {"bare_ms": median(bare) * 1e3, "sample_ms": median(rec_main) * 1e3,
            "compress_ms": comp_per * 1e3, "ratio": paired_ratio(with_comp, bare),
            "ratio_sampling_only": paired_ratio(rec_main, bare),
            "stored_per_flow": per_flow, "raw_per_flow": raw_per_flow, "codec": codec,
            "samples": nrec}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sockets", type=int, default=None)
    p.add_argument("--seconds", type=float, default=None,
                   help="logger measurement time (default 30, --quick 6)")
    add_results_args(p)
    args = p.parse_args(argv)
    n = args.sockets or (2000 if args.quick else 20000)
    seconds = args.seconds or (6 if args.quick else 30)
    out = Results("bench_logger", args, "logger and recordings against their baselines")
    print("web10g logger and recording benchmark")
    print("\n".join(machine_lines()))
    with tempfile.TemporaryDirectory(prefix="web10g-bench-") as tmp, Pairs(n) as pairs, \
            web10g.open("sock_diag") as agent:
        print(f"\n{pairs.sockets:,} sockets held (setup {pairs.setup_s:.2f} s)", flush=True)
        floor = FloorServer(build_floor(tmp))
        try:
            lg = logger_vs_floor(agent, floor, seconds, window=2.0)
        finally:
            floor.close()
        what = {"sockets": pairs.sockets, "rate_hz": HZ, "ext": lg["ext"],
                "states": lg["states"], "columns": lg["columns"],
                "variables": "the logger's default (classic Web10G) columns",
                "output": "CSV to /dev/null"}
        out.table("logger", "web10g logger at 10 Hz against the kernel floor of its request "
                  "(CPU per sample, both running at once)",
                  ["sockets", "columns", "idiag_ext", "states", "windows", "logger ms/sample",
                   "floor ms/dump", "logger/floor", "logger CPU share", "floor CPU share"],
                  [[f"{pairs.sockets:,}", lg["columns"], f"{lg['ext']:#x}",
                    f"{lg['states']:#x}", f"{lg['windows']} x {lg['window_s']:g} s",
                    f"{lg['logger_ms']:.1f}", f"{lg['floor_ms']:.1f}",
                    f"{lg['ratio']:.2f}x", f"{lg['logger_share'] * 100:.0f}%",
                    f"{lg['floor_share'] * 100:.0f}%"]],
                  notes=["logger: its process's user + system CPU (/proc) per sample; floor: "
                         "dump_floor.c's thread CPU per dump of the same request",
                         "ratio: median over windows of (logger CPU per sample / floor CPU "
                         "per dump) in the same window"], what=what, readme=True)
        out.target(f"logger_floor_{n}", f"logger / kernel floor of its request, 10 Hz, "
                   f"{pairs.sockets:,} sockets", lg["ratio"], TARGET_LOGGER, "<=", what=what,
                   detail=f"logger {lg['logger_share'] * 100:.0f}% of a core, floor "
                          f"{lg['floor_share'] * 100:.0f}%")
        fm = formatter_speed(agent)
        out.table("formatter", "The logger's C CSV formatter alone",
                  ["rows", "columns", "ms per sample", "ns per value", "MB of text",
                   "ms, text cache, idle rows", "ms, text cache, every row changed"],
                  [[f"{fm['rows']:,}", fm["columns"], f"{fm['ms']:.2f}",
                    f"{fm['ns_per_value']:.2f}", f"{fm['bytes'] / 1e6:.1f}",
                    f"{fm['ms_idle_cached']:.2f}", f"{fm['ms_busy_cached']:.2f}"]],
                  notes=["the logger keeps a TextCache: a row whose printed values are "
                         "the previous sample's (an idle flow, as the held sockets here "
                         "are) gets its text copied after a new time field; a busy "
                         "flow's row is formatted (last column)"],
                  what={"columns": "the logger's default columns + time and endpoints"},
                  readme=True)
        out.figure("logger", lg)
        out.figure("formatter", fm)

        blocks, per_block = (4, 3) if args.quick else (10, 5)
        rc = recording_vs_bare(agent, blocks, per_block)
        what_r = {"sockets": pairs.sockets, "variables": "all (a recording keeps every "
                  "variable)", "states": "open", "codec": rc["codec"]}
        out.table("recording", "A recorded sample against a bare read_all() of every variable "
                  "(CPU per sample; blocks alternate)",
                  ["sockets", "samples", "read_all ms", "recorded: sampling ms",
                   "+ compressor ms", "ratio", "raw B/flow", "stored B/flow", "codec"],
                  [[f"{pairs.sockets:,}", rc["samples"], f"{rc['bare_ms']:.2f}",
                    f"{rc['sample_ms']:.2f}", f"{rc['compress_ms']:.2f}", f"{rc['ratio']:.2f}x",
                    f"{rc['raw_per_flow']:.0f}", f"{rc['stored_per_flow']:.1f}", rc["codec"]]],
                  notes=["the compressor thread's CPU (/proc/self/task) is divided over the "
                         "recorded samples and counted in the ratio"], what=what_r,
                  readme=True)
        out.target("recording_ratio", f"recorded sample / bare read_all(), incl. compression, "
                   f"{pairs.sockets:,} sockets", rc["ratio"], TARGET_RECORD, "<=", what=what_r,
                   detail=f"sampling alone {rc['ratio_sampling_only']:.2f}x")
        out.target("recording_bytes", "stored bytes per flow per sample", rc["stored_per_flow"],
                   TARGET_RECORD_BYTES, "<=", unit=" B", what=what_r)
        out.figure("recording", rc)
    out.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
