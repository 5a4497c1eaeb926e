"""The collector under faults: a disk that fills up mid-file, SIGKILL mid-write and a
restart, scrapes during rotations, and a sink that blocks.

Each test holds its own loopback flows on a port of its own (``--filter``) and asserts
on what must hold whatever the machine's load, never on speed."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("prometheus_client")

import collector_util as cu  # noqa: E402


class Flows:
    """``n`` established loopback connections on a listener of their own, with a trickle
    of data so that rows change from sample to sample."""

    def __init__(self, n: int) -> None:
        self.lst = socket.create_server(("127.0.0.1", 0), backlog=max(16, n))
        self.port = self.lst.getsockname()[1]
        self.socks = []
        for _ in range(n):
            c = socket.create_connection(("127.0.0.1", self.port))
            s, _ = self.lst.accept()
            self.socks.append((c, s))
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._trickle, daemon=True)
        self._t.start()

    def _trickle(self) -> None:
        while not self._stop.wait(0.05):
            for c, s in self.socks[:10]:
                c.send(b"x" * 100)
                s.recv(4096)

    @property
    def filter(self) -> str:
        return f"sport = :{self.port} or dport = :{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._t.join()
        for c, s in self.socks:
            c.close()
            s.close()
        self.lst.close()


@pytest.fixture
def flows():
    f = Flows(30)
    try:
        yield f
    finally:
        f.close()


def visible_files(root) -> list:
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))


def all_readable(root) -> int:
    n = 0
    for p in visible_files(root):
        n += pq.read_table(p).num_rows          # raises on a partial or damaged file
    return n


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@needs_root
def test_disk_full_mid_file_keeps_earlier_files_and_the_collector(tmp_path, flows):
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    mport = cu.free_port()
    serve = None
    try:
        ds = mnt / "ds"
        serve = cu.Serve(tmp_path, "--parquet", str(ds), "--interval", "0.1",
                         "--rotate-seconds", "0.5", "--filter", flows.filter,
                         "--prometheus", f"127.0.0.1:{mport}", "--host", "full")
        serve.wait_event("file_written", n=2)
        # fill the disk
        filler = mnt / "filler"
        with open(filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        before = visible_files(mnt)
        errs = serve.wait_event("sink_error", timeout=30)
        assert "No space" in errs[0]["error"] or "ENOSPC" in errs[0]["error"] or \
            "space" in errs[0]["error"].lower()
        assert serve.proc.poll() is None                      # alive
        text = cu.scrape(mport)                               # and reporting
        assert cu.metric_values(text, "web10g_collector_sink_errors_total",
                                sink="parquet")[0] >= 1
        assert cu.metric_values(text, "web10g_collector_sink_failing", sink="parquet")
        s0 = cu.metric_values(text, "web10g_collector_samples_total")[0]
        time.sleep(0.5)
        assert cu.metric_values(cu.scrape(mport), "web10g_collector_samples_total")[0] > s0
        assert all_readable(mnt) > 0                          # every earlier file is valid
        assert set(before) <= set(visible_files(mnt))
        # space comes back: the sink recovers by itself
        filler.unlink()
        n_files = len(serve.wait_event("file_written"))
        serve.wait_event("sink_recovered", timeout=30)
        serve.wait_event("file_written", n=n_files + 1, timeout=30)
        assert serve.terminate() == 0
        all_readable(mnt)
        assert not list(mnt.rglob(".part-*"))
    finally:
        if serve is not None:
            serve.close()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_sigkill_mid_write_leaves_no_partial_file_and_restart_duplicates_nothing(
        tmp_path, flows):
    ds = tmp_path / "ds"
    args = ["--parquet", str(ds), "--interval", "0.05", "--rotate-seconds", "0.3",
            "--filter", flows.filter, "--host", "k"]
    serve = cu.Serve(tmp_path, *args, name="first")
    try:
        serve.wait_event("file_written", n=3)
        time.sleep(0.17)                          # somewhere inside an open window
        serve.kill()
    finally:
        serve.close()
    # nothing partial is visible: every visible file reads in full
    first = {p: p.read_bytes() for p in visible_files(ds)}
    assert len(first) >= 3
    all_readable(ds)
    import web10g.datasets as wd

    n_before = wd.dataset(ds).count_rows()        # the reader skips hidden temp files
    assert n_before == sum(pq.read_table(p).num_rows for p in first)
    # restart on the same directory: stale temp files go, renamed files stay as they were
    serve = cu.Serve(tmp_path, *args, name="second")
    try:
        serve.wait_event("file_written", n=2)
        assert serve.terminate() == 0
    finally:
        serve.close()
    assert not list(ds.rglob(".part-*"))
    for p, data in first.items():
        assert p.read_bytes() == data             # nothing already renamed was lost
    t = pq.read_table(ds, columns=["cid", "timestamp", "final"]).to_pandas()
    assert len(t) > n_before
    assert not t.duplicated(["cid", "timestamp", "final"]).any()


def serve_with_exporter(tmp_path, flows, rotate: str, host: str):
    """A collector writing a dataset (rotating every ``rotate`` s) and serving metrics:
    (the Serve, its metrics port, the dataset directory)."""
    mport = cu.free_port()
    ds = tmp_path / "ds"
    serve = cu.Serve(tmp_path, "--parquet", str(ds), "--interval", "0.05",
                     "--rotate-seconds", rotate, "--filter", flows.filter,
                     "--prometheus", f"127.0.0.1:{mport}", "--host", host)
    return serve, mport, ds


def test_scrape_during_rotation_succeeds(tmp_path, flows):
    serve, mport, ds = serve_with_exporter(tmp_path, flows, "0.1", "r")
    try:
        serve.wait_event("file_written", n=1)
        ok = 0
        for k in range(60):
            if k % 3 == 0:
                serve.proc.send_signal(signal.SIGHUP)      # rotations on demand too
            text = cu.scrape(mport)
            assert "web10g_collector_samples_total" in text
            ok += 1
            time.sleep(0.02)
        assert ok == 60
        assert len(serve.wait_event("file_written", n=3)) >= 3
        assert serve.wait_event("rotate_requested")
        assert serve.terminate() == 0
    finally:
        serve.close()
    all_readable(ds)


def test_a_blocking_sink_does_not_stall_sampling(tmp_path, flows):
    from web10g.collector import Collector, Config
    from web10g.collector.log import EventLog
    from web10g.collector.sinks import Sink

    release = threading.Event()

    class Blocking(Sink):
        name = "blocking"
        calls = 0

        def write(self, item):
            Blocking.calls += 1
            release.wait(60)

    log_path = tmp_path / "log"
    with open(log_path, "w") as logf:
        cfg = Config(parquet=str(tmp_path / "ds"), interval=0.05, filter=flows.filter,
                     host="blk", sink_queue=2, shutdown_timeout=10).check()
        col = Collector(cfg, log=EventLog(logf, "json"), extra_sinks=[Blocking()])
        result = {}
        th = threading.Thread(target=lambda: result.setdefault("rc", col.run()))
        th.start()
        try:
            assert col.started.wait(30)
            deadline = time.monotonic() + 30
            while col.samples < 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            runners = {r.name: r for r in col.runners}
            assert col.samples >= 20                        # sampling went on
            assert Blocking.calls == 1                      # the sink is stuck in its first
            assert runners["blocking"].dropped >= col.samples - 4   # counted, not waited
            assert runners["parquet"].written >= col.samples - 3   # the others keep going
            fams = {f.name: f for f in col.families()}
            dropped = {s.labels["sink"]: s.value for s in
                       fams["web10g_collector_sink_dropped_samples"].samples
                       if s.name.endswith("_total")}
            assert dropped["blocking"] >= 1 and dropped["parquet"] == 0
        finally:
            release.set()
            col.stop()
            th.join(60)
    assert result.get("rc") == 0
    assert "sink_behind" in log_path.read_text()


def test_sigterm_flushes_the_open_window(tmp_path, flows):
    ds = tmp_path / "ds"
    serve = cu.Serve(tmp_path, "--parquet", str(ds), "--interval", "0.1",
                     "--rotate-seconds", "3600", "--filter", flows.filter, "--host", "t")
    try:
        time.sleep(1.0)
        assert not visible_files(ds)              # the only window is still open
        assert serve.terminate() == 0
    finally:
        serve.close()
    files = visible_files(ds)
    assert len(files) == 1 and pq.read_table(files[0]).num_rows >= 60


def test_a_flood_of_idle_connections_is_bounded_and_the_collector_carries_on(tmp_path, flows):
    from web10g.collector.prometheus import MAX_CONNECTIONS
    serve, mport, ds = serve_with_exporter(tmp_path, flows, "0.2", "f")
    idle: list[socket.socket] = []
    try:
        serve.wait_event("file_written", n=1)
        pid = serve.proc.pid
        fds0 = len(os.listdir(f"/proc/{pid}/fd"))
        threads0 = len(os.listdir(f"/proc/{pid}/task"))
        # another local user: connections that never send a request, far past the bound
        for _ in range(MAX_CONNECTIONS + 200):
            idle.append(socket.create_connection(("127.0.0.1", mport)))
        evicted = serve.wait_event("exporter_connections_evicted")
        assert evicted[0]["limit"] == MAX_CONNECTIONS
        time.sleep(0.5)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        threads = len(os.listdir(f"/proc/{pid}/task"))
        # one thread and one descriptor per served connection, not per attempt (a few
        # more: a Parquet file may be open, pyarrow may have started a thread)
        assert threads - threads0 <= MAX_CONNECTIONS + 8, (threads0, threads)
        assert fds - fds0 <= MAX_CONNECTIONS + 8, (fds0, fds)
        written = len(serve.wait_event("file_written", n=1))
        assert len(serve.wait_event("file_written", n=written + 3)) >= written + 3
        # the flood is still held: a scrape takes the place of the longest idle one
        text = cu.scrape(mport)
        assert cu.metric_values(text, "web10g_exporter_connections_evicted_total",
                                host="f")[0] >= 200
        assert cu.metric_values(text, "web10g_exporter_connections", host="f")[0] <= \
            MAX_CONNECTIONS + 8
        assert serve.terminate() == 0
    finally:
        for s in idle:
            s.close()
        serve.close()
    all_readable(ds)


def _get(address: tuple, timeout: float = 10) -> bytes:
    c = socket.create_connection(address, timeout=timeout)
    try:
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return c.recv(12)
    finally:
        c.close()


def test_slow_requests_holding_every_slot_do_not_lock_out_a_scrape(monkeypatch, capsys):
    # Another local user fills every slot with requests dribbled a byte at a time, each
    # byte well inside the idle timeout: a scrape must still get through, by taking the
    # place of the connection that has waited longest.
    from web10g.collector import prometheus as prom
    monkeypatch.setattr(prom, "MAX_CONNECTIONS", 4)
    ex = prom.Exporter("127.0.0.1:0", [], lambda: 0)
    slow: list[socket.socket] = []
    try:
        for _ in range(4):
            c = socket.create_connection(ex.address[:2])
            c.sendall(b"GET /metr")
            slow.append(c)
        deadline = time.monotonic() + 10
        while ex.connections < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ex.connections == 4
        for c in slow:
            c.sendall(b"i")                       # still sending: not idle
        assert _get(ex.address[:2]).startswith(b"HTTP/1.1 200")
        assert ex.evicted == 1 and ex.refused == 0
        # the oldest slow request was closed, the others are still open
        slow[0].settimeout(10)
        assert slow[0].recv(1) == b""
        for c in slow[1:]:
            c.setblocking(False)
            with pytest.raises(BlockingIOError):
                c.recv(1)
        # a connection busy answering (for less than STALLED_ANSWER_S) is not closed for
        # a newcomer: with every slot busy, the newcomer is refused
        monkeypatch.setattr(prom, "STALLED_ANSWER_S", 600.0)
        release = threading.Event()
        inside: list[int] = []

        def render(accept: str) -> tuple[bytes, str]:
            inside.append(1)
            release.wait(60)
            return b"x", "text/plain"

        monkeypatch.setattr(ex, "render", render)
        replies: list[bytes] = []
        busy = [threading.Thread(target=lambda: replies.append(_get(ex.address[:2], 60)))
                for _ in range(4)]
        for t in busy:
            t.start()
        deadline = time.monotonic() + 30
        while len(inside) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(inside) == 4 and not ex._waiting, (len(inside), ex._waiting)
        try:
            reply = _get(ex.address[:2])
        except ConnectionError:
            reply = b""
        assert reply == b"" and ex.refused == 1 and ex.evicted == 4
        release.set()
        for t in busy:
            t.join(30)
        assert replies == [b"HTTP/1.1 200"] * 4
        # the fragments of the requests cut short were not answered, nor reported as
        # errors: their clients left, or were made room for
        for c in slow:
            c.close()
        time.sleep(0.2)
        assert "Traceback" not in capsys.readouterr().err
    finally:
        for c in slow:
            c.close()
        ex.close()


def test_answers_stalled_by_clients_that_never_read_do_not_lock_out_a_scrape(monkeypatch):
    # Another local user fills every slot with requests whose answers it never reads,
    # behind a tiny receive window: each answer blocks in send() for as long as the
    # connection lives. Past STALLED_ANSWER_S such an answer makes room for a newcomer.
    from web10g.collector import prometheus as prom
    monkeypatch.setattr(prom, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(prom, "STALLED_ANSWER_S", 0.5)
    body = b"#" * (8 << 20)                       # far more than the socket buffers hold
    ex = prom.Exporter("127.0.0.1:0", [], lambda: 0)
    monkeypatch.setattr(ex, "render", lambda accept: (body, "text/plain"))
    stuck: list[socket.socket] = []
    try:
        for _ in range(2):
            c = socket.socket()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.connect(ex.address[:2])
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            stuck.append(c)
        deadline = time.monotonic() + 30
        while len(ex._answering) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(ex._answering) == 2 and not ex._waiting
        time.sleep(0.6)
        c = socket.create_connection(ex.address[:2], timeout=30)
        try:
            c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            got = b""
            while chunk := c.recv(1 << 20):
                got += chunk
        finally:
            c.close()
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(body[:1000])
        assert len(got) > len(body) and ex.evicted == 1 and ex.refused == 0
    finally:
        for c in stuck:
            c.close()
        ex.close()


def test_request_heads_are_bounded():
    # http.server alone reads 100 header lines of 64 KiB each: 6.5 MB held per connection
    from web10g.collector import prometheus as prom
    ex = prom.Exporter("127.0.0.1:0", [], lambda: 0)
    try:
        def ask(head: bytes) -> bytes:
            c = socket.create_connection(ex.address[:2], timeout=10)
            try:
                c.sendall(head)
                reply = b""
                while chunk := c.recv(65536):
                    reply += chunk
                return reply
            except ConnectionResetError:
                return reply
            finally:
                c.close()

        fat = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 8000) for i in range(10))
        reply = ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + fat + b"\r\n")
        assert reply.startswith(b"HTTP/1.0 431") or reply.startswith(b"HTTP/1.1 431"), reply[:40]
        long_line = b"GET /" + b"a" * (prom.MAX_REQUEST_HEAD + 10) + b" HTTP/1.1\r\n\r\n"
        assert b" 200 " not in ask(long_line)[:20]
        # a scrape's head is well within the bound, and a connection serves several
        ok = ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain\r\n\r\n"
                 b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert ok.count(b"HTTP/1.1 200") == 2, ok[:200]
    finally:
        ex.close()


def test_an_idle_connection_is_closed_after_the_idle_timeout(monkeypatch):
    from web10g.collector import prometheus as prom
    monkeypatch.setattr(prom, "IDLE_TIMEOUT_S", 0.3)
    ex = prom.Exporter("127.0.0.1:0", [], lambda: 0)
    try:
        s = socket.create_connection(ex.address[:2])
        s.settimeout(10)
        t0 = time.monotonic()
        assert s.recv(1) == b""                 # closed by the exporter, not by us
        assert time.monotonic() - t0 < 9
        s.close()
        busy = socket.create_connection(ex.address[:2])
        busy.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        busy.settimeout(10)
        assert busy.recv(12).startswith(b"HTTP/1.1 200")
        busy.close()
        deadline = time.monotonic() + 10
        while ex.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ex.connections == 0
    finally:
        ex.close()


def test_serve_retention_keeps_the_dataset_under_its_budget(tmp_path, flows):
    ds = tmp_path / "ds"
    # a file from last week, as left by an earlier run of this collector
    stale = ds / "host=ret" / "date=2026-01-01" / "hour=00" / "part-0-p1-0.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x" * 1000)
    serve = cu.Serve(tmp_path, "--parquet", str(ds), "--interval", "0.05",
                     "--rotate-seconds", "0.2", "--filter", flows.filter, "--host", "ret",
                     "--retain-hours", "24", "--retain-bytes", "20000",
                     "--prometheus", f"127.0.0.1:{(mport := cu.free_port())}")
    try:
        assert serve.wait_event("files_pruned")[0]["files"] == 1     # at start: the stale one
        assert not stale.exists()
        pruned = serve.wait_event("files_pruned", n=3)
        files = sorted(ds.rglob("part-*.parquet"))
        size = sum(p.stat().st_size for p in files)
        biggest = max(e["bytes"] for e in serve.wait_event("file_written"))
        assert files and size <= 20000 + biggest
        assert all(e["kept_bytes"] <= 20000 + biggest for e in pruned)
        text = cu.scrape(mport)
        assert cu.metric_values(text, "web10g_collector_parquet_pruned_files_total",
                                host="ret")[0] >= 3
        assert serve.terminate() == 0
    finally:
        serve.close()
    for p in ds.rglob("part-*.parquet"):
        pq.read_table(p)                        # what is left is whole
