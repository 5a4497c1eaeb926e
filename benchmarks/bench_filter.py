"""Kernel-side filters: a port filter on 100,000 sockets costs what the kernel's filtered
dump costs (spec section 7 measured 25 ms filtered against 90 ms unfiltered).

Compares, interleaved call by call (each round runs every method once, order shuffled;
ratios paired per round): the unfiltered read_all() of every variable (default states),
read_all(filter=...) matching ~2% of the sockets, and the same filtered request (ext 0xFF,
every state) sent raw through the netlink core with the replies discarded (the kernel's
filtered dump plus recv, no decoding). Results also as JSON (see _common.Results).
"""
from __future__ import annotations

import argparse
import random
import struct
import sys
import time

import _common  # noqa: F401
from _common import Results, add_results_args, machine_lines, median, paired_ratio
from _pairs import Pairs

import web10g
from web10g import filter as wfilter
from web10g._netlink import NetlinkSocket


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    add_results_args(p)
    args = p.parse_args(argv)
    res = Results("bench_filter", args, "kernel-side filters")
    n = 10000 if args.quick else 100000
    reps = 5 if args.quick else 9
    print("web10g filter benchmark")
    print("\n".join(machine_lines()))
    with Pairs(n) as pairs, web10g.open("sock_diag") as agent, NetlinkSocket(4) as raw:
        rows = agent.list_conns(states="established")
        ports = sorted(set(rows["local_port"].tolist()))
        # a port range holding about 2% of the sockets
        lo = ports[0]
        hi = ports[max(1, len(ports) // 50)]
        spec = f"sport >= :{lo} and sport <= :{hi}"
        attr = wfilter.request_attr(spec)
        reqs = [struct.pack("=BBBxI", fam, 6, 0xFF, 0xFFF) + bytes(48) + attr
                for fam in (2, 10)]

        def raw_dump() -> int:
            return sum(len(raw.request(20, 0, r, dump=True)) for r in reqs)

        timings: dict[str, list[float]] = {"unfiltered": [], "filtered": [], "raw": []}
        matched = 0
        methods = [("unfiltered", lambda: agent.read_all()),
                   ("filtered", lambda: agent.read_all(filter=spec)),
                   ("raw", raw_dump)]
        for fn in methods:
            fn[1]()                                      # warm-up: plans, buffers
        rng = random.Random(1)
        for _ in range(reps):
            for name, fn in rng.sample(methods, len(methods)):
                t0 = time.perf_counter()
                out = fn()
                timings[name].append(time.perf_counter() - t0)
                if name == "filtered":
                    matched = len(out)
        med = {k: median(v) * 1e3 for k, v in timings.items()}
        sockets = pairs.sockets
    ratio = paired_ratio(timings["filtered"], timings["raw"])
    what = {"sockets": sockets, "filter": spec, "matched": matched, "variables": "all",
            "ext": 0xFF, "states_read_all": "open (default)", "states_raw": "0xfff"}
    res.table("filter", "Kernel-side filter (wall time, median; ratios paired per round)",
              ["sockets", "matched", "unfiltered ms", "filtered ms", "raw filtered dump ms",
               "filtered/raw", "filtered/unfiltered"],
              [[f"{sockets:,}", f"{matched:,}", f"{med['unfiltered']:.1f}",
                f"{med['filtered']:.1f}", f"{med['raw']:.1f}", f"{ratio:.2f}x",
                f"{paired_ratio(timings['filtered'], timings['unfiltered']):.2f}x"]],
              notes=[f"filter: {spec!r}; the raw dump's time includes copying each reply "
                     "message into Python bytes, so it slightly overstates the kernel's own "
                     "cost"], what=what, readme=True)
    res.figure("timings_s", timings)
    res.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
