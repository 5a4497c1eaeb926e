"""``web10g serve``: a long-running collector that feeds sinks from one sampler.

* :mod:`web10g.collector.service` -- :class:`Collector` (sampling loop, signals, health);
* :mod:`web10g.collector.sinks` -- the sink runner (a thread and a bounded queue per sink)
  and the Parquet, Prometheus and raw-recording sinks;
* :mod:`web10g.collector.parquet` -- the hive-partitioned Parquet dataset writer (also
  used by ``web10g convert``); :mod:`web10g.datasets` reads it;
* :mod:`web10g.collector.prometheus` -- aggregation into bounded series and the
  /metrics endpoint;
* :mod:`web10g.collector.config`, :mod:`web10g.collector.log` -- configuration (flags,
  TOML) and structured logs.

pyarrow and prometheus_client are optional: ``pip install 'web10g[collector]'``.
"""
from __future__ import annotations

from web10g.collector.config import Config
from web10g.collector.service import Collector

__all__ = ["Collector", "Config"]
