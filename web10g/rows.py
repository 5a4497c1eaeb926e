"""What every backend's rows share, and the helpers any consumer uses on them.

A rows array (what ``read_all()`` returns) is a numpy structured array whose first fields
are the identity columns (``IDENTITY_FIELDS``: cid, family, state in RFC 4898 numbering,
ports, 16-byte addresses, uid, inode), then ``timestamp`` and ``present``, then any
backend metadata, then one column per variable. No backend owns this module: the
backends build on it, and so do deltas, frames, the CLI, plots and the monitor.

What ``present`` means differs between backends (tcp_info groups on sock_diag, MIB
tables on estats), so the dtype carries it: every backend builds its row types with
:func:`row_dtype`, which stores a :class:`Presence` in the dtype's metadata. Slices,
masks, copies, ``np.concatenate`` and pickles keep it, so ``available(rows, name)`` and
``reported(rows)`` work on rows long after the agent that read them has closed.
(A field subset such as ``rows[["cid", "CurCwnd"]]`` drops dtype metadata in numpy:
its values are then taken as reported.)
"""
from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from web10g import errors, mib
from web10g._collect import address as _address

IDENTITY_FIELDS = mib.IDENTITY_FIELDS
IDENTITY_NAMES = tuple(name for name, _ in IDENTITY_FIELDS)
#: Metadata every backend's rows carry after the identity block.
META_FIELDS: list[tuple[str, str]] = [("timestamp", "i8"), ("present", "u2")]
METADATA_KEY = "web10g.presence"

# -- TCP states ------------------------------------------------------------------------
# Kernel TCP states (the idiag_states bit numbers) by the names people use for them,
# ss's and netstat's spellings included ("listening", "syn-recv", "SYN_RCVD"): names are
# compared lower-case with '-', '_' and spaces removed.
KERNEL_STATES = {
    "established": 1, "synsent": 2, "synrecv": 3, "synreceived": 3, "synrcvd": 3,
    "finwait1": 4,
    "finwait2": 5, "timewait": 6, "close": 7, "closed": 7, "closewait": 8, "lastack": 9,
    "listen": 10, "listening": 10, "closing": 11, "newsynrecv": 12, "boundinactive": 13,
}
_ALL = 0xFFF
STATE_GROUPS = {
    "all": _ALL,
    "connected": _ALL & ~((1 << 10) | (1 << 7)),              # not listening, not closed
    "synchronized": _ALL & ~((1 << 10) | (1 << 7) | (1 << 2)),  # ... nor SYN-SENT
    "bucket": (1 << 3) | (1 << 6),                              # SYN-RECV and TIME-WAIT
    "big": _ALL & ~((1 << 3) | (1 << 6)),                       # ss: all but the bucket
    # What a Web10G kernel instruments: established until closed (no listeners, no
    # handshakes, no TIME-WAIT minisockets). The default of every entry point.
    "open": (1 << 1) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11),
}
#: The one default rule: ``states=None`` anywhere (read_all, list_conns, sampler,
#: monitor, the tools) means this group; ``states="all"`` lists every socket.
DEFAULT_STATES = "open"
# Kernel state bit -> RFC 4898 state number (the `state` column).
KERNEL_TO_RFC_STATE = mib.KERNEL_TO_RFC_STATE
STATE_NAMES = mib.STATE_NAMES


def parse_states(states: None | int | str | Iterable[str | int]) -> int:
    """The idiag_states bit mask (bit k = kernel state k) for a state selection.

    ``None`` = :data:`DEFAULT_STATES`; an int is the kernel bit mask itself; names
    ("established", "time-wait", "listening", ..., and the groups "open", "connected",
    "synchronized", "bucket", "big", "all") alone, comma-separated, or in an iterable.
    """
    if states is None:
        return STATE_GROUPS[DEFAULT_STATES]
    if isinstance(states, bool):
        raise TypeError("states: a name, names or a kernel bit mask, not a bool")
    if isinstance(states, (int, np.integer)) and not isinstance(states, bool):
        if not 0 < int(states) <= 0xFFFFFFFF:
            raise ValueError(f"states bit mask {states!r} is out of range")
        return int(states)
    if isinstance(states, str):
        items: list[Any] = [s for s in states.split(",") if s.strip()]
    else:
        items = list(states)  # type: ignore[arg-type]  # bools were refused above
    mask = 0
    for item in items:
        key = str(item).lower().replace("-", "").replace("_", "").replace(" ", "")
        if key in STATE_GROUPS:
            mask |= STATE_GROUPS[key]
        elif key in KERNEL_STATES:
            mask |= 1 << KERNEL_STATES[key]
        else:
            from difflib import get_close_matches

            close = get_close_matches(key, list(KERNEL_STATES) + list(STATE_GROUPS), n=3)
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown TCP state {item!r}{hint} (ss's names and groups "
                             "work: established, listening, time-wait, connected, all, ...)")
    if not mask:
        raise ValueError("the state selection is empty")
    return mask


def rfc_states(mask: int) -> np.ndarray:
    """The RFC 4898 state numbers (the ``state`` column) a kernel bit mask selects."""
    return np.unique([int(KERNEL_TO_RFC_STATE[k]) for k in range(1, 14) if mask >> k & 1])


# -- families ----------------------------------------------------------------------------
FAMILIES = {None: (socket.AF_INET, socket.AF_INET6), "inet": (socket.AF_INET,),
            "inet6": (socket.AF_INET6,), 4: (socket.AF_INET,), 6: (socket.AF_INET6,),
            socket.AF_INET: (socket.AF_INET,), socket.AF_INET6: (socket.AF_INET6,)}


def parse_family(family: Any) -> tuple[int, ...]:
    """The address families a ``family=`` argument selects."""
    try:
        return FAMILIES[family]
    except (KeyError, TypeError):
        raise ValueError(f"family must be None, 'inet', 'inet6', 4 or 6, not {family!r}"
                         ) from None


def select(rows: np.ndarray, filter: Any = None, states: Any = None,
           family: Any = None, *, default_states: bool = True) -> np.ndarray | None:
    """A boolean mask of the rows matching filter/states/family, with the kernel's
    semantics (for backends and replays where the kernel cannot filter), or None when
    every row matches. ``default_states=False`` leaves ``states=None`` unfiltered."""
    from web10g import filter as _filter

    keep: np.ndarray | None = None
    if filter is not None:
        keep = _filter.mask(filter, rows)
    if states is not None or default_states:
        wanted = rfc_states(parse_states(states))
        ok = np.isin(rows["state"], wanted)
        keep = ok if keep is None else keep & ok
    if family is not None:
        ok = np.isin(rows["family"], parse_family(family))
        keep = ok if keep is None else keep & ok
    if keep is not None and keep.all():
        return None
    return keep


# -- what `present` means -----------------------------------------------------------------

class Presence:
    """How one kind of rows says whether a value was reported.

    ``bits[name]``: the `present` bits that must all be set for ``name``'s value to be
    real; ``min_len[name]``: the ``tcp_info_len`` a row must reach (sock_diag: a field
    past the kernel's struct is absent); ``stats_bits``: the bits that mark a row as
    carrying statistics at all (0: every row does). Names not listed (identity and
    metadata columns) are always reported.
    """

    __slots__ = ("bits", "min_len", "stats_bits", "source")

    def __init__(self, source: str, bits: Mapping[str, int], *,
                 min_len: Mapping[str, int] | None = None, stats_bits: int = 0) -> None:
        self.source = source
        self.bits = dict(bits)
        self.min_len = dict(min_len or {})
        self.stats_bits = stats_bits

    def __reduce__(self) -> Any:
        return (_presence, (self.source, self.bits, self.min_len, self.stats_bits))

    def __repr__(self) -> str:
        return f"<Presence of {self.source} rows: {len(self.bits)} variables>"

    def available(self, rows: np.ndarray, name: str) -> np.ndarray:
        bit = self.bits.get(name)
        ok = np.ones(len(rows), dtype=bool) if not bit else (rows["present"] & bit) == bit
        need = self.min_len.get(name)
        if need:
            ok &= rows["tcp_info_len"] >= need
        return ok

    def key(self) -> tuple[Any, ...]:
        return (self.source, tuple(sorted(self.bits.items())),
                tuple(sorted(self.min_len.items())), self.stats_bits)

    def reported(self, rows: np.ndarray) -> np.ndarray:
        if not self.stats_bits:
            return np.ones(len(rows), dtype=bool)
        return (rows["present"] & self.stats_bits) != 0


def _presence(source: str, bits: dict, min_len: dict, stats_bits: int) -> Presence:
    return Presence(source, bits, min_len=min_len, stats_bits=stats_bits)


_DTYPES: dict[Any, np.dtype] = {}


def row_dtype(fields: list[Any], presence: Presence | None) -> np.dtype:
    """An aligned row type whose metadata says what its ``present`` column means.

    The same fields and meaning give the same dtype object, whichever agent asks: numpy
    keeps dtype metadata through ``np.concatenate`` only when the dtypes are identical
    (rows of a sampler's clone and of its agent are concatenated, for one)."""
    if presence is None:
        return np.dtype(fields, align=True)
    key = (repr(fields), presence.key())
    dt = _DTYPES.get(key)
    if dt is None:
        if len(_DTYPES) > 4096:         # a program cycling through selections
            _DTYPES.clear()
        dt = _DTYPES[key] = np.dtype(fields, align=True, metadata={METADATA_KEY: presence})
    return dt


def presence_of(rows_or_dtype: Any) -> Presence | None:
    dt = getattr(rows_or_dtype, "dtype", rows_or_dtype)
    meta = getattr(dt, "metadata", None)
    return meta.get(METADATA_KEY) if meta else None


class Rows(np.ndarray):
    """What ``read_all()`` returns: a plain numpy structured array, except that a column
    name it lacks (``rows["MARK"]`` where the column is ``mark``) raises
    :class:`~web10g.errors.UnknownColumn` naming the closest columns, as ``read_all``
    does for variable names, instead of numpy's bare error."""

    def __getitem__(self, key: Any) -> Any:
        try:
            res = super().__getitem__(key)
        except (KeyError, ValueError):
            if isinstance(key, str) and self.dtype.names and key not in self.dtype.names:
                raise errors.UnknownColumn(key, _suggest_columns(self, key)) from None
            raise
        # a column (or anything not rows) is a plain array again: arithmetic and
        # element access on it cost what they cost on numpy
        if isinstance(res, Rows) and res.dtype.names is None:
            return res.view(np.ndarray)
        return res


def as_rows(arr: np.ndarray) -> Rows:
    """``arr`` viewed as :class:`Rows` (no copy). The view's ``base`` is the array that
    owns the memory (``out``, or its grown replacement), as the ``out=`` contract
    promises; ``ndarray.view`` would leave an intermediate view there."""
    owner = arr.base if isinstance(arr.base, np.ndarray) and arr.base.base is None else arr
    if owner is arr or not arr.flags.c_contiguous or not owner.flags.c_contiguous:
        return arr.view(Rows)
    # not __array_interface__ (it describes every field of the dtype: 0.1 ms for the
    # 165 columns of every variable) nor .ctypes (a ctypes object per call)
    offset = _address(arr) - _address(owner)
    if not 0 <= offset <= owner.nbytes - arr.nbytes:
        return arr.view(Rows)
    return np.ndarray.__new__(Rows, arr.shape, arr.dtype, buffer=owner, offset=offset)


def _suggest_columns(rows: np.ndarray, name: str) -> list[str]:
    names = list(rows.dtype.names or ())
    out = []
    try:
        canonical = mib.lookup(name).name
        if canonical in names:
            out.append(canonical)
    except LookupError:
        pass
    lower = {n.lower(): n for n in names}
    if name.lower() in lower and lower[name.lower()] not in out:
        out.append(lower[name.lower()])
    from difflib import get_close_matches

    out += [n for n in get_close_matches(name, names, n=3, cutoff=0.6) if n not in out]
    return out[:3]


def column_name(rows: np.ndarray, name: str) -> str:
    """The column of ``rows`` that ``name`` means (exact, a registry spelling such as an
    RFC name or another case); UnknownColumn with suggestions otherwise."""
    names = rows.dtype.names or ()
    if name in names:
        return name
    close = _suggest_columns(rows, str(name))
    if close and close[0].lower() == str(name).lower() or (
            close and _canonical(name) == close[0]):
        return close[0]
    raise errors.UnknownColumn(name, close)


def _canonical(name: str) -> str | None:
    try:
        return mib.lookup(name).name
    except LookupError:
        return None


def column(rows: np.ndarray, name: str) -> np.ndarray:
    """``rows[name]`` that forgives case and RFC spellings, and suggests on a miss."""
    return rows[column_name(rows, name)]


def available(rows: np.ndarray, name: Any) -> np.ndarray:
    """Per row: was ``name``'s value reported (so a 0 is a real 0)?

    Works on the rows of any backend (the dtype says what ``present`` means). Identity
    and metadata columns are always reported.
    """
    if not isinstance(name, str):
        name = name.name
    col = column_name(rows, name)
    p = presence_of(rows)
    if p is None:
        return np.ones(len(rows), dtype=bool)
    return p.available(rows, col)


def reported(rows: np.ndarray) -> np.ndarray:
    """Rows that carry statistics at all. A sock_diag row without tcp_info (a TIME-WAIT
    or request socket) has identity only: its zeros are not values."""
    p = presence_of(rows)
    return np.ones(len(rows), dtype=bool) if p is None else p.reported(rows)


IDENTITY_ENDPOINTS = ("family", "local_addr", "local_port", "rem_addr", "rem_port")


def restore_identity(ended: np.ndarray, seen: Sequence[np.ndarray]) -> np.ndarray:
    """Give end-of-flow rows whose endpoints the kernel cleared (a flow aborted with
    SO_LINGER 0 is reported with remote port 0 and maybe local address 0; see
    backends.sockdiag) the endpoints of their latest row in ``seen`` (earlier samples,
    oldest first), matched by cid. Returns ``ended`` (changed in place)."""
    names = ended.dtype.names or ()
    if not len(ended) or not all(c in names for c in IDENTITY_ENDPOINTS + ("cid",)):
        return ended
    cleared = np.flatnonzero((ended["rem_port"] == 0) & ended["rem_addr"].any(axis=1))
    if not len(cleared):
        return ended
    want = ended["cid"][cleared]
    for snap in reversed(seen):         # newest first: the latest endpoints win
        if not len(cleared):
            break
        if not len(snap) or not all(c in (snap.dtype.names or ()) for c in
                                    IDENTITY_ENDPOINTS + ("cid",)):
            continue
        order = np.argsort(snap["cid"], kind="stable")
        scids = snap["cid"][order]
        pos = np.searchsorted(scids, want)
        hit = (pos < len(scids)) & (scids[np.minimum(pos, len(scids) - 1)] == want)
        if hit.any():
            src = order[pos[hit]]
            for col in IDENTITY_ENDPOINTS:
                ended[col][cleared[hit]] = snap[col][src]
            cleared, want = cleared[~hit], want[~hit]
    return ended


def copy(rows: np.ndarray) -> np.ndarray:
    """A copy of ``rows`` the caller owns, made as one byte copy (numpy's own copy of a
    wide structured array goes field by field and costs several times more)."""
    out = np.empty(len(rows), dtype=rows.dtype)
    if rows.flags.c_contiguous and rows.dtype.itemsize:
        out.view(np.uint8)[...] = rows.view(np.uint8)
    else:
        out[...] = rows
    return out


# -- addresses -----------------------------------------------------------------------------

def addresses(rows: np.ndarray, which: str = "local") -> np.ndarray:
    """Addresses of ``rows`` as text ("local" or "rem"), in bulk."""
    if which not in ("local", "rem"):
        raise ValueError("which must be 'local' or 'rem'")
    from web10g._netlink import format_addresses

    return format_addresses(rows[f"{which}_addr"], rows["family"])


def endpoints(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """"addr:port" text of both ends ([addr]:port for IPv6), in bulk."""
    res = []
    for side in ("local", "rem"):
        addr = addresses(rows, side)
        v6 = rows["family"] == socket.AF_INET6
        addr = np.where(v6, np.char.add(np.char.add("[", addr), "]"), addr)
        res.append(np.char.add(np.char.add(addr, ":"), rows[f"{side}_port"].astype(str)))
    return res[0], res[1]


def state_names(rows: np.ndarray) -> np.ndarray:
    """RFC 4898 state names of ``rows``."""
    table = np.array([""] + [STATE_NAMES.get(k, "") for k in range(1, 16)], dtype=object)
    return table[np.minimum(rows["state"], 15)]


__all__ = ["IDENTITY_FIELDS", "IDENTITY_NAMES", "META_FIELDS", "KERNEL_STATES",
           "STATE_GROUPS", "DEFAULT_STATES", "FAMILIES", "Presence", "Rows", "as_rows",
           "parse_states", "parse_family", "rfc_states", "select", "row_dtype",
           "presence_of", "available", "reported", "copy", "column", "column_name",
           "addresses", "endpoints", "state_names"]
