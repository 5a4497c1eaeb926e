# cython: language_level=3
"""The output array of a decode, shared by both backends: checked once before the nogil
block, and grown afterwards with the rows that spilled past its end."""
import numpy as np
cimport numpy as cnp
from libc.stdlib cimport free
from libc.string cimport memcpy


cdef inline object grow_rows(object out, object dtype, char *rows, size_t itemsize,
                             size_t cap, char **spill, size_t n, size_t newcap):
    """``out`` itself when the rows fitted, else a new array of ``newcap`` rows holding
    ``out``'s ``cap`` rows followed by the ``n - cap`` spilled ones. Frees the spill."""
    cdef cnp.ndarray grown
    try:
        if n <= cap:
            return out
        grown = np.empty(newcap, dtype=dtype)
        if cap:
            memcpy(cnp.PyArray_DATA(grown), rows, cap * itemsize)
        memcpy(<char *>cnp.PyArray_DATA(grown) + cap * itemsize, spill[0], (n - cap) * itemsize)
        return grown
    finally:
        free(spill[0])
        spill[0] = NULL


cdef inline object check_out(object out, object dtype):
    """``out`` if it can take rows of ``dtype`` (exact dtype, 1-D, C-contiguous,
    writable), an empty array of ``dtype`` for None; else a clear TypeError/ValueError."""
    if out is None:
        return np.empty(0, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, not {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError("out has the wrong dtype for this selection: allocate it with "
                        "the dtype the agent reports (agent.dtype(vars))")
    if out.ndim != 1 or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writable, C-contiguous, one-dimensional array")
    return out
