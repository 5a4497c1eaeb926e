/* libFuzzer target: the ebpf decoder (csrc/w10g_ebpf.c) on iterator reads and ring-buffer
 * records, as web10g._ebpf.Decoder.read/decode drive it.
 *
 * Input: [mode][hz x 4][chunks...] (fuzz_common.h). mode bits:
 *   0    every state (0xFFF) or only ESTABLISHED (bit 1)
 *   1-2  families: 1 AF_INET, 2 AF_INET6 (0 means both)
 *   3    keep only network namespace 4026531840 (ring records), else any
 *   4    capacity 1 row (spill from the second row on), else 8
 *   5    only every other column selected (the rest -1)
 *   6-7  sysctls on/off
 * hz: the sink's hz before any header (a header record replaces it; 0 is allowed), its
 * low 30 bits; bit 30: the chunks go through w10g_eb_read_decode() from a SOCK_SEQPACKET
 * socket (one read() per chunk: records cut between reads are carried over), else each
 * chunk to w10g_eb_decode(); bit 31: an output of 4 MiB or more (non-temporal stores).
 * Each chunk is one read() of the iterator (or a batch of ring records).
 */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../csrc/w10g_ebpf.h"
#include "fuzz_common.h"

static int kind_width(const char *k)
{
    if (!strcmp(k, "U8")) return 1;
    if (!strcmp(k, "U16")) return 2;
    if (!strcmp(k, "U32") || !strcmp(k, "I32")) return 4;
    if (!strcmp(k, "A16")) return 16;
    return 8;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct w10g_eb_config cfg;
    static int widths[W10G_EB_NFIELDS];
    if (!widths[0])
        for (int f = 0; f < W10G_EB_NFIELDS; f++)
            widths[f] = kind_width(w10g_eb_field_kind(f));
    if (size < 5)
        return 0;
    const uint8_t mode = data[0];
    uint32_t hz;
    memcpy(&hz, data + 1, 4);
    const int via_fd = hz >> 30 & 1, large = hz >> 31;
    hz &= 0x3FFFFFFF;

    size_t pos = 0, maxalign = 1;
    for (int f = 0; f < W10G_EB_NFIELDS; f++)
        cfg.off[f] = (mode & 32) && (f & 1) ? -1 : (int32_t)fuzz_place(&pos, widths[f], &maxalign);
    const size_t itemsize = (pos + maxalign - 1) / maxalign * maxalign;
    cfg.sysctl_timestamps = mode >> 6 & 1;
    cfg.sysctl_sack = mode >> 7 & 1;
    cfg.sysctl_ecn = (mode >> 6) % 3;

    const size_t capacity = large ? ((4u << 20) + itemsize - 1) / itemsize
                                  : mode & 16 ? 1 : 8;
    char *rows = malloc(capacity * itemsize);
    struct w10g_eb_sink sink;
    memset(&sink, 0, sizeof(sink));
    sink.cfg = &cfg;
    sink.rows = rows;
    sink.itemsize = itemsize;
    sink.capacity = capacity;
    sink.now_ns = 1700000000000000000LL;
    sink.mono_to_real_ns = 1690000000000000000LL;
    sink.hz = hz;
    sink.state_mask = mode & 1 ? 0xFFF : 1u << 1;
    sink.family_mask = (mode >> 1 & 3) ? (mode >> 1 & 3) : 3;
    sink.netns_ino = mode & 8 ? 4026531840u : 0;

    struct fuzz_chunks c = {data + 5, size - 5};
    const uint8_t *chunk;
    size_t len;
    int sv[2];
    if (via_fd && socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0) {
        while (fuzz_next(&c, &chunk, &len))
            if (len && write(sv[1], chunk, len) < 0)
                break;
        shutdown(sv[1], SHUT_WR);
        uint8_t *rbuf = NULL;
        size_t rcap = 0, total = 0;
        w10g_eb_read_decode(sv[0], &rbuf, &rcap, &sink, &total);
        free(rbuf);
        close(sv[0]);
        close(sv[1]);
    }
    while (!via_fd && fuzz_next(&c, &chunk, &len)) {
        uint8_t *buf = malloc(len ? len : 1);
        memcpy(buf, chunk, len);
        int rc = w10g_eb_decode(len ? buf : NULL, len, &sink);
        free(buf);
        if (rc < 0)
            break;
    }
    volatile uint8_t acc = 0;
    for (size_t i = 0; i < sink.n; i++) {
        const char *row = i < capacity ? rows + i * itemsize
                                       : sink.spill + (i - capacity) * itemsize;
        acc ^= (uint8_t)row[0] ^ (uint8_t)row[itemsize - 1];
    }
    (void)acc;
    free(sink.spill);
    free(rows);
    return 0;
}
