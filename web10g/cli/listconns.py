"""``web10g listconns``: one line per connection (the classic web10g-listconns)."""
from __future__ import annotations

import sys

import numpy as np

from web10g.cli import _common as c

HEADER = ("CID      LocalAddr            LocalPort RemAddr              RemPort \n"
          "-------- -------------------- -------- -------------------- --------\n\n")


def default_states(agent, args):
    if args.states:
        return c.states_arg(args.states)
    return None         # the package's one rule: open connections


def connections(agent, args) -> np.ndarray:
    rows = agent.list_conns(filter=args.filter, states=default_states(agent, args))
    return rows[np.argsort(rows["cid"], kind="stable")]


DESCRIPTION = """\
List the connections, one line per connection in CID order: CID, local address and
port, remote address and port. By default the open connections (as a Web10G kernel
lists them: no listeners, no TIME-WAIT); --states and --filter choose others."""

EPILOG = "classic: web10g-listconns"


def main(argv=None, prog="web10g-listconns") -> int:
    p = c.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG)
    c.add_backend(p)
    c.add_filter(p)
    c.add_output(p)
    args = p.parse_args(argv)

    def body() -> int:
        from web10g.rows import addresses

        with c.open_agent(args) as agent:
            rows = connections(agent, args)
        names = ["cid", "family", "state", "local_addr", "local_port", "rem_addr", "rem_port"]
        if args.json:
            for r in rows:
                print(c.json.dumps(c.row_dict(r, names)))
            return 0
        if args.csv:
            c.write_csv(rows, names, header=True)
            return 0
        local, remote = addresses(rows, "local"), addresses(rows, "rem")
        out = [HEADER]
        for i, r in enumerate(rows):
            out.append("%-8s %-20s %-8s %-20s %-8s\n" % (r["cid"], local[i], r["local_port"],
                                                        remote[i], r["rem_port"]))
        sys.stdout.write("".join(out))
        return 0

    return c.run_tool(prog, body)


if __name__ == "__main__":
    sys.exit(main())
