"""End-of-flow capture: the kernel's sock_diag destroy notifications.

A NETLINK_SOCK_DIAG socket that joins SKNLGRP_INET_TCP_DESTROY / SKNLGRP_INET6_TCP_DESTROY
receives one record per destroyed TCP socket of its namespace, carrying the final
tcp_info (mapping section 5.3); no capability is needed. This is the stock kernel's
answer to Web10G's estats_delay: flows that end between two samples still deliver their
last values. The records are decoded by the same C decoder as dumps.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from web10g import netns as _netns
from web10g._sockdiag import Dumper

if TYPE_CHECKING:
    from web10g.sockdiag import SockDiagAgent

SKNLGRP_INET_TCP_DESTROY = 1
SKNLGRP_INET6_TCP_DESTROY = 3
# Room for bursts of closes between two reads (~400 bytes each); the kernel drops
# notifications beyond the queue and we report how often that happened.
QUEUE_BYTES = 32 << 20


class ClosedWatch:
    def __init__(self, agent: SockDiagAgent, netns: Any) -> None:
        self._agent = agent
        self._sock = _netns.open_socket(4, netns)
        self._sock.set_rcvbuf(QUEUE_BYTES)
        self._sock.join_group(SKNLGRP_INET_TCP_DESTROY)
        self._sock.join_group(SKNLGRP_INET6_TCP_DESTROY)
        self._dumpers: dict[Any, tuple[Dumper, list[np.ndarray]]] = {}
        self.overruns = 0

    def read(self, vars: Any = None) -> np.ndarray:
        key = vars if vars is None or isinstance(vars, str) else tuple(vars)
        entry = self._dumpers.get(key)
        if entry is None:
            # The decoder config is all a Dumper needs here; it sends no request.
            dt = self._agent.dtype(vars)
            dumper = Dumper(self._sock, dt, flags=self._agent._flags,
                            sysctls=self._agent._sysctls)
            entry = self._dumpers[key] = (dumper, [np.empty(0, dtype=dt)])
        dumper, buf = entry
        arr, n, overruns = dumper.receive(buf[0])
        buf[0] = arr
        if overruns:
            self.overruns += overruns
            warnings.warn(f"the kernel dropped destroy notifications {overruns} time(s): "
                          "call closed() more often", RuntimeWarning, stacklevel=3)
        return arr[:n].copy()

    def close(self) -> None:
        self._sock.close()
