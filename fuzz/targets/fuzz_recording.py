"""atheris targets: raw recordings (web10g/recording.py Recording: the header and every
frame), and, as target "replay" (fuzz_replay.py), their replay (web10g.open(replay=):
the recording backend's decoders over every sample), ten times slower per input.

Input: [mode][file]. mode bits:
  0    fix the checksums: the header is re-encoded with its header_crc32 when it is a
       JSON object, and each frame's raw length and CRC are set from its (decompressed)
       bytes (and, from format 4, its head), so that mutations reach the frame parser
       and the C decoders behind the replay instead of stopping at a checksum
  3    replay: every variable (else a few of each backend, which keeps the row type
       small: building a full one costs more than decoding a sample)
The file is written to a private file in /dev/shm (Recording takes a path).
"""
from __future__ import annotations

import json
import os
import struct
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402

MAX_SAMPLES = 4
FEW = ["SegsOut", "CurMSS", "SmoothedRTT", "MaxRTT", "DataOctetsIn", "ThruOctetsAcked"]


def _fix(recording, body: bytes) -> bytes:
    """The file with consistent checksums where it can be parsed far enough."""
    if len(body) < 12 or body[:8] != recording.MAGIC:
        return body
    (n,) = struct.unpack_from("<I", body, 8)
    raw = body[12:12 + n]
    rest = body[12 + n:]
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        header = None
    enc = getattr(recording, "_encode_header", None)
    if isinstance(header, dict) and header and enc is not None:
        try:
            raw = enc(header)
        except (ValueError, TypeError, RecursionError):
            pass
    out = [body[:8], struct.pack("<I", len(raw)), raw]
    F = recording.FRAME
    head_checked = isinstance(header, dict) and isinstance(header.get("format"), int) \
        and header["format"] >= 4
    off = 0
    while off + F.size <= len(rest):
        magic, codec, pad, t_ns, raw_len, stored_len, crc = F.unpack_from(rest, off)
        stored = rest[off + F.size:off + F.size + stored_len]
        if len(stored) == stored_len:
            data = None
            try:
                if codec == 0:
                    data = stored
                elif codec == 1:
                    data = zlib.decompressobj().decompress(stored, 1 << 20)
                elif codec == 2:
                    import zstandard

                    data = zstandard.ZstdDecompressor().decompressobj().decompress(stored)
                    data = data[:1 << 20]
            except Exception:  # noqa: BLE001 - leave a frame that does not decompress as is
                data = None
            if data is not None:
                raw_len, crc = len(data), zlib.crc32(data)
                if head_checked:            # format 4: the CRC covers the frame head too
                    crc = recording._frame_check(
                        F.pack(magic, codec, pad, t_ns, raw_len, stored_len, 0), data)
        out.append(F.pack(magic, codec, pad, t_ns, raw_len, stored_len, crc))
        out.append(stored)
        off += F.size + len(stored)
    out.append(rest[off:])
    return b"".join(out)


def setup(replay: bool = False):
    import web10g
    from web10g import recording

    fd, path = tempfile.mkstemp(prefix="w10g-fuzz-", suffix=".w10g",
                                dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.close(fd)
    import atexit

    atexit.register(lambda: os.path.exists(path) and os.unlink(path))

    def one(data: bytes) -> None:
        if not data:
            return
        mode, body = data[0], data[1:]
        if mode & 1:
            body = _fix(recording, body)
        with open(path, "wb") as fh:
            fh.write(body)
        if not replay:
            rec = recording.Recording(path)
            for i, _frame in enumerate(rec.frames()):
                if i >= 64:
                    break
            return
        # replay: at most MAX_SAMPLES samples through the backend's decoder
        with web10g.open(replay=path) as agent:
            vars = None
            if not mode & 8:
                have = {v.name for v in agent.variables()}
                vars = [v for v in FEW if v in have] or None
            for _ in range(MAX_SAMPLES):
                try:
                    rows = agent.read_all(vars)
                except web10g.errors.EndOfRecording:
                    break
                if len(rows):
                    agent.list_conns()

    return one


if __name__ == "__main__":
    _harness.main("recording", setup, ("web10g.recording",))
