"""Web10G record files (libestats ``estats_record_*``): write, read, salvage, print.

Format: web10g-record-format.md (flag, u16 H, H bytes of extension = our optional §6
metadata, K records of 44 + 16·N bytes, 2-byte checksum).  One numpy structured dtype per
(layout, byte order) maps a whole record, so I/O is vectorised over records; Python loops
run only over the N variables.  Decisions:

* The checksum copies the C library exactly, including its uint32 accumulator that drops
  carries out of bit 31 (files past ~128 KiB can hit it); an "ideal" ones'-complement sum
  would make such files unreadable by the C tools and vice versa.
* Address family: metadata ``addr_type``, else IPv4 iff bytes 4-15 of both addresses are
  zero (§5 step 5).  ``usec`` is nanoseconds in kernel-5.0 files: a file in which any
  ``usec`` is >= 10^6 can only be one, and is decoded so.
* Masked slots decode as 0 in ``rows()`` (§2.1: their value must not be interpreted);
  ``masked()`` says which they are.  ``format_record`` prints them as ``-``.
"""
from __future__ import annotations

import os
import re
import socket
import stat
import sys
from dataclasses import dataclass
from functools import cache
from typing import Any, BinaryIO, Literal, Union

import numpy as np

from web10g import errors, mib
from web10g._files import create_output, private_if_secret

__all__ = ["LAYOUT_NAMES", "RecordError", "checksum", "RecordWriter", "RecordReader",
           "read_salvage", "format_record"]

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO]
ByteOrder = Literal["little", "big"]

LAYOUT_NAMES = {"head": "kernel-4.18", "middle": "kernel-4.8", "old": "kernel-4.7-and-earlier"}
# Metadata tags we accept: our own, other userland/module tags naming the same layout,
# and the registry's layout names (a hand-written header may well use those).
_TAG_TO_LAYOUT = {**{tag: name for name, tag in LAYOUT_NAMES.items()},
                  "kernel-5.0": "head", "use-with-centos-3.10": "old",
                  **{name: name for name in mib.LAYOUTS}}
_MAGIC = "web10g-record 1"
_HEAD, _SLOT = 44, 16
_NS = 1_000_000_000
_REQUIRED = ("timestamp", "local_addr", "rem_addr", "local_port", "rem_port")
_WEB10G = frozenset(name for lay in mib.LAYOUTS for name in mib.layout(lay).flat_names())


RecordError = errors.RecordError


# ----------------------------------------------------------------------------- checksum

class _Sum:
    """Running §4 sum, so the writer never has to re-read its file (the C writer does)."""

    def __init__(self) -> None:
        self.total, self.length, self._odd = 0, 0, b""

    def update(self, data: bytes) -> None:
        buf = self._odd + bytes(data)
        even = len(buf) & ~1
        self._odd = buf[even:]  # a word split between two writes waits for its low byte
        self.total += int(np.frombuffer(buf, ">u2", count=even // 2).sum(dtype=np.uint64))
        self.length += len(data)

    def value(self) -> int:
        total = self.total + (self._odd[0] << 8 if self._odd else 0)  # zero-pad odd length
        total &= 0xFFFFFFFF  # the C accumulator is a uint32 that wraps silently
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        if self.length & 1:
            total = ((total & 0xFF) << 8) | (total >> 8)
        return ~total & 0xFFFF


def checksum(data: bytes) -> int:
    """§4 steps 1-4 over ``data``; over a whole valid file (trailer included) it gives 0."""
    acc = _Sum()
    acc.update(data)
    return acc.value()


# ------------------------------------------------------------------------------ layouts

def _endian(order: str) -> Literal["<", ">"]:
    if order not in ("little", "big"):
        raise ValueError(f"byteorder must be 'little' or 'big', not {order!r}")
    return "<" if order == "little" else ">"


@cache
def _record_dtype(layout: str, order: str) -> np.dtype:
    """One record on disk.  ``masked`` spans all slots ((N,) of flag + raw value); each
    variable also gets its own field at its slot's value offset with its wire width, so
    numpy reads/writes exactly those bytes in the file's order and leaves the rest zero."""
    e, lay = _endian(order), mib.layout(layout)
    slot = np.dtype([("flag", e + "u8"), ("value", "V8")])
    names = ["sec", "usec", "rem_addr", "local_addr", "rem_port", "local_port", "masked"]
    formats: list[object] = [e + "u4", e + "u4", ("u1", (16,)), ("u1", (16,)),
                             e + "u2", e + "u2", (slot, (lay.total,))]
    offsets = [0, 4, 8, 24, 40, 42, _HEAD]
    for k, var in enumerate(lay.variables()):
        names.append(var.name)
        formats.append(var.dtype.newbyteorder(e))
        offsets.append(_HEAD + _SLOT * k + 8)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "itemsize": _HEAD + _SLOT * lay.total})


@cache
def _rows_dtype(layout: str) -> np.dtype:
    return mib.dtype(mib.layout(layout).variables(), identity=True, timestamp=True)


def _vars_text(lay: mib.Layout) -> str:
    return ",".join(f"{v.name}:{v.wire}" for v in lay.variables())


# ------------------------------------------------------------------------------- header

@dataclass(frozen=True)
class _Header:
    order: ByteOrder
    start: int  # offset of the first record (3 + H)
    metadata: dict[str, str]
    layout: mib.Layout
    cid: int = 0  # metadata cid (0: none)
    family: int | None = None  # from metadata addr_type (None: inferred per record)
    problems: tuple[tuple[int, str], ...] = ()  # what salvage skipped: (offset, message)

    @property
    def rsize(self) -> int:
        return _HEAD + _SLOT * self.layout.total


# Strict forms of the §6 fields: ASCII digits only (str.isdigit() also accepts '²' and
# other Unicode digits, which int() then rejects), and a range the field can hold.
_CID_RE = re.compile(r"[0-9]+", re.ASCII)
_CID_MAX = 2**64 - 1  # the rows' cid column is a u64
_KNOWN = ("layout", "addr_type", "cid", "vars")


def _metadata_lines(ext: bytes) -> list[tuple[int, bytes]] | None:
    """(file offset, line) of the extension's lines after the magic line; None when the
    extension is not §6 metadata (any other extension is ignored, as the C reader does)."""
    lines = ext.split(b"\n")
    if lines[0] != _MAGIC.encode():
        return None
    out, pos = [], 3 + len(lines[0]) + 1
    for raw in lines[1:]:
        if raw:
            out.append((pos, raw))
        pos += len(raw) + 1
    return out


def _check_field(key: str, value: str) -> str | None:
    """What is wrong with a known field's value, or None."""
    if key == "cid":
        if not _CID_RE.fullmatch(value):
            return f"field cid={value[:40]!r} is not a decimal number (ASCII digits 0-9)"
        # the length first: int() of thousands of digits is slow, or refused outright
        if len(value.lstrip("0")) > 20 or int(value) > _CID_MAX:
            return (f"field cid={value[:40]}{'...' if len(value) > 40 else ''} is larger "
                    "than a CID can be (2**64 - 1)")
    elif key == "addr_type" and value not in ("1", "2"):
        return f"field addr_type={value[:40]!r} must be 1 (IPv4) or 2 (IPv6)"
    elif key == "layout" and value not in _TAG_TO_LAYOUT:
        return (f"field layout={value[:40]!r} names no known layout; expected one "
                f"of {', '.join(LAYOUT_NAMES.values())}")
    return None


def _parse_metadata(ext: bytes, problems: list[tuple[int, str]]) -> dict[str, str]:
    """§6 text lines, each known field checked.  A bad line is appended to ``problems``
    (file offset, message naming the line and field) and left out of the result."""
    lines = _metadata_lines(ext)
    if lines is None:
        return {}
    meta, twice = {"web10g-record": "1"}, set()
    for number, (pos, raw) in enumerate(lines, 2):
        where = f"metadata line {number}"
        key, sep, value = raw.decode("utf-8", "replace").partition("=")
        if not sep:
            problems.append((pos, f"{where} {raw[:40]!r} is not key=value"))
            continue
        if key in _KNOWN:
            if key in meta or key in twice:  # which one is right? neither is used
                problems.append((pos, f"{where}: field {key} is given twice"))
                meta.pop(key, None)
                twice.add(key)
                continue
            if (why := _check_field(key, value)) is not None:
                problems.append((pos, f"{where}: {why}"))
                continue
        meta[key] = value
    return meta


def _choose_layout(meta: dict[str, str], given: str | None,
                   problems: list[tuple[int, str]]) -> mib.Layout:
    tag, vars_ = meta.get("layout"), meta.get("vars")
    # The metadata describes the file, so it overrides what the caller assumed.
    name = _TAG_TO_LAYOUT[tag] if tag is not None else None
    if vars_ is not None:
        fits = [n for n in mib.LAYOUTS if _vars_text(mib.layout(n)) == vars_]
        if not fits or (name is not None and name not in fits):
            problems.append((3, "metadata field vars matches "
                                + (f"layout {fits[0]!r}" if fits else "no known layout")
                                + (f", not its layout tag {tag!r}" if tag else "")))
        else:
            name = name or fits[0]
    return mib.layout(name or given or "head")


def _parse_header(data: bytes, layout: str | None, *, salvage: bool = False) -> _Header:
    """The header; a bad metadata field raises RecordError, or with ``salvage`` is
    skipped (the field is then unknown: default layout, cid 0, inferred family) and
    recorded in the header's ``problems``."""
    if len(data) < 3:
        raise RecordError(len(data), f"the file ends after {len(data)} bytes; expected a "
                                     "1-byte order flag and a 2-byte header length")
    if data[0] not in (0, 1):
        raise RecordError(0, f"byte-order flag is {data[0]}; expected 0 (little-endian "
                             "writer) or 1 (big-endian writer)")
    order: ByteOrder = "little" if data[0] == 0 else "big"
    hlen = int.from_bytes(data[1:3], order)
    if 3 + hlen > len(data):
        raise RecordError(1, f"header extension length H={hlen} runs past the end of "
                             f"the {len(data)}-byte file")
    problems: list[tuple[int, str]] = []
    meta = _parse_metadata(data[3:3 + hlen], problems) if hlen else {}
    lay = _choose_layout(meta, layout, problems)
    if problems and not salvage:
        raise RecordError(*problems[0])
    family = None
    if "addr_type" in meta:
        family = mib.FAMILY_INET if meta["addr_type"] == "1" else mib.FAMILY_INET6
    return _Header(order, 3 + hlen, meta, lay, int(meta.get("cid", "0")), family,
                   tuple(problems))


def _structure(data: bytes, hdr: _Header, intact: bool) -> tuple[int, RecordError | None]:
    """Number of whole records, and what is wrong with the file's length, if anything."""
    body, r, n = len(data) - hdr.start, hdr.rsize, hdr.layout.total
    if body >= 2 and (body - 2) % r == 0:
        return (body - 2) // r, None
    k = body // r  # a cut file has no trailer: count whole records from the start
    end = hdr.start + k * r
    if body % r == 0 or body < 2:
        return k, RecordError(end, f"the file ends right after record {k} without the "
                                   "2-byte checksum trailer: its writer never closed it")
    msg = (f"with layout {hdr.layout.name!r} (N={n}, R={r} bytes) the {body - 2} bytes "
           f"between header and checksum are not a whole number of records (K would be "
           f"{(body - 2) / r:.3f}); record {k} starting here has only {body - k * r} bytes")
    if intact:
        fits = [x for x in mib.LAYOUTS
                if body >= 2 and (body - 2) % (_HEAD + _SLOT * mib.layout(x).total) == 0]
        msg += ("; the checksum is valid, so the file is whole but was written with "
                "another layout" + (f": try layout={fits[0]!r}" if fits else ""))
    else:
        msg += "; the file is truncated or damaged (its checksum does not match either)"
    return k, RecordError(end, msg)


# ------------------------------------------------------------------------------ decoding

def _decode(data: bytes, hdr: _Header, k: int) -> tuple[np.ndarray, np.ndarray]:
    lay = hdr.layout
    recs = np.frombuffer(data, _record_dtype(lay.name, hdr.order), count=k, offset=hdr.start)
    out = np.zeros(k, _rows_dtype(lay.name))
    masked = recs["masked"]["flag"] != 0  # any non-zero, so byte order does not matter
    for j, var in enumerate(lay.variables()):
        out[var.name] = np.where(masked[:, j], 0, recs[var.name])
    for name in ("local_addr", "rem_addr", "local_port", "rem_port"):
        out[name] = recs[name]
    usec = recs["usec"].astype(np.int64)
    per_usec = 1 if k and usec.max() >= 1_000_000 else 1000  # kernel-5.0 wrote ns
    out["timestamp"] = recs["sec"].astype(np.int64) * _NS + usec * per_usec
    out["cid"] = hdr.cid
    if hdr.family is not None:
        out["family"] = hdr.family
    else:
        v6 = recs["rem_addr"][:, 4:].any(axis=1) | recs["local_addr"][:, 4:].any(axis=1)
        out["family"] = np.where(v6, mib.FAMILY_INET6, mib.FAMILY_INET)
    if "State" in lay:  # RFC 4898 numbering already, like the estats identity column
        st = out["State"]
        out["state"] = np.where((st > 0) & (st < 256), st, 0)
    return out, masked


#: The most a record file may hold. The format is read whole (its checksum covers every
#: byte), so a reader without a bound is at the mercy of its input: /dev/zero is an
#: endless, well-formed file of empty records, a sparse file claims any size. 1 GiB is
#: over half a million samples of the largest layout, far past what a record file holds
#: in practice (one connection's samples, written one call at a time).
MAX_FILE_BYTES = 1 << 30
_CHUNK = 1 << 20


def _too_big(what: str, limit: int) -> RecordError:
    return RecordError(limit, f"{what} is larger than {limit:,} bytes, the most a record "
                              "file may be here (web10g.record.MAX_FILE_BYTES): it is not a "
                              "record file (a reader in Python may pass max_bytes=None to "
                              "read it whole anyway)")


def _load(source: Source, max_bytes: int | None = MAX_FILE_BYTES) -> bytes:
    """The whole of ``source``, refused past ``max_bytes`` before it is read into memory
    when its size is known (a regular file), as soon as it passes it otherwise (a device,
    a pipe, a stream)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            return _read_bounded(f, os.fspath(source), max_bytes)
    return _read_bounded(source, "the stream", max_bytes)


def _read_bounded(f: BinaryIO, name: Any, max_bytes: int | None) -> bytes:
    if max_bytes is None:
        return f.read()
    try:
        st = os.fstat(f.fileno())
    except (AttributeError, OSError, ValueError):   # io.BytesIO and the like: no fd
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        if st.st_size - f.tell() > max_bytes:
            raise _too_big(f"{name} ({st.st_size:,} bytes)", max_bytes)
        data = f.read(max_bytes + 1)          # +1: a file that grew meanwhile
        if len(data) > max_bytes:
            raise _too_big(str(name), max_bytes)
        return data
    # unknown size: read in chunks and stop one byte past the limit, or as soon as the
    # first byte is no byte-order flag (the header check then says so)
    buf = bytearray()
    while len(buf) <= max_bytes:
        part = f.read(min(_CHUNK, max_bytes + 1 - len(buf)))
        buf += part
        if not part or buf[0] not in (0, 1):
            return bytes(buf)
    raise _too_big(str(name), max_bytes)


class RecordReader:
    """A whole, verified record file (checksum, header, integral K) decoded on demand."""

    def __init__(self, source: Source, *, layout: str | None = None,
                 max_bytes: int | None = MAX_FILE_BYTES) -> None:
        data = _load(source, max_bytes)
        hdr = _parse_header(data, layout)
        intact = checksum(data) == 0
        # Structure first: a cut file is better described by where it ends than by its sum.
        k, problem = _structure(data, hdr, intact)
        if problem is not None:
            raise problem
        if not intact:
            raise RecordError(0, "checksum mismatch: the file is damaged or was not "
                                 "closed by its writer")
        self._data, self._hdr = data, hdr
        self.layout: mib.Layout = hdr.layout
        self.metadata: dict[str, str] = hdr.metadata
        self.byteorder: ByteOrder = hdr.order
        self.count: int = k
        self._decoded: tuple[np.ndarray, np.ndarray] | None = None

    def _get(self) -> tuple[np.ndarray, np.ndarray]:
        if self._decoded is None:
            self._decoded = _decode(self._data, self._hdr, self.count)
        return self._decoded

    def rows(self) -> np.ndarray:
        """Identity + timestamp + one column per layout variable (masked slots are 0)."""
        return self._get()[0]

    def masked(self) -> np.ndarray:
        """(K, N) bool: True where the slot was masked (variable not returned)."""
        return self._get()[1]

    def records_raw(self) -> np.ndarray:
        """The records as stored (read-only view in the file's byte order)."""
        return np.frombuffer(self._data, _record_dtype(self.layout.name, self.byteorder),
                             count=self.count, offset=self._hdr.start)


def read_salvage(source: Source, *, layout: str | None = None,
                 max_bytes: int | None = MAX_FILE_BYTES
                 ) -> tuple[np.ndarray, RecordError | None]:
    """Every complete record before the damage (checksum ignored) and the error, if any.

    Bad metadata fields are skipped (the field is then unknown: the given layout, cid 0,
    the family inferred per record); the error returned is the first problem, and says
    how many there were in all.  A file that is whole (valid checksum) but does not fit
    the layout yields no rows: its records would be decoded with the wrong slot meanings.
    """
    data = _load(source, max_bytes)
    try:
        return RecordReader(data, layout=layout).rows(), None
    except RecordError as exc:
        error = exc
    try:
        hdr = _parse_header(data, layout, salvage=True)
    except RecordError:
        return np.zeros(0, _rows_dtype(layout or "head")), error
    intact = checksum(data) == 0
    k, problem = _structure(data, hdr, intact)
    if problem is not None and intact:
        k = 0
    found = len(hdr.problems) + (problem is not None) + (not intact and problem is None)
    if found > 1:
        error = RecordError(error.offset, f"{_message(error)} ({found} problems in all; "
                                          f"{len(hdr.problems)} bad metadata line(s) "
                                          "skipped)")
    return _decode(data, hdr, k)[0], error


def _message(error: RecordError) -> str:
    return str(error).partition("): ")[2] or str(error)


# ------------------------------------------------------------------------------ writing

class RecordWriter:
    """Append records; :meth:`close` (or leaving the ``with`` block) adds the checksum."""

    def __init__(self, path_or_file: str | os.PathLike[str] | BinaryIO, *,
                 layout: str = "head", metadata: bool = True, cid: int | None = None,
                 family: int | None = None, byteorder: ByteOrder = sys.byteorder) -> None:
        if family not in (None, mib.FAMILY_INET, mib.FAMILY_INET6):
            raise ValueError(f"family must be socket.AF_INET or AF_INET6, not {family!r}")
        self.layout = mib.layout(layout)
        self._dtype = _record_dtype(self.layout.name, byteorder)
        self._vars = [(v, self.layout.position(v)[0]) for v in self.layout.variables()]
        if cid is not None and (isinstance(cid, bool) or not isinstance(cid, (int, np.integer))
                                or not 0 <= int(cid) <= _CID_MAX):
            raise ValueError(f"cid must be an integer 0..2**64-1, not {cid!r}")
        self._cid, self._family = cid, family
        self._owns = isinstance(path_or_file, (str, os.PathLike))
        if isinstance(path_or_file, (str, os.PathLike)):
            # no symlink followed, nothing but a regular file replaced (web10g._files)
            self._f: BinaryIO = create_output(path_or_file, overwrite=True)
        else:
            self._f = path_or_file
        self._sum, self._closed, self.count = _Sum(), False, 0
        self._private = False
        ext = b""
        if metadata:
            lines = [_MAGIC, f"layout={LAYOUT_NAMES[self.layout.name]}"]
            if family is not None:
                lines.append(f"addr_type={1 if family == mib.FAMILY_INET else 2}")
            if cid is not None:
                lines.append(f"cid={int(cid)}")
            lines.append(f"vars={_vars_text(self.layout)}")
            ext = ("\n".join(lines) + "\n").encode()
        self._emit(bytes([0 if byteorder == "little" else 1])
                   + len(ext).to_bytes(2, byteorder) + ext)

    def _emit(self, data: bytes) -> None:
        self._f.write(data)
        self._sum.update(data)

    def write(self, rows: np.ndarray, masked: np.ndarray | None = None) -> None:
        """Append one record per row.  Absent variable columns, tables a ``present``
        column marks as not reported, and True entries of ``masked`` ((K, N), e.g. from
        :meth:`RecordReader.masked`) become masked slots."""
        if self._closed:
            raise ValueError("write to a closed RecordWriter")
        rows = np.atleast_1d(np.asarray(rows))
        names = set(rows.dtype.names or ())
        if missing := [f for f in _REQUIRED if f not in names]:
            raise ValueError(f"rows lack the column(s) {', '.join(missing)} a record needs")
        # Other columns are ignored, but silently dropping a Web10G variable loses data.
        if lost := sorted((names & _WEB10G) - set(self.layout.flat_names())):
            raise ValueError(f"variable(s) {', '.join(lost)} have no slot in the "
                             f"{self.layout.name!r} layout")
        for key, want in (("cid", self._cid), ("family", self._family)):
            if want is not None and key in names and np.any(
                    (rows[key] != 0) & (rows[key] != want)):
                raise ValueError(f"rows have {key} values other than the {want} "
                                 "declared in the file's metadata")
        if self._owns and not self._private:
            # sequence numbers in the rows: the file is closed to other users
            self._private = private_if_secret(self._f, names)
        k, n = len(rows), self.layout.total
        flags = np.zeros((k, n), bool) if masked is None else np.array(masked, bool)
        if flags.shape != (k, n):
            raise ValueError(f"masked must have shape {(k, n)}, not {flags.shape}")
        ts = rows["timestamp"].astype(np.int64)
        if k and (ts.min() < 0 or ts.max() // _NS > 0xFFFFFFFF):
            raise ValueError("timestamp outside the u32 seconds a record can hold")
        rec = np.zeros(k, self._dtype)
        rec["sec"], rec["usec"] = ts // _NS, ts // 1000 % 1_000_000
        for name in ("local_addr", "rem_addr", "local_port", "rem_port"):
            rec[name] = rows[name]
        present = rows["present"].astype(np.int64) if "present" in names else None
        for j, (var, table) in enumerate(self._vars):
            if var.name not in names:
                flags[:, j] = True
                continue
            if present is not None:
                flags[:, j] |= (present >> table) & 1 == 0
            col = rows[var.name]
            if col.dtype.kind not in "iub":
                raise TypeError(f"column {var.name} has dtype {col.dtype}, not integer")
            info = np.iinfo(var.dtype)
            if k and (int(col.min()) < info.min or int(col.max()) > info.max):
                raise ValueError(f"{var.name} has values outside its wire type {var.wire}")
            rec[var.name] = np.where(flags[:, j], 0, col)
        rec["masked"]["flag"] = flags
        self._emit(rec.tobytes())
        self._f.flush()  # what reached the file survives a crash and can be salvaged
        self.count += k

    def close(self) -> None:
        """Append the checksum (only here, as the C writer does) and close owned files."""
        if self._closed:
            return
        self._closed = True
        self._f.write(self._sum.value().to_bytes(2, "big"))
        self._f.flush()
        if self._owns:
            self._f.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # records written before an exception still form a valid file


# ----------------------------------------------------------------------------- printing

def format_record(row: np.void, layout: str | mib.Layout,
                  masked_row: np.ndarray | None = None) -> str:
    """The record_write / record_read text (web10g-tools.md §9), newline-terminated.

    Every variable of the layout is printed, as the C tool does; a masked variable (or a
    column the row lacks) prints ``-`` instead of a number the kernel never reported.
    ``usec`` is always microseconds (the C tool echoes kernel-5.0's nanoseconds).
    """
    lay = mib.layout(layout) if isinstance(layout, str) else layout
    ts = int(row["timestamp"])
    local, rem = bytes(row["local_addr"]), bytes(row["rem_addr"])
    family = int(row["family"]) if "family" in (row.dtype.names or ()) else 0
    if family not in (mib.FAMILY_INET, mib.FAMILY_INET6):
        family = mib.FAMILY_INET6 if any(local[4:] + rem[4:]) else mib.FAMILY_INET
    af, size = ((socket.AF_INET, 4) if family == mib.FAMILY_INET
                else (socket.AF_INET6, 16))
    lines = [f"Timestamp sec: {ts // _NS}, usec: {ts // 1000 % 1_000_000}",
             f"Address: {socket.inet_ntop(af, local[:size])} {int(row['local_port'])} "
             f"{socket.inet_ntop(af, rem[:size])} {int(row['rem_port'])}"]
    names = row.dtype.names or ()
    for j, var in enumerate(lay.variables()):
        gone = var.name not in names or (masked_row is not None and bool(masked_row[j]))
        lines.append(f"{var.name}:  {'-' if gone else int(row[var.name])}")
    return "\n".join(lines) + "\n"
