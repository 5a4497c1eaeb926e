/* Recording frames as differences from the previous sample; see w10g_delta.h. */
#include "w10g_delta.h"

#include <string.h>

#define ENTRY_HDR 12u          /* u32 datagram length, i64 receive time */
#define MSG_MIN 16u            /* sizeof(struct nlmsghdr) */

static inline uint32_t rd32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* A message's extent: its length rounded up to 4, cut at the end of its datagram. */
static inline size_t span_of(uint32_t mlen, size_t room)
{
    size_t s = ((size_t)mlen + 3u) & ~(size_t)3u;
    return s < room ? s : room;
}

/* The entry (datagram) whose header is at pos: 0 and the end of its datagram, or -1 when
 * the header or the datagram it announces is cut. */
static inline int entry_at(const uint8_t *buf, size_t len, size_t pos, size_t *end)
{
    if (len - pos < ENTRY_HDR)
        return -1;
    uint32_t n = rd32(buf + pos);
    if (n > len - pos - ENTRY_HDR)
        return -1;
    *end = pos + ENTRY_HDR + n;
    return 0;
}

/* The previous sample's messages, one at a time. */
struct cursor {
    const uint8_t *p;
    size_t len, pos, end;      /* end: the end of the current datagram */
    int alive;
};

static void cursor_init(struct cursor *c, const uint8_t *p, size_t len)
{
    c->p = p;
    c->len = p ? len : 0;
    c->pos = c->end = 0;
    c->alive = p != NULL;
}

/* The next message (offset, extent, length); 0 and dead at the end or at damage. */
static int cursor_next(struct cursor *c, size_t *off, size_t *span, uint32_t *mlen)
{
    if (!c->alive)
        return 0;
    while (c->pos == c->end) {           /* the next entry (datagrams may be empty) */
        if (entry_at(c->p, c->len, c->pos, &c->end) < 0) {
            c->alive = 0;
            return 0;
        }
        c->pos += ENTRY_HDR;
    }
    size_t room = c->end - c->pos;
    uint32_t m = room >= MSG_MIN ? rd32(c->p + c->pos) : 0;
    if (m < MSG_MIN || m > room) {
        c->alive = 0;
        return 0;
    }
    *off = c->pos;
    *mlen = m;
    *span = span_of(m, room);
    c->pos += *span;
    return 1;
}

static inline void xor_into(uint8_t *out, const uint8_t *a, const uint8_t *b, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        x ^= y;
        memcpy(out + i, &x, 8);
    }
    for (; i < n; i++)
        out[i] = a[i] ^ b[i];
}

long w10g_delta_encode(const uint8_t *prev, size_t plen, const uint8_t *cur, size_t clen,
                       uint8_t *out)
{
    struct cursor pc;
    long paired = 0;
    size_t pos = 0;
    cursor_init(&pc, prev, plen);
    while (pos < clen) {
        size_t end;
        if (entry_at(cur, clen, pos, &end) < 0)
            return -1;
        memcpy(out + pos, cur + pos, ENTRY_HDR);
        for (pos += ENTRY_HDR; pos < end;) {
            size_t room = end - pos;
            uint32_t m = room >= MSG_MIN ? rd32(cur + pos) : 0;
            if (m < MSG_MIN || m > room)
                return -1;
            size_t span = span_of(m, room), poff, pspan;
            uint32_t pm;
            if (cursor_next(&pc, &poff, &pspan, &pm) && pm == m && pspan == span) {
                xor_into(out + pos, cur + pos, prev + poff, span);   /* length field -> 0 */
                paired++;
            } else {
                memcpy(out + pos, cur + pos, span);
            }
            pos += span;
        }
    }
    return paired;
}

int w10g_delta_decode(const uint8_t *prev, size_t plen, const uint8_t *delta, size_t dlen,
                      uint8_t *out)
{
    struct cursor pc;
    size_t pos = 0;
    cursor_init(&pc, prev, plen);
    while (pos < dlen) {
        size_t end;
        if (entry_at(delta, dlen, pos, &end) < 0)
            return -1;
        memcpy(out + pos, delta + pos, ENTRY_HDR);
        for (pos += ENTRY_HDR; pos < end;) {
            size_t room = end - pos;
            if (room < MSG_MIN)
                return -1;
            uint32_t m = rd32(delta + pos);
            size_t poff = 0, pspan = 0;
            uint32_t pm = 0;
            int have = cursor_next(&pc, &poff, &pspan, &pm);
            if (m == 0) {                /* XOR-ed with the previous sample's message */
                if (!have || pm > room || pspan != span_of(pm, room))
                    return -1;
                xor_into(out + pos, delta + pos, prev + poff, pspan);
                pos += pspan;
            } else {
                if (m < MSG_MIN || m > room)
                    return -1;
                size_t span = span_of(m, room);
                memcpy(out + pos, delta + pos, span);
                pos += span;
            }
        }
    }
    return 0;
}
