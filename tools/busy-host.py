#!/usr/bin/env python3
"""Make this machine look busy, to run the test suite "on a busy host".

Opens N idle loopback TCP connections in the current network namespace (2N established
sockets the kernel walks on every sock_diag dump, plus one listener) and starts processes
that spin on a core each, then holds them until killed (SIGTERM/SIGINT) or until
``--duration`` seconds have passed:

    python3 tools/busy-host.py --flows 3000 --duration 900 &
    .venv/bin/python -m pytest -q -x -p no:cacheprovider
    kill %1

Standard library only; needs no privileges unless the descriptor limit must be raised
past its hard limit (2 descriptors per flow).
"""
from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import socket
import sys
import time

PR_SET_PDEATHSIG = 1


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard == resource.RLIM_INFINITY or hard >= needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))  # needs root
    except (ValueError, OSError):
        sys.exit(f"busy-host: {needed} file descriptors needed but the hard limit is "
                 f"{hard}: use fewer --flows or raise it (ulimit -Hn, as root)")


def open_flows(n: int, host: str) -> tuple[socket.socket, list[socket.socket]]:
    """n established loopback connections to one listener: (listener, all 2n ends)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    lst = socket.socket(fam, socket.SOCK_STREAM)
    lst.bind((host, 0))
    lst.listen(min(n, 4096) or 1)
    addr = lst.getsockname()
    ends: list[socket.socket] = []
    batch = 256  # connect a batch (the backlog holds them), then accept it
    for first in range(0, n, batch):
        k = min(batch, n - first)
        for _ in range(k):
            c = socket.socket(fam, socket.SOCK_STREAM)
            c.connect(addr)
            ends.append(c)
        for _ in range(k):
            ends.append(lst.accept()[0])
    return lst, ends


def spin() -> None:
    """A child that keeps one core busy and dies with its parent."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=3000,
                    help="idle loopback TCP connections to hold (default 3000)")
    ap.add_argument("--spinners", type=int, default=1,
                    help="processes spinning on a core each (default 1)")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds to hold them (default: until killed)")
    ap.add_argument("--host", default="127.0.0.1",
                    help="loopback address to use (default 127.0.0.1; ::1 for IPv6)")
    args = ap.parse_args(argv)
    if args.flows < 0 or args.spinners < 0:
        ap.error("--flows and --spinners must not be negative")

    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    raise_fd_limit(2 * args.flows + 64)
    t0 = time.monotonic()
    lst, ends = open_flows(args.flows, args.host)
    spinners = []
    for _ in range(args.spinners):
        pid = os.fork()
        if pid == 0:
            spin()
            os._exit(0)
        spinners.append(pid)
    port = lst.getsockname()[1]
    print(f"busy-host: ready (pid {os.getpid()}): {args.flows} idle flows to "
          f"{args.host} port {port} (opened in {time.monotonic() - t0:.1f} s), "
          f"{len(spinners)} spinner(s) {spinners}; "
          + (f"for {args.duration:g} s" if args.duration else "until killed"),
          file=sys.stderr, flush=True)
    end = None if args.duration is None else time.monotonic() + args.duration
    try:
        while not stop and (end is None or time.monotonic() < end):
            time.sleep(0.2 if end is None else max(0.0, min(0.2, end - time.monotonic())))
    finally:
        for pid in spinners:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        for s in ends:
            s.close()
        lst.close()
        print("busy-host: done", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
