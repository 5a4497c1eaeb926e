"""Hold N established loopback TCP sockets (N/2 connected pairs) while a benchmark runs.

    with Pairs(100_000) as p:       # 50,000 pairs in holder processes
        print(p.sockets, p.setup_s)
        ...                         # the sockets exist in the kernel here
    # every holder has exited; the sockets are gone (reset, no TIME_WAIT)

The sockets live in child processes ("holders"), so the benchmark process keeps its own
file-descriptor table and memory small, and the opening work uses every CPU. Each holder:

* raises its RLIMIT_NOFILE (root may raise the hard limit up to /proc/sys/fs/nr_open);
* listens on its own 127.0.0.x:port listeners, at most ``PER_LISTENER`` connections
  each, so no (source, destination, port) triple runs out of the 28k ephemeral ports;
* connects in batches with non-blocking connect(), then accepts the batch;
* sets SO_LINGER {on, 0} on every socket, so that closing (by the holder's exit) sends
  RST and leaves no TIME_WAIT behind to disturb later runs;
* reports "ready" on stdout, then waits for EOF on stdin and exits. It also asks the
  kernel (PR_SET_PDEATHSIG) to kill it if the parent dies, so nothing is left behind
  even when the benchmark is killed.

Run standalone to try it: ``python3 benchmarks/_pairs.py 20000``.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import time

PER_LISTENER = 16_000          # connections per listener (ephemeral range is ~28k ports)
BATCH = 1_000                  # connects in flight before accepting them (backlog 4096)
READY_TIMEOUT = 300.0          # seconds a holder may take to open its share
FD_SLACK = 64                  # descriptors a holder needs besides its sockets
_LINGER0 = struct.pack("ii", 1, 0)
TRAFFIC = 1_000                # bytes each flow carries each way once connected


# ---- the holder (child process) ------------------------------------------------------

def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 1 << 20


def _can_raise_hard_limit() -> bool:
    """CAP_SYS_RESOURCE (24) in the effective set: the hard RLIMIT_NOFILE may grow."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 24 & 1)
    except (OSError, ValueError):
        pass
    return False


def max_fds_per_process() -> int:
    """How many descriptors one holder may open: the hard limit, or nr_open if the hard
    limit can be raised (root normally can; a container may drop CAP_SYS_RESOURCE)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return _nr_open()
    return max(hard, _nr_open()) if _can_raise_hard_limit() else hard


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, min(need, _nr_open())))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    new = need if hard == resource.RLIM_INFINITY else min(need, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        raise OSError(errno.EMFILE, f"cannot raise RLIMIT_NOFILE to {need} (hard limit "
                      f"{hard}; raising it needs CAP_SYS_RESOURCE)")


def _exchange(clients: list[socket.socket], servers: list[socket.socket], nbytes: int) -> None:
    """Each client sends ``nbytes``, each server reads them and answers as much: the
    flows have carried data both ways (RTT samples, byte and segment counters, delivery
    rate), as a busy server's flows have, instead of idling since the handshake."""
    req = b"q" * nbytes
    for c in clients:
        c.setblocking(True)
        c.sendall(req)
    for s in servers:
        got = s.recv(nbytes, socket.MSG_WAITALL)
        s.sendall(b"r" * len(got))
    for c in clients:
        c.recv(nbytes, socket.MSG_WAITALL)


def _hold(pairs: int, host_index: int, v6: bool, traffic: int = 0) -> None:
    """Open ``pairs`` connected pairs (each carrying ``traffic`` bytes each way),
    report, hold them until stdin closes."""
    _die_with_parent()
    t0 = time.perf_counter()
    nlisteners = max(1, math.ceil(pairs / PER_LISTENER))
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    held: list[socket.socket] = []
    listeners = []
    try:
        _raise_nofile(2 * pairs + nlisteners + FD_SLACK)
        for i in range(nlisteners):
            ls = socket.socket(fam, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
            # Several loopback addresses spread the 4-tuples further (127/8 is all local).
            host = "::1" if v6 else f"127.0.{host_index % 250}.{1 + i % 250}"
            ls.bind((host, 0))
            ls.listen(4096)
            listeners.append(ls)
        left = pairs
        li = 0
        per = [0] * nlisteners
        while left:
            while per[li] >= PER_LISTENER:
                li += 1
            ls = listeners[li]
            addr = ls.getsockname()[:2]
            n = min(BATCH, left, PER_LISTENER - per[li])
            pending = []
            for _ in range(n):
                c = socket.socket(fam, socket.SOCK_STREAM)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
                c.setblocking(False)
                rc = c.connect_ex(addr)
                if rc not in (0, errno.EINPROGRESS):
                    c.close()
                    raise OSError(rc, f"connect to {addr}: {os.strerror(rc)}")
                pending.append(c)
            for _ in range(n):
                s, _peer = ls.accept()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
                held.append(s)
            for c in pending:         # loopback handshakes are done once accepted
                err = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, f"connect to {addr}: {os.strerror(err)}")
                held.append(c)
            if traffic:
                _exchange(pending, held[-2 * n:-n], traffic)
            per[li] += n
            left -= n
        for ls in listeners:          # only established sockets stay
            ls.close()
        listeners = []
        print(json.dumps({"ready": len(held), "seconds": time.perf_counter() - t0}),
              flush=True)
    except Exception as exc:          # report, then exit: the parent raises
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return
    # Hold until the parent closes our stdin (or dies; PDEATHSIG covers a crash).
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass


# ---- the parent side -----------------------------------------------------------------

_holder_counter = 0


class PairsError(RuntimeError):
    pass


class Pairs:
    """A context manager holding ``sockets`` established loopback TCP sockets.

    ``sockets`` is rounded up to an even number (each pair is two sockets). ``procs``
    holder processes share the work (default: one per CPU, fewer for small N).
    ``v6`` uses ::1 instead of 127.0.x.y. ``setup_s`` is the wall time until every
    holder was ready; ``teardown_s`` is filled in on exit.
    """

    def __init__(self, sockets: int, *, procs: int | None = None, v6: bool = False,
                 traffic: int = TRAFFIC) -> None:
        self.pairs = (max(0, int(sockets)) + 1) // 2
        self.sockets = 2 * self.pairs
        cpus = os.cpu_count() or 1
        want = procs or min(cpus, max(1, self.pairs // 2_000))
        # Without CAP_SYS_RESOURCE a holder cannot go past the hard RLIMIT_NOFILE: use
        # as many holders as it takes.
        per_holder = max(1, (max_fds_per_process() - FD_SLACK - 8) // 2)
        want = max(want, math.ceil(self.pairs / per_holder))
        self.procs = max(1, min(want, self.pairs)) if self.pairs else 0
        self.v6 = v6
        self.traffic = max(0, int(traffic))
        self.setup_s = 0.0
        self.teardown_s = 0.0
        self._children: list[subprocess.Popen] = []

    def __enter__(self) -> Pairs:
        global _holder_counter
        t0 = time.perf_counter()
        try:
            shares = [self.pairs // self.procs + (i < self.pairs % self.procs)
                      for i in range(self.procs)]
            for share in shares:
                _holder_counter += 1
                cmd = [sys.executable, os.path.abspath(__file__), "--hold", str(share),
                       "--index", str(_holder_counter)]
                if self.v6:
                    cmd.append("--v6")
                if self.traffic:
                    cmd += ["--traffic", str(self.traffic)]
                self._children.append(subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True))
            self._wait_ready()
        except BaseException:
            self._teardown()
            raise
        self.setup_s = time.perf_counter() - t0
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        waiting = {c.stdout.fileno(): c for c in self._children if c.stdout}
        got = 0
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PairsError(f"holders not ready after {READY_TIMEOUT:.0f} s")
            ready, _, _ = select.select(list(waiting), [], [], left)
            for fd in ready:
                child = waiting.pop(fd)
                assert child.stdout is not None
                line = child.stdout.readline()
                if not line:
                    raise PairsError(f"holder {child.pid} exited (status {child.wait()}) "
                                     "before it was ready")
                msg = json.loads(line)
                if "error" in msg:
                    raise PairsError(f"holder {child.pid}: {msg['error']}")
                got += int(msg["ready"])
        if got != self.sockets:
            raise PairsError(f"holders opened {got} sockets, not {self.sockets}")

    def _teardown(self) -> None:
        t0 = time.perf_counter()
        for c in self._children:
            with contextlib.suppress(OSError):
                if c.stdin:
                    c.stdin.close()           # EOF: the holder exits, the kernel resets
        for c in self._children:
            try:
                c.wait(timeout=60)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
            if c.stdout:
                c.stdout.close()
        self._children = []
        self.teardown_s = time.perf_counter() - t0

    def __exit__(self, *exc: object) -> None:
        self._teardown()

    def __repr__(self) -> str:
        return f"<Pairs {self.sockets} sockets in {self.procs} holder(s)>"


def count_tcp_sockets(states: str = "established") -> int:
    """Established TCP sockets of this namespace, from /proc/net/tcp{,6} (a cross-check)."""
    code = {"established": "01"}[states]
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(path) as fh:
            next(fh, None)
            n += sum(1 for line in fh if line.split()[3] == code)
    return n


def main(argv: list[str]) -> int:
    if argv[:1] == ["--hold"]:
        v6 = "--v6" in argv
        index = int(argv[argv.index("--index") + 1]) if "--index" in argv else 0
        traffic = int(argv[argv.index("--traffic") + 1]) if "--traffic" in argv else 0
        _hold(int(argv[1]), index, v6, traffic)
        return 0
    n = int(argv[0]) if argv else 20_000
    with Pairs(n, v6="--v6" in argv) as p:
        print(f"{p!r}: setup {p.setup_s:.2f} s; established now: {count_tcp_sockets()}")
    print(f"teardown {p.teardown_s:.2f} s; established after: {count_tcp_sockets()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
