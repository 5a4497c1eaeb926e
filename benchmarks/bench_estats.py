"""estats decoding speed and round trips, on replies recorded from the fake Web10G kernel.

Targets (issue 3/5): >= 500,000 full-MIB flows per second decoded on one core; >= 30x
the pure-Python reference decoder; a watch list of 1,000 CIDs read with one send.
"""
from __future__ import annotations

import argparse
import struct
import sys
import time

import _common  # noqa: F401  (puts the checkout on sys.path)
from _common import Results, add_results_args, machine_lines, median

sys.path.insert(0, _common.ROOT + "/tests")

from fakekernel import FakeKernel  # noqa: E402

from web10g import _pyref  # noqa: E402
from web10g.backends.estats import EstatsAgent  # noqa: E402


def split_tap(raw: bytes) -> list[bytes]:
    out, off = [], 0
    while off < len(raw):
        n, _t = struct.unpack_from("<Iq", raw, off)
        out.append(raw[off + 12:off + 12 + n])
        off += 12 + n
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--flows", type=int, default=None)
    add_results_args(p)
    args = p.parse_args(argv)
    res = Results("bench_estats", args, "estats decoding speed and round trips")
    nflows = args.flows or (600 if args.quick else 3000)
    print("web10g estats benchmark")
    print("\n".join(machine_lines()))
    with FakeKernel("head") as fk:
        for i in range(nflows):
            fk.add_flow((f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1000 + i % 60000),
                        ("192.0.2.7", 5201))
        with EstatsAgent(peer=fk.portid) as agent:
            reqs0 = len(fk.requests)
            sock = agent._sock
            sock.tap_start()
            t0 = time.perf_counter()
            rows = agent.read_all()
            live = time.perf_counter() - t0
            dgrams = [d for d in split_tap(sock.tap_take(stop=True))
                      if struct.unpack_from("=H", d, 4)[0] != 2]   # the data, not the ACKs
            requests = len(fk.requests) - reqs0
            assert len(rows) == nflows
            reader, _ = agent._reader(None)
            pos = {n: agent._positions[n] for n in reader.dtype.names if n in agent._positions}
            reps = 5 if args.quick else 15
            c_times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                arr, n = reader.decode(dgrams, 1)
                c_times.append(time.perf_counter() - t0)
            assert n == nflows
            t0 = time.perf_counter()
            ref, rn = _pyref.decode_estats(dgrams[: max(1, len(dgrams) // 10)], reader.dtype,
                                           cmd=1, family_id=agent.family.id, positions=pos,
                                           widths=agent._widths,
                                           state_pos=agent._positions.get("State"),
                                           usec_mult=reader.usec_mult)
            py_time = (time.perf_counter() - t0) / rn
            c_rate = nflows / median(c_times)
            before = fk.datagrams_received
            watch = list(range(1, 1001))
            t0 = time.perf_counter()
            wrows, problems = agent.read_many(watch)
            watch_time = time.perf_counter() - t0
            sends = fk.datagrams_received - before
    what = {"flows": nflows, "variables": "full MIB (head layout)",
            "source": "replies recorded from the fake Web10G kernel"}
    res.table("estats", "estats decoding (C against the pure-Python reference, same replies)",
              ["flows", "datagrams", "C decode ms", "C flows/s", "Python flows/s", "C/Python"],
              [[f"{nflows:,}", len(dgrams), f"{median(c_times) * 1e3:.2f}", f"{c_rate:,.0f}",
                f"{1 / py_time:,.0f}", f"{c_rate * py_time:.0f}x"]],
              notes=[f"full-MIB READ_ALL of {nflows:,} flows from the fake kernel: {requests} "
                     f"requests, {live * 1e3:.0f} ms including the fake's Python",
                     f"watch list of 1,000 CIDs: {sends} send(s), {len(wrows)} rows, "
                     f"{len(problems)} errors, {watch_time * 1e3:.0f} ms"],
              what=what, readme=True)
    res.target("estats_rate", "estats C decoder, full-MIB flows per second (issue 3)", c_rate,
               5e5, ">=", unit="/s", what=what)
    res.target("estats_vs_python", "estats C decoder / pure-Python reference (issue 3)",
               c_rate * py_time, 30, ">=", what=what)
    res.target("estats_watch_sends", "sends for a watch list of 1,000 CIDs (issue 3)", sends,
               1, "==", unit="", what=what)
    res.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
