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
from web10g.cli._common import ArgumentParser, fail, print_json, run_tool

DESCRIPTION = """\
Print the variables (MIB) a backend provides, in the classic getmib format: per table,
each name with its type code. estats: the Web10G kernel module's own list. sock_diag
(any stock kernel): the Web10G variables web10g can supply from inet_diag/tcp_info,
then the stock-only extras. --builtin LAYOUT: web10g's built-in table of a module
layout, without asking the kernel.

--csv: one line per variable with a header (table, index, name, type_code, ...);
--json: a list of objects with the same fields."""

EPILOG = "classic: web10g-getmib"


def _parser(prog: str) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="whose variables to list (auto: estats when the Web10G kernel "
                        "module is loaded, else sock_diag)")
    p.add_argument("--builtin", nargs="?", const="head", choices=mib.LAYOUTS, metavar="LAYOUT",
                   help="print web10g's built-in table of a module layout "
                        "(head, middle, old) without asking the kernel")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="JSON output (a list of objects)")
    g.add_argument("--csv", action="store_true", help="CSV output with a header line")
    return p


def print_csv(records: list[dict]) -> None:
    """Records as CSV; nested objects (the sock_diag mapping) become prefixed columns."""
    import csv

    flat = [{f"{k}_{k2}" if isinstance(v, dict) else k: v2
             for k, v in r.items()
             for k2, v2 in (v.items() if isinstance(v, dict) else [(k, v)])}
            for r in records]
    columns = list(dict.fromkeys(k for r in flat for k in r))
    lead = [k for k in ("table", "index", "name", "type_code") if k in columns]
    columns = lead + [k for k in columns if k not in lead]
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(columns)
    for r in flat:
        w.writerow(["" if r.get(k) is None else r[k] for k in columns])


def print_records(records: list[dict], as_csv: bool) -> None:
    if as_csv:
        print_csv(records)
    else:
        print_json(records)


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
    return run_tool(prog, lambda: _run(argv, prog))


def _run(argv: list[str] | None, prog: str) -> int:
    args = _parser(prog).parse_args(argv)
    if args.backend != "auto" and not (args.builtin or args.json or args.csv):
        from web10g.backends import backend_class

        own = backend_class(args.backend).describe_variables()
        if own is not None:             # the backend's own listing (ebpf: class and hook)
            sys.stdout.write(own)
            return 0
    if args.builtin:
        lay = mib.layout(args.builtin)
        if args.json or args.csv:
            print_records([_as_dict(v) for v in lay.variables()], args.csv)
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
            if args.json or args.csv:
                print_records([{"table": mib.TABLES[t], "index": i, "name": name,
                                "type_code": code}
                               for t, table in enumerate(agent.mib_tables)
                               for i, (name, code) in enumerate(table)], args.csv)
            else:
                sys.stdout.write(mib.format_getmib(agent.mib_tables))
            return 0
    if args.json or args.csv:
        print_records([_as_dict(v) for v in variables], args.csv)
    else:
        sys.stdout.write(_format_sock_diag(variables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
