/* Where a decoder puts its next row: the caller's array while it has room, then a
 * growing spill area, so no row is lost when flows outnumber the array; the Cython side
 * moves the spill into a larger array once it holds the GIL again. Shared by both
 * decoders. */
#ifndef W10G_ROWS_H
#define W10G_ROWS_H
#include <stdlib.h>

static inline char *w10g_row_slot(char *rows, size_t itemsize, size_t capacity, size_t n,
                                  char **spill, size_t *spill_cap)
{
    if (n < capacity)
        return rows + n * itemsize;
    size_t k = n - capacity;
    if (k >= *spill_cap) {
        size_t cap = *spill_cap ? *spill_cap * 2 : (capacity > 256 ? capacity : 256);
        char *p = realloc(*spill, cap * itemsize);
        if (!p)
            return NULL;
        *spill = p;
        *spill_cap = cap;
    }
    return *spill + k * itemsize;
}

#endif
