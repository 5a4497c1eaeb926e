"""Soak: memory and file descriptors over many polls, and the sampler plus `web10g serve`
while flows open and close.

Part 1 (polls): N established loopback sockets (benchmarks/_pairs.py holders) and
``--polls`` calls of ``read_all()`` (every variable, a new array the caller drops, as a
polling loop does) on one sock_diag agent; RSS and the fd count of this process at
evenly spaced checkpoints. Growth is measured from the end of the warm-up (the first
10% of the polls: pools and caches fill) to the end. Targets: RSS flat to within 1 MiB,
no fd growth.

Part 2 (churn): a child process opens and closes ``--rate`` flows per second (connect,
accept, 1 KB each way, both ends closed with SO_LINGER 0, each socket's cookie noted)
on its own listening port for ``--seconds`` (the server end aborts first). Meanwhile:
* this process runs a Sampler (``--interval``) on a sock_diag agent with the closed-flow
  API on (``agent.watch_closed()``; ``agent.closed()`` drained every 0.2 s), filtered to
  the churn port: every closed socket's cookie must come back in a final record;
* ``web10g serve`` runs as a subprocess on the same filter (Parquet dataset in a temporary
  directory, Prometheus endpoint scraped at the end): its closed-flow and missed-deadline
  counters;
* RSS and fds of this process and of serve every few seconds: growth after warm-up.
Targets: every closed flow's final record delivered (sampler process and serve), RSS
growth within 1 MiB (this process) and 5 MiB (serve, whose Parquet buffers fill in
windows), no fd growth; missed deadlines are counted and printed.

    python3 benchmarks/bench_soak.py            # 1,000,000 polls of 10,000 sockets, 10 min churn
    python3 benchmarks/bench_soak.py --polls 20000 --sockets 10000 --seconds 120
    python3 benchmarks/bench_soak.py --skip-polls | --skip-churn
    python3 benchmarks/bench_soak.py --own-netns ...     # only this benchmark's sockets

Run as root (10,000 sockets need RLIMIT_NOFILE raised; _pairs.py does that in its holders).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

from _common import Results, add_results_args, machine_lines

import web10g

SO_COOKIE = 57
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_kib(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE // 1024
    except (OSError, ValueError, IndexError):
        return -1


def fd_count(pid: int | str = "self") -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def mib(kib: float) -> str:
    return f"{kib / 1024:.2f}"


# ---- part 1: polls ---------------------------------------------------------------------

def soak_polls(res: Results, polls: int, sockets: int, vars_: list[str] | None) -> None:
    from _pairs import Pairs

    checkpoints = sorted({int(polls * k / 50) for k in range(51)} | {polls})
    warm = max(1, polls // 10)
    series: list[tuple[int, float, int, int, int]] = []
    with Pairs(sockets) as pairs, web10g.open("sock_diag") as agent:
        rows = agent.read_all(vars_, states="all")
        what = "every variable" if vars_ is None else vars_
        print(f"\npart 1: {polls:,} polls of {len(rows):,} sockets ({pairs.sockets:,} held; "
              f"setup {pairs.setup_s:.1f} s), read_all({what})")
        del rows
        t0 = time.monotonic()
        nrows = 0
        most = 0                      # the most rows of one poll since the last checkpoint
        ci = 0
        for i in range(polls + 1):
            if i == checkpoints[ci]:
                series.append((i, time.monotonic() - t0, rss_kib(), fd_count(), most))
                most = 0
                ci += 1
                if ci % 10 == 0:
                    print(f"  poll {i:,}: RSS {mib(series[-1][2])} MiB, {series[-1][3]} fds, "
                          f"{time.monotonic() - t0:.0f} s", flush=True)
                if ci >= len(checkpoints):
                    break
            rows = agent.read_all(vars_, states="all")
            nrows = len(rows)
            most = max(most, nrows)
            del rows
        elapsed = time.monotonic() - t0
    base = next(s for s in series if s[0] >= warm)
    end = series[-1]
    shown = [s for k, s in enumerate(series) if k % 5 == 0 or s is end]
    res.table("polls", f"RSS and fds over {polls:,} polls of {nrows:,} sockets",
              ["poll", "elapsed s", "RSS MiB", "fds", "RSS vs warm MiB", "most rows"],
              [(f"{p:,}", f"{t:.0f}", mib(r), f, f"{(r - base[2]) / 1024:+.2f}", f"{m:,}")
               for p, t, r, f, m in shown],
              notes=[f"{polls / elapsed:,.0f} polls/s; warm-up = first {warm:,} polls",
                     "read_all(states='all'): a new array per poll, dropped by the caller; "
                     "'most rows': the largest dump since the previous line (every socket "
                     "of the machine: other work adds some)"],
              what={"polls": polls, "sockets": nrows, "vars": vars_ or "all",
                    "states": "all"}, readme=True)
    res.figure("polls_series", series)
    growth = (end[2] - base[2]) / 1024
    res.target("poll_rss", f"RSS growth over {polls:,} polls after warm-up", growth, 1.0,
               "<=", unit=" MiB", what={"polls": polls, "sockets": nrows})
    res.target("poll_fds", f"fd growth over {polls:,} polls", end[3] - series[0][3], 0, "<=",
               unit=" fds", what={"polls": polls, "sockets": nrows})


# ---- part 2: churn ---------------------------------------------------------------------

def churn_child(rate: float, seconds: float, out: str) -> None:
    """Open and close ``rate`` flows a second on a listener of our own; write cookies."""
    lst = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = lst.getsockname()[1]
    print(port, flush=True)
    sys.stdin.readline()                      # the parent's go
    linger = struct.pack("ii", 1, 0)
    cookies = []
    payload = b"x" * 1000
    t0 = time.monotonic()
    n = 0
    late = 0
    while True:
        due = t0 + n / rate
        now = time.monotonic()
        if now - t0 >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        elif now - due > 0.1:
            late += 1
        c = socket.create_connection(("127.0.0.1", port))
        s, _ = lst.accept()
        c.sendall(payload)
        s.recv(len(payload), socket.MSG_WAITALL)
        s.sendall(payload)
        c.recv(len(payload), socket.MSG_WAITALL)
        # The server end aborts first (RST, no TIME-WAIT); the client end, reset, is then
        # closed in CLOSE. (The end that aborts an established flow is reported by the
        # kernel without its remote address and port: had the client aborted, its final
        # record could not be matched by a port filter; see the report.)
        for sk in (s, c):
            cookies.append(struct.unpack("=Q", sk.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0])
            sk.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            sk.close()
        n += 1
    elapsed = time.monotonic() - t0
    with open(out, "wb") as fh:
        fh.write(struct.pack(f"={len(cookies)}Q", *cookies))
    print(f"{n} {elapsed:.3f} {late}", flush=True)
    lst.close()


def scrape(port: int) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("web10g_collector_") and " " in line:
                    k, v = line.rsplit(" ", 1)
                    k = k.split("{", 1)[0]
                    try:
                        out[k] = out.get(k, 0.0) + float(v)
                    except ValueError:
                        pass
    except OSError as exc:
        out["error"] = str(exc)  # type: ignore[assignment]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def soak_churn(res: Results, seconds: float, rate: float, interval: float,
               serve_interval: float) -> None:
    tmp = tempfile.mkdtemp(prefix="w10g-soak-")
    cookie_file = os.path.join(tmp, "cookies.bin")
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--churn-child",
                              str(rate), str(seconds), cookie_file],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    port = int(child.stdout.readline())
    flt = f"sport = :{port} or dport = :{port}"
    prom = free_port()
    serve_cmd = [sys.executable, "-m", "web10g", "serve", "--backend", "sock_diag",
                 "--interval", str(serve_interval), "--filter", flt, "--states", "all",
                 "--parquet", os.path.join(tmp, "dataset"), "--rotate-seconds", "60",
                 "--prometheus", f"127.0.0.1:{prom}",
                 "--log-format", "json", "--log-level", "warning"]
    serve_log = open(os.path.join(tmp, "serve.log"), "w")
    serve = subprocess.Popen(serve_cmd, stdout=serve_log, stderr=subprocess.STDOUT)
    time.sleep(2.0)                           # serve's start-up (imports, probe)
    print(f"\npart 2: {rate:g} flows/s for {seconds:g} s on port {port}; sampler every "
          f"{interval:g} s here, `web10g serve` every {serve_interval:g} s (pid {serve.pid})")
    # the cids received go to a file: a set of them would grow this process's RSS
    cid_log = open(os.path.join(tmp, "closed-cids.bin"), "wb")
    closed_rows = 0
    overrun_warnings = 0
    samples = 0
    series: list[tuple[float, int, int, int, int]] = []
    import warnings

    with web10g.open("sock_diag") as agent:
        agent.watch_closed()
        sampler = agent.sampler(["SegsOut", "HCThruOctetsAcked", "CurCwnd"], interval=interval,
                                filter=flt, states="all", capacity=64)
        sampler.start()
        child.stdin.write("go\n")
        child.stdin.flush()
        t0 = time.monotonic()
        next_mark = 0.0

        def drain() -> None:
            nonlocal closed_rows, overrun_warnings, samples
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                rows = agent.closed(["SegsOut"])
            overrun_warnings += sum(1 for x in w if issubclass(x.category, RuntimeWarning))
            closed_rows += len(rows)
            cid_log.write(rows["cid"].astype("=u8").tobytes())
            samples += len(sampler.read())

        while child.poll() is None:
            drain()
            el = time.monotonic() - t0
            if el >= next_mark:
                series.append((el, rss_kib(), fd_count(), rss_kib(serve.pid), fd_count(serve.pid)))
                next_mark += max(1.0, seconds / 60)
            time.sleep(0.2)
        time.sleep(max(1.0, 2 * serve_interval))
        drain()
        series.append((time.monotonic() - t0, rss_kib(), fd_count(), rss_kib(serve.pid),
                       fd_count(serve.pid)))
        sampler.stop()
        st = sampler.stats
    cid_log.close()
    with open(os.path.join(tmp, "closed-cids.bin"), "rb") as fh:
        data = fh.read()
    closed_cids = set(struct.unpack(f"={len(data) // 8}Q", data))
    out = child.stdout.read().split()
    flows, churn_s, churn_late = int(out[0]), float(out[1]), int(out[2])
    with open(cookie_file, "rb") as fh:
        raw = fh.read()
    cookies = set(struct.unpack(f"={len(raw) // 8}Q", raw))
    metrics = scrape(prom)
    serve.send_signal(signal.SIGTERM)
    try:
        serve_rc = serve.wait(60)
    except subprocess.TimeoutExpired:
        serve.kill()
        serve_rc = -9
    serve_log.close()

    delivered = len(cookies & closed_cids)
    missing = len(cookies) - delivered
    warm_t = seconds * 0.1
    base = next((s for s in series if s[0] >= warm_t), series[0])
    end = series[-1]
    shown = [s for k, s in enumerate(series) if k % max(1, len(series) // 10) == 0 or s is end]
    res.table("churn_memory", f"RSS and fds while {rate:g} flows/s open and close "
              f"({seconds:g} s)",
              ["elapsed s", "sampler RSS MiB", "fds", "serve RSS MiB", "serve fds"],
              [(f"{t:.0f}", mib(r), f, mib(sr), sf) for t, r, f, sr, sf in shown],
              notes=[f"warm-up: the first {warm_t:.0f} s",
                     f"achieved {flows / churn_s:.0f} flows/s ({flows:,} flows, "
                     f"{len(cookies):,} sockets closed; {churn_late} opens > 100 ms late)"],
              what={"rate": rate, "seconds": seconds, "interval": interval,
                    "serve_interval": serve_interval, "filter": "the churn port"}, readme=True)
    serve_closed = metrics.get("web10g_collector_closed_flows_total",
                               metrics.get("web10g_collector_closed_flows"))
    serve_missed = metrics.get("web10g_collector_missed_samples_total",
                               metrics.get("web10g_collector_missed_samples"))
    serve_samples = metrics.get("web10g_collector_samples_total",
                                metrics.get("web10g_collector_samples"))
    res.table("churn_delivery", "Closed flows: final records delivered, deadlines missed",
              ["who", "sockets closed", "final records", "missing (<0: extra)", "samples",
               "missed deadlines", "overrun warnings"],
              [("sampler + agent.closed()", f"{len(cookies):,}", f"{delivered:,}",
                f"{missing:,}", f"{st.samples if hasattr(st, 'samples') else samples:,}",
                f"{st.missed:,}", overrun_warnings),
               ("web10g serve", f"{len(cookies):,}",
                "-" if serve_closed is None else f"{serve_closed:,.0f}",
                "-" if serve_closed is None else f"{len(cookies) - serve_closed:,.0f}",
                "-" if serve_samples is None else f"{serve_samples:,.0f}",
                "-" if serve_missed is None else f"{serve_missed:,.0f}", "-")],
              notes=[f"serve exited with status {serve_rc} on SIGTERM",
                     f"closed-flow rows received here: {closed_rows:,} (of any flow)",
                     f"sampler stats: {st!r}"],
              what={"rate": rate, "seconds": seconds}, readme=True)
    res.figure("churn_series", series)
    res.figure("serve_metrics", metrics)
    res.target("churn_delivered", "closed flows without a final record (sampler process)",
               missing, 0, "<=", unit="", what={"rate": rate, "seconds": seconds})
    if serve_closed is not None:
        res.target("serve_delivered", "closed flows without a final record (web10g serve)",
                   len(cookies) - serve_closed, 0, "<=", unit="")
    res.target("churn_rss", "sampler process RSS growth after warm-up",
               (end[1] - base[1]) / 1024, 1.0, "<=", unit=" MiB")
    # serve's RSS is a saw-tooth (a Parquet window fills, is written, freed): its trend is
    # the median of the last third of the run against the median of the middle third
    n = len(series)
    mid, last = series[n // 3:2 * n // 3] or series, series[2 * n // 3:] or series
    trend = (statistics.median(s[3] for s in last) - statistics.median(s[3] for s in mid)) / 1024
    res.figure("serve_rss_trend_mib", trend)
    res.target("serve_rss", "web10g serve RSS trend (median of the last third - median of the "
               "middle third; Parquet files every 60 s)", trend, 5.0, "<=", unit=" MiB",
               detail=f"end - warm-up: {(end[3] - base[3]) / 1024:+.1f} MiB (saw-tooth)")
    res.target("churn_fds", "fd growth (sampler process + serve)",
               (end[2] - base[2]) + (end[4] - base[4]), 0, "<=", unit=" fds")
    res.figure("missed_deadlines", {"sampler": st.missed, "serve": serve_missed})


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--churn-child":
        churn_child(float(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--polls", type=int, default=1_000_000)
    ap.add_argument("--sockets", type=int, default=10_000)
    ap.add_argument("--vars", default=None, help="comma-separated (default: every variable)")
    ap.add_argument("--seconds", type=float, default=600.0, help="churn duration")
    ap.add_argument("--rate", type=float, default=500.0, help="flows opened+closed per second")
    ap.add_argument("--interval", type=float, default=0.1, help="the sampler's interval")
    ap.add_argument("--serve-interval", type=float, default=1.0)
    ap.add_argument("--skip-polls", action="store_true")
    ap.add_argument("--skip-churn", action="store_true")
    ap.add_argument("--own-netns", action="store_true",
                    help="run in a new network namespace (unshare -n, loopback up): the "
                    "dumps see only this benchmark's sockets, not other work's")
    ap.add_argument("--quick", action="store_true",
                    help="2,000 polls of 2,000 sockets, 30 s of churn")
    add_results_args(ap)
    args = ap.parse_args()
    if args.own_netns and not os.environ.get("W10G_SOAK_NETNS"):
        argv = [a for a in sys.argv[1:] if a != "--own-netns"]
        os.environ["W10G_SOAK_NETNS"] = "1"
        os.execvp("unshare", ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"',
                              "sh", sys.executable, os.path.abspath(__file__), *argv])
    if args.quick:
        args.polls, args.sockets, args.seconds = 2_000, 2_000, 30.0
    res = Results("bench_soak", args, "RSS/fds over many polls; sampler + serve under "
                  "flow churn: growth, closed-flow delivery, missed deadlines")
    for line in machine_lines():
        print(line)
    if not args.skip_polls:
        soak_polls(res, args.polls, args.sockets,
                   args.vars.split(",") if args.vars else None)
    if not args.skip_churn:
        soak_churn(res, args.seconds, args.rate, args.interval, args.serve_interval)
    res.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
