"""The fast C decoder and the pure-Python reference decoder, on the same inputs.

Inputs: a committed recording of real kernel bytes (tests/data/sockdiag-dump.bin), a live
dump taken now, tcp_info of other lengths (older and newer kernels), malformed records,
and random mutations (the C decoder must never crash; both must agree).
"""
from __future__ import annotations

import random
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import fuzz_cases

from web10g import _pyref, _sockdiag, errors, mib
from web10g._netlink import NetlinkSocket
from web10g.backends.sockdiag import SockDiagAgent
from web10g.rows import available

DECODERS = {"c": _sockdiag.decode_datagrams, "python": _pyref.decode_datagrams}
RECORDING = Path(__file__).with_name("data") / "sockdiag-dump.bin"


@pytest.fixture(scope="module")
def dtype():
    with SockDiagAgent() as agent:
        return agent.dtype()


def load_recording() -> list[bytes]:
    data = RECORDING.read_bytes()
    out, off = [], 0
    while off < len(data):
        (n,) = struct.unpack_from("<I", data, off)
        out.append(data[off + 4:off + 4 + n])
        off += 4 + n
    return out


def live_datagrams(ext: int = 0xFF) -> list[bytes]:
    out = []
    with NetlinkSocket(4) as sock:
        for fam in (socket.AF_INET, socket.AF_INET6):
            req = struct.pack("=BBBxI", fam, socket.IPPROTO_TCP, ext, 0xFFF) + bytes(48)
            out.append(b"".join(sock.request(20, 0, req, dump=True)))
    return out


def split(dgram: bytes) -> list[bytes]:
    msgs, off = [], 0
    while off < len(dgram):
        (n,) = struct.unpack_from("=I", dgram, off)
        msgs.append(dgram[off:off + n])
        off += (n + 3) & ~3
    return msgs


def set_info_len(msg: bytes, new_len: int) -> bytes:
    """Rewrite a record so its INET_DIAG_INFO payload has ``new_len`` bytes."""
    body = bytearray(msg[16 + 72:])
    out, off = bytearray(), 0
    while off + 4 <= len(body):
        alen, atype = struct.unpack_from("=HH", body, off)
        payload = bytes(body[off + 4:off + alen])
        if atype & 0x3FFF == 2:
            payload = (payload + bytes(range(256)) * 2)[:new_len]
            alen = 4 + new_len
        out += struct.pack("=HH", alen, atype) + payload + b"\0" * (-alen % 4)
        off += (struct.unpack_from("=H", body, off)[0] + 3) & ~3
    head = bytearray(msg[:16 + 72])
    struct.pack_into("=I", head, 0, len(head) + len(out))
    return bytes(head + out)


def assert_same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and len(a) == len(b)
    for name in a.dtype.names:
        assert np.array_equal(a[name], b[name]), name


@pytest.mark.parametrize("decoder", DECODERS)
def test_recorded_kernel_bytes(decoder, dtype):
    arr, n = DECODERS[decoder](load_recording(), dtype, timestamp_ns=123)
    rows = arr[:n]
    assert n == 9
    assert sorted(rows["state"].tolist()) == [2, 2, 5, 5, 5, 5, 5, 5, 11]
    assert set(rows["cc_algorithm"][rows["state"] == 5].tolist()) == {b"cubic", b"reno", b"bbr"}
    assert (rows["timestamp"] == 123).all()
    est = rows[rows["state"] == 5]
    assert (est["tcp_info_len"] == 280).all()
    # the three receivers left 40000 of the 50000 bytes unread
    assert sorted(est["CurAppRQueue"].tolist()) == [0, 0, 0, 40000, 40000, 40000]
    senders = est[est["CurAppRQueue"] == 0]
    assert (senders["HCThruOctetsAcked"] == 50001).all()       # 50000 + the SYN
    assert (senders["IpTosOut"] == 0x20).all()
    assert (est["CurMSS"] > 0).all() and (est["SmoothedRTT"] == est["rtt_us"] // 1000).all()
    tw = rows[rows["state"] == 11][0]
    assert tw["tcp_info_len"] == 0 and tw["present"] & 1 == 0
    assert not available(rows[rows["state"] == 11], "SmoothedRTT").any()
    assert available(est, "SmoothedRTT").all()
    v6 = rows[rows["family"] == socket.AF_INET6]
    assert len(v6) == 3 and (v6["local_addr"][:, 15] == 1).all()


def test_decoders_agree_on_the_recording(dtype):
    c, cn = _sockdiag.decode_datagrams(load_recording(), dtype, timestamp_ns=7)
    p, pn = _pyref.decode_datagrams(load_recording(), dtype, timestamp_ns=7)
    assert cn == pn
    assert_same(c[:cn], p[:pn])


def test_decoders_agree_on_a_live_dump(dtype, tcp_pair):
    _, cli, srv = tcp_pair
    cli.sendall(b"y" * 30000)
    srv.recv(5000)
    dgrams = live_datagrams()
    c, cn = _sockdiag.decode_datagrams(dgrams, dtype)
    p, pn = _pyref.decode_datagrams(dgrams, dtype)
    assert cn == pn >= 3
    assert_same(c[:cn], p[:pn])


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("info_len", [104, 120, 136, 144, 160, 192, 232, 248])
def test_shorter_tcp_info_of_older_kernels(decoder, dtype, info_len):
    msgs = [set_info_len(m, info_len) for m in split(load_recording()[0])]
    arr, n = DECODERS[decoder]([b"".join(msgs)], dtype)
    rows = arr[:n]
    est = rows[rows["state"] == 5]
    assert (est["tcp_info_len"] == info_len).all()
    # a field past the reported length reads as unavailable and zero, never garbage
    assert (est["HCThruOctetsAcked"] == (50001 if info_len >= 128 else 0)).all() or \
        info_len >= 128
    assert available(est, "CurMSS").all()                    # offset 16: always there
    assert available(est, "HCDataOctetsOut").all() == (info_len >= 208)
    assert (est["HCDataOctetsOut"][~available(est, "HCDataOctetsOut")] == 0).all()
    assert (est["CurRwinSent"] == 0).all() == (info_len < 236) or info_len >= 236


@pytest.mark.parametrize("decoder", DECODERS)
def test_longer_tcp_info_of_a_newer_kernel(decoder, dtype):
    base, _ = DECODERS[decoder](load_recording()[:1], dtype)
    msgs = [set_info_len(m, 320) for m in split(load_recording()[0])]
    arr, n = DECODERS[decoder]([b"".join(msgs)], dtype)
    est = arr[:n][arr[:n]["state"] == 5]
    assert (est["tcp_info_len"] == 320).all()
    ref = base[:n][base[:n]["state"] == 5]
    assert (est["HCThruOctetsAcked"] == ref["HCThruOctetsAcked"]).all()   # prefix decoded


@pytest.mark.parametrize("decoder", DECODERS)
def test_attribute_running_past_the_record_is_malformed(decoder, dtype):
    msg = bytearray(split(load_recording()[0])[1])
    struct.pack_into("=H", msg, 16 + 72, 0x7FFF)             # first attribute's length
    with pytest.raises(errors.MalformedReply, match="malformed"):
        DECODERS[decoder]([bytes(msg)], dtype)


@pytest.mark.parametrize("decoder", DECODERS)
def test_record_shorter_than_inet_diag_msg_is_malformed(decoder, dtype):
    msg = bytearray(split(load_recording()[0])[0][:16 + 40])
    struct.pack_into("=I", msg, 0, len(msg))
    with pytest.raises(errors.MalformedReply):
        DECODERS[decoder]([bytes(msg)], dtype)


@pytest.mark.parametrize("decoder", DECODERS)
def test_capacity_overflow_grows_and_loses_nothing(decoder, dtype):
    full, n = DECODERS[decoder](load_recording(), dtype)
    small = np.empty(2, dtype=dtype)
    grown, n2 = DECODERS[decoder](load_recording(), dtype, out=small)
    assert n2 == n and len(grown) >= n
    assert_same(grown[:n], full[:n])


def test_fuzzed_datagrams_never_crash_and_decoders_agree(dtype):
    """Random and mutated datagrams: each decoder either decodes or raises
    MalformedReply, and both reach the same verdict and the same rows."""
    cases = fuzz_cases(random.Random(4898), load_recording(), random_cases=200,
                       mutated=1500, max_random=600, max_edits=6, max_cut=40)
    for case in cases:
        verdicts = []
        for dec in DECODERS.values():
            try:
                arr, n = dec([case], dtype)
                verdicts.append(("ok", arr[:n]))
            except errors.MalformedReply:
                verdicts.append(("bad", None))
        assert verdicts[0][0] == verdicts[1][0], case.hex()
        if verdicts[0][0] == "ok":
            assert_same(verdicts[0][1], verdicts[1][1])


def test_selected_columns_only(dtype):
    with SockDiagAgent() as agent:
        small = agent.dtype(["SegsOut", "cc_algorithm"])
    c, cn = _sockdiag.decode_datagrams(load_recording(), small)
    full, _ = _sockdiag.decode_datagrams(load_recording(), dtype)
    for name in small.names:
        if name != "timestamp":
            assert np.array_equal(c[:cn][name], full[:cn][name])


def test_a_dtype_the_decoder_cannot_fill_is_refused():
    with pytest.raises(ValueError, match="cannot fill"):
        _sockdiag.decode_datagrams([], np.dtype([("cid", "u8"), ("bogus", "u4")]))
    with pytest.raises(TypeError, match="SegsOut"):
        _sockdiag.decode_datagrams([], np.dtype([("SegsOut", "u8")]))


def test_every_registry_column_is_covered_by_the_recording(dtype):
    """Columns that are never non-zero anywhere would hide a decoding slip."""
    arr, n = _sockdiag.decode_datagrams(load_recording(), dtype)
    rows = arr[:n]
    nonzero = {name for name in dtype.names if np.any(rows[name] != 0)}
    must = {"SegsOut", "HCThruOctetsAcked", "CurCwnd", "CurSsthresh", "SmoothedRTT", "RTTVar",
            "WinScaleSent", "WinScaleRcvd", "TimeStamps", "WillSendSACK", "State", "InRecovery",
            "CurAppRQueue", "IpTosOut", "cc_algorithm", "bbr_bw_bytes_per_s",
            "skmem_rcvbuf", "mem_rmem_bytes", "cgroup_id", "sockopt_flags",
            "pacing_rate_bytes_per_s",
            "local_port", "rem_port", "inode", "cid"}
    assert must <= nonzero, must - nonzero
    assert set(mib.lookup(n).name for n in must if n in dtype.names and n[0].isupper())
