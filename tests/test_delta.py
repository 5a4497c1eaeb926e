"""Difference frames (web10g._delta, csrc/w10g_delta.c): exact round trips for any
well-formed sample against any previous one, and refusal, never a read out of bounds,
for anything else (the suite also runs under ASan and UBSan: make sanitize)."""
from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from web10g import _delta

# a message: its nlmsg_len (>= 16) and content; a datagram: messages; a sample: datagrams
_msg = st.tuples(st.integers(16, 80), st.binary(min_size=0, max_size=80))
_dgram = st.lists(_msg, max_size=6)
_sample = st.lists(_dgram, max_size=5)


def _raw(sample: list, *, cut_last_pad: bool = False) -> bytes:
    """Entries (u32 length, i64 time, datagram) of whole netlink messages."""
    out = b""
    for i, dgram in enumerate(sample):
        body = b""
        for j, (mlen, content) in enumerate(dgram):
            msg = struct.pack("<I", mlen) + (content + bytes(mlen))[:mlen - 4]
            pad = -mlen % 4
            if not (cut_last_pad and j == len(dgram) - 1):
                msg += bytes(pad)
            body += msg
        out += struct.pack("<Iq", len(body), 1_000_000 + i) + body
    return out


def _roundtrip(prev: bytes | None, cur: bytes) -> tuple[int, bytes]:
    enc = bytearray(len(cur) + 3)
    k = _delta.encode(prev, cur, enc)
    assert k >= 0
    delta = bytes(enc[:len(cur)])
    out = bytearray(len(cur))
    assert _delta.decode(prev, delta, out)
    return k, bytes(out)


@settings(max_examples=300, deadline=None)
@given(_sample, _sample, st.booleans())
def test_any_sample_round_trips_against_any_previous(prev_s, cur_s, cut):
    prev, cur = _raw(prev_s), _raw(cur_s, cut_last_pad=cut)
    k, back = _roundtrip(prev, cur)
    assert back == cur
    k0, back0 = _roundtrip(None, cur)
    assert k0 == 0 and back0 == cur


@settings(max_examples=100, deadline=None)
@given(_sample)
def test_a_repeated_sample_pairs_every_message_and_stores_zeros(s):
    raw = _raw(s)
    enc = bytearray(len(raw))
    k = _delta.encode(raw, raw, enc)
    assert k == sum(len(d) for d in s)
    # what is left is the entry headers: every message became zeros
    off, rest = 0, bytearray(enc)
    while off < len(raw):
        n = struct.unpack_from("<I", raw, off)[0]
        assert not any(rest[off + 12:off + 12 + n])
        off += 12 + n


@settings(max_examples=100, deadline=None)
@given(_sample, st.integers(0, 3))
def test_a_malformed_sample_is_not_encoded(s, how):
    raw = bytearray(_raw(s) or struct.pack("<Iq", 0, 0))
    if how == 0:
        raw += b"\x01\x02\x03"                          # a cut entry header
    elif how == 1:
        raw += struct.pack("<Iq", 20, 0) + struct.pack("<I", 8) + bytes(16)   # nlmsg_len 8
    elif how == 2:
        raw += struct.pack("<Iq", 20, 0) + struct.pack("<I", 24) + bytes(16)  # past its end
    else:
        raw += struct.pack("<Iq", 99, 0) + bytes(20)    # datagram past the sample
    assert _delta.encode(None, bytes(raw), bytearray(len(raw))) == -1


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=300)))
def test_any_bytes_decode_or_are_refused(delta, prev):
    out = bytearray(len(delta))
    assert _delta.decode(prev, delta, out) in (True, False)


def test_a_difference_needs_the_previous_sample_it_was_made_from():
    a = _raw([[(40, b"a" * 36), (20, b"b" * 16)]])
    b = _raw([[(40, b"A" * 36), (20, b"B" * 16)]])
    enc = bytearray(len(b))
    assert _delta.encode(a, b, enc) == 2
    out = bytearray(len(b))
    assert not _delta.decode(None, bytes(enc), out)           # no previous sample
    shorter = _raw([[(40, b"a" * 36)]])
    assert not _delta.decode(shorter, bytes(enc), out)        # it lacks message 2
    other = _raw([[(44, b"a" * 40), (20, b"b" * 16)]])
    assert not _delta.decode(other, bytes(enc), out)          # message 1's length differs
