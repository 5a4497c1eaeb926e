"""Record files against web10g-record-format.md: §7 bytes, round trips, damage, text."""
from __future__ import annotations

import io
import os
import socket

import numpy as np
import pytest

from web10g import errors, mib, record
from web10g.record import RecordError, RecordReader, RecordWriter

T0 = 1_700_000_000 * 10**9 + 250_000 * 1000

# §7's dump, offsets 0x00-0x6f; everything after is zero up to the trailer.
SPEC_DUMP = bytes.fromhex("""
00 00 00 00 f1 53 65 90 d0 03 00 c0 00 02 07 00
00 00 00 00 00 00 00 00 00 00 00 0a 00 00 01 00
00 00 00 00 00 00 00 00 00 00 00 38 c7 16 00 00
00 00 00 00 00 00 00 d2 04 00 00 00 00 00 00 01
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 f2 05 2a 01 00 00 00 00
""")


def spec_checksum(data: bytes) -> int:
    """§4 read literally, one word at a time with a wrapping uint32 (independent check)."""
    padded = data + b"\0" if len(data) % 2 else data
    total = 0
    for i in range(0, len(padded), 2):
        total = (total + (padded[i] << 8 | padded[i + 1])) & 0xFFFFFFFF
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    if len(data) % 2:
        total = (total & 0xFF) << 8 | total >> 8
    return ~total & 0xFFFF


def spec_rows() -> np.ndarray:
    names = [n for n in mib.layout("head").flat_names() if n != "DataSegsOut"]
    rows = np.zeros(1, mib.dtype(names, identity=True, timestamp=True))
    rows["timestamp"] = T0
    rows["rem_addr"][0, :4] = [192, 0, 2, 7]
    rows["local_addr"][0, :4] = [10, 0, 0, 1]
    rows["rem_port"], rows["local_port"] = 51000, 22
    rows["SegsOut"], rows["HCDataOctetsOut"] = 1234, 5_000_000_000
    return rows


def random_rows(layout: str, k: int, family: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """k rows with values across each wire type's full range and random masked slots."""
    rng = np.random.default_rng(seed)
    lay = mib.layout(layout)
    rows = np.zeros(k, mib.dtype(lay.variables(), identity=True, timestamp=True))
    rows["timestamp"] = T0 + rng.integers(0, 10**6, k) * 10**6 + rng.integers(0, 1000, k) * 1000
    n_addr = 4 if family == socket.AF_INET else 16
    for col in ("local_addr", "rem_addr"):
        rows[col][:, :n_addr] = rng.integers(0, 256, (k, n_addr))
    if family == socket.AF_INET6:
        rows["rem_addr"][:, 15] |= 1  # bytes 4-15 non-zero, so inference sees IPv6
    rows["local_port"], rows["rem_port"] = rng.integers(0, 65536, (2, k))
    rows["family"] = family
    for v in lay.variables():
        info = np.iinfo(v.dtype)
        rows[v.name] = rng.integers(info.min, info.max, k, dtype=v.dtype, endpoint=True)
    rows["State"] = rng.integers(1, 13, k)
    masked = rng.random((k, lay.total)) < 0.2
    masked[:, lay.flat_names().index("State")] = False
    return rows, masked


def write(rows: np.ndarray, masked: np.ndarray | None = None, **kw: object) -> bytes:
    buf = io.BytesIO()
    with RecordWriter(buf, **kw) as w:  # type: ignore[arg-type]
        if len(rows):
            w.write(rows, masked)
    return buf.getvalue()


def test_empty_file_is_the_spec_bytes() -> None:
    data = write(spec_rows()[:0], metadata=False, byteorder="little")
    assert data == bytes.fromhex("00 00 00 ff ff")
    reader = RecordReader(data)
    assert reader.count == 0 and reader.rows().shape == (0,)


def test_one_record_matches_the_spec_dump_byte_for_byte() -> None:
    data = write(spec_rows(), metadata=False, byteorder="little")
    expected = SPEC_DUMP + bytes(2033 - 2 - len(SPEC_DUMP)) + b"\x22\xe8"
    assert len(data) == 2033
    assert data == expected
    # Slot 0, slot 3 and its value at the documented offsets.
    assert data[0x2f:0x37] == bytes(8) and data[0x37:0x3b] == (1234).to_bytes(4, "little")
    assert data[0x3f] == 1  # slot 1 masked
    assert data[0x5f:0x67] == bytes(8)
    assert data[0x67:0x6f] == (5_000_000_000).to_bytes(8, "little")
    assert record.checksum(data[:-2]) == 0x22E8 == spec_checksum(data[:-2])
    assert record.checksum(data) == 0
    reader = RecordReader(data)
    row, masked = reader.rows()[0], reader.masked()[0]
    assert (row["SegsOut"], row["HCDataOctetsOut"], row["timestamp"]) == (1234, 5 * 10**9, T0)
    assert masked[1] and not masked[0] and masked.sum() == 1
    assert row["family"] == socket.AF_INET and row["cid"] == 0


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x01\x02\x03", bytes(range(256)) * 7,
                                  b"\xff\xff" * 70_000, bytes(range(255)) * 600])
def test_checksum_follows_the_spec_including_uint32_wrap(data: bytes) -> None:
    value = record.checksum(data)
    assert value == spec_checksum(data)
    if len(data) < 0x8000:  # no wrap: appending the trailer verifies to 0 (§4)
        assert record.checksum(data + value.to_bytes(2, "big")) == 0


def test_checksum_keeps_the_c_accumulators_lost_carry() -> None:
    # 65538 words of 0xFFFF overflow a uint32 by 65534: C gives 0x0001, RFC 1071 gives 0.
    assert record.checksum(b"\xff\xff" * 65538) == 0x0001


@pytest.mark.parametrize("layout", mib.LAYOUTS)
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.parametrize("metadata", [False, True])
def test_round_trip(layout: str, family: int, byteorder: str, metadata: bool) -> None:
    rows, masked = random_rows(layout, 60, family)
    data = write(rows, masked, layout=layout, byteorder=byteorder, metadata=metadata,
                 cid=7 if metadata else None, family=family if metadata else None)
    lay = mib.layout(layout)
    reader = RecordReader(data, layout=None if metadata else layout)
    assert data[0] == (byteorder == "big") and reader.byteorder == byteorder
    h = int.from_bytes(data[1:3], byteorder)
    assert len(data) == 3 + h + 60 * (44 + 16 * lay.total) + 2
    assert reader.layout is lay and reader.count == 60
    assert record.checksum(data) == 0
    got = reader.rows()
    assert np.array_equal(reader.masked(), masked)
    for v in lay.variables():
        j = lay.flat_names().index(v.name)
        assert np.array_equal(got[v.name], np.where(masked[:, j], 0, rows[v.name])), v.name
    for col in ("timestamp", "local_addr", "rem_addr", "local_port", "rem_port", "family"):
        assert np.array_equal(got[col], rows[col]), col
    assert np.array_equal(got["state"], rows["State"])
    assert (got["cid"] == (7 if metadata else 0)).all()
    # The wire really is in the writer's order: slot 0's value at its documented place.
    first = 3 + h + 44 + 8
    wire = np.array(got["SegsOut"][0], np.uint32).tobytes()
    expect = wire if byteorder == "little" else wire[::-1]
    assert data[first:first + 4] == expect or masked[0, 0]


def test_signed_slots_keep_their_sign() -> None:
    rows = spec_rows()
    rows["WinScaleRcvd"] = -1
    data = write(rows, metadata=False, byteorder="big")
    assert RecordReader(data).rows()["WinScaleRcvd"][0] == -1


def test_metadata_file_keeps_the_classic_structure() -> None:
    rows, _ = random_rows("middle", 3, socket.AF_INET6)
    data = write(rows, layout="middle", cid=1041, family=socket.AF_INET6)
    h = int.from_bytes(data[1:3], "little" if data[0] == 0 else "big")
    assert h > 0 and (len(data) - 3 - h - 2) % (44 + 16 * 122) == 0
    assert record.checksum(data) == 0  # the sum covers the extension too
    text = data[3:3 + h].decode()
    assert text.startswith("web10g-record 1\nlayout=kernel-4.8\naddr_type=2\ncid=1041\nvars=")
    reader = RecordReader(data, layout="head")  # metadata wins over the caller's guess
    assert reader.layout.name == "middle" and reader.metadata["cid"] == "1041"
    assert reader.metadata["vars"].startswith("SegsOut:u32,") and "Priority:u32" in text
    assert (reader.rows()["cid"] == 1041).all()


def test_foreign_header_extension_is_ignored_like_the_c_reader() -> None:
    body = write(spec_rows(), metadata=False, byteorder="little")[3:-2]
    data = b"\x00\x05\x00hello" + body
    data += record.checksum(data).to_bytes(2, "big")
    reader = RecordReader(data)
    assert reader.metadata == {} and reader.rows()["SegsOut"][0] == 1234


def test_flipped_byte_is_a_checksum_error_and_salvage_still_reads() -> None:
    rows, masked = random_rows("head", 5, socket.AF_INET)
    data = bytearray(write(rows, masked, metadata=False))
    data[3 + 2 * 2028 + 100] ^= 0x10
    with pytest.raises(RecordError) as info:
        RecordReader(bytes(data))
    assert info.value.offset == 0 and "checksum mismatch" in str(info.value)
    assert isinstance(info.value, errors.MalformedReply) and isinstance(info.value, ValueError)
    got, err = record.read_salvage(bytes(data))
    assert err is not None and err.offset == 0 and len(got) == 5


def test_unclosed_writer_names_the_missing_trailer(tmp_path) -> None:
    rows, masked = random_rows("head", 4, socket.AF_INET)
    path = tmp_path / "rec"
    w = RecordWriter(path, metadata=False)
    w.write(rows, masked)  # no close: the process "was killed" here
    with pytest.raises(RecordError) as info:
        RecordReader(path)
    assert info.value.offset == 3 + 4 * 2028 and "trailer" in str(info.value)
    got, err = record.read_salvage(path)
    assert err is not None and err.offset == info.value.offset
    assert np.array_equal(got["SegsOut"], np.where(masked[:, 0], 0, rows["SegsOut"]))
    w.close()
    assert RecordReader(path).count == 4


def test_file_cut_mid_record_names_where_the_partial_record_starts() -> None:
    rows, masked = random_rows("old", 4, socket.AF_INET6)
    data = write(rows, masked, layout="old")
    h = int.from_bytes(data[1:3], "little" if data[0] == 0 else "big")
    cut = data[:3 + h + 2 * 2028 + 700]
    with pytest.raises(RecordError) as info:
        RecordReader(cut)
    assert info.value.offset == 3 + h + 2 * 2028
    assert f"offset {3 + h + 2 * 2028}" in str(info.value) and "truncated" in str(info.value)
    got, err = record.read_salvage(cut)
    assert err is not None and err.offset == info.value.offset and len(got) == 2
    assert np.array_equal(got["rem_addr"], rows["rem_addr"][:2])
    assert np.array_equal(got["timestamp"], rows["timestamp"][:2])


def test_wrong_layout_says_k_is_not_integral() -> None:
    rows, masked = random_rows("middle", 3, socket.AF_INET)
    data = write(rows, masked, layout="middle", metadata=False)
    with pytest.raises(RecordError) as info:
        RecordReader(data)  # default: HEAD, N=124
    msg = str(info.value)
    assert "not a whole number of records" in msg and "N=124" in msg
    assert "checksum is valid" in msg and "try layout='middle'" in msg
    got, err = record.read_salvage(data)
    assert err is not None and len(got) == 0  # decoding with the wrong slots would lie
    assert RecordReader(data, layout="middle").count == 3


@pytest.mark.parametrize("data, offset, words", [
    (b"\x00\x00", 2, "ends after 2 bytes"),
    (b"\x07\x00\x00\xff\xff", 0, "byte-order flag is 7"),
    (b"\x00\x40\x00\xff\xff", 1, "H=64"),
])
def test_broken_header(data: bytes, offset: int, words: str) -> None:
    with pytest.raises(RecordError) as info:
        RecordReader(data)
    assert info.value.offset == offset and words in str(info.value)


def test_unknown_metadata_layout_is_rejected() -> None:
    ext = b"web10g-record 1\nlayout=kernel-9.9\n"
    data = b"\x00" + len(ext).to_bytes(2, "little") + ext
    data += record.checksum(data).to_bytes(2, "big")
    with pytest.raises(RecordError, match="kernel-9.9"):
        RecordReader(data)


def test_writer_masks_absent_columns_and_unreported_tables() -> None:
    lay = mib.layout("head")
    rows = np.zeros(2, mib.dtype(["SegsOut", "MSSRcvd", "State"], identity=True, timestamp=True)
                    .descr + [("present", "u2")])
    rows["timestamp"], rows["SegsOut"], rows["MSSRcvd"], rows["State"] = T0, 5, 1448, 5
    rows["present"] = [0b111111, 0b111011]  # second row: stack table (MSSRcvd, State) absent
    reader = RecordReader(write(rows))
    masked = reader.masked()
    i_segs, i_mss, i_state = (lay.flat_names().index(n) for n in ("SegsOut", "MSSRcvd", "State"))
    assert masked.sum(axis=1).tolist() == [lay.total - 3, lay.total - 1]
    assert not masked[1, i_segs] and masked[1, i_mss] and not masked[0, i_mss]
    assert masked[1, i_state] and not masked[0, i_state]
    assert reader.rows()["MSSRcvd"].tolist() == [1448, 0]
    assert reader.rows()["state"].tolist() == [5, 0]  # masked State slot gives no state


def test_writer_rejects_what_it_cannot_store() -> None:
    rows = spec_rows()
    with pytest.raises(ValueError, match="LostRetransmitSegs"):
        write(rows, layout="middle")
    bad = np.zeros(1, mib.dtype(["IpTosIn"], identity=True, timestamp=True, align=False)
                   .descr[:-1] + [("IpTosIn", "i4")])
    bad["IpTosIn"] = 300
    with pytest.raises(ValueError, match="IpTosIn"):
        write(bad)
    with pytest.raises(ValueError, match="lack the column"):
        write(np.zeros(1, [("timestamp", "i8")]))


def test_nanosecond_usec_from_the_kernel_5_0_module_is_recognised() -> None:
    data = bytearray(write(spec_rows(), metadata=False, byteorder="little"))
    data[7:11] = (123_456_789).to_bytes(4, "little")  # usec field holding nanoseconds
    data[-2:] = record.checksum(bytes(data[:-2])).to_bytes(2, "big")
    assert RecordReader(bytes(data)).rows()["timestamp"][0] == 1_700_000_000 * 10**9 + 123_456_789


def test_format_record_has_the_record_write_shape() -> None:
    reader = RecordReader(write(spec_rows(), metadata=False))
    text = record.format_record(reader.rows()[0], "head", reader.masked()[0])
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == 2 + 124
    assert lines[:6] == ["Timestamp sec: 1700000000, usec: 250000",
                         "Address: 10.0.0.1 22 192.0.2.7 51000",
                         "SegsOut:  1234", "DataSegsOut:  -", "DataOctetsOut:  0",
                         "HCDataOctetsOut:  5000000000"]
    assert lines[-1] == "Priority:  0"
    assert [ln.split(":")[0] for ln in lines[2:]] == mib.layout("head").flat_names()
    # Without a mask every variable prints a number, as the C tool does.
    assert "DataSegsOut:  0" in record.format_record(reader.rows()[0], mib.layout("head"))


def test_format_record_ipv6_and_signed() -> None:
    rows = spec_rows()
    rows["local_addr"][0] = list(socket.inet_pton(socket.AF_INET6, "2001:db8::5"))
    rows["rem_addr"][0] = list(socket.inet_pton(socket.AF_INET6, "::1"))
    rows["WinScaleRcvd"] = -1
    row = RecordReader(write(rows, metadata=False)).rows()[0]
    assert row["family"] == socket.AF_INET6
    text = record.format_record(row, "head")
    assert "Address: 2001:db8::5 22 ::1 51000\n" in text and "WinScaleRcvd:  -1\n" in text


class _Endless(io.RawIOBase):
    """A stream that never ends (a device, a pipe from a runaway writer): ``first``, then
    zero bytes forever; counts what was read from it."""

    def __init__(self, first: bytes = b"") -> None:
        self.first, self.taken = first, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        n = len(b)
        head = self.first[self.taken:self.taken + n]
        b[:len(head)] = head
        b[len(head):n] = bytes(n - len(head))
        self.taken += n
        return n


def test_an_endless_stream_is_refused_at_the_limit_not_read_forever() -> None:
    src = _Endless()                       # all zeros: a well-formed file of empty records
    with pytest.raises(RecordError) as info:
        RecordReader(io.BufferedReader(src), max_bytes=3 << 20)
    assert "larger than 3,145,728 bytes" in str(info.value)
    assert "max_bytes=None" in str(info.value)
    assert src.taken <= (3 << 20) + (2 << 20)      # stopped at the limit (+ buffering)
    with pytest.raises(RecordError):
        record.read_salvage(io.BufferedReader(_Endless()), max_bytes=1 << 20)


def test_a_stream_that_starts_with_no_byte_order_flag_is_refused_at_once() -> None:
    src = _Endless(first=b"&not a record file")
    with pytest.raises(RecordError) as info:
        RecordReader(io.BufferedReader(src))           # the default limit: 1 GiB
    assert info.value.offset == 0 and "byte-order flag is 38" in str(info.value)
    assert src.taken <= 2 << 20                        # the first chunk, not a gigabyte


def test_a_regular_file_over_the_limit_is_refused_before_it_is_read(tmp_path) -> None:
    path = tmp_path / "huge-record"
    with open(path, "wb") as f:                        # sparse: 64 GiB that occupy nothing
        f.truncate(64 << 30)
    with pytest.raises(RecordError) as info:
        RecordReader(path)
    assert f"({64 << 30:,} bytes)" in str(info.value)
    assert f"larger than {record.MAX_FILE_BYTES:,} bytes" in str(info.value)


def test_files_and_streams_within_the_limit_read_as_before(tmp_path) -> None:
    rows, masked = random_rows("head", 3, socket.AF_INET)
    data = write(rows, masked)
    path = tmp_path / "rec"
    path.write_bytes(data)
    for src in (path, io.BytesIO(data), io.BufferedReader(io.BytesIO(data))):
        got = RecordReader(src, max_bytes=len(data)).rows()  # type: ignore[arg-type]
        assert np.array_equal(got["SegsOut"], np.where(masked[:, 0], 0, rows["SegsOut"]))
    for src in (path, io.BytesIO(data)):
        with pytest.raises(RecordError, match="larger than"):
            RecordReader(src, max_bytes=len(data) - 1)  # type: ignore[arg-type]
    assert RecordReader(path, max_bytes=None).count == 3


def test_the_tools_refuse_a_device_that_never_ends(tmp_path) -> None:
    import subprocess
    import sys
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for args, says in ((["recordread", "/dev/zero"], "/dev/zero is larger than"),
                       (["convert", "/dev/zero", str(tmp_path / "o.csv")],
                        "/dev/zero is not a regular file"),
                       (["convert", str(fifo), str(tmp_path / "o.csv")],   # no writer: no wait
                        f"{fifo} is not a regular file"),
                       (["top", "--replay", str(fifo), "--once"],
                        f"{fifo} is not a regular file")):
        res = subprocess.run([sys.executable, "-m", "web10g", *args], capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 1, res.stderr
        assert says in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "o.csv").exists()
