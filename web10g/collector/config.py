"""The collector's configuration: defaults < TOML file < command-line flags.

A TOML file may put every key at the top level or in sections named after the sinks;
the keys are the long flag names with '_' for '-'::

    interval = 1.0
    filter = "sport = :443"
    host = "web-3"
    log_format = "json"

    [parquet]
    dir = "/var/lib/web10g/dataset"      # --parquet
    rotate_seconds = 300
    rotate_bytes = 268435456
    retain_hours = 168                   # delete this host's files older than a week
    retain_bytes = 53687091200           # ... and the oldest past 50 GiB

    [prometheus]
    listen = "127.0.0.1:9464"            # --prometheus
    keys = ["local_port", "remote_net", "state"]
    top_k = 20
    series_budget = 2000

    [record]
    path = "/var/lib/web10g/raw.w10g"    # --record
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from typing import Any

# section -> {toml key: config attribute}
_SECTION_KEYS = {
    "parquet": {"dir": "parquet", "rotate_seconds": "rotate_seconds",
                "rotate_bytes": "rotate_bytes", "row_group_rows": "row_group_rows",
                "compression_level": "compression_level", "retain_hours": "retain_hours",
                "retain_bytes": "retain_bytes"},
    "prometheus": {"listen": "prometheus", "keys": "prom_keys", "ipv4_prefix": "ipv4_prefix",
                   "ipv6_prefix": "ipv6_prefix", "top_k": "top_k",
                   "series_budget": "series_budget"},
    "record": {"path": "record"},
}


@dataclass
class Config:
    # sampling
    backend: str = "auto"
    netns: str | None = None
    replay: str | None = None
    interval: float = 1.0
    vars: list[str] | None = None            # None: the default dataset variables
    all_vars: bool = False
    filter: str | None = None
    states: str | None = None
    count: int | None = None                 # stop after N samples (tests, one-shots)
    host: str | None = None
    # sinks
    parquet: str | None = None
    rotate_seconds: float = 300.0
    rotate_bytes: int = 256 << 20
    retain_hours: float | None = None        # None: keep every file
    retain_bytes: int | None = None
    row_group_rows: int = 1 << 20
    compression_level: int = 1
    prometheus: str | None = None
    prom_keys: list[str] = field(default_factory=lambda: ["local_port", "remote_net", "state"])
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64
    top_k: int = 0
    series_budget: int = 2000
    record: str | None = None
    # service
    sink_queue: int = 4                      # samples a sink may fall behind before drops
    log_format: str = "text"
    log_level: str = "info"
    shutdown_timeout: float = 30.0

    def check(self) -> Config:
        if not self.interval > 0:
            raise ValueError("interval must be positive")
        if not (self.parquet or self.prometheus or self.record):
            raise ValueError("no sink: give --parquet DIR, --prometheus HOST:PORT and/or "
                             "--record FILE")
        if self.log_format not in ("text", "json"):
            raise ValueError("log_format must be 'text' or 'json'")
        if self.sink_queue < 1:
            raise ValueError("sink_queue must be at least 1")
        if self.rotate_seconds <= 0 or self.rotate_bytes <= 0:
            raise ValueError("rotation limits must be positive")
        if (self.retain_hours is not None and not self.retain_hours > 0) or \
                (self.retain_bytes is not None and self.retain_bytes <= 0):
            raise ValueError("retention limits must be positive (leave them out to keep "
                             "every file)")
        return self


MAX_CONFIG_BYTES = 1 << 20


def _toml_load(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ImportError("reading a TOML config on Python 3.10 needs tomli: "
                              "pip install 'web10g[collector]'") from None
    with open(path, "rb") as fh:
        # a config is a few hundred bytes: /dev/zero or a wrong path to a huge file is
        # refused, not read until memory runs out
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: more than {MAX_CONFIG_BYTES:,} bytes; not a web10g serve "
                         "config (a TOML file of a few lines)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         "a config is a TOML file") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None


def from_toml(path: str) -> dict[str, Any]:
    """The config attributes a TOML file sets (unknown keys are errors)."""
    data = _toml_load(path)
    names = {f.name for f in fields(Config)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            table = _SECTION_KEYS.get(key)
            if table is None:
                raise ValueError(f"{path}: unknown section [{key}]")
            for k, v in value.items():
                attr = table.get(k, k if k in names else None)
                if attr is None:
                    raise ValueError(f"{path}: unknown key {k!r} in [{key}]")
                out[attr] = v
        else:
            attr = key.replace("-", "_")
            if attr not in names:
                raise ValueError(f"{path}: unknown key {key!r}")
            out[attr] = value
    for k in ("vars", "prom_keys"):
        if isinstance(out.get(k), str):
            out[k] = [s.strip() for s in out[k].split(",") if s.strip()]
    return out


def build(file_values: dict[str, Any], flag_values: dict[str, Any]) -> Config:
    """Defaults, then the file, then the flags that were given (not None)."""
    cfg = Config()
    for source in (file_values, {k: v for k, v in flag_values.items() if v is not None}):
        for k, v in source.items():
            setattr(cfg, k, v)
    return cfg.check()
