"""web10g: RFC 4898 TCP extended statistics for every flow, into numpy.

``web10g.open()`` returns an :class:`~web10g.backends.base.Agent`; ``web10g.mib``
describes every variable; ``web10g.rows`` holds the helpers for any backend's rows.
Submodules load on first use (PEP 562), so ``import web10g`` stays cheap and
``web10g.mib`` needs no compiled extension.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import os

    from web10g.backends.base import Agent
    from web10g.datasets import Dataset
    from web10g.monitoring import Monitor

__version__ = "0.1.0"

# No public function shares a name with a submodule: importing the submodule would
# replace the function on the package (web10g.monitor() once did that).
_SUBMODULES = frozenset({
    "backends", "errors", "filter", "genl", "mib", "netns", "procfs", "record",
    "recording", "rows", "sampler", "deltas", "frames", "monitoring", "tune",
    "datasets", "collector", "plot",
})


def to_pandas(source: Any, **kw: Any) -> Any:
    """Snapshots (or a recording's path) as a pandas DataFrame; see
    :func:`web10g.frames.to_pandas`."""
    from web10g.frames import to_pandas as _to_pandas

    return _to_pandas(source, **kw)


def dataset(path: str | os.PathLike, **filters: Any) -> Dataset:
    """Open the Parquet dataset that ``web10g serve --parquet`` and ``web10g convert``
    write, with filters pushed down; see :func:`web10g.datasets.dataset`."""
    from web10g.datasets import dataset as _dataset

    return _dataset(path, **filters)


def monitor(**kw: Any) -> Monitor:
    """Sample the flows of a ``with`` block; see :class:`web10g.monitoring.Monitor`."""
    from web10g.monitoring import Monitor

    return Monitor(**kw)


def open(backend: str = "auto", *, netns: Any = None, peer: int | None = None,  # noqa: A001
         replay: str | os.PathLike[str] | None = None) -> Agent:
    """Open an agent on ``backend`` ("auto", "sock_diag", "estats" or "ebpf"), or on a recording
    with ``replay=PATH``; see :func:`web10g.backends.open`."""
    from web10g.backends import open as _open

    return _open(backend, netns=netns, peer=peer, replay=replay)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"web10g.{name}")
    raise AttributeError(f"module 'web10g' has no attribute {name!r}")


__all__ = ["open", "to_pandas", "monitor", "dataset", "__version__"]
