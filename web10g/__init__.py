"""web10g: RFC 4898 TCP extended statistics for every flow, into numpy.

``web10g.open()`` returns an agent; ``web10g.mib`` describes every variable. Submodules
load on first use (PEP 562), so ``import web10g`` stays cheap and ``web10g.mib`` needs
no compiled extension.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = frozenset({
    "agent", "errors", "estats", "filter", "genl", "mib", "netns", "procfs", "record",
    "recording", "sockdiag", "sampler", "deltas", "frames", "monitor", "tune",
})


def to_pandas(source: Any, **kw: Any) -> Any:
    """Snapshots as a pandas DataFrame; see :func:`web10g.frames.to_pandas`."""
    from web10g.frames import to_pandas as _to_pandas

    return _to_pandas(source, **kw)


def monitor(**kw: Any) -> Any:
    """Sample the flows of a ``with`` block; see :func:`web10g.monitor.monitor`."""
    from web10g.monitor import monitor as _monitor

    return _monitor(**kw)


def open(backend: str = "auto", *, netns: Any = None, peer: int | None = None,  # noqa: A001
         replay: Any = None) -> Any:
    """Open an agent on ``backend`` ("auto", "sock_diag" or "estats"), or on a recording
    with ``replay=PATH``; see :func:`web10g.agent.open`."""
    from web10g.agent import open as _open

    return _open(backend, netns=netns, peer=peer, replay=replay)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"web10g.{name}")
    raise AttributeError(f"module 'web10g' has no attribute {name!r}")


__all__ = ["open", "to_pandas", "monitor", "__version__"]
