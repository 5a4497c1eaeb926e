/* Rows built whole, then copied out in runs: shared by the decoders that fill wide rows.
 *
 * A decoder computes every column of a record into one fixed C struct (straight-line
 * stores at constant offsets: no per-column "was it asked for?" load and branch, which
 * cost more than most columns' values), then copies the selected columns to the output
 * row. The copy plan is made once per configuration: the selected columns sorted by
 * output offset, and columns adjacent in both rows (with the padding between them)
 * merged into one run. When the output's row type is the struct itself ("direct"), the
 * whole struct is the only run. */
#ifndef W10G_RUNS_H
#define W10G_RUNS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct w10g_run {
    uint32_t src, dst, len;
};

/* The plan for a row of `itemsize` bytes whose column f sits at off[f] (-1: not
 * selected); in the struct (`rowsize` bytes) it sits at src_off[f], width[f] bytes.
 * Fills runs[0, nfields) and returns how many there are; *direct says whether the
 * output row is the struct itself. */
static inline uint32_t w10g_runs_plan(struct w10g_run *r, int nfields, const int32_t *off,
                                      const uint16_t *src_off, const uint8_t *width,
                                      size_t itemsize, size_t rowsize, int *direct)
{
    uint32_t n = 0;
    int same = itemsize == rowsize;
    for (int f = 0; f < nfields; f++) {
        if (off[f] != (int32_t)src_off[f])
            same = 0;
        if (off[f] < 0)
            continue;
        /* insertion by output offset (once per plan; a few hundred columns at most) */
        uint32_t k = n++;
        while (k && r[k - 1].dst > (uint32_t)off[f]) {
            r[k] = r[k - 1];
            k--;
        }
        r[k].src = src_off[f];
        r[k].dst = (uint32_t)off[f];
        r[k].len = width[f];
    }
    uint32_t m = 0;
    for (uint32_t k = 0; k < n; k++) {
        if (m && r[m - 1].src + r[m - 1].len == r[k].src
              && r[m - 1].dst + r[m - 1].len == r[k].dst) {
            r[m - 1].len += r[k].len;
        } else {
            r[m++] = r[k];
        }
    }
    *direct = same;
    return m;
}

/* 16 bytes through a vector register. The empty asm keeps GCC from turning a loop of
 * these back into `rep movsq` (what it emits for a copy loop or a fixed-size memcpy of a
 * few hundred bytes at -O2: its start-up cost made the copy of tcp_info an eighth of the
 * sock_diag decoder's time). */
typedef uint64_t w10g_v16 __attribute__((vector_size(16)));
#if defined(__x86_64__) || defined(__i386__)
#define W10G_KEEP_VEC(v) __asm__("" : "+x"(v))
#elif defined(__aarch64__)
#define W10G_KEEP_VEC(v) __asm__("" : "+w"(v))
#else
#define W10G_KEEP_VEC(v) ((void)0)
#endif
static inline void w10g_move16(char *dst, const char *src)
{
    w10g_v16 v;
    memcpy(&v, src, 16);
    W10G_KEEP_VEC(v);
    memcpy(dst, &v, 16);
}

/* One run: overlapping fixed-size moves, inline (no call per run). */
static inline void w10g_copy_run(char *dst, const char *src, size_t len)
{
    if (len >= 16) {
        size_t i = 0;
        for (; i + 16 <= len; i += 16)
            w10g_move16(dst + i, src + i);
        if (i < len)
            w10g_move16(dst + len - 16, src + len - 16);
    } else if (len >= 8) {
        uint64_t a, b;
        memcpy(&a, src, 8);
        memcpy(&b, src + len - 8, 8);
        memcpy(dst, &a, 8);
        memcpy(dst + len - 8, &b, 8);
    } else if (len >= 4) {
        uint32_t a, b;
        memcpy(&a, src, 4);
        memcpy(&b, src + len - 4, 4);
        memcpy(dst, &a, 4);
        memcpy(dst + len - 4, &b, 4);
    } else if (len >= 2) {
        uint16_t a, b;
        memcpy(&a, src, 2);
        memcpy(&b, src + len - 2, 2);
        memcpy(dst, &a, 2);
        memcpy(dst + len - 2, &b, 2);
    } else if (len) {
        dst[0] = src[0];
    }
}

static inline void w10g_runs_copy(char *dst, const char *src, const struct w10g_run *runs,
                                  uint32_t n)
{
    for (uint32_t k = 0; k < n; k++)
        w10g_copy_run(dst + runs[k].dst, src + runs[k].src, runs[k].len);
}

#endif /* W10G_RUNS_H */
