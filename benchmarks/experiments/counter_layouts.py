"""Where the full-MIB read's counters cost: the shipped reader against scratch variants.

Not part of ``make bench`` (about 10 minutes; root; needs clang). It compiles a copy of
web10g/bpf/web10g.bpf.c with extra iterator programs that read the event counters from
other places, loads it in place of the shipped object (pin dir of its own), and times
every reader against the inet_diag floor (dump_floor.c, one walk, states 0xfff, INFO),
interleaved, over the same sockets:

  iter    shipped: bpf_sk_storage_get() per socket, 236 bytes of counters
  fields  shipped: no counters at all (the floor of any layout)
  hot     counters copied from one per-CPU value always in cache: the copy alone
  arr     an array map slot computed from the socket's address (no load before the
          counters' own lines: the earliest a BPF program can ask for them)
  arrt    arr, and the counters' four cache lines loaded (not waited for) as soon as the
          slot is known: a prefetch made of loads, as BPF has no prefetch instruction
  a64     the same slot as arr, first 64 bytes only
  s64     sk_storage, first 64 bytes only
  itert   sk_storage, its four lines loaded as soon as the lookup returns

The variants read wrong values (arr/a64/hot are never written): only their cost is
measured. docs/ebpf.md has the results and what they mean.

    sudo .venv/bin/python benchmarks/experiments/counter_layouts.py 20000 15
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, ROOT)

from _pairs import Pairs  # noqa: E402
from bench_ebpf import _raw_reader  # noqa: E402
from bench_read_all import build_floor  # noqa: E402

from web10g.backends import ebpf_loader as L  # noqa: E402
from web10g.bpf import build as bpfbuild  # noqa: E402

VARIANTS = ("hot", "arr", "arrt", "a64", "s64", "itert")
READERS = ("iter", "fields") + VARIANTS

MAPS = '''
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1 << 17);
    __type(key, __u32);
    __type(value, struct w10g_eb_sk);
} x_arr SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct w10g_eb_sk);
} x_hot SEC(".maps");

'''
# counters: 1 shipped, 2 arr, 3 s64, 4 a64, 5 hot, 6 arrt, 7 itert
LOOKUP_OLD = '''    if (counters && tp)
        st = bpf_sk_storage_get(&w10g_sk, tp, 0, 0);'''
LOOKUP_NEW = '''    if ((counters == 2 || counters == 4 || counters == 6) && tp) {
        __u64 lo;
        __u32 slot;
        /* a 32-bit move makes the address a number (root's programs may) */
        asm volatile("r1 = %[p]\\n\\tw1 = w1\\n\\t%[o] = r1" : [o]"=r"(lo) : [p]"r"(tp) : "r1");
        slot = ((__u32)lo >> 6) * 2654435761u >> 15;
        st = bpf_map_lookup_elem(&x_arr, &slot);
    } else if (counters == 5 && tp) {
        __u32 zero = 0;
        st = bpf_map_lookup_elem(&x_hot, &zero);
    } else if (counters && tp)
        st = bpf_sk_storage_get(&w10g_sk, tp, 0, 0);
    if ((counters == 6 || counters == 7) && st) {
        __u64 a = *(volatile __u64 *)((char *)st + 0);
        __u64 b = *(volatile __u64 *)((char *)st + 64);
        __u64 c = *(volatile __u64 *)((char *)st + 128);
        __u64 d = *(volatile __u64 *)((char *)st + 192);
        asm volatile("" :: "r"(a), "r"(b), "r"(c), "r"(d));
    }'''
LATE_OLD = "        if (counters && !st && r->state"
LATE_NEW = "        if (counters == 1 && !st && r->state"
COPY_OLD = '''    fill_counters(r, st);
    bpf_seq_write(seq, r, sizeof(*r));'''
COPY_NEW = '''    if (counters == 3 || counters == 4) {
        if (st)
            __builtin_memcpy(&r->c, &st->c, 64);
    } else
        fill_counters(r, st);
    bpf_seq_write(seq, r, sizeof(*r));'''
PROGS = "".join(f'''
SEC("iter/tcp")
int x_iter_{name}(struct bpf_iter__tcp *ctx)
{{
    return iter_record(ctx, {n});
}}
''' for name, n in (("arr", 2), ("s64", 3), ("a64", 4), ("hot", 5), ("arrt", 6),
                  ("itert", 7)))


def variant_source() -> str:
    with open(bpfbuild.SOURCE) as fh:
        s = fh.read()
    for old, new in ((LOOKUP_OLD, LOOKUP_NEW), (LATE_OLD, LATE_NEW), (COPY_OLD, COPY_NEW)):
        if s.count(old) != 1:
            raise SystemExit(f"web10g.bpf.c changed: cannot find {old.strip()[:60]!r}; "
                             "update this experiment")
        s = s.replace(old, new)
    anchor = "extern int bpf_sock_destroy"
    return s.replace(anchor, MAPS + anchor, 1) + PROGS


def build_variant(tmp: str) -> str:
    if not os.path.exists(os.path.join(ROOT, "build", "bpf", "vmlinux.h")):
        bpfbuild.build(force=True, quiet=True)      # writes build/bpf/vmlinux.h
    src = os.path.join(tmp, "variants.bpf.c")
    with open(src, "w") as fh:
        fh.write(variant_source())
    obj = os.path.join(tmp, "variants.bpf.o")
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86",
                    "-Wall", "-Wno-unused-function", "-Wno-compare-distinct-pointer-types",
                    "-I", os.path.join(ROOT, "build", "bpf"), "-I", os.path.join(ROOT, "csrc"),
                    "-I", os.path.dirname(bpfbuild.SOURCE), "-c", src, "-o", obj], check=True)
    return obj


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    tmp = tempfile.mkdtemp(prefix="w10g-layouts-")
    L.OBJECT = build_variant(tmp)
    L.GROUPS = L.GROUPS + [(v, (f"x_iter_{v}",), L.HOOK_FIELDS, "iter", v) for v in VARIANTS]
    L.OUR_PINS = L.OUR_PINS | frozenset(VARIANTS)
    pin = f"/sys/fs/bpf/web10g_layouts_{os.getpid()}"
    floor_exe = build_floor(tmp)
    res = L.load(pin, full=True)
    if res.refused:
        L.unload(pin)
        raise SystemExit(f"refused: {res.refused}")
    floor: subprocess.Popen | None = None

    def floor_ns() -> int:
        assert floor and floor.stdin and floor.stdout
        floor.stdin.write("0x2 1\n")
        floor.stdin.flush()
        return int(json.loads(floor.stdout.readline())["median_ns"])

    try:
        with Pairs(n):
            # started once the sockets are there, as bench_ebpf starts it
            floor = subprocess.Popen([floor_exe, "-i", "-s", "0xfff", "-f", "0"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)
            read = {k: _raw_reader(os.path.join(pin, k)) for k in READERS}
            t: dict[str, list[int]] = {k: [] for k in ("floor",) + READERS}
            for _ in range(2):
                floor_ns()
                for f in read.values():
                    f()
            for r in range(rounds):
                t["floor"].append(floor_ns())
                for k in (READERS if r % 2 else READERS[::-1]):
                    c = time.perf_counter_ns()
                    read[k]()
                    t[k].append(time.perf_counter_ns() - c)
    finally:
        if floor is not None:
            if floor.stdin:
                floor.stdin.close()
            floor.wait()
        L.unload(pin)
    a = {k: np.array(v, dtype=float) for k, v in t.items()}
    print(f"{n:,} sockets, {rounds} interleaved rounds; medians of per-round ratios")
    print("| reader | ms per read | / floor |")
    print("|---|---:|---:|")
    print(f"| floor | {np.median(a['floor']) / 1e6:.2f} | 1.00x |")
    for k in READERS:
        print(f"| {k} | {np.median(a[k]) / 1e6:.2f} | {np.median(a[k] / a['floor']):.2f}x |")


if __name__ == "__main__":
    main()
