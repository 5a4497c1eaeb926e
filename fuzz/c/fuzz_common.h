/* Shared by the libFuzzer harnesses of the C decoders (fuzz/c/fuzz_*.c).
 *
 * Each harness drives a decoder exactly as the package does (the callback under libmnl's
 * mnl_cb_run after the same framing check, or w10g_eb_decode), on inputs laid out as
 *   [config bytes][u16 length][chunk][u16 length][chunk]...
 * where each chunk is one datagram (or one read) copied into a heap buffer of exactly its
 * size, so that ASan sees any read past what the kernel would have sent. A chunk of
 * length 0 ends a "dump" (a sample). A length past the end takes what is left.
 */
#ifndef W10G_FUZZ_COMMON_H
#define W10G_FUZZ_COMMON_H
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <linux/netlink.h>

/* web10g/_netlink.pyx frames_ok(), verbatim in C: whether a datagram is exactly a
 * sequence of whole netlink messages (checked before libmnl walks it). */
static inline int fuzz_frames_ok(const char *buf, size_t n)
{
    while (n > 0) {
        uint32_t mlen;
        if (n < NLMSG_HDRLEN)
            return 0;
        memcpy(&mlen, buf, 4);
        if (mlen < NLMSG_HDRLEN || mlen > n)
            return 0;
        size_t step = NLA_ALIGN(mlen);
        if (step > n)
            step = n;
        buf += step;
        n -= step;
    }
    return 1;
}

struct fuzz_chunks {
    const uint8_t *p;
    size_t left;
};

/* The next chunk: 1 and (*chunk, *len) set, or 0 at the end of the input. */
static inline int fuzz_next(struct fuzz_chunks *c, const uint8_t **chunk, size_t *len)
{
    if (c->left == 0)
        return 0;
    if (c->left < 2) {
        *chunk = c->p;
        *len = c->left;
        c->left = 0;
        return 1;
    }
    size_t n = (size_t)c->p[0] | (size_t)c->p[1] << 8;
    c->p += 2;
    c->left -= 2;
    if (n > c->left)
        n = c->left;
    *chunk = c->p;
    *len = n;
    c->p += n;
    c->left -= n;
    return 1;
}

/* Offsets of columns laid out as numpy's aligned structured dtype lays them out (each
 * field at a multiple of its alignment; 16-byte addresses and strings align to 1). */
static inline size_t fuzz_place(size_t *pos, size_t width, size_t *maxalign)
{
    size_t align = width >= 16 ? 1 : width;
    size_t at = (*pos + align - 1) / align * align;
    *pos = at + width;
    if (align > *maxalign)
        *maxalign = align;
    return at;
}

#endif
