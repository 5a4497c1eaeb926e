/* errno setter for Cython code: Cython makes any name assigned inside a function a local
 * variable, so `errno = 0` in a .pyx would not reach the C library's errno. */
#ifndef W10G_ERRNO_H
#define W10G_ERRNO_H
#include <errno.h>

static inline void w10g_set_errno(int e) { errno = e; }

#endif
