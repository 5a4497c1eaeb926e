from typing import Any

import numpy as np

from web10g._netlink import NetlinkSocket

ACCECN_BITFIELD: int
DERIVED: int
FIELD_NAMES: tuple[str, ...]
FIELD_KINDS: tuple[str, ...]
FIELD_WIDTHS: tuple[int, ...]

class Dumper:
    dtype: np.dtype
    ext: int
    states: int
    families: tuple[int, ...]
    filtered: bool
    flows_tracked: int
    flow_lookups: tuple[int, int]
    direct: bool
    copy_runs: int
    last_rows: int
    recycled: int
    allocated: int
    def __init__(self, sock: NetlinkSocket, dtype: Any, *, ext: int = ..., states: int = ...,
                 bytecode: bytes = ..., families: Any = ..., flags: int = ...,
                 sysctls: Any = ...) -> None: ...
    def dump(self, out: np.ndarray | None = ...) -> tuple[np.ndarray, int]: ...
    def lookup(self, family: int, sockid: bytes,
               out: np.ndarray | None = ...) -> tuple[np.ndarray, int]: ...
    def receive(self, out: np.ndarray | None = ...) -> tuple[np.ndarray, int, int]: ...

class FlowTable:
    def __len__(self) -> int: ...

def decode_datagrams(datagrams: Any, dtype: Any, *, timestamp_ns: int = ..., flags: int = ...,
                     sysctls: Any = ..., out: np.ndarray | None = ...,
                     flows: FlowTable | None = ...,
                     timestamps: Any = ...) -> tuple[np.ndarray, int]: ...
def row_layout() -> tuple[dict[str, int], int]: ...
def tcp_info_layout() -> tuple[dict[str, tuple[int, int]], int]: ...
