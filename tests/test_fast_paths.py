"""The decoder's and formatter's fast paths give what the plain paths give.

The sock_diag decoder fills one whole row (struct w10g_sd_row) per record and writes it in
place when the output's dtype is that row, else copies the selected columns in runs;
large outputs are written with non-temporal stores; read_all() without ``out`` recycles
the arrays of results nobody holds any more. None of this may change a value.
"""
import socket

import numpy as np
import pytest

import web10g
from web10g import _format, _pyref
from web10g._sockdiag import FIELD_NAMES, decode_datagrams, row_layout


@pytest.fixture
def agent():
    with web10g.open(backend="sock_diag") as a:
        yield a


@pytest.fixture
def loopback_pairs():
    """A few established loopback connections, so that every dump has rows."""
    socks = []
    for _ in range(8):
        lst = socket.create_server(("127.0.0.1", 0))
        cli = socket.create_connection(lst.getsockname())
        srv, _ = lst.accept()
        socks += [lst, cli, srv]
    yield socks
    for s in socks:
        s.close()


def test_whole_row_layout_is_the_dtype_of_every_variable(agent):
    dt = agent.dtype(None)
    offsets, size = row_layout()
    assert size == dt.itemsize
    assert set(offsets) == set(FIELD_NAMES) == set(dt.names)
    assert all(offsets[n] == dt.fields[n][1] for n in dt.names)
    dumper, _ = agent._plan(None, None, None, None)
    assert dumper.direct and dumper.copy_runs == 0
    sub, _ = agent._plan(["SegsOut", "cc_algorithm", "CurCwnd"], None, None, None)
    assert not sub.direct and sub.copy_runs >= 2


def _recorded(agent):
    """A live dump's datagrams (every extension, every state)."""
    _state, sock = agent.recorder_state()
    sock.tap_start()
    agent.read_all(states="all")
    raw = sock.tap_take(stop=True)
    out, off = [], 0
    while off < len(raw):
        n = int.from_bytes(raw[off:off + 4], "little")
        out.append(raw[off + 12:off + 12 + n])
        off += 12 + n
    return out


@pytest.mark.parametrize("capacity", [0, 1 << 16])     # spill/grow, and streamed (>= 4 MiB)
@pytest.mark.parametrize("selection", ["all", "classic", "stock", "odd"])
def test_every_path_decodes_as_the_reference(agent, loopback_pairs, capacity, selection):
    names = {"all": None,
             "classic": [v.name for v in agent.variables() if not v.is_stock],
             "stock": [v.name for v in agent.variables() if v.is_stock],
             "odd": ["cc_algorithm", "MinRTT", "skmem_drops", "timer", "mark", "rtt_us"]}
    dt = agent.dtype(names[selection])
    dgrams = _recorded(agent)
    out = np.zeros(capacity, dt) if capacity else None
    arr, n = decode_datagrams(dgrams, dt, timestamp_ns=5, out=out)
    ref, rn = _pyref.decode_datagrams(dgrams, dt, timestamp_ns=5)
    assert n == rn > 0
    for name in dt.names:
        assert np.array_equal(arr[:n][name], ref[:rn][name]), name


def test_default_results_are_the_callers_and_dropped_ones_are_reused(agent, loopback_pairs):
    held = [agent.read_all() for _ in range(4)]
    for i, a in enumerate(held):
        for b in held[i + 1:]:
            assert not np.shares_memory(a, b)
    first = held[0].copy()
    agent.read_all()
    agent.read_all()
    assert np.array_equal(held[0]["cid"], first["cid"])     # nobody wrote into it
    del held
    dumper, _ = agent._plan(None, None, None, None)
    before = dumper.recycled
    for _ in range(4):
        agent.read_all()
    assert dumper.recycled > before


def test_formatter_prints_every_width_and_blanks():
    dt = np.dtype([("family", "u1"), ("a", "i1"), ("b", "i2"), ("c", "u8"), ("d", "i8"),
                   ("e", "f4"), ("addr", ("u1", (16,)))], align=True)
    rng = np.random.default_rng(7)
    rows = np.zeros(500, dt)
    rows["family"] = 2
    rows["a"] = rng.integers(-128, 128, 500)
    rows["b"] = rng.integers(-32768, 32768, 500)
    rows["c"] = rng.integers(0, 2**63, 500, dtype=np.uint64) * rng.integers(1, 3, 500)
    rows["c"][:12] = [10**k for k in range(12)]
    rows["d"] = rng.integers(-2**63, 2**63 - 1, 500, dtype=np.int64)
    rows["e"] = rng.normal(size=500)
    rows["addr"][:, :4] = rng.integers(0, 256, (500, 4))
    blank = {"b": np.arange(500) % 3 == 0}
    cols = [(n, _format.kind_of(dt.fields[n][0])) for n in "abcde"] + [
        ("addr", _format.KIND_ADDR)]
    lines = _format.format_rows(rows, cols, sep=b", ", blank=blank).decode().splitlines()
    assert len(lines) == 500
    for i, line in enumerate(lines):
        f = line.split(", ")
        assert int(f[0]) == int(rows["a"][i])
        assert f[1] == ("" if blank["b"][i] else str(int(rows["b"][i])))
        assert int(f[2]) == int(rows["c"][i])
        assert int(f[3]) == int(rows["d"][i])
        assert np.float32(float(f[4])) == rows["e"][i]
        assert f[5] == socket.inet_ntoa(rows["addr"][i, :4].tobytes())
    with pytest.raises(ValueError):
        _format.format_rows(rows, cols, blank={"b": np.zeros(3, bool)})


def test_formatter_writes_to_a_file_what_it_returns(tmp_path):
    """To a file the text goes in chunks of rows (128 KiB of worst-case text each): 20,000
    rows make several, and the blank masks follow the rows across them."""
    import io

    n = 20_000
    dt = np.dtype([("family", "u1"), ("x", "u4"), ("t", "i8")], align=True)
    rows = np.zeros(n, dt)
    rows["x"] = np.arange(n) * 7919
    rows["t"] = 1_700_000_000_123_456_789 + np.arange(n)
    cols = [("x", _format.KIND_UINT), ("t", _format.KIND_TIME)]
    blank = {"x": np.arange(n) % 7 == 3}
    text = _format.format_rows(rows, cols, blank=blank)
    lines = text.splitlines()
    assert len(lines) == n and lines[3].startswith(b",") and lines[10].startswith(b",")
    assert lines[n - 1] == f"{(n - 1) * 7919},1700000000.123476".encode()
    path = tmp_path / "out.csv"
    with open(path, "wb") as fh:
        fh.write(b"head\n")                      # buffered: must land before the rows
        assert _format.format_rows(rows, cols, blank=blank, file=fh) == len(text)
    assert path.read_bytes() == b"head\n" + text
    bio = io.BytesIO()                           # no file descriptor: written through it
    _format.format_rows(rows, cols, blank=blank, file=bio)
    assert bio.getvalue() == text


def _tap_entries(raw):
    """(receive time, datagram) of each tap entry."""
    out, off = [], 0
    while off < len(raw):
        n = int.from_bytes(raw[off:off + 4], "little")
        t = int.from_bytes(raw[off + 4:off + 12], "little", signed=True)
        out.append((t, bytes(raw[off + 12:off + 12 + n])))
        off += 12 + n
    assert off == len(raw)
    return out


def test_the_tap_receives_in_place_and_rows_keep_their_datagrams_time(agent, loopback_pairs):
    """Recording receives each datagram straight into the tap (no copy): the rows of a
    tapped read carry the receive time of the datagram each came in, as an untapped
    read's do, and the tap holds exactly what the decoders read."""
    _state, sock = agent.recorder_state()
    sock.tap_start()
    rows = agent.read_all(states="all")
    raw = sock.tap_take(stop=True)
    entries = _tap_entries(raw)
    assert isinstance(raw, memoryview) and raw.readonly and len(entries) >= 1
    times = {t for t, _ in entries}
    assert set(rows["timestamp"].tolist()) <= times
    again, n = decode_datagrams([d for _, d in entries], agent.dtype(None), timestamp_ns=5)
    assert n == len(rows)
    assert np.array_equal(again[:n]["cid"], rows["cid"])
    assert np.array_equal(again[:n]["SegsOut"], rows["SegsOut"])
    after = agent.read_all(states="all")            # untapped: its own buffer again
    assert len(after) and (after["timestamp"] > 0).all()


def test_tap_memory_is_handed_over_and_recycled_only_when_unread(agent, loopback_pairs):
    _state, sock = agent.recorder_state()

    def sample():
        sock.tap_start()
        agent.read_all(states="all")
        return sock.tap_take(stop=True)

    first = sample()
    owner = first.obj
    kept = bytes(first)
    second = sample()                     # the first one's memory is still the caller's
    assert bytes(first) == kept and second.obj is not owner
    sock.tap_recycle(first)               # given back: the next sample takes its memory
    assert len(owner) == len(kept)        # until that sample, the data is still there
    third = sample()
    assert len(owner) == 0 and len(third) > 0
    # a buffer still read elsewhere (a view of it) is never reused
    owner3, head = third.obj, bytes(third[:16])
    view = third[:16]
    sock.tap_recycle(third)
    fourth = sample()
    assert len(owner3) > 0 and fourth.obj is not owner3 and bytes(view) == head
    sock.tap_recycle(b"not tap data")     # ignored
    assert _tap_entries(fourth)
