"""Open the Parquet dataset that ``web10g serve --parquet DIR`` and ``web10g convert IN
DIR`` write (layout: :mod:`web10g.collector.parquet`).

    ds = web10g.dataset("/var/lib/web10g/dataset", host="web-3", port=443,
                                start="2024-05-01T10:00", end="2024-05-01T12:00")
    df = ds.to_pandas(columns=["timestamp", "cid", "HCThruOctetsAcked", "rtt_us"])

Filters are pushed down: ``host``, ``date`` and ``hour`` (and the date/hour range that
``start``/``end`` imply) prune whole directories before any file is opened; ``port``
(local or remote) and the time range are checked against row-group statistics (rows
are stored sorted by local port, then flow, then time) and then row by row. Hidden
temporary files of writers still at work are never read.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any


def _pa() -> tuple[Any, Any]:
    try:
        import pyarrow
        import pyarrow.dataset as ds
    except ImportError:
        raise ImportError("reading the dataset needs pyarrow: "
                          "pip install 'web10g[parquet]'") from None
    return pyarrow, ds


def _ns(t: Any) -> int:
    """A time as ns since the epoch: int ns, float seconds, datetime, numpy/pandas
    timestamps, or ISO text (UTC unless it says otherwise)."""
    if isinstance(t, bool):
        raise TypeError("a time, not a bool")
    if isinstance(t, int):
        return t
    if isinstance(t, float):
        return int(t * 1e9)
    if isinstance(t, str):
        t = _dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    if isinstance(t, _dt.date) and not isinstance(t, _dt.datetime):
        t = _dt.datetime(t.year, t.month, t.day)
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000
    if hasattr(t, "value"):                 # pandas.Timestamp
        return int(t.value)
    import numpy as np

    return int(np.datetime64(t, "ns").astype("int64"))


def _list(x: Any) -> list[Any]:
    if isinstance(x, (str, int)) or not isinstance(x, Iterable):
        return [x]
    return list(x)


def _nullable(pa: Any, schema: Any) -> Any:
    """``schema`` with every column but the time and the identity nullable; None when
    it is so already."""
    from web10g.collector.parquet import ID_COLUMNS

    required = ("timestamp", "final", *ID_COLUMNS)
    if all(f.nullable or f.name in required for f in schema):
        return None
    return pa.schema([f if f.nullable or f.name in required else f.with_nullable(True)
                      for f in schema], metadata=schema.metadata)


class Dataset:
    """A pyarrow dataset of a web10g Parquet directory, with the filter already set.

    ``.dataset`` is the pyarrow ``Dataset``; ``.filter`` the pushed-down expression
    (None: everything). ``to_table``/``to_pandas``/``scanner``/``to_batches`` take
    ``columns`` and an extra ``filter`` expression (ANDed)."""

    def __init__(self, path: str | os.PathLike, *, host: Any = None, date: Any = None,
                 hour: Any = None, port: Any = None, start: Any = None, end: Any = None,
                 cid: Any = None) -> None:
        pa, ds = _pa()
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"no dataset directory {self.path!r}")
        part = ds.partitioning(pa.schema([("host", pa.string()), ("date", pa.string()),
                                          ("hour", pa.int32())]), flavor="hive")
        self.dataset = ds.dataset(self.path, format="parquet", partitioning=part,
                                  exclude_invalid_files=False,
                                  ignore_prefixes=[".", "_"])
        # pyarrow takes the schema of the first file it finds; a file whose variable
        # columns had no nulls stores them as required (web10g.collector.parquet), and
        # the next file may hold nulls in them: read every variable column as nullable
        schema = _nullable(pa, self.dataset.schema)
        if schema is not None:
            self.dataset = ds.dataset(self.path, format="parquet", partitioning=part,
                                      exclude_invalid_files=False, schema=schema,
                                      ignore_prefixes=[".", "_"])
        f = ds.field
        expr = None

        def add(e: Any) -> None:
            nonlocal expr
            expr = e if expr is None else expr & e

        if host is not None:
            add(f("host").isin([str(h) for h in _list(host)]))
        if date is not None:
            add(f("date").isin([str(d) for d in _list(date)]))
        if hour is not None:
            add(f("hour").isin([int(h) for h in _list(hour)]))
        if port is not None:
            ports = [int(p) for p in _list(port)]
            add(f("local_port").isin(ports) | f("rem_port").isin(ports))
        if cid is not None:
            add(f("cid").isin([int(c) for c in _list(cid)]))
        if start is not None or end is not None:
            ts = pa.timestamp("ns", tz="UTC")
            if start is not None:
                s = _ns(start)
                d = _dt.datetime.fromtimestamp(s / 1e9, _dt.timezone.utc)
                add(f("date") >= d.strftime("%Y-%m-%d"))
                add(f("timestamp") >= pa.scalar(s, ts))
            if end is not None:
                e = _ns(end)
                d = _dt.datetime.fromtimestamp(e / 1e9, _dt.timezone.utc)
                add(f("date") <= d.strftime("%Y-%m-%d"))
                add(f("timestamp") < pa.scalar(e, ts))
        self.filter = expr

    # -- what is there -------------------------------------------------------------------
    @property
    def schema(self) -> Any:
        return self.dataset.schema

    @property
    def files(self) -> list[str]:
        return list(self.dataset.files)

    @property
    def metadata(self) -> dict[str, Any]:
        """The ``web10g`` schema metadata (version, backend, host, units by column)."""
        meta = self.dataset.schema.metadata or {}
        raw = meta.get(b"web10g")
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):     # a file someone else put there
            return {}
        return value if isinstance(value, dict) else {}

    def units(self, column: str) -> str:
        units = self.metadata.get("units")
        unit = units.get(column, "") if isinstance(units, dict) else ""
        return unit if isinstance(unit, str) else ""

    # -- reading ---------------------------------------------------------------------------
    def _filter(self, extra: Any) -> Any:
        if extra is None:
            return self.filter
        return extra if self.filter is None else self.filter & extra

    def scanner(self, columns: Sequence[str] | None = None, filter: Any = None,
                **kw: Any) -> Any:
        return self.dataset.scanner(columns=list(columns) if columns else None,
                                    filter=self._filter(filter), **kw)

    def to_table(self, columns: Sequence[str] | None = None, filter: Any = None) -> Any:
        return self.dataset.to_table(columns=list(columns) if columns else None,
                                     filter=self._filter(filter))

    def to_batches(self, columns: Sequence[str] | None = None, filter: Any = None) -> Any:
        return self.dataset.to_batches(columns=list(columns) if columns else None,
                                       filter=self._filter(filter))

    def to_pandas(self, columns: Sequence[str] | None = None, filter: Any = None,
                  **kw: Any) -> Any:
        """A DataFrame (nulls of unreported values as <NA> in nullable dtypes, addresses
        and states as categoricals, ``timestamp`` as datetime64[ns, UTC])."""
        import pandas as pd

        kw.setdefault("types_mapper", _nullable_mapper(pd))
        return self.to_table(columns, filter).to_pandas(**kw)

    def count_rows(self, filter: Any = None) -> int:
        return self.dataset.count_rows(filter=self._filter(filter))

    def __repr__(self) -> str:
        return f"<web10g Dataset {self.path!r}: {len(self.files)} files, filter={self.filter}>"


def _nullable_mapper(pd: Any) -> Any:
    import pyarrow as pa

    table = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(),
             pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
             pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
             pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype(),
             pa.bool_(): pd.BooleanDtype(), pa.float32(): pd.Float32Dtype(),
             pa.float64(): pd.Float64Dtype()}
    return table.get


def dataset(path: str | os.PathLike, **filters: Any) -> Dataset:
    """Open a web10g Parquet dataset directory; see :class:`Dataset` for the filters
    (host, date, hour, port, start, end, cid)."""
    return Dataset(path, **filters)


__all__ = ["Dataset", "dataset"]
