"""``web10g convert IN OUT``: a recording as CSV or Parquet.

IN is a high-rate recording (``web10g logger --record``) or a classic record file
(``web10g recordwrite``). OUT picks the format: ``.csv``; ``.parquet`` (one file); or a
directory (an existing one, a name ending in '/', or ``--dataset``): the hive-partitioned
dataset ``web10g serve --parquet`` writes (``DIR/host=H/date=D/hour=HH/part-*.parquet``;
``--host``, default the recording's host). Parquet needs pyarrow (``pip install
'web10g[parquet]'``) and has the dataset's schema either way: ``timestamp[ns, UTC]``,
addresses as text, nulls for values not reported, row groups of many samples (see
web10g/collector/parquet.py). Converting the same recording again replaces the same
files: nothing is duplicated.
"""
from __future__ import annotations

import hashlib
import os
import stat
import sys
from typing import Any

import numpy as np

from web10g.cli import _common as c


def _samples(path: str, vars_: list[str] | None):
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic == b"W10GRAW1":
        from web10g.backends.replay import ReplayAgent

        with ReplayAgent(path) as agent:
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


DESCRIPTION = """\
Convert a recording to CSV or Parquet. IN is a high-rate recording (web10g logger
--record) or a classic record file (web10g recordwrite); OUT picks the format: .csv,
.parquet, or a directory (or --dataset): the hive-partitioned dataset that web10g serve
--parquet writes (host=H/date=YYYY-MM-DD/hour=HH/part-*.parquet). Parquet needs pyarrow
(pip install 'web10g[parquet]'): timestamp[ns, UTC], addresses as text, nulls for
unreported values, row groups of many samples."""

EPILOG = "classic: none (web10g only)"


def _source_info(path: str) -> tuple[str, str]:
    """(host, backend) a recording's header names ('' when it has none)."""
    try:
        from web10g.recording import Recording

        h = Recording(path).header
        return str(h.get("host") or ""), str(h.get("backend") or "")
    except Exception:  # noqa: BLE001 - classic record files have no such header
        return "", ""


def _parquet(args: Any, vars_: list[str] | None, fmt: str, prog: str) -> int:
    from web10g.collector import parquet as pqw

    host, backend = _source_info(args.input)
    meta = {"source": os.path.basename(args.input)}
    if fmt == "parquet":
        n = pqw.write_file(_samples(args.input, vars_), args.output, host=host,
                           backend=backend, metadata=meta)
        print(f"{prog}: wrote {n} rows to {args.output}", file=sys.stderr)
        return 0
    host = pqw.check_host(args.host or (host.split(".")[0] if host else "")
                          or pqw.default_host())
    # the same input gives the same file names, so converting again replaces them
    with open(args.input, "rb") as fh:
        digest = hashlib.blake2b(fh.read(1 << 20), digest_size=5).hexdigest()
    files = pqw.write_dataset(_samples(args.input, vars_), args.output, host=host,
                              writer_id=f"c{digest}", backend=backend, metadata=meta,
                              rotate_seconds=args.rotate_seconds)
    total = sum(f.rows for f in files)
    print(f"{prog}: wrote {total} rows in {len(files)} files to {args.output}",
          file=sys.stderr)
    return 0


def main(argv=None, prog="web10g-convert") -> int:
    p = c.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT", help="file.csv, file.parquet or a dataset DIR")
    p.add_argument("--vars", metavar="NAMES", help="comma-separated variables (default all)")
    p.add_argument("--dataset", action="store_true",
                   help="OUT is a dataset directory (host=H/date=D/hour=HH/part-*.parquet)")
    p.add_argument("--host", help="the dataset's host=H (default: the recording's host)")
    p.add_argument("--rotate-seconds", type=float, default=3600.0, metavar="S",
                   help="dataset files span at most this much recorded time (3600)")
    args = p.parse_args(argv)

    def body() -> int:
        from web10g import _format, mib

        vars_ = [mib.lookup(v.strip()).name for v in args.vars.split(",")] if args.vars else None
        is_dir = (args.dataset or args.output.endswith(os.sep)
                  or os.path.isdir(args.output))
        fmt = "dataset" if is_dir else args.output.rsplit(".", 1)[-1].lower()
        if fmt not in ("csv", "parquet", "dataset"):
            raise c.ToolError("OUT must end in .csv or .parquet, or be a directory "
                              "(the dataset layout)")
        # IN is opened more than once (its kind, its host, its samples): a FIFO would
        # block the second open for a writer that has gone, a device never end
        if not stat.S_ISREG(os.stat(args.input).st_mode):
            raise c.ToolError(f"{args.input} is not a regular file (a pipe or a device): "
                              "convert reads its input more than once; copy it to a file "
                              "first")
        if fmt in ("parquet", "dataset"):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise c.ToolError("writing Parquet needs pyarrow: "
                                  "pip install 'web10g[parquet]'") from None
            return _parquet(args, vars_, fmt, prog)
        total = 0
        writer: Any = None
        from web10g._files import create_output, private_if_secret

        # no symlink followed, nothing but a regular file replaced (web10g._files)
        with create_output(args.output, overwrite=True) as out:
            for rows in _samples(args.input, vars_):
                total += len(rows)
                if writer is None:           # sequence numbers: none for others
                    private_if_secret(out, rows.dtype.names)
                if fmt == "csv":
                    cols = [(n, _format.KIND_ADDR if n in ("local_addr", "rem_addr")
                             else _format.kind_of(rows.dtype.fields[n][0]))
                            for n in rows.dtype.names]
                    if writer is None:
                        out.write((",".join(rows.dtype.names) + "\n").encode())
                        writer = True
                    out.write(_format.format_rows(np.ascontiguousarray(rows), cols))
        print(f"{prog}: wrote {total} rows to {args.output}", file=sys.stderr)
        return 0

    return c.run_tool(prog, body)


if __name__ == "__main__":
    sys.exit(main())
