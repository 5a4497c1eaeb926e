"""High-rate recordings: the kernel's own reply bytes, compressed, with a replay backend.

Sampling every flow many times a second and keeping it all must cost little more than
the sampling: a :class:`Recorder` keeps every datagram the kernel sent for a sample (the
netlink socket's tap: each is received straight into it, no copy), and a background
thread compresses and writes it. Because the recording holds the replies themselves,
replaying runs them through the same C decoders as a live read, so every variable,
filter and tool works offline: ``web10g.open(replay=PATH)``.

File layout (all integers little-endian; docs/recording-format.md):

    b"W10GRAW1", u32 header length, header (UTF-8 JSON: backend, kernel, sysctls, flags,
    decoder inputs such as the estats INIT tables; from format 2 its last field is
    "header_crc32", the CRC-32 of the JSON without that field), then frames:
    b"FR", u8 codec (0 none, 1 zlib, 2 zstd), u8 flags (format 3: bit 0 = the stored
    bytes are the difference from the previous frame's raw bytes, csrc/w10g_delta.h; 0
    before), i64 sample time (ns since the epoch), u32 raw length, u32 stored length,
    u32 CRC-32 (format 4: of the head's 20 bytes before it, then of the raw bytes;
    before, of the raw bytes only), stored bytes.
    Raw bytes = the sample's datagrams, each as u32 length, i64 receive time (ns), bytes.

A damaged or truncated file is read up to the damage; the error names the offset.

Recordings are untrusted input. The header (at most ``MAX_HEADER_BYTES``, 1 MiB) is
checked field by field (:func:`validate_header`) before anything uses it. A frame may
declare at most ``MAX_FRAME_BYTES`` (256 MiB) of raw bytes, and its stored length may not
exceed what its codec can produce from that; both are checked before anything is read or
allocated, and decompression stops at the declared raw length (a frame that inflates
further is damaged). So a replay holds one frame at a time: its stored bytes (at most
the raw length + 0.4 % + 128 KiB), its raw bytes (at most 256 MiB) and a copy of them split into
datagrams, zstd's window (at most max(1 MiB, the raw length rounded up to a power of two,
and never more than 128 MiB)), plus the rows decoded from it (sock_diag: at most one row
per 88 raw bytes); a difference frame adds the previous frame's raw bytes and a buffer
to rebuild its own (at most 256 MiB each). That is at most about 1.4 GiB besides the
rows, whatever the file says. A sample of more than 256 MiB of replies (about 500,000
sock_diag flows at 516 bytes each) cannot be recorded: the Recorder refuses it.
"""
from __future__ import annotations

import errno
import json
import os
import platform
import queue
import re
import socket
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from web10g import __version__, _delta, errors, mib

MAGIC = b"W10GRAW1"
FRAME = struct.Struct("<2sBBqIII")
CODEC_NONE, CODEC_ZLIB, CODEC_ZSTD = 0, 1, 2
#: frame flag (format 3): stored = the difference from the previous frame (_delta)
FLAG_DELTA = 1
_QUEUE_SAMPLES = 32     # samples waiting for the compressor before sample() waits
#: the header format this module writes; 1 (no header_crc32), 2 (no frame flags) and 3
#: (the frame CRC covers the raw bytes only, not the frame head) are still read
FORMAT = 4
FORMATS = (1, 2, 3, 4)
#: the largest header a reader accepts (an estats INIT header is about 5 KB)
MAX_HEADER_BYTES = 1 << 20
#: the largest raw frame (one sample's replies) a reader accepts and a Recorder writes
MAX_FRAME_BYTES = 256 << 20
_ZSTD_MAX_WINDOW = 1 << 27      # zstd's own default decoding limit (level 22's window)
_READ_CHUNK = 1 << 20
_WRITER_POLL_S = 0.1            # how often a waiting put() checks the writer is alive


RecordingError = errors.RecordingError
EndOfRecording = errors.EndOfRecording


def _zstd() -> Any:
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def _frame_crc32() -> Callable[..., int]:
    """CRC-32 (zlib's polynomial) for frames: ISA-L's when the isal package is there.

    A sample of 20,000 flows is ~10 MB of replies; zlib's table-driven crc32 takes
    ~2.4 ms over it, a fifth of what recording a sample costs (see bench_logger), and
    ISA-L's carry-less-multiply folding ~0.2 ms. Same polynomial, same values."""
    try:
        from isal.isal_zlib import crc32
    except ImportError:
        return zlib.crc32
    return crc32  # type: ignore[no-any-return]


_crc32 = _frame_crc32()
_CRC_AT = FRAME.size - 4        # the frame head's CRC field comes last


def _frame_check(head: bytes, raw: Any) -> int:
    """A format-4 frame's CRC: over the head before the CRC field (codec, flags, time,
    lengths), then the raw bytes. Format 3 covered the raw bytes only, so a damaged
    sample time went unnoticed."""
    return _crc32(raw, _crc32(head[:_CRC_AT]))


def _split(raw: bytes | memoryview, offset: int) -> tuple[list[bytes], list[int]]:
    """A frame's datagrams and their receive times."""
    dgrams, times, off = [], [], 0
    while off < len(raw):
        if off + 12 > len(raw):
            raise RecordingError("a datagram header is cut", offset)
        n, t = struct.unpack_from("<Iq", raw, off)
        if off + 12 + n > len(raw):
            raise RecordingError("a datagram runs past its frame", offset)
        dgrams.append(bytes(raw[off + 12:off + 12 + n]))    # raw may be a reused buffer
        times.append(t)
        off += 12 + n
    return dgrams, times


# -- the header ---------------------------------------------------------------------------

_CRC_FIELD = "header_crc32"
_CRC_TAIL = re.compile(rb', "header_crc32": "([0-9a-f]{8})"\}\Z')


def _encode_header(header: dict[str, Any]) -> bytes:
    """The header's JSON with ``header_crc32`` (of the JSON without it) as its last field."""
    body = json.dumps({k: v for k, v in header.items() if k != _CRC_FIELD}).encode()
    if not body.endswith(b"}") or body == b"{}":
        raise ValueError("a recording header must be a non-empty JSON object")
    return body[:-1] + b', "%s": "%08x"}' % (_CRC_FIELD.encode(), zlib.crc32(body))


def _check_header_crc(raw: bytes, header: dict[str, Any]) -> None:
    if _CRC_FIELD not in header and header.get("format") != 2:
        return      # format 1 (written before headers had a checksum), or else one not read
    m = _CRC_TAIL.search(raw)
    if m is None:
        raise RecordingError(f"recording header field {_CRC_FIELD!r}: missing, or not the "
                             "header's last field as written (damaged)", 12)
    if zlib.crc32(raw[:m.start()] + b"}") != int(m.group(1), 16):
        raise RecordingError("the header's checksum does not match (damaged)", 12)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


class _Bad(Exception):
    """What a field checker found wrong (its message completes "expected ...")."""


def _want(ok: bool, expected: str, value: object) -> None:
    if not ok:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise _Bad(f"expected {expected}, got {_type_name(value)} {shown}")


def _int(lo: int, hi: int) -> Callable[[object], None]:
    def check(v: object) -> None:
        _want(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
              f"an integer from {lo} to {hi}", v)
    return check


def _one_of(*choices: object) -> Callable[[object], None]:
    def check(v: object) -> None:
        _want(type(v) in (int, str) and v in choices,
              "one of " + ", ".join(map(repr, choices)), v)
    return check


def _text(max_len: int) -> Callable[[object], None]:
    def check(v: object) -> None:
        _want(isinstance(v, str) and len(v) <= max_len,
              f"a string of at most {max_len} characters", v)
    return check


def _sysctls(v: object) -> None:
    _want(isinstance(v, list) and len(v) == 3 and all(
        isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in v),
        "a list of 3 integers from 0 to 255 (tcp_timestamps, tcp_sack, tcp_ecn)", v)


_TYPE_CODES = range(10)         # the INIT type codes mib.wire_type_for knows


def _tables(v: object) -> None:
    _want(isinstance(v, list) and len(v) == len(mib.TABLES),
          f"a list of {len(mib.TABLES)} lists of [name, type code] pairs (the estats INIT "
          "tables)", v)
    assert isinstance(v, list)
    for t, table in enumerate(v):
        _want(isinstance(table, list) and len(table) <= 1024,
              f"table {t} to be a list of at most 1024 [name, type code] pairs", table)
        for i, pair in enumerate(table):
            _want(isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
                  and 0 < len(pair[0]) <= 64 and type(pair[1]) is int
                  and pair[1] in _TYPE_CODES,
                  f"table {t} entry {i} to be a [name, type code 0-9] pair", pair)
    try:
        mib.identify_layout([[(n, c) for n, c in table] for table in v])
    except errors.LayoutMismatch as exc:
        raise _Bad(str(exc)) from None


def _backend(v: object) -> None:
    from web10g.backends import REGISTRY

    names = [b for b in REGISTRY if b in _BACKEND]
    _want(isinstance(v, str) and v in names, "one of " + ", ".join(map(repr, names)), v)


# field -> (checker, required). Unknown fields are allowed (later versions may add some).
_COMMON: dict[str, tuple[Callable[[object], None], bool]] = {
    "format": (_one_of(*FORMATS), True),
    "backend": (_backend, True),
    "web10g": (_text(100), False),
    "kernel": (_text(256), False),
    "host": (_text(256), False),
    "created_ns": (_int(0, 2**63 - 1), False),
    _CRC_FIELD: (lambda v: _want(isinstance(v, str) and re.fullmatch("[0-9a-f]{8}", v)
                                 is not None, "8 lowercase hex digits", v), False),
}
# what each backend's ReplayDecoder reads (its optional fields have defaults there); a
# recordable backend needs its line here, or its recordings are refused
_BACKEND: dict[str, dict[str, tuple[Callable[[object], None], bool]]] = {
    "sock_diag": {"sysctls": (_sysctls, False), "flags": (_int(0, 0xFFFFFFFF), False)},
    "estats": {"tables": (_tables, True), "family_id": (_int(0, 0xFFFF), False),
               "usec_mult": (_one_of(1, 1000), False)},
    "ebpf": {"sysctls": (_sysctls, False), "hz": (_int(0, 0xFFFFFFFF), False),
             "hooks": (_int(0, 0xFFFFFFFF), False)},
}


def validate_header(header: object) -> dict[str, Any]:
    """``header`` (parsed JSON) if every field a reader uses has the right type and range,
    else RecordingError naming the first bad field. A header that passes gives the
    backend's ReplayDecoder only values it accepts."""
    if not isinstance(header, dict):
        raise RecordingError(f"the header is not a JSON object (it is {_type_name(header)})",
                             12)
    backend = header.get("backend")
    fields = dict(_COMMON)
    if isinstance(backend, str):
        fields.update(_BACKEND.get(backend, {}))
    for name, (check, required) in fields.items():
        if name not in header:
            if required:
                what = f"a {backend} recording" if name in _BACKEND.get(str(backend), {}) \
                    else "every recording"
                raise RecordingError(f"recording header field {name!r} is missing "
                                     f"({what} has one)", 12)
            continue
        try:
            check(header[name])
        except _Bad as exc:
            raise RecordingError(f"recording header field {name!r}: {exc}", 12) from None
    return header


# -- writing ------------------------------------------------------------------------------

class Recorder:
    """Record every sample of ``agent`` (sock_diag or estats) to ``path``.

    ``sample()`` reads all flows (every variable, so replays can serve any selection)
    and returns the rows; compression and writing happen on a background thread (zstd
    when the ``zstandard`` package is installed — ``pip install web10g[record]`` —, else
    zlib); ``level`` is zstd's (default 1: about 17 B per flow for sock_diag samples, a
    thirtieth of the raw replies, for about two thirds of level 3's CPU; higher levels
    save little on these replies). With ``delta`` (the default with compression), each
    sample's messages are stored as differences from the previous sample's
    (csrc/w10g_delta.h): flows that changed little cost a few bytes, and compressing
    takes about a third of the time. When the writer falls behind by more than a few
    samples, ``sample()`` waits: nothing is dropped. When the writer fails (a full
    disk), the next ``sample()`` and ``close()`` raise its error as an OSError saying
    what failed; ``close()`` always returns and closes the file.
    """

    def __init__(self, path: str | os.PathLike, agent: Any, *, codec: str = "auto",
                 level: int = 1, delta: bool = True) -> None:
        if not agent.capabilities.recordable:
            raise errors.NotSupported(f"the {agent.backend} backend cannot be recorded "
                                      "(it has no kernel replies to keep)")
        if agent.backend not in _BACKEND:       # a reader would refuse the file
            raise errors.NotSupported(f"recordings of the {agent.backend} backend cannot be "
                                      "replayed yet: recording._BACKEND lists no header "
                                      "fields for it")
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
        # differences help only a compressor (uncompressed, they are as long)
        self._delta = bool(delta) and self._codec != CODEC_NONE
        self._prev: Any = None              # the last sample's raw bytes (the writer's)
        self._scratch = bytearray()
        self.delta_frames = 0
        self.agent = agent
        self.path = os.fspath(path)
        self.samples = 0
        self.raw_bytes = 0
        self.stored_bytes = 0
        self.flows = 0
        from web10g._files import create_output, private_if_secret

        # no symlink followed, nothing but a regular file replaced (web10g._files)
        self._fh = create_output(path, overwrite=True)  # closed in close()
        # every variable of the backend is in the replies: sequence numbers too (estats,
        # ebpf) close the file to other users
        backend = getattr(agent, "backend", None)
        private_if_secret(self._fh, [v.name for v in mib.variables(backend=backend)]
                          if backend in mib.BACKENDS else mib.SEQUENCE_VARS)
        header = _encode_header(self._header(agent, state))
        self._fh.write(MAGIC + struct.pack("<I", len(header)) + header)
        self._queue: queue.Queue[tuple[int, Any] | None] = queue.Queue(_QUEUE_SAMPLES)
        self._error: BaseException | None = None
        self._reported = False
        # the tap hands each sample's memory over; given back once written, it is
        # reused (a new 10 MB buffer per sample costs ~2,500 page faults)
        self._recycle: Callable[[Any], None] | None = getattr(self._tap, "tap_recycle", None)
        self._thread = threading.Thread(target=self._writer, name="web10g-recorder",
                                        daemon=True)
        self._thread.start()

    @staticmethod
    def _header(agent: Any, state: dict[str, Any]) -> dict[str, Any]:
        h: dict[str, Any] = {
            "format": FORMAT, "web10g": __version__, "backend": agent.backend,
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
                flags, data = 0, raw
                if self._delta:
                    if len(self._scratch) < len(raw):
                        self._scratch = bytearray(len(raw) + (len(raw) >> 3))
                    if _delta.encode(self._prev, raw, self._scratch) > 0:
                        flags, data = FLAG_DELTA, memoryview(self._scratch)[:len(raw)]
                        self.delta_frames += 1
                stored = self._compress(data)
                del data
                head = FRAME.pack(b"FR", self._codec, flags, t_ns, len(raw), len(stored), 0)
                crc = _frame_check(head, raw)
                self._fh.write(head[:_CRC_AT] + struct.pack("<I", crc) + stored)
                self.stored_bytes += FRAME.size + len(stored)
                if self._delta:                 # the next frame is stored against it
                    raw, self._prev = self._prev, raw
                if raw is not None and self._recycle is not None:
                    self._recycle(raw)          # its memory takes a later sample
        except BaseException as exc:  # noqa: BLE001 - reported by sample() and close()
            self._error = exc

    def _failed(self, call: str) -> OSError:
        """The writer's error, as the exception ``call`` raises."""
        exc = self._error
        assert exc is not None
        self._reported = True
        err = getattr(exc, "errno", None)
        what = f"{call}: writing the recording {self.path}"
        hint = ("the samples not yet written are lost (a replay reads the frames written "
                "before); ")
        hint += ("free space on its filesystem or record to another one" if
                 err in (errno.ENOSPC, errno.EDQUOT) else "fix the cause above and record again")
        if not isinstance(err, int) or err <= 0:
            err = errno.EIO
        return errors.from_errno(err, what, detail=str(exc) or type(exc).__name__,
                                 hint=hint)  # type: ignore[return-value]

    def _put(self, item: tuple[int, Any] | None, call: str) -> None:
        """Queue ``item`` for the writer, waiting while the queue is full but never
        longer than the writer lives."""
        while True:
            if self._error is not None:
                raise self._failed(call) from self._error
            try:
                self._queue.put(item, timeout=_WRITER_POLL_S)
                return
            except queue.Full:
                pass
            if not self._thread.is_alive() and self._error is None:
                # cannot happen (it ends only on None or an error); never wait on it
                self._error = OSError(errno.EIO, "the writer thread ended")

    def sample(self, vars: None | str | Iterable[str] = None, **kw: Any) -> np.ndarray:
        """Read every flow (as ``agent.read_all(None, **kw)``), record the reply, and
        return the rows (a view of the ``vars`` columns when given)."""
        if self._error is not None:
            raise self._failed("Recorder.sample()") from self._error
        if self._fh.closed:
            raise ValueError(f"Recorder.sample(): the recording {self.path} is closed")
        sock = self._tap
        sock.tap_start()
        try:
            rows = self.agent.read_all(None, **kw)
        finally:
            raw = sock.tap_take(stop=True)
        if len(raw) > MAX_FRAME_BYTES:
            raise errors.NotSupported(
                f"Recorder.sample(): this sample's replies are {len(raw)} bytes, more than "
                f"the {MAX_FRAME_BYTES} one frame may hold (a replay would reject it): "
                "record fewer flows (filter=, states=)")
        t_ns = int(rows["timestamp"][0]) if len(rows) else time.time_ns()
        self._put((t_ns, raw), "Recorder.sample()")
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
        """Finish writing (waits for the compressor) and close the file; raises the
        writer's error (an OSError) if it failed, after closing."""
        if self._fh.closed:
            return
        try:
            if self._error is None:
                try:
                    self._put(None, "Recorder.close()")
                except OSError:
                    pass                        # raised below, after the file is closed
            self._thread.join()
        finally:
            try:
                self._fh.close()
            except OSError as exc:      # flushing the last bytes
                if self._error is None:
                    self._error = exc
        if self._error is not None:
            raise self._failed("Recorder.close()") from self._error

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        reported = self._reported
        try:
            self.close()
        except OSError:
            # the writer's error was raised in the with block already: don't chain it again
            if exc_type is None or not reported:
                raise


# -- reading ------------------------------------------------------------------------------

def _stored_bound(codec: int, raw_len: int) -> int:
    """The most bytes ``codec`` stores for ``raw_len`` raw bytes (zlib's compressBound;
    ZSTD_compressBound + room for a frame header and checksum), with some slack."""
    if codec == CODEC_NONE:
        return raw_len
    if codec == CODEC_ZLIB:
        return raw_len + (raw_len >> 12) + (raw_len >> 14) + (raw_len >> 25) + 64
    return raw_len + (raw_len >> 8) + (128 << 10) + 64


def _inflate(codec: int, stored: bytes, raw_len: int, zstd: Any) -> bytes:
    """Decompress at most ``raw_len + 1`` bytes (one more shows a frame that is longer
    than it says). Raises zlib.error / zstd.ZstdError / ImportError."""
    if codec == CODEC_NONE:
        return stored
    if codec == CODEC_ZLIB:
        return zlib.decompressobj().decompress(stored, raw_len + 1)
    if zstd is None:
        raise ImportError("this recording is zstd-compressed: pip install 'web10g[record]'")
    # our writer compresses whole samples, so its window is at most the raw length
    # rounded up to a power of two; a frame asking for more is refused, not allocated
    window = min(_ZSTD_MAX_WINDOW, max(1 << 20, 1 << max(raw_len - 1, 1).bit_length()))
    dctx = zstd.ZstdDecompressor(max_window_size=window)
    parts, got = [], 0
    with dctx.stream_reader(stored) as reader:
        while got <= raw_len:
            part = reader.read(min(_READ_CHUNK, raw_len + 1 - got))
            if not part:
                break
            parts.append(part)
            got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


class Recording:
    """A recording's header and frames (read lazily, validated as they are read)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        # A recording is opened again for its frames (and by each replay): a FIFO would
        # block that open, or this one (O_NONBLOCK: no wait for a writer), a device never
        # end. Only a regular file will do.
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RecordingError(f"{self.path} is not a regular file (a pipe or a device): "
                                 "a recording is read from its start more than once; "
                                 "copy it to a file first", 0)
        with os.fdopen(fd, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:8] != MAGIC:
                raise RecordingError("not a web10g recording (no W10GRAW1 magic)", 0)
            (n,) = struct.unpack_from("<I", head, 8)
            if n > MAX_HEADER_BYTES:
                raise RecordingError(f"the header claims {n} bytes, more than the "
                                     f"{MAX_HEADER_BYTES} a recording's header may have "
                                     "(damaged)", 8)
            raw = fh.read(n)
            if len(raw) != n:
                raise RecordingError("the header is cut", 12)
            try:
                header = json.loads(raw)
            except (ValueError, RecursionError):
                raise RecordingError("the header is not JSON", 12) from None
        if isinstance(header, dict):
            _check_header_crc(raw, header)
        self.header: dict[str, Any] = validate_header(header)
        self.data_offset = 12 + n
        self.backend: str = self.header["backend"]
        #: the file offset of the frame frames() yielded last
        self.frame_offset = self.data_offset

    def frames(self) -> Iterator[tuple[int, list[bytes], list[int]]]:
        """(sample time ns, datagrams, their receive times) for each frame; a damaged frame raises
        RecordingError after every frame before it has been yielded."""
        zstd = _zstd()
        allowed = FLAG_DELTA if self.header["format"] >= 3 else 0
        head_checked = self.header["format"] >= 4
        prev: Any = None                        # the last frame's raw bytes
        bufs, k = [bytearray(), bytearray()], 0
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
                magic, codec, flags, t_ns, raw_len, stored_len, crc = FRAME.unpack(head)
                if magic != b"FR" or codec > CODEC_ZSTD or flags & ~allowed:
                    raise RecordingError("no frame starts here (damaged)", offset)
                # plausibility first: nothing is read or allocated for an impossible frame
                if raw_len > MAX_FRAME_BYTES:
                    raise RecordingError(f"a frame claims {raw_len} raw bytes, more than the "
                                         f"{MAX_FRAME_BYTES} a frame may hold (damaged)",
                                         offset)
                if stored_len > _stored_bound(codec, raw_len) or (
                        codec == CODEC_NONE and stored_len != raw_len):
                    raise RecordingError(f"a frame stores {stored_len} bytes for {raw_len} "
                                         "raw bytes, more than its codec can (damaged)",
                                         offset)
                stored = fh.read(stored_len)
                if len(stored) < stored_len:
                    raise RecordingError("the file ends inside a frame (the recording was "
                                         "cut short)", offset)
                try:
                    raw: bytes | memoryview = _inflate(codec, stored, raw_len, zstd)
                except ImportError:
                    raise
                except Exception as exc:  # zlib.error, zstd.ZstdError, ValueError
                    raise RecordingError(f"a frame does not decompress ({exc})", offset) from None
                del stored
                if len(raw) > raw_len:
                    raise RecordingError(f"a frame inflates past its declared {raw_len} raw "
                                         "bytes (damaged)", offset)
                if flags & FLAG_DELTA and len(raw) == raw_len:
                    # rebuilt in the buffer the frame before last used (prev is in the other)
                    if prev is None:
                        raise RecordingError("a difference frame has no frame before it "
                                             "(damaged)", offset)
                    k = 1 - k
                    if len(bufs[k]) < raw_len:
                        bufs[k] = bytearray(raw_len)
                    if not _delta.decode(prev, raw, bufs[k]):
                        raise RecordingError("a difference frame does not fit the frame "
                                             "before it (damaged)", offset)
                    raw = memoryview(bufs[k])[:raw_len]
                if len(raw) != raw_len or (_frame_check(head, raw) if head_checked
                                           else _crc32(raw)) != crc:
                    raise RecordingError("a frame's checksum does not match (damaged)", offset)
                split = _split(raw, offset)
                prev = raw if allowed else None     # the next frame may be stored against it
                del raw
                self.frame_offset = offset
                yield (t_ns, *split)
                offset += FRAME.size + stored_len


def __getattr__(name: str) -> Any:
    # ReplayAgent moved to web10g.backends.replay; keep the old import working.
    if name == "ReplayAgent":
        from web10g.backends.replay import ReplayAgent

        return ReplayAgent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
