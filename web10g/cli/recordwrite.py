"""``web10g recordwrite CID [FILE]``: one sample of a connection into a record file.

The classic web10g-record_write: one read of every variable, printed, and written as a
libestats record file (default ./test-record) that the C tools can read; the header
extension carries web10g's self-description (layout, address type, CID), which the C
reader ignores.
"""
from __future__ import annotations

import sys

import numpy as np

from web10g import mib
from web10g.cli import _common as c

DEFAULT_FILE = "./test-record"


DESCRIPTION = """\
Read every variable of one connection once, print the sample, and write it as a
libestats record file (default ./test-record) that the classic C tools can read. The
file's header extension carries web10g's self-description (layout, address type, CID),
which the C reader ignores; --no-metadata leaves it out."""

EPILOG = "classic: web10g-record_write CID   (writes ./test-record)"


def main(argv=None, prog="web10g-recordwrite") -> int:
    p = c.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("cid", metavar="CID")
    p.add_argument("file", metavar="FILE", nargs="?", default=DEFAULT_FILE)
    p.add_argument("--no-metadata", action="store_true",
                   help="write no header extension (byte-identical in shape to the C tool)")
    c.add_backend(p)
    args = p.parse_args(argv)

    def body() -> int:
        from web10g.record import RecordWriter, format_record

        cid = c.parse_cid(args.cid)
        with c.open_agent(args) as agent:
            layout = getattr(agent, "layout", None) or mib.layout("head")
            row = agent.read_vars(cid)          # read first: no file is left on failure
        rows = np.array([row])
        with RecordWriter(args.file, layout=layout.name, metadata=not args.no_metadata,
                          cid=cid, family=int(row["family"])) as w:
            w.write(rows)
        masked = np.array([[v.name not in row.dtype.names or
                            (hasattr(agent, "available") and
                             not agent.available(rows, v.name)[0])
                            for v in layout.variables()]])
        sys.stdout.write(format_record(row, layout, masked[0]))
        return 0

    return c.run_tool(prog, body)


if __name__ == "__main__":
    sys.exit(main())
