"""The threading contract, on every backend (issue 12, defect 4): one agent shared by
several threads serialises their calls (web10g.backends.base: each public call holds
the agent's lock), so N threads x M reads each give only correct results.

The backends and their sources are tests/test_contract.py's (the same parameters: the
sock_diag real kernel, the fake Web10G kernel, a replay of each, ebpf).
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import test_contract
from test_contract import SAMPLES, Source

from web10g import errors

# test_contract's fixtures, so this module runs over the same backends
source = test_contract.source
agent = test_contract.agent
_ebpf_programs = test_contract._ebpf_programs

THREADS = 8
READS = 25


def _check(src: Source, rows: Any, out: np.ndarray | None = None) -> None:
    assert len(rows) == src.expected, (src.name, len(rows))
    cids = rows["cid"].tolist()
    assert len(set(cids)) == len(cids), cids
    if out is not None:
        assert rows.base is out or rows.base is out.base or len(out) < len(rows)


def _run(workers: list[Any]) -> list[BaseException]:
    failures: list[BaseException] = []
    start = threading.Barrier(len(workers))

    def body(fn: Any) -> None:
        try:
            start.wait(10)
            fn()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            failures.append(exc)

    threads = [threading.Thread(target=body, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a thread hangs"
    return failures


def test_threads_share_one_agent(agent: Any, source: Source) -> None:
    replay = not agent.capabilities.live
    # a replay's read_all takes the next recorded sample: exactly SAMPLES of them
    threads, reads = (4, SAMPLES // 4) if replay else (THREADS, READS)
    read = agent.reader(filter=source.filter)
    dtype = agent.dtype()
    results: list[int] = []

    def worker(k: int) -> None:
        out = np.empty(64, dtype=dtype)
        for i in range(reads):
            how = (k + i) % 3
            if how == 0:
                rows = agent.read_all(filter=source.filter)
                _check(source, rows)
            elif how == 1:
                rows = agent.read_all(filter=source.filter, out=out)
                _check(source, rows, out)
            else:
                rows = read(out)
                _check(source, rows, out)
            ids = agent.list_conns(filter=source.filter)
            assert len(ids) == source.expected
            if not replay or i == 0:
                row = agent.read_vars(int(rows["cid"][0]))
                assert int(row["cid"]) == int(rows["cid"][0])
            results.append(len(rows))

    failures = _run([lambda k=k: worker(k) for k in range(threads)])
    assert not failures, failures[:3]
    assert len(results) == threads * reads
    if replay:
        assert agent.samples == SAMPLES
        with pytest.raises(errors.EndOfRecording):
            agent.read_all()


def test_threads_interleave_reads_with_other_calls(agent: Any, source: Source) -> None:
    """Calls of different kinds (selections, list_conns, dtype) from many threads at
    once, on one agent: every result is the one a lone thread would get."""
    if not agent.capabilities.live:
        pytest.skip("a replay's samples are consumed by reads; covered above")
    sel = [v.name for v in agent.variables()[:3]]

    def worker(k: int) -> None:
        for _ in range(READS):
            rows = agent.read_all(sel if k % 2 else None, filter=source.filter)
            _check(source, rows)
            assert rows.dtype == agent.dtype(sel if k % 2 else None)
            assert len(agent.list_conns(filter=source.filter)) == source.expected

    failures = _run([lambda k=k: worker(k) for k in range(THREADS)])
    assert not failures, failures[:3]


def test_the_lock_is_per_agent_and_reentrant(agent: Any) -> None:
    lock = agent._call_lock
    with agent.clone() as other:
        assert other._call_lock is not lock
    with lock:                       # a caller may hold it across several calls
        agent.list_conns()
        agent.list_conns()
