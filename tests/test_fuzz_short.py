"""A short run of every fuzz target (fuzz/run.py --short: a few thousand executions from
the committed seeds, strict: the first finding fails) and a replay of every crash
regression file under tests/fuzz_regressions/<target>/.

The C decoders' harnesses are built with clang (-fsanitize=fuzzer,address,undefined;
Debian: clang and libclang-rt-dev, which `make deps` installs); the Python targets run
under atheris (the `test` extra), or, without it, replay their seeds.
"""
from __future__ import annotations

import json
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


def test_fuzz_figures_count_each_run_once_and_restart_after_a_finding(tmp_path):
    """benchmarks/bench_fuzz.py: the committed ledger and the checkout's history hold the
    same lines (counted once); the goal counts the executions after the last finding."""
    def line(started, target, execs, crashes=(), findings=(), order=1, **extra):
        return json.dumps({"started": started, "order": order, "targets": [
            {"target": target, "kind": "atheris", "executions": execs, "seconds": 10.0,
             "exec_per_s": execs // 10, "crashes": list(crashes),
             "python_findings": list(findings), **extra}]}) + "\n"

    ledger, history = tmp_path / "ledger.jsonl", tmp_path / "history.jsonl"
    out = tmp_path / "o.json"
    ledger.write_text(line("before", "filter", 3_000_000, order=0, runs=2, aggregate=True)
                      + line("20261205T190431Z", "filter", 4_000_000, findings=["x.txt"])
                      + line("20261205T212906Z", "filter", 600_000))
    history.write_text(line("20261205T212906Z", "filter", 600_000)     # the same run
                       + line("20261205T213024Z", "filter", 9_500_000)
                       + line("20261205T213024Z", "record", 11_000_000))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_fuzz.py"),
                        "--history", str(ledger), str(history), "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(out.read_text())
    totals = data["figures"]["totals"]
    assert totals["filter"]["executions"] == 3_000_000 + 4_000_000 + 600_000 + 9_500_000
    assert totals["filter"]["runs"] == 2 + 1 + 1 + 1
    assert totals["filter"]["clean"] == 600_000 + 9_500_000          # after the finding
    assert data["figures"]["latest"]["filter"]["started"] == "20261205T213024Z"
    verdicts = {t["id"]: t["pass"] for t in data["targets"]}
    assert verdicts == {"execs_filter": True, "execs_record": True}


def test_a_hard_crash_counts_unless_its_input_passes_alone(tmp_path):
    """fuzz/run.py: an OOM or timeout of a long run whose input passes when run alone
    (the harness process grew, not the input's run) is recorded as not reproduced; one
    that fails again, and any other crash, stays a finding."""
    harness = tmp_path / "harness.py"
    harness.write_text("import sys\nsys.exit(int(open(sys.argv[-1]).read()))\n")
    base = [sys.executable, str(harness)]
    env = dict(os.environ)
    for name, code, finding in (("oom-grew", "0", False), ("oom-big", "1", True),
                                ("timeout-slow", "1", True), ("crash-asan", "0", True)):
        art = tmp_path / name
        art.write_text(code)
        why = fuzz_run._not_reproduced(base, str(art), env, 4096)
        assert (why is None) == finding, (name, why)
