"""Helpers for the collector tests: running `web10g serve`, traffic of a known size (in a
network namespace or here), scraping, a Prometheus server, namespaces."""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
import urllib.request
from typing import Any

from netns_util import named_netns

ROOT = pathlib.Path(__file__).resolve().parents[1]
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


class Serve:
    """A `web10g serve` subprocess whose log (JSON lines) is read back from a file."""

    def __init__(self, tmp: pathlib.Path, *args: str, name: str = "serve",
                 netns_exec: str | None = None) -> None:
        self.log_path = tmp / f"{name}.log"
        self.log_fh = open(self.log_path, "wb")  # noqa: SIM115
        cmd = [PY, "-m", "web10g", "serve", "--log-format", "json", *args]
        if netns_exec:
            cmd = ["ip", "netns", "exec", netns_exec, *cmd]
        self.proc = subprocess.Popen(cmd, stdout=self.log_fh, stderr=self.log_fh,
                                     env=env(), cwd=str(ROOT))
        self.wait_event("started", timeout=30)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "_raw", "line": line})
        return out

    def wait_event(self, name: str, n: int = 1, timeout: float = 30.0,
                   **match: Any) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            ev = [e for e in self.events() if e.get("event") == name
                  and all(e.get(k) == v for k, v in match.items())]
            if len(ev) >= n:
                return ev
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited ({self.proc.returncode}) waiting for "
                                     f"{name}:\n{self.log_path.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name} event after {timeout}s:\n"
                                     f"{self.log_path.read_text()[-4000:]}")
            time.sleep(0.05)

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log_fh.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self.log_fh.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        if not self.log_fh.closed:
            self.log_fh.close()


def scrape(port: int, accept: str = "", timeout: float = 10.0) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                 headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.status == 200
        return r.read().decode()


def metric_values(text: str, name: str, **labels: str) -> list[float]:
    """Values of the samples of ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out.append(float(s.value))
    return out


# -- traffic of a known size ---------------------------------------------------------------

TRAFFIC = textwrap.dedent("""
    import socket, sys, time
    port, nbytes, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    lst = socket.create_server(("127.0.0.1", port))
    print("listening", flush=True)
    sys.stdin.readline()                     # "go"
    cli = socket.create_connection(("127.0.0.1", port))
    srv, _ = lst.accept()
    chunk = b"x" * 65536
    sent = 0
    import threading
    got = [0]
    def reader():
        while got[0] < nbytes:
            b = srv.recv(1 << 20)
            if not b:
                break
            got[0] += len(b)
    t = threading.Thread(target=reader); t.start()
    while sent < nbytes:
        sent += cli.send(chunk[:min(len(chunk), nbytes - sent)])
    t.join()
    print("done", got[0], flush=True)
    time.sleep(hold)
    cli.close(); srv.close(); lst.close()
    print("closed", flush=True)
""")


class Traffic:
    """A listener on ``port`` (in ``netns`` when given); ``go()`` moves ``nbytes`` over one
    loopback connection, holds it ``hold`` seconds, then closes it."""

    def __init__(self, port: int, nbytes: int, hold: float, netns: str | None = None):
        cmd = [PY, "-c", TRAFFIC, str(port), str(nbytes), str(hold)]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout.readline().strip() == "listening"

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def wait(self, what: str, timeout: float = 60) -> str:
        line = self.proc.stdout.readline().strip()
        assert line.startswith(what), line
        return line

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


# -- namespaces --------------------------------------------------------------------------

def can_netns() -> str | None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "network namespaces need root and iproute2"
    return None


def netns(name: str) -> contextlib.AbstractContextManager[str]:
    return named_netns(name)


# -- a real Prometheus server -------------------------------------------------------------

def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class PrometheusServer:
    def __init__(self, targets: dict[str, int], scrape_interval: str = "1s") -> None:
        self.dir = tempfile.mkdtemp(prefix="w10g-prom-")
        self.port = free_port()
        jobs = "\n".join(textwrap.dedent(f"""\
              - job_name: web10g-{name}
                scrape_interval: {scrape_interval}
                scrape_timeout: {scrape_interval}
                static_configs:
                  - targets: ["127.0.0.1:{port}"]
            """) for name, port in targets.items())
        cfg = os.path.join(self.dir, "prometheus.yml")
        with open(cfg, "w") as fh:
            fh.write(f"global:\n  scrape_interval: {scrape_interval}\n"
                     f"scrape_configs:\n{textwrap.indent(jobs, '  ')}")
        self.log = open(os.path.join(self.dir, "log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [prometheus_binary(), f"--config.file={cfg}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready",
                                            timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("prometheus did not start:\n" + open(
                    os.path.join(self.dir, "log")).read()[-3000:])
            time.sleep(0.2)

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
