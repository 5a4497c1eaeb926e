"""web10g: RFC 4898 TCP extended statistics for every flow, into numpy.

``web10g.open()`` returns an agent; ``web10g.mib`` describes every variable. Submodules
load on first use, so ``import web10g`` stays cheap.
"""
from __future__ import annotations

__version__ = "0.1.0"

from web10g.agent import open  # noqa: E402,A004

__all__ = ["open", "__version__"]
