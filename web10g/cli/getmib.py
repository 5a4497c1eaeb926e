"""``web10g getmib``: the variables a backend provides, in the classic getmib format.

The classic tool prints the running module's INIT reply. Here the list depends on the
backend: ``estats`` is the Web10G kernel's own list; ``sock_diag`` (every stock kernel) is
the Web10G variables this package can supply from inet_diag/tcp_info, followed by the
stock-only extras; ``--builtin LAYOUT`` prints web10g's built-in table without asking
the kernel.
"""
from __future__ import annotations

import sys

import web10g
from web10g import errors, mib
from web10g.backends import BACKENDS
from web10g.cli._common import ArgumentParser, fail, print_json


def _parser(prog: str) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="whose variables to list (auto: estats when the Web10G kernel "
                        "module is loaded, else sock_diag)")
    p.add_argument("--builtin", nargs="?", const="head", choices=mib.LAYOUTS, metavar="LAYOUT",
                   help="print web10g's built-in table of a module layout "
                        "(head, middle, old) without asking the kernel")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _as_dict(v: mib.Variable) -> dict:
    return {
        "name": v.name, "table": v.table, "index": v.index, "rfc_name": v.rfc_name,
        "type": v.var_type, "type_code": v.type_code, "wire": v.wire, "dtype": v.dtype.str,
        "units": v.units, "writable": v.writable, "counter": v.is_counter,
        "description": v.description,
        "sock_diag": {"match": v.sock_diag.match, "source": v.sock_diag.source,
                      "conversion": v.sock_diag.conversion, "kernel": v.sock_diag.kernel},
    }


def _format_sock_diag(variables: list[mib.Variable]) -> str:
    """The classic layout, restricted to what sock_diag supplies, plus the stock extras."""
    web10g = [v for v in variables if not v.is_stock]
    stock = [v for v in variables if v.is_stock]
    out = [f"TCP Extended Statistics (RFC 4898) via sock_diag provides {len(web10g)} of "
           f"{len(mib.variables())  - len(mib.variables(table=mib.STOCK_TABLE))} variables "
           f"and {len(stock)} stock-only extras."]
    for table, title in zip(mib.TABLES, mib.TABLE_TITLES):
        out.append(f"{title} Table:")
        out += [f"\t{v.name}\t({v.type_code})" for v in web10g if v.table == table]
    out.append("Stock-only Extras:")
    out += [f"\t{v.name}\t({v.var_type})" for v in stock]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None, prog: str = "web10g-getmib") -> int:
    args = _parser(prog).parse_args(argv)
    if args.builtin:
        lay = mib.layout(args.builtin)
        if args.json:
            print_json([_as_dict(v) for v in lay.variables()])
        else:
            sys.stdout.write(mib.format_getmib(lay))
        return 0

    try:
        agent = web10g.open(args.backend)
    except (OSError, errors.Web10GError, ValueError) as exc:
        return fail(prog, exc)
    with agent:
        variables = agent.variables()
        if agent.mib_tables is not None:
            # the module's own INIT reply, verbatim, as the classic tool prints it
            if args.json:
                print_json([{"table": mib.TABLES[t], "index": i, "name": name,
                             "type_code": code}
                            for t, table in enumerate(agent.mib_tables)
                            for i, (name, code) in enumerate(table)])
            else:
                sys.stdout.write(mib.format_getmib(agent.mib_tables))
            return 0
    if args.json:
        print_json([_as_dict(v) for v in variables])
    else:
        sys.stdout.write(_format_sock_diag(variables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
