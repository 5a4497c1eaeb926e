"""``make demo``: sample every TCP flow of this machine a few times a second and show them.

If the machine has few established flows, a handful of loopback flows with traffic are
opened first, so there is something to watch. Runs about three seconds, then exits 0.
"""
from __future__ import annotations

import socket
import sys
import threading
import time

import numpy as np

import web10g
from web10g import genl, mib
from web10g.rows import endpoints

VARS = ["HCThruOctetsAcked", "HCThruOctetsReceived", "rtt_us", "CurCwnd", "SegsRetrans",
        "cc_algorithm"]
INTERVAL = 0.25
DURATION = 3.0


class Traffic:
    """A few loopback flows pushing data at different rates while the demo runs."""

    def __init__(self, flows: int = 4) -> None:
        self.stop = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.threads: list[threading.Thread] = []
        self.socks: list[socket.socket] = []
        for i in range(flows):
            cli = socket.create_connection(self.server.getsockname())
            srv, _ = self.server.accept()
            self.socks += [cli, srv]
            chunk = 16384 * (4 ** i)                # 64 KiB/s ... 4 MiB/s-ish per flow
            self.threads.append(threading.Thread(target=self._send, args=(cli, chunk),
                                                 daemon=True))
            self.threads.append(threading.Thread(target=self._drain, args=(srv,), daemon=True))
        for t in self.threads:
            t.start()

    def _send(self, sock: socket.socket, chunk: int) -> None:
        data = b"w" * chunk
        while not self.stop.is_set():
            try:
                sock.sendall(data)
            except OSError:
                return
            time.sleep(0.05)

    def _drain(self, sock: socket.socket) -> None:
        sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                if not sock.recv(1 << 20):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(1)
        for s in self.socks + [self.server]:
            s.close()


def _rates(prev: np.ndarray, cur: np.ndarray, dt: float) -> np.ndarray:
    """Bytes/s acknowledged per flow of ``cur`` since ``prev`` (aligned by cid)."""
    rate = np.zeros(len(cur))
    if not len(prev) or dt <= 0:
        return rate
    order = np.argsort(prev["cid"])
    idx = np.searchsorted(prev["cid"], cur["cid"], sorter=order)
    idx = np.minimum(idx, len(prev) - 1)
    hit = prev["cid"][order[idx]] == cur["cid"]
    before = prev["HCThruOctetsAcked"][order[idx]]
    delta = cur["HCThruOctetsAcked"].astype(np.int64) - before.astype(np.int64)
    rate[hit] = np.maximum(delta[hit], 0) / dt
    return rate


def _human(bps: float) -> str:
    for unit in ("B/s", "KB/s", "MB/s", "GB/s"):
        if bps < 1000:
            return f"{bps:6.1f} {unit}"
        bps /= 1000
    return f"{bps:6.1f} TB/s"


def _table(rows: np.ndarray, rate: np.ndarray, sample: int, elapsed_us: float) -> str:
    order = np.lexsort((-rows["HCThruOctetsAcked"].astype(np.int64), -rate))[:12]
    local, remote = endpoints(rows[order])
    lines = [f"sample {sample}: {len(rows)} flows read in {elapsed_us:.0f} us",
             f"{'local':<24} {'remote':<24} {'state':<12} {'throughput':>12} "
             f"{'rtt ms':>8} {'cwnd':>9} {'retr':>5} cc"]
    for i, r in enumerate(rows[order]):
        lines.append(
            f"{local[i]:<24} {remote[i]:<24} {mib.STATE_NAMES.get(int(r['state']), '?'):<12} "
            f"{_human(rate[order[i]]):>12} {r['rtt_us'] / 1000:8.3f} {r['CurCwnd']:9d} "
            f"{r['SegsRetrans']:5d} {r['cc_algorithm'].decode(errors='replace')}")
    return "\n".join(lines)


def main() -> int:
    estats = genl.family_exists("tcp_estats")
    with web10g.open("sock_diag") as agent:
        print(f"web10g {web10g.__version__}: backend sock_diag "
              f"(Web10G tcp_estats module {'loaded' if estats else 'not loaded'}), "
              f"{len(agent.variables())} variables per flow available\n")
        established = agent.read_all(["SegsOut"], states="established")
        traffic = Traffic() if len(established) < 8 else None
        if traffic:
            print(f"only {len(established)} established flows here: opened 4 loopback "
                  "flows with traffic to watch\n")
        try:
            prev = agent.read_all(VARS).copy()
            t_prev = time.monotonic()
            deadline = t_prev + DURATION
            sample = 0
            tty = sys.stdout.isatty()
            while True:
                time.sleep(max(0.0, t_prev + INTERVAL - time.monotonic()))
                t0 = time.perf_counter()
                rows = agent.read_all(VARS)
                elapsed = (time.perf_counter() - t0) * 1e6
                now = time.monotonic()
                sample += 1
                text = _table(rows, _rates(prev, rows, now - t_prev), sample, elapsed)
                if tty:
                    sys.stdout.write("\x1b[2J\x1b[H")
                print(text + "\n", flush=True)
                prev, t_prev = rows.copy(), now
                if now >= deadline:
                    break
        finally:
            if traffic:
                traffic.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
