"""``web10g readvars CID``: one connection's variables (the classic web10g-readvars)."""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from web10g import mib
from web10g.cli import _common as c


def classic_block(row: np.void, variables: list[mib.Variable], *, heading: str = "{} Table",
                  extras_heading: bool = True, fmt: str = "{}={}",
                  values: dict[str, int] | None = None, missing: Any = ()) -> str:
    """The classic text: ``Timestamp sec: S, usec: U`` then, per table, a heading and
    ``Name=value`` lines (masked variables omitted, headings always printed). Values the
    kernel did not report (``missing``) are omitted like masked ones. Stock (non-Web10G)
    variables follow under a "Stock" heading, printed only when there are any."""
    sec, usec = c.sec_usec(int(row["timestamp"]))
    out = [f"Timestamp sec: {sec}, usec: {usec}\n"]
    sections = [(c.TABLE_HEADINGS[t], t != "extras" or extras_heading,
                 [v for v in variables if v.table == t]) for t in mib.TABLES]
    stock = [v for v in variables if v.is_stock]
    if stock:
        sections.append((STOCK_HEADING, True, stock))
    for title, show_heading, members in sections:
        if show_heading:
            out.append("\n\n" + heading.format(title) + "\n\n")
        for v in members:
            if v.name not in missing:
                val = values[v.name] if values is not None else row[v.name]
                out.append(fmt.format(v.name, c.value_text(val)) + "\n")
    return "".join(out)


# The heading of the stock (non-Web10G) variables, after the Web10G tables.
STOCK_HEADING = "Stock"

CLASSIC_CSV_HELP = ("classic CSV (header 'sec,usec,' then each name followed by a {sep}, "
                    "as {classic} prints it; rows 'sec,usec,' then each value followed by "
                    "a comma); --csv is plain CSV")


def selection_parser(prog: str, doc: str, loop: bool = False, epilog: str | None = None,
                     classic_csv: str = ""):
    p = c.ArgumentParser(prog=prog, description=doc, epilog=epilog)
    p.add_argument("cid", metavar="CID", help="connection id (see web10g listconns)")
    c.add_selection(p)
    c.add_backend(p)
    c.add_output(p)
    if loop:
        p.add_argument("-s", dest="classic_csv", action="store_true",
                       help=classic_csv or "classic CSV output")
        c.add_loop(p)
    return p


DESCRIPTION = """\
Print one connection's variables: the Web10G (RFC 4898) tables, then the stock
(non-Web10G) extras the backend has. Values the kernel did not report are left out
of the text, null in --json and empty in --csv.

--csv columns: time (seconds.microseconds), cid, local_addr, local_port, rem_addr,
rem_port, then one per variable (the layout of 'web10g logger --csv')."""

EPILOG = "classic: web10g-readvars CID [-m MASK]"


def main(argv=None, prog="web10g-readvars") -> int:
    p = selection_parser(prog, DESCRIPTION, epilog=EPILOG)
    args = p.parse_args(argv)

    def body() -> int:
        cid = c.parse_cid(args.cid)
        with c.open_agent(args) as agent:
            names = c.selection(args, agent)
            row = agent.read_vars(cid, names)
            variables = c.shown_variables(agent, row.reshape(1) if row.shape else
                                          np.array([row]))
            missing = c.Reported(agent).missing_in(row)
        if args.json:
            print(c.json.dumps(c.row_dict(row, missing=missing)))
        elif args.csv:
            c.sample_csv(row, variables, header=True, missing=missing)
        else:
            sys.stdout.write(classic_block(row, variables, missing=missing))
        return 0

    return c.run_tool(prog, body)


if __name__ == "__main__":
    sys.exit(main())
