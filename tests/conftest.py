"""Shared fixtures: real loopback TCP connections and a netlink peer on NETLINK_USERSOCK."""
from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points

import pytest

# web10g's own pytest plugin is an entry point once the package is installed; load it
# here only when running from a tree that is not installed.
_INSTALLED = any(ep.value == "web10g.pytest_plugin"
                 for ep in entry_points(group="pytest11"))
pytest_plugins = ["fakekernel.plugin"] + ([] if _INSTALLED else ["web10g.pytest_plugin"])

NETLINK_USERSOCK = 2


@pytest.fixture
def netns_name() -> Iterator[str]:
    """A fresh named network namespace with lo up (tests/netns_util.py), deleted after."""
    from netns_util import named_netns

    with named_netns() as name:
        yield name


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    """An established loopback connection: (listener, client, accepted server side)."""
    lst = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(lst.getsockname())
    srv, _ = lst.accept()
    try:
        yield lst, cli, srv
    finally:
        for s in (cli, srv, lst):
            s.close()


class NetlinkPeer:
    """A user-space netlink endpoint that answers each request with scripted datagrams.

    Used only to make the receive loop meet protocol situations the real kernel cannot be
    made to produce on demand (NLM_F_DUMP_INTR, overruns, truncated or stale replies).
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_USERSOCK)
        self.sock.bind((0, 0))
        self.sock.settimeout(5)
        self.portid = self.sock.getsockname()[0]
        self.requests: list[bytes] = []
        self._thread: threading.Thread | None = None

    def serve(self, reply: Callable[[int, int], list[bytes]], count: int = 1) -> None:
        """Answer the next ``count`` requests: reply(seq, client_port) gives datagrams."""

        def run() -> None:
            for _ in range(count):
                data, (port, _groups) = self.sock.recvfrom(65536)
                self.requests.append(data)
                seq = struct.unpack_from("=I", data, 8)[0]
                for dgram in reply(seq, port):
                    self.sock.sendto(dgram, (port, 0))

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        self.join()
        self.sock.close()


@pytest.fixture
def nl_peer() -> Iterator[NetlinkPeer]:
    peer = NetlinkPeer()
    try:
        yield peer
    finally:
        peer.close()


def nlmsg(msg_type: int, flags: int, seq: int, pid: int, payload: bytes) -> bytes:
    """One netlink message, padded to 4 bytes."""
    n = 16 + len(payload)
    return struct.pack("=IHHII", n, msg_type, flags, seq, pid) + payload + b"\0" * (-n % 4)


def nlattr(atype: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, atype) + payload + b"\0" * (-n % 4)


def fuzz_cases(rng, seeds: list[bytes], *, random_cases: int, mutated: int,
               max_random: int, max_edits: int, max_cut: int) -> list[bytes]:
    """Inputs for the decoders' fuzz tests: random byte strings, then seeds with a few
    random edits each (a byte changed, a run cut out, bytes inserted, a u16 length
    field overwritten)."""
    cases = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, max_random)))
             for _ in range(random_cases)]
    for _ in range(mutated):
        d = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, max_edits)):
            i = rng.randrange(len(d))
            how = rng.random()
            if how < 0.5:
                d[i] = rng.getrandbits(8)
            elif how < 0.7:
                del d[i:i + rng.randrange(1, max_cut)]
            elif how < 0.85:
                d[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 16)))
            else:
                struct.pack_into("=H", d, min(i, len(d) - 2) & ~1, rng.getrandbits(16))
        cases.append(bytes(d))
    return cases
