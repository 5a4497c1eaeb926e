# cython: language_level=3
"""Moving a decoder's spilled rows into a grown array (shared by both backends)."""
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
