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
    """(uid, pid, command) per row; uid/pid -1 when unknown.

    sock_diag rows carry uid and inode. estats rows do not: the same kernel's sock_diag
    tables are matched by 4-tuple to find them (best effort, as the classic tool's
    /proc/net/tcp pass).
    """
    from web10g import procfs

    uid = rows["uid"].astype(np.int64)
    inode = rows["inode"].astype(np.int64)
    if agent.backend != "sock_diag":
        uid[:] = -1
        try:
            import web10g

            with web10g.open("sock_diag") as sd:
                table = sd.list_conns()
        except OSError:
            table = rows[:0]
        # match 4-tuples as raw bytes, vectorised: sort the table's keys, search ours
        theirs, ours = _tuple_keys(table), _tuple_keys(rows)
        order = np.argsort(theirs)
        at = np.minimum(np.searchsorted(theirs, ours, sorter=order), max(len(table) - 1, 0))
        if len(table):
            hit = theirs[order[at]] == ours
            uid[hit] = table["uid"][order[at]][hit]
            inode[hit] = table["inode"][order[at]][hit]
    pids, names = procfs.owners_of(inode)
    return uid, pids, names


def _tuple_keys(rows: np.ndarray) -> np.ndarray:
    """family, local address/port, remote address/port of each row as one byte string."""
    key = np.zeros(len(rows), dtype=[("f", "u1"), ("la", "V16"), ("lp", ">u2"),
                                     ("ra", "V16"), ("rp", ">u2")])
    key["f"], key["lp"], key["rp"] = rows["family"], rows["local_port"], rows["rem_port"]
    key["la"] = rows["local_addr"].view("V16").ravel()
    key["ra"] = rows["rem_addr"].view("V16").ravel()
    return key.view("S37").ravel()


def main(argv=None, prog="web10g-listconninfo") -> int:
    p = c.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    c.add_backend(p)
    c.add_filter(p)
    c.add_output(p)
    args = p.parse_args(argv)

    def body() -> int:
        from web10g.sockdiag import addresses

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
