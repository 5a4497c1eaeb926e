"""``web10g writevar CID NAME VALUE``: write a tunable of one connection.

On a Web10G kernel: LimCwnd and LimRwin (TCPE_CMD_WRITE_VAR). On a stock kernel:
LimRwin (TCP_WINDOW_CLAMP), cc_algorithm, max_pacing_rate_bytes_per_s and
notsent_lowat_bytes, on the owner's socket through pidfd_getfd.
"""
from __future__ import annotations

import sys

from web10g.cli import _common as c

DESCRIPTION = """\
Write a tunable of one connection. On a Web10G kernel: LimCwnd and LimRwin. On a stock
kernel: LimRwin (TCP_WINDOW_CLAMP), cc_algorithm, max_pacing_rate_bytes_per_s and
notsent_lowat_bytes, set on the owner's socket through pidfd_getfd (which needs ptrace
rights over the owning process)."""

EPILOG = "classic: web10g-writevar CID VARNAME VALUE"


def main(argv=None, prog="web10g-writevar") -> int:
    p = c.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("cid", metavar="CID")
    p.add_argument("name", metavar="VARNAME", help="LimCwnd or LimRwin (Web10G); stock "
                   "kernels: LimRwin, cc_algorithm, max_pacing_rate_bytes_per_s, "
                   "notsent_lowat_bytes")
    p.add_argument("value", metavar="VALUE")
    c.add_backend(p)
    args = p.parse_args(argv)

    def body() -> int:
        cid = c.parse_cid(args.cid)
        with c.open_agent(args) as agent:
            value: int | str = args.value
            if args.name.lower() != "cc_algorithm":
                try:
                    value = int(args.value, 0)
                except ValueError:
                    raise c.ToolError(f"{args.name} takes a whole number, not "
                                      f"{args.value!r}") from None
            agent.write_var(cid, args.name, value)
        return 0

    return c.run_tool(prog, body)


if __name__ == "__main__":
    sys.exit(main())
