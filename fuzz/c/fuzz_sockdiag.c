/* libFuzzer target: the sock_diag decoder (csrc/w10g_sockdiag.c) on recorded dump
 * datagrams, as web10g._sockdiag.decode_datagrams and a live Dumper drive it.
 *
 * Input: [mode][sel x 21][chunks...] (fuzz_common.h). mode bits:
 *   0-1  selection: 0 every column as struct w10g_sd_row (the `direct` path), 1 the
 *        columns of `sel` in registry order, 2 every column in reverse order (runs that
 *        go backwards), 3 the columns of `sel` in reverse order
 *   2    derived columns (MaxRTT, MinRTO, ...) with a flow table kept across dumps
 *   3    tcp_info's last word is a bit-field (kernel >= 7.0)
 *   4    non-temporal stores (outputs of 4 MiB or more)
 *   5    capacity 1 row (the spill path from the second row on), else 8
 *   6-7  sysctls: timestamps/sack on or off, ecn 0..2
 * Each chunk is one datagram; an empty chunk ends a dump (the flow table rolls over).
 */
#include <errno.h>
#include <libmnl/libmnl.h>

#include "../../csrc/w10g_sockdiag.h"
#include "fuzz_common.h"

#define SEL_BYTES ((W10G_SD_NFIELDS + 7) / 8)

static int field_width(int f) { return w10g_sd_kind_width(w10g_sd_field_kind(f)); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct w10g_sd_config cfg;
    static struct w10g_sd_sink sink;
    struct w10g_flowtab flows;
    if (size < 1 + SEL_BYTES)
        return 0;
    const uint8_t mode = data[0];
    const uint8_t *sel = data + 1;
    const int sel_mode = mode & 3;

    memset(&cfg, 0, sizeof(cfg));
    size_t itemsize;
    if (sel_mode == 0) {
        for (int f = 0; f < W10G_SD_NFIELDS; f++)
            cfg.off[f] = w10g_sd_row_offset(f);
        itemsize = w10g_sd_row_size();
    } else {
        size_t pos = 0, maxalign = 1;
        int any = 0;
        for (int k = 0; k < W10G_SD_NFIELDS; k++) {
            int f = sel_mode & 2 ? W10G_SD_NFIELDS - 1 - k : k;
            int chosen = sel_mode == 2 || (sel[f / 8] >> (f % 8) & 1);
            if (!chosen) {
                cfg.off[f] = -1;
                continue;
            }
            cfg.off[f] = (int32_t)fuzz_place(&pos, (size_t)field_width(f), &maxalign);
            any = 1;
        }
        if (!any)
            return 0;
        itemsize = (pos + maxalign - 1) / maxalign * maxalign;
    }
    if (mode & 4)
        cfg.flags |= W10G_SD_DERIVED;
    if (mode & 8)
        cfg.flags |= W10G_SD_ACCECN_BITFIELD;
    cfg.sysctl_timestamps = mode >> 6 & 1;
    cfg.sysctl_sack = mode >> 7 & 1;
    cfg.sysctl_ecn = (mode >> 6) % 3;
    w10g_sd_plan(&cfg, itemsize);

    const size_t capacity = mode & 32 ? 1 : 8;
    char *rows = malloc(capacity * itemsize);
    memset(&flows, 0, sizeof(flows));

    struct fuzz_chunks c = {data + 1 + SEL_BYTES, size - 1 - SEL_BYTES};
    const uint8_t *chunk;
    size_t len;
    int dumps = 0;
    int failed = 0;
    while (!failed && fuzz_next(&c, &chunk, &len)) {
        /* a new sink per dump, as decode_datagrams and Dumper.dump make one per call */
        if (dumps == 0 || len == 0) {
            if (dumps) {
                w10g_sd_done(&sink);
                free(sink.spill);
                if (cfg.flags & W10G_SD_DERIVED)
                    w10g_flowtab_end_dump(&flows);
            }
            memset(&sink, 0, sizeof(sink));
            sink.cfg = &cfg;
            sink.rows = rows;
            sink.itemsize = itemsize;
            sink.capacity = capacity;
            sink.stream = (mode & 16) != 0;
            sink.now_ns = 1700000000000000000LL;
            sink.fixed_time = 1;
            sink.flows = cfg.flags & W10G_SD_DERIVED ? &flows : NULL;
            dumps++;
            if (len == 0)
                continue;
        }
        char *buf = malloc(len);
        memcpy(buf, chunk, len);
        if (!fuzz_frames_ok(buf, len)) {
            failed = 1;
        } else {
            const char *at = buf;
            sink.rxbuf = &at;
            int rc = mnl_cb_run(buf, len, 0, 0, w10g_sd_on_message, &sink);
            sink.rxbuf = NULL;
            if (rc == MNL_CB_ERROR)
                failed = 1;
        }
        free(buf);
    }
    if (dumps) {
        w10g_sd_done(&sink);
        /* every row the decoder counted is readable where it put it */
        volatile uint8_t acc = 0;
        for (size_t i = 0; i < sink.n; i++) {
            const char *row = i < capacity ? rows + i * itemsize
                                           : sink.spill + (i - capacity) * itemsize;
            acc ^= (uint8_t)row[0] ^ (uint8_t)row[itemsize - 1];
        }
        (void)acc;
        free(sink.spill);
    }
    w10g_flowtab_free(&flows);
    free(rows);
    return 0;
}
