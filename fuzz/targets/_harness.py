"""What the atheris targets share: the checkout on sys.path, the verdict on exceptions,
and the run under libFuzzer.

A target's ``one(data)`` raises nothing for input it handles: documented errors
(``web10g.errors.Web10GError`` and its subclasses, which every decoder raises for input
it refuses) are caught here. Anything else is a finding:

* by default (``W10G_FUZZ_KEEP_GOING`` unset or 0) it propagates: atheris prints the
  traceback and libFuzzer writes the input as ``crash-<sha1>`` (the regression file);
* with ``W10G_FUZZ_KEEP_GOING=1`` (what ``fuzz/run.py`` sets for long runs) the input is
  saved once per signature (exception type + innermost frame in web10g/) under
  ``$W10G_FUZZ_FINDINGS/<target>/`` with its traceback, and the run goes on, so that a
  known open defect does not stop the count.

Hard crashes (a C decoder's ASan report, an out-of-memory) end the process either way;
fuzz/run.py saves the input and restarts the target.
"""
from __future__ import annotations

import hashlib
import os
import sys
import traceback
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

KEEP_GOING = os.environ.get("W10G_FUZZ_KEEP_GOING", "0") not in ("", "0")
FINDINGS = os.environ.get("W10G_FUZZ_FINDINGS", os.path.join(ROOT, "fuzz", "work", "findings"))

_seen: set[str] = set()


def signature(exc: BaseException) -> str:
    """Exception type and the innermost frame inside the package (else the innermost)."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = tb[-1] if tb else None
    for fr in reversed(tb):
        if f"{os.sep}web10g{os.sep}" in fr.filename:
            where = fr
            break
    loc = f"{os.path.basename(where.filename)}:{where.lineno}" if where else "?"
    return f"{type(exc).__name__}@{loc}"


def _record(target: str, data: bytes, exc: BaseException) -> None:
    sig = signature(exc)
    if sig in _seen:
        return
    _seen.add(sig)
    d = os.path.join(FINDINGS, target)
    os.makedirs(d, exist_ok=True)
    name = sig.replace("@", "-").replace(":", "-").replace(os.sep, "_")
    base = os.path.join(d, f"{name}-{hashlib.sha1(data).hexdigest()[:10]}")
    with open(base + ".bin", "wb") as fh:
        fh.write(data)
    with open(base + ".txt", "w") as fh:
        fh.write(sig + "\n\n")
        fh.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    print(f"\n[{target}] finding {sig} -> {base}.bin", file=sys.stderr, flush=True)


def wrap(target: str, one: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """The libFuzzer entry point: ``one`` with the verdict on its exceptions."""
    from web10g.errors import Web10GError

    def test_one_input(data: bytes) -> None:
        try:
            one(data)
        except Web10GError:
            pass
        except Exception as exc:  # noqa: BLE001 - every other exception is a finding
            if not KEEP_GOING:
                raise
            _record(target, data, exc)

    return test_one_input


def replay(one: Callable[[bytes], None], paths: list[str]) -> None:
    """Run ``one`` on files without atheris (regression replays, no coverage)."""
    from web10g.errors import Web10GError

    for p in paths:
        with open(p, "rb") as fh:
            data = fh.read()
        try:
            one(data)
        except Web10GError:
            pass


def main(target: str, setup: Callable[[], Callable[[bytes], None]],
         instrument: tuple[str, ...] = ("web10g",)) -> None:
    """``python fuzz/targets/fuzz_X.py [libFuzzer flags] [corpus dirs or files]``.

    ``setup`` imports the package under atheris's instrumentation (of the modules whose
    names start with one of ``instrument``: the rest of the package runs at full speed)
    and returns ``one``.
    Without atheris installed, the files given are replayed (no fuzzing).
    """
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is None:
        files = []
        for a in sys.argv[1:]:
            if a.startswith("-"):
                continue
            if os.path.isdir(a):
                files += [os.path.join(a, f) for f in sorted(os.listdir(a))]
            else:
                files.append(a)
        print(f"[{target}] atheris is not installed: replaying {len(files)} files",
              file=sys.stderr)
        replay(setup(), files)
        return
    with atheris.instrument_imports(include=list(instrument)):
        one = setup()
    atheris.Setup(sys.argv, wrap(target, one))
    atheris.Fuzz()
