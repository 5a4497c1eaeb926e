#!/usr/bin/env bash
# System packages the collector tests use: a real Prometheus server (Debian's
# `prometheus`), started by tests/test_collector.py on a loopback port. Installed only
# when missing; tests that need it skip with a reason where it cannot be installed.
# (The Python side -- pyarrow, prometheus_client, duckdb, dask[distributed] -- comes
# from the package's `collector` and `test` extras.)
set -euo pipefail

command -v prometheus >/dev/null 2>&1 && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: no apt-get; install a Prometheus server to run the PromQL tests" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "note: run as root to install prometheus (the PromQL tests will skip)" >&2
        exit 0
    fi
fi
echo "installing system packages: prometheus"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# the package's postinst may try to start the service: harmless where systemd is absent
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null || echo "note: prometheus could not be installed; the PromQL tests will skip" >&2
