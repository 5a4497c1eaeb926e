"""A short run of every fuzz target (fuzz/run.py --short: a few thousand executions from
the committed seeds, strict: the first finding fails) and a replay of every crash
regression file under tests/fuzz_regressions/<target>/.

The C decoders' harnesses are built with clang (-fsanitize=fuzzer,address,undefined;
Debian: clang and libclang-rt-dev, which `make deps` installs); the Python targets run
under atheris (the `test` extra), or, without it, replay their seeds.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "fuzz", "run.py")
REGRESSIONS = os.path.join(ROOT, "tests", "fuzz_regressions")
sys.path.insert(0, os.path.join(ROOT, "fuzz"))

import run as fuzz_run  # noqa: E402

# Regression files of defects still open: file name -> the defect. They replay as xfail
# (non-strict) until the fix lands; then drop the entry.
KNOWN_OPEN: dict[str, str] = {}


def _have_libfuzzer() -> str | None:
    cc = fuzz_run.clang()
    if cc is None:
        return "clang is missing"
    rt = subprocess.run([cc, "-print-file-name=libclang_rt.fuzzer-x86_64.a"],
                        capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(rt) or not os.path.exists(rt):
        return "clang's libFuzzer runtime is missing (Debian: libclang-rt-dev)"
    return None


def _needs_clang(target: str) -> None:
    if target in fuzz_run.C_TARGETS:
        missing = _have_libfuzzer()
        if missing:
            pytest.fail(f"{missing}: `make deps` installs it (apt-get install clang "
                        "libclang-rt-dev)")


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, RUN, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("target", fuzz_run.TARGETS)
def test_short_fuzz_run(target: str) -> None:
    _needs_clang(target)
    r = _run(["--short", "--no-regressions", "--jobs", "1", "--targets", target])
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert f"{target}" in r.stdout


def _regression_files() -> list[str]:
    out = []
    if os.path.isdir(REGRESSIONS):
        for t in sorted(os.listdir(REGRESSIONS)):
            out += [os.path.relpath(f, ROOT) for f in fuzz_run.regression_files(t)]
    return out


@pytest.mark.parametrize("path", _regression_files() or [None])
def test_regression_file(path: str | None) -> None:
    if path is None:
        pytest.skip("no regression files")
    target = os.path.basename(os.path.dirname(path))
    assert target in fuzz_run.TARGETS, f"{path}: the directory must name a fuzz target"
    _needs_clang(target)
    name = os.path.basename(path)
    r = _run(["--replay", path], timeout=120)
    if r.returncode and name in KNOWN_OPEN:
        pytest.xfail(KNOWN_OPEN[name])
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]


def test_seed_corpora_are_present_and_small() -> None:
    for t in fuzz_run.TARGETS:
        d = os.path.join(ROOT, "fuzz", "corpus", t)
        files = os.listdir(d)
        assert files, f"no seeds for {t}"
        size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
        assert size < 512 * 1024, f"{t}'s seeds weigh {size} bytes"


def test_clang_is_found_when_installed() -> None:
    if shutil.which("clang") is None:
        pytest.skip("no clang on PATH")
    assert fuzz_run.clang() is not None
