from collections.abc import Sequence

import numpy as np

def gather(rows: np.ndarray, fields: Sequence[tuple[int, int]], outs: Sequence[np.ndarray],
           start: int = ..., perm: np.ndarray | None = ..., stream: bool = ...) -> int: ...
def transpose(src: np.ndarray, out: np.ndarray, n: int, k: int) -> None: ...
