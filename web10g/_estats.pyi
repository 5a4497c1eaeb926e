from typing import Any

import numpy as np

from web10g._netlink import NetlinkSocket

IDENT_NAMES: tuple[str, ...]
NO_DATA: int

class Reader:
    dtype: np.dtype
    batch_limit: int
    usec_mult: int
    time_sample: tuple[int, int, int] | None
    def __init__(self, sock: NetlinkSocket, family_id: int, dtype: Any, positions: Any,
                 widths: Any, masks: Any, *, state_table: int = ..., state_index: int = ...,
                 usec_mult: int = ..., batch_limit: int = ...) -> None: ...
    def list_conns(self, out: Any = ...,
                   token: int | None = ...) -> tuple[np.ndarray, int, int]: ...
    def read_all(self, out: Any = ...,
                 token: int | None = ...) -> tuple[np.ndarray, int, int]: ...
    def read_vars(self, cids: Any, out: Any = ...) -> tuple[np.ndarray, int, np.ndarray]: ...
    def decode(self, datagrams: Any, cmd: int, *, out: Any = ...) -> tuple[np.ndarray, int]: ...
