/* libFuzzer target: the estats decoder (csrc/w10g_estats.c) on tcp_estats reply
 * datagrams, as web10g._estats.Reader (live pages and Reader.decode for replays) drives it.
 *
 * Input: [mode][cmd][cids x 12][chunks...] (fuzz_common.h). mode bits:
 *   0-1  the module's layout (INIT's tables): head, middle, old (estats_layout.h, made
 *        from the fake kernel's INIT replies by fuzz/make_corpus.py); 3 = head with every
 *        variable unselected (widths checked, nothing stored)
 *   2    cid_adjust 1 (READ_ALL reports CID + 1)
 *   3    NEA_TIME_USEC in ns (kernel-5.0) rather than us
 *   4    capacity 1 row (spill from the second row on), else 8
 *   5    no identity columns in the row
 *   6    ordered: reported CIDs must increase within a call (live LIST_CONNS/READ_ALL)
 *   7    a READ_VARS batch of three requests, for the CIDs in `cids` (no ACK seen yet)
 * cmd: the generic-netlink command the reply must name (1 READ_ALL, 2 READ_VARS, 0 LIST).
 * cids: 3 x u32, the batch's requested CIDs.
 * Each chunk is one datagram; an empty chunk starts a new call (a new sink).
 */
#include <errno.h>
#include <libmnl/libmnl.h>

#include "../../csrc/w10g_estats.h"
#include "estats_layout.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct w10g_es_config cfg;
    struct w10g_es_sink sink;
    if (size < 14)
        return 0;
    uint32_t cids[3];
    int status[3];
    uint8_t got[3];
    memcpy(cids, data + 2, sizeof(cids));
    const uint8_t mode = data[0];
    const int lay = (mode & 3) == 3 ? 0 : (mode & 3);
    const int store = (mode & 3) != 3;

    memset(&cfg, 0, sizeof(cfg));
    size_t pos = 0, maxalign = 1;
    static const int ident_width[W10G_ES_NIDENT] = {8, 1, 1, 2, 2, 16, 16, 4, 4, 8, 2};
    for (int i = 0; i < W10G_ES_NIDENT; i++)
        cfg.ident[i] = mode & 32 ? -1 : (int32_t)fuzz_place(&pos, ident_width[i], &maxalign);
    for (int t = 0; t < W10G_ES_TABLES; t++) {
        for (int i = 0; i < W10G_ES_MAX_INDEX; i++) {
            uint8_t w = W10G_FUZZ_ES_WIDTH[lay][t][i];
            cfg.width[t][i] = w;
            cfg.off[t][i] = w && store ? (int32_t)fuzz_place(&pos, w, &maxalign) : -1;
        }
    }
    size_t itemsize = (pos + maxalign - 1) / maxalign * maxalign;
    if (itemsize == 0)
        itemsize = 8;
    cfg.family_id = W10G_FUZZ_ES_FAMILY_ID;
    cfg.usec_mult = mode & 8 ? 1 : 1000;
    cfg.state_table = W10G_FUZZ_ES_STATE[lay][0];
    cfg.state_index = W10G_FUZZ_ES_STATE[lay][1];

    const size_t capacity = mode & 16 ? 1 : 8;
    char *rows = malloc(capacity * itemsize);
#define NEW_SINK()                                                  \
    do {                                                            \
        memset(&sink, 0, sizeof(sink));                             \
        sink.cfg = &cfg;                                            \
        sink.rows = rows;                                           \
        sink.itemsize = itemsize;                                   \
        sink.capacity = capacity;                                   \
        sink.cmd = data[1];                                         \
        sink.cid_adjust = mode & 4 ? 1 : 0;                         \
        sink.ordered = (mode & 64) != 0;                            \
        if ((mode & 128) && data[1] == W10G_ES_READ_VARS) {         \
            for (int k = 0; k < 3; k++) {                           \
                status[k] = -1;                                     \
                got[k] = 0;                                         \
            }                                                       \
            sink.req_cids = cids;                                   \
            sink.req_status = status;                               \
            sink.req_got = got;                                     \
            sink.req_n = 3;                                         \
        }                                                           \
    } while (0)
    NEW_SINK();

    struct fuzz_chunks c = {data + 14, size - 14};
    const uint8_t *chunk;
    size_t len;
    while (fuzz_next(&c, &chunk, &len)) {
        if (len == 0) {          /* the next request */
            free(sink.spill);
            NEW_SINK();
            continue;
        }
        char *buf = malloc(len);
        memcpy(buf, chunk, len);
        int ok = fuzz_frames_ok(buf, len)
                 && mnl_cb_run(buf, len, 0, 0, w10g_es_on_message, &sink) != MNL_CB_ERROR;
        free(buf);
        if (!ok)
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
