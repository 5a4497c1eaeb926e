"""``web10g readvars CID``: one connection's variables (the classic web10g-readvars)."""
from __future__ import annotations

import sys

import numpy as np

from web10g import mib
from web10g.cli import _common as c


def classic_block(row: np.void, variables: list[mib.Variable], *, heading: str = "{} Table",
                  extras_heading: bool = True, fmt: str = "{}={}",
                  values: dict[str, int] | None = None) -> str:
    """The classic text: ``Timestamp sec: S, usec: U`` then, per table, a heading and
    ``Name=value`` lines (masked variables omitted, headings always printed)."""
    sec, usec = c.sec_usec(int(row["timestamp"]))
    out = [f"Timestamp sec: {sec}, usec: {usec}\n"]
    for table in mib.TABLES:
        if table != "extras" or extras_heading:
            out.append("\n\n" + heading.format(c.TABLE_HEADINGS[table]) + "\n\n")
        for v in variables:
            if v.table == table:
                val = values[v.name] if values is not None else row[v.name]
                out.append(fmt.format(v.name, c.value_text(val)) + "\n")
    return "".join(out)


def selection_parser(prog: str, doc: str, loop: bool = False):
    p = c.ArgumentParser(prog=prog, description=doc.splitlines()[0])
    p.add_argument("cid", metavar="CID", help="connection id (see web10g listconns)")
    c.add_selection(p)
    c.add_backend(p)
    c.add_output(p)
    if loop:
        p.add_argument("-s", dest="classic_csv", action="store_true",
                       help="classic CSV output")
        c.add_loop(p)
    return p


def main(argv=None, prog="web10g-readvars") -> int:
    p = selection_parser(prog, __doc__)
    args = p.parse_args(argv)

    def body() -> int:
        cid = c.parse_cid(args.cid)
        with c.open_agent(args) as agent:
            names = c.selection(args, agent)
            row = agent.read_vars(cid, names)
            variables = c.classic_names(agent, row.reshape(1) if row.shape else
                                        np.array([row]))
        if args.json:
            print(c.json.dumps(c.row_dict(row)))
        elif args.csv:
            c.write_csv(np.array([row]), list(row.dtype.names), header=True)
        else:
            sys.stdout.write(classic_block(row, variables))
        return 0

    return c.run_tool(prog, body)


if __name__ == "__main__":
    sys.exit(main())
