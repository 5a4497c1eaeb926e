"""web10g ebpf load | unload | status: the ebpf backend's instruments (root).

"load" loads the BPF programs the kernel accepts, attaches them (sock_ops on the cgroup
v2 root, tp_btf tracepoints, TCP iterators) and pins them under /sys/fs/bpf/web10g/
(--pin-dir); loading twice is harmless. --reader-group GROUP lets that group read
the flows (default: root only). --full adds the per-segment hooks (tcp_probe on every
received segment, sock_ops on every sent segment): more variables, a dearer data path.
"status" says what is loaded, since when, which hooks the kernel accepted and which
variables are therefore available. "unload" removes every pin.
"""
from __future__ import annotations

import sys

from web10g.cli._common import ArgumentParser, fail, print_json


def _parser(prog: str) -> ArgumentParser:
    p = ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True)
    for name, text in (("load", "load, attach and pin the instruments"),
                       ("unload", "remove every pin (the programs detach)"),
                       ("status", "what is loaded and which variables it provides")):
        s = sub.add_parser(name, help=text)
        s.add_argument("--pin-dir", default=None, help="where the pins live "
                       "(default /sys/fs/bpf/web10g, or $WEB10G_EBPF_PIN_DIR)")
        if name == "load":
            s.add_argument("--reader-group", metavar="GROUP",
                           help="let GROUP read the flows (default: root only)")
            s.add_argument("--full", dest="full", action="store_true", default=False,
                           help="add the per-segment hooks (tcp_probe on every received "
                                "segment, sock_ops on every sent segment): 115 instead of "
                                "92 variables, 8-11%% instead of about 3%% of small "
                                "request/response round trips")
            s.add_argument("--default", dest="full", action="store_false",
                           help="event hooks only (the default)")
            s.add_argument("--reload", action="store_true",
                           help="unload first when already loaded")
        if name == "status":
            s.add_argument("--json", action="store_true", help="machine-readable output")
            s.add_argument("--variables", action="store_true",
                           help="list the available variables too")
    return p


def main(argv: list[str] | None = None, prog: str = "web10g ebpf") -> int:
    from web10g.backends import ebpf_loader as L

    args = _parser(prog).parse_args(argv)
    pin_dir = args.pin_dir or L.DEFAULT_PIN_DIR
    try:
        if args.action == "load":
            res = L.load(pin_dir, full=args.full, reader_group=args.reader_group,
                         reload=args.reload)
            if res.already:
                print(f"already loaded in {res.pin_dir} (nothing changed; --reload to "
                      "load again)")
            else:
                print(f"loaded and pinned in {res.pin_dir}")
            for g, why in res.refused.items():
                print(f"  refused by the kernel: {g}: {why}")
            return 0
        if args.action == "unload":
            removed = L.unload(pin_dir)
            print(f"unloaded: removed {len(removed)} pins from {pin_dir}" if removed
                  else f"nothing loaded in {pin_dir}")
            return 0
        st = L.status(pin_dir)
    except (OSError, L.EbpfError, ValueError) as exc:
        return fail(prog, exc)
    if args.json:
        print_json(st)
        return 0
    if not st["loaded"]:
        print(f"not loaded ({st['pin_dir']})")
        if "not_built" in st:
            print(st["not_built"])
        return 1
    print(f"loaded in {st['pin_dir']} since {st['since']} ({st['mode']} mode, HZ {st['hz']})")
    print("hooks:")
    for name, ok in st["hooks"].items():
        print(f"  {'yes' if ok else 'NO '}  {name}")
    if st.get("closed_records_lost"):
        print(f"close records lost (ring buffer full) since the load: "
              f"{st['closed_records_lost']:,}")
    print(f"variables: {len(st['available'])} available, {len(st['unavailable'])} not")
    if args.variables:
        print("  " + " ".join(st["available"]))
    for name, why in st["unavailable"].items():
        print(f"  n/a  {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def format_getmib() -> str:
    """Every HEAD variable with how the ebpf backend supplies it (class, hook) and, when
    the instruments are loaded, whether the hooks this kernel accepted provide it
    (``web10g getmib --backend ebpf``)."""
    from web10g import errors, mib
    from web10g.backends import ebpf_loader as L

    try:
        st = L.status()
    except (OSError, errors.Web10GError):
        st = {"loaded": False}
    avail = set(mib.ebpf_availability(st["hook_bits"])[0]) if st.get("loaded") else None
    heads = mib.variables(backend="estats")
    n = sum(1 for v in heads if v.ebpf and v.ebpf.available)
    where = (f"the loaded instruments provide {len(avail)}" if avail is not None
             else "not loaded ('web10g ebpf load')")
    out = [f"TCP Extended Statistics (RFC 4898) via ebpf: {n} of {len(heads)} variables "
           f"have a source; {where}."]
    for table, title in zip(mib.TABLES, mib.TABLE_TITLES):
        out.append(f"{title} Table:")
        for v in heads:
            if v.table != table:
                continue
            e = v.ebpf
            cls = e.match if e else "unavailable"
            extra = ""
            if cls == "unavailable":
                extra = f"  ({e.note})" if e and e.note else ""
            elif avail is not None and v.name not in avail:
                extra = "  [hook not loaded]"
            out.append(f"\t{v.name}\t({v.type_code})\t{cls}\t{e.hook if e else '-'}{extra}")
    return "\n".join(out) + "\n"
