"""The ``web10g`` command: one entry point, one thin module per subcommand.

Each subcommand module has ``main(argv=None) -> int`` and is also installed as the classic
console script (``web10g-getmib`` ...). Modules are imported only when their subcommand
runs, so ``web10g --help`` stays fast.
"""
from __future__ import annotations

import importlib
import os
import sys

from web10g import __version__

# name -> (module, one-line summary). Only subcommands that exist are listed.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "listconns": ("web10g.cli.listconns", "list the connections"),
    "listconninfo": ("web10g.cli.listconninfo", "connections with owner uid, pid and command"),
    "readvars": ("web10g.cli.readvars", "one connection's variables"),
    "watchvars": ("web10g.cli.watchvars", "one connection's variables at an interval"),
    "deltavars": ("web10g.cli.deltavars", "one connection's counters as per-interval deltas"),
    "logger": ("web10g.cli.logger", "every connection's variables as CSV at an interval"),
    "getmib": ("web10g.cli.getmib", "print the variables (MIB) a backend provides"),
    "writevar": ("web10g.cli.writevar", "write a tunable of one connection"),
    "recordwrite": ("web10g.cli.recordwrite", "write one connection's sample to a record file"),
    "recordread": ("web10g.cli.recordread", "print the samples of a record file"),
    "convert": ("web10g.cli.convert", "a recording as CSV or Parquet"),
    "plot": ("web10g.cli.plot", "a recording's busiest flows over time, as a PNG"),
    "top": ("web10g.cli.top", "a live view of the flows, busiest first"),
    "serve": ("web10g.cli.serve", "a collector service: Parquet dataset, Prometheus, recording"),
    "ebpf": ("web10g.cli.ebpf", "load, unload or show the ebpf backend's instruments (root)"),
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [
        "usage: web10g [--version] [--help] COMMAND [ARGS...]",
        "",
        "RFC 4898 (Web10G) TCP extended statistics for every flow.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    lines += ["", "'web10g COMMAND --help' describes one command."]
    return "\n".join(lines)


def stdout_gone() -> None:
    """The reader of stdout went away (``| head``): send the rest, and the final flush at
    exit, to /dev/null, so that no BrokenPipeError is printed."""
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, sys.stdout.fileno())
        os.close(fd)
    except (OSError, ValueError, AttributeError):
        pass


def _say(text: str) -> None:
    """Print to stdout; a reader that went away is not an error."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_gone()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        _say(_usage())
        return 0 if args else 1
    if args[0] in ("-V", "--version"):
        _say(f"web10g {__version__}")
        return 0
    name = args[0]
    if name not in SUBCOMMANDS:
        from difflib import get_close_matches

        close = get_close_matches(name, SUBCOMMANDS, n=3)
        hint = f"; did you mean: {', '.join(close)}?" if close else ""
        print(f"web10g: unknown command {name!r}{hint} (see 'web10g --help')", file=sys.stderr)
        return 1
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(args[1:], prog=f"web10g {name}") or 0)


if __name__ == "__main__":
    sys.exit(main())
