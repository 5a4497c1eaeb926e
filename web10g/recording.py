"""High-rate recordings: the kernel's own reply bytes, compressed, with a replay backend.

Sampling every flow many times a second and keeping it all must cost little more than
the sampling: a :class:`Recorder` keeps a copy of every datagram the kernel sent for a
sample (the netlink socket's tap: one memcpy per datagram), and a background thread
compresses and writes it. Because the recording holds the replies themselves, replaying
runs them through the same C decoders as a live read, so every variable, filter and tool
works offline: ``web10g.open(replay=PATH)``.

File layout (all integers little-endian; docs/recording-format.md):

    b"W10GRAW1", u32 header length, header (UTF-8 JSON: backend, kernel, sysctls, flags,
    decoder inputs such as the estats INIT tables), then frames:
    b"FR", u8 codec (0 none, 1 zlib, 2 zstd), u8 0, i64 sample time (ns since the epoch),
    u32 raw length, u32 stored length, u32 CRC-32 of the raw bytes, stored bytes.
    Raw bytes = the sample's datagrams, each as u32 length, i64 receive time (ns), bytes.

A damaged or truncated file is read up to the damage; the error names the offset.
"""
from __future__ import annotations

import json
import os
import platform
import queue
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from web10g import __version__, errors, mib

MAGIC = b"W10GRAW1"
FRAME = struct.Struct("<2sBBqIII")
CODEC_NONE, CODEC_ZLIB, CODEC_ZSTD = 0, 1, 2
_QUEUE_SAMPLES = 32     # samples waiting for the compressor before sample() waits


RecordingError = errors.RecordingError
EndOfRecording = errors.EndOfRecording


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def _split(raw: bytes, offset: int) -> tuple[list[bytes], list[int]]:
    """A frame's datagrams and their receive times."""
    dgrams, times, off = [], [], 0
    while off < len(raw):
        if off + 12 > len(raw):
            raise RecordingError("a datagram header is cut", offset)
        n, t = struct.unpack_from("<Iq", raw, off)
        if off + 12 + n > len(raw):
            raise RecordingError("a datagram runs past its frame", offset)
        dgrams.append(raw[off + 12:off + 12 + n])
        times.append(t)
        off += 12 + n
    return dgrams, times


# -- writing ------------------------------------------------------------------------------

class Recorder:
    """Record every sample of ``agent`` (sock_diag or estats) to ``path``.

    ``sample()`` reads all flows (every variable, so replays can serve any selection)
    and returns the rows; compression and writing happen on a background thread (zstd
    when the ``zstandard`` package is installed — ``pip install web10g[record]`` —, else
    zlib). When the writer falls behind by more than a few samples, ``sample()`` waits:
    nothing is dropped.
    """

    def __init__(self, path: str | os.PathLike, agent: Any, *, codec: str = "auto",
                 level: int = 3) -> None:
        if not agent.capabilities.recordable:
            raise errors.NotSupported(f"the {agent.backend} backend cannot be recorded "
                                      "(it has no kernel replies to keep)")
        state, self._tap = agent.recorder_state()
        zstd = _zstd()
        if codec == "auto":
            codec = "zstd" if zstd is not None else "zlib"
        if codec == "zstd" and zstd is None:
            raise ImportError("zstd compression needs the zstandard package: "
                              "pip install 'web10g[record]'")
        self._codec = {"none": CODEC_NONE, "zlib": CODEC_ZLIB, "zstd": CODEC_ZSTD}[codec]
        self._compress = (zstd.ZstdCompressor(level=level).compress if self._codec == CODEC_ZSTD
                          else (lambda b: zlib.compress(b, 1)) if self._codec == CODEC_ZLIB
                          else bytes)
        self.agent = agent
        self.samples = 0
        self.raw_bytes = 0
        self.stored_bytes = 0
        self.flows = 0
        self._fh = open(path, "wb")  # noqa: SIM115 - closed in close()
        header = json.dumps(self._header(agent, state)).encode()
        self._fh.write(MAGIC + struct.pack("<I", len(header)) + header)
        self._queue: queue.Queue[tuple[int, bytes] | None] = queue.Queue(_QUEUE_SAMPLES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._writer, name="web10g-recorder",
                                        daemon=True)
        self._thread.start()

    @staticmethod
    def _header(agent: Any, state: dict[str, Any]) -> dict[str, Any]:
        h: dict[str, Any] = {
            "format": 1, "web10g": __version__, "backend": agent.backend,
            "kernel": platform.release(), "host": socket.gethostname(),
            "created_ns": time.time_ns(),
        }
        h.update(state)         # what the backend's replay decoder needs
        return h

    def _writer(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                t_ns, raw = item
                stored = self._compress(raw)
                self._fh.write(FRAME.pack(b"FR", self._codec, 0, t_ns, len(raw), len(stored),
                                          zlib.crc32(raw)) + stored)
                self.stored_bytes += FRAME.size + len(stored)
        except BaseException as exc:  # noqa: BLE001 - reported by the next sample()
            self._error = exc

    def sample(self, vars: None | str | Iterable[str] = None, **kw: Any) -> np.ndarray:
        """Read every flow (as ``agent.read_all(None, **kw)``), record the reply, and
        return the rows (a view of the ``vars`` columns when given)."""
        if self._error is not None:
            raise RuntimeError(f"the recording writer failed: {self._error}") from self._error
        sock = self._tap
        sock.tap_start()
        try:
            rows = self.agent.read_all(None, **kw)
        finally:
            raw = sock.tap_take(stop=True)
        t_ns = int(rows["timestamp"][0]) if len(rows) else time.time_ns()
        self._queue.put((t_ns, raw))
        self.samples += 1
        self.raw_bytes += len(raw)
        self.flows += len(rows)
        if vars is None:
            return rows
        names = [vars] if isinstance(vars, str) else list(vars)
        keep = [n for n in rows.dtype.names if n in set(
            [f for f, _ in mib.IDENTITY_FIELDS] + ["timestamp", "present", "tcp_info_len"]
            + [mib.lookup(v).name for v in names])]
        return rows[keep]

    def close(self) -> None:
        """Finish writing (waits for the compressor) and close the file."""
        if self._fh.closed:
            return
        self._queue.put(None)
        self._thread.join()
        self._fh.close()
        if self._error is not None:
            raise RuntimeError(f"the recording writer failed: {self._error}") from self._error

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reading ------------------------------------------------------------------------------

class Recording:
    """A recording's header and frames (read lazily, validated as they are read)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        with open(self.path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:8] != MAGIC:
                raise RecordingError("not a web10g recording (no W10GRAW1 magic)", 0)
            (n,) = struct.unpack_from("<I", head, 8)
            raw = fh.read(n)
            if len(raw) != n:
                raise RecordingError("the header is cut", 12)
            try:
                self.header: dict[str, Any] = json.loads(raw)
            except ValueError:
                raise RecordingError("the header is not JSON", 12) from None
        self.data_offset = 12 + n
        self.backend = self.header.get("backend")
        from web10g.backends import REGISTRY

        if not isinstance(self.backend, str) or self.backend not in REGISTRY:
            raise RecordingError(f"unknown backend {self.backend!r} in the header", 12)

    def frames(self) -> Iterator[tuple[int, list[bytes], list[int]]]:
        """(sample time ns, datagrams, their receive times) for each frame; a damaged frame raises
        RecordingError after every frame before it has been yielded."""
        zstd = _zstd()
        with open(self.path, "rb") as fh:
            fh.seek(self.data_offset)
            offset = self.data_offset
            while True:
                head = fh.read(FRAME.size)
                if not head:
                    return
                if len(head) < FRAME.size:
                    raise RecordingError("the file ends inside a frame header (the "
                                         "recording was cut short)", offset)
                magic, codec, _, t_ns, raw_len, stored_len, crc = FRAME.unpack(head)
                if magic != b"FR" or codec > CODEC_ZSTD:
                    raise RecordingError("no frame starts here (damaged)", offset)
                stored = fh.read(stored_len)
                if len(stored) < stored_len:
                    raise RecordingError("the file ends inside a frame (the recording was "
                                         "cut short)", offset)
                try:
                    if codec == CODEC_ZSTD:
                        if zstd is None:
                            raise ImportError("this recording is zstd-compressed: "
                                              "pip install 'web10g[record]'")
                        raw = zstd.ZstdDecompressor().decompress(stored, max_output_size=raw_len)
                    elif codec == CODEC_ZLIB:
                        raw = zlib.decompress(stored)
                    else:
                        raw = stored
                except (zlib.error, ValueError) as exc:
                    raise RecordingError(f"a frame does not decompress ({exc})", offset) from None
                except Exception as exc:  # zstd.ZstdError
                    if isinstance(exc, ImportError):
                        raise
                    raise RecordingError(f"a frame does not decompress ({exc})", offset) from None
                if len(raw) != raw_len or zlib.crc32(raw) != crc:
                    raise RecordingError("a frame's checksum does not match (damaged)", offset)
                yield (t_ns, *_split(raw, offset))
                offset += FRAME.size + stored_len


def __getattr__(name: str) -> Any:
    # ReplayAgent moved to web10g.backends.replay; keep the old import working.
    if name == "ReplayAgent":
        from web10g.backends.replay import ReplayAgent

        return ReplayAgent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
