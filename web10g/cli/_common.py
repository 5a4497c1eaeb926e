"""What every subcommand shares: argument parsing with the classic exit codes, opening an
agent, variable selection (classic hex masks or names), sampling loops without drift,
and the output formats (classic text, --json, --csv)."""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from typing import Any, NoReturn

import numpy as np

from web10g import errors, mib
from web10g.cli import stdout_gone

# The Web10G table headings of the classic tools, by registry table.
TABLE_HEADINGS = dict(zip(mib.TABLES, ("Perf", "Path", "Stack", "App", "Tune", "Extras")))


class ParagraphHelpFormatter(argparse.HelpFormatter):
    """Descriptions and epilogs keep their paragraphs (blank-line separated), each one
    wrapped to the terminal's width."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(
            textwrap.fill(" ".join(par.split()), width, initial_indent=indent,
                          subsequent_indent=indent, break_on_hyphens=False,
                          break_long_words=False)
            for par in text.split("\n\n") if par.strip())


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the classic tools' convention: bad usage exits 1, not 2.

    Descriptions and epilogs keep their paragraphs, reST inline literals (````x````)
    print as plain text, and ``--help | head`` ends quietly.
    """

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("formatter_class", ParagraphHelpFormatter)
        for key in ("description", "epilog"):
            if kw.get(key):
                kw[key] = plain_text(kw[key])
        super().__init__(*args, **kw)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")

    def _print_message(self, message: str, file: Any = None) -> None:
        try:
            super()._print_message(message, file)
            if file is None or file is sys.stdout:
                sys.stdout.flush()
        except BrokenPipeError:
            stdout_gone()


def plain_text(text: str) -> str:
    """Help text without reST inline markup: ````web10g top````: -> web10g top:."""
    return re.sub(r"``(.+?)``", r"\1", text)


# C0 and C1 controls, DEL, and the Unicode format characters that reorder or hide text
# (bidi embeddings, overrides and isolates, zero-width characters): text that another
# user chooses (a process name) must not reach the terminal as escape sequences.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def _escape(m: re.Match[str]) -> str:
    o = ord(m.group())
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def printable(text: str) -> str:
    """``text`` with every control or text-reordering character shown as an escape
    (ESC -> ``\\x1b``): for strings other users control, printed on a terminal."""
    return _UNSAFE.sub(_escape, text)


ToolError = errors.ToolError     # a failure a tool reports as ``prog: message``, status 1


def fail(prog: str, message: object, code: int = 1) -> int:
    """Print ``prog: message`` on stderr and return the exit code to use."""
    print(f"{prog}: {error_text(message)}", file=sys.stderr)
    return code


def error_text(exc: object) -> str:
    """An exception as one line: OSErrors without the ``[Errno N]`` prefix."""
    if isinstance(exc, OSError) and exc.strerror:
        text = str(exc.strerror)
        if exc.filename is not None:
            return f"{os.fsdecode(exc.filename)}: {text}"
        return text
    return str(exc)


def note(prog: str, message: object) -> None:
    """A remark that is not an error: ``prog: note: message`` on stderr."""
    print(f"{prog}: note: {message}", file=sys.stderr)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def run_tool(prog: str, body: Any) -> int:
    """Run a tool's body, turning the errors users can cause into one clear line.

    Warnings the package issues while the body runs are printed as ``prog: note: ...``
    (no source line); the output is flushed here, so a reader that went away
    (``| head``) ends the tool quietly with status 0.
    """
    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
             line: Any = None) -> None:
        note(prog, message)

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            code = int(body() or 0)
            sys.stdout.flush()
            return code
        except KeyboardInterrupt:
            return 130
        except EOFError:
            return 0            # a replay ran out of samples: done
        except BrokenPipeError:
            # the reader (head, less) went away: not an error of ours
            stdout_gone()
            return 0
        except (ToolError, errors.Web10GError, mib.UnknownVariable, ValueError, OSError,
                LookupError) as exc:
            return fail(prog, exc)


# -- common arguments --------------------------------------------------------------------

def add_backend(p: argparse.ArgumentParser) -> None:
    from web10g.backends import BACKENDS

    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="kernel interface (auto: estats when the Web10G module is loaded)")
    p.add_argument("--netns", type=netns_arg,
                   help="network namespace (sock_diag): a name (ip netns), a path, or a "
                        "pid (a number: a pid, unless an 'ip netns' namespace has that name)")
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
                   help="comma-separated TCP states or groups, as ss names them: "
                        "established, syn-sent, syn-recv, fin-wait-1, fin-wait-2, "
                        "time-wait, closed, close-wait, last-ack, listening, closing; "
                        "all, connected, synchronized, bucket, big "
                        "(default: open connections, as a Web10G kernel lists them)")


def netns_arg(text: str) -> str | int:
    """--netns: a number is a process id (unless 'ip netns' has a namespace of that name);
    anything else a name or path, as web10g.netns.resolve() takes them."""
    if text.isascii() and text.isdigit():
        from web10g import netns

        if not any(os.path.lexists(os.path.join(d, text)) for d in netns.RUN_DIRS):
            return int(text)
    return text


def states_arg(text: str) -> list[object]:
    """--states: comma-separated state names and groups, ss's and netstat's spellings
    included ("listening", "big", "SYN_RCVD"; web10g.rows.parse_states knows them)."""
    return [item.strip() for item in text.split(",") if item.strip()]


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


def shown_variables(agent: Any, rows: np.ndarray) -> list[mib.Variable]:
    """The variables among ``rows``' columns as the tools print them: the Web10G ones in
    table order, then the stock (non-Web10G) extras."""
    cols = set(rows.dtype.names or ())
    stock = [v for v in agent.variables() if v.is_stock and v.name in cols]
    return classic_names(agent, rows) + stock


class Reported:
    """Which values the kernel actually reported (``agent.available``), so that the tools
    print null / an empty field instead of a 0 nobody measured.

    Whether a record carries a variable depends only on the parts of the record the
    kernel sent (the ``present`` bits, and tcp_info's length on sock_diag), so the
    answer is worked out once per distinct such metadata and reused for every row and
    sample that has it. Columns that are not variables (identity, time) always count as
    reported.
    """

    _KEYS = ("present", "tcp_info_len")

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self._variables = {v.name for v in agent.variables()}
        self._cache: dict[tuple[Any, ...], np.ndarray] = {}

    def missing(self, rows: np.ndarray, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """name -> per-row bool array, True where ``name`` was not reported; only the
        names with at least one such row are in the result."""
        rows = np.asarray(rows).reshape(-1)
        cols = [n for n in (names or rows.dtype.names or ()) if n in self._variables]
        if not cols or not len(rows):
            return {}
        keys = [k for k in self._KEYS if k in (rows.dtype.names or ())]
        if not keys:
            out = {}
            for n in cols:
                ok = np.asarray(self.agent.available(rows, n), bool)
                if not ok.all():
                    out[n] = ~ok
            return out
        key = np.zeros(len(rows), np.uint64)
        for k in keys:
            key = (key << np.uint64(16)) | rows[k].astype(np.uint64)
        if (key == key[0]).all():           # the usual case: one kind of record
            uniq, first, inverse = key[:1], np.zeros(1, np.intp), np.zeros(len(key), np.intp)
        else:
            uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        table = np.empty((len(uniq), len(cols)), bool)
        which = tuple(cols)
        for i, (u, at) in enumerate(zip(uniq.tolist(), first.tolist())):
            ck = (which, u)
            got = self._cache.get(ck)
            if got is None:
                one = rows[at:at + 1]
                got = np.array([bool(self.agent.available(one, n)[0]) for n in cols])
                if len(self._cache) > 256:
                    self._cache.clear()
                self._cache[ck] = got
            table[i] = got
        inverse = inverse.reshape(-1)
        return {n: ~table[inverse, j] for j, n in enumerate(cols) if not table[:, j].all()}

    def missing_in(self, row: np.void | np.ndarray, names: list[str] | None = None) -> set[str]:
        """The names one row lacks."""
        return set(self.missing(np.asarray(row).reshape(1), names))


def ticks(interval: float, count: int | None, agent: Any = None) -> Iterator[int]:
    """Sample numbers at a fixed rate without drift: deadlines on the monotonic clock.

    A late sample does not shift the ones after it; deadlines missed entirely are
    skipped rather than bunched up. ``count`` counts samples taken, not deadlines.
    """
    if agent is not None and not agent.capabilities.live:
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


def row_dict(row: np.void, names: list[str] | None = None,
             missing: Any = ()) -> dict[str, Any]:
    """One row as JSON-ready values (addresses as text; None for the names in
    ``missing``: values the kernel did not report)."""
    from web10g._netlink import format_addresses

    out: dict[str, Any] = {}
    for name in names or row.dtype.names:
        v = row[name]
        if name in missing:
            out[name] = None
        elif name in ("local_addr", "rem_addr"):
            out[name] = str(format_addresses(v.reshape(1, 16), [row["family"]])[0])
        elif isinstance(v, (bytes, np.bytes_)):
            out[name] = v.decode("ascii", "replace")
        elif isinstance(v, (float, np.floating)):
            out[name] = float(v)
        else:
            out[name] = int(v)
    return out


def write_csv(rows: np.ndarray, names: list[str], header: bool,
              missing: dict[str, np.ndarray] | None = None) -> None:
    """Rows as CSV; an empty field where ``missing[name][i]`` (not reported)."""
    w = csv.writer(sys.stdout, lineterminator="\n")
    if header:
        w.writerow(names)
    for i, r in enumerate(rows):
        gone = {n for n, m in (missing or {}).items() if m[i]}
        d = row_dict(r, names, gone)
        w.writerow(["" if d[n] is None else d[n] for n in names])


# The --csv layout of every tool that prints samples (logger, readvars, watchvars,
# deltavars): plain column names, one header line, time as seconds.microseconds.
CSV_FIXED = ("time", "cid", "local_addr", "local_port", "rem_addr", "rem_port")


def time_text(timestamp_ns: int) -> str:
    sec, usec = sec_usec(int(timestamp_ns))
    return f"{sec}.{usec:06d}"


def sample_csv(row: np.void, variables: list[mib.Variable], header: bool,
               values: dict[str, Any] | None = None, missing: Any = ()) -> None:
    """One connection's sample in the --csv layout (CSV_FIXED, then the variables); an
    empty field for a value the kernel did not report."""
    w = csv.writer(sys.stdout, lineterminator="\n")
    if header:
        w.writerow(list(CSV_FIXED) + [v.name for v in variables])
    d = row_dict(row, ["cid", "local_addr", "local_port", "rem_addr", "rem_port"])
    w.writerow([time_text(row["timestamp"]), d["cid"], d["local_addr"], d["local_port"],
                d["rem_addr"], d["rem_port"]]
               + ["" if v.name in missing else value_text(
                   values[v.name] if values is not None else row[v.name])
                  for v in variables])
