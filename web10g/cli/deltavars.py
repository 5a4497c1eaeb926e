"""``web10g deltavars CID``: one connection's counters as differences between samples."""
from __future__ import annotations

import sys

from web10g.cli import _common as c
from web10g.cli.readvars import classic_block, selection_parser
from web10g.cli.watchvars import sample_loop


def delta(v, cur: int, prev: int) -> int:
    """Counters as the difference from the previous sample, modulo their wire width (so
    a 32-bit wrap reads as the small positive step it was); others as they are."""
    if not v.is_counter:
        return cur
    width = 64 if v.wire == "u64" else 32
    return (cur - prev) % (1 << width)


def main(argv=None, prog="web10g-deltavars") -> int:
    args = selection_parser(prog, __doc__, loop=True).parse_args(argv)

    def render(row, variables, n, state):
        prev = state.get("prev")
        values = {v.name: delta(v, int(row[v.name]), int(prev[v.name]) if prev is not None else 0)
                  if row[v.name].dtype.kind in "iu" else row[v.name] for v in variables}
        state["prev"] = row.copy()
        if args.json:
            d = c.row_dict(row, [n for n in row.dtype.names if n not in values])
            d.update({k: int(val) if not isinstance(val, bytes) else val.decode()
                      for k, val in values.items()})
            print(c.json.dumps(d))
        elif args.csv or args.classic_csv:
            sec, usec = c.sec_usec(int(row["timestamp"]))
            if n == 0:
                sep = "," if args.classic_csv else ","
                sys.stdout.write("sec,usec," + "".join(v.name + sep for v in variables) + "\n")
            sys.stdout.write(f"{sec},{usec}," + "".join(
                c.value_text(values[v.name]) + "," for v in variables) + "\n")
        else:
            sys.stdout.write(classic_block(row, variables, heading=" {} Table",
                                           extras_heading=False, fmt="{:<20}= {}",
                                           values=values) + "\n\n")

    return c.run_tool(prog, lambda: sample_loop(args, prog, render))


if __name__ == "__main__":
    sys.exit(main())
