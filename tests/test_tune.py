"""web10g.tune against the real kernel: a child process owns loopback connections, the
test process writes them through pidfd_getfd and reads the effect back through sock_diag.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import web10g
from web10g import errors, mib, tune
from web10g._netlink import NetlinkSocket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="writes other processes' sockets")

# Owns one loopback pair; prints its identity, then obeys one command per stdin line.
CHILD = textwrap.dedent("""
    import errno, json, os, socket, sys, threading
    lst = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    lst.close()
    socks = {"cli": cli, "srv": srv}
    def ident(s):
        return {"inode": os.fstat(s.fileno()).st_ino, "fd": s.fileno(),
                "local_port": s.getsockname()[1], "rem_port": s.getpeername()[1]}
    print(json.dumps({"pid": os.getpid(), **{k: ident(s) for k, s in socks.items()}}),
          flush=True)
    def drain(s, n):
        while n:
            n -= len(s.recv(min(n, 1 << 20)))
    for line in sys.stdin:
        cmd, *arg = line.split()
        if cmd == "traffic":          # n bytes each way
            n = int(arg[0])
            senders = [threading.Thread(target=s.sendall, args=(b"x" * n,)) for s in (cli, srv)]
            for t in senders: t.start()
            drain(srv, n); drain(cli, n)
            for t in senders: t.join()
            print("ok", flush=True)
        elif cmd == "recv":
            try:
                print("data", len(socks[arg[0]].recv(1)), flush=True)
            except OSError as e:
                print(errno.errorcode[e.errno], flush=True)
        else:
            break
""")


class Child:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.info: dict[str, Any] = json.loads(self.readline())
        self.pid: int = self.info["pid"]

    def readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "child died"
        return line.strip()

    def command(self, cmd: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.readline()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(10)


@pytest.fixture
def child() -> Iterator[Child]:
    c = Child()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def agent() -> Iterator[Any]:
    a = web10g.open("sock_diag")
    try:
        yield a
    finally:
        a.close()


def row_of(agent: Any, inode: int, vars: list[str] | None = None) -> np.void | None:
    rows = agent.read_all(vars or ["CurRwinSent"])
    hit = rows[rows["inode"] == inode]
    return hit[0] if len(hit) else None


def test_find_socket_fd_finds_the_child(child: Child) -> None:
    for side in ("cli", "srv"):
        assert tune.find_socket_fd(child.info[side]["inode"]) == (child.pid,
                                                                  child.info[side]["fd"])


def test_pacing_rate_shows_in_tcp_info(child: Child, agent: Any) -> None:
    ino = child.info["cli"]["inode"]
    row = row_of(agent, ino)
    tune.write_var(row, "max_pacing_rate_bytes_per_s", 1_250_000)
    after = row_of(agent, ino, ["max_pacing_rate_bytes_per_s"])
    assert after["cid"] == row["cid"]
    assert after["max_pacing_rate_bytes_per_s"] == 1_250_000
    # Above 2**32: only a kernel that takes the 64-bit form keeps it exactly.
    tune.write_var(row, "MAX_PACING_RATE_BYTES_PER_S", 5 * 2**32)
    got = row_of(agent, ino, ["max_pacing_rate_bytes_per_s"])["max_pacing_rate_bytes_per_s"]
    assert got in (5 * 2**32, 2**32 - 1)
    tune.write_var(row, "max_pacing_rate_bytes_per_s", 2**64 - 1)  # unlimited again
    assert tune.read_tunables(row)["max_pacing_rate_bytes_per_s"] == 2**64 - 1


def test_congestion_control(child: Child, agent: Any) -> None:
    ino = child.info["srv"]["inode"]
    tune.write_var(row_of(agent, ino), "cc_algorithm", "reno")
    assert row_of(agent, ino, ["cc_algorithm"])["cc_algorithm"] == b"reno"
    assert tune.read_tunables(row_of(agent, ino))["cc_algorithm"] == "reno"


def test_window_clamp_limits_the_advertised_window(child: Child, agent: Any) -> None:
    clamp = 32768  # a multiple of any window-scale unit, so rounding cannot exceed it
    srv = row_of(agent, child.info["srv"]["inode"])
    tune.write_var(srv, "LimRwin", clamp)
    assert tune.read_tunables(srv)["LimRwin"] == clamp
    assert child.command("traffic 8000000") == "ok"
    names = ["rcv_ssthresh_bytes", "CurRwinSent"]
    clamped = row_of(agent, child.info["srv"]["inode"], names)
    free = row_of(agent, child.info["cli"]["inode"], names)  # same traffic, no clamp
    # Autotuning would have raised a bare TCP_WINDOW_CLAMP again (see tune._lock_rcvbuf).
    assert clamped["rcv_ssthresh_bytes"] <= clamp
    assert 0 < clamped["CurRwinSent"] <= clamp
    assert 0 < tune.read_tunables(clamped)["LimRwin"] <= clamp
    assert free["CurRwinSent"] > clamp


def test_notsent_lowat_and_read_back(child: Child, agent: Any) -> None:
    row = row_of(agent, child.info["cli"]["inode"])
    before = tune.read_tunables(row)
    assert set(before) == {"LimRwin", "CurMSS", "cc_algorithm",
                           "max_pacing_rate_bytes_per_s", "notsent_lowat_bytes"}
    assert before["CurMSS"] > 0
    tune.write_var(row, "notsent_lowat_bytes", 16384)
    assert tune.read_tunables(row)["notsent_lowat_bytes"] == 16384


@pytest.mark.parametrize(("name", "words"), [
    ("LimCwnd", ["TCP_BPF_SNDCWND_CLAMP", "CAP_BPF", "cwnd N lock", "SO_MAX_PACING_RATE"]),
    ("limssthresh", ["ssthresh N lock"]),
    ("LimMSS", ["TCP_MAXSEG", "before connect", "advmss"]),
    ("tcpEStatsTuneLimCwnd", ["TCP_BPF_SNDCWND_CLAMP"]),
])
def test_unsupported_names_say_what_would_work(child: Child, agent: Any, name: str,
                                               words: list[str]) -> None:
    with pytest.raises(tune.NotSupported) as exc:
        tune.write_var(row_of(agent, child.info["cli"]["inode"]), name, 1000)
    assert isinstance(exc.value, NotImplementedError)
    for word in words:
        assert word in str(exc.value)


def test_unknown_and_read_only_names(child: Child, agent: Any) -> None:
    row = row_of(agent, child.info["cli"]["inode"])
    with pytest.raises(mib.UnknownVariable, match="LimRwin"):
        tune.write_var(row, "LimRwn", 1)
    with pytest.raises(mib.UnknownVariable, match="notsent_lowat_bytes"):
        tune.write_var(row, "notsent_lowat", 1)
    with pytest.raises(ValueError, match="read-only"):
        tune.write_var(row, "CurCwnd", 1)


@pytest.mark.parametrize(("name", "value"), [
    ("LimRwin", -1), ("LimRwin", 2**31), ("max_pacing_rate_bytes_per_s", -1),
    ("LimRwin", 0), ("LimRwin", 4095),  # no lasting limit below the kernel's minimum buffer
    ("max_pacing_rate_bytes_per_s", 2**64), ("notsent_lowat_bytes", 2**32),
    ("cc_algorithm", "no-such-cc"),
])
def test_out_of_range_values(child: Child, agent: Any, name: str, value: Any) -> None:
    with pytest.raises(ValueError):
        tune.write_var(row_of(agent, child.info["cli"]["inode"]), name, value)


def test_wrong_types(child: Child, agent: Any) -> None:
    row = row_of(agent, child.info["cli"]["inode"])
    with pytest.raises(TypeError):
        tune.write_var(row, "LimRwin", 1.5)
    with pytest.raises(TypeError):
        tune.write_var(row, "cc_algorithm", 3)


def test_time_wait_flow_cannot_be_written(agent: Any) -> None:
    lst = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    port, server_port = cli.getsockname()[1], lst.getsockname()[1]
    cli.close()  # the side that closes first ends in TIME_WAIT
    srv.close()
    lst.close()
    rows = agent.list_conns(states="time-wait")
    # both ports: an earlier test's TIME-WAIT may have had the same ephemeral port
    tw = rows[(rows["local_port"] == port) & (rows["rem_port"] == server_port)
              & (rows["state"] == 11)]
    assert len(tw) == 1
    with pytest.raises(errors.FlowNotFound, match="TIME_WAIT") as exc:
        tune.write_var(tw[0], "LimRwin", 65536)
    assert "descriptor" in str(exc.value)
    with pytest.raises(errors.FlowNotFound, match="TIME_WAIT"):
        tune.find_socket_fd(0)


def test_duplicate_keeps_owner_blocking_and_is_closed(tcp_pair: Any) -> None:
    _, cli, _ = tcp_pair
    ino = os.fstat(cli.fileno()).st_ino
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(2.0)  # would make socket(fileno=) set O_NONBLOCK
    try:
        with tune.duplicated(ino) as dup:
            fd = dup.fileno()
            assert os.get_blocking(cli.fileno())
    finally:
        socket.setdefaulttimeout(old)
    with pytest.raises(OSError):
        os.fstat(fd)  # the duplicate is gone; the original is still open
    assert os.fstat(cli.fileno()).st_ino == ino


def test_duplicate_looks_again_when_the_holder_vanished(tcp_pair: Any, monkeypatch) -> None:
    # the holder found first exits before its descriptor is copied (a forked child
    # between fork and exec): the socket's other holder is found on a second look
    _, cli, _ = tcp_pair
    ino = os.fstat(cli.fileno()).st_ino
    gone = subprocess.Popen(["true"])
    gone.wait()
    real = tune.find_socket_fd
    answers = iter([(gone.pid, 3)])
    monkeypatch.setattr(tune, "find_socket_fd", lambda i: next(answers, None) or real(i))
    with tune.duplicated(ino) as dup:
        assert os.fstat(dup.fileno()).st_ino == ino
    answers = iter([(gone.pid, 3)] * 3)           # never found again: reported as gone
    with pytest.raises(errors.FlowNotFound, match="exited"):
        with tune.duplicated(ino):
            pass


def test_kill_aborts_the_flow(child: Child, agent: Any) -> None:
    row = row_of(agent, child.info["cli"]["inode"])
    with NetlinkSocket(4) as nl:
        stale = row.copy()
        stale["cid"] = int(row["cid"]) ^ 1  # same 4-tuple, another socket's cookie
        with pytest.raises(errors.FlowNotFound):
            tune.kill(nl, stale)
        tune.kill(nl, row)
        with pytest.raises(errors.FlowNotFound):
            tune.kill(nl, row)
    assert child.command("recv cli") == "ECONNABORTED"
    assert child.command("recv srv") == "ECONNRESET"
    assert row["cid"] not in agent.list_conns()["cid"]


# ------------------------------------------------------------------ unprivileged caller

UNPRIVILEGED = textwrap.dedent("""
    import json, os, socket, sys
    import web10g
    from web10g import tune
    from web10g._netlink import NetlinkSocket
    args = json.loads(sys.argv[1])
    def attempt(fn):
        try:
            fn()
            return "ok"
        except Exception as e:
            return f"{type(e).__name__}: {e}"
    agent = web10g.open("sock_diag")
    rows = agent.list_conns()
    root_row = rows[rows["inode"] == args["inode"]][0]
    out = {}
    with NetlinkSocket(4) as nl:
        out["kill"] = attempt(lambda: tune.kill(nl, root_row))
    out["getfd"] = attempt(lambda: os.close(tune._pidfd_getfd(args["pid"], args["fd"])))
    out["write_root"] = attempt(lambda: tune.write_var(root_row, "LimRwin", 50000))
    # Its own socket: reachable without privileges, restricted congestion control.
    lst = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(lst.getsockname())
    rows = agent.list_conns()
    own = rows[rows["inode"] == os.fstat(cli.fileno()).st_ino][0]
    out["own_lowat"] = attempt(lambda: tune.write_var(own, "notsent_lowat_bytes", 4096))
    out["own_allowed_cc"] = attempt(lambda: tune.write_var(own, "cc_algorithm", args["allowed"]))
    if args["restricted"]:
        out["own_restricted_cc"] = attempt(
            lambda: tune.write_var(own, "cc_algorithm", args["restricted"]))
    print(json.dumps(out))
""")


def _sysctl(name: str) -> list[str]:
    with open(f"/proc/sys/net/ipv4/{name}") as fh:
        return fh.read().split()


# Two kinds of unprivileged caller: another uid, and root without any capability (where
# the ptrace check fails because the target's capabilities exceed the caller's).
DROP = {
    "nobody": ["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"],
    "root-without-caps": ["--inh-caps=-all", "--bounding-set=-all"],
}


def _setpriv(who: str, *argv: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(["setpriv", *DROP[who], sys.executable, *argv], env=env,
                          capture_output=True, text=True, timeout=60, cwd="/")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")
@pytest.mark.parametrize("who", sorted(DROP))
def test_unprivileged_caller(child: Child, who: str) -> None:
    probe = _setpriv(who, "-c", "import numpy, web10g._netlink")
    if probe.returncode:
        pytest.skip(f"{who} cannot import numpy/web10g with this interpreter "
                    f"(add a readable numpy to PYTHONPATH): {probe.stderr.strip()[-120:]}")
    allowed = _sysctl("tcp_allowed_congestion_control")
    restricted = [c for c in _sysctl("tcp_available_congestion_control") if c not in allowed]
    args = {"pid": child.pid, "fd": child.info["cli"]["fd"], "inode": child.info["cli"]["inode"],
            "allowed": allowed[0], "restricted": restricted[0] if restricted else None}
    done = _setpriv(who, "-c", UNPRIVILEGED, json.dumps(args))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["kill"].startswith("MissingCapability") and "CAP_NET_ADMIN" in out["kill"]
    assert out["getfd"].startswith("MissingCapability") and "ptrace" in out["getfd"]
    assert "CAP_SYS_PTRACE" in out["getfd"]
    # /proc/PID/fd of root's process is hidden: reported as a permission problem too.
    assert out["write_root"].startswith("MissingCapability") and "ptrace" in out["write_root"]
    assert out["own_lowat"] == "ok"
    assert out["own_allowed_cc"] == "ok"
    if restricted:
        msg = out["own_restricted_cc"]
        assert msg.startswith("MissingCapability") and "CAP_NET_ADMIN" in msg
        assert "tcp_allowed_congestion_control" in msg
    # The child's connection survived the attempts.
    assert child.command("traffic 1000") == "ok"
