"""``web10g serve``: a long-running collector feeding a Parquet dataset, a Prometheus
endpoint and/or a raw recording.

    web10g serve --parquet /var/lib/web10g/dataset --prometheus 127.0.0.1:9464 --interval 1

Runs in the foreground (a systemd unit: contrib/web10g-serve.service). Configuration by
flags and an optional TOML file (``--config``; flags win). SIGTERM and SIGINT flush every
sink and exit 0; SIGHUP finishes the open files and starts new ones. Logs go to stderr,
one line per event (``--log-format json`` for JSON lines).
"""
from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING

from web10g.cli import _common as c

if TYPE_CHECKING:
    from web10g.collector.config import Config


def _int_size(text: str) -> int:
    t = text.strip().upper()
    mult = 1
    for suffix, m in (("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30), ("K", 1 << 10),
                      ("M", 1 << 20), ("G", 1 << 30)):
        if t.endswith(suffix):
            t, mult = t[:-len(suffix)], m
            break
    return int(float(t) * mult)


def parser(prog: str) -> c.ArgumentParser:
    p = c.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                         argument_default=None)
    p.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file "
                   "(see web10g/collector/config.py); flags override it")
    g = p.add_argument_group("sampling")
    g.add_argument("--backend", choices=["auto", "sock_diag", "estats"])
    g.add_argument("--netns", help="network namespace: a name, path or pid")
    g.add_argument("--replay", metavar="FILE", help="read a recording instead of a kernel")
    g.add_argument("--interval", type=float, metavar="SECONDS", help="sampling interval "
                   "(default 1)")
    g.add_argument("--vars", metavar="NAMES", help="comma-separated variables for the "
                   "dataset (default: counters, RTT, windows, rates and limits)")
    g.add_argument("--all-vars", action="store_true", default=None,
                   help="every variable the backend has")
    g.add_argument("--filter", metavar="EXPR", help="ss-style filter, e.g. 'sport = :443'")
    g.add_argument("--states", metavar="STATES", help="TCP states (default: open)")
    g.add_argument("--count", type=int, metavar="N", help="stop after N samples")
    g.add_argument("--host", help="the host name in the dataset's host=H partition and "
                   "the metrics' host label (default: this machine's short name)")
    g = p.add_argument_group("parquet dataset")
    g.add_argument("--parquet", metavar="DIR", help="write the hive-partitioned dataset here")
    g.add_argument("--rotate-seconds", type=float, metavar="S",
                   help="finish a file after this long (default 300; also at each UTC hour)")
    g.add_argument("--rotate-bytes", type=_int_size, metavar="SIZE",
                   help="finish a file past this size (default 256MiB)")
    g.add_argument("--retain-hours", type=float, metavar="H",
                   help="delete this host's files of hours that ended more than H hours "
                   "ago (default: keep every file)")
    g.add_argument("--retain-bytes", type=_int_size, metavar="SIZE",
                   help="delete this host's oldest files while its files take more than "
                   "SIZE (e.g. 50GiB; default: no limit)")
    g.add_argument("--row-group-rows", type=int, metavar="N",
                   help="rows per row group (default 1048576, capped at 128 MiB buffered)")
    g.add_argument("--compression-level", type=int, metavar="N",
                   help="zstd level (default 1: on flow statistics levels 1 and 3 gave "
                   "the same size, level 1 for less CPU)")
    g = p.add_argument_group("prometheus")
    g.add_argument("--prometheus", metavar="HOST:PORT", help="serve /metrics here")
    g.add_argument("--prom-keys", metavar="KEYS", help="aggregation keys, comma-separated "
                   "(default local_port,remote_net,state; also remote_port, local_addr)")
    g.add_argument("--ipv4-prefix", type=int, metavar="BITS", help="remote_net prefix (24)")
    g.add_argument("--ipv6-prefix", type=int, metavar="BITS", help="remote_net prefix (64)")
    g.add_argument("--top-k", type=int, metavar="K", help="per-flow series for the K "
                   "busiest flows (default 0)")
    g.add_argument("--series-budget", type=int, metavar="N", help="hard limit on flow "
                   "series (default 2000)")
    g = p.add_argument_group("recording")
    g.add_argument("--record", metavar="FILE", help="also write a raw recording")
    g = p.add_argument_group("service")
    g.add_argument("--sink-queue", type=int, metavar="N", help="samples a sink may fall "
                   "behind before its samples are dropped (default 4)")
    g.add_argument("--log-format", choices=["text", "json"])
    g.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    g.add_argument("--shutdown-timeout", type=float, metavar="S",
                   help="seconds the sinks get to flush on exit (default 30)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    from web10g.collector import config as cfg

    file_values = cfg.from_toml(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k != "config"}
    if flags.get("vars"):
        flags["vars"] = [s.strip() for s in flags["vars"].split(",") if s.strip()]
    if flags.get("prom_keys"):
        flags["prom_keys"] = [s.strip() for s in flags["prom_keys"].split(",") if s.strip()]
    return cfg.build(file_values, flags)


def main(argv=None, prog="web10g-serve") -> int:
    args = parser(prog).parse_args(argv)

    def body() -> int:
        from web10g.collector import Collector
        from web10g.collector.log import EventLog

        config = config_from_args(args)
        log = EventLog(fmt=config.log_format, level=config.log_level)
        collector = Collector(config, log=log)
        signal.signal(signal.SIGTERM, lambda *_: collector.stop())
        signal.signal(signal.SIGINT, lambda *_: collector.stop())
        signal.signal(signal.SIGHUP, lambda *_: collector.request_rotate())
        try:
            return collector.run()
        except ImportError as exc:
            raise c.ToolError(f"{exc} (pip install 'web10g[collector]')") from None

    return c.run_tool(prog, body)


if __name__ == "__main__":
    sys.exit(main())
