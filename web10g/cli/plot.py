"""``web10g plot``: a recording's busiest flows over time, as a PNG.

One subplot per quantity (throughput, cwnd, RTT, retransmits by default), one line per
flow. Needs matplotlib: ``pip install 'web10g[plot]'``.
"""
from __future__ import annotations

import sys

from web10g.cli import _common as c

DESCRIPTION = """\
Plot a recording's busiest flows over time as a PNG: one subplot per quantity
(throughput, cwnd, RTT, retransmits by default), one line per flow. Needs matplotlib:
pip install 'web10g[plot]'."""

EPILOG = "classic: none (web10g only)"


def main(argv: list[str] | None = None, prog: str = "web10g-plot") -> int:
    from web10g.plot import DEFAULT_VARS, QUANTITIES

    p = c.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("recording", metavar="RECORDING",
                   help="a recording (web10g logger --record FILE)")
    p.add_argument("-o", "--output", metavar="OUT.png", required=True,
                   help="the PNG to write")
    p.add_argument("--top", type=int, default=10, metavar="N",
                   help="plot the N flows that moved the most bytes (default 10)")
    p.add_argument("--vars", metavar="NAMES", default=",".join(DEFAULT_VARS),
                   help=f"comma-separated quantities, one subplot each: "
                        f"{', '.join(QUANTITIES)} (default {','.join(DEFAULT_VARS)})")
    p.add_argument("--title", help="the figure's title (default: what is shown)")
    args = p.parse_args(argv)

    def body() -> int:
        from web10g.plot import plot
        from web10g.recording import RecordingError

        if args.top < 1:
            raise c.ToolError("--top must be at least 1")
        names = [n.strip() for n in args.vars.split(",") if n.strip()]
        try:
            import matplotlib  # noqa: F401 - fail before reading a long recording
        except ImportError:
            raise c.ToolError("plotting needs matplotlib: pip install 'web10g[plot]'") from None
        try:
            out = plot(args.recording, args.output, vars=names, top=args.top,
                       title=args.title)
        except RecordingError as exc:
            raise c.ToolError(f"{args.recording}: {exc}") from None
        except ImportError as exc:      # e.g. a zstd-compressed recording without zstandard
            raise c.ToolError(str(exc)) from None
        print(f"wrote {out}")
        return 0

    return c.run_tool(prog, body)


if __name__ == "__main__":
    sys.exit(main())
