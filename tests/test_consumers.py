"""What a new user does with rows: keep two reads, difference them, load a recording
into pandas, read the per-flow summary, bound the sampler's memory."""
from __future__ import annotations

import socket

import numpy as np
import pytest

import web10g
from web10g import deltas, errors
from web10g import rows as R
from web10g.recording import Recorder


@pytest.fixture
def pair():
    lst = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(lst.getsockname())
    s, _ = lst.accept()
    yield lst.getsockname()[1], c, s
    for x in (c, s, lst):
        x.close()


def test_two_reads_difference_without_copies(pair):
    """read_all() hands back an array the caller owns: r2 - r1 is the traffic between."""
    port, c, s = pair
    with web10g.open("sock_diag") as agent:
        flt = f"sport = :{port}"
        r1 = agent.read_all(["HCThruOctetsReceived"], filter=flt)
        c.sendall(b"z" * 50_000)
        got = 0
        while got < 50_000:
            got += len(s.recv(65536))
        r2 = agent.read_all(["HCThruOctetsReceived"], filter=flt)
    assert len(r1) == len(r2) == 1
    assert int(r2["HCThruOctetsReceived"][0] - r1["HCThruOctetsReceived"][0]) == 50_000
    d = deltas.delta(r1, r2)
    assert int(d.rows["HCThruOctetsReceived"][0]) == 50_000


def test_to_pandas_of_a_recording_path(tmp_path, pair):
    pd = pytest.importorskip("pandas")
    port, c, s = pair
    path = tmp_path / "r.w10g"
    with web10g.open("sock_diag") as agent, Recorder(path, agent) as rec:
        for _ in range(3):
            rec.sample(states="all")
    df = web10g.to_pandas(path)
    assert isinstance(df, pd.DataFrame) and df.index.name == "time"
    mine = df[df["local"] == f"127.0.0.1:{port}"]
    assert len(mine) == 6            # the listener and the server end, in 3 samples
    assert df.index.nunique() >= 1 and "SegsOut" in df.columns


def test_to_pandas_of_one_row_and_of_a_generator(pair):
    pd = pytest.importorskip("pandas")
    port, *_ = pair
    with web10g.open("sock_diag") as agent:
        rows = agent.read_all(["SegsOut"], filter=f"sport = :{port}")
        one = agent.read_vars(int(rows["cid"][0]), ["SegsOut"])
        assert len(web10g.to_pandas(one)) == 1
        gen = (agent.read_all(["SegsOut"], filter=f"sport = :{port}") for _ in range(2))
        assert len(web10g.to_pandas(gen)) == 2
    assert isinstance(web10g.to_pandas(rows), pd.DataFrame)


def test_monitor_summary_is_indexed_by_flow(pair):
    pytest.importorskip("pandas")
    port, c, s = pair
    with web10g.monitor(filter=f"sport = :{port}", interval=0.02, backend="sock_diag") as m:
        c.sendall(b"q" * 10_000)
        s.recv(20_000)
    summary = m.result.summary()
    assert summary.index.name == "flow"
    assert list(summary.index) == [f"127.0.0.1:{port} -> 127.0.0.1:{c.getsockname()[1]}"]
    assert "cid" in summary.columns and "local_addr" not in summary.columns


def test_sampler_ring_is_bounded_by_bytes(pair):
    port, *_ = pair
    with web10g.open("sock_diag") as agent:
        s = agent.sampler(None, interval=0.5, filter=f"sport = :{port}", capacity=100_000,
                          max_bytes=4 << 20, strict=False)
        try:
            slot = s._slot_rows * s.dtype.itemsize
            assert s.capacity == max(2, (4 << 20) // slot) < 100_000
            assert s.ring_bytes <= 4 << 20        # nothing allocated up front
        finally:
            s.stop()
    with pytest.raises(ValueError):
        web10g.open("sock_diag").sampler(None, interval=0.1, max_bytes=0)


def test_unfiltered_monitor_reserves_little(pair):
    """An unfiltered monitor on a host with thousands of flows once reserved ~43 GB."""
    m = web10g.monitor(interval=0.5, backend="sock_diag")
    try:
        assert m._sampler.capacity * m._sampler._slot_rows * m._sampler.dtype.itemsize \
            <= m._sampler.max_bytes
    finally:
        m._sampler.stop()
        m._agent.close()


def test_rows_keep_their_meaning_through_copies_and_pickles(pair):
    import pickle

    port, *_ = pair
    with web10g.open("sock_diag") as agent:
        rows = agent.read_all(["SegsOut"], filter=f"sport = :{port}", states="all")
    for r in (R.copy(rows), rows.copy(), pickle.loads(pickle.dumps(rows)),
              np.concatenate([rows, rows])):
        assert R.presence_of(r) is not None
        assert R.reported(r).sum() == 2 * R.reported(rows).sum() if len(r) > len(rows) \
            else R.reported(r).sum() == R.reported(rows).sum()
    assert type(rows["SegsOut"]) is np.ndarray       # columns are plain arrays
    # a TIME-WAIT socket reports no tcp_info: its SegsOut is "not reported", not 0
    port, c, s = pair
    c.close()                                  # the side that closes first waits
    s.close()
    with web10g.open("sock_diag") as agent:
        for _ in range(100):
            tw = agent.read_all(["SegsOut"], filter=f"dport = :{port}", states="time-wait")
            if len(tw):
                break
    assert len(tw) and not R.available(tw, "SegsOut").any() and not R.reported(tw).any()
    with pytest.raises(errors.UnknownColumn, match="SegsOut"):
        R.available(rows, "SegsOutt")


def _aborted_after(nbytes: int, filter_side: str):
    """A flow that sends ``nbytes`` inside a monitor, then is aborted (SO_LINGER 0)."""
    import struct
    import time

    lst = socket.create_server(("127.0.0.1", 0))
    port = lst.getsockname()[1]
    c = socket.socket()
    c.bind(("127.0.0.1", 0))
    cport = c.getsockname()[1]
    flt = f"dport = :{port}" if filter_side == "dport" else f"sport = :{cport}"
    s = None
    try:
        with web10g.monitor(filter=flt, interval=0.02, backend="sock_diag",
                            vars=["HCThruOctetsAcked", "SegsOut"]) as m:
            c.connect(("127.0.0.1", port))      # inside the block: counted from zero
            s, _ = lst.accept()
            c.sendall(b"a" * nbytes)
            got = 0
            while got < nbytes:
                got += len(s.recv(1 << 20))
            time.sleep(0.1)             # a few samples see the flow
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
            time.sleep(0.05)
    finally:
        if s is not None:
            s.close()
        c.close()
        lst.close()
    return m.result, cport, port


@pytest.mark.parametrize("filter_side", ["dport", "sport"])
def test_a_flow_aborted_with_linger0_keeps_its_counts_and_endpoints(filter_side):
    """The kernel zeroes an aborted flow's counters and remote port before its destroy
    notification: the summary must keep the sampled counts (not wrap to 2**64) and the
    flow's endpoints, and still say it ended, whichever port the filter names."""
    res, cport, port = _aborted_after(200_000, filter_side)
    mine = np.flatnonzero(res.flows["local_port"] == cport)
    assert len(mine) == 1, res.flows
    i = mine[0]
    assert res.flows["ended"][i]
    assert res.flows["rem_port"][i] == port
    assert res.flows["remote"][i] == f"127.0.0.1:{port}"
    assert 200_000 <= int(res.flows["bytes_sent"][i]) <= 200_001   # + the SYN's octet
    row = res.closed[res.closed["local_port"] == cport]
    assert len(row) == 1 and not R.reported(row)[0]            # zeros withheld, not values
    assert row["rem_port"][0] == port                          # endpoints restored
