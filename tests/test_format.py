"""The C row formatter (logger, convert) against Python's own formatting."""
import socket

import numpy as np

from web10g import _format


def test_every_kind_prints_as_python_would():
    dt = np.dtype([("family", "u1"), ("a", "u1"), ("b", "u2"), ("c", "u4"), ("d", "u8"),
                   ("e", "i4"), ("f", "i8"), ("g", "f8"), ("addr", ("u1", (16,))),
                   ("t", "i8"), ("s", "S16")], align=True)
    rows = np.zeros(4, dtype=dt)
    rows["family"] = [2, 10, 2, 0]
    rows["a"] = [0, 7, 255, 1]
    rows["b"] = [0, 10, 65535, 100]
    rows["c"] = [0, 99, 4294967295, 100000]
    rows["d"] = [0, 4294967296, 10**12 + 7, 2**64 - 1]
    rows["e"] = [0, -1, -2147483648, 2147483647]
    rows["f"] = [0, -(2**63), 2**63 - 1, -10]
    rows["g"] = [0.0, 0.1, -2.5e-7, 1e300]
    rows["addr"][0, :4] = [192, 0, 2, 7]
    rows["addr"][1] = list(socket.inet_pton(socket.AF_INET6, "2001:db8::1"))
    rows["addr"][2, :4] = [0, 0, 0, 0]
    rows["t"] = [1_700_000_000_250_000_123, 5, 0, 999_999_999]
    rows["s"] = [b"cubic", b"", b"bbr", b"x" * 16]
    cols = [(n, _format.kind_of(dt.fields[n][0])) for n in "abcdefg"]
    cols += [("addr", _format.KIND_ADDR), ("t", _format.KIND_TIME), ("s", _format.KIND_STR)]
    text = _format.format_rows(rows, cols, sep=b";").decode().splitlines()
    want_addr = ["192.0.2.7", "2001:db8::1", "0.0.0.0", ""]
    for i, line in enumerate(text):
        f = line.split(";")
        assert [int(x) for x in f[:6]] == [int(rows[n][i]) for n in "abcdef"]
        assert float(f[6]) == float(rows["g"][i])
        assert f[7] == want_addr[i]
        t = int(rows["t"][i])
        assert f[8] == f"{t // 10**9}.{t // 1000 % 10**6:06d}"
        assert f[9] == rows["s"][i].decode()
