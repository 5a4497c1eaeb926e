/* Non-temporal row stores, shared by the decoders that write wide rows.
 *
 * A dump of 20,000 rows of every column writes ~14 MB, which no cache keeps; ordinary
 * stores first read each destination line in, and the copy then costs as much as the
 * decoding. w10g_stream_out() writes a finished row around the cache (16-byte streaming
 * stores; rows are 8-aligned, so one 8-byte store may come first); w10g_stream_fence()
 * orders them before the caller's next reads. Elsewhere than x86-64 both are plain. */
#ifndef W10G_STREAM_H
#define W10G_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <emmintrin.h>
#define W10G_CAN_STREAM 1
static inline void w10g_stream_out(char *dst, const char *src, size_t len)
{
    size_t i = 0;
    if ((uintptr_t)dst & 8) {             /* rows are 8-aligned: one word to reach 16 */
        long long v;
        memcpy(&v, src, 8);
        _mm_stream_si64((long long *)(void *)dst, v);
        i = 8;
    }
    for (; i + 16 <= len; i += 16)
        _mm_stream_si128((__m128i *)(void *)(dst + i),
                         _mm_loadu_si128((const __m128i *)(const void *)(src + i)));
    if (i + 8 <= len) {
        long long v;
        memcpy(&v, src + i, 8);
        _mm_stream_si64((long long *)(void *)(dst + i), v);
        i += 8;
    }
    if (i < len)
        memcpy(dst + i, src + i, len - i);
}
static inline void w10g_stream_fence(void) { _mm_sfence(); }
#else
#define W10G_CAN_STREAM 0
static inline void w10g_stream_out(char *dst, const char *src, size_t len)
{
    memcpy(dst, src, len);
}
static inline void w10g_stream_fence(void) {}
#endif

#endif /* W10G_STREAM_H */
