"""The estats backend against the fake Web10G kernel (tests/fakekernel), which speaks the
tcp_estats ABI on a real NETLINK_USERSOCK socket, quirks included."""
from __future__ import annotations

import errno
import time

import numpy as np
import pytest

import web10g
from web10g import errors, mib
from web10g.backends.estats import EstatsAgent
from web10g.errors import VariableUnavailable

CMD_LIST_CONNS, CMD_READ_ALL, CMD_READ_VARS = 0, 1, 2


@pytest.fixture
def agent(fake_kernel):
    with web10g.open(backend="estats", peer=fake_kernel.portid) as a:
        yield a


def check_values(fk, rows, names=None):
    for row in rows:
        for name in names or [v.name for v in fk.layout.variables()]:
            assert int(row[name]) == fk.expected(int(row["cid"]), name), (int(row["cid"]), name)


def test_open_resolves_and_identifies_the_layout(agent, fake_kernel):
    assert agent.backend == "estats"
    assert agent.family.id == fake_kernel.family_id and agent.family.maxattr == 28
    assert agent.layout.name == "head" and agent.layout.total == 124
    assert sum(len(t) for t in agent.tables) == 124


def test_auto_and_environment_variable_pick_the_peer(fake_kernel, monkeypatch):
    monkeypatch.setenv("WEB10G_ESTATS_PEER", str(fake_kernel.portid))
    with web10g.open() as a:
        assert a.backend == "estats"
        assert len(a.list_conns()) == 5


def test_module_not_loaded_is_a_clear_error(fake_kernel_factory):
    fk = fake_kernel_factory()
    fk.registered = False
    with pytest.raises(errors.FamilyNotFound, match="modprobe tcp_estats_nl"):
        web10g.open(backend="estats", peer=fk.portid)


def test_read_all_values_are_the_modules(agent, fake_kernel):
    rows = agent.read_all()
    # CID 4 belongs to another user: READ_ALL skips it silently (ABI 5.3)
    assert rows["cid"].tolist() == [1, 2, 3, 5]
    check_values(fake_kernel, rows)
    assert (rows["state"] == rows["State"]).all() and (rows["state"] == 5).all()
    assert rows["family"].tolist() == [2, 2, 10, 10]
    assert rows["local_port"].tolist() == [22, 443, 40000, 22]
    assert bytes(rows["rem_addr"][0][:4]) == bytes([192, 0, 2, 7])
    assert abs(int(rows["timestamp"][0]) - time.time_ns()) < 5e9      # ns unit detected


def test_read_all_selection_sends_masks(agent, fake_kernel):
    rows = agent.read_all(["SegsOut", "HCThruOctetsAcked", "WinScaleRcvd"])
    assert rows.dtype.names[-3:] == ("SegsOut", "HCThruOctetsAcked", "WinScaleRcvd")
    check_values(fake_kernel, rows, ["SegsOut", "HCThruOctetsAcked", "WinScaleRcvd"])
    req = [r for r in fake_kernel.requests if r.cmd == CMD_READ_ALL][-1]
    masks = req.attrs["mask"]
    want = agent.layout.mask(["SegsOut", "HCThruOctetsAcked", "WinScaleRcvd", "State"])
    assert tuple(masks[t] for t in mib.TABLES) == want


def test_pagination_corrects_cid_plus_one_and_misses_nothing(fake_kernel_factory):
    fk = fake_kernel_factory()
    for i in range(100):
        fk.add_flow(("10.0.0.1", 1000 + i), ("10.9.9.9", 80))
    with EstatsAgent(peer=fk.portid) as a:
        before = len(fk.requests)
        rows = a.read_all()
        assert rows["cid"].tolist() == list(range(1, 101))
        check_values(fk, rows[::17])
        n_requests = len(fk.requests) - before
        assert n_requests == 100 // 3 + 1 + 1      # 3 per page-sized batch, then empty
        ids = a.list_conns()
        assert ids["cid"].tolist() == list(range(1, 101))


def test_flows_appearing_and_vanishing_between_batches(fake_kernel_factory):
    fk = fake_kernel_factory()
    for i in range(30):
        fk.add_flow(("10.0.0.1", 2000 + i), ("10.9.9.9", 80))
    calls = []

    def churn(cmd, kernel):
        if cmd == CMD_READ_ALL:
            calls.append(cmd)
            if len(calls) == 2:
                kernel.remove_flow(2)               # already read: no effect on this pass
                kernel.remove_flow(20)              # not yet read: must not appear
                kernel.add_flow(("10.0.0.1", 9999), ("10.9.9.9", 80))   # CID 31
    fk.on_request = churn
    with EstatsAgent(peer=fk.portid) as a:
        cids = a.read_all()["cid"].tolist()         # full MIB: 3 connections per batch
    assert len(calls) > 3
    assert len(cids) == len(set(cids))
    assert 20 not in cids and 31 in cids
    assert set(range(1, 31)) - {20} <= set(cids)


def test_read_vars_and_its_errors(agent, fake_kernel):
    rec = agent.read_vars(3, ["SegsOut", "WinScaleRcvd", "HCDataOctetsOut"])
    assert rec["cid"] == 3 and rec["family"] == 10
    for name in ("SegsOut", "WinScaleRcvd", "HCDataOctetsOut"):
        assert int(rec[name]) == fake_kernel.expected(3, name)
    with pytest.raises(errors.FlowNotFound, match="77"):
        agent.read_vars(77)
    with pytest.raises(PermissionError, match="another user"):
        agent.read_vars(4)
    fake_kernel.remove_flow(5)
    with pytest.raises(errors.FlowNotFound):
        agent.read_vars(5)


def test_watch_list_of_1000_in_one_send(fake_kernel_factory):
    fk = fake_kernel_factory()
    for i in range(1000):
        fk.add_flow(("10.0.0.2", 3000 + i), ("10.9.9.9", 443))
    with EstatsAgent(peer=fk.portid) as a:
        before = fk.datagrams_received
        cids = list(range(1, 1000)) + [5000]
        rows, problems = a.read_many(cids, ["SegsOut", "CurCwnd"])
        assert fk.datagrams_received - before == 1          # one send for 1,000 requests
    assert rows["cid"].tolist() == list(range(1, 1000))
    check_values(fk, rows[::97], ["SegsOut", "CurCwnd"])
    assert list(problems) == [5000] and isinstance(problems[5000], errors.FlowNotFound)


def test_counters_advance_between_reads(agent, fake_kernel):
    first = agent.read_all(["SegsOut"]).copy()
    fake_kernel.tick(3)
    second = agent.read_all(["SegsOut"])
    assert (second["SegsOut"] > first["SegsOut"]).all()
    check_values(fake_kernel, second, ["SegsOut"])


def test_write_var(agent, fake_kernel):
    agent.write_var(1, "LimCwnd", 100000)
    mss = fake_kernel.expected(1, "CurMSS")
    assert fake_kernel.expected(1, "LimCwnd") == min(100000 // mss, 65535) * mss
    assert int(agent.read_vars(1, ["LimCwnd"])["LimCwnd"]) == fake_kernel.expected(1, "LimCwnd")
    agent.write_var(2, "limrwin", 5000)
    assert fake_kernel.written[-1] == (2, "LimRwin", 5000)


def test_write_var_errors(agent, fake_kernel):
    with pytest.raises(mib.UnknownVariable, match="LimCwnd"):
        agent.write_var(1, "LimCwd", 1)
    with pytest.raises(PermissionError, match="read-only") as ei:
        agent.write_var(1, "SegsOut", 1)
    assert ei.value.errno == errno.EPERM
    with pytest.raises(PermissionError, match="another user") as ei:
        agent.write_var(4, "LimCwnd", 1)
    assert ei.value.errno == errno.EACCES
    with pytest.raises(errors.FlowNotFound):
        agent.write_var(99, "LimCwnd", 1)
    with pytest.raises(ValueError, match="4294967295"):
        agent.write_var(1, "LimRwin", 2**32)
    with pytest.raises(ValueError):
        agent.write_var(0, "LimRwin", 1)
    assert fake_kernel.written == []


def test_activity_filter_uses_the_modules_attribute_numbers(agent, fake_kernel):
    fake_kernel.set_activity(1, 60_000)
    fake_kernel.set_activity(2, 60_000)
    recent = agent.read_all(["SegsOut"], active_within=5_000)
    assert recent["cid"].tolist() == [3, 5]
    assert agent.list_conns(active_within=5_000)["cid"].tolist() == [3, 4, 5]
    assert agent.timestamp(5000) == fake_kernel.timestamp_token(5000)


def test_client_side_filters(agent):
    rows = agent.read_all(["SegsOut"], filter="sport = :22")
    assert rows["cid"].tolist() == [1, 5]
    assert agent.read_all(["SegsOut"], family="inet6")["cid"].tolist() == [3, 5]
    assert len(agent.read_all(["SegsOut"], states="listen")) == 0


def test_unavailable_variables(agent):
    with pytest.raises(VariableUnavailable, match="sock_diag"):
        agent.read_all(["rtt_us"])
    with pytest.raises(mib.UnknownVariable, match="did you mean"):
        agent.read_all(["SegOut"])
    assert agent.unavailable == set()


@pytest.mark.parametrize("layout, total", [("middle", 122), ("old", 124)])
def test_older_layouts(fake_kernel_factory, layout, total):
    fk = fake_kernel_factory(layout)
    fk.add_flow(("10.0.0.1", 22), ("192.0.2.7", 51000))
    fk.add_flow(("2001:db8::1", 22), ("2001:db8::2", 51000))
    with EstatsAgent(peer=fk.portid) as a:
        assert a.layout.name == layout and a.layout.total == total
        rows = a.read_all()
        check_values(fk, rows)
        assert abs(int(rows["timestamp"][0]) - time.time_ns()) < 5e9   # microseconds here
        assert "LostRetransmitSegs" in a.unavailable
        with pytest.raises(VariableUnavailable, match=layout):
            a.read_all(["RackTimeout"])
        if layout == "old":
            assert "OtherReductions" in rows.dtype.names
            assert int(rows["Priority"][0]) == fk.expected(1, "Priority")


@pytest.mark.parametrize("pad", [True, "always"])
def test_zero_length_pad_attributes_are_skipped(fake_kernel_factory, pad):
    fk = fake_kernel_factory(pad_u64=pad)
    fk.add_flow(("10.0.0.1", 22), ("192.0.2.7", 51000))
    with EstatsAgent(peer=fk.portid) as a:
        check_values(fk, a.read_all())
        assert a.timestamp(0) == fk.timestamp_token(0)


def test_microsecond_module_at_head(fake_kernel_factory):
    fk = fake_kernel_factory(time_unit="us")
    fk.add_flow(("10.0.0.1", 22), ("192.0.2.7", 51000))
    with EstatsAgent(peer=fk.portid) as a:
        rows = a.read_all(["SegsOut"])
        assert abs(int(rows["timestamp"][0]) - time.time_ns()) < 5e9


def test_unknown_layout_is_an_explicit_error(fake_kernel_factory, monkeypatch):
    fk = fake_kernel_factory()
    real = mib.layout("head")
    tables = [list(t) for t in real.tables]
    bogus = mib.Variable(**{**real.tables[0][5].__dict__, "name": "FutureCounter"})
    tables[0][5] = bogus
    fk.layout = mib.Layout("future", tuple(tuple(t) for t in tables))
    with pytest.raises(mib.LayoutMismatch, match="FutureCounter"):
        EstatsAgent(peer=fk.portid)


def test_namespaces_are_refused_clearly(fake_kernel):
    with pytest.raises(ValueError, match="initial network namespace"):
        web10g.open(backend="estats", peer=fake_kernel.portid, netns="blue")


def test_closed_explains_the_estats_delay_sysctl(agent):
    with pytest.raises(errors.Web10GError, match="estats_delay"):
        agent.closed()


def test_stopped_peer_is_named(fake_kernel):
    with EstatsAgent(peer=fake_kernel.portid, timeout=0.5) as a:
        fake_kernel.stop()
        with pytest.raises(ConnectionRefusedError, match=f"port {fake_kernel.portid}"):
            a.read_all()


def test_out_buffer_growth(agent):
    dt = agent.dtype(["SegsOut"])
    small = np.empty(1, dtype=dt)
    rows = agent.read_all(["SegsOut"], out=small)
    assert rows["cid"].tolist() == [1, 2, 3, 5]


def test_list_conns_state_selection(agent, fake_kernel):
    """LIST_CONNS rows carry no state: a selection covering every open state keeps them
    all (kill() relies on states="all"), a narrower one asks the module for the state."""
    every = agent.list_conns()
    assert len(every) and (every["state"] == 0).all()
    assert sorted(agent.list_conns(states="all")["cid"]) == sorted(every["cid"])
    assert sorted(agent.list_conns(states="open")["cid"]) == sorted(every["cid"])
    est = agent.read_all([], states="established")["cid"]
    assert sorted(agent.list_conns(states="established")["cid"]) == sorted(est)
    assert len(agent.list_conns(states="listen")) == 0
