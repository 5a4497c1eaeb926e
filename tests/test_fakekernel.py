"""The fake Web10G kernel speaks the tcp_estats ABI (web10g-abi.md), byte for byte.

Everything here talks to the fake through a plain stdlib netlink client (struct-based
encode/decode written below), never through web10g's own netlink code, so these tests pin
the fake to the spec independently of the client it is meant to test.
"""
from __future__ import annotations

import errno
import random
import re
import socket
import struct
import time

import pytest
from fakekernel import DEFAULT_FLOWS, FakeKernel

from web10g import mib

pytest_plugins = ["fakekernel.plugin"]

NETLINK_USERSOCK = 2
NLMSG_ERROR, NLMSG_DONE = 2, 3
REQ, MULTI, ACK, ROOT, DUMP, CAPPED = 0x1, 0x2, 0x4, 0x100, 0x300, 0x100
NESTED = 0x8000
GENL_ID_CTRL = 0x10
FAM = 0x1B
LIST_CONNS, READ_ALL, READ_VARS, WRITE_VAR, INIT, TIMESTAMP = range(6)
A_MASK, A_TUPLE, A_WRITE, A_TIME = 13, 14, 15, 16
A_NUM_TABLES, A_NUM_VARS, A_VAR = 17, 18, 25
A_TS_DELTA, A_TS, A_PAD = 26, 27, 28
HEAD = mib.layout("head")


# ================================================================= stdlib client

def hexdump(text: str) -> bytes:
    """Bytes of a §13-style dump: ``OFFS  xx xx ...  comment`` lines; ``xx`` = any byte
    (returned as 0x00 — use :func:`hexmask` for the wildcard positions)."""
    return bytes(b if b is not None else 0 for b in _hexbytes(text))


def hexmask(text: str) -> list[int | None]:
    return _hexbytes(text)


def _hexbytes(text: str) -> list[int | None]:
    out: list[int | None] = []
    for line in text.strip("\n").splitlines():
        m = re.match(r"\s*([0-9a-f]{4})  ((?:(?:[0-9a-f]{2}|xx) )*(?:[0-9a-f]{2}|xx))",
                     line)
        if not m:
            continue
        assert int(m.group(1), 16) == len(out), f"offset mismatch at {line!r}"
        out += [None if t == "xx" else int(t, 16) for t in m.group(2).split(" ")]
    return out


def nlattr(atype: int, payload: bytes = b"") -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, atype) + payload + b"\0" * (-n % 4)


def nest(atype: int, *children: bytes, flag: bool = True) -> bytes:
    return nlattr(atype | (NESTED if flag else 0), b"".join(children))


def u8(v): return struct.pack("=B", v)
def u16(v): return struct.pack("=H", v)
def u32(v): return struct.pack("=I", v)
def u64(v): return struct.pack("=Q", v)


def tuple_cid(cid: int) -> bytes:
    return nest(A_TUPLE, nlattr(6, u32(cid)))


def mask_attr(*masks: int | None) -> bytes:
    """NLE_ATTR_MASK with a member per table that is not None."""
    return nest(A_MASK, *(nlattr(t + 1, u64(m)) for t, m in enumerate(masks)
                          if m is not None))


def write_attr(name: bytes, value: int | None = None) -> bytes:
    parts = [nlattr(1, name)]
    if value is not None:
        parts.append(nlattr(2, u32(value)))
    return nest(A_WRITE, *parts)


def nlmsg(nl_type: int, flags: int, seq: int, payload: bytes, pid: int = 0) -> bytes:
    n = 16 + len(payload)
    return struct.pack("=IHHII", n, nl_type, flags, seq, pid) + payload + b"\0" * (-n % 4)


def genl(cmd: int, attrs: bytes = b"", *, seq: int = 1, flags: int = REQ | ACK,
         nl_type: int = FAM, version: int = 1) -> bytes:
    return nlmsg(nl_type, flags, seq, struct.pack("=BBH", cmd, version, 0) + attrs)


def messages(datagram: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos + 16 <= len(datagram):
        n = struct.unpack_from("=I", datagram, pos)[0]
        assert 16 <= n <= len(datagram) - pos, "broken framing from the fake"
        out.append(datagram[pos:pos + n])
        pos += (n + 3) & ~3
    assert pos == len(datagram)
    return out


def attrs(buf: bytes, start: int = 20) -> list[tuple[int, int, bytes]]:
    """(type without flags, raw type, payload) of each attribute."""
    out, pos = [], start
    while pos + 4 <= len(buf):
        n, t = struct.unpack_from("=HH", buf, pos)
        assert 4 <= n <= len(buf) - pos, "broken attribute from the fake"
        out.append((t & 0x3FFF, t, buf[pos + 4:pos + n]))
        pos += (n + 3) & ~3
    assert pos == len(buf), "trailing bytes"
    return out


def adict(buf: bytes, start: int = 20) -> dict[int, bytes]:
    return {t: p for t, _raw, p in attrs(buf, start)}


def decode_vals(msg: bytes, layout=HEAD, *, pads: list | None = None) -> dict[str, int]:
    """§6.3: every VALS nest; zero-length attributes are NLE_ATTR_PAD fillers."""
    out = {}
    for t, raw, payload in attrs(msg):
        if 1 <= t <= 6:
            assert raw & NESTED
            for idx, _r, p in attrs(payload, 0):
                if not p:
                    if pads is not None:
                        pads.append(idx)
                    continue
                var = layout.tables[t - 1][idx]
                fmt = {"u8": "=B", "u32": "=I", "s32": "=i", "u64": "=Q"}[var.wire]
                assert len(p) == struct.calcsize(fmt), var.name
                out[var.name] = struct.unpack(fmt, p)[0]
    return out


def decode_tuple(payload: bytes) -> dict[str, object]:
    d = adict(payload, 0)
    return {"rem_addr": d[1], "rem_port": struct.unpack("=H", d[2])[0],
            "local_addr": d[3], "local_port": struct.unpack("=H", d[4])[0],
            "addr_type": d[5][0], "cid": struct.unpack("=I", d[6])[0]}


def msg_cid(msg: bytes) -> int:
    return decode_tuple(adict(msg)[A_TUPLE])["cid"]


class Reply:
    def __init__(self, data: list[bytes], ack: bytes) -> None:
        self.data = data            # data datagrams
        self.ack = ack              # the NLMSG_ERROR datagram

    @property
    def error(self) -> int:
        return struct.unpack_from("=i", self.ack, 16)[0]

    @property
    def msgs(self) -> list[bytes]:
        return [m for d in self.data for m in messages(d)]


class Client:
    """A bare netlink socket that treats the fake's port as "the kernel"."""

    def __init__(self, fk: FakeKernel, port: int = 0) -> None:
        self.fk = fk
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_USERSOCK)
        try:
            self.sock.bind((port, 0))
        except OSError:
            self.sock.bind((0, 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[0]

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (self.fk.portid, 0))

    def recv(self) -> bytes:
        data, (sender, _g) = self.sock.recvfrom(1 << 16)
        assert sender == self.fk.portid
        return data

    def wait_ack(self, seq: int) -> Reply:
        data = []
        while True:
            d = self.recv()
            _n, t, _f, s, _p = struct.unpack_from("=IHHII", d)
            if t == NLMSG_ERROR and s == seq:
                return Reply(data, d)
            data.append(d)

    def transact(self, msg: bytes) -> Reply:
        self.send(msg)
        return self.wait_ack(struct.unpack_from("=I", msg, 8)[0])

    def cmd(self, cmd: int, *attr: bytes, seq: int = 9, **kw) -> Reply:
        return self.transact(genl(cmd, b"".join(attr), seq=seq, **kw))

    def paginate(self, cmd: int, *extra: bytes) -> list[list[bytes]]:
        """The client algorithm of §4.3; returns the messages of each batch."""
        start, batches = 0, []
        while True:
            r = self.cmd(cmd, tuple_cid(start), *extra)
            assert r.error == 0
            if not r.data:
                return batches
            assert len(r.data) == 1                      # at most one data datagram
            batches.append(r.msgs)
            top = max(msg_cid(m) for m in r.msgs)
            start = top + 1 if cmd == LIST_CONNS else top


@pytest.fixture
def fk(fake_kernel_factory):
    return fake_kernel_factory()


@pytest.fixture
def client():
    made = []

    def make(fk, port=0):
        c = Client(fk, port)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()


def check_module_header(msg: bytes, cmd: int, family: int = FAM) -> None:
    """§4.2: type = family, flags 0, seq 0, pid 0, genl {cmd, 1, 0}."""
    n, t, f, s, p = struct.unpack_from("=IHHII", msg)
    assert (n, t, f, s, p) == (len(msg), family, 0, 0, 0)
    assert struct.unpack_from("=BBH", msg, 16) == (cmd, 1, 0)


# =========================================================================== §13

# The dumps below are copied from §13 byte for byte; only some trailing comments were
# shortened to fit the line length.

SPEC_13_1 = """
0000  24 00 00 00 10 00 05 00 01 00 00 00 00 00 00 00   len=36 type=0x10(ctrl) REQ|ACK seq=1
0010  03 01 00 00                                       cmd=3 GETFAMILY, version 1
0014  0f 00 02 00 74 63 70 5f 65 73 74 61 74 73 00 00   FAMILY_NAME len=15 "tcp_estats\\0" + 1 pad
"""

SPEC_13_2 = """
0000  6c 00 00 00 1b 00 05 00 02 00 00 00 00 00 00 00   len=108 type=0x1b flags=0x0005 seq=2 pid=0
0010  02 01 00 00                                       cmd=2 READ_VARS
0014  0c 00 0e 80                                       NLE_ATTR_4TUPLE (14|NESTED) len=12
0018  08 00 06 00 07 00 00 00                             NEA_CID = 7
0020  4c 00 0d 80                                       NLE_ATTR_MASK (13|NESTED) len=76
0024  0c 00 01 00 09 00 01 00 00 00 00 00                 NEA_PERF_MASK   = 0x0000000000010009
0030  0c 00 02 00 00 40 00 00 00 00 00 00                 NEA_PATH_MASK   = 0x4000
003c  0c 00 03 00 08 00 00 00 00 00 00 00                 NEA_STACK_MASK  = 0x8
0048  0c 00 04 00 00 00 00 00 00 00 00 00                 NEA_APP_MASK    = 0
0054  0c 00 05 00 00 00 00 00 00 00 00 00                 NEA_TUNE_MASK   = 0
0060  0c 00 06 00 00 00 00 00 00 00 00 00                 NEA_EXTRAS_MASK = 0
"""

SPEC_13_3 = """
0000  b8 00 00 00 1b 00 00 00 00 00 00 00 00 00 00 00   len=184 type=0x1b flags=0 seq=0 pid=0
0010  02 01 00 00                                       cmd=2 version=1
0014  14 00 10 80                                       NLE_ATTR_TIME (16|NESTED) len=20
0018  08 00 01 00 00 f1 53 65                             NEA_TIME_SEC  = 0x6553f100 = 1700000000
0020  08 00 02 00 90 d0 03 00                             NEA_TIME_USEC = 0x0003d090 = 250000
0028  4c 00 0e 80                                       NLE_ATTR_4TUPLE (14|NESTED) len=76
002c  14 00 01 00 c0 00 02 07 00 00 00 00 00 00 00 00     NEA_REM_ADDR 192.0.2.7 + 12 zero bytes
003c  00 00 00 00
0040  06 00 02 00 38 c7 00 00                             NEA_REM_PORT = 51000 (host order) + 2 pad
0048  14 00 03 00 0a 00 00 01 00 00 00 00 00 00 00 00     NEA_LOCAL_ADDR 10.0.0.1 + 12 zero bytes
0058  00 00 00 00
005c  06 00 04 00 16 00 00 00                             NEA_LOCAL_PORT = 22 + 2 pad
0064  05 00 05 00 01 00 00 00                             NEA_ADDR_TYPE = 1 (IPv4) + 3 pad
006c  08 00 06 00 07 00 00 00                             NEA_CID = 7
0074  20 00 01 80                                       NLE_ATTR_PERF_VALS (1|NESTED) len=32
0078  08 00 00 00 d2 04 00 00                             type 0  SegsOut         u32 = 1234
0080  0c 00 03 00 00 f2 05 2a 01 00 00 00                 type 3  HCDataOctetsOut u64 = 5000000000
008c  08 00 10 00 2a 00 00 00                             type 16 SmoothedRTT     u32 = 42
0094  0c 00 02 80                                       NLE_ATTR_PATH_VALS (2|NESTED) len=12
0098  05 00 0e 00 00 00 00 00                             type 14 IpTosIn         u8  = 0 + 3 pad
00a0  0c 00 03 80                                       NLE_ATTR_STACK_VALS (3|NESTED) len=12
00a4  08 00 03 00 07 00 00 00                             type 3  WinScaleSent    s32 = 7
00ac  04 00 04 80                                       NLE_ATTR_APP_VALS    (empty)
00b0  04 00 05 80                                       NLE_ATTR_TUNE_VALS   (empty)
00b4  04 00 06 80                                       NLE_ATTR_EXTRAS_VALS (empty)
"""

SPEC_13_3_ACK = """
0000  24 00 00 00 02 00 00 01 02 00 00 00 34 12 00 00   NLMSG_ERROR flags=0x100 seq=2 pid=0x1234
0010  00 00 00 00                                       error = 0  -> ACK
0014  6c 00 00 00 1b 00 05 00 02 00 00 00 00 00 00 00   copy of the request's nlmsghdr
"""

SPEC_13_4_REQ = """
0000  20 00 00 00 1b 00 05 00 03 00 00 00 00 00 00 00   len=32 flags=REQ|ACK seq=3
0010  00 01 00 00                                       cmd=0 LIST_CONNS
0014  0c 00 0e 80 08 00 06 00 00 00 00 00             NLE_ATTR_4TUPLE { NEA_CID = 0 }
"""

SPEC_13_4_MSG_HDR = """
0000  60 00 00 00 1b 00 00 00 00 00 00 00 00 00 00 00   len=96 flags=0 seq=0 pid=0
0010  00 01 00 00                                       cmd=0
"""

SPEC_13_4_V6 = """
0000  4c 00 0e 80 14 00 01 00 20 01 0d b8 00 00 00 00
0010  00 00 00 00 00 00 00 02 06 00 02 00 bb 01 00 00
0020  14 00 03 00 20 01 0d b8 00 00 00 00 00 00 00 00
0030  00 00 00 01 06 00 04 00 40 9c 00 00 05 00 05 00
0040  02 00 00 00 08 00 06 00 0c 00 00 00
"""

SPEC_13_5_REQ = """
0000  14 00 00 00 1b 00 05 00 04 00 00 00 00 00 00 00
0010  04 01 00 00                                       cmd=4 INIT, no attributes
"""

# The reply's first bytes; the nlmsghdr is given by the prose, bytes 0..3 (length) and
# 0x24..0x25 (PERF_VARS length) are not stated.
SPEC_13_5_REPLY = """
0000  xx xx xx xx 1b 00 00 00 00 00 00 00 00 00 00 00
0010  04 01 00 00
0014  08 00 11 00 06 00 00 00                           NLE_ATTR_NUM_TABLES = 6
001c  08 00 12 00 7c 00 00 00                           NLE_ATTR_NUM_VARS   = 124
0024  xx xx 13 80                                       PERF_VARS (19|NESTED), whole table
0028  18 00 19 80                                         NLE_ATTR_VAR (25|NESTED) -> index 0
002c  0c 00 01 00 53 65 67 73 4f 75 74 00                   NEA_VAR_NAME "SegsOut\\0"
0038  08 00 02 00 02 00 00 00                               NEA_VAR_TYPE = 2 (COUNTER32)
0040  1c 00 19 80                                         NLE_ATTR_VAR len=28 -> index 1
0044  10 00 01 00 44 61 74 61 53 65 67 73 4f 75 74 00       NEA_VAR_NAME "DataSegsOut\\0"
0054  08 00 02 00 02 00 00 00                               NEA_VAR_TYPE = 2
"""

SPEC_13_6_TS_REQ = """
0000  1c 00 00 00 1b 00 05 00 05 00 00 00 00 00 00 00
0010  05 01 00 00 08 00 1a 00 88 13 00 00             NLE_ATTR_TIMESTAMP_DELTA (26) = 5000
"""

SPEC_13_6_TS_REPLY = """
0000  20 00 00 00 1b 00 00 00 00 00 00 00 00 00 00 00
0010  05 01 00 00 0c 00 1b 00 2c 3b 0a 00 01 00 00 00 NLE_ATTR_TIMESTAMP (27) u64
"""

SPEC_13_6_READ_ALL = """
0000  2c 00 00 00 1b 00 05 00 07 00 00 00 00 00 00 00
0010  01 01 00 00 0c 00 0e 80 08 00 06 00 00 00 00 00 4TUPLE { NEA_CID = 0 }
0020  0c 00 1b 00 2c 3b 0a 00 01 00 00 00             NLE_ATTR_TIMESTAMP (27) = token
"""

SPEC_13_6_WRITE = """
0000  38 00 00 00 1b 00 05 00 06 00 00 00 00 00 00 00
0010  03 01 00 00 0c 00 0e 80 08 00 06 00 07 00 00 00 4TUPLE { NEA_CID = 7 }
0020  18 00 0f 80                                     NLE_ATTR_WRITE (15|NESTED) len=24
0024  0b 00 01 00 4c 69 6d 43 77 6e 64 00               NEA_WRITE_VAR "LimCwnd" + 1 pad
0030  08 00 02 00 00 00 01 00                           NEA_WRITE_VAL = 65536
"""

EXAMPLE_VALUES = {"SegsOut": 1234, "HCDataOctetsOut": 5_000_000_000, "SmoothedRTT": 42,
                  "IpTosIn": 0, "WinScaleSent": 7}


def test_hexdump_parser_reads_the_spec_blocks():
    assert len(hexdump(SPEC_13_1)) == 36
    assert len(hexdump(SPEC_13_2)) == 108
    assert len(hexdump(SPEC_13_3)) == 184
    assert len(hexdump(SPEC_13_6_WRITE)) == 56
    # our own encoder agrees with the spec's requests
    assert genl(3, nlattr(2, b"tcp_estats\0"), seq=1, nl_type=GENL_ID_CTRL) == \
        hexdump(SPEC_13_1)
    assert genl(READ_VARS, tuple_cid(7) + mask_attr(0x10009, 0x4000, 0x8, 0, 0, 0),
                seq=2) == hexdump(SPEC_13_2)


def test_13_1_family_lookup(fk, client):
    """§13.1 request accepted; §2.1 NEWFAMILY reply the way the real controller sends it."""
    c = client(fk)
    r = c.transact(hexdump(SPEC_13_1))
    assert r.error == 0
    assert len(r.data) == 1
    (msg,) = r.msgs
    n, t, f, s, p = struct.unpack_from("=IHHII", msg)
    # the controller (unlike the module) echoes seq and addresses the client's port
    assert (t, f, s, p) == (GENL_ID_CTRL, 0, 1, c.port)
    assert msg[16] == 1                                   # CTRL_CMD_NEWFAMILY
    a = attrs(msg)
    assert [x[0] for x in a] == [2, 1, 3, 4, 5, 6, 7]     # ctrl_fill_info() order
    d = adict(msg)
    assert d[1] == u16(FAM)
    assert d[2] == b"tcp_estats\0"
    assert d[3] == u32(1) and d[4] == u32(0) and d[5] == u32(28)
    ops = attrs(d[6], 0)
    assert [adict(op, 0)[1] for _t, _r, op in ops] == [u32(i) for i in range(6)]
    assert all(adict(op, 0)[2] == u32(2) for _t, _r, op in ops)   # GENL_CMD_CAP_DO only
    (grp,) = attrs(d[7], 0)
    assert adict(grp[2], 0)[1] == b"tcp_estats_mc\0"
    assert len(adict(grp[2], 0)[2]) == 4
    # ACK: seq of the request, pid = client's port, request header copied
    assert struct.unpack_from("=IHHII", r.ack) == (36, NLMSG_ERROR, CAPPED, 1, c.port)
    assert r.ack[20:] == hexdump(SPEC_13_1)[:16]
    assert fk.ctrl_requests == [hexdump(SPEC_13_1)]


def test_family_lookup_other_name_unloaded_and_malformed(fk, client):
    c = client(fk)
    bad = genl(3, nlattr(2, b"tcp_estatz\0"), seq=4, nl_type=GENL_ID_CTRL)
    r = c.transact(bad)
    assert r.error == -errno.ENOENT and not r.data
    assert r.ack[20:] == bad                               # whole request copied
    assert struct.unpack_from("=H", r.ack, 6)[0] == 0      # flags 0 on an error
    fk.registered = False
    r = c.transact(hexdump(SPEC_13_1))
    assert r.error == -errno.ENOENT and not r.data
    # ... and the family's own id is gone too
    assert c.cmd(INIT).error == -errno.ENOENT
    fk.registered = True
    # the NUL is required (NLA_NUL_STRING)
    r = c.transact(genl(3, nlattr(2, b"tcp_estats"), seq=5, nl_type=GENL_ID_CTRL))
    assert r.error == -errno.EINVAL
    # no name and no id
    assert c.transact(genl(3, b"", seq=6, nl_type=GENL_ID_CTRL)).error == -errno.EINVAL
    # lookup by id works too
    r = c.transact(genl(3, nlattr(1, u16(FAM)), seq=7, nl_type=GENL_ID_CTRL))
    assert r.error == 0 and adict(r.msgs[0])[2] == b"tcp_estats\0"
    r = c.transact(genl(3, nlattr(1, u16(FAM + 1)), seq=8, nl_type=GENL_ID_CTRL))
    assert r.error == -errno.ENOENT
    # other controller commands are not supported
    assert c.transact(genl(99, b"", seq=9, nl_type=GENL_ID_CTRL)).error == -errno.EOPNOTSUPP


def test_family_dump_ends_with_done(fk, client):
    c = client(fk)
    c.send(genl(3, b"", seq=11, nl_type=GENL_ID_CTRL, flags=REQ | ACK | DUMP))
    d1, d2 = c.recv(), c.recv()
    assert struct.unpack_from("=HHII", d1, 4) == (GENL_ID_CTRL, MULTI, 11, c.port)
    assert adict(d1)[2] == b"tcp_estats\0"
    assert struct.unpack_from("=IHHII", d2) == (20, NLMSG_DONE, MULTI, 11, c.port)
    # no ACK follows the dump: the next thing we get answers the next request
    assert c.cmd(INIT, seq=12).error == 0


def test_maxattr_and_family_id_options(fake_kernel_factory, client):
    fk = fake_kernel_factory("old", family_id=0x2A)
    c = client(fk)
    r = c.transact(hexdump(SPEC_13_1))
    d = adict(r.msgs[0])
    assert d[1] == u16(0x2A) and d[5] == u32(27)
    fk2 = fake_kernel_factory("old", maxattr=28)            # kernel-4.7 / centos
    assert adict(client(fk2).transact(hexdump(SPEC_13_1)).msgs[0])[5] == u32(28)
    assert adict(client(fake_kernel_factory("middle")).transact(
        hexdump(SPEC_13_1)).msgs[0])[5] == u32(28)


def example_kernel(factory, **kw) -> FakeKernel:
    """CID 7 = 10.0.0.1:22 <-> 192.0.2.7:51000 with the values of §13.3."""
    kw.setdefault("time_unit", "us")
    fk = factory("head", **kw)
    fk.wallclock_ns = 1_700_000_000_250_000_000
    fk.add_flow(("10.0.0.1", 22), ("192.0.2.7", 51000), cid=7, values=EXAMPLE_VALUES)
    return fk


def test_13_2_13_3_read_vars_reply_and_ack_byte_for_byte(fake_kernel_factory, client):
    fk = example_kernel(fake_kernel_factory)
    c = client(fk, port=0x1234)
    req = hexdump(SPEC_13_2)
    r = c.transact(req)
    assert len(r.data) == 1
    assert r.data[0] == hexdump(SPEC_13_3)
    ack = bytearray(hexdump(SPEC_13_3_ACK))
    ack[12:16] = u32(c.port)          # 0x1234 unless that port was taken
    assert r.ack == bytes(ack)
    cmd, a = fk.requests[-1]
    assert cmd == READ_VARS
    assert a["4tuple"] == {"cid": 7}
    assert a["mask"] == {"perf": 0x10009, "path": 0x4000, "stack": 0x8, "app": 0,
                         "tune": 0, "extras": 0}


def test_13_3_in_nanoseconds_at_head(fake_kernel_factory, client):
    """kernel-5.0 puts nanoseconds in NEA_TIME_USEC (§9): 1700000000 s + 250000 ns gives
    the same bytes; 0.25 s gives 250000000."""
    fk = example_kernel(fake_kernel_factory, time_unit="ns")
    fk.wallclock_ns = 1_700_000_000_000_250_000
    c = client(fk)
    assert c.transact(hexdump(SPEC_13_2)).data[0] == hexdump(SPEC_13_3)
    fk.wallclock_ns = 1_700_000_000_250_000_000
    t = adict(adict(c.transact(hexdump(SPEC_13_2)).msgs[0])[A_TIME], 0)
    assert t == {1: u32(1_700_000_000), 2: u32(250_000_000)}
    assert FakeKernel("head").time_unit == "ns"
    assert FakeKernel("middle").time_unit == "us" and FakeKernel("old").time_unit == "us"


def test_13_3_unknown_cid_is_einval_with_the_full_request(fake_kernel_factory, client):
    fk = fake_kernel_factory("head")
    c = client(fk)
    req = hexdump(SPEC_13_2)
    r = c.transact(req)
    assert not r.data
    assert r.ack[16:20] == bytes.fromhex("eaffffff")
    assert r.ack[20:] == req and struct.unpack_from("=I", r.ack)[0] == 16 + 4 + 108


def test_13_4_list_conns(fake_kernel_factory, client):
    fk = example_kernel(fake_kernel_factory)
    fk.add_flow(("2001:db8::1", 40000), ("2001:db8::2", 443), cid=12)
    c = client(fk)
    r = c.transact(hexdump(SPEC_13_4_REQ))
    assert r.error == 0 and len(r.data) == 1
    m7, m12 = r.msgs
    assert len(r.data[0]) == 2 * 96
    assert m7 == hexdump(SPEC_13_4_MSG_HDR) + hexdump(SPEC_13_3)[0x28:0x74]
    assert m12[20:] == hexdump(SPEC_13_4_V6)
    check_module_header(m12, LIST_CONNS)


def test_13_5_init_sizes(fake_kernel_factory, client):
    sizes = {"head": 3688, "middle": 3624, "old": 3692}
    for name, size in sizes.items():
        fk = fake_kernel_factory(name)
        c = client(fk)
        r = c.transact(hexdump(SPEC_13_5_REQ))
        assert r.error == 0
        (msg,) = r.msgs
        assert len(r.data[0]) == len(msg) == size
        check_module_header(msg, INIT)
        lay = mib.layout(name)
        d = attrs(msg)
        assert [t for t, _r, _p in d] == [17, 18, 19, 20, 21, 22, 23, 24]
        assert d[1][2] == u32(lay.total)
        for t, (_t, raw, payload) in enumerate(d[2:]):
            assert raw & NESTED
            got = []
            for vt, vraw, vp in attrs(payload, 0):
                assert vt == A_VAR and vraw & NESTED
                vd = adict(vp, 0)
                got.append((vd[1], struct.unpack("=I", vd[2])[0]))
            assert got == [(v.name.encode() + b"\0", v.type_code) for v in lay.tables[t]]
    want = hexmask(SPEC_13_5_REPLY)
    fk = fake_kernel_factory("head")
    got = client(fk).transact(hexdump(SPEC_13_5_REQ)).msgs[0]
    assert all(w is None or w == g for w, g in zip(want, got))


def test_13_5_layout_specifics(fake_kernel_factory, client):
    def names(layout):
        msg = client(fake_kernel_factory(layout)).cmd(INIT).msgs[0]
        return [[adict(vp, 0)[1][:-1].decode() for _t, _r, vp in attrs(p, 0)]
                for _t, _r, p in attrs(msg)[2:]]
    old, middle, head = names("old"), names("middle"), names("head")
    assert old[2][23] == "OtherReductions" and old[5] == ["OtherReductionsCM", "Priority"]
    assert "LostRetransmitSegs" not in middle[0] and "RackTimeout" not in middle[2]
    assert head[0][40] == "LostRetransmitSegs" and head[2][40] == "RackTimeout"
    assert [len(t) for t in middle] == [40, 26, 40, 12, 3, 1]


def test_13_6_timestamp_filtered_read_all_and_write(fake_kernel_factory, client):
    fk = example_kernel(fake_kernel_factory)
    c = client(fk)
    # TIMESTAMP, delta 5000 ms -> the spec's token (the fake's default jiffies put it there)
    r = c.transact(hexdump(SPEC_13_6_TS_REQ))
    assert r.data == [hexdump(SPEC_13_6_TS_REPLY)]
    assert fk.requests[-1][1] == {"timestamp_delta": 5000}
    # CID 8 was last active 6 s ago, CID 7 just now (it was added "now")
    fk.add_flow(("10.0.0.1", 23), ("192.0.2.8", 51001), cid=8)
    fk.set_activity(8, 6000)
    fk.add_flow(("10.0.0.1", 24), ("192.0.2.9", 51002), cid=9)
    fk.set_activity(9, 5000)                        # exactly at the token: still included
    r = c.transact(hexdump(SPEC_13_6_READ_ALL))
    assert r.error == 0
    assert [msg_cid(m) for m in r.msgs] == [8, 10]  # CID + 1: flows 7 and 9
    assert fk.requests[-1][1]["timestamp"] == 0x1000A3B2C
    # WRITE_VAR LimCwnd := 65536 on CID 7 -> ACK only; reads back clamp * MSS
    r = c.transact(hexdump(SPEC_13_6_WRITE))
    assert r.error == 0 and not r.data
    assert fk.written == [(7, "LimCwnd", 65536)]
    mss = fk.expected(7, "CurMSS")
    assert fk.expected(7, "LimCwnd") == min(65536 // mss, 65535) * mss
    got = decode_vals(c.cmd(READ_VARS, tuple_cid(7)).msgs[0])
    assert got["LimCwnd"] == (65536 // mss) * mss
    # LimMSS as the owner: EPERM; as another user: EACCES; misspelt: EINVAL
    limmss = hexdump(SPEC_13_6_WRITE).replace(b"LimCwnd", b"LimMSS\0")
    assert c.transact(limmss).ack[16:20] == bytes.fromhex("ffffffff")
    fk.add_flow(("10.0.0.1", 25), ("192.0.2.10", 1), cid=11, owner="other")
    other = limmss.replace(u32(7) + b"\x18\x00", u32(11) + b"\x18\x00")
    assert c.transact(other).ack[16:20] == bytes.fromhex("f3ffffff")
    typo = hexdump(SPEC_13_6_WRITE).replace(b"LimCwnd", b"LimCwmd")
    assert c.transact(typo).ack[16:20] == bytes.fromhex("eaffffff")


# ============================================================ batches / pagination

def test_pagination_stop_rule_and_cid_plus_one(fake_kernel_factory, client):
    fk = fake_kernel_factory("head")
    for i in range(100):
        fk.add_flow(("10.0.0.1", 1000 + i), ("192.0.2.1", 2000 + i))
    c = client(fk)
    batches = c.paginate(LIST_CONNS)
    assert [len(b) for b in batches] == [39, 39, 22]
    assert [msg_cid(m) for b in batches for m in b] == list(range(1, 101))
    for b in batches:
        for m in b:
            assert len(m) == 96
            check_module_header(m, LIST_CONNS)
    batches = c.paginate(READ_ALL)
    assert [len(b) for b in batches] == [3] * 33 + [1]
    seen = []
    for b in batches:
        for m in b:
            assert len(m) == 1156
            check_module_header(m, READ_ALL)
            true_cid = msg_cid(m) - 1
            seen.append(true_cid)
            t = decode_tuple(adict(m)[A_TUPLE])
            assert t["local_port"] == 1000 + true_cid - 1
            assert decode_vals(m) == fk.values(true_cid)
    assert seen == list(range(1, 101))
    # the last request of each loop got a bare ACK (checked in paginate); the requests
    # resumed at reported CID for READ_ALL
    starts = [a["4tuple"]["cid"] for cmd, a in fk.requests if cmd == READ_ALL]
    assert starts == [0] + [3 * k + 1 for k in range(1, 34)] + [101]


def test_stop_rule_boundaries(fake_kernel_factory, client):
    """Room compared with the last message size, initially 16; room == size continues."""
    for page, expect in ((288, [3, 3, 3, 1]), (287, [2] * 5), (96, [1] * 10),
                         (111, [1] * 10)):
        fk = fake_kernel_factory("head", page_payload=page)
        for i in range(10):
            fk.add_flow(("10.0.0.1", 1 + i), ("192.0.2.1", 2))
        assert [len(b) for b in client(fk).paginate(LIST_CONNS)] == expect, page
    # not even the first message fits: ENOBUFS (only when the list is not finished)
    fk = fake_kernel_factory("head", page_payload=95)
    fk.add_flow()
    c = client(fk)
    assert c.cmd(LIST_CONNS).error == -errno.ENOBUFS
    assert c.cmd(LIST_CONNS, tuple_cid(2)).error == 0
    # a READ_ALL batch with a partial mask holds more entries
    fk = fake_kernel_factory("head")
    for i in range(10):
        fk.add_flow(("10.0.0.1", 1 + i), ("192.0.2.1", 2))
    r = client(fk).cmd(READ_ALL, mask_attr(1, 0, 0, 0, 0, 0))
    size = len(r.msgs[0])
    assert size == 20 + 20 + 76 + 6 * 4 + 8
    assert len(r.msgs) == 10 and len(r.data[0]) == 10 * size


def test_read_all_skips_other_owners_and_lists_everyone(fake_kernel, client):
    c = client(fake_kernel)
    listed = [msg_cid(m) for b in c.paginate(LIST_CONNS) for m in b]
    assert listed == [1, 2, 3, 4, 5]
    read = [msg_cid(m) - 1 for b in c.paginate(READ_ALL) for m in b]
    assert read == [1, 2, 3, 5]                      # CID 4 belongs to someone else
    fake_kernel.privileged = True
    assert [msg_cid(m) - 1 for b in c.paginate(READ_ALL) for m in b] == [1, 2, 3, 4, 5]


def test_flows_added_and_removed_between_batches(fake_kernel_factory, client):
    fk = fake_kernel_factory("head")
    for i in range(45):
        fk.add_flow(("10.0.0.1", 1 + i), ("192.0.2.1", 2))
    calls = []

    def hook(cmd, k):
        calls.append(cmd)
        if len(calls) == 2:                 # before the second batch
            k.remove_flow(41)
            k.remove_flow(2)                # already listed: nothing to see
            k.add_flow(("10.0.0.2", 1), ("192.0.2.2", 2))     # CID 46
    fk.on_request = hook
    c = client(fk)
    cids = [msg_cid(m) for b in c.paginate(LIST_CONNS) for m in b]
    assert cids == [c_ for c_ in range(1, 47) if c_ != 41]
    assert calls == [LIST_CONNS] * 3
    assert 41 not in fk.flows and 46 in fk.flows


def test_timestamp_filter_wraps_and_idle_flows(fake_kernel_factory, client):
    fk = fake_kernel_factory("head", hz=250)
    fk.jiffies = 2**64 - 100
    for i in range(3):
        fk.add_flow(("10.0.0.1", 1 + i), ("192.0.2.1", 2))
    fk.set_activity(2, 0)                  # active now, but idle from here on
    fk.tick(2)                             # clock wraps past 2**64
    assert fk.jiffies == 400
    c = client(fk)
    tok = struct.unpack("=Q", adict(c.cmd(TIMESTAMP, nlattr(A_TS_DELTA, u32(1000))).msgs[0])
                        [A_TS])[0]
    assert tok == 400 - 250 == fk.timestamp_token(1000)
    r = c.cmd(LIST_CONNS, nlattr(A_TS, u64(tok)))
    assert [msg_cid(m) for m in r.msgs] == [1, 3]
    tok = fk.timestamp_token(3000)         # 2**64 - 350: before the wrap, CID 2 inside
    r = c.cmd(LIST_CONNS, nlattr(A_TS, u64(tok)))
    assert [msg_cid(m) for m in r.msgs] == [1, 2, 3]
    # no delta attribute = "now"
    tok = struct.unpack("=Q", adict(c.cmd(TIMESTAMP).msgs[0])[A_TS])[0]
    assert tok == fk.jiffies
    # msecs_to_jiffies rounds up
    assert fk.timestamp_token(1) == fk.jiffies - 1


# =============================================================================== masks

def test_masks(fake_kernel, client):
    c = client(fake_kernel)
    full = fake_kernel.values(1)

    def read(*a):
        r = c.cmd(READ_VARS, tuple_cid(1), *a)
        assert r.error == 0
        (m,) = r.msgs
        check_module_header(m, READ_VARS)
        top = attrs(m)
        assert [t for t, _r, _p in top] == [16, 14, 1, 2, 3, 4, 5, 6]
        assert all(raw & NESTED for _t, raw, _p in top)
        return m

    m = read()                                        # no mask: everything
    assert len(m) == 1156 and decode_vals(m) == full
    assert decode_vals(read(nest(A_MASK))) == full    # empty nest: everything
    # perf only given; absent members = all
    got = decode_vals(read(mask_attr(0x1, None, None, None, None, None)))
    assert got == {k: v for k, v in full.items()
                   if k == "SegsOut" or HEAD.position(k)[0] != 0}
    # zero masks: all six nests still present, empty
    m = read(mask_attr(0, 0, 0, 0, 0, 0))
    assert len(m) == 20 + 20 + 76 + 24
    assert all(len(p) == 0 for t, _r, p in attrs(m) if 1 <= t <= 6)
    # bits at or above the table size are ignored
    m = read(mask_attr(2**64 - 1, 0, 0, 0, 1 << 3 | 1, 1 << 63))
    assert set(decode_vals(m)) == {v.name for v in HEAD.tables[0]} | {"LimCwnd"}
    # index order, type 0 is a real variable
    m = read(mask_attr(1 | 1 << 40 | 1 << 12, 0, 0, 0, 0, 0))
    (perf,) = [p for t, _r, p in attrs(m) if t == 1]
    assert [t for t, _r, _p in attrs(perf, 0)] == [0, 12, 40]
    assert fake_kernel.requests[-1][1]["mask"]["perf"] == 1 | 1 << 40 | 1 << 12


def test_read_vars_values_and_identity(fake_kernel, client):
    c = client(fake_kernel)
    for cid, (local, remote, owner) in enumerate(DEFAULT_FLOWS, 1):
        r = c.cmd(READ_VARS, tuple_cid(cid))
        if owner == "other":
            assert r.error == -errno.EACCES and not r.data
            continue
        (m,) = r.msgs
        t = decode_tuple(adict(m)[A_TUPLE])
        v6 = ":" in local[0]
        assert t["addr_type"] == (2 if v6 else 1)
        assert t["cid"] == cid and t["local_port"] == local[1] and t["rem_port"] == remote[1]
        fam = socket.AF_INET6 if v6 else socket.AF_INET
        n = 16 if v6 else 4
        assert t["local_addr"] == socket.inet_pton(fam, local[0]) + bytes(16 - n)
        assert t["rem_addr"] == socket.inet_pton(fam, remote[0]) + bytes(16 - n)
        vals = decode_vals(m)
        assert vals == fake_kernel.values(cid)
    # s32 can be negative on the wire (CID 3: no window scaling)
    assert fake_kernel.expected(3, "WinScaleRcvd") == -1
    perf_stack = attrs(c.cmd(READ_VARS, tuple_cid(3)).msgs[0])[4][2]
    assert adict(perf_stack, 0)[4] == b"\xff\xff\xff\xff"


# ========================================================================== errors

def test_generic_netlink_errors(fake_kernel, client):
    c = client(fake_kernel)
    assert c.cmd(READ_ALL, flags=REQ | ACK | DUMP).error == -errno.EOPNOTSUPP
    assert c.cmd(LIST_CONNS, flags=REQ | ACK | DUMP).error == -errno.EOPNOTSUPP
    assert c.cmd(INIT, flags=REQ | ACK | ROOT).error == 0          # not a full DUMP
    assert c.cmd(6).error == -errno.EOPNOTSUPP
    assert c.cmd(255).error == -errno.EOPNOTSUPP
    # shorter than a genl header
    assert c.transact(nlmsg(FAM, REQ | ACK, 40, b"")).error == -errno.EINVAL
    # no such family id
    r = c.cmd(INIT, nl_type=0x7777)
    assert r.error == -errno.ENOENT and not r.data
    # family id 0 (libestats after a failed lookup): a control message, merely ACKed
    r = c.cmd(INIT, nl_type=0)
    assert r.error == 0 and not r.data
    # unknown / above-maxattr / flagless nests are fine
    r = c.cmd(READ_VARS, nlattr(200, b"xx"), nlattr(A_PAD, b""),
              nest(A_TUPLE, nlattr(6, u32(1)), nlattr(9, b"junk"), flag=False))
    assert r.error == 0 and len(r.msgs) == 1


def test_no_ack_flag(fake_kernel, client):
    c = client(fake_kernel)
    c.send(genl(INIT, seq=50, flags=REQ))            # success without ACK: data only
    c.send(genl(READ_VARS, seq=51, flags=REQ))       # an error is always reported
    c.send(genl(INIT, seq=52, flags=ACK))            # not a request: just the ACK
    d = c.recv()
    assert struct.unpack_from("=H", d, 4)[0] == FAM and d[16] == INIT
    d = c.recv()
    assert struct.unpack_from("=HHIi", d, 4)[0:3] == (NLMSG_ERROR, 0, 51)
    assert struct.unpack_from("=i", d, 16)[0] == -errno.EINVAL
    d = c.recv()
    assert struct.unpack_from("=HHIIi", d, 4) == (NLMSG_ERROR, CAPPED, 52, c.port, 0)


def test_read_vars_errors(fake_kernel, client):
    c = client(fake_kernel)
    E = -errno.EINVAL
    assert c.cmd(READ_VARS).error == E                                   # no tuple
    assert c.cmd(READ_VARS, nest(A_TUPLE)).error == E                    # no CID
    assert c.cmd(READ_VARS, tuple_cid(0)).error == E                     # CID < 1
    assert c.cmd(READ_VARS, tuple_cid(2**31)).error == E                 # negative
    assert c.cmd(READ_VARS, tuple_cid(99)).error == E                    # unknown
    assert c.cmd(READ_VARS, nest(A_TUPLE, nlattr(6, u16(1)))).error == E  # short CID
    assert c.cmd(READ_VARS, nest(A_TUPLE, nlattr(6, u32(1)),
                                 nlattr(1, bytes(17)))).error == E      # address > 16
    assert c.cmd(READ_VARS, nest(A_TUPLE, nlattr(6, u32(1)),
                                 nlattr(2, b"\x01"))).error == E        # 1-byte port
    assert c.cmd(READ_VARS, nest(A_TUPLE, nlattr(6, u32(1)),
                                 nlattr(5, b""))).error == E            # empty addr type
    assert c.cmd(READ_VARS, tuple_cid(1),
                 nest(A_MASK, nlattr(1, u32(1)))).error == E             # short mask
    assert c.cmd(READ_VARS, tuple_cid(4)).error == -errno.EACCES         # other owner
    assert c.cmd(READ_VARS, tuple_cid(1), nest(A_TUPLE, nlattr(6, u32(2)))).error == 0
    # the later duplicate wins, like nla_parse
    assert msg_cid(c.cmd(READ_VARS, tuple_cid(1), tuple_cid(2)).msgs[0]) == 2
    fake_kernel.remove_flow(1)
    assert c.cmd(READ_VARS, tuple_cid(1)).error == E                     # gone


def test_list_and_read_all_errors(fake_kernel, client):
    c = client(fake_kernel)
    for cmd in (LIST_CONNS, READ_ALL):
        assert c.cmd(cmd, nest(A_TUPLE)).error == -errno.EINVAL          # nest w/o CID
        assert c.cmd(cmd, tuple_cid(2**31)).error == -errno.EINVAL
        assert c.cmd(cmd, tuple_cid(2**32 - 1)).error == -errno.EINVAL
        r = c.cmd(cmd)                                                   # no tuple: 0
        assert r.error == 0                      # READ_ALL: 3 per page, CID 4 skipped
        assert [msg_cid(m) for m in r.msgs] == ([1, 2, 3, 4, 5] if cmd == LIST_CONNS
                                                else [2, 3, 4])
        r = c.cmd(cmd, tuple_cid(6))                                     # past the end
        assert r.error == 0 and not r.data
    assert c.cmd(READ_ALL, nest(A_MASK, nlattr(3, b"1234567"))).error == -errno.EINVAL
    # LIST_CONNS has no mask: a malformed one is just an ignored attribute
    assert c.cmd(LIST_CONNS, nest(A_MASK, nlattr(3, b"1234567"))).error == 0


def test_write_var_error_order(fake_kernel_factory, client):
    fk = fake_kernel_factory("head")
    own = fk.add_flow(owner="self")                    # 1
    grp = fk.add_flow(owner="group")                   # 2
    oth = fk.add_flow(owner="other")                   # 3
    c = client(fk)
    E = -errno.EINVAL

    def w(*a):
        return c.cmd(WRITE_VAR, *a).error
    # 1. tuple / CID
    assert w(write_attr(b"LimCwnd", 1)) == E
    assert w(tuple_cid(0), write_attr(b"LimCwnd", 1)) == E
    assert w(nest(A_TUPLE), write_attr(b"LimCwnd", 1)) == E
    # 2. write nest / name
    assert w(tuple_cid(oth)) == E
    assert w(tuple_cid(oth), nest(A_WRITE, nlattr(2, u32(1)))) == E
    assert w(tuple_cid(oth), nest(A_WRITE, nlattr(1, b""), nlattr(2, u32(1)))) == E
    assert w(tuple_cid(oth), nest(A_WRITE, nlattr(1, b"LimCwnd"),
                                  nlattr(2, u16(1)))) == E            # short value
    # 3. unknown name beats access and unknown CID
    assert w(tuple_cid(oth), write_attr(b"NoSuchVar", 1)) == E
    # 4. value missing beats access
    assert w(tuple_cid(oth), write_attr(b"LimCwnd")) == E
    # 5. unknown CID beats read-only
    assert w(tuple_cid(77), write_attr(b"LimMSS", 1)) == E
    # 6. access beats read-only; group membership is not enough for writes
    assert w(tuple_cid(oth), write_attr(b"LimMSS", 1)) == -errno.EACCES
    assert w(tuple_cid(grp), write_attr(b"LimCwnd", 1)) == -errno.EACCES
    # 7. read-only
    assert w(tuple_cid(own), write_attr(b"SegsOut", 1)) == -errno.EPERM
    assert w(tuple_cid(own), write_attr(b"LimMSS\0", 1)) == -errno.EPERM
    assert fk.written == []
    # the group member can still read
    assert c.cmd(READ_VARS, tuple_cid(grp)).error == 0
    # names: case-insensitive, NUL optional, only the first 20 characters count
    assert w(tuple_cid(own), write_attr(b"limcwnd\0", 3 * 1448 + 5)) == 0
    assert fk.expected(own, "LimCwnd") == 3 * 1448
    assert w(tuple_cid(own), write_attr(b"HCThruOctetsReceivedXYZ", 1)) == -errno.EPERM
    assert w(tuple_cid(own), write_attr(b"LimCwndXXXXXXXXXXXXXXXXX", 1)) == E
    assert fk.written == [(own, "LimCwnd", 3 * 1448 + 5)]
    fk.privileged = True
    assert w(tuple_cid(oth), write_attr(b"LimRwin", 1000)) == 0


def test_write_semantics(fake_kernel, client):
    fk, c = fake_kernel, client(fake_kernel)

    def write(cid, name, v):
        r = c.cmd(WRITE_VAR, tuple_cid(cid), write_attr(name, v))
        assert r.error == 0 and not r.data
    write(1, b"LimCwnd", 2**32 - 1)                       # clamp at 65535 segments
    assert fk.expected(1, "LimCwnd") == (65535 * 1448) % 2**32
    write(1, b"LimCwnd", 1000)                            # less than one MSS
    assert fk.expected(1, "LimCwnd") == 0
    write(1, b"LimRwin", 10**9)                           # wscale 7
    assert fk.expected(1, "LimRwin") == 65535 << 7
    write(1, b"LimRwin", 5000)
    assert fk.expected(1, "LimRwin") == 5000
    write(3, b"LimRwin", 10**6)                           # CID 3 has no window scaling
    assert fk.expected(3, "LimRwin") == 65535
    assert decode_vals(c.cmd(READ_VARS, tuple_cid(3)).msgs[0])["LimRwin"] == 65535
    assert [w[:2] for w in fk.written] == [(1, "LimCwnd"), (1, "LimCwnd"), (1, "LimRwin"),
                                           (1, "LimRwin"), (3, "LimRwin")]


def test_timestamp_and_init_ignore_junk(fake_kernel, client):
    c = client(fake_kernel)
    assert c.cmd(INIT, nlattr(99, b"x")).error == 0
    r = c.cmd(TIMESTAMP, nlattr(A_TS_DELTA, u32(0)), nlattr(300, b"zz"))
    assert r.error == 0 and len(r.msgs[0]) == 32


# ========================================================================== pad_u64

def _u64_payload_offsets(datagram: bytes) -> tuple[list[int], int]:
    """Absolute offsets of every 8-byte payload inside VALS nests, and the filler count."""
    offs, pads, base = [], 0, 0
    while base < len(datagram):
        mlen = struct.unpack_from("=I", datagram, base)[0]
        pos = base + 20
        while pos < base + mlen:
            n, t = struct.unpack_from("=HH", datagram, pos)
            if 1 <= t & 0x3FFF <= 6:
                p = pos + 4
                while p < pos + n:
                    vn = struct.unpack_from("=H", datagram, p)[0]
                    if vn == 12:
                        offs.append(p + 4)
                    elif vn == 4:
                        pads += 1
                    p += (vn + 3) & ~3
            pos += (n + 3) & ~3
        base += (mlen + 3) & ~3
    return offs, pads


def test_pad_u64_alignment_mode(fake_kernel_factory, client):
    fk = fake_kernel_factory("head", pad_u64=True)
    for i in range(7):
        fk.add_flow(("10.0.0.1", 1 + i), ("192.0.2.1", 2))
    c = client(fk)
    # READ_VARS: every u64 payload 8-aligned in the datagram; fillers are zero-length
    r = c.cmd(READ_VARS, tuple_cid(1))
    offs, pads = _u64_payload_offsets(r.data[0])
    assert len(offs) == 6 and all(o % 8 == 0 for o in offs)
    assert pads >= 1
    padded = []
    assert decode_vals(r.msgs[0], pads=padded) == fk.values(1)
    assert set(padded) == {28}                            # NLE_ATTR_PAD, index-28 lookalike
    # READ_ALL: messages start at 4-mod-8 offsets too; alignment is per datagram
    batches = c.paginate(READ_ALL)
    assert sum(len(b) for b in batches) == 7
    r = c.cmd(READ_ALL, tuple_cid(0))
    offs, _ = _u64_payload_offsets(r.data[0])
    assert len(offs) == 6 * len(r.msgs) and all(o % 8 == 0 for o in offs)
    assert {len(m) for m in r.msgs} <= {1156 + 4 * k for k in range(7)}
    for m in r.msgs:
        assert decode_vals(m) == fk.values(msg_cid(m) - 1)
    # TIMESTAMP: the u64 payload is at offset 24 already -> no filler needed
    r = c.cmd(TIMESTAMP)
    assert len(r.msgs[0]) == 32 and attrs(r.msgs[0])[0][0] == A_TS


def test_pad_u64_always_mode_and_limits(fake_kernel_factory, client):
    fk = fake_kernel_factory("head", pad_u64="always")
    fk.add_flow()
    c = client(fk)
    m = c.cmd(READ_VARS, tuple_cid(1)).msgs[0]
    assert len(m) == 1156 + 6 * 4
    assert decode_vals(m) == fk.values(1)
    r = c.cmd(TIMESTAMP)
    (t1, _r, p1), (t2, _r2, p2) = attrs(r.msgs[0])
    assert (t1, p1, t2, len(p2)) == (A_PAD, b"", A_TS, 8)
    with pytest.raises(ValueError):
        FakeKernel("old", pad_u64=True)                  # maxattr 27: no NLE_ATTR_PAD
    FakeKernel("old", maxattr=28, pad_u64=True)          # centos branch


# ========================================================================== layouts

@pytest.mark.parametrize("layout", ["old", "middle"])
def test_older_layouts_read(fake_kernel_factory, client, layout):
    fk = fake_kernel_factory(layout)
    fk.add_flow()
    lay = mib.layout(layout)
    c = client(fk)
    m = c.cmd(READ_VARS, tuple_cid(1)).msgs[0]
    vals = decode_vals(m, lay)
    assert vals == fk.values(1) and len(vals) == lay.total
    # per-table counts on the wire
    counts = [len(attrs(p, 0)) for t, _r, p in attrs(m) if 1 <= t <= 6]
    assert counts == [len(t) for t in lay.tables]
    # µs in NEA_TIME_USEC
    t = adict(adict(m)[A_TIME], 0)
    assert struct.unpack("=I", t[2])[0] < 1_000_000
    # a full-mask READ_ALL entry of the 122-variable layout is 16 bytes shorter
    if layout == "middle":
        assert len(m) == 1156 - 16
        assert c.cmd(WRITE_VAR, tuple_cid(1), write_attr(b"LostRetransmitSegs", 1)).error \
            == -errno.EINVAL
    else:
        assert vals["OtherReductions"] == fk.expected(1, "OtherReductions")
        stack = [p for t, _r, p in attrs(m) if t == 3][0]
        assert adict(stack, 0)[23] == u32(fk.expected(1, "OtherReductions"))
    with pytest.raises(KeyError):
        fk.expected(1, "RackTimeout")


# ==================================================================== value model

def test_tick_expected_and_twins(fake_kernel_factory, client):
    fk = fake_kernel_factory("head")
    a = fk.add_flow()
    b = fk.add_flow(("2001:db8::1", 1), ("2001:db8::2", 2))
    v0 = fk.values(a)
    assert v0["SegsOut"] == 1000 * a
    assert v0["StartTimeStamp"] == fk.start_time_us + 1000 * a
    assert abs(v0["StartTimeStamp"] / 1e6 - time.time()) < 86400
    fk.tick(3)
    v3 = fk.values(a)
    assert v3["SegsOut"] == v0["SegsOut"] + 30
    assert v3["HCDataOctetsOut"] == v0["HCDataOctetsOut"] + 3 * 14480
    assert v3["ElapsedSecs"] == v0["ElapsedSecs"] + 3
    for twin, hc in (("DataOctetsOut", "HCDataOctetsOut"), ("SumRTT", "HCSumRTT"),
                     ("ThruOctetsAcked", "HCThruOctetsAcked"),
                     ("DataOctetsIn", "HCDataOctetsIn"),
                     ("ThruOctetsReceived", "HCThruOctetsReceived")):
        assert v3[twin] == v3[hc] % 2**32
    # sequence numbers follow the acknowledged / received octets
    assert (v3["SndUna"] - v3["SndInitial"] - 1) % 2**32 == v3["ThruOctetsAcked"]
    assert (v3["RcvNxt"] - v3["RecInitial"] - 1) % 2**32 == v3["ThruOctetsReceived"]
    # set_value pins the current value; counters keep counting from there
    fk.set_value(a, "SegsOut", 2**32 - 5)
    fk.tick()
    assert fk.expected(a, "SegsOut") == 5                   # wrapped modulo 2**32
    fk.set_value(a, "ThruOctetsAcked", 7)                   # 32-bit twin -> HC low bits
    assert fk.expected(a, "HCThruOctetsAcked") % 2**32 == 7
    fk.set_value(a, "WinScaleRcvd", -1)
    assert fk.expected(a, "WinScaleRcvd") == -1
    with pytest.raises(ValueError):
        fk.set_value(a, "IpTosIn", 256)
    with pytest.raises(KeyError):
        fk.set_value(a, "NoSuchVar", 1)
    # wire widths respected everywhere
    for cid in (a, b):
        for t in HEAD.tables:
            for var in t:
                v = fk.expected(cid, var.name)
                lo, hi = {"u8": (0, 255), "u32": (0, 2**32 - 1), "s32": (-2**31, 2**31 - 1),
                          "u64": (0, 2**64 - 1)}[var.wire]
                assert lo <= v <= hi, var.name
    # a fresh fake with the same seed reports the same values for the same CID
    f1, f2 = FakeKernel("head", start_time_us=1), FakeKernel("head", start_time_us=1)
    assert f1.values(f1.add_flow()) == f2.values(f2.add_flow())
    f3 = FakeKernel("head", start_time_us=1, seed=5)
    assert f3.values(f3.add_flow())["SndInitial"] != f1.values(1)["SndInitial"]


def test_auto_tick_moves_counters_between_reads(fake_kernel, client):
    fk, c = fake_kernel, client(fake_kernel)
    fk.auto_tick = True
    mask = mask_attr(1, 0, 0, 0, 0, 0)
    seen = []
    for _ in range(3):
        m = c.cmd(READ_VARS, tuple_cid(1), mask).msgs[0]
        seen.append(decode_vals(m)["SegsOut"])
        assert seen[-1] == fk.expected(1, "SegsOut")
    assert seen[1] - seen[0] == seen[2] - seen[1] == 10
    c.cmd(LIST_CONNS)                                   # LIST_CONNS does not tick
    c.cmd(INIT)
    assert fk.expected(1, "SegsOut") == seen[-1]
    fk.set_activity(2, 100)                             # idle: READ_ALL ticks skip it
    before = fk.expected(2, "SegsOut")
    c.cmd(READ_ALL)
    assert fk.expected(2, "SegsOut") == before
    assert fk.expected(1, "SegsOut") == seen[-1] + 10


def test_add_flow_api(fake_kernel_factory):
    fk = fake_kernel_factory("head")
    assert fk.add_flow() == 1 and fk.add_flow() == 2
    fk.remove_flow(2)
    assert fk.add_flow() == 3                                  # never reused (no wrap)
    assert fk.add_flow(cid=10) == 10 and fk.add_flow() == 11
    with pytest.raises(ValueError):
        fk.add_flow(cid=10)
    with pytest.raises(ValueError):
        fk.add_flow(("10.0.0.1", 1), ("2001:db8::1", 2))
    with pytest.raises(ValueError):
        fk.add_flow(owner="nobody")
    f = fk.flows[3]
    assert f.local == ("10.0.0.1", 22) and f.addr_type == 1
    with pytest.raises(TypeError):
        fk.flows[99] = f                                     # read-only view
    v6 = fk.add_flow(("2001:DB8::1", 5), ("::ffff:192.0.2.1", 6), values={"SegsOut": 3})
    assert fk.flows[v6].addr_type == 2 and fk.flows[v6].local[0] == "2001:db8::1"
    assert fk.expected(v6, "segsout") == 3


# ================================================================ batching / garbage

def test_several_requests_in_one_datagram(fake_kernel, client):
    c = client(fake_kernel)
    before = len(fake_kernel.requests)
    c.send(b"".join(genl(READ_VARS, tuple_cid(cid), seq=100 + cid) for cid in (1, 2, 3, 5)))
    for cid in (1, 2, 3, 5):
        r = c.wait_ack(100 + cid)
        assert r.error == 0 and [msg_cid(m) for m in r.msgs] == [cid]
    new = fake_kernel.requests[before:]
    assert [cmd for cmd, _a in new] == [READ_VARS] * 4
    assert len({r.datagram for r in new}) == 1
    assert [r.seq for r in new] == [101, 102, 103, 105]
    # a truncated message ends the datagram silently, earlier ones are answered
    good = genl(INIT, seq=120)
    c.send(good + struct.pack("=IHHII", 400, FAM, REQ | ACK, 121, 0) + b"\0" * 8)
    assert c.wait_ack(120).error == 0
    r = c.cmd(TIMESTAMP, seq=122)                        # nothing for 121 arrived before
    assert r.error == 0 and len(r.data) == 1 and r.msgs[0][16] == TIMESTAMP


def test_garbage_never_crashes_the_fake(fake_kernel, client):
    fk = fake_kernel
    c = client(fk)
    rng = random.Random(1234)
    valid = [genl(cmd, a) for cmd, a in (
        (READ_VARS, tuple_cid(1) + mask_attr(3, 1, 1, 1, 1, 1)),
        (WRITE_VAR, tuple_cid(1) + write_attr(b"LimCwnd", 5)),
        (LIST_CONNS, tuple_cid(0) + nlattr(A_TS, u64(0))),
        (READ_ALL, tuple_cid(0)), (INIT, b""), (TIMESTAMP, nlattr(A_TS_DELTA, u32(1))))]
    valid.append(hexdump(SPEC_13_1))
    for i in range(400):
        kind = i % 4
        if kind == 0:                                    # random bytes
            junk = rng.randbytes(rng.randrange(0, 200))
        elif kind == 1:                                  # plausible header, random body
            body = rng.randbytes(rng.randrange(0, 120))
            junk = nlmsg(rng.choice([FAM, GENL_ID_CTRL, 0, 3]), rng.randrange(0, 0x400),
                         rng.randrange(2**32), struct.pack("=BBH", rng.randrange(8), 1, 0)
                         + body)
        else:                                            # valid request, bytes flipped
            b = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 6)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            junk = bytes(b)
        c.send(junk)
        # a sentinel request flushes everything the garbage provoked
        r = c.cmd(TIMESTAMP, seq=0xFEED0000 + i)
        assert r.error == 0
    assert fk.internal_errors == []
    assert fk.running
    m = c.cmd(READ_VARS, tuple_cid(2)).msgs[0]
    assert decode_vals(m) == fk.values(2)


def test_on_request_hook_errors_are_contained(fake_kernel, client):
    def boom(cmd, k):
        raise RuntimeError("hook failed")
    fake_kernel.on_request = boom
    r = client(fake_kernel).cmd(INIT)
    assert r.error == 0 and len(r.msgs) == 1
    assert len(fake_kernel.internal_errors) == 1
    fake_kernel.internal_errors.clear()


def test_fixture_and_lifecycle(fake_kernel, fake_kernel_factory):
    assert fake_kernel.running and isinstance(fake_kernel.portid, int)
    assert sorted(fake_kernel.flows) == [1, 2, 3, 4, 5]
    assert fake_kernel.flows[4].owner == "other"
    assert fake_kernel.flows[3].addr_type == 2
    with FakeKernel() as fk:
        port = fk.portid
        assert fk.running
    assert not fk.running
    fk2 = fake_kernel_factory(page_payload=1000)
    assert fk2.running and fk2.portid not in (port, fake_kernel.portid)
    assert fk2.page_payload == 1000
