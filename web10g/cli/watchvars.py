"""``web10g watchvars CID``: one connection's variables, sampled at an interval."""
from __future__ import annotations

import sys

import numpy as np

from web10g.cli import _common as c
from web10g.cli.readvars import classic_block, selection_parser


def sample_loop(args, prog, render) -> int:
    """Shared by watchvars and deltavars: READ_VARS at the interval until --count or the
    connection goes away (then the classic tools stop with an error, exit 1)."""
    c.stop_on_sigterm()
    cid = c.parse_cid(args.cid)
    interval = c.interval_of(args)
    with c.open_agent(args) as agent:
        names = c.selection(args, agent)
        state: dict[str, object] = {}
        for n in c.ticks(interval, args.count, agent):
            row = agent.read_vars(cid, names)
            variables = c.classic_names(agent, np.array([row]))
            render(row, variables, n, state)
            sys.stdout.flush()
    return 0


def main(argv=None, prog="web10g-watchvars") -> int:
    args = selection_parser(prog, __doc__, loop=True).parse_args(argv)

    def render(row, variables, n, state):
        if args.json:
            print(c.json.dumps(c.row_dict(row)))
        elif args.csv:
            c.write_csv(np.array([row]), list(row.dtype.names), header=n == 0)
        elif args.classic_csv:
            sec, usec = c.sec_usec(int(row["timestamp"]))
            if n == 0:
                sys.stdout.write("sec,usec," + "".join(v.name + "\t" for v in variables) + "\n")
            sys.stdout.write(f"{sec},{usec}," + "".join(
                c.value_text(row[v.name]) + "," for v in variables) + "\n")
        else:
            sys.stdout.write(classic_block(row, variables, heading=" {} Table",
                                           extras_heading=False) + "\n\n")

    return c.run_tool(prog, lambda: sample_loop(args, prog, render))


if __name__ == "__main__":
    sys.exit(main())
