"""atheris target: the filter compiler (web10g/filter.py).

Input: [mode][text]. mode bit 0: the text is latin-1 (every byte a character) rather
than UTF-8 (invalid sequences replaced). For each text that parses:
* compile() gives bytecode no longer than the kernel accepts (MAX_BYTECODE);
* the expression printed back (str) parses to the same bytecode (round trip);
* the Python predicate and the numpy evaluator agree on a handful of rows.
A refused text must be a FilterError (Web10GError); anything else is a finding.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402


def setup():
    import numpy as np

    from web10g import filter as flt
    from web10g import mib

    rows = np.zeros(6, mib.dtype(["SegsOut"], identity=True))
    addrs = [(2, bytes([127, 0, 0, 1]) + bytes(12), 22, bytes([10, 0, 0, 7]) + bytes(12), 40000),
             (2, bytes([192, 168, 1, 1]) + bytes(12), 443, bytes([8, 8, 8, 8]) + bytes(12), 1),
             (10, bytes(15) + b"\x01", 8080, bytes([0x20, 0x01, 0x0d, 0xb8]) + bytes(12), 65535),
             (10, bytes(10) + b"\xff\xff" + bytes([10, 1, 2, 3]), 0, bytes(16), 80),
             (2, bytes(16), 1024, bytes(16), 1023),
             (10, bytes([0xfe, 0x80]) + bytes(14), 5353, bytes([0xff] * 16), 53)]
    for i, (fam, la, lp, ra, rp) in enumerate(addrs):
        rows["family"][i], rows["local_port"][i], rows["rem_port"][i] = fam, lp, rp
        rows["local_addr"][i] = np.frombuffer(la, np.uint8)
        rows["rem_addr"][i] = np.frombuffer(ra, np.uint8)

    def one(data: bytes) -> None:
        if not data:
            return
        text = data[1:].decode("latin-1" if data[0] & 1 else "utf-8", "replace")
        # Parse once: compile(text) and request_attr(text) are parse() then the same
        # emitter, and the parser is where the time goes (two parses per input, not four).
        e = flt.parse(text)
        bc = flt.compile(e)
        if len(bc) > flt.MAX_BYTECODE:
            raise AssertionError(f"bytecode of {len(bc)} bytes passes MAX_BYTECODE")
        again = flt.compile(str(e))
        if again != bc:
            raise AssertionError(f"round trip changed the program: {text!r} -> {str(e)!r}")
        flt.request_attr(e)
        pred = flt.to_python(e)
        m = flt.mask(e, rows)
        for i, (fam, la, lp, ra, rp) in enumerate(addrs):
            if bool(pred(fam, la, lp, ra, rp)) != bool(m[i]):
                raise AssertionError(f"to_python and mask disagree on row {i} for {text!r}")

    return one


if __name__ == "__main__":
    _harness.main("filter", setup, ("web10g.filter",))
