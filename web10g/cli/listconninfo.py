"""``web10g listconninfo``: connections with their owner's uid, pid and command."""
from __future__ import annotations

import os
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


# What reading another user's /proc/PID/fd takes (procfs.socket_owners): listing the
# directory (mode 0500, owner's) needs CAP_DAC_READ_SEARCH (or CAP_DAC_OVERRIDE), reading
# its links ptrace access, i.e. CAP_SYS_PTRACE.
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE = 1, 2, 19
HIDDEN_OWNERS = ("owners (PID, command) of other users' connections are hidden: reading "
                 "another user's /proc/PID/fd needs root, or both CAP_SYS_PTRACE and "
                 "CAP_DAC_READ_SEARCH")


def _effective_caps() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return -1 if os.geteuid() == 0 else 0


def owners_hidden(uid: np.ndarray, pid: np.ndarray, rows: np.ndarray) -> bool:
    """Whether some owners were left blank because this process may not look at other
    users' processes (not: because no process holds the socket)."""
    caps = _effective_caps()
    can_list = caps >> CAP_DAC_READ_SEARCH & 1 or caps >> CAP_DAC_OVERRIDE & 1
    if caps >> CAP_SYS_PTRACE & 1 and can_list:
        return False
    # minisockets (SYN-RECV 3, TIME-WAIT 6) have no owning process for anyone
    held = (rows["state"] != 3) & (rows["state"] != 6)
    theirs = (uid >= 0) & (uid != os.geteuid()) & held
    return bool(np.any(theirs & (pid < 0)))


DESCRIPTION = """\
List the connections with their owner: user id, and the process (PID and command name)
holding the socket, found through /proc. Owners of other users' connections can only
be found by root, or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH; otherwise their PID
and command are blank (a note on stderr says so). Sockets no process holds (TIME-WAIT,
orphans) have none."""

EPILOG = "classic: web10g-listconninfo"


def main(argv=None, prog="web10g-listconninfo") -> int:
    p = c.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG)
    c.add_backend(p)
    c.add_filter(p)
    c.add_output(p)
    args = p.parse_args(argv)

    def body() -> int:
        from web10g.rows import addresses

        with c.open_agent(args) as agent:
            rows = connections(agent, args)
            uid, pid, cmd = owners(agent, rows)
        if owners_hidden(uid, pid, rows):
            c.note(prog, HIDDEN_OWNERS)
        if args.json or args.csv:
            recs = []
            for i, r in enumerate(rows):
                d = c.row_dict(r, ["cid", "family", "local_addr", "local_port", "rem_addr",
                                   "rem_port"])
                # JSON escapes what it must itself; CSV and the table get escapes here
                d.update(command=(cmd[i] if args.json else c.printable(cmd[i])) or None,
                         pid=int(pid[i]) if pid[i] >= 0 else None,
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
                r["cid"], c.printable(cmd[i])[:12], pid[i] if pid[i] >= 0 else "",
                uid[i] if uid[i] >= 0 else "", local[i], r["local_port"], remote[i],
                r["rem_port"]))
        sys.stdout.write("".join(out))
        return 0

    return c.run_tool(prog, body)


if __name__ == "__main__":
    sys.exit(main())
