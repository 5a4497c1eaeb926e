#!/usr/bin/env bash
# Install the system packages web10g needs to build and test, only when they are missing.
# Debian/Ubuntu via apt-get (as root, or through sudo); elsewhere it says what is missing.
set -euo pipefail

PYTHON=${PYTHON:-python3}
need=()

pkg-config --exists libmnl 2>/dev/null || need+=(libmnl-dev pkg-config)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if command -v "$PYTHON" >/dev/null 2>&1; then
    "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
    "$PYTHON" - <<'PY' || need+=(python3-dev)
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PY
else
    need+=(python3 python3-venv python3-dev)
fi

[ ${#need[@]} -eq 0 ] && exit 0
# de-duplicate
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: missing system packages: ${need[*]} (Debian names); install them with" \
         "your package manager (Fedora: libmnl-devel pkgconf-pkg-config gcc python3-devel iproute)" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "error: missing system packages: ${need[*]}; run as root: apt-get install ${need[*]}" >&2
        exit 1
    fi
fi
echo "installing system packages: ${need[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
