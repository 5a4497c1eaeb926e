"""web10g.plot, ``web10g plot`` and ``web10g top`` against real loopback transfers.

The PNGs are opened with Pillow and checked for size and content; top runs as the CLI
does (piped, and under a real terminal in tmux when tmux is installed).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import web10g
from web10g.cli.plot import main as plot_main
from web10g.cli.top import main as top_main
from web10g.plot import figure_size, plot, plot_data
from web10g.recording import Recorder

PIL_Image = pytest.importorskip("PIL.Image")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
VARS = ["HCThruOctetsAcked", "HCThruOctetsReceived", "CurCwnd", "rtt_us", "SegsRetrans"]
TOTAL = 20 * 1024 * 1024
CHUNK = 64 * 1024


class Transfer:
    """A loopback connection moving ~20 MB in chunks with short sleeps, so it lasts a few
    seconds and every sample taken meanwhile sees bytes acknowledged."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.client = socket.create_connection(self.listener.getsockname())
        self.server, _ = self.listener.accept()
        self.port = self.listener.getsockname()[1]          # the server side's port
        self.client_port = self.client.getsockname()[1]
        self.sender = f"127.0.0.1:{self.client_port} -> 127.0.0.1:{self.port}"
        self.filter = f"sport = :{self.port} or dport = :{self.port}"
        self.stop = threading.Event()
        self.sent = 0
        self.threads = [threading.Thread(target=self._send, daemon=True),
                        threading.Thread(target=self._drain, daemon=True)]
        for t in self.threads:
            t.start()

    def _send(self) -> None:
        data = b"t" * CHUNK
        while self.sent < TOTAL and not self.stop.is_set():
            try:
                self.client.sendall(data)
            except OSError:
                return
            self.sent += CHUNK
            time.sleep(0.01)

    def _drain(self) -> None:
        self.server.settimeout(0.2)
        while not self.stop.is_set():
            try:
                if not self.server.recv(1 << 20):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(2)
        for s in (self.client, self.server, self.listener):
            s.close()


@pytest.fixture
def transfer() -> Iterator[Transfer]:
    t = Transfer()
    try:
        yield t
    finally:
        t.close()


def sample(agent, n: int, flt: str, every: float = 0.1) -> list[np.ndarray]:
    out = []
    for i in range(n):
        if i:
            time.sleep(every)
        # a copy: read_all reuses its buffer on the next call
        out.append(agent.read_all(VARS, filter=flt, states="established").copy())
    return out


def check_png(path: Path, size: tuple[int, int]) -> None:
    with PIL_Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == size
        colours = img.convert("RGB").getcolors(maxcolors=1 << 24)
    # lines, text and axes in several colours, not a blank canvas
    assert colours is not None and len(colours) > 10


# -- plot ---------------------------------------------------------------------------------

def test_plot_snapshots_of_a_transfer(tmp_path, transfer):
    with web10g.open() as agent:
        snaps = sample(agent, 10, transfer.filter)
    data = plot_data(snaps)
    # the two ends of the connection; the sender moved the bytes it sent and the
    # receiver the same bytes received, so both rank, sender's label as "local -> remote"
    assert len(data.cids) == 2 and transfer.sender in data.labels
    i = data.labels.index(transfer.sender)
    thr = data.values["throughput"][i]
    assert np.isnan(thr[0])                 # no rate before the second sample
    assert np.nanmin(thr[1:]) > 0           # bits/s while the transfer runs
    acked = [int(s[s["local_port"] == transfer.client_port]["HCThruOctetsAcked"][0])
             for s in snaps]
    span = data.seconds[i, -1] - data.seconds[i, 0]
    mean_bps = (acked[-1] - acked[0]) * 8 / span
    assert np.nanmean(thr[1:]) == pytest.approx(mean_bps, rel=0.25)
    assert np.all(np.diff(data.values["retransmits"][i]) >= 0)   # cumulative
    assert data.values["retransmits"][i][0] == 0
    assert np.all(data.values["rtt"][i] < 1000)                  # ms on loopback

    out = plot(snaps, tmp_path / "flows.png")
    assert out == tmp_path / "flows.png"
    check_png(out, figure_size(4, 2))


def test_plot_flows_that_appear_and_vanish(tmp_path, transfer):
    """A connection opened mid-series and closed before its end, and a sample that
    missed the sender: gaps in the lines, and rates resume across a gap."""
    snaps = []
    extra: list[socket.socket] = []
    with web10g.open() as agent:
        for k in range(9):
            if k == 3:          # a second connection to the same listener appears
                extra = [socket.create_connection(transfer.listener.getsockname())]
                extra.append(transfer.listener.accept()[0])
                extra[0].sendall(b"e" * 100_000)
                extra[1].recv(1 << 20)
            if k == 6:          # ... and is gone (established only) from here on
                for s in extra:
                    s.close()
            snaps += sample(agent, 1, transfer.filter)
            time.sleep(0.08)
    # a dump that missed the sender (a real row dropped from a real sample)
    snaps[4] = snaps[4][snaps[4]["local_port"] != transfer.client_port]

    data = plot_data(snaps)
    assert len(data.cids) == 4
    i = data.labels.index(transfer.sender)
    assert np.isnan(data.seconds[i, 4]) and np.isnan(data.values["throughput"][i, 4])
    assert data.values["throughput"][i, 5] > 0          # measured from sample 3 to 5
    new = [j for j in range(4) if np.isnan(data.seconds[j, 0])]
    assert len(new) == 2                                # both ends of the extra flow
    for j in new:
        present = np.flatnonzero(np.isfinite(data.seconds[j]))
        assert present.tolist() == [3, 4, 5]
        assert np.isnan(data.values["throughput"][j, 3])   # no rate at first appearance
        assert data.values["retransmits"][j, 3] == 0

    out = plot(snaps, tmp_path / "gaps.png", top=10, title="gaps")
    check_png(out, figure_size(4, 4))


def test_plot_of_a_recording(tmp_path, transfer, capsys):
    path = tmp_path / "rec.w10g"
    with web10g.open("sock_diag") as agent:
        rec = Recorder(path, agent)
        try:
            for k in range(5):
                if k:
                    time.sleep(0.1)
                rec.sample()
        finally:
            rec.close()

    everything = plot_data(path, top=None)
    i = everything.labels.index(transfer.sender)
    assert np.nanmin(everything.values["throughput"][i, 1:]) > 0
    assert everything.samples == 5

    out = plot(path, tmp_path / "rec.png")
    check_png(out, figure_size(4, min(10, everything.flows)))

    code = plot_main([str(path), "-o", str(tmp_path / "cli.png"), "--top", "3",
                      "--vars", "throughput,rtt"], prog="web10g plot")
    assert code == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'cli.png'}\n"
    check_png(tmp_path / "cli.png", figure_size(2, 3))


def test_plot_needs_two_samples(tmp_path, tcp_pair):
    with web10g.open() as agent:
        one = agent.read_all(VARS).copy()
        with pytest.raises(ValueError, match="at least two samples, got 1"):
            plot([one], tmp_path / "one.png")

        class Result:                  # the shape of a monitor result
            snapshots = [one]

        with pytest.raises(ValueError, match="at least two samples"):
            plot(Result(), tmp_path / "one.png")
        # two reads without a copy are one buffer: refused rather than plotted as zeros
        a = agent.read_all(VARS)
        b = agent.read_all(VARS)
        with pytest.raises(ValueError, match=r"same memory.*copy\(\)"):
            plot([a, b], tmp_path / "same.png")
    with pytest.raises(ValueError, match="unknown quantity 'bogus'"):
        plot([one, one.copy()], tmp_path / "x.png", vars=["bogus"])
    assert not (tmp_path / "one.png").exists()


def test_plot_cli_errors(tmp_path, capsys):
    bad = tmp_path / "not-a-recording.txt"
    bad.write_text("hello\n")
    code = plot_main([str(bad), "-o", str(tmp_path / "o.png")], prog="web10g plot")
    err = capsys.readouterr().err
    assert code == 1
    assert err == (f"web10g plot: {bad}: recording, offset 0: not a web10g recording "
                   "(no W10GRAW1 magic)\n")
    assert plot_main([str(tmp_path / "missing"), "-o", "o.png"]) == 1
    assert "No such file" in capsys.readouterr().err

    # matplotlib made unimportable in a fresh interpreter (None in sys.modules is
    # Python's own way to block an import)
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from web10g.cli.plot import main\n"
            f"sys.exit(main([{str(bad)!r}, '-o', 'x.png'], prog='web10g plot'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr == "web10g plot: plotting needs matplotlib: pip install 'web10g[plot]'\n"


# -- top ----------------------------------------------------------------------------------

THROUGHPUT = re.compile(r" established +([\d.]+) ([KMGT]?)B/s ")


def frames_of(out: str) -> list[list[str]]:
    return [f.splitlines() for f in out.split("\n\n") if f.strip()]


def test_top_frames_show_the_transfer(capsys, transfer):
    code = top_main(["--count", "3", "--interval", "0.1", "--filter", transfer.filter,
                     "--top", "10"], prog="web10g top")
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    frames = frames_of(out)
    assert len(frames) == 3
    for lines in frames:
        assert re.match(r"web10g top: 2 flows, sample \d\d:\d\d:\d\d\.\d{3}, "
                        r"read [\d.]+ ms, total [\d.]+ [KMG]?B/s \[\w+\]$", lines[0])
        assert lines[1].split()[:8] == ["local", "remote", "state", "throughput", "rtt",
                                        "ms", "cwnd", "retrans"]
        assert len(lines) == 4
        # the sender is busiest, so first, with its bytes acked per second
        me = lines[2]
        assert me.startswith(f"127.0.0.1:{transfer.client_port} 127.0.0.1:{transfer.port} ")
        m = THROUGHPUT.search(me)
        assert m and float(m.group(1)) > 0, me


def test_top_replay_and_limits(tmp_path, capsys, transfer):
    path = tmp_path / "rec.w10g"
    with web10g.open("sock_diag") as agent, Recorder(path, agent) as rec:
        for _ in range(4):
            rec.sample()
            time.sleep(0.05)
    # a recording is replayed without waiting when piped; it ends after 3 frames
    t0 = time.monotonic()
    code = top_main(["--replay", str(path), "--count", "10", "--interval", "5",
                     "--filter", transfer.filter, "--top", "1"])
    out, _ = capsys.readouterr()
    assert code == 0 and time.monotonic() - t0 < 5
    frames = frames_of(out)
    assert len(frames) == 3
    assert all(f[0].startswith("web10g top: 2 flows (1 shown)") and len(f) == 3
               for f in frames)


def test_top_usage_errors(capsys):
    code = top_main(["--count", "1", "--filter", "dport = :99999"], prog="web10g top")
    err = capsys.readouterr().err
    assert code == 1
    assert err == ("web10g top: invalid filter: port 99999 out of range 0..65535 at "
                   "position 9\n  dport = :99999\n           ^\n")
    assert top_main(["--interval", "0"]) == 1
    assert "interval must be positive" in capsys.readouterr().err
    assert top_main(["--top", "0", "--count", "1"]) == 1
    assert "--top must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:      # argparse: the classic exit 1
        top_main(["--bogus"])
    assert exc.value.code == 1


HEADER = re.compile(r"web10g top: (\d+) flows(?: \((\d+) shown\))?, ")


class Tmux:
    """A tmux server of our own (its own socket), so no user session is touched."""

    def __init__(self, width: int, height: int) -> None:
        self.socket = f"web10g-test-{os.getpid()}"
        self.height = height
        self("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height),
             "-c", str(ROOT), "bash --norc --noprofile")

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def type(self, *keys: str) -> None:
        self("send-keys", "-t", "top", *keys)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "top")

    def wait(self, cond, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if cond(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; the screen shows:\n{text}")
            time.sleep(0.1)

    def close(self) -> None:
        path = self("display-message", "-p", "#{socket_path}").strip()
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=10)
        if path:        # kill-server leaves the socket file behind
            Path(path).unlink(missing_ok=True)


@pytest.mark.skipif(shutil.which("tmux") is None,
                    reason="tmux is not installed: cannot give top a real terminal")
def test_top_on_a_terminal(tcp_pair):
    # tcp_pair: flows of our own, so the view has rows even on an otherwise quiet machine
    term = Tmux(120, 20)
    try:
        cmd = f"{sys.executable} -m web10g.cli.top --interval 0.2"
        # the exit status is echoed as FIRST-RC<n>-END: text the typed line does not hold
        term.type(f"{cmd} --count 2 --top 5; echo FIRST-RC$?-END", "Enter")
        text = term.wait(lambda s: re.search(r"FIRST-RC\d+-END", s) is not None)
        lines = text.splitlines()
        # the screen was cleared and the two frames drawn in place at the top: one
        # header, the headings, 5 rows, then the shell again
        assert lines[0].startswith("web10g top: ") and " flows" in lines[0]
        assert sum(ln.startswith("web10g top: ") for ln in lines) == 1
        assert lines[1].startswith("local ")
        # at most 5 flow rows (fewer on a quiet machine), then the shell's next output
        end = lines.index("FIRST-RC0-END")
        assert 2 <= end <= 7 and all(ln for ln in lines[2:end])

        # a live view, as many rows as fit the terminal, until Ctrl-C (exit 0)
        term.type(f"{cmd}; echo SECOND-RC$?-END", "Enter")

        def full_frame(screen: str) -> bool:
            return "FIRST-RC" not in screen and HEADER.match(screen) is not None and \
                len(screen.rstrip("\n").splitlines()) >= 3

        lines = term.wait(full_frame).rstrip("\n").splitlines()
        m = HEADER.match(lines[0])
        flows, shown = int(m[1]), int(m[2] or m[1])
        assert shown == min(flows, term.height - 3)   # the cursor keeps the last line
        assert len(lines) == 2 + shown
        assert all(len(ln) <= 120 for ln in lines)
        term.type("C-c")
        text = term.wait(lambda s: re.search(r"SECOND-RC\d+-END", s) is not None)
        assert "SECOND-RC0-END" in text
    finally:
        term.close()
