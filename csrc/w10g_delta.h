/* Recording frames as differences from the previous sample (docs/recording-format.md).
 *
 * A sample's raw bytes are entries (u32 length n, i64 receive time, n bytes of datagram)
 * and each datagram is a sequence of whole netlink messages (what the socket's
 * frames_ok admits: nlmsg_len >= 16 and within the datagram; a message spans its length
 * rounded up to 4, cut at the datagram's end). Idle and slow flows send the same
 * messages sample after sample, so message k of a sample is stored XOR-ed with message
 * k of the previous sample when both have the same length: its length field becomes 0
 * (a real nlmsg_len never is), which is how the decoder tells the two cases apart. Entry
 * headers and every other message are stored as they are. The result is as long as the
 * input and compresses several times smaller and faster (mostly zeros).
 *
 * Both functions walk the previous sample's messages in lockstep with the current one
 * (one per message, whether used or not) and stop using it at its first malformed or
 * missing message, so encoder and decoder always pair the same messages.
 */
#ifndef W10G_DELTA_H
#define W10G_DELTA_H

#include <stddef.h>
#include <stdint.h>

/* out[0..clen) = cur as a difference from prev (prev may be NULL with plen 0). Returns
 * the number of messages stored XOR-ed (>= 0), or -1 when cur is not a sequence of
 * entries of whole messages (store it plainly then). */
long w10g_delta_encode(const uint8_t *prev, size_t plen, const uint8_t *cur, size_t clen,
                       uint8_t *out);

/* out[0..dlen) = the sample that w10g_delta_encode turned into delta[0..dlen), given the
 * same prev. Returns 0, or -1 when delta is malformed or refers to a message prev lacks
 * (a damaged frame, or the wrong previous frame). Every read is bounds-checked. */
int w10g_delta_decode(const uint8_t *prev, size_t plen, const uint8_t *delta, size_t dlen,
                      uint8_t *out);

#endif
