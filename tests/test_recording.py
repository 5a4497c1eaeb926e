"""High-rate recordings: what is replayed is exactly what was read live."""
from __future__ import annotations

import socket

import numpy as np
import pytest

import web10g
from web10g.backends.replay import ReplayAgent
from web10g.errors import EndOfRecording, RecordingError
from web10g.recording import Recorder


@pytest.fixture
def flows():
    lst = socket.create_server(("127.0.0.1", 0), backlog=64)
    pairs = []
    for _ in range(20):
        c = socket.create_connection(lst.getsockname())
        s, _ = lst.accept()
        c.sendall(b"r" * 3000)
        s.recv(5000)
        pairs.append((c, s))
    yield lst
    for c, s in pairs:
        c.close()
        s.close()
    lst.close()


def record(path, agent, n, filter=None, **kw):
    live = []
    with Recorder(path, agent, **kw) as rec:
        for _ in range(n):
            live.append(rec.sample(filter=filter).copy())
    return live, rec


def same(a, b):
    assert a.dtype == b.dtype and len(a) == len(b)
    for name in a.dtype.names:
        assert np.array_equal(a[name], b[name]), name


@pytest.mark.parametrize("codec", ["zstd", "zlib", "none"])
def test_sock_diag_replay_equals_live(tmp_path, flows, codec):
    path = tmp_path / "r.w10g"
    with web10g.open("sock_diag") as agent:
        live, rec = record(path, agent, 3, codec=codec)
    assert rec.samples == 3 and rec.stored_bytes > 0
    # samples after the first are stored as differences, except uncompressed
    assert rec.delta_frames == (0 if codec == "none" else 2)
    with web10g.open(replay=path) as rp:
        assert rp.backend == "sock_diag"
        replayed = list(rp.samples_iter())
    assert len(replayed) == 3
    for a, b in zip(live, replayed):
        same(a, b)                      # derived Max*/Min* columns included


def test_replay_selection_filter_and_end(tmp_path, flows):
    path = tmp_path / "r.w10g"
    port = flows.getsockname()[1]
    with web10g.open("sock_diag") as agent:
        live, _ = record(path, agent, 2)
    with web10g.open(replay=path) as rp:
        rows = rp.read_all(["SegsOut", "SmoothedRTT"], filter=f"sport = :{port}",
                           states="established")
        assert rows.dtype.names[-2:] == ("SegsOut", "SmoothedRTT")
        assert len(rows) == 20 and (rows["local_port"] == port).all()
        cid = int(rows["cid"][0])
        assert rp.read_vars(cid, ["SegsOut"])["cid"] == cid
        rp.read_all()
        with pytest.raises(EndOfRecording):
            rp.read_all()


def test_compressed_size_per_flow(tmp_path, flows):
    path = tmp_path / "r.w10g"
    with web10g.open("sock_diag") as agent:
        live, rec = record(path, agent, 5, codec="zstd")
    per_flow = rec.stored_bytes / rec.flows
    assert per_flow < 150, per_flow
    assert rec.raw_bytes > 2 * rec.stored_bytes        # it did compress


def test_difference_frames_store_idle_flows_in_a_fraction(tmp_path, flows):
    port = flows.getsockname()[1]
    sel = f"sport = :{port} or dport = :{port}"
    sizes = {}
    with web10g.open("sock_diag") as agent:
        for delta in (False, True):
            path = tmp_path / f"d{delta}.w10g"
            live, rec = record(path, agent, 8, codec="zstd", delta=delta, filter=sel)
            sizes[delta] = rec.stored_bytes
            assert rec.delta_frames == (7 if delta else 0)
            with web10g.open(replay=path) as rp:
                for a, b in zip(live, rp.samples_iter(filter=sel)):
                    same(a, b)
    assert sizes[True] < 0.7 * sizes[False], sizes


def test_damaged_and_truncated_recordings(tmp_path, flows):
    path = tmp_path / "r.w10g"
    with web10g.open("sock_diag") as agent:
        record(path, agent, 3, codec="zlib")
    data = path.read_bytes()
    cut = tmp_path / "cut.w10g"
    cut.write_bytes(data[:-10])
    rp = ReplayAgent(cut)
    assert len(rp.read_all()) > 0 and len(rp.read_all()) > 0    # the first two survive
    with pytest.raises(RecordingError, match="cut short") as ei:
        rp.read_all()
    assert ei.value.offset > 12
    # the last frame: where its head starts (frames follow the header back to back)
    from web10g.recording import FRAME
    off = 12 + int.from_bytes(data[8:12], "little")
    heads = []
    while off < len(data):
        heads.append(off)
        off += FRAME.size + FRAME.unpack_from(data, off)[5]
    last = heads[-1]
    # one flipped bit in its sample time (format 4: under the frame's CRC), one in its
    # stored bytes: both found, after the two frames before it were read
    for where in (last + 4, last + FRAME.size + 1):
        bad = bytearray(data)
        bad[where] ^= 0x01
        (tmp_path / "bad.w10g").write_bytes(bytes(bad))
        rp = ReplayAgent(tmp_path / "bad.w10g")
        rp.read_all()
        rp.read_all()
        with pytest.raises(RecordingError, match="offset") as ei:
            rp.read_all()
        assert ei.value.offset == last
    (tmp_path / "junk").write_bytes(b"not a recording at all")
    with pytest.raises(RecordingError, match="magic"):
        ReplayAgent(tmp_path / "junk")


def test_estats_recording_replays(tmp_path, fake_kernel):
    path = tmp_path / "e.w10g"
    with web10g.open("estats", peer=fake_kernel.portid) as agent:
        live, _ = record(path, agent, 2)
        fake_kernel.tick(1)
    with web10g.open(replay=path) as rp:
        assert rp.backend == "estats" and rp.layout.name == "head"
        for a in live:
            same(a, rp.read_all())


def test_frame_crc32_is_zlibs_whichever_implementation() -> None:
    """Frames may be checked with ISA-L's crc32 (when isal is installed): it must give
    zlib's values, or recordings written on one machine fail their checks on another."""
    import zlib

    from web10g import recording

    rng = np.random.default_rng(7)
    blob = rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    for start, stop in [(0, 0), (0, 1), (3, 17), (1, 4097), (5, 65536 + 7), (0, len(blob))]:
        assert recording._crc32(blob[start:stop]) == zlib.crc32(blob[start:stop])
