"""``web10g deltavars CID``: one connection's counters as differences between samples."""
from __future__ import annotations

import sys

from web10g.cli import _common as c
from web10g.cli.readvars import CLASSIC_CSV_HELP, classic_block, selection_parser
from web10g.cli.watchvars import sample_loop


def delta(v, cur: int, prev: int) -> int:
    """Counters as the difference from the previous sample, modulo their wire width (so
    a 32-bit wrap reads as the small positive step it was); others as they are."""
    if not v.is_counter:
        return cur
    wide = v.wire == "u64" or (v.is_stock and v.dtype.itemsize == 8)   # stock: numpy codes
    return (cur - prev) % (1 << (64 if wide else 32))


def _json_value(val):
    if isinstance(val, (bytes, c.np.bytes_)):
        return val.decode("ascii", "replace")
    if isinstance(val, (float, c.np.floating)):
        return float(val)
    return int(val)


DESCRIPTION = """\
Print one connection's counters as differences from the previous sample (the first
sample against zero, so it shows absolute values) and its other variables as they
are, at an interval, until --count samples or until the connection closes. With
--replay FILE the samples are those of a recording, and the output ends with it.

A counter's difference is blank (null in --json) when either sample lacks the value.
--csv columns: time (seconds.microseconds), cid, local_addr, local_port, rem_addr,
rem_port, then one per variable (as watchvars --csv and logger --csv)."""

EPILOG = "classic: web10g-deltavars CID [-m MASK] [-s] [-i INTERVAL_MS]"


def main(argv=None, prog="web10g-deltavars") -> int:
    args = selection_parser(prog, DESCRIPTION, loop=True, epilog=EPILOG,
                            classic_csv=CLASSIC_CSV_HELP.format(
                                sep="comma", classic="web10g-deltavars -s")).parse_args(argv)

    def render(row, variables, n, state, missing):
        prev = state.get("prev")
        values = {v.name: delta(v, int(row[v.name]), int(prev[v.name]) if prev is not None else 0)
                  if row[v.name].dtype.kind in "iu" else row[v.name] for v in variables}
        # a difference needs both values (libestats: masked if either input is)
        gone = set(missing) | {v.name for v in variables if v.is_counter and prev is not None
                               and v.name in state.get("prev_missing", ())}
        state["prev"], state["prev_missing"] = row.copy(), set(missing)
        if args.json:
            d = c.row_dict(row, [n for n in row.dtype.names if n not in values], missing)
            d.update({k: None if k in gone else _json_value(val) for k, val in values.items()})
            print(c.json.dumps(d))
        elif args.csv:
            c.sample_csv(row, variables, header=n == 0, values=values, missing=gone)
        elif args.classic_csv:
            sec, usec = c.sec_usec(int(row["timestamp"]))
            if n == 0:
                sys.stdout.write("sec,usec," + "".join(v.name + "," for v in variables) + "\n")
            sys.stdout.write(f"{sec},{usec}," + "".join(
                ("" if v.name in gone else c.value_text(values[v.name])) + ","
                for v in variables) + "\n")
        else:
            sys.stdout.write(classic_block(row, variables, heading=" {} Table",
                                           extras_heading=False, fmt="{:<20}= {}",
                                           values=values, missing=gone) + "\n\n")

    return c.run_tool(prog, lambda: sample_loop(args, prog, render))


if __name__ == "__main__":
    sys.exit(main())
