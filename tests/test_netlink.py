"""The netlink core against the real kernel (NETLINK_GENERIC, NETLINK_SOCK_DIAG), and its
receive loop against a user-space peer for the situations the kernel cannot be made to
produce on demand."""
from __future__ import annotations

import errno
import gc
import os
import socket
import struct

import pytest
from conftest import nlattr, nlmsg

from web10g import errors, genl
from web10g._netlink import NetlinkSocket, parse_attrs

NETLINK_SOCK_DIAG = 4
NETLINK_GENERIC = 16
NETLINK_USERSOCK = 2
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_MULTI, NLM_F_DUMP_INTR, NLM_F_ACK_TLVS, NLM_F_CAPPED = 0x2, 0x10, 0x200, 0x100
INET_DIAG_INFO = 2


def diag_request(family: int = socket.AF_INET, ext: int = 1 << (INET_DIAG_INFO - 1),
                 states: int = 0xFFF) -> bytes:
    """inet_diag_req_v2 for a dump of all TCP sockets of one family."""
    return struct.pack("=BBBxI", family, socket.IPPROTO_TCP, ext, states) + bytes(48)


# --- generic netlink controller ---------------------------------------------------------

def test_controller_resolves_itself():
    with NetlinkSocket(NETLINK_GENERIC) as sock:
        fam = genl.resolve(sock, "nlctrl")
    assert fam.id == 0x10          # GENL_ID_CTRL is fixed
    assert fam.name == "nlctrl"
    assert fam.version >= 1
    assert 3 in fam.ops            # CTRL_CMD_GETFAMILY
    assert "notify" in fam.mcast_groups


def test_missing_family_is_a_clear_error():
    with NetlinkSocket(NETLINK_GENERIC) as sock:
        with pytest.raises(errors.FamilyNotFound) as ei:
            genl.resolve(sock, "w10g_nosuchfam")
    assert isinstance(ei.value, FileNotFoundError)
    assert ei.value.errno == errno.ENOENT
    assert "w10g_nosuchfam" in str(ei.value)


def test_overlong_family_name_is_refused_before_sending():
    with NetlinkSocket(NETLINK_GENERIC) as sock:
        with pytest.raises(ValueError, match="15"):
            genl.resolve(sock, "a_family_name_too_long")


def test_missing_tcp_estats_says_what_to_do():
    assert not genl.family_exists("tcp_estats")    # no Web10G kernel here
    with NetlinkSocket(NETLINK_GENERIC) as sock:
        with pytest.raises(errors.FamilyNotFound) as ei:
            genl.resolve(sock, "tcp_estats")
    msg = str(ei.value)
    assert "tcp_estats_nl" in msg and "net.ipv4.tcp_estats" in msg and "sock_diag" in msg


def test_family_exists_for_a_real_family():
    assert genl.family_exists("nlctrl")


# --- sock_diag dump round trip ----------------------------------------------------------

def _records(msgs: list[bytes]) -> list[dict]:
    out = []
    for m in msgs:
        n, mtype = struct.unpack_from("=IH", m)
        assert mtype == SOCK_DIAG_BY_FAMILY and n == len(m)
        fam, state = m[16], m[17]
        sport, dport = struct.unpack_from("!HH", m, 20)
        cookie = struct.unpack_from("=Q", m, 60)[0]
        uid, inode = struct.unpack_from("=II", m, 80)
        attrs = dict(parse_attrs(m, 16 + 72))
        out.append(dict(family=fam, state=state, sport=sport, dport=dport, cookie=cookie,
                        uid=uid, inode=inode, attrs=attrs))
    return out


def test_sock_diag_dump_round_trip(tcp_pair):
    lst, cli, srv = tcp_pair
    cli.sendall(b"x" * 1000)
    assert srv.recv(2000)
    with NetlinkSocket(NETLINK_SOCK_DIAG) as sock:
        recs = _records(sock.request(SOCK_DIAG_BY_FAMILY, 0, diag_request(), dump=True))
    # pick our sockets by cookie (SO_COOKIE): a TIME-WAIT leftover of an earlier test may
    # share the port number
    ours = {int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 57, 8), "little")
            for s in (lst, cli, srv)}
    mine = [r for r in recs if r["cookie"] in ours]
    states = sorted(r["state"] for r in mine)
    assert states == [1, 1, 10]    # two ESTABLISHED ends and the LISTEN socket
    port = lst.getsockname()[1]
    client = next(r for r in mine if r["dport"] == port)
    assert client["sport"] == cli.getsockname()[1]
    assert client["family"] == socket.AF_INET
    assert client["cookie"] != 0
    assert client["uid"] == os.getuid()
    assert client["inode"] == os.fstat(cli.fileno()).st_ino
    info = client["attrs"][INET_DIAG_INFO]
    assert len(info) >= 104
    if len(info) >= 128:
        # tcpi_bytes_acked counts the SYN's sequence number too
        assert struct.unpack_from("=Q", info, 120)[0] == 1001


def test_sock_diag_rejects_a_bad_request_with_the_call_named():
    bad = struct.pack("=BBBxI", 99, socket.IPPROTO_TCP, 0, 0xFFF) + bytes(48)
    with NetlinkSocket(NETLINK_SOCK_DIAG) as sock:
        with pytest.raises(OSError) as ei:
            sock.request(SOCK_DIAG_BY_FAMILY, 0, bad, dump=True, call="test dump")
        assert ei.value.errno == errno.EINVAL
        assert "test dump" in str(ei.value) and "EINVAL" in str(ei.value)
        # the socket stays usable after an error
        assert sock.request(SOCK_DIAG_BY_FAMILY, 0, diag_request(), dump=True) is not None


def test_large_dump_spans_many_datagrams():
    socks = []
    lst = socket.create_server(("127.0.0.1", 0), backlog=512)
    try:
        for _ in range(300):
            c = socket.create_connection(lst.getsockname())
            s, _ = lst.accept()
            socks += [c, s]
        with NetlinkSocket(NETLINK_SOCK_DIAG) as sock:
            recs = _records(sock.request(SOCK_DIAG_BY_FAMILY, 0, diag_request(), dump=True))
        port = lst.getsockname()[1]
        assert sum(1 for r in recs if r["state"] == 1 and port in (r["sport"], r["dport"])) == 600
        cookies = [r["cookie"] for r in recs]
        assert len(cookies) == len(set(cookies))
    finally:
        for s in socks:
            s.close()
        lst.close()


# --- socket lifetime --------------------------------------------------------------------

def test_context_manager_and_close():
    with NetlinkSocket(NETLINK_SOCK_DIAG) as sock:
        fd = sock.fileno()
        assert sock.portid > 0 and not sock.closed
        os.fstat(fd)
    assert sock.closed
    with pytest.raises(ValueError, match="closed"):
        sock.request(SOCK_DIAG_BY_FAMILY, 0, diag_request(), dump=True)
    sock.close()    # idempotent


def test_garbage_collection_closes_the_socket():
    sock = NetlinkSocket(NETLINK_SOCK_DIAG)
    fd = sock.fileno()
    del sock
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)


def test_tiny_receive_buffer_is_refused():
    with pytest.raises(ValueError, match="32 KiB"):
        NetlinkSocket(NETLINK_SOCK_DIAG, rcvbuf=4096)


# --- the receive loop against a user-space peer ----------------------------------------

def _client(peer, **kw) -> NetlinkSocket:
    return NetlinkSocket(NETLINK_USERSOCK, peer=peer.portid, timeout=kw.pop("timeout", 3), **kw)


def test_peer_data_then_ack(nl_peer):
    def reply(seq, port):
        data = nlmsg(0x20, 0, 0, 0, b"abcd")    # seq 0 / pid 0: matches anything
        ack = nlmsg(NLMSG_ERROR, 0, seq, port, struct.pack("=i", 0) + bytes(16))
        return [data + data, ack]
    nl_peer.serve(reply)
    with _client(nl_peer) as sock:
        msgs = sock.request(0x20, 0, b"hi")
    assert msgs == [nlmsg(0x20, 0, 0, 0, b"abcd")] * 2
    assert nl_peer.requests[0][16:18] == b"hi"


def test_dump_intr_is_its_own_exception(nl_peer):
    def reply(seq, port):
        return [nlmsg(0x20, NLM_F_MULTI | NLM_F_DUMP_INTR, seq, port, b"abcd")]
    nl_peer.serve(reply)
    with _client(nl_peer) as sock:
        with pytest.raises(errors.DumpInterrupted, match="retry"):
            sock.request(0x20, 0, b"", dump=True)


def test_extended_ack_text_reaches_the_message(nl_peer):
    def reply(seq, port):
        payload = (struct.pack("=i", -errno.EINVAL) + struct.pack("=IHHII", 20, 0x20, 5, seq, 0)
                   + nlattr(1, b"missing attribute FOO\0"))
        return [nlmsg(NLMSG_ERROR, NLM_F_ACK_TLVS | NLM_F_CAPPED, seq, port, payload)]
    nl_peer.serve(reply)
    with _client(nl_peer) as sock:
        with pytest.raises(OSError) as ei:
            sock.request(0x20, 0, b"")
    assert ei.value.errno == errno.EINVAL
    assert "missing attribute FOO" in str(ei.value)


def test_enobufs_is_reported_clearly(nl_peer):
    nl_peer.serve(lambda seq, port: [nlmsg(NLMSG_ERROR, 0, seq, port,
                                           struct.pack("=i", -errno.ENOBUFS) + bytes(16))])
    with _client(nl_peer) as sock:
        with pytest.raises(errors.ReceiveOverrun, match="lost"):
            sock.request(0x20, 0, b"")


def test_done_with_error_fails_the_dump(nl_peer):
    nl_peer.serve(lambda seq, port: [nlmsg(NLMSG_DONE, NLM_F_MULTI, seq, port,
                                           struct.pack("=i", -errno.EBUSY))])
    with _client(nl_peer) as sock:
        with pytest.raises(OSError) as ei:
            sock.request(0x20, 0, b"", dump=True)
    assert ei.value.errno == errno.EBUSY


def test_truncated_error_message_is_malformed_not_a_crash(nl_peer):
    nl_peer.serve(lambda seq, port: [nlmsg(NLMSG_ERROR, 0, seq, port, b"\xea\xff")])
    with _client(nl_peer) as sock:
        with pytest.raises(errors.MalformedReply):
            sock.request(0x20, 0, b"")


def test_stale_sequence_number_is_refused(nl_peer):
    nl_peer.serve(lambda seq, port: [nlmsg(0x20, 0, seq + 7, port, b"abcd")])
    with _client(nl_peer) as sock:
        with pytest.raises(OSError) as ei:
            sock.request(0x20, 0, b"")
    assert ei.value.errno == errno.EPROTO


def test_silent_peer_times_out(nl_peer):
    nl_peer.serve(lambda seq, port: [])
    with _client(nl_peer, timeout=0.3) as sock:
        with pytest.raises(errors.KernelTimeout, match=f"port {nl_peer.portid}"):
            sock.request(0x20, 0, b"")


def test_socket_recovers_after_a_failed_transaction(nl_peer):
    replies = iter([
        # first request: a bad message, then leftovers of the same reply still queued
        lambda seq, port: [nlmsg(0x20, 0, seq + 1, port, b"x"),
                           nlmsg(0x20, 0, seq, port, b"left")],
        lambda seq, port: [nlmsg(0x20, 0, 0, 0, b"good"),
                           nlmsg(NLMSG_ERROR, 0, seq, port, bytes(20))],
    ])
    nl_peer.serve(lambda seq, port: next(replies)(seq, port), count=2)
    with _client(nl_peer) as sock:
        with pytest.raises(OSError):
            sock.request(0x20, 0, b"")
        nl_peer._thread.join(0.5)   # let the leftovers arrive before the drain
        assert sock.request(0x20, 0, b"") == [nlmsg(0x20, 0, 0, 0, b"good")]


# --- attribute walker -------------------------------------------------------------------

def test_parse_attrs_is_bounds_checked():
    good = nlattr(1, b"abc") + nlattr(0x8002, b"\1\2\3\4")
    assert parse_attrs(good) == [(1, b"abc"), (2, b"\1\2\3\4")]
    # a length running past the buffer ends the walk
    assert parse_attrs(good[:-2]) == [(1, b"abc")]
    assert parse_attrs(struct.pack("=HH", 2, 1)) == []          # nla_len < header
    assert parse_attrs(struct.pack("=HH", 400, 1) + b"zz") == []
    assert parse_attrs(b"") == []
    assert parse_attrs(good, 1000) == []
