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


def _samples():
    """Rows of a few flows, sample after sample: the time moves, most flows stay as they
    were (idle), some change; blank masks as the logger makes them."""
    dt = np.dtype([("timestamp", "i8"), ("cid", "u8"), ("family", "u1"),
                   ("addr", ("u1", (16,))), ("x", "u4"), ("y", "u8"), ("z", "f8"),
                   ("s", "S8")], align=True)
    rng = np.random.default_rng(5)
    rows = np.zeros(50, dtype=dt)
    rows["cid"] = np.arange(50) + 100
    rows["family"] = 2
    rows["addr"][:, :4] = [10, 0, 0, 1]
    rows["x"] = rng.integers(0, 1 << 32, 50)
    rows["y"] = rng.integers(0, 1 << 62, 50)
    rows["z"] = rng.random(50)
    rows["s"] = b"cubic"
    cols = [("timestamp", _format.KIND_TIME), ("cid", _format.KIND_UINT),
            ("addr", _format.KIND_ADDR), ("x", _format.KIND_UINT), ("y", _format.KIND_UINT),
            ("z", _format.KIND_FLOAT), ("s", _format.KIND_STR)]
    out = []
    for k in range(8):
        r = rows.copy()                    # a new array per sample, as read_all gives
        r["timestamp"] = 1_700_000_000_000_000_000 + k * 100_000_000
        if k in (2, 5):
            r["x"][::7] += 1               # a few flows moved
        if k == 3:
            r = r[3:]                      # flows went: every later row moved up
        if k == 6:
            r = np.concatenate([r, rows[:4]])   # more rows than before
        blank = {"y": (r["cid"] % 11 == 0) if k != 4 else (r["cid"] % 13 == 0)}
        out.append((r, blank))
        rows = r if k != 6 else r[:len(rows)]
    return cols, out


def test_text_cache_reuses_idle_rows_and_prints_what_the_formatter_prints():
    """format_rows(cache=) over samples prints exactly what it prints without the cache:
    rows unchanged but for the time (and their blank flags) get the previous sample's
    text, every other row is formatted -- rows that moved, rows at another position,
    new rows, rows whose blank flags changed."""
    cols, samples = _samples()
    cache = _format.TextCache()
    reused = []
    for rows, blank in samples:
        want = _format.format_rows(rows, cols, sep=b", ", blank=blank)
        got = _format.format_rows(rows, cols, sep=b", ", blank=blank, cache=cache)
        assert got == want
        assert cache.reused + cache.formatted == len(rows)
        reused.append(cache.reused)
    n = len(samples[0][0])
    assert reused[0] == 0 and reused[1] == n          # nothing before; all idle after
    assert 0 < reused[2] < n                          # a few moved
    assert reused[3] == 0                             # every row moved up: none reusable
    assert reused[4:] == [0] * 4                      # ... so the cache rests a while
    # blank flags that changed: those rows are formatted (a fresh cache, no rest)
    cache = _format.TextCache()
    for rows, blank in samples[3:5]:
        assert _format.format_rows(rows, cols, blank=blank, cache=cache) == \
            _format.format_rows(rows, cols, blank=blank)
    changed = int(np.sum(samples[3][1]["y"] != samples[4][1]["y"]))
    assert changed and cache.reused == len(samples[4][0]) - changed


def test_text_cache_rests_after_busy_samples_and_tries_again():
    """Busy flows (under a fifth of the rows reusable): the next 15 samples are formatted
    without comparing, the 16th compares again."""
    cols, samples = _samples()
    rows, _ = samples[0]
    cache = _format.TextCache()
    _format.format_rows(rows.copy(), cols, cache=cache)
    busy = rows.copy()
    busy["x"] += 1
    _format.format_rows(busy, cols, cache=cache)
    assert cache.reused == 0
    got = []
    for _ in range(16):
        r = busy.copy()
        assert _format.format_rows(r, cols, cache=cache) == _format.format_rows(r, cols)
        got.append(cache.reused)
    assert got == [0] * 15 + [len(rows)]


def test_text_cache_never_reuses_what_it_cannot_trust(tmp_path):
    """The same array given again after being changed in place, other columns, or a
    first column that is not the time: the cache formats everything (or is not used);
    to a file it writes the same text as to bytes."""
    cols, samples = _samples()
    rows, blank = samples[0]
    cache = _format.TextCache()
    _format.format_rows(rows, cols, blank=blank, cache=cache)
    rows["x"] += 5                                    # in place: the cache's own rows
    assert _format.format_rows(rows, cols, blank=blank, cache=cache) == \
        _format.format_rows(rows, cols, blank=blank)
    assert cache.reused == 0
    other = cols[:-1]
    copy = rows.copy()
    assert _format.format_rows(copy, other, blank=blank, cache=cache) == \
        _format.format_rows(copy, other, blank=blank)
    assert cache.reused == 0                          # other columns: nothing reused
    assert _format.format_rows(rows.copy(), other, blank=blank, cache=cache) == \
        _format.format_rows(rows, other, blank=blank)
    assert cache.reused == len(rows)
    no_time = cols[1:]
    before = cache.reused
    assert _format.format_rows(rows.copy(), no_time, cache=cache) == \
        _format.format_rows(rows, no_time)
    assert cache.reused == before                     # not used: the time is not first
    path = tmp_path / "out.csv"
    with open(path, "wb") as fh:
        n1 = _format.format_rows(rows.copy(), cols, blank=blank, file=fh, cache=cache)
        n2 = _format.format_rows(rows.copy(), cols, blank=blank, file=fh, cache=cache)
    assert cache.reused == len(rows)
    text = _format.format_rows(rows, cols, blank=blank)
    assert path.read_bytes() == text + text and n1 == n2 == len(text)
    cache.clear()
    _format.format_rows(rows.copy(), cols, blank=blank, cache=cache)
    assert cache.reused == 0
