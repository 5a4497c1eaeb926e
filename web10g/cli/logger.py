"""``web10g logger``: every connection's variables as CSV, at a fixed interval.

The classic web10g-logger read LIST_CONNS then one READ_VARS per connection; here one
bulk read per sample (READ_ALL / a sock_diag dump) feeds a C formatter, on a deadline
schedule that does not drift. ``--record FILE`` also (or instead, with ``-o /dev/null``)
writes a high-rate recording that ``--replay`` and ``web10g convert`` read back.
"""
from __future__ import annotations

import socket
import sys

import numpy as np

from web10g.cli import _common as c


def exclude_address(host: str) -> bytes:
    """The classic -e: an IPv4 address or host name, resolved once (IPv4 only)."""
    try:
        info = socket.getaddrinfo(host, None, socket.AF_INET)
    except socket.gaierror as exc:
        raise c.ToolError(f"getaddrinfo: {exc.strerror}") from None
    return socket.inet_aton(str(info[0][4][0]))


def blank_unreported(rows: np.ndarray, columns: list, missing: dict[str, np.ndarray],
                     keep: set[str]):
    """(rows, columns) for the C formatter with the values the kernel did not report as
    empty fields: those columns become text (as the formatter would print them), blank
    where missing. Only the ``keep`` fields and the printed columns are carried over."""
    from web10g import _format

    if not missing:
        return rows, columns
    fields, data = [], {}
    for name in rows.dtype.names:
        if name not in keep and name not in missing and name not in dict(columns):
            continue
        col = rows[name]
        if name in missing:
            if col.dtype.kind == "S":
                col = col.copy()
            elif col.dtype.kind == "f":
                col = np.char.mod("%.17g", col).astype(np.bytes_)
            else:
                col = col.astype(np.bytes_)
            col[missing[name]] = b""
            fields.append((name, col.dtype))
        else:
            fields.append((name, rows.dtype.fields[name][0]))
        data[name] = col
    out = np.empty(len(rows), dtype=fields)
    for name, col in data.items():
        out[name] = col
    return out, [(n, _format.KIND_STR if n in missing else kind) for n, kind in columns]


DESCRIPTION = """\
Print every connection's variables as CSV at a fixed interval, one row per connection
and sample. One bulk read per sample (READ_ALL on a Web10G kernel, a sock_diag dump on
a stock one), on a deadline schedule that does not drift. --record FILE also (or, with
-o /dev/null, instead) writes a compressed high-rate recording that --replay FILE and
'web10g convert' read back.

Output: by default the classic web10g-logger CSV, whose header separates names with
', ' (so pandas.read_csv sees ' CID' unless given skipinitialspace=True); --csv gives
plain names: time, cid, local_addr, local_port, rem_addr, rem_port, then one column
per variable. Values the kernel did not report are empty fields (null in --json)."""

EPILOG = ("classic: web10g-logger [-e EXCLUDE_HOST] [-i INTERVAL_MS] [-m MASK] [-h]\n\n"
          "(its header: 'Time, CID, SrcIp, SrcPort, DstIp, DstPort,Name, Name, ...')")


def main(argv=None, prog="web10g-logger") -> int:
    p = c.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("-e", dest="exclude", metavar="HOST",
                   help="leave out rows whose local or remote address is HOST (IPv4)")
    c.add_selection(p)
    c.add_loop(p)
    c.add_filter(p)
    c.add_backend(p)
    c.add_output(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write the CSV here (default stdout)")
    p.add_argument("--record", metavar="FILE",
                   help="also write a compressed high-rate recording of every sample")
    args = p.parse_args(argv)

    def body() -> int:
        from web10g import _format

        c.stop_on_sigterm()
        interval = c.interval_of(args)
        excl = exclude_address(args.exclude) if args.exclude else None
        from web10g._files import create_output, private_if_secret

        # no symlink followed, nothing but a regular file (or /dev/null) replaced
        out = (create_output(args.output, overwrite=True) if args.output
               else sys.stdout.buffer)
        recorder = None
        try:
            with c.open_agent(args) as agent:
                names = c.selection(args, agent)
                if names is None and not args.json and not args.record:
                    # the classic columns only: the kernel then skips the extensions
                    # (memory, congestion-control, shutdown info) nobody prints
                    names = [v.name for v in agent.variables() if not v.is_stock]
                states = (c.states_arg(args.states) if args.states
                          else None)
                if args.record:
                    from web10g.recording import Recorder

                    recorder = Recorder(args.record, agent)
                reported = c.Reported(agent)
                # idle flows print the same text sample after sample but for the time:
                # their rows' text is copied from the previous sample's, not formatted
                text_cache = _format.TextCache()
                header_done = False
                columns = None
                for _ in c.ticks(interval, args.count, agent):
                    if recorder is not None:
                        rows = recorder.sample(names, filter=args.filter, states=states)
                    else:
                        rows = agent.read_all(names, filter=args.filter, states=states)
                    if excl is not None:
                        want = np.frombuffer(excl, np.uint8)
                        hit = (rows["family"] == socket.AF_INET) & (
                            np.all(rows["local_addr"][:, :4] == want, axis=1)
                            | np.all(rows["rem_addr"][:, :4] == want, axis=1))
                        rows = rows[~hit]
                    if columns is None:
                        variables = c.classic_names(agent, rows) if names is None else [
                            v for v in agent.variables() if v.name in set(names)]
                        columns = [(v.name, _format.kind_of(rows.dtype.fields[v.name][0]))
                                   for v in variables]
                        if args.output:   # sequence numbers: none for others
                            private_if_secret(out, rows.dtype.names)
                    missing = reported.missing(rows, [n for n, _ in columns]
                                               if not args.json else None)
                    if args.json:
                        for i, r in enumerate(rows):
                            gone = {n for n, m in missing.items() if m[i]}
                            out.write((c.json.dumps(c.row_dict(r, missing=gone)) + "\n")
                                      .encode())
                    else:
                        if not header_done:
                            fixed = "Time, CID, SrcIp, SrcPort, DstIp, DstPort"
                            if args.csv:
                                fixed = "time,cid,local_addr,local_port,rem_addr,rem_port"
                            sep = "," if args.csv else ", "
                            out.write((fixed + ("," + sep.join(n for n, _ in columns)
                                                if columns else "") + "\n").encode())
                            header_done = True
                        lead = [
                            ("timestamp", _format.KIND_TIME), ("cid", _format.KIND_UINT),
                            ("local_addr", _format.KIND_ADDR), ("local_port", _format.KIND_UINT),
                            ("rem_addr", _format.KIND_ADDR), ("rem_port", _format.KIND_UINT),
                        ]
                        # unreported values: empty fields; the text goes from the C
                        # formatter's buffer to the file (no bytes object in between)
                        _format.format_rows(rows, lead + columns, blank=missing, file=out,
                                            cache=text_cache)
                    out.flush()
        finally:
            if recorder is not None:
                recorder.close()
            if args.output:
                out.close()
        return 0

    return c.run_tool(prog, body)


if __name__ == "__main__":
    sys.exit(main())
