"""The ebpf backend: coverage, read cost against the inet_diag floor, kernel memory per
socket, data-path cost.

Read cost, at each size N (N established loopback sockets held by _pairs.py, opened
after the programs were loaded, so every one has its sk_storage counters), interleaved
round by round, each ebpf figure divided by the floor of the same round:

  floor 0x02   dump_floor.c: inet_diag dump, states 0xfff, idiag_ext = INFO only, every
               datagram read and discarded: the tcp_info-only kernel floor. Both address
               families in one walk of the kernel's tables (TCPDIAG_GETSOCK, AF_UNSPEC),
               the request read_all sends and the cheapest there is: the target's floor
  per family   the same dump as one SOCK_DIAG_BY_FAMILY request per family (two walks),
               what ss and other inet_diag clients send and what ebpf-notes.md's probe
               measured against; shown for comparison, not the target's floor
  iter raw     open() + read() of the pinned iterator to its end into one reused buffer,
               no decoding: the ebpf kernel cost (full record: identity, tcp_sock fields,
               storage counters)
  read_all     EbpfAgent.read_all(states="all", out=buf): every ebpf variable decoded
               into numpy rows (the "full-MIB read" of the target)

Wall-clock time is the figure of the target; CPU time (this thread's user + system time,
CLOCK_THREAD_CPUTIME_ID, as dump_floor reports its own) is shown beside it, because other
work on a shared machine delays the wall clock far more than it does CPU time.

Kernel memory per socket: the bytes the sk_storage charges to each socket (sk_omem_alloc,
ss -m "o": the storage element and the socket's bpf_local_storage), what the slab
allocator really hands out for them (the kmalloc caches of /proc/slabinfo, N sockets
opened with and without the programs, rounds interleaved), and the map's own memory
(bpftool memlock).

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
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Results, add_results_args, machine_lines  # noqa: E402
from _pairs import Pairs, PairsError  # noqa: E402
from bench_read_all import FloorServer, build_floor  # noqa: E402

from web10g import mib  # noqa: E402
from web10g.backends import ebpf_loader as L  # noqa: E402

TARGET = 1.0          # full-MIB ebpf read / inet_diag INFO floor
STRETCH = 0.8
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


def coverage(res: Results) -> None:
    # default: sockops, iter, cong, retrans, drops; full adds probe (tcp_probe) and sent (sock_ops
    # HDR_OPT_LEN on every sent segment): csrc/w10g_ebpf_rec.h W10G_EB_HOOK_*
    avail_full, _ = mib.ebpf_availability(0x1F | L.HOOK_SENT | L.HOOK_DROPS)
    avail_def, _ = mib.ebpf_availability(0x0F | L.HOOK_DROPS)
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
    res.table("coverage", "== coverage of the 124 HEAD variables",
              ["backend", "available", "exact", "approx", "derived"], rows, align="lrrrr",
              readme=True)
    res.target("coverage", "ebpf variables available (full mode)", len(avail_full), 100,
               ">=", unit="")


def _raw_reader(path: str) -> Any:
    """open() + read() to the end into one reused 1 MiB buffer (each read() of a BPF
    iterator returns at most its 32 KiB seq_file buffer, whatever the size asked)."""
    buf = bytearray(1 << 20)

    def raw() -> int:
        fd = os.open(path, os.O_RDONLY)
        try:
            total = 0
            while True:
                n = os.readv(fd, [buf])
                if not n:
                    return total
                total += n
        finally:
            os.close(fd)
    return raw


def read_cost(res: Results, sizes: list[int], rounds: int, tmp: str) -> None:
    from web10g.backends.ebpf import _STORAGE_HOOKS, EbpfAgent

    exe = build_floor(tmp)
    floor = FloorServer(exe)
    floor46 = FloorServer(exe, families="46")
    out_rows = []
    fields_rows = []
    targets: list[tuple[int, int, float, float]] = []
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
                raw = _raw_reader(os.path.join(PIN, "iter"))
                # the variables the fields reader serves (no storage counter among them)
                fvars = [v.name for v in agent.variables()
                         if not _STORAGE_HOOKS & set(v.ebpf.hooks)]
                fbuf = np.empty(n + n // 4 + 1024, agent.dtype(fvars))
                has_fields = agent.reader_pin(fvars).endswith("/fields")
                # per round: (floor wall, floor cpu, raw wall, read_all wall, read_all cpu)
                t: dict[str, list[float]] = {k: [] for k in ("floor", "floor_cpu", "raw",
                                                             "read_all", "read_all_cpu",
                                                             "floor46", "fields")}
                count = 0
                for _ in range(2):                          # warm-up
                    floor.run(0x02)
                    floor46.run(0x02)
                    raw()
                    agent.read_all(states="all", out=buf)
                    agent.read_all(fvars, states="all", out=fbuf)
                for r in range(rounds):
                    order = ["floor", "raw", "read_all", "floor46", "fields"]
                    order = order[r % 5:] + order[:r % 5]
                    for m in order:
                        if m == "floor":
                            f = floor.run(0x02)
                            t["floor"].append(f["median_ns"])
                            t["floor_cpu"].append(f["cpu_median_ns"])
                        elif m == "floor46":
                            t["floor46"].append(floor46.run(0x02)["median_ns"])
                        elif m == "fields":
                            t0 = time.perf_counter_ns()
                            agent.read_all(fvars, states="all", out=fbuf)
                            t["fields"].append(time.perf_counter_ns() - t0)
                        elif m == "raw":
                            t0 = time.perf_counter_ns()
                            raw()
                            t["raw"].append(time.perf_counter_ns() - t0)
                        else:
                            c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
                            count = len(agent.read_all(states="all", out=buf))
                            t["read_all"].append(time.perf_counter_ns() - t0)
                            t["read_all_cpu"].append(time.thread_time_ns() - c0)
                agent.close()
                a = {k: np.array(v, float) for k, v in t.items()}
                ratio_raw = float(np.median(a["raw"] / a["floor"]))
                ratio_all = float(np.median(a["read_all"] / a["floor"]))
                ratio_cpu = float(np.median(a["read_all_cpu"] / a["floor_cpu"]))
                ratio_46 = float(np.median(a["read_all"] / a["floor46"]))
                ratio_f = float(np.median(a["fields"] / a["floor"]))
                per = {k: float(np.median(v)) / count for k, v in a.items()}
                out_rows.append((f"{count:,}", f"{per['floor']:.0f}", f"{per['raw']:.0f}",
                                 f"{per['read_all']:.0f}", f"{ratio_raw:.2f}x",
                                 f"{ratio_all:.2f}x", f"{per['floor_cpu']:.0f}",
                                 f"{per['read_all_cpu']:.0f}", f"{ratio_cpu:.2f}x",
                                 f"{per['floor46']:.0f}", f"{ratio_46:.2f}x"))
                res.figure(f"read_cost_{n}", {"sockets": count, "ns_per_socket": per,
                                              "ratio_raw": ratio_raw, "ratio_read_all":
                                              ratio_all, "ratio_read_all_cpu": ratio_cpu,
                                              "ratio_read_all_per_family_floor": ratio_46,
                                              "ratio_fields_read_all": ratio_f,
                                              "fields_vars": len(fvars),
                                              "fields_reader": has_fields,
                                              "rounds_ns": t})
                targets.append((n, count, ratio_all, ratio_cpu))
                fields_rows.append((f"{count:,}", f"{len(fvars)}",
                                    "fields" if has_fields else "iter (no fields pin)",
                                    f"{per['floor']:.0f}", f"{per['fields']:.0f}",
                                    f"{ratio_f:.2f}x", f"{per['read_all']:.0f}",
                                    f"{ratio_all:.2f}x"))
            finally:
                pairs.__exit__(None, None, None)
    finally:
        floor.close()
        floor46.close()
    res.table("read_cost", f"== read cost, {rounds} interleaved rounds (target: full-MIB read "
              f"<= {TARGET}x the inet_diag INFO floor; stretch {STRETCH}x); ns per socket, "
              "ratios are medians of per-round ratios",
              ["sockets", "floor ns", "iter raw ns", "read_all ns", "raw / floor",
               "read_all / floor", "floor cpu ns", "read_all cpu ns", "cpu ratio",
               "per-family floor ns", "read_all / per-family floor"], out_rows,
              readme=True, notes=["floor: inet_diag dump, states 0xfff, INFO only, both "
                                  "families in one walk as read_all asks, no decoding "
                                  "(dump_floor.c); wall clock unless 'cpu'",
                                  "per-family floor: the same dump as one request per "
                                  "family, as ss asks (two walks); context, not the "
                                  "target's floor"])
    res.table("read_cost_fields", "== reads that select no counter (the tcp_sock variables "
              "alone) take the fields reader: no storage lookup; same rounds, ns per socket",
              ["sockets", "variables", "reader", "floor ns", "read_all ns",
               "read_all / floor", "full-MIB read_all ns", "full-MIB / floor"], fields_rows,
              readme=True, notes=["context for the full-MIB target above, not a target: "
                                  "a read of every variable needs the counters"])
    for n, count, ratio_all, ratio_cpu in targets:
        what = {"sockets": count, "states": "0xfff", "vars": "all (full mode)"}
        res.target(f"read_cost_{n}", f"full-MIB ebpf read_all / inet_diag INFO floor, "
                   f"{count:,} sockets (wall, paired per round)", ratio_all, TARGET,
                   what=what, detail=f"cpu time {ratio_cpu:.2f}x")
        res.target(f"read_cost_{n}_stretch", f"stretch: the same, {count:,} sockets",
                   ratio_all, STRETCH, what=what)


# -- kernel memory per socket --------------------------------------------------------------

def _optmem_mean() -> float:
    """Mean sk_omem_alloc ("o" of ss -m) over the established TCP sockets."""
    out = subprocess.run(["ss", "-tmnH", "state", "established"], capture_output=True,
                         text=True, check=True).stdout
    vals = [int(m) for m in re.findall(r"skmem:\([^)]*\bo(\d+)", out)]
    return sum(vals) / len(vals) if vals else 0.0


def _map_memlock() -> tuple[int, int]:
    """(value size, bytes_memlock) of the loaded sk_storage map, from bpftool."""
    link = json.loads(subprocess.run(["bpftool", "-j", "link", "show", "pinned",
                                      os.path.join(PIN, "iter")], capture_output=True,
                                     text=True, check=True).stdout)
    prog = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "id",
                                      str(link["prog_id"])], capture_output=True, text=True,
                                     check=True).stdout)
    for mid in prog.get("map_ids", []):
        m = json.loads(subprocess.run(["bpftool", "-j", "map", "show", "id", str(mid)],
                                      capture_output=True, text=True, check=True).stdout)
        if m.get("type") == "sk_storage":
            return int(m["bytes_value"]), int(m.get("bytes_memlock", 0))
    return 0, 0


def _kmalloc_bytes() -> int:
    """Bytes in use in the kmalloc caches (kmalloc-N and kmalloc-cg-N of /proc/slabinfo:
    active objects x object size), where the sk_storage elements and each socket's
    bpf_local_storage live; 0 when slabinfo cannot be read."""
    total = 0
    try:
        with open("/proc/slabinfo") as fh:
            for line in fh:
                f = line.split()
                if len(f) > 3 and re.fullmatch(r"kmalloc-(cg-)?\d+", f[0]):
                    total += int(f[1]) * int(f[3])
    except (OSError, ValueError):
        return 0
    return total


def _kmalloc_size(n: int) -> int:
    for size in (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192):
        if n <= size:
            return size
    return n


def kernel_memory(res: Results, n: int, rounds: int) -> None:
    """Per socket: charged (sk_omem_alloc) and allocated (the kmalloc caches of
    /proc/slabinfo) with the programs loaded, minus the same without them, N sockets each
    time, rounds interleaved."""
    slab: dict[bool, list[float]] = {True: [], False: []}
    optmem: dict[bool, list[float]] = {True: [], False: []}
    value_size, memlock = 0, 0
    sockets = n
    for r in range(rounds):
        for loaded in ((True, False) if r % 2 == 0 else (False, True)):
            L.unload(PIN)
            if loaded:
                L.load(PIN, full=True)
                value_size, memlock = _map_memlock()
            time.sleep(0.5)
            s0 = _kmalloc_bytes()
            try:
                with Pairs(n) as p:
                    time.sleep(0.5)
                    s1 = _kmalloc_bytes()
                    optmem[loaded].append(_optmem_mean())
                    sockets = getattr(p, "sockets", n)
            except PairsError as exc:
                print(f"  kernel memory: cannot hold {n} sockets here ({exc})")
                return
            slab[loaded].append((s1 - s0) / sockets)
    L.unload(PIN)
    L.load(PIN, full=True)
    charged = float(np.median(optmem[True]) - np.median(optmem[False]))
    allocated = float(np.median(slab[True]) - np.median(slab[False]))
    elem = 72 + value_size            # struct bpf_local_storage_elem header + the value
    storage = charged - elem          # struct bpf_local_storage (one per socket)
    expected = _kmalloc_size(elem) + _kmalloc_size(int(storage)) if storage > 0 else 0
    rows = [
        ("sk_storage value (struct w10g_eb_sk)", f"{value_size} B"),
        ("charged to the socket (sk_omem_alloc, ss -m 'o')", f"{charged:.0f} B"),
        ("  = element (72 B header + value) + bpf_local_storage",
         f"{elem} + {storage:.0f} B"),
        ("kmalloc size classes of those two", f"{expected} B"),
        ("allocated (kmalloc caches, loaded - not loaded)", f"{allocated:.0f} B"),
        ("the map itself (bpftool memlock, not per socket)", f"{memlock:,} B"),
    ]
    res.table("kernel_memory", f"== kernel memory per socket ({sockets:,} sockets, "
              f"{rounds} rounds with and without the programs)", ["what", "bytes"], rows,
              align="lr", readme=True,
              notes=["the kmalloc caches move with everything else the machine does: the "
                     "charged figure is exact, the allocated one an estimate"])
    res.figure("kernel_memory", {"value_size": value_size, "charged": charged,
                                 "allocated_slab": allocated, "kmalloc_classes": expected,
                                 "map_memlock": memlock, "slab_rounds": slab,
                                 "optmem_rounds": optmem})


def data_path(res: Results, tmp: str, trips: int, rounds: int) -> None:
    exe = os.path.join(tmp, "pingpong")
    src = exe + ".c"
    with open(src, "w") as fh:
        fh.write(PINGPONG_C)
    subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
    cmd = [exe, str(trips)]
    if (os.cpu_count() or 1) >= 2 and subprocess.run(["which", "taskset"],
                                                     capture_output=True).returncode == 0:
        cmd = ["taskset", "-c", "1", *cmd]
    t: dict[str, list[float]] = {"none": [], "default": [], "full": []}
    for r in range(rounds):
        order = ["none", "default", "full"]
        order = order[r % 3:] + order[:r % 3]
        for mode in order:
            L.unload(PIN)
            if mode != "none":
                L.load(PIN, full=mode == "full")
            t[mode].append(float(subprocess.run(cmd, capture_output=True, text=True,
                                                check=True).stdout))
    none = np.array(t["none"])
    rows = []
    cost = {}
    for mode in ("none", "default", "full"):
        v = np.array(t[mode])
        ratio = float(np.median(v / none))
        cost[mode] = (1 - ratio) * 100
        rows.append((mode, f"{np.median(v):,.0f}", f"{ratio:.3f}", f"{(ratio - 1) * 100:+.1f}%"))
    res.table("data_path", f"== data path: 1-byte request/response, {trips:,} round trips x "
              f"{rounds} rounds (target: default hooks cost <= 5%)",
              ["programs", "round trips/s", "vs none", "change"], rows, align="lrrr",
              readme=True)
    res.figure("data_path", t)
    res.target("data_path_default", "round trips/s lost with the default hook set",
               cost["default"], 5.0, unit="%")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sizes", default=None)
    p.add_argument("--no-memory", action="store_true", help="skip the kernel-memory rounds")
    p.add_argument("--no-data-path", action="store_true", help="skip the round-trip rounds")
    add_results_args(p)
    args = p.parse_args()
    reason = L.unusable_reason()
    if reason:
        print(f"bench_ebpf: skipped: {reason}")
        return 0
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [2000] if args.quick else [20000, 100000])
    res = Results("bench_ebpf", args, "ebpf backend: coverage, read cost against the "
                  "inet_diag floor, kernel memory per socket, data-path cost")
    print("\n".join(machine_lines()))
    coverage(res)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            L.load(PIN, full=True)
            read_cost(res, sizes, 5 if args.quick else 11, tmp)
            if not args.no_memory:
                kernel_memory(res, 2000 if args.quick else 20000, 2 if args.quick else 4)
            if not args.no_data_path:
                data_path(res, tmp, 20000 if args.quick else 100000, 3 if args.quick else 9)
        finally:
            L.unload(PIN)
    res.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
