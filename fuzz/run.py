"""Build and run the fuzz targets; print executions per target.

    .venv/bin/python fuzz/run.py [--seconds S | --runs N] [--jobs 2] [--targets a,b]
    .venv/bin/python fuzz/run.py --short            # what tests/test_fuzz_short.py runs
    .venv/bin/python fuzz/run.py --replay FILE...   # run inputs once (crash files)

Targets (fuzz/README.md): sockdiag, estats, ebpf, delta are libFuzzer harnesses compiled with
clang -fsanitize=fuzzer,address,undefined straight against csrc/*.c (fuzz/c/); recording,
record, filter, replay are atheris targets over the Python modules (fuzz/targets/). Each target
fuzzes from fuzz/corpus/<target>/ (the committed seeds) into fuzz/work/corpus/<target>/
(what it learnt; kept between runs, not committed).

Long runs keep going past findings: a Python exception that is not a documented
web10g error is saved once per signature under fuzz/work/findings/<target>/ and the run
goes on; a hard crash (sanitizer report, out-of-memory, timeout) has its input saved
there too and the target is restarted for what is left of its time or runs. Findings
that matter become regression files under tests/fuzz_regressions/<target>/, which
`--short` (and so `make test`) replays.

The run's figures go to fuzz/work/last-run.json and are appended, target by target, to
fuzz/work/history.jsonl (this checkout's) and to fuzz/ledger.jsonl, the campaign's record,
which is committed so that the executions of every run of record stay with the code
(fuzz/work/ goes with the checkout). benchmarks/bench_fuzz.py reads both.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CSRC = os.path.join(ROOT, "csrc")
BUILD = os.path.join(HERE, "build")
WORK = os.path.join(HERE, "work")
REGRESSIONS = os.path.join(ROOT, "tests", "fuzz_regressions")
LEDGER = os.path.join(HERE, "ledger.jsonl")

C_TARGETS = {
    # target: (harness, decoder sources, max_len)
    "sockdiag": ("fuzz_sockdiag.c", ["w10g_sockdiag.c"], 32768),
    "estats": ("fuzz_estats.c", ["w10g_estats.c"], 32768),
    "ebpf": ("fuzz_ebpf.c", ["w10g_ebpf.c"], 16384),
    "delta": ("fuzz_delta.c", ["w10g_delta.c"], 65536),
}
PY_TARGETS = {
    # target: (script, max_len)
    "recording": ("fuzz_recording.py", 65536),
    "record": ("fuzz_record.py", 16384),
    "filter": ("fuzz_filter.py", 65536),
    "replay": ("fuzz_replay.py", 65536),
}
TARGETS = list(C_TARGETS) + list(PY_TARGETS)
SANITIZE = ["-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all",
            "-fno-omit-frame-pointer", "-g", "-O2"]


def _commit() -> str:
    """The commit fuzzed (with +dirty when the work tree differs): which code a ledger
    line's executions count for."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def clang() -> str | None:
    for cc in (os.environ.get("W10G_FUZZ_CC"), "clang", "clang-19", "clang-16", "clang-15",
               "clang-14"):
        if cc and shutil.which(cc):
            return cc
    return None


def mnl_flags() -> tuple[list[str], list[str]]:
    try:
        cflags = subprocess.run(["pkg-config", "--cflags", "libmnl"], capture_output=True,
                                text=True, check=True).stdout.split()
        libs = subprocess.run(["pkg-config", "--libs", "libmnl"], capture_output=True,
                              text=True, check=True).stdout.split()
        return cflags, libs
    except (OSError, subprocess.CalledProcessError):
        return [], ["-lmnl"]


def build(target: str, out_dir: str = BUILD) -> str:
    """The target's libFuzzer binary, rebuilt when a source is newer."""
    harness, srcs, _ = C_TARGETS[target]
    cc = clang()
    if cc is None:
        raise RuntimeError("clang is needed for the C fuzz targets (Debian: apt-get install "
                           "clang libclang-rt-dev, or make deps)")
    os.makedirs(out_dir, exist_ok=True)
    exe = os.path.join(out_dir, f"fuzz_{target}")
    sources = [os.path.join(HERE, "c", harness)] + [os.path.join(CSRC, s) for s in srcs]
    deps = (sources + glob.glob(os.path.join(CSRC, "*.h"))
            + glob.glob(os.path.join(HERE, "c", "*.h")))
    if os.path.exists(exe) and all(os.path.getmtime(d) <= os.path.getmtime(exe) for d in deps):
        return exe
    cflags, libs = mnl_flags()
    cmd = [cc, *SANITIZE, "-I", CSRC, *cflags, *sources, "-o", exe + ".tmp", *libs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building {target} failed:\n{' '.join(cmd)}\n{r.stderr}")
    os.replace(exe + ".tmp", exe)
    return exe


def command(target: str, python: str) -> list[str]:
    if target in C_TARGETS:
        return [build(target)]
    return [python, os.path.join(HERE, "targets", PY_TARGETS[target][0])]


def max_len(target: str) -> int:
    return C_TARGETS[target][2] if target in C_TARGETS else PY_TARGETS[target][1]


_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_PROGRESS = re.compile(r"^#(\d+)\s+\w+.*?exec/s: (\d+)", re.M)
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.M)


def parse_stats(text: str) -> dict[str, int]:
    st = {k: int(v) for k, v in _STAT.findall(text)}
    if "number_of_executed_units" not in st:
        m = _DONE.findall(text) or []
        prog = _PROGRESS.findall(text)
        if m:
            st["number_of_executed_units"] = int(m[-1][0])
        elif prog:
            st["number_of_executed_units"] = int(prog[-1][0])
    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)", text)
    if cov:
        st["cov"], st["ft"], st["corpus"] = map(int, cov[-1])
    return st


def _artifacts(d: str) -> set[str]:
    return set(glob.glob(os.path.join(d, "crash-*")) + glob.glob(os.path.join(d, "oom-*"))
               + glob.glob(os.path.join(d, "timeout-*")) + glob.glob(os.path.join(d, "leak-*")))


def clean_env(target: str, **extra: str) -> dict[str, str]:
    """The environment for a target: a C harness without LD_PRELOAD (`make sanitize`
    preloads GCC's ASan runtime, which must not meet the clang one linked into the
    harness); the Python targets keep it (the extensions may be built with it)."""
    env = {k: v for k, v in os.environ.items()
           if not (k == "LD_PRELOAD" and target in C_TARGETS)}
    env.update(extra)
    return env


def run_target(target: str, *, seconds: float | None, runs: int | None, python: str,
               short: bool, log_dir: str, nice: int, max_restarts: int = 50) -> dict:
    """Fuzz one target for ``seconds`` or ``runs`` executions (restarting after hard
    crashes when not ``short``); its figures."""
    findings = os.path.join(WORK, "findings", target)
    os.makedirs(findings, exist_ok=True)
    seeds = os.path.join(HERE, "corpus", target)
    if short:
        corpus = tempfile.mkdtemp(prefix=f"w10g-fuzz-{target}-")
    else:
        corpus = os.path.join(WORK, "corpus", target)
        os.makedirs(corpus, exist_ok=True)
    env = clean_env(target)
    env["W10G_FUZZ_KEEP_GOING"] = "0" if short else "1"
    env["W10G_FUZZ_FINDINGS"] = os.path.join(WORK, "findings")
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    if target in PY_TARGETS:
        # the Python interpreter itself is not instrumented: its leaks are not ours
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    base = command(target, python)
    if nice and shutil.which("nice"):
        base = ["nice", "-n", str(nice)] + base
    execs = 0
    crashes: list[str] = []
    unreproduced: list[dict[str, str]] = []
    restarts = 0
    t0 = time.monotonic()
    last: dict[str, int] = {}
    rc = 0
    log_path = os.path.join(log_dir, f"{target}.log")
    with open(log_path, "a") as log:
        while True:
            left_s = None if seconds is None else seconds - (time.monotonic() - t0)
            left_n = None if runs is None else runs - execs
            if (left_s is not None and left_s < 1) or (left_n is not None and left_n <= 0):
                break
            flags = [f"-max_len={max_len(target)}", "-print_final_stats=1",
                     f"-artifact_prefix={findings}/", "-timeout=20", "-rss_limit_mb=3072",
                     "-len_control=200", "-reload=0"]
            if left_s is not None:
                flags.append(f"-max_total_time={max(1, int(left_s))}")
            if left_n is not None:
                flags.append(f"-runs={left_n}")
            before = _artifacts(findings)
            log.write(f"$ {' '.join(base + flags + [corpus, seeds])}\n")
            log.flush()
            start = log.tell()
            # straight into the log (progress lines can be followed while it runs)
            p = subprocess.run(base + flags + [corpus, seeds], env=env, cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT)
            log.flush()
            with open(log_path, errors="replace") as fh:
                fh.seek(start)
                st = parse_stats(fh.read())
            execs += st.get("number_of_executed_units", 0)
            last = st or last
            rc = p.returncode
            new = sorted(_artifacts(findings) - before)
            if rc == 0:
                if left_n is None and left_s is not None and left_s > 5 and \
                        time.monotonic() - t0 < (seconds or 0) - 5:
                    continue        # ended early (e.g. -runs reached); go on for the time
                break
            for art in new or [f"exit status {rc} (no artifact): see {log_path}"]:
                why = None if short or not os.path.exists(art) else \
                    _not_reproduced(base, art, env, max_len(target))
                if why:
                    unreproduced.append({"input": art, "why": why})
                    log.write(f"[run.py] {os.path.basename(art)}: not reproduced ({why})\n")
                else:
                    crashes.append(art)
            if short or restarts >= max_restarts:
                break
            restarts += 1
    wall = time.monotonic() - t0
    if short:
        shutil.rmtree(corpus, ignore_errors=True)
    py_findings = sorted(f for f in glob.glob(os.path.join(findings, "*.txt")))
    return {
        "target": target, "kind": "libFuzzer (C)" if target in C_TARGETS else "atheris",
        "executions": execs, "seconds": round(wall, 1),
        "exec_per_s": round(execs / wall) if wall else 0,
        "cov": last.get("cov"), "features": last.get("ft"), "corpus": last.get("corpus"),
        "new_units": last.get("new_units_added"), "peak_rss_mb": last.get("peak_rss_mb"),
        "crashes": crashes, "unreproduced": unreproduced, "restarts": restarts, "exit": rc,
        "python_findings": [os.path.relpath(f, ROOT) for f in py_findings],
        "log": os.path.relpath(log_path, ROOT),
    }


def _not_reproduced(base: list[str], art: str, env: dict[str, str], limit: int) -> str | None:
    """Why a hard crash of a long run is not a finding, or None when it is one.

    An out-of-memory or timeout artifact is run again alone, in a fresh process under
    the same limits. The Python targets' processes grow under atheris's instrumentation
    (about 0.5 KB per execution on the filter target, while the same inputs run without
    it keep a flat RSS), so after millions of executions libFuzzer's -rss_limit_mb stops
    a process that no single input made large. An input that passes alone did not cause
    the crash; anything else (a sanitizer report, an exception, a crash on replay) stays
    a finding."""
    name = os.path.basename(art)
    if not name.startswith(("oom-", "timeout-")):
        return None
    r = subprocess.run(base + ["-runs=1", "-rss_limit_mb=3072", "-timeout=20",
                               f"-max_len={limit}", art],
                       env=dict(env, W10G_FUZZ_KEEP_GOING="0"), cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        return None
    return (f"{name.split('-')[0]} of a long-running process; the input alone passes "
            "under the same limits")


def replay(paths: list[str], python: str) -> int:
    """Run each file once through the target named by its directory."""
    bad = 0
    for p in paths:
        target = os.path.basename(os.path.dirname(os.path.abspath(p)))
        if target not in TARGETS:
            print(f"{p}: the directory does not name a target ({', '.join(TARGETS)})")
            bad += 1
            continue
        env = clean_env(target, W10G_FUZZ_KEEP_GOING="0")
        if target in PY_TARGETS:
            env["ASAN_OPTIONS"] = "detect_leaks=0"
        r = subprocess.run(command(target, python) + ["-runs=1", p], env=env, cwd=ROOT,
                           capture_output=True, text=True)
        print(f"{'ok  ' if r.returncode == 0 else 'FAIL'} {target:10s} {p}")
        if r.returncode:
            print(r.stdout[-3000:] + r.stderr[-3000:])
            bad += 1
    return 1 if bad else 0


def regression_files(target: str) -> list[str]:
    d = os.path.join(REGRESSIONS, target)
    if not os.path.isdir(d):
        return []
    return sorted(os.path.join(d, f) for f in os.listdir(d)
                  if not f.startswith(".") and not f.endswith((".md", ".txt")))


def table(rows: list[dict]) -> str:
    head = ("target", "kind", "executions", "seconds", "exec/s", "cov", "corpus", "crashes",
            "py findings")
    cells = [head] + [(r["target"], r["kind"], f"{r['executions']:,}", f"{r['seconds']:.0f}",
                       f"{r['exec_per_s']:,}", str(r["cov"] or "-"), str(r["corpus"] or "-"),
                       str(len(r["crashes"])), str(len(r["python_findings"])))
                      for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c[i].ljust(w[i]) if i < 2 else c[i].rjust(w[i]) for i in range(len(head)))
             for c in cells]
    lines.insert(1, "  ".join("-" * x for x in w))
    total = sum(r["executions"] for r in rows)
    lines.append(f"total executions: {total:,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--seconds", type=float, help="per target (default 60)")
    g.add_argument("--runs", type=int, help="executions per target")
    g.add_argument("--short", action="store_true",
                   help="a few thousand executions of each target from its seeds, strict "
                   "(the first finding fails), then the regression files replayed")
    g.add_argument("--replay", nargs="+", metavar="FILE",
                   help="run inputs once; the target is the name of the file's directory")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--jobs", type=int, default=2, help="targets at a time (default 2)")
    ap.add_argument("--nice", type=int, default=10, help="nice level (default 10; 0: none)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--no-regressions", action="store_true",
                    help="with --short: do not replay tests/fuzz_regressions/")
    args = ap.parse_args(argv)

    if args.replay:
        return replay(args.replay, args.python)
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        ap.error(f"unknown targets {sorted(unknown)}; known: {', '.join(TARGETS)}")
    for t in targets:
        if t in C_TARGETS:
            build(t)
    py = [t for t in targets if t in PY_TARGETS]
    if py and not args.build_only and subprocess.run(
            [args.python, "-c", "import atheris"], capture_output=True).returncode != 0:
        # Without atheris a Python target only replays its files: a timed run would
        # restart it in a loop and count nothing.
        print(f"fuzz/run.py: atheris is not installed in {args.python}, so the Python "
              f"targets ({', '.join(py)}) cannot fuzz: run `make fuzz` (it installs "
              "web10g[fuzz]) or pip install atheris", file=sys.stderr)
        return 2
    if args.build_only:
        return 0
    seconds, runs = args.seconds, args.runs
    if args.short:
        seconds, runs = None, int(os.environ.get("W10G_FUZZ_SHORT_RUNS", "3000"))
    elif seconds is None and runs is None:
        seconds = 60.0
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    log_dir = (tempfile.mkdtemp(prefix="w10g-fuzz-logs-") if args.short
               else os.path.join(WORK, "logs", stamp))
    os.makedirs(log_dir, exist_ok=True)
    what = f"{runs:,} executions" if runs else f"{seconds:g} s"
    print(f"fuzzing {', '.join(targets)}: {what} each, {args.jobs} at a time "
          f"(nice {args.nice}); logs in {os.path.relpath(log_dir, ROOT)}", flush=True)

    commit = _commit()
    results: dict[str, dict] = {}
    queue = list(targets)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                t = queue.pop(0)
            r = run_target(t, seconds=seconds, runs=runs, python=args.python,
                           short=args.short, log_dir=log_dir, nice=args.nice)
            with lock:
                results[t] = r
                if not args.short:     # each target as it ends: a stopped run keeps them
                    os.makedirs(WORK, exist_ok=True)
                    line = json.dumps({"schema": "web10g-fuzz/1", "started": stamp,
                                       "commit": commit, "seconds_per_target": seconds,
                                       "runs_per_target": runs, "jobs": args.jobs,
                                       "targets": [r]}) + "\n"
                    for path in (os.path.join(WORK, "history.jsonl"), LEDGER):
                        with open(path, "a") as fh:
                            fh.write(line)
                print(f"  {t}: {r['executions']:,} executions in {r['seconds']:.0f} s "
                      f"({r['exec_per_s']:,}/s), {len(r['crashes'])} crashes, "
                      f"{len(r['python_findings'])} Python findings so far", flush=True)

    threads = [threading.Thread(target=worker) for _ in range(max(1, args.jobs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rows = [results[t] for t in targets]
    print()
    print(table(rows))
    failed = False
    for r in rows:
        for c in r["crashes"]:
            shown = os.path.relpath(c, ROOT) if os.path.exists(c) else c
            print(f"  {r['target']}: crash input {shown}")
            failed = True
        if args.short and r["exit"] != 0:
            print(f"  {r['target']}: exit {r['exit']}; log {r['log']}")
            failed = True
    if args.short:
        files = [] if args.no_regressions else [f for t in targets
                                                 for f in regression_files(t)]
        if files:
            print(f"\nreplaying {len(files)} regression files")
            if replay(files, args.python):
                failed = True
        shutil.rmtree(log_dir, ignore_errors=True)
        return 1 if failed else 0
    record = {"schema": "web10g-fuzz/1", "started": stamp,
              "finished": datetime.datetime.now(datetime.timezone.utc).strftime(
                  "%Y%m%dT%H%M%SZ"),
              "seconds_per_target": seconds, "runs_per_target": runs, "jobs": args.jobs,
              "targets": rows}
    os.makedirs(WORK, exist_ok=True)
    with open(os.path.join(WORK, "last-run.json"), "w") as fh:
        json.dump(record, fh, indent=1)
    print(f"\nfigures: {os.path.relpath(os.path.join(WORK, 'last-run.json'), ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
