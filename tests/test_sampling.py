"""Sampler, deltas, pandas frames and the monitor, on real loopback traffic.

Each test reads only its own flows (a filter on its own ports) and nothing here depends on
how fast the machine is: a read may take longer than the interval (samplers are made with
strict=False), and waits are for an outcome, with a generous limit, never for a time.
``python tools/busy-host.py`` runs the suite on a machine that is anything but quiet.
"""
from __future__ import annotations

import socket
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable

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


# How long a wait for an outcome may take before the test fails: only a broken outcome
# should ever reach it, however loaded the machine is.
PATIENCE = 60.0


def wait_for(cond: Callable[[], bool], timeout: float = PATIENCE, poll: float = 0.01) -> bool:
    """Poll ``cond`` until it holds (True) or ``timeout`` seconds pass (False)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(poll)
    return True


def sampler(agent, vars, **kw):
    """agent.sampler(), never refused nor warned about for a read slower than the
    interval: how long a read takes is the machine's business, not the test's."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "an interval of", RuntimeWarning)
        return agent.sampler(vars, strict=False, **kw)


def latest_max(s, col: str) -> int:
    """The largest ``col`` in the sampler's newest snapshot (0 before one has rows)."""
    last = s.latest()
    return int(last.rows[col].max()) if last is not None and len(last.rows) else 0


@pytest.fixture
def listener():
    """A listening socket of this test's own: states="listen" plus its port as a filter
    reads one socket whatever else the machine has."""
    lst = socket.create_server(("127.0.0.1", 0))
    yield f"sport = :{lst.getsockname()[1]}"
    lst.close()


class Client:
    """A client of the ``transfer`` server, bound before it connects: its filter names both
    ports, so it selects this one flow and never an older one (a TIME-WAIT left by an
    earlier test whose server had the same, reused, port)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.lport = self.sock.getsockname()[1]
        self.filter = f"sport = :{self.lport} and dport = :{port}"

    def send(self, total: int, chunk: int = 200_000, pause: float = 0.005) -> Client:
        self.sock.connect(("127.0.0.1", self.port))
        sent = 0
        while sent < total:
            self.sock.sendall(b"s" * chunk)
            sent += chunk
            time.sleep(pause)
        return self

    def close(self) -> None:
        self.sock.close()            # the server closes its end on EOF: TIME-WAIT follows


@pytest.fixture
def client(transfer):
    c = Client(transfer)
    yield c
    c.close()


def time_wait_rows(agent, client: Client, vars=("SegsOut",)):
    """The client's flow once it is in TIME-WAIT (after both ends closed), else no rows."""
    return agent.read_all(list(vars), filter=client.filter, states="time-wait").copy()


class EndWatch:
    """Destroy notifications of the client's flow: ``wait()`` returns once the kernel has
    reported its end, so every subscriber (a monitor's too) has had it delivered."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.agent = web10g.open()
        self.agent.watch_closed()
        self.seen = 0

    def ended(self) -> bool:
        rows = self.agent.closed(["SegsOut"])
        mine = (rows["local_port"] == self.client.lport) & (rows["rem_port"] == self.client.port)
        self.seen += int(np.count_nonzero(mine))
        return self.seen > 0

    def wait(self) -> bool:
        return wait_for(self.ended)

    def close(self) -> None:
        self.agent.close()


@pytest.fixture
def end_watch(client):
    w = EndWatch(client)
    yield w
    w.close()


def test_sampler_keeps_time_and_counts(client):
    with web10g.open() as agent:
        with sampler(agent, ["HCThruOctetsAcked"], interval=0.02,
                     filter=client.filter, capacity=2000) as s:
            client.send(4_000_000)
            # until a sample has seen the whole transfer acknowledged, however long it takes
            assert wait_for(lambda: latest_max(s, "HCThruOctetsAcked") >= 4_000_000), \
                latest_max(s, "HCThruOctetsAcked")
            assert s.wait(3, timeout=PATIENCE)
        client.close()               # after the last sample: a TIME-WAIT row counts nothing
        snaps = s.snapshots()
    assert len(snaps) >= 4 and s.stats.failed == 0
    seqs = [x.seq for x in snaps]
    assert seqs == list(range(seqs[0], seqs[0] + len(snaps)))
    # One grid, no drift: every deadline is start + k * interval; a read that ran a whole
    # period late skips deadlines (counted as missed), it never shifts the later ones.
    deadlines = np.array([x.deadline for x in snaps])
    periods = np.diff(deadlines) / 0.02
    assert np.allclose(periods, np.round(periods), atol=1e-6) and periods.min() > 0.5
    assert int(np.round(periods).sum()) - len(periods) <= s.stats.missed
    started = np.array([x.started for x in snaps])
    assert np.all(started >= deadlines - 1e-3)                  # never read before it is due
    assert np.all(np.diff(started) > 0)
    acked = [int(x.rows["HCThruOctetsAcked"].max()) for x in snaps if len(x.rows)]
    assert acked == sorted(acked) and acked[-1] >= 4_000_000


def test_too_short_interval_reports_the_achievable_rate(listener):
    # no read of even one socket takes under 100 ns, however idle the machine
    with web10g.open() as agent:
        with pytest.raises(ValueError, match="samples per second are achievable"):
            agent.sampler(interval=1e-7, filter=listener, states="listen")
        with pytest.warns(RuntimeWarning, match="achievable"):
            s = agent.sampler(interval=1e-7, filter=listener, states="listen", strict=False)
        s.stop()


def test_full_ring_overwrites_or_blocks(listener):
    with web10g.open() as agent:
        with sampler(agent, ["SegsOut"], interval=0.005, capacity=4, filter=listener,
                     states="listen") as s:
            assert s.wait(12, timeout=PATIENCE)
        assert s.stats.dropped >= 6 and len(s.snapshots()) == 4
        seqs = [x.seq for x in s.snapshots()]
        assert seqs == sorted(seqs) and seqs[-1] - seqs[0] == 3
        with sampler(agent, ["SegsOut"], interval=0.005, capacity=4, overwrite=False,
                     filter=listener, states="listen") as b:
            assert wait_for(lambda: len(b) == 4)
            time.sleep(0.05)                          # the sampler may only block, not go on
            assert [x.seq for x in b.read()] == [0, 1, 2, 3]         # blocked, nothing lost
            seqs = [0, 1, 2, 3]

            def drained_after_a_wait() -> bool:       # read() frees the ring it waited on
                seqs.extend(x.seq for x in b.read())
                return b.stats.waited > 0 and len(seqs) >= 6
            assert wait_for(drained_after_a_wait, poll=0.05)
        assert seqs == list(range(len(seqs))) and b.stats.dropped == 0


def test_failed_samples_are_recorded_and_sampling_goes_on(listener):
    with web10g.open() as agent:
        s = sampler(agent, ["SegsOut"], interval=0.01, capacity=1000, filter=listener,
                    states="listen")
        real = s._read
        calls = {"n": 0}

        def flaky(out):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(5, "simulated read failure")
            return real(out)
        s._read = flaky
        with s:
            assert s.wait(6, timeout=PATIENCE)
        snaps = s.snapshots()
    failed = [x for x in snaps if not x.ok]
    assert s.stats.failed == 1 and len(failed) == 1 and "simulated" in failed[0].error
    assert snaps[-1].ok and snaps[-1].seq > failed[0].seq


def test_steady_state_sampling_allocates_nothing(listener):
    with web10g.open() as agent:
        with sampler(agent, ["SegsOut", "rtt_us"], interval=0.005, capacity=20,
                     filter=listener, states="listen") as s:
            assert s.wait(40, timeout=PATIENCE)
            tracemalloc.start()
            assert s.wait(20, timeout=PATIENCE)
            before = tracemalloc.get_traced_memory()[0]
            assert s.wait(100, timeout=PATIENCE)
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


def test_series_over_a_ring_and_summary(client):
    with web10g.open() as agent:
        baseline = agent.read_all(["SegsOut"], filter=client.filter).copy()
        with sampler(agent, ["HCThruOctetsAcked", "SegsRetrans", "CurCwnd", "rtt_us"],
                     interval=0.02, filter=client.filter) as s:
            client.send(6_000_000)
            assert wait_for(lambda: latest_max(s, "HCThruOctetsAcked") >= 6_000_000)
            client.close()
            assert s.wait(2, timeout=PATIENCE)
    snaps = [x.rows for x in s.snapshots()]
    ds = deltas.series(snaps)
    assert len(ds) == len(snaps) - 1
    moved = sum(int(d.rows["HCThruOctetsAcked"].sum()) for d in ds)
    summary = deltas.summarize(snaps, baseline=baseline)
    assert moved <= int(summary["bytes_sent"].sum()) <= 6_000_002
    assert summary["bytes_sent"].sum() >= 6_000_000          # started inside: from zero
    assert np.all(summary["rtt_min_ms"] <= summary["rtt_median_ms"])
    assert np.all(summary["rtt_median_ms"] <= summary["rtt_p99_ms"])


def test_to_pandas_wide_and_long(client):
    pd = pytest.importorskip("pandas")
    cols = ["HCThruOctetsAcked", "SmoothedRTT", "cc_algorithm"]
    with web10g.open() as agent:
        client.send(500_000)
        rows1 = agent.read_all(cols, filter=client.filter).copy()
        client.close()
        assert wait_for(lambda: len(time_wait_rows(agent, client)) > 0)
        rows2 = time_wait_rows(agent, client, cols)
    df = to_pandas([rows1, rows2])
    assert isinstance(df.index, pd.DatetimeIndex) and df.index.name == "time"
    assert list(df.columns[:4]) == ["cid", "local", "remote", "state"]
    assert df["state"].dtype == "category" and "established" in set(df["state"])
    assert df["local"].iloc[0].startswith("127.0.0.1:")
    assert df["cc_algorithm"].iloc[0] in ("cubic", "bbr", "reno")
    tw = df[df["state"] == "timeWait"]
    assert len(tw) and tw["SmoothedRTT"].isna().all()   # TIME-WAIT rows carry no tcp_info
    long = to_pandas(rows1, form="long")
    assert set(long.columns) == {"time", "cid", "local", "remote", "state", "variable", "value"}
    assert set(long["variable"]) == {"HCThruOctetsAcked", "SmoothedRTT", "cc_algorithm"}


@pytest.mark.filterwarnings("ignore:an interval of:RuntimeWarning")  # a slow read is fine
def test_monitor_on_a_real_transfer(client, end_watch):
    with web10g.monitor(filter=client.filter, interval=0.02) as m:
        client.send(8_000_000)
        # a live sample of the flow (the gauges: RTT, cwnd), then its end from the kernel
        assert wait_for(lambda: latest_max(m._sampler, "CurCwnd") > 0)
        client.close()
        assert end_watch.wait()
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


@pytest.mark.filterwarnings("ignore:an interval of:RuntimeWarning")
def test_pytest_fixture(web10g_monitor, client, end_watch):
    with web10g_monitor(filter=client.filter, interval=0.02) as m:
        client.send(1_000_000).close()
        assert end_watch.wait()                   # its final statistics have been sent
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
