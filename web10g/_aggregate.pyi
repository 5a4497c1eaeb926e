from collections.abc import Iterable, Sequence

import numpy as np

K_LPORT: int
K_RPORT: int
K_STATE: int
K_RNET: int
K_LADDR: int

class FlowTable:
    nc: int
    open_flows: int
    limbo: int
    tombs: int
    tombs_made: int
    keys: int
    def __init__(self, widths: Sequence[int], keyparts: int, v4: int, v6: int,
                 af_inet6: int) -> None: ...
    def set_listening(self, ports: Iterable[int]) -> None: ...
    def groups(self, cid: np.ndarray, lport: np.ndarray | None, rport: np.ndarray | None,
               state: np.ndarray | None, family: np.ndarray | None,
               raddr: np.ndarray | None, laddr: np.ndarray | None, out: np.ndarray,
               tombs: bool = ..., slots: np.ndarray | None = ...) -> np.ndarray: ...
    def drop_new_keys(self) -> None: ...
    def add_key(self, row: int, gid: int, lport: np.ndarray | None,
                rport: np.ndarray | None, state: np.ndarray | None,
                family: np.ndarray | None, raddr: np.ndarray | None,
                laddr: np.ndarray | None) -> None: ...
    def fold(self, cid: np.ndarray, gid: np.ndarray, vals: np.ndarray, first: bool,
             now: float, totals: np.ndarray, flows: np.ndarray,
             hx: Sequence[np.ndarray] = ..., hbounds: Sequence[np.ndarray] = ...,
             hcounts: Sequence[np.ndarray] = ..., hsums: Sequence[np.ndarray] = ...,
             delta0: np.ndarray | None = ..., slots: np.ndarray | None = ...) -> None: ...
    def fold_closed(self, cid: np.ndarray, gid: np.ndarray, vals: np.ndarray, first: bool,
                    now: float, totals: np.ndarray) -> int: ...
    def expire(self, cut: float) -> None: ...
    def state(self, cid: int) -> tuple[str | None, list[int] | None, int | None]: ...
    def __len__(self) -> int: ...
