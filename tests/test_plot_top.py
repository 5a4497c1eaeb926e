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
    check_png(tmp_path / "cli.png", figure_size(2, min(3, everything.flows)))


def test_plot_needs_two_samples(tmp_path, tcp_pair):
    with web10g.open() as agent:
        one = agent.read_all(VARS).copy()
        with pytest.raises(ValueError, match="at least two samples, got 1"):
            plot([one], tmp_path / "one.png")

        class Result:                  # the shape of a monitor result
            snapshots = [one]

        with pytest.raises(ValueError, match="at least two samples"):
            plot(Result(), tmp_path / "one.png")
        # two views of one buffer (an out= array reused) would plot as zeros: refused
        buf = agent.read_all(VARS)
        a = agent.read_all(VARS, out=buf)
        b = agent.read_all(VARS, out=buf)
        with pytest.raises(ValueError, match=r"same memory.*copy"):
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
#
# The tables are read back from the text: the summary line, the headings, a line per flow.
# Every run picks its own flows with --filter on a port of its own, so other connections
# on the machine (and there may be thousands) never enter the view.

TOP = [sys.executable, "-m", "web10g", "top"]
SUMMARY = re.compile(r"web10g top: (\d+) flows(?: \((\d+) shown\))? by (\w+)")
BY = re.compile(r"\d+ flows(?: \(\d+ shown\))? by (\w+)")    # in a narrow summary
# display order, heading, right-aligned
HEADINGS = [("local", "local", False), ("remote", "remote", False), ("state", "state", False),
            ("throughput", "throughput", True), ("acked", "acked", True),
            ("rtt", "rtt ms", True), ("cwnd", "cwnd", True), ("retrans", "retrans", True),
            ("cc", "cc", False)]
DROPPED_FIRST = ["acked", "cc", "state", "retrans", "cwnd", "rtt"]
VALUE = re.compile(r"(-|\d+(?:\.\d+)?(?: [KMGT]?B(?:/s)?)?)$")
SCALE = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def frames_of(out: str) -> list[list[str]]:
    return [f.splitlines() for f in out.split("\n\n") if f.strip()]


def columns_of(heading: str) -> dict[str, tuple[int, int, bool]]:
    """The columns a heading line shows: key -> (start, end, sort mark), in order."""
    out = {}
    for key, head, _ in HEADINGS:
        m = re.search(rf"(?<!\S){re.escape(head)}([▼*]?)(?!\S)", heading)
        if m:
            out[key] = (m.start(), m.end(), bool(m[1]))
    return out


def cell(line: str, cols: dict[str, tuple[int, int, bool]], key: str) -> str:
    """The text of column ``key`` in a table line (right-aligned columns end where their
    heading ends, left-aligned ones start where theirs starts)."""
    start, end, _ = cols[key]
    if dict((k, r) for k, _, r in HEADINGS)[key]:
        m = VALUE.search(line[:end])
        assert m, f"no value for {key} in {line!r}"
        return m[1]
    return line[start:].split(" ", 1)[0]


def number(text: str) -> float:
    """A value as shown ("12.3 MB/s", "0.042", "-") as a number; "-" is NaN."""
    if text == "-":
        return float("nan")
    num, _, unit = text.partition(" ")
    return float(num) * SCALE[unit[:1] if unit[:1] in SCALE else ""]


def check_sorted(lines: list[str], key: str) -> list[float]:
    """The flows of a table (summary, headings, rows) are in descending ``key`` order,
    unknown values last; returns the values."""
    cols = columns_of(lines[1])
    values = [number(cell(ln, cols, key)) for ln in lines[2:]]
    known = [v for v in values if not np.isnan(v)]
    assert values[:len(known)] == known and known == sorted(known, reverse=True), \
        (key, values, lines)
    return values


class LiveTransfer(Transfer):
    """A transfer that goes on until closed, for views that last a while."""

    def _send(self) -> None:
        data = b"t" * CHUNK
        while not self.stop.is_set():
            try:
                self.client.sendall(data)
            except OSError:
                return
            self.sent += CHUNK
            time.sleep(0.01)


@pytest.fixture
def live_transfer() -> Iterator[Transfer]:
    t = LiveTransfer()
    try:
        yield t
    finally:
        t.close()


def remote_of(line: str, cols: dict[str, tuple[int, int, bool]]) -> str:
    return cell(line, cols, "remote")


def test_top_frames_show_the_transfer(capsys, transfer):
    # in-process, stdout captured (not a terminal): --count frames, blank lines between
    code = top_main(["--count", "3", "--interval", "0.1", "--filter", transfer.filter,
                     "--top", "10"], prog="web10g top")
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    frames = frames_of(out)
    assert len(frames) == 3
    for lines in frames:
        assert re.match(r"web10g top: 2 flows by throughput, sample \d\d:\d\d:\d\d\.\d{3}, "
                        r"read [\d.]+ ms, total [\d.]+ [KMG]?B/s \[\w+\]$", lines[0])
        # no terminal, no width limit: every column, no sort mark
        assert list(columns_of(lines[1])) == [k for k, _, _ in HEADINGS]
        assert not any(mark for _, _, mark in columns_of(lines[1]).values())
        assert len(lines) == 4
        # the sender is busiest, so first, with its bytes acked per second
        me = lines[2]
        assert me.startswith(f"127.0.0.1:{transfer.client_port} 127.0.0.1:{transfer.port} "
                             "established ")
        assert number(cell(me, columns_of(lines[1]), "throughput")) > 0, me
        check_sorted(lines, "throughput")


def test_top_piped_prints_one_table(transfer):
    """Piped with no --count: one table and exit 0 (scripts need not stop it)."""
    r = subprocess.run([*TOP, "--filter", transfer.filter, "--interval", "0.2"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    frames = frames_of(r.stdout)
    assert len(frames) == 1 and len(frames[0]) == 4
    assert "\x1b" not in r.stdout               # no escape codes in a pipe
    assert SUMMARY.match(frames[0][0]).groups() == ("2", None, "throughput")
    cols = columns_of(frames[0][1])
    assert remote_of(frames[0][2], cols) == f"127.0.0.1:{transfer.port}"     # the sender

    # --count N: N tables; --sort by name or key; lines never end in blanks
    r = subprocess.run([*TOP, "--filter", transfer.filter, "--interval", "0.1",
                        "--count", "2", "--sort", "c"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    frames = frames_of(r.stdout)
    assert len(frames) == 2
    for lines in frames:
        assert SUMMARY.match(lines[0])[3] == "cwnd"
        check_sorted(lines, "cwnd")
    assert not any(ln.endswith(" ") for ln in r.stdout.splitlines())


@pytest.mark.parametrize("sort", ["throughput", "rtt", "cwnd", "retrans"])
def test_top_narrow_drops_columns_in_order(capsys, transfer, sort):
    """The narrower the table, the fewer columns, always the same ones first, never the
    sort column; nothing wider than asked."""
    shown: list[list[str]] = []
    for width in (200, 100, 90, 80, 70, 60, 50, 40, 30):
        code = top_main(["--once", "--width", str(width), "--sort", sort, "--interval",
                         "0.05", "--filter", transfer.filter], prog="web10g top")
        out, err = capsys.readouterr()
        assert code == 0 and err == ""
        (lines,) = frames_of(out)
        assert len(lines) == 4
        assert all(len(ln) <= width for ln in lines), (width, lines)
        assert BY.match(lines[0].removeprefix("web10g top: "))[1] == sort
        cols = list(columns_of(lines[1]))
        assert sort in cols and "remote" in cols and "throughput" in cols
        # what is gone is the first few of DROPPED_FIRST (the sort column skipped), and
        # on the narrowest tables the local endpoint as well
        gone = [k for k in DROPPED_FIRST if k != sort and k not in cols]
        assert gone == [k for k in DROPPED_FIRST if k != sort][:len(gone)], (width, cols)
        assert cols == [k for k, _, _ in HEADINGS if k not in gone and k in cols]
        if "local" not in cols:
            assert len(gone) == len(DROPPED_FIRST) - (sort in DROPPED_FIRST)
        assert not shown or set(cols) <= set(shown[-1])     # narrower: a subset
        shown.append(cols)
        check_sorted(lines, sort)
    assert shown[0] == [k for k, _, _ in HEADINGS]          # 200 columns: all of them
    assert len(shown[-1]) <= 3                              # 30: remote, throughput, sort
    assert set(shown[-1]) == {"remote", "throughput", sort}


def test_top_replay_and_limits(tmp_path, capsys, transfer):
    path = tmp_path / "rec.w10g"
    with web10g.open("sock_diag") as agent, Recorder(path, agent) as rec:
        for _ in range(4):
            rec.sample()
            time.sleep(0.05)
    # a recording is replayed without waiting when piped; it ends after 3 frames
    t0 = time.monotonic()
    code = top_main(["--replay", str(path), "--count", "10", "--interval", "5",
                     "--filter", transfer.filter, "--top", "1", "--sort", "retrans"])
    out, _ = capsys.readouterr()
    assert code == 0 and time.monotonic() - t0 < 5
    frames = frames_of(out)
    assert len(frames) == 3
    assert all(f[0].startswith("web10g top: 2 flows (1 shown) by retrans") and len(f) == 3
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
    assert top_main(["--once", "--count", "2"], prog="web10g top") == 1
    assert capsys.readouterr().err == "web10g top: give either --once or --count N, not both\n"
    assert top_main(["--once", "--width", "5"], prog="web10g top") == 1
    assert capsys.readouterr().err == "web10g top: --width must be at least 20\n"
    for bad in (["--bogus"], ["--sort", "latency"]):
        with pytest.raises(SystemExit) as exc:      # argparse: the classic exit 1
            top_main(bad)
        assert exc.value.code == 1
    assert "unknown sort 'latency': one of throughput, rtt, cwnd, retrans" in \
        capsys.readouterr().err


def test_top_without_rich(transfer):
    """rich is needed by the live view only: one line saying how to get it, where the
    view would start; printed tables work without it."""
    import pty

    code = ("import sys; sys.modules['rich'] = None\n"     # None blocks the import
            "from web10g.cli.top import main\n"
            "sys.exit(main(sys.argv[1:], prog='web10g top'))")
    args = [sys.executable, "-c", code, "--filter", transfer.filter, "--interval", "0.1"]
    leader, follower = pty.openpty()        # stdout a terminal: the live view
    try:
        r = subprocess.run(args, cwd=ROOT, stdin=follower, stdout=follower,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert r.returncode == 1
    assert r.stderr == "web10g top: the live view needs rich: pip install 'web10g[top]'\n"
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    assert SUMMARY.match(r.stdout).groups() == ("2", None, "throughput")


class Tmux:
    """A tmux server of our own (its own socket), so no user session is touched."""

    made = 0

    def __init__(self, width: int, height: int) -> None:
        Tmux.made += 1
        self.socket = f"web10g-test-{os.getpid()}-{Tmux.made}"
        self.width, self.height = width, height
        self("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height),
             "-c", str(ROOT), "bash --norc --noprofile")

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True,
                              capture_output=True, text=True, timeout=10).stdout

    def type(self, *keys: str) -> None:
        self("send-keys", "-t", "top", *keys)

    def run(self, args: list[str], tag: str) -> None:
        """Start ``web10g top args``; its exit status is echoed as <tag>-RC<n>-END, text
        the typed line does not hold."""
        self.type(" ".join([*TOP, *(f"'{a}'" for a in args)]) + f"; echo {tag}-RC$?-END",
                  "Enter")

    def screen(self, escapes: bool = False) -> str:
        # -J: a line the terminal wrapped comes back whole, so too long a line shows
        return self("capture-pane", "-p", "-J", *(["-e"] if escapes else []), "-t", "top")

    def wait(self, cond, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if cond(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; the screen shows:\n{text}")
            time.sleep(0.05)

    def exit_status(self, tag: str, timeout: float = 30.0) -> int:
        text = self.wait(lambda s: re.search(rf"^{tag}-RC\d+-END$", s, re.M) is not None,
                         timeout)
        return int(re.search(rf"^{tag}-RC(\d+)-END$", text, re.M)[1])

    def close(self) -> None:
        path = self("display-message", "-p", "#{socket_path}").strip()
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=10)
        if path:        # kill-server leaves the socket file behind
            Path(path).unlink(missing_ok=True)


needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed: cannot give top a real "
                                       "terminal")


def live_frame(term: Tmux, flows: int, sort: str) -> list[str]:
    """The live view once it shows ``flows`` flows sorted by ``sort``: its lines, the
    checks every frame passes done."""
    keys = re.compile(r"(replay  |end of recording  )?q quit  s sort  t throu")

    def ready(screen: str) -> bool:
        # the whole frame: a capture can fall between the table's redraw and the key
        # line's (seen on a loaded machine), which the checks below would take for a
        # frame without its key line
        lines = screen.rstrip("\n").split("\n")
        m = SUMMARY.search(lines[0])
        return bool(m) and m[1] == str(flows) and m[3] == sort and \
            len([ln for ln in lines[2:] if ln.startswith("127.")]) == flows and \
            any(keys.match(ln) for ln in lines[2 + flows:])

    lines = term.wait(ready).rstrip("\n").split("\n")
    # the window exactly: summary, headings, the flows, blank lines, the keys at the bottom
    assert len(lines) == term.height and lines[0].startswith("web10g top: ")
    assert all(len(ln) <= term.width for ln in lines), lines
    assert not any(ln.strip() for ln in lines[2 + flows:-1])
    assert keys.match(lines[-1])             # at the bottom, nowhere else
    cols = columns_of(lines[1])
    assert [k for k, (_, _, mark) in cols.items() if mark] == [sort]
    check_sorted(lines[:2 + flows], sort)
    # the key of the active sort is highlighted (reverse video) in the key line; the
    # terminal may be captured between the table's redraw and the key line's, so the
    # capture is retried until the key line is drawn (or the wait times out)
    label = {"throughput": "t throughput", "rtt": "r rtt", "cwnd": "c cwnd",
             "retrans": "x retrans"}

    def highlighted(keys: str) -> list[str]:
        return [name for name, text in label.items()
                if re.search(r"\x1b\[(?:\d+;)*7(?:;\d+)*m(?:\x1b\[[\d;]*m)*" + text, keys)]

    deadline = time.monotonic() + 10
    while True:
        keys = term.screen(escapes=True).rstrip("\n").split("\n")[-1]
        if highlighted(keys) == [sort] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert highlighted(keys) == [sort], keys
    return lines[:2 + flows]


@needs_tmux
@pytest.mark.parametrize("width", [60, 200])
def test_top_live_sort_keys_and_quit(live_transfer, width):
    """The real TUI: fits the pane, the keys re-sort at once, q quits with exit 0."""
    term = Tmux(width, 12)
    interval = 3.0          # longer than any reaction below may take
    try:
        term.run(["--filter", live_transfer.filter, "--interval", str(interval)], "LIVE")
        lines = live_frame(term, 2, "throughput")
        cols = columns_of(lines[1])
        if width == 200:
            assert list(cols) == [k for k, _, _ in HEADINGS]
        else:   # 60: the extras went first
            assert list(cols) == ["local", "remote", "throughput", "rtt", "cwnd"]
        # the sender first, its throughput measured
        assert remote_of(lines[2], cols) == f"127.0.0.1:{live_transfer.port}"
        assert number(cell(lines[2], cols, "throughput")) > 0

        # dedicated keys and s cycling (t -> r -> c -> x -> t), each redrawn at once
        for key, sort in [("r", "rtt"), ("s", "cwnd"), ("s", "retrans"), ("s", "throughput"),
                          ("x", "retrans"), ("S", "cwnd"), ("t", "throughput")]:
            t0 = time.monotonic()
            term.type(key)
            lines = live_frame(term, 2, sort)
            assert time.monotonic() - t0 < interval / 2, f"{key}: redrawn on the next sample"
            assert sort in columns_of(lines[1])
            if sort == "throughput":
                assert remote_of(lines[2], columns_of(lines[1])) == \
                    f"127.0.0.1:{live_transfer.port}"
        t0 = time.monotonic()
        term.type("q")
        assert term.exit_status("LIVE") == 0
        assert time.monotonic() - t0 < 2.0
        # the terminal is back as it was: line by line (bash adopts the modes a command
        # that exits 0 leaves, so a terminal left in cbreak mode would show here)
        term.type("stty -a | grep -q -- -icanon && echo TTY-CBREAK || echo TTY-LINES",
                  "Enter")
        text = term.wait(lambda s: re.search(r"^TTY-(CBREAK|LINES)$", s, re.M) is not None)
        assert re.search(r"^TTY-LINES$", text, re.M), text
    finally:
        term.close()


@needs_tmux
def test_top_live_ctrl_c_count_and_fit(live_transfer, tcp_pair):
    """Ctrl-C quits with 0; --count N leaves the last frame; a short pane shows as many
    flows as fit."""
    term = Tmux(100, 20)
    try:
        lst, cli, _ = tcp_pair          # a second pair of flows, idle, on its own port
        port = lst.getsockname()[1]
        flt = f"{live_transfer.filter} or sport = :{port} or dport = :{port}"
        term.run(["--filter", flt, "--interval", "0.3", "--sort", "x"], "INT")
        live_frame(term, 4, "retrans")
        term.type("C-c")
        assert term.exit_status("INT") == 0

        term("resize-window", "-t", "top", "-x", "100", "-y", "5")
        term.height = 5
        term.type("clear", "Enter")
        term.run(["--filter", flt, "--interval", "0.3", "--sort", "cwnd"], "SHORT")

        def two_rows(s: str) -> bool:      # 5 lines: summary, headings, 2 flows, keys
            return bool(re.match(r"web10g top: 4 flows \(2 shown\) by cwnd", s))

        lines = term.wait(two_rows).rstrip("\n").split("\n")
        assert len(lines) == 5 and lines[-1].startswith("q quit")
        check_sorted(lines[:4], "cwnd")
        term.type("q")
        assert term.exit_status("SHORT") == 0

        term("resize-window", "-t", "top", "-x", "100", "-y", "20")
        term.height = 20
        term.type("clear", "Enter")
        term.run(["--filter", flt, "--interval", "0.2", "--count", "2", "--top", "3"],
                 "COUNT")
        assert term.exit_status("COUNT") == 0
        # back on the normal screen, the last frame stays: summary, headings, 3 flows
        lines = term.screen().split("\n")
        at = next(i for i, ln in enumerate(lines) if SUMMARY.match(ln))
        assert SUMMARY.match(lines[at]).groups() == ("4", "3", "throughput")
        assert lines[at + 5] == "COUNT-RC0-END"
        check_sorted(lines[at:at + 5], "throughput")
    finally:
        term.close()


@needs_tmux
def test_top_live_replay(tmp_path, transfer):
    """A recording replayed in the live view, paced; at its end the view stays, says so,
    still sorts, and q quits."""
    path = tmp_path / "rec.w10g"
    with web10g.open("sock_diag") as agent, Recorder(path, agent) as rec:
        for _ in range(4):
            rec.sample()
            time.sleep(0.1)
    term = Tmux(120, 10)
    try:
        term.run(["--replay", str(path), "--filter", transfer.filter, "--interval", "0.3"],
                 "REPLAY")
        lines = term.wait(lambda s: "end of recording" in s).rstrip("\n").split("\n")
        assert lines[-1].startswith("end of recording  q quit")
        assert SUMMARY.match(lines[0]).groups() == ("2", None, "throughput")
        term.type("r")
        live_frame(term, 2, "rtt")
        term.type("q")
        assert term.exit_status("REPLAY") == 0
    finally:
        term.close()
