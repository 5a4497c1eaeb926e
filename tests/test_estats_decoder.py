"""The estats C decoder and the pure-Python reference on the same bytes: replies
recorded from the fake kernel, then randomly mutated (never a crash; same verdicts)."""
from __future__ import annotations

import random
import socket
import struct

import numpy as np
import pytest
from conftest import fuzz_cases

from web10g import _pyref, errors
from web10g.backends.estats import EstatsAgent

CMD_LIST_CONNS, CMD_READ_ALL, CMD_READ_VARS = 0, 1, 2


def capture(fk, cmd: int, start_cid: int = 0) -> list[bytes]:
    """One request's reply datagrams, data and ACK, through a plain netlink socket."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 2)
    s.bind((0, 0))
    s.settimeout(3)
    try:
        tup = struct.pack("=HH", 12, 14 | 0x8000) + struct.pack("=HHI", 8, 6, start_cid)
        body = bytes([cmd, 1, 0, 0]) + tup
        s.sendto(struct.pack("=IHHII", 16 + len(body), fk.family_id, 5, 9, 0) + body,
                 (fk.portid, 0))
        out = []
        while True:
            d = s.recv(65536)
            out.append(d)
            if struct.unpack_from("=H", d, 4)[0] == 2:     # NLMSG_ERROR: the ACK
                return out
    finally:
        s.close()


@pytest.fixture
def setup(fake_kernel_factory):
    fk = fake_kernel_factory(pad_u64="always")
    for i in range(5):
        fk.add_flow(("10.0.0.1", 100 + i), ("192.0.2.7", 5000 + i))
        fk.add_flow((f"2001:db8::{i + 1}", 200 + i), ("2001:db8::ff", 6000 + i))
    agent = EstatsAgent(peer=fk.portid)
    yield fk, agent
    agent.close()


def decoders(agent, cmd, vars=None):
    reader, _ = agent._reader(vars, identity_only=cmd == CMD_LIST_CONNS)
    pos = {n: agent._positions[n] for n in reader.dtype.names if n in agent._positions}
    state = agent._positions.get("State")

    def c(dgrams):
        return reader.decode(dgrams, cmd)

    def py(dgrams):
        return _pyref.decode_estats(dgrams, reader.dtype, cmd=cmd, family_id=agent.family.id,
                                    positions=pos, widths=agent._widths, state_pos=state,
                                    usec_mult=reader.usec_mult)
    return {"c": c, "python": py}


def same(a, b):
    assert a.dtype == b.dtype and len(a) == len(b)
    for name in a.dtype.names:
        assert np.array_equal(a[name], b[name]), name


@pytest.mark.parametrize("decoder", ["c", "python"])
def test_recorded_read_all_pages(setup, decoder):
    fk, agent = setup
    dec = decoders(agent, CMD_READ_ALL)[decoder]
    arr, n = dec(capture(fk, CMD_READ_ALL, 0) + capture(fk, CMD_READ_ALL, 4))
    rows = arr[:n]
    assert rows["cid"].tolist() == [1, 2, 3, 4, 5, 6]    # reported cid + 1, corrected
    for row in rows:
        for name in ("SegsOut", "HCDataOctetsOut", "WinScaleRcvd", "IpTosIn", "State"):
            assert int(row[name]) == fk.expected(int(row["cid"]), name)
    assert (rows["present"] & 0xFF == 0xFF).all()


@pytest.mark.parametrize("decoder", ["c", "python"])
def test_recorded_list_conns(setup, decoder):
    fk, agent = setup
    arr, n = decoders(agent, CMD_LIST_CONNS)[decoder](capture(fk, CMD_LIST_CONNS))
    rows = arr[:n]
    assert rows["cid"].tolist() == list(range(1, 11))
    assert rows["family"].tolist() == [2, 10] * 5
    assert rows["local_port"].tolist() == [p for i in range(5) for p in (100 + i, 200 + i)]


def test_decoders_agree_and_survive_mutation(setup):
    fk, agent = setup
    rng = random.Random(13)
    for cmd in (CMD_READ_ALL, CMD_LIST_CONNS):
        decs = decoders(agent, cmd)
        seeds = [d for d in capture(fk, cmd) if struct.unpack_from("=H", d, 4)[0] != 2]
        cases = fuzz_cases(rng, seeds, random_cases=100, mutated=800, max_random=300,
                           max_edits=5, max_cut=24)
        for case in cases:
            verdict = {}
            for name, dec in decs.items():
                try:
                    arr, n = dec([case])
                    verdict[name] = arr[:n]
                except errors.MalformedReply:
                    verdict[name] = None
            assert (verdict["c"] is None) == (verdict["python"] is None), case.hex()
            if verdict["c"] is not None:
                same(verdict["c"], verdict["python"])


def test_value_of_the_wrong_width_is_malformed(setup):
    fk, agent = setup
    dgram = bytearray(capture(fk, CMD_READ_ALL)[0])
    # find perf value 0 (SegsOut, u32: nla_len 8) and claim 5 bytes instead
    at = dgram.find(struct.pack("=HH", 8, 0))
    assert at > 0
    struct.pack_into("=H", dgram, at, 5)
    for dec in decoders(agent, CMD_READ_ALL).values():
        with pytest.raises(errors.MalformedReply):
            dec([bytes(dgram)])
