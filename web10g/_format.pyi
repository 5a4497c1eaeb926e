from typing import Any

import numpy as np

KIND_UINT: int
KIND_INT: int
KIND_FLOAT: int
KIND_ADDR: int
KIND_TIME: int
KIND_STR: int

class TextCache:
    reused: int
    formatted: int
    def __init__(self) -> None: ...
    def clear(self) -> None: ...

def format_rows(rows: np.ndarray, columns: Any, sep: bytes = ..., end: bytes = ...,
                blank: dict[str, np.ndarray] | None = ..., file: Any = ...,
                cache: TextCache | None = ...) -> Any: ...
def kind_of(dtype_field: Any) -> int: ...
