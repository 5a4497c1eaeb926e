from typing import Any

import numpy as np

P_INFO: int
P_COUNTERS: int
P_SEQ: int
REC_SIZE: int
FIELDS_SIZE: int
HDR_SIZE: int
FIELD_NAMES: tuple[str, ...]
FIELD_KINDS: tuple[str, ...]

class Decoder:
    dtype: np.dtype
    hz: int
    hooks: int
    last_now_ns: int
    last_offset_ns: int
    direct: bool
    copy_runs: int
    def __init__(self, dtype: Any, *, states: int = ..., families: Any = ...,
                 sysctls: Any = ..., hz: int = ...) -> None: ...
    def read(self, fd: int, out: np.ndarray | None = ..., *,
             keep: bool = ...) -> tuple[np.ndarray, int]: ...
    def last_bytes(self) -> bytes: ...
    def decode(self, data: Any, out: np.ndarray | None = ..., *, now_ns: int = ...,
               offset_ns: int = ..., netns_ino: int = ...) -> tuple[np.ndarray, int]: ...

def row_layout() -> tuple[dict[str, int], int]: ...
def clock_offset() -> int: ...
