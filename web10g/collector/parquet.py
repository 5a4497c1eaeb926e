"""The Parquet dataset: rows -> Arrow tables -> hive-partitioned, atomically renamed files.

Layout (the same for ``web10g serve --parquet DIR`` and ``web10g convert IN DIR``)::

    DIR/host=H/date=YYYY-MM-DD/hour=HH/part-<start>-<writer>-<seq>.parquet

* one file per rotation window (time, size, the UTC hour, SIGHUP), written under a hidden
  temporary name (``.part-....parquet.tmp``: every engine skips names starting with '.')
  and renamed when complete, after an fsync: a reader never sees a partial file;
* zstd, row groups of up to ``row_group_rows`` rows (many samples each, not one per
  sample), flow-major inside a row group (each flow's rows together, in time order) so
  that an idle flow's values form runs: in the kernel's order of flows while the samples
  hold the same flows, else sorted by (local_port, cid, timestamp) (see ``_Columns``);
* ``timestamp`` is ``timestamp[ns, UTC]``; ``cid`` uint64; addresses are **text**
  ("192.0.2.7", "2001:db8::1"), dictionary-encoded, so SQL engines compare and group them
  as strings with no UDF (a fixed 16-byte binary would save little after encoding and
  compression, and every engine would need a conversion to show it); ``state`` and
  ``family`` are text too (RFC 4898 state names, "inet"/"inet6");
* a value a row did not report (``web10g.rows.available`` is False) is null, never 0;
* the schema metadata key ``web10g`` holds JSON: package version, backend, host, the
  registry's units and descriptions by column; each field's metadata has its units;
* ``final`` is true for rows from end-of-flow notifications (the flow's last counters,
  taken when it closed), false for rows of a periodic sample.

``host``, ``date`` and ``hour`` are hive partition keys (directories), not columns inside
the files.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import functools
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from dataclasses import field as _field
from typing import Any

import numpy as np

from web10g import __version__, mib
from web10g import rows as _rows

#: columns of the identity block as written (addresses as text, the rest as is)
ID_COLUMNS = ("cid", "family", "state", "local_addr", "local_port", "rem_addr", "rem_port",
              "uid", "inode")
_DROP = {"present", "tcp_info_len"}           # turned into nulls
_FAMILY_NAMES = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}
TMP_PREFIX = ".part-"
TMP_SUFFIX = ".parquet.tmp"
_TMP_RE = re.compile(r"^\.part-.*-p(\d+)-\d+\.parquet\.tmp$")
_HOST_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def _pa() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ImportError("the Parquet dataset needs pyarrow: "
                          "pip install 'web10g[parquet]'") from None
    return pyarrow


def check_host(host: str) -> str:
    """A host name usable as a partition directory (host=H)."""
    if not host or not _HOST_RE.match(host):
        raise ValueError(f"host {host!r} cannot name a partition: use letters, digits, "
                         "'.', '_' and '-'")
    return host


def default_host() -> str:
    name = socket.gethostname().split(".")[0] or "localhost"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


# -- rows -> arrow ---------------------------------------------------------------------

def _dictionary(pa: Any, codes: np.ndarray, values: list[str]) -> Any:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32, copy=False)),
                                          pa.array(values, pa.string()))


def _fixed_binary(pa: Any, raw: np.ndarray, width: int) -> Any:
    """An (n, width) uint8 array as an Arrow fixed-size binary array (no copy)."""
    raw = np.ascontiguousarray(raw)
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(raw),
                                                [None, pa.py_buffer(raw)])


def _run_starts(*cols: np.ndarray) -> np.ndarray:
    """Rows where any of ``cols`` differs from the row before (row 0 included). Rows are
    sorted by (local_port, cid, time), so a flow's identity repeats row after row: the
    distinct values are found among these rows only, not among every row."""
    n = len(cols[0])
    change = np.zeros(n, bool)
    if not n:
        return np.flatnonzero(change)
    change[0] = True
    diff = np.empty(n - 1, bool)
    for c in cols:
        c = np.ascontiguousarray(c)
        w = c.dtype.itemsize * (int(np.prod(c.shape[1:])) if c.ndim > 1 else 1)
        v: np.ndarray
        if w % 8 == 0:
            v = c.view(np.uint8).reshape(n, w).view(np.uint64)
        elif w in (1, 2, 4):
            v = c.view(np.dtype(f"u{w}")).reshape(n, 1)
        else:
            v = c.view(np.uint8).reshape(n, w)
        for i in range(v.shape[1]):           # word by word: no (n, words) temporaries
            np.not_equal(v[1:, i], v[:-1, i], out=diff)
            change[1:] |= diff
    return np.flatnonzero(change)


def _run_indices(enc: Any, starts: np.ndarray, n: int) -> np.ndarray:
    """The dictionary indices of the runs' first rows, repeated over each run."""
    lengths = np.diff(np.append(starts, n))
    idx = enc.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    return np.repeat(idx, lengths)


def _addresses(pa: Any, fam: np.ndarray, addr: np.ndarray) -> Any:
    """Addresses as a dictionary array: each distinct (family, address) is found by
    Arrow's hash kernel (among the rows where the address changes) and formatted once."""
    from web10g._netlink import format_addresses

    n = len(fam)
    starts = _run_starts(fam, addr)
    key = np.empty((len(starts), 17), np.uint8)
    key[:, 0] = fam[starts]
    key[:, 1:] = addr[starts]
    enc = _fixed_binary(pa, key, 17).dictionary_encode()
    uniq = np.frombuffer(b"".join(enc.dictionary.to_pylist()), np.uint8).reshape(-1, 17)
    text = format_addresses(np.ascontiguousarray(uniq[:, 1:]), np.ascontiguousarray(uniq[:, 0]))
    values = [t.decode() if isinstance(t, bytes) else str(t) for t in text]
    return pa.DictionaryArray.from_arrays(pa.array(_run_indices(enc, starts, n), pa.int32()),
                                          pa.array(values, pa.string()))


def _text(pa: Any, col: np.ndarray, mask: np.ndarray | None) -> Any:
    """A fixed-width bytes column (cc_algorithm, ...) as dictionary-encoded text."""
    w = col.dtype.itemsize
    n = len(col)
    raw = np.ascontiguousarray(col).view(np.uint8).reshape(n, w)
    starts = _run_starts(raw)
    enc = _fixed_binary(pa, raw[starts], w).dictionary_encode()
    values = [b.rstrip(b"\0").decode("ascii", "replace") for b in enc.dictionary.to_pylist()]
    idx = pa.array(_run_indices(enc, starts, n), type=pa.int32(), mask=mask)
    return pa.DictionaryArray.from_arrays(idx, pa.array(values, pa.string()))


def _state_names() -> list[str]:
    return [""] + [mib.STATE_NAMES.get(k, str(k)) for k in range(1, 16)]


def _units(name: str) -> tuple[str, str]:
    try:
        v = mib.lookup(name)
    except LookupError:
        return "", ""
    return v.units or "", v.description or ""


_ID_DOC = {
    "timestamp": ("nanoseconds since the epoch, UTC", "When the kernel's reply was read."),
    "cid": ("", "Connection id (the socket cookie on sock_diag, the Web10G CID on estats)."),
    "family": ("", "Address family: inet or inet6."),
    "state": ("", "RFC 4898 TCP state name (tcpEStatsStackState)."),
    "local_addr": ("", "Local address as text."),
    "local_port": ("", "Local port."),
    "rem_addr": ("", "Remote address as text."),
    "rem_port": ("", "Remote port."),
    "uid": ("", "Owner uid of the socket."),
    "inode": ("", "Socket inode (0 when the kernel gives none)."),
    "final": ("", "True for a flow's last values, taken from its end-of-flow notification."),
}


def schema_for(dtype: np.dtype, *, backend: str = "", host: str = "",
               extra: dict[str, Any] | None = None) -> Any:
    """The Arrow schema of a rows dtype as the dataset stores it."""
    pa = _pa()
    dict_str = pa.dictionary(pa.int32(), pa.string())
    fields = [pa.field("timestamp", pa.timestamp("ns", tz="UTC"), nullable=False)]
    types = {"cid": pa.uint64(), "family": dict_str, "state": dict_str,
             "local_addr": dict_str, "rem_addr": dict_str, "local_port": pa.uint16(),
             "rem_port": pa.uint16(), "uid": pa.uint32(), "inode": pa.uint32()}
    for name in ID_COLUMNS:
        fields.append(pa.field(name, types[name], nullable=False))
    fields.append(pa.field("final", pa.bool_(), nullable=False))
    units: dict[str, str] = {}
    docs: dict[str, str] = {}
    for name in dtype.names:
        if name in ID_COLUMNS or name in _DROP or name == "timestamp":
            continue
        sub = dtype.fields[name][0]
        u, d = _units(name)
        units[name], docs[name] = u, d
        if sub.kind == "S":
            t = dict_str    # cc_algorithm: a handful of names, like state and family
        else:
            t = pa.from_numpy_dtype(sub)
        fields.append(pa.field(name, t, nullable=True,
                               metadata={"units": u, "description": d}))
    for name, (u, d) in _ID_DOC.items():
        units.setdefault(name, u)
        docs.setdefault(name, d)
    for i, f in enumerate(fields):
        if f.name in _ID_DOC and f.metadata is None:
            u, d = _ID_DOC[f.name]
            fields[i] = f.with_metadata({"units": u, "description": d})
    meta = {"web10g_version": __version__, "backend": backend, "host": host,
            "layout": "host=H/date=YYYY-MM-DD/hour=HH (UTC)", "addresses": "text",
            "units": units, "descriptions": docs}
    meta.update(extra or {})
    return pa.schema(fields, metadata={"web10g": json.dumps(meta)})


def to_table(rows: np.ndarray, final: np.ndarray | None, schema: Any,
             order: np.ndarray | None = None) -> Any:
    """Rows (one dtype, concatenated samples) as an Arrow table of ``schema``, in
    ``order`` when given (each column is gathered once, straight into place)."""
    n = len(rows)
    if order is not None:
        # permute whole rows once (one contiguous copy per row), then read columns
        # sequentially: far fewer cache misses than a random gather per column
        if final is not None:
            final = final[order]
        rows = (np.ascontiguousarray(rows).view(np.uint8).reshape(n, -1)
                .take(order, axis=0).view(rows.dtype).reshape(n))

    def get(name: str) -> np.ndarray:
        return np.ascontiguousarray(rows[name])

    return _table(get, n, final, _rows.presence_of(rows), rows.dtype.names or (), schema)


def _table(get: Callable[[str], np.ndarray], n: int, final: np.ndarray | None,
           presence: _rows.Presence | None, names: Iterable[str], schema: Any) -> Any:
    """The Arrow table of ``schema`` from columns: ``get(name)`` is the column of a rows
    field (contiguous, in the table's order)."""
    pa = _pa()
    have = set(names)
    cols: list[Any] = []
    present: np.ndarray | None
    if presence is not None and presence.stats_bits:
        present = get("present")
        reported = (present & presence.stats_bits) != 0
    else:
        present = get("present") if presence is not None else None
        reported = np.ones(n, bool)
    all_reported = bool(reported.all())
    info_len = get("tcp_info_len") if (presence is not None and presence.min_len
                                      and "tcp_info_len" in have) else None
    masks: dict[Any, np.ndarray | None] = {}

    def null_mask(name: str) -> np.ndarray | None:
        """~(available & reported), computed once per distinct presence rule (the same
        rule as web10g.rows.available, on columns gathered once)."""
        if presence is None:
            return None
        bit, need = presence.bits.get(name), presence.min_len.get(name)
        key = (bit, need)
        if key not in masks:
            ok = reported.copy()
            if bit:
                ok &= (present & bit) == bit
            if need and info_len is not None:
                ok &= info_len >= need
            masks[key] = None if (all_reported and ok.all()) else ~ok
        return masks[key]

    for field in schema:
        name = field.name
        if name == "timestamp":
            cols.append(pa.array(get("timestamp"), type=field.type))
        elif name in ("local_addr", "rem_addr"):
            cols.append(_addresses(pa, get("family"), get(name)))
        elif name == "state":
            names_ = _state_names()
            codes = np.minimum(get("state"), 15).astype(np.int32)
            cols.append(_dictionary(pa, codes, names_))
        elif name == "family":
            codes = (get("family") == socket.AF_INET6).astype(np.int32)
            cols.append(_dictionary(pa, codes, ["inet", "inet6"]))
        elif name == "final":
            cols.append(pa.array(np.zeros(n, bool) if final is None else final))
        elif name in ID_COLUMNS:
            if name in have:
                cols.append(pa.array(get(name), type=field.type))
            else:                                   # classic record files: no uid/inode
                cols.append(pa.array(np.zeros(n, field.type.to_pandas_dtype()),
                                     type=field.type))
        else:
            if name not in have:
                cols.append(pa.nulls(n, field.type))
                continue
            col = get(name)
            if col.dtype.kind == "S":
                text = _text(pa, col, null_mask(name))
                cols.append(text if pa.types.is_dictionary(field.type)
                            else text.cast(field.type))
                continue
            cols.append(pa.array(col, type=field.type, mask=null_mask(name)))
    return pa.Table.from_arrays(cols, schema=schema)


def _sort_key(local_port: np.ndarray, cid: np.ndarray) -> np.ndarray:
    return (local_port.astype(np.uint64) << np.uint64(48)) | (
        cid.astype(np.uint64) & np.uint64((1 << 48) - 1))


def sort_order(rows: np.ndarray) -> np.ndarray:
    """(local_port, cid, timestamp): each flow's samples together (runs for RLE), port
    ranges tight per row group (statistics prune port filters)."""
    # one 64-bit key (port in the top 16 bits, the cid's low 48 below) and a stable
    # sort: rows were appended in time order, so each flow's stay in time order
    return np.argsort(_sort_key(rows["local_port"], rows["cid"]), kind="stable")


# -- the writer -------------------------------------------------------------------------


# Column statistics are kept where readers filter and a row group's min/max can exclude
# it: the time, and the flow's numeric identity (cookies grow, so old row groups end
# below a new flow's cid; web10g.dataset pushes port filters down). On the counters,
# whose min/max over a million-row group almost never excludes a group, they cost about
# a fifth of the encoding time (measured: 3.3 against 4.1 ms per 20,000-row sample, zstd
# level 1 against 3 included, for the same size). The text columns (addresses, state,
# family) are left out too: every row group holds every flow, so their min/max span
# everything, and computing them on strings cost another quarter of the encoding
# (2.5 against 1.9 ms per sample, benchmarks/bench_collector.py's 27 variables).
STATS_COLUMNS = ("timestamp", "final", "cid", "local_port", "rem_port", "uid", "inode")


def writer_options(schema: Any, compression_level: int) -> dict[str, Any]:
    """The ParquetWriter options of every file of the layout (collector and convert)."""
    opts = {"compression": "zstd", "compression_level": compression_level,
            "use_dictionary": _dictionary_columns(schema),
            "write_statistics": [n for n in STATS_COLUMNS if n in schema.names],
            "data_page_size": 1 << 20,
            # values handed to the column writer at a time (1,024 by default): every
            # batch pays the definition levels' encoding and the page-size checks again;
            # a million at once wrote a 20,000-flow sample's rows in 1.7 ms, not 2.0
            "write_batch_size": 1 << 20}
    if _has_max_rows_per_page():
        # Arrow ends a page every 20,000 rows by default, whatever its size, and makes a
        # new zstd context for every page: in a million-row group that is ~50 contexts
        # per column, which cost more than the compression itself. Pages end at
        # data_page_size instead (where this pyarrow has the option).
        opts["max_rows_per_page"] = 1 << 20
    return opts


@functools.cache
def _has_max_rows_per_page() -> bool:
    import inspect

    return "max_rows_per_page" in inspect.signature(_pa().parquet.ParquetWriter).parameters


def warm_up() -> None:
    """Import what pyarrow imports on its first conversion of a numpy array (its
    pandas shim: about half a second) now, before sampling starts, rather than in the
    first row group's flush, where it would delay the writer and count as sampling
    time."""
    pa = _pa()
    pa.array(np.zeros(1, np.int64))


def _dictionary_columns(schema: Any) -> list[str]:
    # Dictionary pages pay off for the text columns (addresses, state, family, cc name);
    # on counters they cost encoding time and, measured, about a third more bytes.
    import pyarrow as pa

    return [f.name for f in schema
            if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
            or pa.types.is_dictionary(f.type)]

class _Columns:
    """The samples of the next row group, buffered column by column.

    Each sample is copied out of its rows in one pass (``web10g._collect.gather``, which
    reads every field of a row while the row is in cache) into columns allocated once and
    reused row group after row group: no copy of the rows is kept, no page is faulted in
    per sample. The row group is written flow-major (each flow's samples together: runs
    that compress to almost nothing for idle flows), in one of two orders:

    * while every sample holds the first one's flows in the kernel's order (the usual
      case: the dump's order is its hash tables', which only changes where flows come or
      go), samples are copied as they are -- sequential reads of the sampler's ring -- and
      the row group is their transpose, in the kernel's order of flows;
    * otherwise each sample is put in (local_port, cid) order as it is copied (the
      permutation is the previous sample's when the keys are the same), so the row
      group's order -- (local_port, cid, time), a merge of sorted samples -- is gathered
      per column from a few sequential streams. A sample that breaks the first order
      switches the row group to this one (its earlier samples are merged in too).

    The permuted copy reads the ring's rows in random order, which costs 0.7 ms more per
    20,000-row sample than the sequential one once the ring has left the cache.
    """

    def __init__(self, dtype: np.dtype) -> None:
        fields: Any = dtype.fields or {}
        self.names = list(dtype.names or ())
        self.spans = [(fields[n][1], fields[n][0].itemsize) for n in self.names]
        self._shapes = [(fields[n][0].base, fields[n][0].shape) for n in self.names]
        self.capacity = 0
        self.cols: list[np.ndarray] = []
        self.keys = np.empty(0, np.uint64)
        self.final = np.empty(0, bool)
        # the row group in its order (what the table's arrays are views of)
        self._sorted: dict[str, np.ndarray] = {}
        self.n = 0
        self.lengths: list[int] = []
        self.same = False                # every sample has the first one's (unique) keys
        # the first sample's keys in the kernel's order, while every sample since has
        # them (samples kept as read), else None (samples kept sorted)
        self.raw: np.ndarray | None = None
        # per kind of sample (periodic, final): (keys as read, their sort, sorted keys)
        self._perm: dict[bool, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _grow(self, need: int) -> None:
        cap = max(need, 2 * self.capacity)
        new = [np.empty((cap,) + shape, base) for base, shape in self._shapes]
        for a, b in zip(new, self.cols):
            a[:self.n] = b[:self.n]
        keys, final = np.empty(cap, np.uint64), np.empty(cap, bool)
        keys[:self.n], final[:self.n] = self.keys[:self.n], self.final[:self.n]
        self.cols, self.keys, self.final, self.capacity = new, keys, final, cap

    def reserve(self, rows: int, prefault: bool = False) -> None:
        """Room for ``rows`` rows; ``prefault``: the buffers of the row group's order
        too, and every page of them touched now (as the sampler does with its ring)."""
        if self.capacity < rows:
            self._grow(rows)
        if prefault:
            for name, col in zip(self.names + ["final"], self.cols + [self.final]):
                out = self._sorted.get(name)
                if out is None or len(out) < len(col):
                    out = self._sorted[name] = np.empty_like(col)
                for a in (col, out):
                    a.reshape(-1).view(np.uint8)[::4096] = 0
            self.keys.view(np.uint8)[::4096] = 0

    def mark(self) -> tuple[int, int, bool, np.ndarray | None]:
        return self.n, len(self.lengths), self.same, self.raw

    def reset(self, mark: tuple[int, int, bool, np.ndarray | None] = (0, 0, False, None)
              ) -> None:
        self.n, k, self.same, self.raw = mark
        del self.lengths[k:]

    def append(self, rows: np.ndarray, final: bool) -> None:
        from web10g._collect import gather

        n = len(rows)
        if self.n + n > self.capacity:
            self._grow(self.n + n)
        key = _sort_key(rows["local_port"], rows["cid"])
        a = self.n
        if self.raw is not None and not final and np.array_equal(self.raw, key):
            # the first sample's flows in its order: copied as read
            gather(rows, self.spans, self.cols, a, None, stream=True)
            self.keys[a:a + n] = key
            self.final[a:a + n] = False
            self.lengths.append(n)
            self.n += n
            return
        c = self._perm.get(final)
        hit = c is not None and np.array_equal(c[0], key)
        if c is not None and hit:
            perm, skey = c[1], c[2]
        else:
            perm = np.argsort(key, kind="stable")
            skey = key[perm]
            self._perm[final] = (key, perm, skey)
        first = not self.lengths
        unique = first and not final and bool(np.all(skey[1:] > skey[:-1]))
        if unique:
            # the row group's first sample: kept as read, while the next ones match it
            self.raw = key
            gather(rows, self.spans, self.cols, a, None, stream=True)
            self.keys[a:a + n] = key
        else:
            gather(rows, self.spans, self.cols, a, perm, stream=True)
            self.keys[a:a + n] = skey
        self.final[a:a + n] = final
        if first:
            self.same = unique
        else:
            # a sample that is not the first one's flows in the first one's order: the
            # row group is merged in (local_port, cid, time) order from now on
            self.same = self.same and self.raw is None and hit and not final and (
                n == self.lengths[0])
            self.raw = None
        self.lengths.append(n)
        self.n += n

    def forget(self) -> None:
        """After a sample was taken back: its keys may not be what they seemed."""
        self._perm.clear()

    def table(self, schema: Any, presence: _rows.Presence | None) -> Any:
        """The buffered rows as an Arrow table, flow-major: in the kernel's order of
        flows when every sample held the first one's flows in its order, else in
        (local_port, cid, time) order."""
        from web10g._collect import transpose

        m = self.n
        k = len(self.lengths)
        order: np.ndarray | None = None
        if k > 1 and not self.same:
            order = np.argsort(self.keys[:m], kind="stable")
        index = {name: i for i, name in enumerate(self.names)}
        done: dict[str, np.ndarray] = {}

        def get(name: str) -> np.ndarray:
            if name in done:
                return done[name]
            col = self.cols[index[name]] if name != "final" else self.final
            out = self._sorted.get(name)
            if out is None or len(out) < m:
                out = self._sorted[name] = np.empty_like(col)
            # the table's arrays are views of ``out``, never of the buffer being refilled
            if k == 1:
                out[:m] = col[:m]                # one sample: in its order already
            elif order is None:
                # k samples of the same flows in the same order: flow-major, sample-minor
                transpose(col, out, m // k, k)
            else:
                np.take(col[:m], order, axis=0, out=out[:m], mode="clip")
            done[name] = out[:m]
            return done[name]

        return _table(get, m, get("final"), presence, self.names, schema)



@dataclass
class WrittenFile:
    path: str
    rows: int
    bytes: int
    start_ns: int
    end_ns: int


def _utc(ns: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.timezone.utc)


def partition_dir(root: str, host: str, t_ns: int) -> str:
    t = _utc(t_ns)
    return os.path.join(root, f"host={host}", f"date={t:%Y-%m-%d}", f"hour={t:%H}")


def make_partition_dir(root: str, host: str, t_ns: int) -> str:
    """The partition directory for ``t_ns``, made if missing, every level of it a real
    directory. The dataset root may be a link (the administrator's choice); a
    ``host=``/``date=``/``hour=`` level that is a symbolic link was planted by someone
    who can write the level above, and would have a root collector create its files
    wherever the link points: refused."""
    d = partition_dir(root, host, t_ns)
    os.makedirs(root, exist_ok=True)
    path = root
    for part in os.path.relpath(d, root).split(os.sep):   # one level at a time: nothing
        path = os.path.join(path, part)                   # is made through a link
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        if os.path.islink(path):
            from web10g._files import UnsafeOutputError

            raise UnsafeOutputError(errno.ELOOP, "is a symbolic link, not a partition "
                                    "directory of this dataset (another user may have "
                                    "planted it): remove it after checking where it "
                                    "points", path)
    return d


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(root: str, host: str | None = None) -> list[str]:
    """Delete temporary files left by writers that died (their pid is gone). A crash
    loses its open window; the rows in renamed files are kept, and nothing is re-written,
    so a restart neither loses them nor duplicates them."""
    removed = []
    base = os.path.join(root, f"host={host}") if host else root
    for dirpath, _dirs, files in os.walk(base):
        for f in files:
            m = _TMP_RE.match(f)
            if not m:
                continue
            pid = int(m.group(1))
            alive = pid != os.getpid() and os.path.exists(f"/proc/{pid}")
            if alive:
                continue
            try:
                os.unlink(os.path.join(dirpath, f))
                removed.append(os.path.join(dirpath, f))
            except OSError:
                pass
    return removed


_DATE_RE = re.compile(r"^date=(\d{4})-(\d{2})-(\d{2})$", re.ASCII)
_HOUR_RE = re.compile(r"^hour=(\d{2})$", re.ASCII)
_PART_RE = re.compile(r"^part-[^/]*\.parquet$")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Pruned:
    files: int = 0
    bytes: int = 0
    kept_bytes: int = 0         # what this host's partition holds afterwards
    errors: list[str] = _field(default_factory=list)


def prune(root: str, host: str, *, keep_hours: float | None = None,
          keep_bytes: int | None = None, now_ns: int | None = None,
          protect: Iterable[str] = ()) -> Pruned:
    """Delete this host's oldest dataset files: those of hours that ended more than
    ``keep_hours`` ago, then the oldest until the host's files take at most
    ``keep_bytes``. Never another host's partition (a shared dataset holds theirs), never
    a file in ``protect`` (the one just written), never anything but ``part-*.parquet``
    regular files in real ``date=``/``hour=`` directories: every level is opened with
    O_NOFOLLOW and files are removed relative to it, so a link planted in the dataset
    leads nowhere. Hour and date directories left empty are removed. Errors (a file
    another process removed meanwhile, a permission) are collected, not raised."""
    out = Pruned()
    keep = {os.path.realpath(p) for p in protect}
    now = time.time_ns() if now_ns is None else now_ns
    try:
        hostfd = os.open(os.path.join(root, f"host={check_host(host)}"), _DIR_FLAGS)
    except FileNotFoundError:
        return out
    except OSError as exc:
        out.errors.append(f"{root}/host={host}: {exc.strerror}")
        return out
    fds = [hostfd]
    # (hour start ns, name, size, hour dir fd, date dir fd, date name, hour name)
    files: list[tuple[int, str, int, int, int, str, str]] = []
    try:
        with os.scandir(hostfd) as dates:
            date_entries = [e for e in dates if _DATE_RE.match(e.name)
                            and e.is_dir(follow_symlinks=False)]
        for d in date_entries:
            y, mo, dd = map(int, _DATE_RE.match(d.name).groups())  # type: ignore[union-attr]
            try:
                datefd = os.open(d.name, _DIR_FLAGS, dir_fd=hostfd)
            except OSError as exc:
                out.errors.append(f"{d.name}: {exc.strerror}")
                continue
            fds.append(datefd)
            with os.scandir(datefd) as hours:
                hour_entries = [e for e in hours if _HOUR_RE.match(e.name)
                                and e.is_dir(follow_symlinks=False)]
            for h in hour_entries:
                hh = int(h.name[5:])
                try:
                    start = int(_dt.datetime(y, mo, dd, hh, tzinfo=_dt.timezone.utc)
                                .timestamp()) * 10**9
                    hourfd = os.open(h.name, _DIR_FLAGS, dir_fd=datefd)
                except (ValueError, OSError) as exc:
                    out.errors.append(f"{d.name}/{h.name}: {exc}")
                    continue
                fds.append(hourfd)
                with os.scandir(hourfd) as parts:
                    for f in parts:
                        if _PART_RE.match(f.name) and f.is_file(follow_symlinks=False):
                            files.append((start, f.name, f.stat(follow_symlinks=False)
                                          .st_size, hourfd, datefd, d.name, h.name))
        files.sort()
        total = sum(f[2] for f in files)
        cut = None if keep_hours is None else now - int(keep_hours * 3600e9) - 3600 * 10**9
        emptied: set[tuple[int, int, str, str]] = set()
        for start, name, size, hourfd, datefd, dname, hname in files:
            old = cut is not None and start < cut
            over = keep_bytes is not None and total > keep_bytes
            if not (old or over):
                break                           # sorted: the rest is newer
            path = os.path.join(root, f"host={host}", dname, hname, name)
            if os.path.realpath(path) in keep:
                continue
            try:
                os.unlink(name, dir_fd=hourfd)
            except FileNotFoundError:
                pass                            # removed meanwhile: no longer here
            except OSError as exc:
                out.errors.append(f"{path}: {exc.strerror}")
                continue
            total -= size
            out.files += 1
            out.bytes += size
            emptied.add((hourfd, datefd, dname, hname))
        for _hourfd, datefd, _dname, hname in emptied:
            with contextlib.suppress(OSError):  # not empty (other files), or in use
                os.rmdir(hname, dir_fd=datefd)
        for dname in {e[2] for e in emptied}:
            with contextlib.suppress(OSError):
                os.rmdir(dname, dir_fd=hostfd)
        out.kept_bytes = total
    finally:
        for fd in fds:
            os.close(fd)
    return out


class DatasetWriter:
    """Writes rows into the dataset layout, one file per rotation window.

    ``add(rows, final=False)`` buffers a sample (the rows are kept, not copied: give
    rows you own); a row group is written when ``row_group_rows`` rows are buffered;
    ``rotate()`` finishes the open file (written under a temporary name, fsynced,
    renamed). ``maybe_rotate(now_ns)`` applies the time and size limits. A failure
    (ENOSPC, EACCES) raises after the open window is dropped (its temporary file
    removed), so earlier files stay as they are and the next window starts clean.
    """

    def __init__(self, root: str | os.PathLike, *, host: str, dtype: np.dtype,
                 backend: str = "", rotate_seconds: float = 300.0,
                 rotate_bytes: int = 256 << 20, row_group_rows: int = 1 << 20,
                 row_group_bytes: int = 128 << 20, compression_level: int = 1,
                 writer_id: str | None = None, metadata: dict[str, Any] | None = None,
                 on_file: Callable[[WrittenFile], None] | None = None,
                 background: bool = False) -> None:
        pa = _pa()
        self.root = os.fspath(root)
        self.host = check_host(host)
        self.dtype = dtype
        self.schema = schema_for(dtype, backend=backend, host=host, extra=metadata)
        self.rotate_seconds = float(rotate_seconds)
        self.rotate_bytes = int(rotate_bytes)
        # rows per row group: the count, or the buffered bytes, whichever comes first
        self.row_group_rows = max(1, min(int(row_group_rows),
                                         int(row_group_bytes) // max(1, dtype.itemsize)))
        self.compression_level = compression_level
        self.writer_id = writer_id or f"p{os.getpid()}"
        self.on_file = on_file
        self._pa = pa
        self._seq = 0
        self._cols = _Columns(dtype)
        self._presence = _rows.presence_of(dtype)
        self._buffered = 0
        # background=True: a row group's table is made (its columns put in order) and
        # then written on a thread of its own while the next one is buffered, so feeding
        # never waits for the encoding, compression and write
        self._background = background
        self._job: threading.Thread | None = None
        self._job_error: tuple[BaseException, int] | None = None
        self._writer: Any = None
        self._tmp: str | None = None
        self._final_path: str | None = None
        self._window_start: float | None = None     # monotonic seconds
        self._window_ns = 0                         # wall ns of the window's first sample
        self._hour_key: tuple[int, int, int, int] | None = None
        self._rows_in_file = 0
        self._last_ns = 0
        self._group_first_ns = 0                    # wall ns of the buffered group's first sample
        self._first_ns = 0                          # ... of the open file's first sample
        self._file_last_ns = 0                      # ... of the open file's last sample
        # Variable columns with no nulls are stored as required columns (no definition
        # levels: they cost a third of pyarrow's encoding, 1.6 -> 1.1 ms per 20,000-row
        # sample). A column that meets its first null joins this set for good, and the
        # file that stores it as required is finished first (see _fit).
        self._nullable: set[str] = set()
        self._file_schema: Any = None
        self.splits = 0                             # files finished early by a first null
        self.files: list[WrittenFile] = []
        self.rows_written = 0
        self.rows_lost = 0
        os.makedirs(self.root, exist_ok=True)

    # -- feeding ------------------------------------------------------------------------
    def prepare(self, rows_per_sample: int, samples: float | None = None) -> None:
        """Allocate the buffers for samples of about ``rows_per_sample`` rows (for as many
        samples as a rotation window holds, ``samples``, at most a row group) and fault
        their pages in now, before sampling starts, not in the first row group's time."""
        warm_up()
        n = max(1, int(rows_per_sample))
        rows = self.row_group_rows
        if samples is not None and samples * n < rows:
            rows = int(samples + 1) * n
        self._cols.reserve(rows + 2 * n, prefault=True)

    def add(self, rows: np.ndarray, *, final: bool = False, t_ns: int | None = None,
            intact: Callable[[], bool] | None = None) -> bool:
        """Buffer a sample (its columns are copied: the rows are not kept). ``intact``,
        for rows that may be overwritten meanwhile (a view of the sampler's ring): called
        after the copy; when it says False the sample is taken back and add() returns
        False."""
        if rows.dtype != self.dtype:
            rows = _conform(rows, self.dtype)
        if t_ns is None:
            t_ns = int(rows["timestamp"][0]) if len(rows) else time.time_ns()
        key = _hour_of(t_ns)
        if self._hour_key is not None and key != self._hour_key and (
                self._buffered or self._writer is not None or self._job is not None):
            self.rotate()                           # a file never spans two hours
        if self._window_start is None:
            self._window_start = time.monotonic()
            self._window_ns = t_ns
            self._hour_key = key
        if not len(rows):
            return True
        cols = self._cols
        if not cols.capacity:
            # the row group's rows and one more sample: allocated once (touched as used)
            cols.reserve(self.row_group_rows + 2 * len(rows))
        if not self._buffered:
            self._group_first_ns = t_ns
        mark = cols.mark()
        cols.append(rows, final)
        if intact is not None and not intact():
            cols.reset(mark)
            cols.forget()
            return False
        self._buffered += len(rows)
        self._last_ns = max(self._last_ns, t_ns)
        if self._buffered >= self.row_group_rows:
            self.flush_row_group()
        return True

    def maybe_rotate(self) -> bool:
        """Rotate when the window is older than rotate_seconds or the file has reached
        rotate_bytes; True when a file was finished."""
        if self._window_start is None:
            return False
        if time.monotonic() - self._window_start >= self.rotate_seconds:
            return self.rotate() is not None or self._reset_window()
        if self._tmp is not None and self._file_bytes() >= self.rotate_bytes:
            return self.rotate() is not None
        return False

    def _reset_window(self) -> bool:
        self._window_start = None
        self._hour_key = None
        return False

    def _file_bytes(self) -> int:
        try:
            return os.path.getsize(self._tmp) if self._tmp else 0
        except OSError:
            return 0

    # -- writing ------------------------------------------------------------------------
    def _open(self, schema: Any) -> None:
        pq = self._pa.parquet
        first = self._first_ns or self._window_ns   # same hour: files never span two
        d = make_partition_dir(self.root, self.host, first)
        self._seq += 1
        stamp = _utc(first).strftime("%Y%m%dT%H%M%S") + \
            f".{first // 1_000_000 % 1000:03d}Z"
        stem = f"{stamp}-{self.writer_id}-{self._seq:04d}"
        self._final_path = os.path.join(d, f"part-{stem}.parquet")
        self._tmp = os.path.join(d, f"{TMP_PREFIX}{stem}-p{os.getpid()}-{self._seq}"
                                    f"{TMP_SUFFIX}")
        from web10g._files import create_output, private_if_secret

        # O_EXCL | O_NOFOLLOW: a file or symlink planted at the name is never written
        # through; the writer closes the file with itself (file_handle)
        try:
            fh = create_output(self._tmp, overwrite=False)
        except OSError:
            self._tmp = None  # not ours: _fail() must not remove what is at that name
            raise
        private_if_secret(fh, schema.names)     # sequence numbers: none for others
        try:
            self._writer = pq.ParquetWriter(
                fh, schema, **writer_options(schema, self.compression_level))
        except BaseException:
            fh.discard()
            raise
        self._writer.file_handle = fh
        self._file_schema = schema
        self._rows_in_file = 0

    def flush_row_group(self) -> None:
        """Write the buffered rows as one row group (sorted) into the open file. In the
        background, the previous row group is waited for first (its error is raised
        here, after its window is dropped)."""
        self._wait()                        # the order buffers are free again
        if not self._buffered:
            return
        try:
            table = self._fit(self._cols.table(self.schema, self._presence))
            if self._writer is None:
                self._first_ns = self._group_first_ns
            self._file_last_ns = self._last_ns
            if self._background:
                self._job = threading.Thread(target=self._write_job,
                                             args=(table, self._buffered),
                                             name="web10g-parquet-write", daemon=True)
                self._job.start()
            else:
                self._write(table)
        except BaseException:
            self._fail()
            raise
        finally:
            self._cols.reset()
            self._buffered = 0

    def _fit(self, table: Any) -> Any:
        """The row group's table under the schema of the file it goes into: the open
        file's, or for a new file, every variable column required unless it has had a
        null. A first null in a column that the open file stores as required finishes
        that file here (a row group cannot change its file's schema), once per column
        over the writer's life; readers see one nullable schema (web10g.dataset)."""
        pa = self._pa
        new = {f.name for f in self.schema if f.nullable and f.name not in self._nullable
               and table.column(f.name).null_count}
        if new:
            self._nullable |= new
            if self._writer is not None:
                self.splits += 1
                self._finish_file()
        schema = self._file_schema
        if self._writer is None or schema is None:
            schema = pa.schema([f.with_nullable(False)
                                if f.nullable and f.name not in self._nullable else f
                                for f in self.schema], metadata=self.schema.metadata)
        return pa.Table.from_arrays(table.columns, schema=schema)

    def _write(self, table: Any) -> None:
        if self._writer is None:
            self._open(table.schema)
        self._writer.write_table(table, row_group_size=len(table))
        self._rows_in_file += len(table)

    def _write_job(self, table: Any, n: int) -> None:
        try:
            self._write(table)
        except BaseException as exc:  # noqa: BLE001 - raised by the next _wait()
            self._job_error = (exc, n)

    def _join(self) -> tuple[BaseException, int] | None:
        """Wait for the row group being written in the background; its error, if any."""
        job, self._job = self._job, None
        if job is None:
            return None
        job.join()
        err, self._job_error = self._job_error, None
        return err

    def _wait(self) -> None:
        err = self._join()
        if err is not None:
            self.rows_lost += err[1]            # the row group the failed write held
            self._fail()
            raise err[0]

    def rotate(self) -> WrittenFile | None:
        """Finish the open window: write what is buffered, close, fsync, rename."""
        try:
            self.flush_row_group()
            self._wait()
            if self._writer is None:
                self._reset_window()
                return None
            done = self._finish_file()
        except BaseException:
            self._fail()
            raise
        self._reset_window()
        return done

    def _finish_file(self) -> WrittenFile:
        """Close the open file, fsync it and rename it to its final name (the caller
        drops the window with _fail() if this raises)."""
        w, self._writer = self._writer, None
        self._file_schema = None
        w.close()
        tmp, final = self._tmp, self._final_path
        assert tmp is not None and final is not None    # set with the writer
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        _fsync_dir(os.path.dirname(final))
        done = WrittenFile(final, self._rows_in_file, os.path.getsize(final),
                           self._first_ns, self._file_last_ns)
        self.rows_written += self._rows_in_file
        self.files.append(done)
        self._tmp = self._final_path = None
        self._rows_in_file = 0
        if self.on_file is not None:
            self.on_file(done)
        return done

    def _fail(self) -> None:
        """Drop the open window after an error: its rows are lost, its temporary file
        removed (which also gives back the space a full disk needs)."""
        err = self._join()
        if err is not None:
            self.rows_lost += err[1]
        self.rows_lost += self._rows_in_file + self._buffered
        w, self._writer = self._writer, None
        self._file_schema = None
        if w is not None:
            try:
                w.close()
            except BaseException:  # noqa: BLE001 - the file is being thrown away
                pass
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
        self._tmp = self._final_path = None
        self._cols.reset()
        self._buffered = 0
        self._rows_in_file = 0
        self._reset_window()

    def close(self) -> WrittenFile | None:
        return self.rotate()

    def abort(self) -> None:
        self._fail()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()


def _hour_of(t_ns: int) -> tuple[int, int, int, int]:
    t = _utc(t_ns)
    return (t.year, t.month, t.day, t.hour)


def _conform(rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rows of another dtype carrying the same columns (closed() rows, say) as ``dtype``."""
    out = np.zeros(len(rows), dtype=dtype)
    for name in dtype.names:
        if name in rows.dtype.names:
            out[name] = rows[name]
    return out


def write_dataset(samples: Iterable[np.ndarray], root: str | os.PathLike, *, host: str,
                  writer_id: str, **kw: Any) -> list[WrittenFile]:
    """Every sample of an iterable into the dataset layout (used by ``web10g convert``).
    Windows follow the samples' own timestamps: rotation by ``rotate_seconds`` of
    recorded time, the UTC hour and ``rotate_bytes``."""
    writer: DatasetWriter | None = None
    window_ns = kw.pop("rotate_seconds", 3600.0) * 1e9
    start_ns: int | None = None
    try:
        for rows in samples:
            if writer is None:
                writer = DatasetWriter(root, host=host, dtype=rows.dtype, writer_id=writer_id,
                                       rotate_seconds=float("inf"), **kw)
            t_ns = int(rows["timestamp"][0]) if len(rows) else None
            if t_ns is not None and start_ns is not None and t_ns - start_ns >= window_ns:
                writer.rotate()
                start_ns = None
            if t_ns is not None and start_ns is None:
                start_ns = t_ns
            # recordings' sample arrays are views into a reused buffer: add() copies
            writer.add(rows, t_ns=t_ns)
            if writer._tmp is not None and writer._file_bytes() >= writer.rotate_bytes:
                writer.rotate()
                start_ns = None
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return [] if writer is None else writer.files


def write_file(samples: Iterable[np.ndarray], path: str | os.PathLike, *, host: str = "",
               backend: str = "", row_group_rows: int = 1 << 20,
               row_group_bytes: int = 128 << 20, compression_level: int = 1,
               metadata: dict[str, Any] | None = None) -> int:
    """Every sample into one Parquet file with the dataset's schema and row groups
    (written as ``.NAME.XXXXXXXX.tmp`` beside it, then renamed; web10g._files).
    Returns the rows written."""
    pa = _pa()
    from web10g._files import create_output, private_if_secret

    path = os.fspath(path)
    out: Any = None  # created with the writer: a temporary file renamed over path at the end
    writer: Any = None
    schema = None
    buf: list[np.ndarray] = []
    buffered = total = 0
    limit = 0

    def flush() -> None:
        nonlocal buf, buffered, total, writer
        if not buf:
            return
        rows = np.concatenate(buf) if len(buf) > 1 else buf[0]
        if writer is None:
            writer = open_writer(compression_level=compression_level)
        table = to_table(rows, None, schema, sort_order(rows))
        writer.write_table(table, row_group_size=len(rows))
        total += len(rows)
        buf, buffered = [], 0

    def open_writer(**kw: Any) -> Any:
        nonlocal out
        # no symlink followed, nothing but a regular file replaced; the destination
        # appears only complete (atomic: a temporary name, renamed on close)
        out = create_output(path, overwrite=True, atomic=True)
        private_if_secret(out, schema.names if schema is not None else ())  # seq: not others
        return pa.parquet.ParquetWriter(out, schema, **writer_options(schema, **kw))

    try:
        for rows in samples:
            if schema is None:
                schema = schema_for(rows.dtype, backend=backend, host=host, extra=metadata)
                limit = max(1, min(row_group_rows, row_group_bytes // max(1, rows.dtype.itemsize)))
            elif rows.dtype != buf[0].dtype if buf else False:
                flush()
            buf.append(_rows.copy(rows))
            buffered += len(rows)
            if buffered >= limit:
                flush()
        flush()
        if writer is None:
            if schema is None:
                raise ValueError("no samples to write")
            writer = open_writer()
        writer.close()
        writer = None
        out.close()
    except BaseException:
        if writer is not None:
            try:
                writer.close()
            except BaseException:  # noqa: BLE001 - being thrown away
                pass
        if out is not None:
            out.discard()  # the temporary file goes; an existing destination stays
        raise
    return total
