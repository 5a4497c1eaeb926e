"""The RFC 4898 / Web10G MIB registry.

Everything about a variable that does not depend on a live kernel: its table and index,
module type code, wire width, numpy dtype, units, and how the stock-kernel (sock_diag)
backend can supply it.  The data lives in ``web10g/data/*.csv``; ``web10g-vars.csv`` (a
verbatim copy of the spec) is the single source of truth for the 124 HEAD variables.

Pure Python + numpy: importable without any compiled extension.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from web10g.errors import LayoutMismatch, UnknownVariable

__all__ = [
    "TABLES", "TABLE_TITLES", "STOCK_TABLE", "BACKENDS", "LAYOUTS", "MATCH_CLASSES",
    "TYPE_CODES", "TYPE_NAMES", "IDENTITY_FIELDS", "TIMESTAMP_FIELD", "FAMILY_INET",
    "FAMILY_INET6", "STATE_NAMES", "KERNEL_TO_RFC_STATE", "UnknownVariable",
    "LayoutMismatch", "SockDiagSource", "EbpfSource", "Variable", "Layout", "lookup", "variables",
    "dtype", "layout", "identify_layout", "format_getmib", "wire_type_for",
    "SEQUENCE_VARS",
]

TABLES = ("perf", "path", "stack", "app", "tune", "extras")
TABLE_TITLES = ("Performance", "Path", "Stack", "Application", "Tune", "Extras")
STOCK_TABLE = "stock"
BACKENDS = ("estats", "sock_diag", "ebpf")
LAYOUTS = ("head", "middle", "old")
MATCH_CLASSES = ("exact", "approx", "derived", "unavailable")

TYPE_CODES = {
    "Integer": 0, "Integer32": 1, "Counter32": 2, "Gauge32": 3, "Unsigned32": 4,
    "Counter64": 5, "DateAndTime": 6, "TimeStamp": 7, "TruthValue": 8, "Octet": 9,
}
TYPE_NAMES = {code: name for name, code in TYPE_CODES.items()}
_COUNTER_TYPES = frozenset({"Counter32", "Counter64"})
# The module types SoftErrorReason as COUNTER32, but its value is an enumeration code,
# so it must not be treated as a monotonically increasing counter (no deltas/rates).
_ENUM_TYPED_AS_COUNTER = frozenset({"SoftErrorReason"})

_WIRE_DTYPES: dict[str, np.dtype] = {
    "u8": np.dtype(np.uint8), "u16": np.dtype(np.uint16), "u32": np.dtype(np.uint32),
    "s32": np.dtype(np.int32), "u64": np.dtype(np.uint64),
}

# Identity columns shared by both backends.  Addresses are 16 raw bytes in network order
# (IPv4: 4 bytes then 12 zero bytes, as on the estats wire); ports in host order.
# family is the socket address family (socket.AF_INET = 2, socket.AF_INET6 = 10), so the
# estats ADDR_TYPE 1/2 must be translated; state uses RFC 4898 numbering (STATE_NAMES).
FAMILY_INET = 2
FAMILY_INET6 = 10

# The variables that hold a connection's sequence numbers. Knowing them lets a local user
# inject data into the connection, and inet_diag never shows them: the ebpf backend
# withholds them from readers other than root and the flow's owner, and every output
# file that has one of them as a column is created unreadable by others (mode & 0640).
SEQUENCE_VARS = frozenset(("SndUna", "SndNxt", "SndMax", "RcvNxt", "SndInitial",
                           "RecInitial"))
IDENTITY_FIELDS = [
    ("cid", "u8"),
    ("family", "u1"),
    ("state", "u1"),
    ("local_port", "u2"),
    ("rem_port", "u2"),
    ("local_addr", ("u1", (16,))),
    ("rem_addr", ("u1", (16,))),
    ("uid", "u4"),
    ("inode", "u4"),
]
TIMESTAMP_FIELD = ("timestamp", "i8")  # ns since the epoch, CLOCK_REALTIME

STATE_NAMES = {
    1: "closed", 2: "listen", 3: "synSent", 4: "synReceived", 5: "established",
    6: "finWait1", 7: "finWait2", 8: "closeWait", 9: "lastAck", 10: "closing",
    11: "timeWait", 12: "deleteTCB",
}


def _kernel_to_rfc_state() -> np.ndarray:
    table = np.zeros(16, dtype=np.uint8)  # 0 = unknown kernel state
    pairs = {1: 5, 2: 3, 3: 4, 4: 6, 5: 7, 6: 11, 7: 1, 8: 8, 9: 9, 10: 2, 11: 10, 12: 4,
             # TCP_BOUND_INACTIVE (6.8+) is a bound socket in CLOSE state: RFC "closed".
             13: 1}
    for kernel, rfc in pairs.items():
        table[kernel] = rfc
    table.setflags(write=False)
    return table


KERNEL_TO_RFC_STATE = _kernel_to_rfc_state()


@dataclass(frozen=True)
class SockDiagSource:
    """How the sock_diag backend obtains a variable (stock-kernel-mapping.md §3/§4)."""

    match: str  # exact | approx | derived | unavailable
    source: str
    conversion: str
    tcpi_offset: int | None
    tcpi_width: int | None
    kernel: str | None
    note: str
    group: str | None = None  # which reply part carries it: tcp_info, inet_diag, tos, ...

    @property
    def available(self) -> bool:
        return self.match != "unavailable"

    def available_for(self, tcp_info_len: int) -> bool:
        """True if available and the needed tcp_info field fits in ``tcp_info_len``."""
        if not self.available:
            return False
        if self.tcpi_offset is None:
            return True
        return tcp_info_len >= self.tcpi_offset + (self.tcpi_width or 0)


@dataclass(frozen=True)
class EbpfSource:
    """How the ebpf backend obtains a variable (web10g/data/ebpf-map.csv).

    ``hooks``: the loaded programs it needs, all of them ("iter", "sockops", "cong",
    "retrans", "probe", "drops", and "sent": sock_ops on every sent segment, full mode); a hook the
    kernel refused (or a mode that leaves it out) makes it unavailable.
    """

    match: str  # exact | approx | derived | unavailable
    hooks: tuple[str, ...]
    source: str
    conversion: str
    note: str

    @property
    def available(self) -> bool:
        return self.match != "unavailable"

    @property
    def hook(self) -> str:
        return "+".join(self.hooks) or "-"


@dataclass(frozen=True, repr=False)
class Variable:
    """One MIB variable (Web10G) or stock-only extra column (table ``"stock"``).

    ``index`` is the HEAD-layout index; use :meth:`Layout.position` for other layouts.
    ``type_code`` is None for stock extras, whose ``var_type`` may also be a non-module
    type (Gauge64, Unsigned64, Float, OctetString).  ``is_counter`` is False for
    SoftErrorReason, which the module types Counter32 although it is an enumeration.
    """

    name: str
    table: str
    index: int | None
    var_type: str
    type_code: int | None
    wire: str
    dtype: np.dtype
    units: str
    writable: bool
    description: str
    since: str
    rfc_name: str
    sock_diag: SockDiagSource
    is_counter: bool
    ebpf: EbpfSource | None = None

    @property
    def width(self) -> int:
        return self.dtype.itemsize

    @property
    def is_stock(self) -> bool:
        return self.table == STOCK_TABLE

    def __repr__(self) -> str:
        where = self.table if self.index is None else f"{self.table}[{self.index}]"
        return f"<Variable {where} {self.name} {self.var_type} {self.wire}>"


# --------------------------------------------------------------------------- loading

_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def _read_csv(filename: str) -> list[dict[str, str]]:
    with open(os.path.join(_DATA_DIR, filename), newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows)
        return [dict(zip(header, row)) for row in rows]


def _int_or_none(text: str) -> int | None:
    return int(text) if text else None


def _rfc_name(table: str, name: str) -> str:
    return "tcpEStats" + table.capitalize() + name


def _load_sock_diag_map() -> dict[str, SockDiagSource]:
    out = {}
    for row in _read_csv("sock_diag-map.csv"):
        if row["match"] not in MATCH_CLASSES:
            raise RuntimeError(f"sock_diag-map.csv: bad match class for {row['name']}")
        out[row["name"]] = SockDiagSource(
            match=row["match"], source=row["source"], conversion=row["conversion"],
            tcpi_offset=_int_or_none(row["tcpi_offset"]),
            tcpi_width=_int_or_none(row["tcpi_width"]),
            kernel=row["kernel"] or None, note=row["note"], group=row["group"] or None)
    return out


_SOCK_DIAG = _load_sock_diag_map()


def _load_ebpf_map() -> dict[str, EbpfSource]:
    out = {}
    for row in _read_csv("ebpf-map.csv"):
        if row["match"] not in MATCH_CLASSES:
            raise RuntimeError(f"ebpf-map.csv: bad match class for {row['name']}")
        out[row["name"]] = EbpfSource(
            match=row["match"], hooks=tuple(h for h in row["hooks"].split("+") if h),
            source=row["source"], conversion=row["conversion"], note=row["note"])
    return out


_EBPF = _load_ebpf_map()


def _web10g_variable(table: str, index: int | None, name: str, var_type: str, wire: str,
                     writable: bool, units: str, description: str, since: str) -> Variable:
    try:
        sd = _SOCK_DIAG[name]
    except KeyError:
        raise RuntimeError(f"sock_diag-map.csv has no row for {name}") from None
    return Variable(
        name=name, table=table, index=index, var_type=var_type,
        type_code=TYPE_CODES[var_type], wire=wire, dtype=_WIRE_DTYPES[wire],
        units=units,
        writable=writable, description=description, since=since,
        rfc_name=_rfc_name(table, name), sock_diag=sd,
        is_counter=var_type in _COUNTER_TYPES and name not in _ENUM_TYPED_AS_COUNTER,
        ebpf=_EBPF.get(name))


def _load_head() -> tuple[tuple[Variable, ...], ...]:
    tables: list[list[Variable]] = [[] for _ in TABLES]
    for row in _read_csv("web10g-vars.csv"):
        t = TABLES.index(row["table"])
        if int(row["index"]) != len(tables[t]):  # the CSV must list indices in order
            raise RuntimeError(f"web10g-vars.csv: {row['name']} out of index order")
        tables[t].append(_web10g_variable(
            row["table"], int(row["index"]), row["name"], row["var_type"],
            row["val_type"], row["writable"] == "yes", row["units"], row["description"],
            row["since_tag"]))
    return tuple(tuple(t) for t in tables)


def _load_extras() -> tuple[Variable, ...]:
    out = []
    for row in _read_csv("stock-extras.csv"):
        sd = SockDiagSource(
            match="exact", source=row["source"], conversion="",
            tcpi_offset=_int_or_none(row["tcpi_offset"]),
            tcpi_width=_int_or_none(row["tcpi_width"]),
            kernel=row["kernel"] or None, note="stock-only", group=row["group"])
        out.append(Variable(
            name=row["name"], table=STOCK_TABLE, index=None, var_type=row["var_type"],
            type_code=None, wire=row["dtype"], dtype=np.dtype(row["dtype"]),
            units=row["units"], writable=False, description=row["description"],
            since=row["kernel"], rfc_name=row["name"], sock_diag=sd,
            is_counter=row["var_type"] in _COUNTER_TYPES))
    return tuple(out)


_HEAD_TABLES = _load_head()
_EXTRAS = _load_extras()
# Variables of the old layout only (ABI §11.2); not CSV rows, so described here.
_OTHER_REDUCTIONS = _web10g_variable(
    "stack", None, "OtherReductions", "Counter32", "u32", False, "events",
    "Congestion-window reductions made for reasons other than the normal loss or ECN "
    "congestion response (old module tags only; removed in kernel-4.8).", "dlkm-3.19")
_OTHER_REDUCTIONS_CM = _web10g_variable(
    "extras", None, "OtherReductionsCM", "Counter32", "u32", False, "events",
    "Web10G companion counter of OtherReductions kept in the extras table "
    "(old module tags only; removed in kernel-4.8).", "dlkm-3.19")

_BY_KEY: dict[str, Variable] = {}
for _v in (*(v for t in _HEAD_TABLES for v in t), _OTHER_REDUCTIONS, _OTHER_REDUCTIONS_CM,
           *_EXTRAS):
    for _key in {_v.name.lower(), _v.rfc_name.lower()}:
        if _key in _BY_KEY:
            raise RuntimeError(f"duplicate variable name {_key!r}")
        _BY_KEY[_key] = _v
del _v, _key
_RFC_PREFIX = "tcpestats"
_SHORT_KEYS = [k for k, v in _BY_KEY.items() if k == v.name.lower()]

# ------------------------------------------------------------------------------ lookup

NameLike = str | Variable


def _suggest(name: str) -> list[str]:
    import difflib  # only needed on errors; keeps import time down

    # Compare lower-cased short names; an RFC-style input ("tcpEStats" + table + name,
    # table possibly wrong or missing) is compared by its short part and answered with
    # RFC names, so the shared prefix does not make every variable look similar.
    low = name.lower()
    rfc_style = low.startswith(_RFC_PREFIX) and len(low) > len(_RFC_PREFIX)
    if rfc_style:
        low = low[len(_RFC_PREFIX):]
        for table in TABLES:
            if low.startswith(table) and len(low) > len(table):
                low = low[len(table):]
                break
    hits = difflib.get_close_matches(low, _SHORT_KEYS, n=5, cutoff=0.6)
    return [_BY_KEY[h].rfc_name if rfc_style else _BY_KEY[h].name for h in hits]


def lookup(name: str) -> Variable:
    """Find a variable by short, RFC (``tcpEStatsPerf...``) or stock-extra name, any case."""
    if not isinstance(name, str):
        raise TypeError(f"variable name must be str, not {type(name).__name__}")
    try:
        return _BY_KEY[name.lower()]
    except KeyError:
        raise UnknownVariable(name, _suggest(name)) from None


def _resolve(item: NameLike) -> Variable:
    return item if isinstance(item, Variable) else lookup(item)


def _as_list(names: NameLike | Iterable[NameLike]) -> list[Variable]:
    if isinstance(names, (str, Variable)):  # one name, not an iterable of characters
        names = [names]
    return [_resolve(n) for n in names]


# ------------------------------------------------------------------------------ layouts

@dataclass(frozen=True)
class Layout:
    """A tcp_estats variable layout: 6 tables of variables in wire index order."""

    name: str
    tables: tuple[tuple[Variable, ...], ...]
    module_tags: str = ""

    @property
    def total(self) -> int:
        return sum(len(t) for t in self.tables)

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(len(t) for t in self.tables)

    @property
    def all_masks(self) -> tuple[int, ...]:
        return tuple((1 << len(t)) - 1 for t in self.tables)

    @cached_property
    def _positions(self) -> dict[str, tuple[int, int]]:
        return {v.name: (t, i) for t, vs in enumerate(self.tables) for i, v in enumerate(vs)}

    def __contains__(self, item: object) -> bool:
        try:
            return _resolve(item).name in self._positions  # type: ignore[arg-type]
        except (KeyError, TypeError):
            return False

    def position(self, name: NameLike) -> tuple[int, int]:
        """(table number, index) of a variable in this layout."""
        var = _resolve(name)
        try:
            return self._positions[var.name]
        except KeyError:
            raise ValueError(
                f"variable {var.name!r} is not part of the {self.name!r} layout") from None

    def mask(self, names: NameLike | Iterable[NameLike]) -> tuple[int, ...]:
        """Per-table request masks (NEA_*_MASK) selecting ``names``."""
        masks = [0] * len(TABLES)
        for var in _as_list(names):
            t, i = self.position(var)
            masks[t] |= 1 << i
        return tuple(masks)

    def variables(self) -> list[Variable]:
        return [v for t in self.tables for v in t]

    def flat_names(self) -> list[str]:
        """Names in flat order (perf..extras), as in libestats and record files."""
        return [v.name for t in self.tables for v in t]


def _make_layouts() -> dict[str, Layout]:
    perf, path, stack, app, tune, extras = _HEAD_TABLES
    head = Layout("head", _HEAD_TABLES, "kernel-4.18, kernel-5.0")
    # ABI §11.2: middle drops the two appended kernel-4.18 variables (perf 40, stack 40).
    middle = Layout("middle", (perf[:40], path, stack[:40], app, tune, extras),
                    "kernel-4.8 ... kernel-4.13")
    # Old: OtherReductions sits at stack 23 (shifting HEAD 23-39 to 24-40) and
    # OtherReductionsCM precedes Priority in extras.
    old = Layout("old", (perf[:40], path, stack[:23] + (_OTHER_REDUCTIONS,) + stack[23:40],
                         app, tune, (_OTHER_REDUCTIONS_CM,) + extras),
                 "dlkm-3.19 ... kernel-4.7, centos-3.10.0-957.27.2")
    return {"head": head, "middle": middle, "old": old}


_LAYOUTS = _make_layouts()


def layout(name: str = "head") -> Layout:
    """The known estats layout ``name`` (one of LAYOUTS)."""
    try:
        return _LAYOUTS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}") from None


_layout_of = layout  # variables() shadows the name with its parameter


def variables(table: str | None = None, backend: str | None = None,
              layout: str = "head") -> list[Variable]:
    """Variables of a backend (None = all Web10G of ``layout`` + stock extras), in order.

    ``layout`` selects the estats layout (for backend None and "estats"); sock_diag
    always presents the HEAD names.
    """
    lay = _layout_of(layout)
    if table is not None and table not in TABLES and table != STOCK_TABLE:
        raise ValueError(f"unknown table {table!r}; choose one of "
                         f"{', '.join(TABLES + (STOCK_TABLE,))}")
    if backend is None:
        out = lay.variables() + list(_EXTRAS)
    elif backend == "estats":
        out = lay.variables()
    elif backend == "sock_diag":
        out = [v for t in _HEAD_TABLES for v in t if v.sock_diag.available] + list(_EXTRAS)
    elif backend == "ebpf":
        out = [v for t in _HEAD_TABLES for v in t if v.ebpf is not None and v.ebpf.available]
    else:
        raise ValueError(f"unknown backend {backend!r}; choose None or one of "
                         f"{', '.join(BACKENDS)}")
    if table is not None:
        out = [v for v in out if v.table == table]
    return out


_EBPF_HOOK_BITS = {"sockops": 1, "iter": 2, "cong": 4, "retrans": 8, "probe": 16,
                   "sent": 512, "drops": 1024}


def ebpf_availability(hooks: int) -> tuple[list[str], dict[str, str]]:
    """(available, {unavailable: why}) for the ebpf backend when the programs of the
    hook bits ``hooks`` (csrc/w10g_ebpf_rec.h W10G_EB_HOOK_*) are loaded."""
    avail: list[str] = []
    unavail: dict[str, str] = {}
    for v in (v for t in _HEAD_TABLES for v in t):
        e = v.ebpf
        if e is None or not e.available:
            unavail[v.name] = (e.note if e else "") or "no source"
            continue
        lacking = [h for h in e.hooks if not hooks & _EBPF_HOOK_BITS.get(h, 0)]
        if lacking:
            unavail[v.name] = f"hook not loaded: {', '.join(lacking)}"
        else:
            avail.append(v.name)
    return avail, unavail


def dtype(names: NameLike | Iterable[NameLike] | None = None, *, identity: bool = False,
          timestamp: bool = False, align: bool = True) -> np.dtype:
    """Structured dtype with one column per variable (canonical names, given order).

    ``identity`` prepends IDENTITY_FIELDS; ``timestamp`` then adds TIMESTAMP_FIELD.
    ``align`` makes every field naturally aligned (C struct rules).
    """
    vars_ = variables() if names is None else _as_list(names)
    fields: list[tuple] = []
    if identity:
        fields.extend(IDENTITY_FIELDS)
    if timestamp:
        fields.append(TIMESTAMP_FIELD)
    seen = {f[0] for f in fields}
    for var in vars_:
        if var.name in seen:
            raise ValueError(f"duplicate column {var.name!r}")
        seen.add(var.name)
        fields.append((var.name, var.dtype))
    return np.dtype(fields, align=align)


# ---------------------------------------------------------------------- INIT handling

InitTables = Sequence[Sequence[tuple[str, int]]]


def _normalize_init(tables: InitTables) -> tuple[tuple[tuple[str, int], ...], ...]:
    if isinstance(tables, (str, bytes)) or len(tables) != len(TABLES):
        n = "a string" if isinstance(tables, (str, bytes)) else f"{len(tables)} tables"
        raise LayoutMismatch(f"INIT describes {n}; tcp_estats always has {len(TABLES)}")
    out = []
    for table in tables:
        rows = []
        for name, code in table:
            if isinstance(name, bytes):
                name = name.decode("ascii", "replace")
            rows.append((str(name), int(code)))
        out.append(tuple(rows))
    return tuple(out)


def _differences(lay: Layout, got: tuple[tuple[tuple[str, int], ...], ...]) -> list[tuple]:
    diffs = []
    for t, (want, have) in enumerate(zip(lay.tables, got)):
        for i in range(max(len(want), len(have))):
            w = (want[i].name, want[i].type_code) if i < len(want) else None
            h = have[i] if i < len(have) else None
            if w != h:
                diffs.append((t, i, h, w))
    return diffs


def _describe(entry: tuple[str, int] | None) -> str:
    if entry is None:
        return "nothing"
    name, code = entry
    return f"{name!r} (type {code} {TYPE_NAMES.get(code, '?')})"


def identify_layout(tables: InitTables) -> Layout:
    """Known layout matching an INIT reply: 6 lists of (name, type code) in index order.

    Raises LayoutMismatch naming the first difference from the nearest known layout.
    """
    got = _normalize_init(tables)
    names = {name for table in got for name, _ in table}
    # ABI §7.5 step 3 picks a candidate by marker names; it breaks ties below.
    if "OtherReductions" in names:
        preferred = "old"
    elif "LostRetransmitSegs" in names:
        preferred = "head"
    else:
        preferred = "middle"
    ranked = sorted(((_differences(lay, got), lay) for lay in _LAYOUTS.values()),
                    key=lambda d: (len(d[0]), d[1].name != preferred))
    diffs, nearest = ranked[0]
    if not diffs:
        return nearest
    t, i, have, want = diffs[0]
    raise LayoutMismatch(
        f"INIT variable list matches no known tcp_estats layout; nearest is "
        f"{nearest.name!r} ({nearest.module_tags}) with {len(diffs)} difference(s), first "
        f"at {TABLES[t]} index {i}: kernel reports {_describe(have)}, client expects "
        f"{_describe(want)}",
        nearest=nearest.name, table=TABLES[t], index=i, got=have, expected=want)


def format_getmib(layout_or_tables: Layout | str | InitTables) -> str:
    """The classic ``web10g-getmib`` text for a Layout, layout name or INIT tables."""
    if isinstance(layout_or_tables, str):
        layout_or_tables = layout(layout_or_tables)
    if isinstance(layout_or_tables, Layout):
        tables = tuple(tuple((v.name, v.type_code) for v in t)
                       for t in layout_or_tables.tables)
    else:
        tables = _normalize_init(layout_or_tables)
    total = sum(len(t) for t in tables)
    lines = [f"TCP Extended Statistics (RFC 4898) contains {len(tables)} table(s) "
             f"comprised of {total} variables."]
    for title, table in zip(TABLE_TITLES, tables):
        lines.append(f"{title} Table:")
        lines.extend(f"\t{name}\t({code})" for name, code in table)
    return "\n".join(lines) + "\n"


def wire_type_for(type_code: int, name: str) -> str:
    """Wire type of a variable from its INIT type code (ABI §7.3)."""
    if type_code in (0, 1):
        return "s32"
    if type_code in (2, 3, 4):
        return "s32" if name == "SoftErrorReason" else "u32"
    if type_code in (5, 6):
        return "u64"
    if type_code == 9:
        return "u8"
    # §7.3 omits codes 7 and 8 (no variable uses them); follow their SNMP base types:
    # TimeStamp is TimeTicks (unsigned 32), TruthValue an INTEGER enumeration.
    if type_code == 7:
        return "u32"
    if type_code == 8:
        return "s32"
    raise ValueError(f"unknown tcp_estats type code {type_code!r} for {name!r}")
