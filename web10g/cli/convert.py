"""``web10g convert IN OUT``: a recording as CSV or Parquet.

IN is a high-rate recording (``web10g logger --record``) or a classic record file
(``web10g recordwrite``); OUT's extension picks the format: ``.csv`` or ``.parquet``
(needs pyarrow: ``pip install 'web10g[parquet]'``). Every sample becomes rows with a
``timestamp`` column; addresses are written as text.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from web10g.cli import _common as c


def _samples(path: str, vars_: list[str] | None):
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic == b"W10GRAW1":
        import web10g

        with web10g.open(replay=path) as agent:
            yield from agent.samples_iter(vars_)
        return
    from web10g.record import RecordReader

    rows = RecordReader(path).rows()
    if vars_:
        keep = [n for n in rows.dtype.names if n in set(vars_) or n in (
            "cid", "family", "state", "local_addr", "local_port", "rem_addr", "rem_port",
            "timestamp")]
        rows = rows[keep]
    yield rows


def _table_columns(rows: np.ndarray) -> dict[str, np.ndarray]:
    from web10g._netlink import format_addresses

    cols: dict[str, np.ndarray] = {}
    for name in rows.dtype.names:
        if name in ("local_addr", "rem_addr"):
            cols[name] = format_addresses(rows[name], rows["family"])
        elif rows.dtype.fields[name][0].kind == "S":
            cols[name] = np.char.decode(rows[name], "ascii", "replace")
        else:
            cols[name] = np.ascontiguousarray(rows[name])
    return cols


def main(argv=None, prog="web10g-convert") -> int:
    p = c.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT", help="file.csv or file.parquet")
    p.add_argument("--vars", metavar="NAMES", help="comma-separated variables (default all)")
    args = p.parse_args(argv)

    def body() -> int:
        from web10g import _format, mib

        vars_ = [mib.lookup(v.strip()).name for v in args.vars.split(",")] if args.vars else None
        fmt = args.output.rsplit(".", 1)[-1].lower()
        if fmt not in ("csv", "parquet"):
            raise c.ToolError("OUT must end in .csv or .parquet")
        if fmt == "parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise c.ToolError("writing Parquet needs pyarrow: "
                                  "pip install 'web10g[parquet]'") from None
        total = 0
        writer: Any = None
        with open(args.output, "wb") as out:
            for rows in _samples(args.input, vars_):
                total += len(rows)
                if fmt == "csv":
                    cols = [(n, _format.KIND_ADDR if n in ("local_addr", "rem_addr")
                             else _format.kind_of(rows.dtype.fields[n][0]))
                            for n in rows.dtype.names]
                    if writer is None:
                        out.write((",".join(rows.dtype.names) + "\n").encode())
                        writer = True
                    out.write(_format.format_rows(np.ascontiguousarray(rows), cols))
                else:
                    table = pa.table(_table_columns(rows))
                    if writer is None:
                        writer = pq.ParquetWriter(out, table.schema, compression="zstd")
                    writer.write_table(table)
            if fmt == "parquet" and writer is not None:
                writer.close()
        print(f"{prog}: wrote {total} rows to {args.output}", file=sys.stderr)
        return 0

    return c.run_tool(prog, body)


if __name__ == "__main__":
    sys.exit(main())
