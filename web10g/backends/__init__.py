"""The backends, and ``web10g.open()``: a registry of backends plus the "auto" rule.

Adding a backend is one module in this package (a :class:`~web10g.backends.base.BaseAgent`
subclass), one line in :data:`REGISTRY`, and one parameter of tests/test_contract.py.
Consumers never compare ``agent.backend`` to a name: they ask ``agent.capabilities``.
"""
from __future__ import annotations

import importlib
from typing import Any

from web10g import errors, genl
from web10g.backends.base import Agent, BaseAgent, Capabilities

#: backend name -> "module:class". The order is the "auto" preference.
REGISTRY: dict[str, str] = {
    "estats": "web10g.backends.estats:EstatsAgent",
    "sock_diag": "web10g.backends.sockdiag:SockDiagAgent",
    "ebpf": "web10g.backends.ebpf:EbpfAgent",
}
BACKENDS = ("auto", *REGISTRY)


def backend_class(name: str) -> type[BaseAgent]:
    """The agent class registered under ``name`` (ValueError with a suggestion)."""
    spec = REGISTRY.get(name)
    if spec is None:
        from difflib import get_close_matches

        close = get_close_matches(str(name), BACKENDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown backend {name!r}{hint} (choose from {', '.join(BACKENDS)})")
    module, _, cls = spec.partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def _auto(peer: int | None) -> str:
    # estats when the Web10G kernel's family resolves (or a test peer is configured):
    # it has the full MIB; sock_diag everywhere else.
    if peer is not None or genl.family_exists("tcp_estats"):
        return "estats"
    return "sock_diag"


def open(backend: str = "auto", *, netns: Any = None, peer: int | None = None,  # noqa: A001
         replay: Any = None) -> Agent:
    """Open an agent (a context manager) on ``backend``.

    ``"auto"`` picks ``estats`` when the Web10G kernel's ``tcp_estats`` family resolves
    (or a test peer is configured) and ``sock_diag`` otherwise; ``agent.backend`` says
    which. ``netns`` is a name under /run/netns, a path or a pid (backends whose
    ``capabilities.namespaces`` is true). ``peer`` (estats) talks to a user-space
    responder on that NETLINK_USERSOCK port instead of the kernel; the environment
    variable ``WEB10G_ESTATS_PEER`` does the same for unprivileged processes.
    ``replay`` opens a recording (web10g.recording) instead: every call works offline.
    """
    if replay is not None:
        from web10g.backends.replay import ReplayAgent

        return ReplayAgent(replay)
    if backend != "auto":
        backend_class(backend)          # a clear error for an unknown name, before probing
    explicit = peer is not None
    if peer is None:
        peer = _peer_from_env()
    if backend == "auto":
        backend = _auto(peer)
    cls = backend_class(backend)
    kw: dict[str, Any] = {"netns": netns}
    if peer is not None and "peer" in _options(cls):
        kw["peer"] = peer
    elif explicit:
        raise ValueError(f"peer= is the estats backend's test seam; the {backend} "
                         "backend has no peer")
    return cls(**kw)  # type: ignore[return-value]


def _options(cls: type) -> tuple[str, ...]:
    import inspect

    return tuple(inspect.signature(cls).parameters)


def _peer_from_env() -> int | None:
    # the estats backend owns its test seam's rules (who may use it, which values)
    from web10g.backends.estats import peer_from_env

    return peer_from_env()


__all__ = ["Agent", "BaseAgent", "Capabilities", "REGISTRY", "BACKENDS", "backend_class",
           "open", "errors"]
