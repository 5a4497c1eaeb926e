"""What every subcommand shares: argument parsing with the classic exit codes, opening an
agent, variable selection (classic hex masks or names), sampling loops without drift,
and the output formats (classic text, --json, --csv)."""
from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
import time
from collections.abc import Iterator
from typing import Any, NoReturn

import numpy as np

from web10g import errors, mib

# The Web10G table headings of the classic tools, by registry table.
TABLE_HEADINGS = dict(zip(mib.TABLES, ("Perf", "Path", "Stack", "App", "Tune", "Extras")))


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the classic tools' convention: bad usage exits 1, not 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


ToolError = errors.ToolError     # a failure a tool reports as ``prog: message``, status 1


def fail(prog: str, message: object, code: int = 1) -> int:
    """Print ``prog: message`` on stderr and return the exit code to use."""
    print(f"{prog}: {message}", file=sys.stderr)
    return code


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def run_tool(prog: str, body: Any) -> int:
    """Run a tool's body, turning the errors users can cause into one clear line."""
    try:
        return int(body() or 0)
    except KeyboardInterrupt:
        return 130
    except EOFError:
        return 0            # a replay ran out of samples: done
    except BrokenPipeError:
        # the reader (head, less) went away: not an error of ours
        try:
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - silence the final flush
        except OSError:
            pass
        return 0
    except (ToolError, errors.Web10GError, mib.UnknownVariable, ValueError, OSError,
            LookupError) as exc:
        return fail(prog, exc)


# -- common arguments --------------------------------------------------------------------

def add_backend(p: argparse.ArgumentParser) -> None:
    from web10g.backends import BACKENDS

    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="kernel interface (auto: estats when the Web10G module is loaded)")
    p.add_argument("--netns", help="network namespace (sock_diag): a name, path or pid")
    p.add_argument("--replay", metavar="FILE",
                   help="read from a recording (web10g logger --record) instead of a kernel")


def add_output(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="JSON output (one object per line "
                   "when the tool loops)")
    g.add_argument("--csv", action="store_true", help="CSV output with a header line")


def add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--mask", metavar="MASK",
                   help="classic hex masks 'perf,path,stack,app,tune' selecting variables")
    p.add_argument("--vars", metavar="NAMES", help="comma-separated variable names")


def add_loop(p: argparse.ArgumentParser, default_ms: int = 1000) -> None:
    p.add_argument("-i", dest="interval_ms", type=float, metavar="MS",
                   help=f"interval in milliseconds (classic; default {default_ms})")
    p.add_argument("--interval", type=float, metavar="SECONDS", help="interval in seconds")
    p.add_argument("--count", type=int, metavar="N", help="stop after N samples")
    p.set_defaults(default_interval_ms=default_ms)


def add_filter(p: argparse.ArgumentParser) -> None:
    p.add_argument("--filter", metavar="EXPR",
                   help="ss-style filter, e.g. 'dport = :5201 or sport = :22'")
    p.add_argument("--states", metavar="STATES",
                   help="comma-separated TCP states (default: open connections)")


def open_agent(args: argparse.Namespace) -> Any:
    import web10g

    if getattr(args, "replay", None):
        return web10g.open(replay=args.replay)
    return web10g.open(args.backend, netns=getattr(args, "netns", None))


def interval_of(args: argparse.Namespace) -> float:
    if args.interval is not None and args.interval_ms is not None:
        raise ToolError("give either -i MS or --interval SECONDS, not both")
    seconds = (args.interval if args.interval is not None
               else (args.interval_ms if args.interval_ms is not None
                     else args.default_interval_ms) / 1000)
    if not seconds > 0:
        raise ToolError("the interval must be positive")
    if args.count is not None and args.count < 1:
        raise ToolError("--count must be at least 1")
    return float(seconds)


def parse_cid(text: str) -> int:
    """A connection id as the classic tools take it: a positive integer (0x... accepted)."""
    try:
        cid = int(text, 0)
    except ValueError:
        raise ToolError(f"invalid connection id {text!r}: give the CID that "
                        "web10g listconns prints") from None
    if cid <= 0:
        raise ToolError(f"invalid connection id {text!r}: CIDs are positive")
    return cid


def parse_mask(text: str, layout: mib.Layout) -> list[str]:
    """The classic -m syntax: up to five comma-separated hex masks for perf, path, stack,
    app, tune. In each field anything up to and including an 'x' is skipped; an empty or
    unparsable field selects the whole table; values are ANDed with the table's mask. The
    extras table cannot be masked (always read in full)."""
    fields = text.split(",")
    names: list[str] = []
    for t, table in enumerate(layout.tables):
        allbits = layout.all_masks[t]
        bits = allbits
        if t < 5 and t < len(fields):
            f = fields[t]
            f = f[f.lower().rfind("x") + 1:] if "x" in f.lower() else f
            try:
                bits = int(f.strip(), 16) & allbits
            except ValueError:
                bits = allbits
        names += [v.name for i, v in enumerate(table) if bits >> i & 1]
    return names


def selection(args: argparse.Namespace, agent: Any) -> list[str] | None:
    """The variables a tool reads: --vars, -m, or (None) every variable of the agent."""
    if getattr(args, "vars", None) and getattr(args, "mask", None):
        raise ToolError("give either -m MASK or --vars NAMES, not both")
    if getattr(args, "vars", None):
        return [mib.lookup(n.strip()).name for n in args.vars.split(",") if n.strip()]
    if getattr(args, "mask", None):
        layout = getattr(agent, "layout", None) or mib.layout("head")
        names = parse_mask(args.mask, layout)
        usable = {v.name for v in agent.variables()}
        return [n for n in names if n in usable]
    return None


def classic_names(agent: Any, rows: np.ndarray) -> list[mib.Variable]:
    """The Web10G variables among ``rows``' columns, in table order (stock extras out)."""
    cols = set(rows.dtype.names or ())
    return [v for v in agent.variables() if not v.is_stock and v.name in cols]


def ticks(interval: float, count: int | None, agent: Any = None) -> Iterator[int]:
    """Sample numbers at a fixed rate without drift: deadlines on the monotonic clock.

    A late sample does not shift the ones after it; deadlines missed entirely are
    skipped rather than bunched up. ``count`` counts samples taken, not deadlines.
    """
    if getattr(agent, "replay", False):
        interval = 0.0      # a recording is replayed as fast as it can be read
    taken = 0
    slot = 0
    start = time.monotonic()
    while count is None or taken < count:
        yield taken
        taken += 1
        if count is not None and taken >= count:
            return
        slot += 1
        if interval <= 0:
            continue
        now = time.monotonic()
        if now > start + (slot + 1) * interval:      # a whole period late: skip ahead
            slot = int((now - start) // interval)
        time.sleep(max(0.0, start + slot * interval - time.monotonic()))


def stop_on_sigterm() -> None:
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))


# -- values as text ------------------------------------------------------------------------

def sec_usec(timestamp_ns: int) -> tuple[int, int]:
    return timestamp_ns // 1_000_000_000, timestamp_ns // 1000 % 1_000_000


def value_text(v: Any) -> str:
    if isinstance(v, (bytes, np.bytes_)):
        return v.decode("ascii", "replace")
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(int(v))


def row_dict(row: np.void, names: list[str] | None = None) -> dict[str, Any]:
    """One row as JSON-ready values (addresses as text)."""
    from web10g._netlink import format_addresses

    out: dict[str, Any] = {}
    for name in names or row.dtype.names:
        v = row[name]
        if name in ("local_addr", "rem_addr"):
            out[name] = str(format_addresses(v.reshape(1, 16), [row["family"]])[0])
        elif isinstance(v, (bytes, np.bytes_)):
            out[name] = v.decode("ascii", "replace")
        elif isinstance(v, (float, np.floating)):
            out[name] = float(v)
        else:
            out[name] = int(v)
    return out


def write_csv(rows: np.ndarray, names: list[str], header: bool) -> None:
    w = csv.writer(sys.stdout, lineterminator="\n")
    if header:
        w.writerow(names)
    for r in rows:
        d = row_dict(r, names)
        w.writerow([d[n] for n in names])
