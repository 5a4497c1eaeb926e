"""The Agent contract, run over every backend: the same tests, one parameter each.

sock_diag reads the real kernel (this test's own loopback flows, picked by port);
estats reads the fake Web10G kernel; the replays read recordings of both, made here.
A new backend joins by adding one parameter to ``SOURCES`` and one ``_open_*`` maker.
"""
from __future__ import annotations

import importlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import web10g
from web10g import errors
from web10g import rows as R
from web10g.backends import Agent, Capabilities
from web10g.recording import Recorder

K = 4           # this test's flows on its own port
SAMPLES = 12    # samples in each recording: every read_all of a replay takes the next


@dataclass
class Source:
    name: str
    open: Callable[[], Any]          # a new agent on the source
    filter: str                      # selects this test's flows
    expected: int                    # rows the filter gives with the default states
    expected_all: int                # ... with states="all"
    missing_cid: int = 2**31 - 7     # a cid no flow has
    keep: list[Any] = field(default_factory=list)


def _loopback_flows(keep: list[Any]) -> int:
    lst = socket.create_server(("127.0.0.1", 0), backlog=K)
    keep.append(lst)
    for _ in range(K):
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
        c.sendall(b"x" * 2000)
        s.recv(4000)
        keep += [c, s]
    return int(lst.getsockname()[1])


def _open_sock_diag(keep: list[Any], request: Any) -> Source:
    port = _loopback_flows(keep)
    # the server ends: K established flows and, with states="all", the listener
    return Source("sock_diag", lambda: web10g.open("sock_diag"), f"sport = :{port}", K, K + 1)


def _fake_kernel(request: Any) -> Any:
    fk = request.getfixturevalue("fake_kernel")
    for i in range(K):
        fk.add_flow(("10.9.0.1", 7777), (f"192.0.2.{i + 1}", 40000 + i))
    fk.add_flow(("2001:db8::5", 7777), ("2001:db8::6", 50000))   # an IPv6 one too
    return fk


def _open_estats(keep: list[Any], request: Any) -> Source:
    fk = _fake_kernel(request)
    return Source("estats", lambda: web10g.open("estats", peer=fk.portid),
                  "sport = :7777", K + 1, K + 1)


def _record(path: Any, agent: Any, n: int = SAMPLES) -> None:
    with Recorder(path, agent) as rec:
        for _ in range(n):
            rec.sample(states="all")


def _open_replay_sock_diag(keep: list[Any], request: Any) -> Source:
    port = _loopback_flows(keep)
    path = request.getfixturevalue("tmp_path") / "sd.w10g"
    with web10g.open("sock_diag") as live:
        _record(path, live)
    return Source("replay-sock_diag", lambda: web10g.open(replay=path), f"sport = :{port}",
                  K, K + 1)


def _open_replay_estats(keep: list[Any], request: Any) -> Source:
    fk = _fake_kernel(request)
    path = request.getfixturevalue("tmp_path") / "es.w10g"
    with web10g.open("estats", peer=fk.portid) as live:
        _record(path, live)
    return Source("replay-estats", lambda: web10g.open(replay=path), "sport = :7777",
                  K + 1, K + 1)


@pytest.fixture(scope="module")
def _ebpf_programs() -> Iterator[str]:
    """The ebpf instruments, loaded for this module (unloaded after, unless they were
    loaded before it)."""
    from web10g.backends import ebpf_loader

    reason = ebpf_loader.unusable_reason()
    if reason:
        pytest.skip(reason)
    pin_dir = ebpf_loader.DEFAULT_PIN_DIR
    res = ebpf_loader.load(pin_dir, full=True)
    yield pin_dir
    if not res.already:
        ebpf_loader.unload(pin_dir)


def _open_ebpf(keep: list[Any], request: Any) -> Source:
    pin_dir = request.getfixturevalue("_ebpf_programs")
    port = _loopback_flows(keep)
    from web10g.backends import ebpf_loader

    assert pin_dir == ebpf_loader.DEFAULT_PIN_DIR   # where web10g.open('ebpf') reads
    return Source("ebpf", lambda: web10g.open("ebpf"),
                  f"sport = :{port}", K, K + 1)


def _open_replay_ebpf(keep: list[Any], request: Any) -> Source:
    request.getfixturevalue("_ebpf_programs")
    port = _loopback_flows(keep)
    path = request.getfixturevalue("tmp_path") / "eb.w10g"
    with web10g.open("ebpf") as live:
        _record(path, live)     # states="all": the listener is in the recording
    return Source("replay-ebpf", lambda: web10g.open(replay=path), f"sport = :{port}",
                  K, K + 1)


SOURCES = {
    "sock_diag": _open_sock_diag,
    "estats": _open_estats,
    "replay-sock_diag": _open_replay_sock_diag,
    "replay-estats": _open_replay_estats,
    "ebpf": _open_ebpf,
    "replay-ebpf": _open_replay_ebpf,
}


@pytest.fixture(params=list(SOURCES))
def source(request: Any) -> Iterator[Source]:
    keep: list[Any] = []
    try:
        yield SOURCES[request.param](keep, request)
    finally:
        for s in keep:
            s.close()


@pytest.fixture
def agent(source: Source) -> Iterator[Any]:
    with source.open() as a:
        yield a


def test_public_surface(agent: Any) -> None:
    assert isinstance(agent, Agent)
    assert isinstance(agent.capabilities, Capabilities)
    assert isinstance(agent.backend, str) and agent.backend in ("sock_diag", "estats", "ebpf")
    assert isinstance(agent.notes, list)
    names = [v.name for v in agent.variables()]
    assert len(names) == len(set(names)) >= 40
    dt = agent.dtype()
    assert dt.names[:len(R.IDENTITY_NAMES)] == R.IDENTITY_NAMES
    assert {"timestamp", "present"} <= set(dt.names)
    assert R.presence_of(dt) is not None       # rows say what `present` means


def test_default_result_is_the_callers(agent: Any, source: Source) -> None:
    r1 = agent.read_all(["SegsOut"], filter=source.filter)
    before = R.copy(r1)
    r2 = agent.read_all(["SegsOut"], filter=source.filter)
    assert not np.shares_memory(r1, r2)
    assert np.array_equal(r1, before)          # the second read left the first alone
    assert len(r1) == len(r2) == source.expected


def test_out_is_filled_or_replaced(agent: Any, source: Source) -> None:
    dt = agent.dtype(["SegsOut"])
    big = np.empty(10_000, dtype=dt)
    rows = agent.read_all(["SegsOut"], filter=source.filter, out=big)
    assert rows.base is big and len(rows) == source.expected
    small = np.empty(1, dtype=dt)
    grown = agent.read_all(["SegsOut"], filter=source.filter, out=small)
    assert len(grown) == source.expected
    assert grown.base is not small and grown.base is not None and len(grown.base) >= len(grown)
    with pytest.raises(TypeError):
        agent.read_all(["SegsOut"], out=np.empty(4, dtype=agent.dtype(["SegsIn"])))


def test_reader_binds_a_selection(agent: Any, source: Source) -> None:
    read = agent.reader(["SegsOut"], filter=source.filter)
    buf = np.empty(64, dtype=agent.dtype(["SegsOut"]))
    rows = read(buf)
    assert np.shares_memory(rows, buf) and len(rows) == source.expected


def test_filter_states_family(agent: Any, source: Source) -> None:
    default = agent.read_all(["SegsOut"], filter=source.filter)
    every = agent.read_all(["SegsOut"], filter=source.filter, states="all")
    assert len(default) == source.expected and len(every) == source.expected_all
    est = agent.read_all(["SegsOut"], filter=source.filter, states="established")
    assert len(est) and set(est["state"].tolist()) == {5}      # RFC 4898 established
    v4 = agent.read_all(["SegsOut"], filter=source.filter, states="all", family="inet")
    v6 = agent.read_all(["SegsOut"], filter=source.filter, states="all", family="inet6")
    assert set(v4["family"].tolist()) <= {socket.AF_INET}
    assert set(v6["family"].tolist()) <= {socket.AF_INET6}
    assert len(v4) + len(v6) == len(every)
    assert R.STATE_GROUPS[R.DEFAULT_STATES] == R.parse_states(None)
    with pytest.raises(ValueError, match="did you mean"):
        agent.read_all(["SegsOut"], states="establishd")
    with pytest.raises(errors.FilterError):
        agent.read_all(["SegsOut"], filter="dport = :99999")


def test_list_conns_is_identity(agent: Any, source: Source) -> None:
    ids = agent.list_conns(filter=source.filter)
    assert len(ids) == source.expected
    assert set(R.IDENTITY_NAMES) <= set(ids.dtype.names)


def test_available_and_reported(agent: Any, source: Source) -> None:
    rows = agent.read_all(["SegsOut", "CurCwnd"], filter=source.filter, states="all")
    for name in ("cid", "SegsOut", "CurCwnd"):
        ok = agent.available(rows, name)
        assert ok.dtype == bool and ok.shape == (len(rows),)
        assert np.array_equal(ok, R.available(rows, name))
    assert agent.available(rows, "cid").all()
    # established flows report their counters on every backend
    est = rows["state"] == 5
    assert est.any() and agent.available(rows, "SegsOut")[est].all()
    assert R.reported(rows)[est].all()
    assert R.column(rows, "segsout") is not None
    with pytest.raises(errors.UnknownColumn, match="SegsOut"):
        R.column(rows, "SegsOutt")


def test_errors(agent: Any, source: Source) -> None:
    with pytest.raises(errors.UnknownVariable, match="SmoothedRTT"):
        agent.read_all(["SmothedRTT"])
    with pytest.raises(errors.FlowNotFound):
        agent.read_vars(source.missing_cid)
    caps = agent.capabilities
    if not caps.closed_flows:
        with pytest.raises(errors.NotSupported):
            agent.closed()
    if not caps.writable:
        with pytest.raises(errors.NotSupported):
            agent.write_var(1, "LimCwnd", 10)
    if not caps.kill:
        with pytest.raises(errors.NotSupported):
            agent.kill(1)
    for cls in (errors.UnknownVariable, errors.FlowNotFound, errors.NotSupported,
                errors.VariableUnavailable, errors.FilterError):
        assert issubclass(cls, errors.Web10GError)


def test_read_vars_of_a_listed_flow(agent: Any, source: Source) -> None:
    cid = int(agent.list_conns(filter=source.filter)["cid"][0])
    row = agent.read_vars(cid, ["SegsOut"])
    assert int(row["cid"]) == cid


def test_clone_is_independent(agent: Any, source: Source) -> None:
    with agent.clone() as other:
        assert other is not agent and other.backend == agent.backend
        assert len(other.read_all(["SegsOut"], filter=source.filter)) == source.expected


def test_sampler(agent: Any, source: Source) -> None:
    # strict=False: on a busy machine one filtered dump may outlast the interval
    with agent.sampler(["SegsOut"], interval=0.02, filter=source.filter, capacity=50,
                       strict=False) as s:
        assert s.wait(3, timeout=30) or s.finished
        if not agent.capabilities.live:
            assert s.wait(SAMPLES, timeout=30) and s.finished   # a replay runs to its end
    snaps = s.snapshots()
    assert len(snaps) >= 3 and all(sn.ok for sn in snaps)
    assert all(len(sn.rows) == source.expected for sn in snaps)
    assert s.ring_bytes <= s.max_bytes
    if not agent.capabilities.live:
        assert s.finished and len(snaps) == SAMPLES and s.stats.failed == 0


def test_monitor(agent: Any, source: Source) -> None:
    done = threading.Event()
    with web10g.monitor(agent=agent, filter=source.filter, interval=0.02) as m:
        done.wait(0.2)
    res = m.result
    assert res is not None and len(res.snapshots) >= 1
    assert len(res.flows["cid"]) == source.expected
    summary = res.summary() if _has_pandas() else None
    if summary is not None:
        assert summary.index.name == "flow" and " -> " in summary.index[0]


def test_monitor_twice_in_one_process() -> None:
    """web10g.monitor is a function however often it is called (it once was replaced by
    its own submodule on first use)."""
    for _ in range(2):
        m = web10g.monitor(filter="dport = :1", interval=0.05, backend="sock_diag")
        with m:
            pass
        assert m.result is not None
    importlib.import_module("web10g.monitoring")    # importing it must not shadow it
    assert callable(web10g.monitor)


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def test_wrong_column_names_get_suggestions(agent: Any, source: Source) -> None:
    rows = agent.read_all(["SegsOut", "CurCwnd"], filter=source.filter)
    assert isinstance(rows, np.ndarray) and rows["SegsOut"].shape == (len(rows),)
    with pytest.raises(errors.UnknownColumn, match="did you mean: SegsOut") as exc:
        rows["segsout"]
    assert isinstance(exc.value, KeyError)      # still what numpy users catch
    assert R.column(rows, "segsout") is not None    # the forgiving lookup
