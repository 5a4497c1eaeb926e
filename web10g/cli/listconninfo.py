"""``web10g listconninfo``: connections with their owner's uid, pid and command."""
from __future__ import annotations

import sys

import numpy as np

from web10g.cli import _common as c
from web10g.cli.listconns import connections

HEADER = ("CID      cmdline      PID      UID      LocalAddr            LocalPort RemAddr"
          "              RemPort \n"
          "-------- ------------ -------- -------- -------- -------------------- -------- "
          "-------------------- --------\n\n")


def owners(agent, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uid, pid, command) per row; uid/pid -1 when unknown (the agent finds them: from
    the rows where they carry uid and inode, else by matching sockets)."""
    uid, _ = agent.socket_ids(rows)
    pids, names = agent.owners(rows)
    return uid, pids, names


def main(argv=None, prog="web10g-listconninfo") -> int:
    p = c.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    c.add_backend(p)
    c.add_filter(p)
    c.add_output(p)
    args = p.parse_args(argv)

    def body() -> int:
        from web10g.rows import addresses

        with c.open_agent(args) as agent:
            rows = connections(agent, args)
            uid, pid, cmd = owners(agent, rows)
        if args.json or args.csv:
            recs = []
            for i, r in enumerate(rows):
                d = c.row_dict(r, ["cid", "family", "local_addr", "local_port", "rem_addr",
                                   "rem_port"])
                d.update(command=cmd[i] or None, pid=int(pid[i]) if pid[i] >= 0 else None,
                         uid=int(uid[i]) if uid[i] >= 0 else None)
                recs.append(d)
            if args.json:
                for d in recs:
                    print(c.json.dumps(d))
            else:
                w = c.csv.writer(sys.stdout, lineterminator="\n")
                cols = ["cid", "command", "pid", "uid", "local_addr", "local_port", "rem_addr",
                        "rem_port"]
                w.writerow(cols)
                for d in recs:
                    w.writerow(["" if d[k] is None else d[k] for k in cols])
            return 0
        local, remote = addresses(rows, "local"), addresses(rows, "rem")
        out = [HEADER]
        for i, r in enumerate(rows):
            out.append("%-8d %-12s %-8s %-8s %-20s %-8s %-20s %-8s\n" % (
                r["cid"], cmd[i][:12], pid[i] if pid[i] >= 0 else "",
                uid[i] if uid[i] >= 0 else "", local[i], r["local_port"], remote[i],
                r["rem_port"]))
        sys.stdout.write("".join(out))
        return 0

    return c.run_tool(prog, body)


if __name__ == "__main__":
    sys.exit(main())
