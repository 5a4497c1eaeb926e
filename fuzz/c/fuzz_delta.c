/* libFuzzer target: difference frames (csrc/w10g_delta.c), as web10g.recording reads
 * and writes them.
 *
 * Input: [u32 split][bytes]: the first split % (len + 1) bytes are the previous sample,
 * the rest the stored difference; each is copied into a heap buffer of exactly its
 * size (ASan sees any read past either). Checks: decoding never reads or writes out of
 * bounds; and whenever the second part is itself a well-formed sample, encoding it
 * against the first and decoding the result gives it back, byte for byte.
 */
#include "../../csrc/w10g_delta.h"
#include "fuzz_common.h"

static uint8_t *dup_exact(const uint8_t *p, size_t n)
{
    uint8_t *b = malloc(n ? n : 1);
    if (n)
        memcpy(b, p, n);
    return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint32_t split;
    memcpy(&split, data, 4);
    data += 4;
    size -= 4;
    size_t plen = split % (size + 1), dlen = size - plen;
    uint8_t *prev = dup_exact(data, plen);
    uint8_t *delta = dup_exact(data + plen, dlen);
    uint8_t *out = malloc(dlen ? dlen : 1);
    uint8_t *enc = malloc(dlen ? dlen : 1);
    const uint8_t *pp = (split & 0x80000000u) ? NULL : prev;    /* no previous sample */
    size_t pl = pp ? plen : 0;

    (void)w10g_delta_decode(pp, pl, delta, dlen, out);
    if (w10g_delta_encode(pp, pl, delta, dlen, enc) >= 0) {
        if (w10g_delta_decode(pp, pl, enc, dlen, out) != 0 || (dlen && memcmp(out, delta, dlen)))
            abort();                     /* a round trip that does not give the sample back */
    }
    free(prev);
    free(delta);
    free(out);
    free(enc);
    return 0;
}
