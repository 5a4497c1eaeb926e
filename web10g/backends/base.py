"""The Agent contract: what every backend offers, and what they share.

Consumers (the tools, the monitor, recordings, deltas, frames, plots) talk to
:class:`Agent` and ask ``agent.capabilities`` what it can do; they never compare
``agent.backend`` (kept as information) to a name. A backend is one module in this
package that subclasses :class:`BaseAgent`, plus one line in the registry
(``web10g.backends.REGISTRY``), plus one parameter of the contract tests
(tests/test_contract.py).

The contract in short:

- ``read_all(vars, *, filter, states, family, out)`` returns one row per flow as a
  structured array of ``agent.dtype(vars)``. Without ``out`` the array is the caller's
  (a new one each call). With ``out`` the result is a view of ``out``'s first rows, or,
  when the flows outnumbered it, of a larger array that replaces it (``result.base``);
  nothing is lost and nothing else is allocated.
- ``states=None`` means :data:`web10g.rows.DEFAULT_STATES` ("open": the connections a
  Web10G kernel instruments) on every backend; ``states="all"`` lists every socket.
- ``reader(vars, ...)`` binds a selection once and returns ``read(out) -> rows``;
  ``sampler(vars, interval=...)`` samples on a background thread; ``clone()`` opens an
  independent agent on the same source (for another thread).
- ``available(rows, name)``: per row, whether ``name`` was reported.
- Threads: every agent may be shared between threads, on every backend. Each public
  call (``read_all``, ``list_conns``, ``read_vars``, ``read_many``, ``write_var``,
  ``kill``, ``closed``, ``watch_closed``, ``owners``, ``socket_ids``, ``timestamp``,
  ``close``, and every ``read`` of a ``reader()``) holds the agent's lock (an RLock,
  taken in :class:`BaseAgent`, so a backend cannot forget it): concurrent calls run one
  after another, each with correct results, never interleaved (netlink sockets carry
  one request at a time; decoders, scratch arrays and replay positions are per agent).
  The cost is one uncontended lock per call. For parallel reads, ``clone()`` gives each
  thread its own agent (the sampler does). A lower layer used directly (a
  ``NetlinkSocket`` shared by threads) still refuses a second request in flight with a
  RuntimeError instead of mixing replies.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from web10g import errors, mib
from web10g import rows as _rows

if TYPE_CHECKING:
    from web10g.sampler import Sampler

Vars = None | str | Iterable[Any]


@dataclass(frozen=True)
class Capabilities:
    """What an agent can do, for consumers that must not branch on backend names."""

    #: reads a running kernel (False: a recording, which is replayed as fast as it is read)
    live: bool = True
    #: ``closed()`` delivers the final statistics of flows that ended between samples
    closed_flows: bool = False
    #: ``owners(rows)`` can find the owning process of a flow
    owners: bool = False
    #: ``kill(cid)`` aborts a flow
    kill: bool = False
    #: the variables ``write_var`` accepts
    writable: frozenset[str] = field(default_factory=frozenset)
    #: ``web10g.recording.Recorder`` can record this agent's replies
    recordable: bool = False
    #: filters run in the kernel (else client-side with the same semantics)
    kernel_filter: bool = False
    #: ``states=None`` keeps only the default ("open") states; False: every flow listed
    default_states: bool = False
    #: ``read_all(active_within=MS)`` asks the kernel for recently active flows only
    activity_filter: bool = False
    #: ``netns=`` selects a network namespace
    namespaces: bool = False
    #: rows carry the uid and socket inode of each flow
    uid_inode: bool = False
    #: what one bit of the ``present`` column stands for ("tcp_info group", "MIB table")
    present_unit: str = ""


@runtime_checkable
class Agent(Protocol):
    """The public surface every backend implements (see the module docstring)."""

    backend: str
    capabilities: Capabilities
    notes: list[str]

    def close(self) -> None: ...
    def __enter__(self) -> Agent: ...
    def __exit__(self, *exc: object) -> None: ...
    def clone(self) -> Agent: ...
    def variables(self) -> list[mib.Variable]: ...
    def dtype(self, vars: Vars = None) -> np.dtype: ...
    def read_all(self, vars: Vars = None, *, filter: Any = None,
                 out: np.ndarray | None = None, states: Any = None,
                 family: Any = None) -> np.ndarray: ...
    def reader(self, vars: Vars = None, *, filter: Any = None, states: Any = None,
               family: Any = None) -> Any: ...
    def sampler(self, vars: Vars = None, *, interval: float, **kw: Any) -> Sampler: ...
    def list_conns(self, *, filter: Any = None, states: Any = None,
                   family: Any = None) -> np.ndarray: ...
    def read_vars(self, cid: int, vars: Vars = None) -> np.void: ...
    def available(self, rows: np.ndarray, name: str) -> np.ndarray: ...
    @property
    def unavailable(self) -> set[str]: ...
    def socket_ids(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def owners(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def write_var(self, cid: int, name: str, value: Any) -> None: ...
    def kill(self, cid: int) -> None: ...
    def watch_closed(self) -> None: ...
    def closed(self, vars: Vars = None) -> np.ndarray: ...
    @property
    def mib_tables(self) -> list[list[tuple[str, int]]] | None: ...


def _check_out(out: Any, dtype: np.dtype) -> None:
    """The checks the C decoders make of ``out``, for rows that reach it from Python."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, not {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError("out has the wrong dtype for this selection: allocate it with "
                        "the dtype the agent reports (agent.dtype(vars))")
    if out.ndim != 1 or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writable, C-contiguous, one-dimensional array")


#: The public calls every agent runs under its lock (the threading contract above).
SERIALISED = frozenset((
    "read_all", "reader", "list_conns", "read_vars", "read_many", "write_var", "kill",
    "closed", "watch_closed", "owners", "socket_ids", "timestamp", "close",
    "recorder_state"))


def _serialised(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` under the agent's lock; ``reader`` also locks each ``read`` it returns."""
    if getattr(fn, "__web10g_serialised__", False):
        return fn
    if name == "reader":
        @functools.wraps(fn)
        def reader(self: Any, *args: Any, **kw: Any) -> Any:
            lock = self._call_lock
            with lock:
                read = fn(self, *args, **kw)

            @functools.wraps(read)
            def locked_read(*a: Any, **k: Any) -> Any:
                with lock:
                    return read(*a, **k)
            return locked_read
        wrapper = reader
    else:
        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kw: Any) -> Any:
            with self._call_lock:
                return fn(self, *args, **kw)
    wrapper.__web10g_serialised__ = True  # type: ignore[attr-defined]
    return wrapper


def _vars_key(vars: Vars) -> Any:
    if vars is None:
        return None
    if isinstance(vars, str):
        return (vars,)
    return tuple(v if isinstance(v, str) else v.name for v in vars)


class BaseAgent:
    """What every backend shares: lifetime, variable selection, row types, the ``out=``
    contract, client-side filtering, sampling. Subclasses set ``backend``,
    ``capabilities``, ``meta_fields`` and implement the reads."""

    backend = "base"
    capabilities = Capabilities()
    #: metadata columns after ``timestamp`` and ``present`` (sock_diag: tcp_info_len)
    meta_fields: list[tuple[str, str]] = []

    notes: list[str]
    #: held by every public call (the threading contract in the module docstring)
    _call_lock: threading.RLock

    def __new__(cls, *args: Any, **kw: Any) -> Any:
        self = super().__new__(cls)
        self._call_lock = threading.RLock()
        return self

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        for name in SERIALISED & set(vars(cls)):
            attr = vars(cls)[name]
            if callable(attr) and not isinstance(attr, (staticmethod, classmethod)):
                setattr(cls, name, _serialised(name, attr))

    @classmethod
    def describe_variables(cls) -> str | None:
        """A backend's own ``getmib`` listing (how it supplies each variable), without
        opening it; None: the generic listing of ``agent.variables()`` applies."""
        return None

    # -- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def clone(self) -> Any:
        raise NotImplementedError

    def sampler(self, vars: Vars = None, *, interval: float, **kw: Any) -> Sampler:
        """A background sampler of this agent's flows: see :class:`web10g.sampler.Sampler`."""
        from web10g.sampler import Sampler

        return Sampler(self, vars, interval=interval, **kw)

    # -- columns ---------------------------------------------------------------------
    @property
    def always(self) -> frozenset[str]:
        """Columns every row has (identity and metadata)."""
        return frozenset(_rows.IDENTITY_NAMES) | {n for n, _ in _rows.META_FIELDS} | {
            n for n, _ in self.meta_fields}

    def variables(self) -> list[mib.Variable]:
        raise NotImplementedError

    def _unavailable_reason(self, v: mib.Variable) -> str:
        return f"{v.name} is not available on the {self.backend} backend"

    def _select(self, vars: Vars) -> list[mib.Variable]:
        if vars is None:
            return self.variables()
        names = [vars] if isinstance(vars, str) else list(vars)
        usable = {v.name for v in self.variables()}
        always = self.always
        out: list[mib.Variable] = []
        seen: set[str] = set()
        for name in names:
            if isinstance(name, str) and name in always:
                continue        # identity and metadata columns are always there
            v = mib.lookup(name) if isinstance(name, str) else name
            if v.name in always:
                continue
            if v.name not in usable:
                raise errors.VariableUnavailable(self._unavailable_reason(v))
            if v.name in seen:
                raise ValueError(f"variable {v.name} is selected twice")
            seen.add(v.name)
            out.append(v)
        return out

    def _presence(self, selected: list[mib.Variable]) -> _rows.Presence | None:
        return None

    def dtype(self, vars: Vars = None) -> np.dtype:
        """The dtype of ``read_all(vars)`` rows: identity, metadata, then the variables.

        Kept per selection: building it (selection, presence, the shared dtype's key)
        costs ~0.5 ms for every variable, as much as a whole dump of a few hundred flows,
        and every read asks for it. An agent's variables do not change while it is open."""
        cache: dict[Any, np.dtype] = self.__dict__.setdefault("_dtype_cache", {})
        key = _vars_key(vars)
        dt = cache.get(key)
        if dt is not None:
            return dt
        selected = self._select(vars)
        fields: list[Any] = list(_rows.IDENTITY_FIELDS) + _rows.META_FIELDS + self.meta_fields
        fields += [(v.name, v.dtype) for v in selected]
        dt = _rows.row_dtype(fields, self._presence(selected))
        if len(cache) >= 256:           # a program cycling through selections
            cache.clear()
        cache[key] = dt
        return dt

    # -- the out= contract ------------------------------------------------------------
    def _target(self, dtype: np.dtype, out: np.ndarray | None, filtering: bool,
                hint: int) -> np.ndarray:
        """Where to decode: ``out`` itself (or a new array for the caller) when every
        decoded row is returned; the agent's scratch array when rows are filtered here,
        so that ``out`` receives only the selected ones."""
        if not filtering:
            return self._fresh(dtype, hint) if out is None else out
        if out is not None:
            _check_out(out, dtype)
        scratch = self.__dict__.setdefault("_scratch", {})
        arr = scratch.get(dtype)
        if arr is None or len(arr) < hint:
            arr = scratch[dtype] = self._fresh(dtype, hint)
        return arr

    def _deliver(self, arr: np.ndarray, n: int, keep: np.ndarray | None,
                 out: np.ndarray | None, target: np.ndarray) -> np.ndarray:
        """The rows of ``arr[:n]`` that ``keep`` selects, per the ``out=`` contract.
        ``target`` is what the decode was given (``arr`` is it, or its grown
        replacement)."""
        scratch = self.__dict__.get("_scratch", {})
        if target is scratch.get(arr.dtype) or (arr is not target and
                                                 scratch.get(arr.dtype) is target):
            scratch[arr.dtype] = arr                # keep a grown scratch array
            picked = arr[:n] if keep is None else arr[:n][keep]
            m = len(picked)
            if out is None:
                return _rows.as_rows(_rows.copy(picked) if keep is None else picked)
            if len(out) < m:
                out = np.empty(max(m, 2 * len(out)), dtype=out.dtype)
            out[:m] = picked
            return _rows.as_rows(out[:m])
        if keep is None:
            return _rows.as_rows(arr[:n])
        picked = arr[:n][keep]
        m = len(picked)
        arr[:m] = picked
        return _rows.as_rows(arr[:m])

    def _fresh(self, dtype: np.dtype, hint: int) -> np.ndarray:
        """A new array the caller will own, sized for the flows seen last time."""
        return np.empty(max(64, hint + hint // 8 + 16), dtype=dtype)

    # -- defaults for what a backend cannot do ----------------------------------------
    def reader(self, vars: Vars = None, *, filter: Any = None, states: Any = None,
               family: Any = None) -> Any:
        """``read(out) -> rows``: read_all for one fixed selection, resolved once."""
        read_all = self.read_all

        def read(out: np.ndarray) -> np.ndarray:
            return read_all(vars, filter=filter, states=states, family=family, out=out)
        return read

    def read_all(self, vars: Vars = None, *, filter: Any = None,
                 out: np.ndarray | None = None, states: Any = None,
                 family: Any = None) -> np.ndarray:
        raise NotImplementedError

    @property
    def unavailable(self) -> set[str]:
        """Variables of this backend that this kernel (or recording) does not provide."""
        return set()

    def available(self, rows: np.ndarray, name: str) -> np.ndarray:
        """Per row: was ``name`` reported (so a 0 is a real 0)?"""
        col = _rows.column_name(rows, name)
        if col in self.unavailable:
            return np.zeros(len(rows), dtype=bool)
        return _rows.available(rows, col)

    @property
    def mib_tables(self) -> list[list[tuple[str, int]]] | None:
        """The kernel module's own MIB description (name, type code) by table, when the
        backend has one (estats' INIT reply); None otherwise."""
        return None

    def socket_ids(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uid, inode) of each row's socket as int64; -1 where unknown."""
        if not self.capabilities.uid_inode:
            return np.full(len(rows), -1, np.int64), np.full(len(rows), -1, np.int64)
        return rows["uid"].astype(np.int64), rows["inode"].astype(np.int64)

    def owners(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pid, command) of each row's socket; pid -1 and '' where unknown."""
        n = len(rows)
        return np.full(n, -1, dtype=np.int64), np.full(n, "", dtype=object)

    def write_var(self, cid: int, name: str, value: Any) -> None:
        raise errors.NotSupported(f"the {self.backend} backend cannot write variables")

    def kill(self, cid: int) -> None:
        raise errors.NotSupported(f"the {self.backend} backend cannot abort flows")

    def watch_closed(self) -> None:
        """Start collecting end-of-flow records now (``closed()`` returns them)."""
        raise errors.NotSupported(self._no_closed_reason())

    def closed(self, vars: Vars = None) -> np.ndarray:
        """Final statistics of the flows that ended since the previous call."""
        raise errors.NotSupported(self._no_closed_reason())

    def _no_closed_reason(self) -> str:
        return f"the {self.backend} backend sends no end-of-flow notifications"

    # -- recordings ---------------------------------------------------------------------
    def recorder_state(self) -> tuple[dict[str, Any], Any]:
        """(header entries a replay needs to decode, the socket to tap) for Recorder."""
        raise errors.NotSupported(f"the {self.backend} backend cannot be recorded")
