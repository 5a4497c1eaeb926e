"""The estats backend against a hostile or misbehaving counterpart (issue 12, defects 2,
5, 6, 7): forged datagrams from other local users, a peer of another user, replies that
do not match their requests, duplicated or late datagrams, error values outside the
errno range. The fake kernel's ``tamper`` knob makes it misbehave on demand."""
from __future__ import annotations

import errno
import os
import socket
import struct

import pytest
from conftest import nlmsg
from fakekernel import FakeKernel

import web10g
from web10g import errors
from web10g._netlink import NetlinkSocket
from web10g.backends import estats
from web10g.backends.estats import EstatsAgent, PeerSettingError

CMD_LIST_CONNS, CMD_READ_ALL, CMD_READ_VARS = 0, 1, 2
NETLINK_USERSOCK = 2
NLMSG_ERROR, NLMSG_DONE = 2, 3
INT_MIN = -2**31
NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setuid to nobody)")


@pytest.fixture
def agent(fake_kernel):
    with EstatsAgent(peer=fake_kernel.portid, timeout=3) as a:
        yield a


def _as_nobody(fn) -> int:
    """Run ``fn()`` in a child process as uid/gid 65534; its exit status (0 = returned,
    the errno of an OSError, 254 anything else)."""
    pid = os.fork()
    if pid == 0:                                  # pragma: no cover - the child
        code = 254
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            fn()
            code = 0
        except OSError as exc:
            code = exc.errno if exc.errno and exc.errno < 254 else 254
        except BaseException:  # noqa: BLE001
            code = 254
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _forged_read_all(family_id: int) -> bytes:
    """A READ_ALL data datagram for CID 31336 (reported 31337) with SegsOut 0xDEADBEEF."""
    fk = FakeKernel("head", family_id=family_id)
    cid = fk.add_flow(("10.6.6.6", 6666), ("10.7.7.7", 7777), cid=31336)
    fk.set_value(cid, "SegsOut", 0xDEADBEEF)
    return fk._read_all({})[0]


# --- defect 2: forged replies in peer mode ---------------------------------------------

@needs_root
def test_a_forger_of_another_uid_cannot_inject_a_reply(agent, fake_kernel):
    forged = _forged_read_all(fake_kernel.family_id)
    target = agent._sock.portid

    def forge() -> None:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_USERSOCK)
        s.bind((0, 0))
        s.sendto(forged, (target, 0))

    code = _as_nobody(forge)
    rows = agent.read_all(["SegsOut"])
    assert rows["cid"].tolist() == [1, 2, 3, 5]
    assert 0xDEADBEEF not in rows["SegsOut"].tolist()
    assert agent.read_vars(1, ["SegsOut"])["cid"] == 1
    # the kernel refused it: the client's socket is connected to the peer
    assert code == errno.ECONNREFUSED, code


def test_a_forger_on_another_port_is_refused_even_as_root(agent, fake_kernel):
    forged = _forged_read_all(fake_kernel.family_id)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_USERSOCK) as s:
        s.bind((0, 0))
        with pytest.raises(ConnectionRefusedError):
            s.sendto(forged, (agent._sock.portid, 0))
    assert agent.read_all()["cid"].tolist() == [1, 2, 3, 5]
    assert agent._sock.foreign == 0


@needs_root
def test_a_peer_of_another_user_is_refused_by_a_root_client():
    r, w = os.pipe()

    def serve() -> None:
        os.close(r)
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_USERSOCK)
        s.bind((0, 0))
        s.settimeout(5)
        os.write(w, struct.pack("=I", s.getsockname()[0]))
        data, (port, _) = s.recvfrom(65536)
        seq = struct.unpack_from("=I", data, 8)[0]
        s.sendto(nlmsg(NLMSG_ERROR, 0, seq, port, struct.pack("=i", 0) + data[:16]),
                 (port, 0))

    pid = os.fork()
    if pid == 0:                                  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            serve()
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        port = struct.unpack("=I", os.read(r, 4))[0]
        with pytest.raises(PermissionError, match=f"uid {NOBODY}"):
            EstatsAgent(peer=port, timeout=3)
    finally:
        os.close(r)
        os.waitpid(pid, 0)


@pytest.mark.parametrize("value", ["abc", "", " 12", "-5", "1_000", "0", "4294967296",
                                   "99999999999999999999", "\u0663", "+7", "0x10"])
def test_bad_peer_environment_values_are_clear_errors(monkeypatch, value):
    monkeypatch.setenv("WEB10G_ESTATS_PEER", value)
    if value == "":
        assert estats.peer_from_env() is None
        return
    with pytest.raises(PeerSettingError, match="WEB10G_ESTATS_PEER") as ei:
        estats.peer_from_env()
    assert isinstance(ei.value, errors.Web10GError) and isinstance(ei.value, ValueError)
    try:
        if 0 < int(value, 10) <= 0xFFFFFFFF:
            return  # web10g.open's own parser (backends/__init__) still takes these
    except ValueError:
        pass
    with pytest.raises(ValueError, match="WEB10G_ESTATS_PEER"):   # web10g.open too
        web10g.open()


@pytest.mark.parametrize("peer", [2**32, -1, 0, 2**70, "12x", 1.5, True])
def test_bad_peer_arguments_are_clear_errors(peer):
    with pytest.raises(PeerSettingError, match="port id|out of range"):
        EstatsAgent(peer=peer)
    with pytest.raises(PeerSettingError):
        web10g.open("estats", peer=peer)


def test_peer_from_environment_is_accepted(monkeypatch, fake_kernel):
    monkeypatch.setenv("WEB10G_ESTATS_PEER", str(fake_kernel.portid))
    assert estats.peer_from_env() == fake_kernel.portid
    with EstatsAgent(peer=str(fake_kernel.portid)) as a:
        assert len(a.list_conns()) == 5


# --- defect 5: a READ_VARS ACK without its data ----------------------------------------

def _drop_data_of(cid: int):
    def tamper(req, data, ack):
        if req.cmd == CMD_READ_VARS and req.attrs["4tuple"]["cid"] == cid:
            return [ack]                        # success ACK, no data message
        return data + [ack]
    return tamper


def test_read_vars_ack_without_data_is_a_problem_of_that_cid(fake_kernel_factory):
    fk = fake_kernel_factory("head", privileged=True)
    for i in range(6):
        fk.add_flow(("10.0.0.1", 100 + i), ("10.0.0.2", 80))
    fk.tamper = _drop_data_of(3)
    with EstatsAgent(peer=fk.portid, timeout=3) as a:
        rows, problems = a.read_many([3, 4, 5])
        assert rows["cid"].tolist() == [4, 5]
        assert set(problems) == {3}
        assert isinstance(problems[3], errors.MalformedReply)
        assert "no data message" in str(problems[3])
        with pytest.raises(errors.MalformedReply, match="no data"):
            a.read_vars(3)
        assert a.read_vars(4)["cid"] == 4        # the socket is fine afterwards


def test_read_vars_reply_naming_another_cid_is_malformed(fake_kernel_factory):
    fk = fake_kernel_factory("head", privileged=True)
    for i in range(6):
            fk.add_flow(("10.0.0.1", 100 + i), ("10.0.0.2", 80))
    with fk._lock:      # a genuine READ_VARS reply of connection 6
        other_reply = fk._read_vars({14: _tuple_attr(6)})[0]

    def tamper(req, data, ack):
        if req.cmd == CMD_READ_VARS and req.attrs["4tuple"]["cid"] == 3:
            return [other_reply, ack]           # ... in answer to the request for 3
        return data + [ack]

    with EstatsAgent(peer=fk.portid, timeout=3) as a:
        fk.tamper = tamper
        before = fk.datagrams_sent
        with pytest.raises(errors.MalformedReply, match="another connection"):
            a.read_many([2, 3, 4])
        # the call stopped at the bad message; the rest of that batch's replies (data of
        # 4, seq 0) must be queued before the next call's drain, or it would meet them
        # (and refuse them as well: a peer's late data cannot be told by seq)
        fk.wait_sent(before + 6)
        fk.tamper = None
        rows, problems = a.read_many([2, 3, 4])
        assert rows["cid"].tolist() == [2, 3, 4] and not problems


def _tuple_attr(cid: int):
    """A parsed NLE_ATTR_4TUPLE{NEA_CID=cid} as the fake's handlers take it."""
    from fakekernel.encode import nla_parse

    inner = struct.pack("=HHI", 8, 6, cid)
    outer = struct.pack("=HH", 4 + len(inner), 14 | 0x8000) + inner
    return nla_parse(outer, 0, len(outer), 28)[14]


def test_read_vars_duplicate_data_is_malformed(fake_kernel):
    def tamper(req, data, ack):
        if req.cmd == CMD_READ_VARS:
            return data + data + [ack]
        return data + [ack]
    fake_kernel.tamper = tamper
    with EstatsAgent(peer=fake_kernel.portid, timeout=3) as a:
        with pytest.raises(errors.MalformedReply, match="second data message"):
            a.read_vars(1)


# --- defect 6: duplicated and late datagrams -------------------------------------------

def test_duplicated_read_all_datagram_is_refused_not_returned(fake_kernel_factory):
    fk = fake_kernel_factory("head", privileged=True)
    for i in range(9):
        fk.add_flow(("10.0.0.1", 100 + i), ("10.0.0.2", 80))
    fk.tamper = lambda req, data, ack: data + data + [ack]
    with EstatsAgent(peer=fk.portid, timeout=3) as a:
        with pytest.raises(errors.MalformedReply, match="repeats or goes backwards"):
            a.read_all()
        fk.tamper = None
        rows = a.read_all()
        assert rows["cid"].tolist() == list(range(1, 10))


def test_data_after_its_ack_never_reaches_the_next_call(fake_kernel_factory):
    fk = fake_kernel_factory("head", privileged=True)
    for i in range(5):
        fk.add_flow(("10.0.0.1", 100 + i), ("10.0.0.2", 80))
    late = {"armed": True}

    def tamper(req, data, ack):
        if req.cmd == CMD_READ_ALL and late["armed"]:
            late["armed"] = False
            return [ack] + data                 # the ACK first, then the data
        return data + [ack]
    fk.tamper = tamper
    with EstatsAgent(peer=fk.portid, timeout=3) as a:
        first = a.read_all(["SegsOut"])
        assert len(first) == 0                 # the ACK ended the reply: nothing to see
        fk.wait_sent(2 + 2 + 2)                # ctrl + INIT replies, then ACK + data
        for cid in fk.flows:
            fk.set_value(cid, "SegsOut", 1000 + cid)
        rows = a.read_all(["SegsOut"])
        assert rows["cid"].tolist() == [1, 2, 3, 4, 5]
        assert rows["SegsOut"].tolist() == [1001, 1002, 1003, 1004, 1005]


def test_a_late_ack_of_an_earlier_request_is_skipped(fake_kernel):
    old: list[bytes] = []

    def tamper(req, data, ack):
        if req.cmd == CMD_LIST_CONNS:
            old.append(ack)
            return data + [ack]
        if req.cmd == CMD_READ_ALL and old:
            # the LIST_CONNS ACK again, arriving in the middle of the next call (after
            # its drain): an older sequence number, to be skipped
            return [old.pop()] + data + [ack]
        return data + [ack]
    fake_kernel.tamper = tamper
    with EstatsAgent(peer=fake_kernel.portid, timeout=3) as a:
        assert len(a.list_conns()) == 5
        assert a.read_all()["cid"].tolist() == [1, 2, 3, 5]
        assert not old


def test_stale_data_of_another_command_is_malformed_not_returned(fake_kernel):
    """Late data that slips past the drain (it arrives during the next call) is caught
    by the command and CID checks."""
    with EstatsAgent(peer=fake_kernel.portid, timeout=3) as a:
        a.read_all()
        with fake_kernel._lock:
            list_reply = fake_kernel._list_conns({})[0]

        def tamper(req, data, ack):
            if req.cmd == CMD_READ_ALL:
                return [list_reply] + data + [ack]
            return data + [ack]
        fake_kernel.tamper = tamper
        with pytest.raises(errors.MalformedReply, match="another command"):
            a.read_all()


# --- defect 7: error values outside the errno range ------------------------------------

@pytest.mark.parametrize("value", [INT_MIN, -4096, 1, 2**31 - 1])
def test_error_values_outside_the_errno_range_are_malformed(fake_kernel, value):
    read_alls = []

    def tamper(req, data, ack):
        if req.cmd == CMD_READ_ALL:
            read_alls.append(req)
        if req.cmd == CMD_READ_VARS or (req.cmd == CMD_READ_ALL and len(read_alls) == 1):
            return [FakeKernel.error_datagram(req, value)]
        return data + [ack]
    fake_kernel.tamper = tamper
    with EstatsAgent(peer=fake_kernel.portid, timeout=3) as a:
        with pytest.raises(errors.MalformedReply, match=str(value)):
            a.read_all()
        with pytest.raises(errors.MalformedReply, match=str(value)):   # the batch path
            a.read_many([1, 2])
        # the second request's bad error arrives late: skipped, the agent works on
        assert a.read_all()["cid"].tolist() == [1, 2, 3, 5]


def test_errno_range_edges_are_errnos(fake_kernel):
    def tamper(req, data, ack):
        if req.cmd == CMD_READ_ALL:
            return [FakeKernel.error_datagram(req, -4095)]
        return data + [ack]
    fake_kernel.tamper = tamper
    with EstatsAgent(peer=fake_kernel.portid, timeout=3) as a:
        with pytest.raises(OSError) as ei:
            a.read_all()
        assert ei.value.errno == 4095 and not isinstance(ei.value, errors.MalformedReply)


@pytest.mark.parametrize("msg_type", [NLMSG_ERROR, NLMSG_DONE])
def test_raw_socket_int_min_error_is_malformed(nl_peer, msg_type):
    def reply(seq, port):
        return [nlmsg(msg_type, 0, seq, port, struct.pack("=i", INT_MIN) + bytes(16))]
    nl_peer.serve(reply)
    with NetlinkSocket(NETLINK_USERSOCK, peer=nl_peer.portid, timeout=3) as sock:
        with pytest.raises(errors.MalformedReply, match=str(INT_MIN)):
            sock.request(0x20, 0, b"", dump=msg_type == NLMSG_DONE)
