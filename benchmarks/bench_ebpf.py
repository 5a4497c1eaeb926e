"""The ebpf backend: coverage, read cost against the inet_diag floor, data-path cost.

Read cost, at each size N (N established loopback sockets held by _pairs.py, opened
after the programs were loaded, so every one has its sk_storage counters), interleaved
round by round:

  floor 0x02   dump_floor.c: inet_diag dump, states 0xfff, idiag_ext = INFO only, every
               datagram read and discarded: the tcp_info-only kernel floor
  iter raw     open() + read() of the pinned iterator to its end, no decoding: the
               ebpf kernel cost (full record: identity, tcp_sock fields, storage counters)
  read_all     EbpfAgent.read_all(states="all", out=buf): every ebpf variable decoded
               into numpy rows

Data-path cost: a C 1-byte request/response loop over loopback (TCP_NODELAY, pinned
to one CPU when there are two), with no programs, the default hook set (events only)
and the full set (+ tcp_probe on every received segment), rounds interleaved; round
trips per second and the ratio to "none" in the same run.

Needs root (it loads the programs under its own pin directory and unloads them).

    python3 benchmarks/bench_ebpf.py            # 20,000 and 100,000 sockets
    python3 benchmarks/bench_ebpf.py --quick    # 2,000 sockets, short data-path runs
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_lines, median, table  # noqa: E402
from _pairs import Pairs, PairsError  # noqa: E402
from bench_read_all import FloorServer, build_floor  # noqa: E402

from web10g import mib  # noqa: E402
from web10g.backends import ebpf_loader as L  # noqa: E402

TARGET = 1.0          # full-MIB ebpf read / inet_diag INFO floor (stretch 0.8)
PIN = f"/sys/fs/bpf/web10g_bench_{os.getpid()}"

PINGPONG_C = r"""
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t al = sizeof(a);
    if (bind(l, (void *)&a, sizeof(a)) || listen(l, 1) || getsockname(l, (void *)&a, &al))
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        int s = accept(l, NULL, NULL);
        char b;
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        while (read(s, &b, 1) == 1)
            if (write(s, &b, 1) != 1) break;
        _exit(0);
    }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c, (void *)&a, sizeof(a))) return 1;
    char b = 'x';
    struct timespec t0, t1;
    for (long i = 0; i < n / 10; i++) { write(c, &b, 1); read(c, &b, 1); }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        if (write(c, &b, 1) != 1 || read(c, &b, 1) != 1) return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    close(c);
    waitpid(pid, NULL, 0);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%.0f\n", n / s);
    return 0;
}
"""


def coverage() -> None:
    avail_full, _ = mib.ebpf_availability(0x1F)
    avail_def, _ = mib.ebpf_availability(0x0F)
    sd = [v for v in mib.variables(backend="sock_diag") if not v.is_stock]
    rows = []
    for label, names in (("sock_diag", [v.name for v in sd]), ("ebpf default", avail_def),
                         ("ebpf full", avail_full)):
        vs = [mib.lookup(n) for n in names]
        cls = (lambda v: v.sock_diag.match) if label == "sock_diag" else (
            lambda v: v.ebpf.match)
        rows.append((label, len(vs), sum(cls(v) == "exact" for v in vs),
                     sum(cls(v) == "approx" for v in vs),
                     sum(cls(v) == "derived" for v in vs)))
    print("== coverage of the 124 HEAD variables")
    print(table(["backend", "available", "exact", "approx", "derived"], rows, "lrrrr"))


def read_cost(sizes: list[int], rounds: int, tmp: str) -> None:
    from web10g.backends.ebpf import EbpfAgent

    floor = FloorServer(build_floor(tmp))
    out_rows = []
    try:
        for n in sizes:
            try:
                pairs = Pairs(n)
                pairs.__enter__()
            except PairsError as exc:
                print(f"  {n} sockets: cannot hold them here ({exc})")
                continue
            try:
                agent = EbpfAgent(pin_dir=PIN)
                buf = np.empty(n + n // 4 + 1024, agent.dtype())
                path = os.path.join(PIN, "iter")

                def raw(path: str = path) -> int:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        total = 0
                        while True:
                            b = os.read(fd, 1 << 16)
                            if not b:
                                return total
                            total += len(b)
                    finally:
                        os.close(fd)

                res: dict[str, list[float]] = {"floor": [], "raw": [], "read_all": []}
                count = 0
                for _ in range(2):                          # warm-up
                    floor.run(0x02)
                    raw()
                    agent.read_all(states="all", out=buf)
                for r in range(rounds):
                    order = ["floor", "raw", "read_all"]
                    order = order[r % 3:] + order[:r % 3]
                    for m in order:
                        if m == "floor":
                            res[m].append(floor.run(0x02)["median_ns"] / 1e9)
                        elif m == "raw":
                            t0 = time.perf_counter()
                            raw()
                            res[m].append(time.perf_counter() - t0)
                        else:
                            t0 = time.perf_counter()
                            count = len(agent.read_all(states="all", out=buf))
                            res[m].append(time.perf_counter() - t0)
                agent.close()
                f = np.array(res["floor"])
                ratios_raw = np.array(res["raw"]) / f
                ratios_all = np.array(res["read_all"]) / f
                out_rows.append((f"{count:,}", f"{np.median(f) / count * 1e9:.0f}",
                                 f"{median(res['raw']) / count * 1e9:.0f}",
                                 f"{median(res['read_all']) / count * 1e9:.0f}",
                                 f"{np.median(ratios_raw):.2f}x",
                                 f"{np.median(ratios_all):.2f}x"))
            finally:
                pairs.__exit__(None, None, None)
    finally:
        floor.close()
    print(f"\n== read cost, {rounds} interleaved rounds (target: full-MIB read <= {TARGET}x "
          "the inet_diag INFO floor; stretch 0.8x)")
    print(table(["sockets", "floor ns/sock", "iter raw ns/sock", "read_all ns/sock",
                 "raw / floor", "read_all / floor"], out_rows))


def data_path(tmp: str, trips: int, rounds: int) -> None:
    exe = os.path.join(tmp, "pingpong")
    src = exe + ".c"
    with open(src, "w") as fh:
        fh.write(PINGPONG_C)
    subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
    cmd = [exe, str(trips)]
    if (os.cpu_count() or 1) >= 2 and subprocess.run(["which", "taskset"],
                                                     capture_output=True).returncode == 0:
        cmd = ["taskset", "-c", "1", *cmd]
    res: dict[str, list[float]] = {"none": [], "default": [], "full": []}
    for r in range(rounds):
        order = ["none", "default", "full"]
        order = order[r % 3:] + order[:r % 3]
        for mode in order:
            L.unload(PIN)
            if mode != "none":
                L.load(PIN, full=mode == "full")
            res[mode].append(float(subprocess.run(cmd, capture_output=True, text=True,
                                                  check=True).stdout))
    none = np.array(res["none"])
    rows = []
    for mode in ("none", "default", "full"):
        v = np.array(res[mode])
        rows.append((mode, f"{np.median(v):,.0f}", f"{np.median(v / none):.3f}",
                     f"{(np.median(v / none) - 1) * 100:+.1f}%"))
    print(f"\n== data path: 1-byte request/response, {trips:,} round trips x {rounds} "
          "rounds (target: default hooks cost <= 5%)")
    print(table(["programs", "round trips/s", "vs none", "change"], rows, "lrrr"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sizes", default=None)
    args = p.parse_args()
    reason = L.unusable_reason()
    if reason:
        print(f"bench_ebpf: skipped: {reason}")
        return 0
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [2000] if args.quick else [20000, 100000])
    print("\n".join(machine_lines()))
    coverage()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            L.load(PIN, full=True)
            read_cost(sizes, 5 if args.quick else 11, tmp)
            data_path(tmp, 20000 if args.quick else 100000, 3 if args.quick else 5)
        finally:
            L.unload(PIN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
