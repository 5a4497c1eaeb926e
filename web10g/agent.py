"""``web10g.open()``: pick a backend and return its agent."""
from __future__ import annotations

import os
from typing import Any

from web10g import genl

BACKENDS = ("auto", "sock_diag", "estats")


def open(backend: str = "auto", *, netns: Any = None, peer: int | None = None,  # noqa: A001
         replay: Any = None) -> Any:
    """Open an agent (a context manager) on ``backend``.

    ``"auto"`` picks ``estats`` when the Web10G kernel's ``tcp_estats`` family resolves
    (or a test peer is configured) and ``sock_diag`` otherwise; ``agent.backend`` says
    which. ``netns`` (sock_diag) is a name under /run/netns, a path or a pid.
    ``peer`` (estats) talks to a user-space responder on that NETLINK_USERSOCK port
    instead of the kernel; the environment variable ``WEB10G_ESTATS_PEER`` does the same.
    ``replay`` opens a recording (web10g.recording) instead: every call works offline.
    """
    if replay is not None:
        from web10g.recording import ReplayAgent

        return ReplayAgent(replay)
    if backend not in BACKENDS:
        from difflib import get_close_matches

        close = get_close_matches(str(backend), BACKENDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown backend {backend!r}{hint} (choose from {', '.join(BACKENDS)})")
    if peer is None and os.environ.get("WEB10G_ESTATS_PEER"):
        peer = int(os.environ["WEB10G_ESTATS_PEER"])
    if backend == "auto":
        backend = "estats" if peer is not None or genl.family_exists("tcp_estats") else "sock_diag"
    if backend == "sock_diag":
        from web10g.sockdiag import SockDiagAgent

        return SockDiagAgent(netns=netns)
    from web10g.estats import EstatsAgent

    return EstatsAgent(peer=peer, netns=netns)
