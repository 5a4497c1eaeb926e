"""pandas DataFrames from snapshots: ``web10g.to_pandas``.

pandas is an optional extra (``pip install 'web10g[pandas]'``); nothing in the core
imports it. Values a row did not report (``agent.available`` is False for it) become
missing values (pandas' nullable dtypes), never zeros.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from web10g import mib
from web10g import rows as _rows

_IDENTITY = [name for name, _ in mib.IDENTITY_FIELDS]
_HIDDEN = {"present", "tcp_info_len", "local_addr", "rem_addr", "family", "uid", "inode"}


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise ImportError("to_pandas needs pandas: pip install 'web10g[pandas]'") from None
    return pandas


def _arrays(source: Any) -> list[np.ndarray]:
    if isinstance(source, (str, os.PathLike)):
        # a recording: every sample, decoded as a live read would be
        from web10g.backends.replay import ReplayAgent

        with ReplayAgent(source) as agent:
            return list(agent.samples_iter(states="all"))
    if hasattr(source, "snapshots") and not callable(source.snapshots):
        source = source.snapshots
    elif hasattr(source, "snapshots"):
        source = source.snapshots()
    if isinstance(source, np.ndarray):
        return [source] if source.ndim else [source.reshape(1)]
    if isinstance(source, np.void):
        return [np.array([source], dtype=source.dtype)]
    out = []
    for item in source:
        if getattr(item, "error", None):
            continue
        rows = getattr(item, "rows", item)
        if isinstance(rows, np.void):
            rows = np.array([rows], dtype=rows.dtype)
        out.append(rows)
    return out


def to_pandas(source: Any, *, form: str = "wide", names: Iterable[str] | None = None) -> Any:
    """A tidy, time-indexed DataFrame of every row of every snapshot.

    ``source``: one rows array, an iterable of them (or of sampler Snapshots), a Sampler,
    a monitor result, or the path of a recording (``web10g logger --record``).
    ``form="wide"``: one row per flow per sample, index ``time`` (datetime64[ns], UTC),
    columns ``cid``, ``local``/``remote`` ("addr:port" text), ``state`` (categorical
    RFC 4898 names), then the variables. ``form="long"``: columns time, cid, variable,
    value. ``names`` limits the variables.
    """
    if form not in ("wide", "long"):
        raise ValueError("form must be 'wide' or 'long'")
    pd = _pandas()
    arrays = [a for a in _arrays(source) if len(a)]
    if not arrays:
        return pd.DataFrame()
    rows = np.concatenate(arrays)
    local, remote = _rows.endpoints(rows)
    data: dict[str, Any] = {"cid": rows["cid"], "local": local, "remote": remote}
    data["state"] = pd.Categorical.from_codes(
        rows["state"].astype(np.int16) - 1 if len(rows) else [],
        categories=[mib.STATE_NAMES[k] for k in sorted(mib.STATE_NAMES)])
    wanted = None if names is None else {mib.lookup(n).name for n in names}
    variables = [n for n in rows.dtype.names
                 if n not in _IDENTITY and n not in _HIDDEN and n != "timestamp"
                 and (wanted is None or n in wanted)]
    for name in variables:
        col = rows[name]
        if col.dtype.kind == "S":
            data[name] = pd.array(np.char.decode(col, "ascii", "replace"), dtype="string")
            continue
        # per part: each part's dtype says what its `present` bits mean
        ok = np.concatenate([_rows.available(a, name) for a in arrays])
        if not ok.all():
            nullable = {"u": "UInt", "i": "Int", "f": "Float"}[col.dtype.kind]
            series = pd.array(col, dtype=f"{nullable}{col.dtype.itemsize * 8}")
            series[~ok] = pd.NA
            data[name] = series
        else:
            data[name] = col
    index = pd.DatetimeIndex(pd.to_datetime(rows["timestamp"], unit="ns", utc=True),
                             name="time")
    frame = pd.DataFrame(data, index=index)
    if form == "wide":
        return frame
    long = frame.reset_index().melt(id_vars=["time", "cid", "local", "remote", "state"],
                                    value_vars=variables, var_name="variable",
                                    value_name="value")
    return long
