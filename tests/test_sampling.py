"""Sampler, deltas, pandas frames and the monitor, on real loopback traffic."""
from __future__ import annotations

import socket
import threading
import time
import tracemalloc

import numpy as np
import pytest

import web10g
from web10g import deltas, mib
from web10g.frames import to_pandas


@pytest.fixture
def transfer():
    """A loopback server that drains everything; yields its port and a send function."""
    lst = socket.create_server(("127.0.0.1", 0))
    port = lst.getsockname()[1]
    stop = threading.Event()

    def serve():
        lst.settimeout(0.2)
        conns = []
        while not stop.is_set():
            try:
                s, _ = lst.accept()
            except OSError:
                continue
            conns.append(s)
            threading.Thread(target=lambda s=s: _drain(s), daemon=True).start()

    def _drain(s):
        try:
            while s.recv(1 << 20):
                pass
        except OSError:
            pass
        s.close()                   # both ends close: the flows end for real

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield port
    stop.set()
    t.join(1)
    lst.close()


def send(port, total, chunk=200_000, pause=0.005):
    c = socket.create_connection(("127.0.0.1", port))
    sent = 0
    while sent < total:
        c.sendall(b"s" * chunk)
        sent += chunk
        time.sleep(pause)
    return c


def test_sampler_keeps_time_and_counts(transfer):
    with web10g.open() as agent:
        with agent.sampler(["HCThruOctetsAcked"], interval=0.02, filter=f"dport = :{transfer}",
                           capacity=500) as s:
            c = send(transfer, 4_000_000)
            assert s.wait(10, timeout=5)
            c.close()
        snaps = s.snapshots()
    assert len(snaps) >= 10 and s.stats.failed == 0
    deadlines = np.array([x.deadline for x in snaps])
    assert np.allclose(np.diff(deadlines), 0.02, atol=1e-6)      # no drift: exact grid
    lateness = np.array([x.started - x.deadline for x in snaps])
    assert np.median(lateness) < 0.01
    acked = [int(x.rows["HCThruOctetsAcked"].max()) for x in snaps if len(x.rows)]
    assert acked == sorted(acked) and acked[-1] >= 1_000_000


def test_too_short_interval_reports_the_achievable_rate():
    with web10g.open() as agent:
        with pytest.raises(ValueError, match="samples per second are achievable"):
            agent.sampler(interval=1e-7)
        with pytest.warns(RuntimeWarning, match="achievable"):
            s = agent.sampler(interval=1e-7, strict=False)
        s.stop()


def test_full_ring_overwrites_or_blocks():
    with web10g.open() as agent:
        # LISTEN-only reads walk only the listening table: fast on any machine
        with agent.sampler(["SegsOut"], interval=0.005, capacity=4, states="listen") as s:
            s.wait(12, timeout=5)
        assert s.stats.dropped >= 6 and len(s.snapshots()) == 4
        seqs = [x.seq for x in s.snapshots()]
        assert seqs == sorted(seqs) and seqs[-1] - seqs[0] == 3
        with agent.sampler(["SegsOut"], interval=0.005, capacity=4, overwrite=False,
                           states="listen") as b:
            time.sleep(0.15)
            assert len(b.read()) == 4 and b.stats.dropped == 0       # blocked, nothing lost
            b.wait(2, timeout=2)
            assert len(b.read()) >= 2 and b.stats.waited > 0.05


def test_failed_samples_are_recorded_and_sampling_goes_on():
    with web10g.open() as agent:
        s = agent.sampler(["SegsOut"], interval=0.01, capacity=50, states="listen")
        real = s._read
        calls = {"n": 0}

        def flaky(out):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(5, "simulated read failure")
            return real(out)
        s._read = flaky
        with s:
            s.wait(6, timeout=5)
        snaps = s.snapshots()
    failed = [x for x in snaps if not x.ok]
    assert s.stats.failed == 1 and len(failed) == 1 and "simulated" in failed[0].error
    assert snaps[-1].ok and snaps[-1].seq > failed[0].seq


def test_steady_state_sampling_allocates_nothing():
    with web10g.open() as agent:
        with agent.sampler(["SegsOut", "rtt_us"], interval=0.005, capacity=20,
                           states="listen") as s:
            s.wait(40, timeout=10)
            tracemalloc.start()
            s.wait(20, timeout=10)
            before = tracemalloc.get_traced_memory()[0]
            s.wait(100, timeout=10)
            after = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
    assert after - before < 100 * 64            # well under one small object per sample


def row_dtype():
    fields = list(mib.IDENTITY_FIELDS) + [("timestamp", "i8"), ("SegsOut", "u4"),
                                          ("HCThruOctetsAcked", "u8"), ("CurCwnd", "u4")]
    return np.dtype(fields, align=True)


def snapshot(cids, segs, acked, cwnd, t_ns):
    r = np.zeros(len(cids), dtype=row_dtype())
    r["cid"], r["SegsOut"], r["HCThruOctetsAcked"], r["CurCwnd"] = cids, segs, acked, cwnd
    r["timestamp"] = t_ns
    return r


def test_delta_wraps_counters_and_marks_new_and_vanished():
    a = snapshot([1, 2, 3], [2**32 - 10, 5, 7], [100, 200, 300], [10, 20, 30], 0)
    b = snapshot([3, 1, 4], [9, 20, 1], [350, 2**40, 5], [31, 11, 1], 500_000_000)
    d = deltas.delta(a, b)
    assert d.rows["cid"].tolist() == [3, 1]                  # the newer snapshot's order
    assert d.rows["SegsOut"].tolist() == [2, 30]             # 2**32 - 10 -> 20 wraps to 30
    assert d.rows["HCThruOctetsAcked"].tolist() == [50, 2**40 - 100]
    assert d.rows["CurCwnd"].tolist() == [31, 11]            # a gauge: the value
    assert np.allclose(d.rows["dt"], 0.5)
    assert np.allclose(d.rows["SegsOut_per_s"], [4, 60])
    assert d.new["cid"].tolist() == [4] and d.vanished["cid"].tolist() == [2]


def test_delta_same_order_fast_path_and_duplicates():
    a = snapshot([5, 6], [1, 1], [10, 10], [1, 1], 0)
    b = snapshot([5, 6], [3, 4], [15, 30], [1, 1], 10**9)
    assert deltas.delta(a, b).rows["SegsOut"].tolist() == [2, 3]
    dup = snapshot([5, 6, 5], [3, 4, 9], [15, 30, 40], [1, 1, 1], 10**9)
    d = deltas.delta(a, dup)
    assert sorted(zip(d.rows["cid"].tolist(), d.rows["SegsOut"].tolist())) == [(5, 8), (6, 3)]


def test_series_over_a_ring_and_summary(transfer):
    with web10g.open() as agent:
        baseline = agent.read_all(["SegsOut"], filter=f"dport = :{transfer}").copy()
        with agent.sampler(["HCThruOctetsAcked", "SegsRetrans", "CurCwnd", "rtt_us"],
                           interval=0.02, filter=f"dport = :{transfer}") as s:
            c = send(transfer, 6_000_000)
            s.wait(5, timeout=5)
            c.close()
            s.wait(2, timeout=5)
    snaps = [x.rows for x in s.snapshots()]
    ds = deltas.series(snaps)
    assert len(ds) == len(snaps) - 1
    moved = sum(int(d.rows["HCThruOctetsAcked"].sum()) for d in ds)
    summary = deltas.summarize(snaps, baseline=baseline)
    assert moved <= int(summary["bytes_sent"].sum()) <= 6_000_002
    assert summary["bytes_sent"].sum() >= 6_000_000          # started inside: from zero
    assert np.all(summary["rtt_min_ms"] <= summary["rtt_median_ms"])
    assert np.all(summary["rtt_median_ms"] <= summary["rtt_p99_ms"])


def test_to_pandas_wide_and_long(transfer):
    pd = pytest.importorskip("pandas")
    with web10g.open() as agent:
        c = send(transfer, 500_000)
        rows1 = agent.read_all(["HCThruOctetsAcked", "SmoothedRTT", "cc_algorithm"],
                               filter=f"dport = :{transfer}").copy()
        rows2 = agent.read_all(["HCThruOctetsAcked", "SmoothedRTT", "cc_algorithm"],
                               states="time-wait").copy()
        c.close()
    df = to_pandas([rows1, rows2])
    assert isinstance(df.index, pd.DatetimeIndex) and df.index.name == "time"
    assert list(df.columns[:4]) == ["cid", "local", "remote", "state"]
    assert df["state"].dtype == "category" and "established" in set(df["state"])
    assert df["local"].iloc[0].startswith("127.0.0.1:")
    assert df["cc_algorithm"].iloc[0] in ("cubic", "bbr", "reno")
    tw = df[df["state"] == "timeWait"]
    if len(tw):                                   # TIME-WAIT rows carry no tcp_info
        assert tw["SmoothedRTT"].isna().all()
    long = to_pandas(rows1, form="long")
    assert set(long.columns) == {"time", "cid", "local", "remote", "state", "variable", "value"}
    assert set(long["variable"]) == {"HCThruOctetsAcked", "SmoothedRTT", "cc_algorithm"}


def test_monitor_on_a_real_transfer(transfer):
    with web10g.monitor(filter=f"dport = :{transfer}", interval=0.02) as m:
        c = send(transfer, 8_000_000)
        c.close()
        time.sleep(0.1)
    r = m.result
    assert r is not None and len(r.flows["cid"]) == 1
    assert r.flows["bytes_sent"][0] >= 8_000_000
    assert r.flows["ended"][0]                       # its end came from the kernel
    assert r.flows["throughput_sent_bps"][0] > 0
    assert r.flows["rtt_min_ms"][0] <= r.flows["rtt_p99_ms"][0]
    assert r.flows["cwnd_max"][0] >= r.flows["cwnd_min"][0] > 0
    assert len(r.closed) == 1 and r.closed["state"][0] == 1
    pytest.importorskip("pandas")
    assert len(r.frame()) == len(r.snapshots) + 1 - sum(len(x) == 0 for x in r.snapshots)
    assert r.summary()["bytes_sent"].iloc[0] >= 8_000_000


def test_pytest_fixture(web10g_monitor, transfer):
    with web10g_monitor(filter=f"dport = :{transfer}", interval=0.02) as m:
        send(transfer, 1_000_000).close()
        time.sleep(0.05)
    assert m.result.flows["bytes_sent"].sum() >= 1_000_000


def test_pandas_missing_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_pandas(name, *a, **k):
        if name == "pandas":
            raise ImportError("no pandas here")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(ImportError, match=r"web10g\[pandas\]"):
        to_pandas(snapshot([1], [1], [1], [1], 0))
