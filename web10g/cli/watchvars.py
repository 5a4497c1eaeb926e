"""``web10g watchvars CID``: one connection's variables, sampled at an interval."""
from __future__ import annotations

import sys

import numpy as np

from web10g.cli import _common as c
from web10g.cli.readvars import CLASSIC_CSV_HELP, classic_block, selection_parser


class ReplayedFlow:
    """One connection through a recording (--replay): each ``next()`` reads the next
    recorded sample (EndOfRecording, an EOFError, after the last) and returns the
    connection's row, or None when that sample does not have it. Runs of such samples
    are reported on stderr; a connection in no sample at all is an error."""

    def __init__(self, agent, cid: int, prog: str) -> None:
        self.agent, self.cid, self.prog = agent, cid, prog
        self.samples = 0            # samples read
        self.found = 0              # samples that had the connection
        self._gap: int | None = None

    def next(self, names):
        rows = self.agent.read_all(names, states="all")     # any state, as read_vars
        self.samples += 1
        hit = np.flatnonzero(rows["cid"] == self.cid)
        if not hit.size:
            if self._gap is None:
                self._gap = self.samples
            return None
        self._report_gap(self.samples - 1)
        self.found += 1
        return rows[hit[0]]

    def _report_gap(self, last: int) -> None:
        """Report the samples since the connection went missing, up to ``last``."""
        if self._gap is not None and last >= self._gap:
            first = self._gap
            span = f"sample {first}" if first == last else f"samples {first}-{last}"
            c.note(self.prog, f"flow {self.cid} is not in recorded {span}")
        self._gap = None

    def finish(self) -> None:
        if not self.found:
            raise c.ToolError(f"flow {self.cid} is in none of the {self.samples} recorded "
                              "samples read")
        self._report_gap(self.samples)


def sample_loop(args, prog, render) -> int:
    """Shared by watchvars and deltavars: READ_VARS at the interval until --count or the
    connection goes away (then the classic tools stop with an error, exit 1).

    With --replay, each sample is the next one of the recording (as fast as it can be
    read) and the loop ends with the recording; samples without the connection are
    skipped and reported on stderr.
    """
    c.stop_on_sigterm()
    cid = c.parse_cid(args.cid)
    interval = c.interval_of(args)
    with c.open_agent(args) as agent:
        names = c.selection(args, agent)
        reported = c.Reported(agent)
        replay = None if agent.capabilities.live else ReplayedFlow(agent, cid, prog)
        state: dict[str, object] = {}
        shown = 0
        for _ in c.ticks(interval, args.count, agent):
            if replay is None:
                row = agent.read_vars(cid, names)
            else:
                try:
                    row = replay.next(names)
                except EOFError:
                    break
                if row is None:
                    continue
            variables = c.shown_variables(agent, np.array([row]))
            render(row, variables, shown, state, reported.missing_in(row))
            shown += 1
            sys.stdout.flush()
        if replay is not None:
            replay.finish()
    return 0


DESCRIPTION = """\
Print one connection's variables at an interval (the readvars text for each sample),
until --count samples or until the connection closes. With --replay FILE the samples
are those of a recording (web10g logger --record), printed as fast as they are read;
the output ends with the recording.

The Web10G variables come first, then the stock (non-Web10G) extras. Values the kernel
did not report are left out of the text, null in --json and empty fields in the CSVs.
--csv columns: time (seconds.microseconds), cid, local_addr, local_port, rem_addr,
rem_port, then one per variable (as deltavars --csv and logger --csv)."""

EPILOG = "classic: web10g-watchvars CID [-m MASK] [-s] [-i INTERVAL_MS]"


def main(argv=None, prog="web10g-watchvars") -> int:
    args = selection_parser(prog, DESCRIPTION, loop=True, epilog=EPILOG,
                            classic_csv=CLASSIC_CSV_HELP.format(
                                sep="tab", classic="web10g-watchvars -s")).parse_args(argv)

    def render(row, variables, n, state, missing):
        if args.json:
            print(c.json.dumps(c.row_dict(row, missing=missing)))
        elif args.csv:
            c.sample_csv(row, variables, header=n == 0, missing=missing)
        elif args.classic_csv:
            sec, usec = c.sec_usec(int(row["timestamp"]))
            if n == 0:
                sys.stdout.write("sec,usec," + "".join(v.name + "\t" for v in variables) + "\n")
            sys.stdout.write(f"{sec},{usec}," + "".join(
                ("" if v.name in missing else c.value_text(row[v.name])) + ","
                for v in variables) + "\n")
        else:
            sys.stdout.write(classic_block(row, variables, heading=" {} Table",
                                           extras_heading=False, missing=missing) + "\n\n")

    return c.run_tool(prog, lambda: sample_loop(args, prog, render))


if __name__ == "__main__":
    sys.exit(main())
