"""Network namespaces against the real kernel: naming them, entering them, and sock_diag
sockets that see exactly the namespace they were opened in."""
from __future__ import annotations

import contextlib
import errno
import os
import pathlib
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from netns_util import named_netns

from web10g import errors, netns

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
TCP_LISTEN = 10
ROOT = pathlib.Path(__file__).resolve().parents[1]

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="creating and entering namespaces needs root and iproute2")


def dump(sock) -> dict[int, tuple[int, int]]:
    """All IPv4 TCP sockets the diag socket sees: inode -> (state, local port)."""
    req = struct.pack("=BBBxI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0xFFF) + bytes(48)
    out = {}
    for m in sock.request(SOCK_DIAG_BY_FAMILY, 0, req, dump=True):
        state = m[17]
        (sport,) = struct.unpack_from("!H", m, 20)
        (ino,) = struct.unpack_from("=I", m, 84)
        out[ino] = (state, sport)
    return out


def ino(s: socket.socket) -> int:
    return os.fstat(s.fileno()).st_ino


def thread_ns() -> str:
    return os.readlink("/proc/thread-self/ns/net")


def unused_pid() -> int:
    """A pid no process can have: above the kernel's pid_max."""
    with open("/proc/sys/kernel/pid_max") as f:
        return int(f.read()) + 1


@pytest.fixture
def make_ns() -> Iterator[Callable[[], str]]:
    """Factory for fresh named namespaces with lo up; all are deleted afterwards."""
    with contextlib.ExitStack() as stack:
        yield lambda: stack.enter_context(named_netns())


@pytest.fixture
def ns(make_ns: Callable[[], str]) -> str:
    return make_ns()


@pytest.fixture
def socks() -> Iterator[list[socket.socket]]:
    """Python sockets made by a test, closed at the end."""
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def connected_listener(held: list[socket.socket], port: int = 0) -> socket.socket:
    """A listener on 127.0.0.1:port with one connection to itself, in the current netns."""
    lst = socket.create_server(("127.0.0.1", port))
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    held += [lst, cli, srv]
    return lst


# --- resolve ----------------------------------------------------------------------------

def test_none_means_the_current_namespace_and_changes_nothing():
    before = thread_ns()
    assert netns.resolve(None) is None
    with netns.entered(None):
        assert thread_ns() == before
    assert netns.inode() == os.stat("/proc/self/ns/net").st_ino
    assert f"net:[{netns.inode()}]" == before
    with netns.open_socket(NETLINK_SOCK_DIAG) as sock:
        assert isinstance(dump(sock), dict)


def test_resolve_forms(tmp_path):
    assert netns.resolve(os.getpid()) == f"/proc/{os.getpid()}/ns/net"
    assert netns.resolve("/proc/self/ns/net") == "/proc/self/ns/net"
    assert netns.resolve(pathlib.Path("/proc/self/ns/net")) == "/proc/self/ns/net"
    # Relative paths come back absolute, so the result does not depend on a later chdir.
    f = tmp_path / "nsfile"
    f.touch()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert netns.resolve("./nsfile") == str(f)
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("bad,exc", [(True, TypeError), (1.5, TypeError), (0, ValueError),
                                     (-3, ValueError), ("", ValueError), ("..", ValueError)])
def test_resolve_rejects_what_cannot_name_a_namespace(bad, exc):
    with pytest.raises(exc):
        netns.resolve(bad)


def test_missing_name_says_how_to_list_and_create():
    name = f"w10g-none-{secrets.token_hex(4)}"
    for call in (netns.resolve, netns.inode, lambda n: netns.entered(n).__enter__(),
                 lambda n: netns.open_socket(NETLINK_SOCK_DIAG, n)):
        with pytest.raises(FileNotFoundError) as ei:
            call(name)
        msg = str(ei.value)
        assert ei.value.errno == errno.ENOENT
        assert repr(name) in msg and "/run/netns" in msg
        assert "ip netns list" in msg and "ip netns add" in msg


def test_digit_name_hints_at_passing_an_int():
    with pytest.raises(FileNotFoundError, match="pass the pid as an int"):
        netns.resolve("98765")


def test_missing_path():
    path = f"/nonexistent/w10g-{secrets.token_hex(4)}/ns"
    with pytest.raises(FileNotFoundError) as ei:
        netns.entered(path).__enter__()
    assert path in str(ei.value)
    assert "ip netns list" in str(ei.value)


def test_missing_pid():
    pid = unused_pid()
    for call in (netns.resolve, netns.inode, lambda p: netns.entered(p).__enter__(),
                 lambda p: netns.open_socket(NETLINK_SOCK_DIAG, p)):
        with pytest.raises(ProcessLookupError) as ei:
            call(pid)
        assert ei.value.errno == errno.ESRCH
        assert f"pid {pid}" in str(ei.value)


def test_own_namespace_can_be_entered_without_switching():
    # Entering the namespace one is already in needs no CAP_SYS_ADMIN: it is skipped.
    before = thread_ns()
    with netns.entered(os.getpid()):
        assert thread_ns() == before
    with netns.entered("/proc/thread-self/ns/net"):
        assert thread_ns() == before


def test_not_a_network_namespace_is_named(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")
    for target in ("/proc/self/ns/uts", str(plain)):
        before = thread_ns()
        with pytest.raises(OSError) as ei:
            with netns.entered(target):
                pytest.fail("entered something that is not a network namespace")
        assert ei.value.errno == errno.EINVAL
        assert target in str(ei.value) and "not a network namespace" in str(ei.value)
        assert thread_ns() == before


# --- real namespaces --------------------------------------------------------------------

@needs_root
def test_names_lists_the_namespace(ns):
    assert ns in netns.names()
    assert netns.resolve(ns) in (f"/run/netns/{ns}", f"/var/run/netns/{ns}")


@needs_root
def test_diag_socket_sees_only_its_own_namespace(ns, socks):
    outside = connected_listener(socks)
    before = thread_ns()
    with netns.entered(ns):
        assert thread_ns() == f"net:[{netns.inode(ns)}]" != before
        inside = connected_listener(socks)   # sockets keep the namespace they were made in
    assert thread_ns() == before

    with netns.open_socket(NETLINK_SOCK_DIAG, ns) as in_sock, \
            netns.open_socket(NETLINK_SOCK_DIAG) as out_sock:
        assert thread_ns() == before
        seen_in, seen_out = dump(in_sock), dump(out_sock)

    assert seen_in[ino(inside)] == (TCP_LISTEN, inside.getsockname()[1])
    assert ino(outside) not in seen_in
    # The namespace holds exactly what was made in it: listener, client, accepted side.
    assert set(seen_in) == {ino(s) for s in socks[3:]}
    assert seen_out[ino(outside)] == (TCP_LISTEN, outside.getsockname()[1])
    assert not {ino(s) for s in socks[3:]} & set(seen_out)


@needs_root
def test_two_namespaces_at_once(make_ns, socks):
    a, b = make_ns(), make_ns()
    with netns.entered(a):
        la = connected_listener(socks)
    port = la.getsockname()[1]
    with netns.entered(b):
        # The same address and port again: only possible in a separate namespace.
        lb = connected_listener(socks, port)
    sa = netns.open_socket(NETLINK_SOCK_DIAG, a)
    sb = netns.open_socket(NETLINK_SOCK_DIAG, b, timeout=5.0)
    try:
        for _ in range(2):  # interleaved use of both, each stays in its namespace
            da, db = dump(sa), dump(sb)
            assert da[ino(la)] == (TCP_LISTEN, port) and ino(lb) not in da
            assert db[ino(lb)] == (TCP_LISTEN, port) and ino(la) not in db
    finally:
        sa.close()
        sb.close()
    assert netns.inode(a) != netns.inode(b) != netns.inode()


CHILD = """
import os, socket, sys
lst = socket.create_server(("127.0.0.1", 0))
cli = socket.create_connection(lst.getsockname())
srv, _ = lst.accept()
print(lst.getsockname()[1], os.fstat(lst.fileno()).st_ino, flush=True)
sys.stdin.read()  # hold the sockets until the test closes our stdin
"""


@needs_root
def test_by_pid_name_and_path_of_an_ip_netns_exec_child(ns):
    child = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", CHILD],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port, lino = map(int, child.stdout.readline().split())
        assert netns.inode(child.pid) == netns.inode(ns) != netns.inode()
        for spec in (child.pid, ns, f"/run/netns/{ns}", pathlib.Path(f"/run/netns/{ns}"),
                     f"/proc/{child.pid}/ns/net"):
            with netns.open_socket(NETLINK_SOCK_DIAG, spec) as sock:
                assert dump(sock)[lino] == (TCP_LISTEN, port), spec
        with netns.open_socket(NETLINK_SOCK_DIAG) as sock:
            assert lino not in dump(sock)
    finally:
        child.stdin.close()
        child.wait(10)


@needs_root
def test_thread_returns_home_even_when_the_body_raises(ns):
    before = thread_ns()
    with pytest.raises(ZeroDivisionError):
        with netns.entered(ns):
            assert thread_ns() != before
            1 / 0  # noqa: B018
    assert thread_ns() == before


@needs_root
def test_nested_blocks_return_to_the_enclosing_namespace(make_ns):
    a, b = make_ns(), make_ns()
    home = thread_ns()
    with netns.entered(a):
        assert netns.inode() == netns.inode(a)
        with netns.entered(b):
            assert netns.inode() == netns.inode(b)
            with netns.entered(b):   # re-entering where one is: a no-op
                assert netns.inode() == netns.inode(b)
        assert netns.inode() == netns.inode(a)
        with pytest.raises(KeyError):
            with netns.entered(b):
                raise KeyError("x")
        assert netns.inode() == netns.inode(a)
    assert thread_ns() == home


@needs_root
def test_only_the_calling_thread_switches(ns):
    home = thread_ns()
    inside, entered_evt, release = [], threading.Event(), threading.Event()

    def worker() -> None:
        with netns.entered(ns):
            inside.append(thread_ns())
            entered_evt.set()
            release.wait(5)
        inside.append(thread_ns())

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert entered_evt.wait(5)
        # While the worker is inside, this thread (and the process leader) is not.
        assert thread_ns() == home
        assert os.readlink("/proc/self/ns/net") == home
        seen = []
        other = threading.Thread(target=lambda: seen.append(thread_ns()))
        other.start()
        other.join()
        assert seen == [home]
    finally:
        release.set()
        t.join(5)
    assert inside == [f"net:[{netns.inode(ns)}]", home]


@needs_root
def test_missing_capability_names_the_namespace(ns):
    # The same process without CAP_SYS_ADMIN (dropped from the bounding set, so even
    # root's exec does not get it back).
    code = (
        "import os, sys\n"
        "from web10g import errors, netns\n"
        "with netns.entered(os.getpid()):\n"     # own namespace: still fine
        "    pass\n"
        "try:\n"
        f"    netns.open_socket(4, {ns!r})\n"
        "except errors.MissingCapability as e:\n"
        "    assert isinstance(e, PermissionError)\n"
        "    print(e.errno, e)\n"
        "    print(os.readlink('/proc/thread-self/ns/net'))\n"
    )
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to drop CAP_SYS_ADMIN")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(["setpriv", "--bounding-set", "-sys_admin", sys.executable, "-c", code],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.startswith(f"{errno.EPERM} ")
    assert repr(ns) in first and "CAP_SYS_ADMIN" in first
    assert second == thread_ns()  # never left home


def test_missing_capability_is_the_errors_class():
    assert issubclass(errors.MissingCapability, PermissionError)


# --- the command line (--netns) -----------------------------------------------------------

def cli_as_nobody(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("WEB10G_ESTATS_PEER", None)
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           sys.executable, "-m", "web10g", *argv], capture_output=True,
                          text=True, env=env, cwd="/", timeout=60)


@needs_root
def test_cli_netns_takes_a_pid_as_well_as_a_name_or_path(ns, capsys):
    import json

    from web10g.cli import main

    child = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", CHILD],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port, _ = map(int, child.stdout.readline().split())
        for spec in (str(child.pid), ns, f"/run/netns/{ns}", f"/proc/{child.pid}/ns/net"):
            code = main(["listconns", "--netns", spec, "--states", "all", "--json"])
            out, err = capsys.readouterr()
            assert code == 0, err
            rows = [json.loads(line) for line in out.splitlines()]
            # the child's listener and its connection's two ends, nothing else
            assert sorted(r["local_port"] for r in rows if r["rem_port"] == 0) == [port], spec
            assert len(rows) == 3, spec
    finally:
        child.stdin.close()
        child.wait(10)


def test_cli_netns_number_is_a_pid_unless_a_namespace_has_that_name(tmp_path, monkeypatch):
    from web10g.cli._common import netns_arg

    assert netns_arg(str(os.getpid())) == os.getpid()
    assert netns_arg("blue") == "blue" and netns_arg("/run/netns/7") == "/run/netns/7"
    (tmp_path / "4242").touch()
    monkeypatch.setattr(netns, "RUN_DIRS", (str(tmp_path),))
    assert netns_arg("4242") == "4242"          # 'ip netns add 4242' made a name
    assert netns_arg("4243") == 4243


@needs_root
def test_cli_netns_not_permitted_says_permission_denied(ns):
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to run as another user")
    mine = os.getpid()          # a root process: nobody may not ptrace it
    for spec in (f"/proc/{mine}/ns/net", str(mine)):
        res = cli_as_nobody("listconns", "--netns", spec)
        assert res.returncode == 1
        assert "permission denied" in res.stderr.lower(), res.stderr
        assert "does not exist" not in res.stderr and "no network namespace" not in res.stderr
        assert "CAP_SYS_PTRACE" in res.stderr and "Traceback" not in res.stderr
    res = cli_as_nobody("listconns", "--netns", ns)     # exists, but setns is refused
    assert res.returncode == 1
    assert "permission denied" in res.stderr.lower() and "CAP_SYS_ADMIN" in res.stderr
    assert repr(ns) in res.stderr
    res = cli_as_nobody("listconns", "--netns", f"w10g-none-{secrets.token_hex(4)}")
    assert res.returncode == 1 and "no network namespace named" in res.stderr
