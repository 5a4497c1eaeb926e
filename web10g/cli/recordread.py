"""``web10g recordread [FILE]``: print the samples of a record file.

Reads the classic libestats record file (default ./test-record) written by either the
C tools or web10g; the checksum is verified first. A damaged or unfinished file is
reported with the offset of the damage; ``--salvage`` prints what precedes it.
"""
from __future__ import annotations

import sys

import numpy as np

from web10g.cli import _common as c
from web10g.cli.recordwrite import DEFAULT_FILE

DESCRIPTION = """\
Print the samples of a libestats record file (default ./test-record), written by the
classic C tools or by web10g recordwrite: the first one, or every one with --all. The
file's checksum is verified first; a damaged or unfinished file is reported with the
offset of the damage, and --salvage prints the records before it. Masked variables
print as '-' (null in --json, empty in --csv)."""

EPILOG = "classic: web10g-record_read   (reads ./test-record)"


def main(argv=None, prog="web10g-recordread") -> int:
    p = c.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("file", metavar="FILE", nargs="?", default=DEFAULT_FILE)
    p.add_argument("--layout", choices=("head", "middle", "old"),
                   help="the writer's variable layout when the file does not say (default head)")
    p.add_argument("--all", action="store_true",
                   help="print every record (the classic tool prints the first)")
    p.add_argument("--salvage", action="store_true",
                   help="on a damaged file, print the records before the damage")
    c.add_output(p)
    args = p.parse_args(argv)

    def body() -> int:
        from web10g.record import RecordError, RecordReader, format_record, read_salvage

        damage = None
        try:
            reader = RecordReader(args.file, layout=args.layout)
            rows, masked, layout = reader.rows(), reader.masked(), reader.layout
        except RecordError:
            if not args.salvage:
                raise
            rows, damage = read_salvage(args.file, layout=args.layout)
            import web10g.mib as mib

            # the layout the rows were decoded with (the file's metadata may name one)
            names = set(rows.dtype.names or ())
            layout = next((mib.layout(n) for n in mib.LAYOUTS
                           if set(mib.layout(n).flat_names()) <= names),
                          mib.layout(args.layout or "head"))
            masked = None
        if not args.all:
            rows = rows[:1]
        # masked slots (variables the writer did not get) are null / empty, not 0
        lost: dict[str, np.ndarray] = {}
        if masked is not None:
            cols = set(rows.dtype.names or ())
            for j, v in enumerate(layout.variables()):
                if v.name in cols and masked[:len(rows), j].any():
                    lost[v.name] = masked[:len(rows), j]
        if args.json:
            for i, r in enumerate(rows):
                gone = {n for n, m in lost.items() if m[i]}
                print(c.json.dumps(c.row_dict(r, missing=gone)))
        elif args.csv:
            c.write_csv(rows, list(rows.dtype.names or ()), header=True, missing=lost)
        else:
            sys.stdout.write("\n".join(format_record(r, layout,
                                                     None if masked is None else masked[i])
                                       for i, r in enumerate(rows)))
        if damage is not None:
            print(f"{prog}: {damage}", file=sys.stderr)
            return 1
        return 0

    return c.run_tool(prog, body)


if __name__ == "__main__":
    sys.exit(main())
