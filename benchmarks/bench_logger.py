"""The logger and high-rate recordings over many flows.

Targets (issue 4/5): `web10g logger` at 10 Hz over 20,000 sockets stays under 30% of one
core; a recording costs at most 1.3x a bare read_all() per sample and stores at most 150
bytes per flow per sample compressed. The sockets are idle loopback pairs (busy flows
compress less: their counters move).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import _common  # noqa: F401
from _common import machine_lines, median, table
from _pairs import Pairs

import web10g
from web10g.cli.logger import main as logger_main
from web10g.recording import Recorder


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sockets", type=int, default=None)
    args = p.parse_args(argv)
    n = args.sockets or (2000 if args.quick else 20000)
    seconds = 3 if args.quick else 10
    print("web10g logger and recording benchmark")
    print("\n".join(machine_lines()))
    with Pairs(n) as pairs:
        print(f"\n{pairs.sockets:,} sockets held (setup {pairs.setup_s:.2f} s)")
        # logger at 10 Hz, CSV to /dev/null: CPU time of this process over wall time
        count = seconds * 10
        w0, c0 = time.perf_counter(), cpu()
        logger_main(["--count", str(count), "--interval", "0.1", "-o", os.devnull])
        wall, used = time.perf_counter() - w0, cpu() - c0
        share = used / wall
        rows_logger = [[f"{pairs.sockets:,}", count, f"{wall:.2f}", f"{used:.2f}",
                        f"{share * 100:.1f}%",
                        "< 30% of a core: " + ("ok" if share < 0.30 else "MISS")]]
        print()
        print(table(["sockets", "samples", "wall s", "CPU s", "CPU/wall", "target"],
                    rows_logger))

        # recording: the sampling thread's cost per sample against bare read_all()
        with web10g.open("sock_diag") as agent:
            reps = 10 if args.quick else 30
            bare = []
            for _ in range(reps + 2):
                t0 = time.perf_counter()
                agent.read_all()
                bare.append(time.perf_counter() - t0)
            bare = bare[2:]
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "bench.w10g")
                rec_t = []
                c0 = cpu()
                with Recorder(path, agent) as rec:
                    for _ in range(reps + 2):
                        t0 = time.perf_counter()
                        rec.sample()
                        rec_t.append(time.perf_counter() - t0)
                rec_cpu = cpu() - c0
                rec_t = rec_t[2:]
                per_flow = rec.stored_bytes / rec.flows
                raw_per_flow = rec.raw_bytes / rec.flows
        ratio = median(rec_t) / median(bare)
        print()
        print(table(
            ["sockets", "read_all ms", "recorded sample ms", "ratio", "raw B/flow",
             "stored B/flow", "codec", "targets"],
            [[f"{pairs.sockets:,}", f"{median(bare) * 1e3:.2f}", f"{median(rec_t) * 1e3:.2f}",
              f"{ratio:.2f}x", f"{raw_per_flow:.0f}", f"{per_flow:.1f}",
              "zstd" if rec._codec == 2 else "zlib",
              ("ratio <= 1.3x: " + ("ok" if ratio <= 1.3 else "MISS")
               + "; <= 150 B/flow: " + ("ok" if per_flow <= 150 else "MISS"))]]))
        print(f"  the recorder's total CPU (sampling + background compression): "
              f"{rec_cpu / (reps + 2) * 1e3:.1f} ms per sample")
    return 0


if __name__ == "__main__":
    sys.exit(main())
