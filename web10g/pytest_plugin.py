"""pytest plugin: the ``web10g_monitor`` fixture for performance-test harnesses.

    def test_transfer(web10g_monitor):
        with web10g_monitor(filter="dport = :5201", interval=0.05) as m:
            run_the_transfer()
        assert m.result.flows["bytes_sent"].sum() > 10_000_000

Installed as a pytest11 entry point, so any test suite that has web10g installed can use
it; every monitor still running at the end of the test is stopped.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def web10g_monitor() -> Iterator[Callable[..., Any]]:
    """Monitor the flows of a block: ``with web10g_monitor(filter="dport = :5201",
    interval=0.05) as m: ...`` then ``m.result.summary()`` (one row per flow: bytes,
    throughput, RTT percentiles, retransmits, cwnd range) and ``m.result.frame()``
    (every sample). Takes the arguments of :func:`web10g.monitor`; monitors still
    running when the test ends are stopped."""
    from web10g.monitoring import Monitor

    made: list[Monitor] = []

    def make(**kw: Any) -> Monitor:
        m = Monitor(**kw)
        made.append(m)
        return m

    yield make
    for m in made:
        if m.result is None:
            m._sampler.stop()
            if m._own_agent:
                m._agent.close()
