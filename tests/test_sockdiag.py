"""The sock_diag backend against the real kernel, with real loopback connections."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import time

import numpy as np
import pytest

import web10g
from web10g import errors, mib
from web10g.errors import VariableUnavailable
from web10g.filter import FilterError, dport, sport
from web10g.rows import addresses, endpoints, parse_states


@pytest.fixture
def agent():
    with web10g.open(backend="sock_diag") as a:
        yield a


def pairs(n, family=socket.AF_INET, host="127.0.0.1"):
    lst = socket.create_server((host, 0), family=family, backlog=max(n, 8))
    out = []
    for _ in range(n):
        c = socket.create_connection(lst.getsockname()[:2])
        s, _ = lst.accept()
        out.append((c, s))
    return lst, out


def close_all(lst, prs):
    for c, s in prs:
        c.close()
        s.close()
    lst.close()


def mine(rows, port, family=None):
    """The rows of one test's listener (port on 127.0.0.1 or ::1) and its connections.

    Matching the port alone is not enough on a busy machine: another connection may use
    the same number as its ephemeral port on another address.
    """
    def ours(addr, fam):
        v4 = (fam == socket.AF_INET) & np.all(addr[:, :4] == [127, 0, 0, 1], axis=1)
        v6 = (fam == socket.AF_INET6) & np.all(addr == [0] * 15 + [1], axis=1)
        return v4 | v6
    fam = rows["family"]
    local = (rows["local_port"] == port) & ours(rows["local_addr"], fam)
    remote = (rows["rem_port"] == port) & ours(rows["rem_addr"], fam)
    keep = (local | remote) & (rows["state"] != 11)   # not an earlier test's TIME-WAIT
    if family is not None:
        keep &= fam == family
    return rows[keep]


def test_open_auto_picks_sock_diag_here():
    with web10g.open() as a:
        assert a.backend == "sock_diag"
    with pytest.raises(ValueError, match="did you mean 'sock_diag'"):
        web10g.open(backend="sockdiag")


def test_read_all_identity_and_values(agent, tcp_pair):
    lst, cli, srv = tcp_pair
    cli.sendall(b"a" * 70000)
    got = 0
    while got < 70000:
        got += len(srv.recv(70000))
    srv.sendall(b"b" * 1234)
    assert cli.recv(2000)
    time.sleep(0.05)
    rows = mine(agent.read_all(states="all"), lst.getsockname()[1])
    assert len(rows) == 3
    c = rows[rows["local_port"] == cli.getsockname()[1]][0]
    assert c["family"] == socket.AF_INET and c["state"] == 5 and c["State"] == 5
    assert c["rem_port"] == lst.getsockname()[1]
    assert bytes(c["local_addr"][:4]) == socket.inet_aton("127.0.0.1")
    assert c["inode"] == os.fstat(cli.fileno()).st_ino and c["uid"] == os.getuid()
    assert c["HCThruOctetsAcked"] == 70001          # data + SYN
    assert c["ThruOctetsAcked"] == 70001
    assert c["HCThruOctetsReceived"] == 1234         # data only: the SYN-ACK is not counted
    assert c["HCDataOctetsOut"] >= 70000 and c["DataSegsOut"] >= 2
    assert c["CurMSS"] > 0 and c["CurCwnd"] == c["cwnd_segs"] * c["CurMSS"]
    assert c["SmoothedRTT"] == c["rtt_us"] // 1000 and c["rtt_us"] > 0
    assert c["tcp_info_len"] >= 104 and c["present"] & 1
    assert abs(int(c["timestamp"]) - time.time_ns()) < 5e9
    s = rows[rows["local_port"] == lst.getsockname()[1]]
    assert sorted(s["state"].tolist()) == [2, 5]         # listener, accepted socket
    assert c["cc_algorithm"] != b""


def test_socket_cookie_is_the_cid(agent, tcp_pair):
    lst, cli, _ = tcp_pair
    so_cookie = int.from_bytes(cli.getsockopt(socket.SOL_SOCKET, 57, 8), "little")  # SO_COOKIE
    rows = agent.read_all(["SegsOut"])
    assert so_cookie in rows["cid"]


def _ss_flows():
    out = subprocess.run(["ss", "-tinemH"], capture_output=True, text=True, check=True).stdout
    flows = {}
    for block in re.split(r"\n(?=\S)", out.strip()):
        m = re.search(r"sk:([0-9a-f]+)", block)
        if not m:
            continue
        kv = dict(re.findall(r"\b([a-z_]+):([0-9./]+)", block))
        flows[int(m.group(1), 16)] = kv
    return flows


def test_values_match_ss_for_idle_flows(agent):
    lst, prs = pairs(4)
    try:
        for i, (c, s) in enumerate(prs):
            c.sendall(b"x" * (1000 * (i + 1)))
            s.recv(100000)
            s.sendall(b"y" * 300)
            c.recv(1000)
        time.sleep(0.3)                          # let delayed ACKs settle: idle flows
        before = mine(agent.read_all(), lst.getsockname()[1]).copy()
        ss = _ss_flows()
        after = mine(agent.read_all(), lst.getsockname()[1])
        est = before[before["state"] == 5]
        assert len(est) == 8
        checked = 0
        for row in est:
            other = after[after["cid"] == row["cid"]][0]
            if other["SegsOut"] != row["SegsOut"] or other["SegsIn"] != row["SegsIn"]:
                continue                         # not idle after all
            kv = ss[int(row["cid"])]
            assert int(kv.get("bytes_acked", 0)) == row["HCThruOctetsAcked"]
            assert int(kv.get("bytes_received", 0)) == row["HCThruOctetsReceived"]
            assert int(kv.get("segs_out", 0)) == row["SegsOut"]
            assert int(kv.get("segs_in", 0)) == row["SegsIn"]
            assert int(kv["cwnd"]) == row["cwnd_segs"]
            assert int(kv["mss"]) == row["CurMSS"]
            assert float(kv["rto"]) == pytest.approx(row["rto_us"] / 1000, abs=0.001)
            rtt, rttvar = (float(x) for x in kv["rtt"].split("/"))
            assert rtt == pytest.approx(row["rtt_us"] / 1000, abs=0.0011)
            assert rttvar == pytest.approx(row["rttvar_us"] / 1000, abs=0.0011)
            if "ssthresh" in kv:
                assert int(kv["ssthresh"]) == row["ssthresh_segs"]
            retrans = kv.get("retrans", "0/0").split("/")
            assert int(retrans[-1]) == row["SegsRetrans"]
            checked += 1
        assert checked >= 6
    finally:
        close_all(lst, prs)


def test_variable_selection_and_dtype(agent, tcp_pair):
    rows = agent.read_all(["SmoothedRTT", "segsout", "tcpEStatsAppHCThruOctetsAcked"])
    assert rows.dtype == agent.dtype(["SmoothedRTT", "SegsOut", "HCThruOctetsAcked"])
    assert rows.dtype.names[-3:] == ("SmoothedRTT", "SegsOut", "HCThruOctetsAcked")
    assert rows.dtype.itemsize < 120
    full = agent.read_all()
    assert set(full.dtype.names) >= {v.name for v in agent.variables()}


def test_unknown_variable_suggests(agent):
    with pytest.raises(mib.UnknownVariable, match="did you mean: SmoothedRTT"):
        agent.read_all(["SmothedRTT"])


def test_variable_the_stock_kernel_lacks_is_reported_unavailable(agent):
    with pytest.raises(VariableUnavailable, match="SampleRTT.*not available.*estats"):
        agent.read_all(["SampleRTT"])


def test_duplicate_variable_is_refused(agent):
    with pytest.raises(ValueError, match="twice"):
        agent.read_all(["SegsOut", "segsout"])


def test_kernel_side_port_filter(agent):
    lst1, p1 = pairs(3)
    lst2, p2 = pairs(2)
    try:
        port1 = lst1.getsockname()[1]
        rows = agent.read_all(["SegsOut"], filter=f"sport = :{port1} or dport = :{port1}",
                               states="all")
        assert ((rows["local_port"] == port1) | (rows["rem_port"] == port1)).all()
        # listener + 3 pairs (an earlier test's TIME-WAIT socket may share the port)
        assert len(mine(rows, port1)) == 7
        same = agent.read_all(["SegsOut"], filter=sport(port1) | dport(port1), states="all")
        assert sorted(same["cid"]) == sorted(rows["cid"])
        lo, hi = sorted((port1, lst2.getsockname()[1]))
        both = agent.read_all(["SegsOut"], filter=f"sport >= :{lo} and sport <= :{hi}",
                              states="listen")
        assert {lst1.getsockname()[1], lst2.getsockname()[1]} <= set(both["local_port"])
    finally:
        close_all(lst1, p1)
        close_all(lst2, p2)


def test_address_filter_and_family(agent):
    lst4, p4 = pairs(2)
    lst6, p6 = pairs(2, socket.AF_INET6, "::1")
    try:
        v6 = agent.read_all(["SegsOut"], family="inet6")
        assert (v6["family"] == socket.AF_INET6).all()
        assert lst6.getsockname()[1] in v6["local_port"]
        onlyv6 = agent.read_all(["SegsOut"], filter="dst [::1]/128", states="established")
        assert len(mine(onlyv6, lst6.getsockname()[1])) == 4
        assert len(mine(onlyv6, lst4.getsockname()[1])) == 0
    finally:
        close_all(lst4, p4)
        close_all(lst6, p6)


def test_one_walk_dump_equals_per_family_dumps(agent):
    """Both families in one walk of the kernel's tables (TCPDIAG_GETSOCK, family
    AF_UNSPEC) give the same rows as one SOCK_DIAG_BY_FAMILY dump per family, with a
    kernel-side filter as without; the per-family path is the fallback for a kernel that
    refuses the older request."""
    from web10g import _sockdiag

    STATES = "established,listen"     # ours; not another test's closing sockets

    lst4, p4 = pairs(2)
    lst6, p6 = pairs(2, socket.AF_INET6, "::1")
    ports = (lst4.getsockname()[1], lst6.getsockname()[1])
    flt = " or ".join(f"sport = :{p} or dport = :{p}" for p in ports)
    # a column from each kind of attribute: tcp_info, the message, memory, congestion
    # control, the net_admin-only ones
    cols = ["SegsOut", "CurMSS", "State", "MSSSent", "WinScaleSent", "TimeStamps", "uid",
            "inode", "mem_rmem_bytes", "skmem_rmem_alloc", "cc_algorithm", "shutdown_rd",
            "mark", "class_id", "cgroup_id", "sockopt_flags"]
    try:
        dumper, _ = agent._plan(cols, flt, STATES, None)
        assert dumper.one_walk and dumper.families == (2, 10)
        one = {True: None, False: None}
        for walk in (True, False):
            _sockdiag._refuse_one_walk(not walk)
            try:
                assert dumper.one_walk is walk
                one[walk] = (agent.read_all(cols, filter=flt, states=STATES),
                             agent.read_all(cols, states=STATES))
            finally:
                _sockdiag._refuse_one_walk(False)
        (a, a_all), (b, b_all) = one[True], one[False]
        # this test's sockets only: on a busy machine another flow (or an earlier test's
        # TIME-WAIT) may have one of these port numbers
        a = np.concatenate([mine(a, p) for p in ports])
        b = np.concatenate([mine(b, p) for p in ports])
        assert len(a) == len(b) == 10                   # 2 listeners + 2 x 2 pairs each
        assert set(a["family"]) == {socket.AF_INET, socket.AF_INET6}
        a, b = np.sort(a, order="cid"), np.sort(b, order="cid")
        for name in ("cid", "family", "local_addr", "rem_addr", "local_port", "rem_port",
                     "state", *cols):
            assert (a[name] == b[name]).all(), name
        for p in ports:                                  # unfiltered: ours are there too
            assert len(mine(a_all, p)) == len(mine(b_all, p)) == 5
        only4 = agent.read_all(cols, filter=flt, family="inet")
        assert not agent._plan(cols, flt, None, "inet")[0].one_walk
        assert set(only4["family"]) == {socket.AF_INET}
    finally:
        close_all(lst4, p4)
        close_all(lst6, p6)


def test_invalid_filter_names_position_and_reason(agent):
    with pytest.raises(FilterError) as ei:
        agent.read_all(filter="dport = :99999")
    assert ei.value.position is not None and "65535" in str(ei.value)


def test_states(agent, tcp_pair):
    lst, _, _ = tcp_pair
    listen = agent.read_all(["SegsOut"], states="listening")     # ss's spelling
    assert (listen["state"] == 2).all() and lst.getsockname()[1] in listen["local_port"]
    est = agent.read_all(["SegsOut"], states=["established"])
    assert (est["state"] == 5).all()
    assert parse_states("connected") & (1 << 10) == 0
    with pytest.raises(ValueError, match="did you mean: established"):
        parse_states("establishd")


def test_out_buffer_is_reused_and_grown(agent):
    lst, prs = pairs(20)
    try:
        dt = agent.dtype(["SegsOut"])
        buf = np.empty(100_000, dtype=dt)
        rows = agent.read_all(["SegsOut"], out=buf)
        assert rows.base is buf or np.shares_memory(rows, buf)
        small = np.empty(3, dtype=dt)
        grown = agent.read_all(["SegsOut"], out=small)
        assert len(grown) == len(agent.read_all(["SegsOut"])) >= 40
        assert len(mine(grown, lst.getsockname()[1])) == 40    # 20 pairs; not the listener
        assert len(set(grown["cid"].tolist())) == len(grown)
    finally:
        close_all(lst, prs)


def test_out_buffer_is_checked(agent):
    with pytest.raises(TypeError, match="wrong dtype"):
        agent.read_all(["SegsOut"], out=np.empty(10, dtype=agent.dtype(["SegsIn"])))
    with pytest.raises(ValueError, match="contiguous"):
        agent.read_all(["SegsOut"], out=np.empty(10, dtype=agent.dtype(["SegsOut"]))[::2])
    with pytest.raises(TypeError):
        agent.read_all(["SegsOut"], out=[1, 2, 3])


def test_read_vars_exact_lookup_and_vanished_flow(agent):
    lst, prs = pairs(1)
    c, s = prs[0]
    rows = mine(agent.list_conns(states="all"), lst.getsockname()[1])
    cid = int(rows[rows["local_port"] == c.getsockname()[1]]["cid"][0])
    c.sendall(b"z" * 5000)
    s.recv(10000)
    rec = agent.read_vars(cid, ["HCThruOctetsAcked", "SegsOut"])
    assert rec["cid"] == cid and rec["HCThruOctetsAcked"] == 5001
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    c.close()
    s.close()
    lst.close()
    with pytest.raises(errors.FlowNotFound, match=str(cid)):
        agent.read_vars(cid)
    with pytest.raises(errors.FlowNotFound):
        agent.read_vars(12345678901)


def test_list_conns_has_identity_only(agent, tcp_pair):
    lst, cli, _ = tcp_pair
    rows = agent.list_conns()
    assert set(rows.dtype.names) >= {n for n, _ in mib.IDENTITY_FIELDS}
    assert "SegsOut" not in rows.dtype.names
    assert cli.getsockname()[1] in rows["local_port"]


def test_owners_of_flows(agent, tcp_pair):
    lst, cli, _ = tcp_pair
    rows = mine(agent.read_all(["SegsOut"], states="all"), lst.getsockname()[1])
    rows = rows[rows["inode"] != 0]         # a TIME-WAIT leftover on the port has no owner
    assert len(rows) == 3
    pids, cmds = agent.owners(rows)
    assert (pids == os.getpid()).all()
    with open("/proc/self/status") as fh:
        name = fh.readline().split(":", 1)[1].strip()
    assert set(cmds) == {name}


def test_text_addresses(agent):
    lst, prs = pairs(1, socket.AF_INET6, "::1")
    try:
        rows = mine(agent.read_all(["SegsOut"], states="all"), lst.getsockname()[1],
                    socket.AF_INET6)
        assert len(rows) == 3 and set(addresses(rows)) == {"::1"}
        local, remote = endpoints(rows[rows["state"] == 5])
        assert all(e.startswith("[::1]:") for e in local)
    finally:
        close_all(lst, prs)


def test_closed_flows_deliver_final_statistics(agent):
    agent.watch_closed()
    lst, prs = pairs(2)
    c, s = prs[0]
    c.sendall(b"q" * 20000)
    got = 0
    while got < 20000:
        got += len(s.recv(20000))
    cport = c.getsockname()[1]
    c.close()
    s.close()
    time.sleep(0.2)
    closed = agent.closed(["HCThruOctetsAcked", "SegsOut"])
    row = closed[closed["local_port"] == cport]
    assert len(row) == 1
    assert row[0]["state"] == 1                      # RFC closed
    assert row[0]["HCThruOctetsAcked"] == 20002      # data + SYN + FIN
    again = agent.closed()
    assert cport not in again["local_port"]          # each end is delivered once
    close_all(lst, prs[1:])


def test_derived_running_maxima(agent, tcp_pair):
    _, cli, srv = tcp_pair
    for _ in range(3):
        cli.sendall(b"w" * 100000)
        got = 0
        while got < 100000:
            got += len(srv.recv(100000))
        rows = agent.read_all(["MaxMSS", "MinMSS", "CurMSS", "MaxRTT", "MaxAppRQueue"])
    rows = rows[rows["rem_port"] == cli.getpeername()[1]]
    row = rows[rows["local_port"] == cli.getsockname()[1]][0]
    assert row["MaxMSS"] >= row["CurMSS"] >= row["MinMSS"] > 0


def test_availability_per_row(agent):
    lst, prs = pairs(1)
    c, s = prs[0]
    port, server_port = c.getsockname()[1], lst.getsockname()[1]
    c.close()                                         # active close: c ends in TIME_WAIT
    s.close()
    time.sleep(0.1)
    rows = agent.read_all(["SmoothedRTT", "cc_algorithm"], states=["time-wait"])
    # both ports: an earlier test's TIME-WAIT may have had the same ephemeral port
    tw = rows[(rows["local_port"] == port) & (rows["rem_port"] == server_port)]
    assert len(tw) == 1 and tw["state"][0] == 11
    assert not agent.available(tw, "SmoothedRTT").any()
    est = agent.read_all(["SmoothedRTT"], states="listen")
    assert agent.available(est[est["local_port"] == lst.getsockname()[1]], "SmoothedRTT").all()
    assert agent.available(tw, "cid").all()
    lst.close()


def test_kernel_lacks_nothing_it_should_have(agent):
    agent.read_all()
    # 6.18 has every tcp_info field; only the 7.0 bit-field columns are missing
    if agent.kernel >= (6, 18) and agent.kernel < (7, 0):
        assert agent.unavailable <= {"ecn_mode", "options2", "Priority", "class_id", "mark"}


def test_agent_in_another_namespace(netns_name, tcp_pair):
    lst, cli, _ = tcp_pair
    from web10g import netns

    with netns.entered(netns_name):
        inner = socket.create_server(("127.0.0.1", 0))
    try:
        with web10g.open(netns=netns_name) as a, web10g.open() as root:
            inside = a.read_all(["SegsOut"], states="all")
            outside = root.read_all(["SegsOut"], states="all")
            assert inner.getsockname()[1] in inside["local_port"]
            assert lst.getsockname()[1] not in inside["local_port"]
            assert lst.getsockname()[1] in outside["local_port"]
    finally:
        inner.close()


def test_missing_namespace_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="ip netns"):
        web10g.open(netns="w10g-does-not-exist")
