/* The estats decoder: one tcp_estats reply message -> one row of a numpy structured array.
 *
 * The Web10G module (web10g-abi.md) sends, per connection, NLE_ATTR_TIME, NLE_ATTR_4TUPLE
 * and six VALS nests of one attribute per variable, typed by the variable's index in its
 * table (0 is a real variable). Which (table, index) goes to which column, and with which
 * width, comes from the module's own TCPE_CMD_INIT reply, matched against the registry's
 * layouts in Python; the decoder only follows the offsets it is given. Every length is
 * checked against the bytes received; a value whose length differs from the width INIT
 * implies makes the message malformed.
 */
#ifndef W10G_ESTATS_H
#define W10G_ESTATS_H
#include <stddef.h>
#include <stdint.h>
#include <linux/netlink.h>

#define W10G_ES_TABLES 6
#define W10G_ES_MAX_INDEX 64          /* masks are u64: no table can have more */

/* Identity and metadata columns, in the order of their offsets in w10g_es_config.ident. */
enum w10g_es_ident {
    W10G_ES_cid, W10G_ES_family, W10G_ES_state, W10G_ES_local_port, W10G_ES_rem_port,
    W10G_ES_local_addr, W10G_ES_rem_addr, W10G_ES_uid, W10G_ES_inode, W10G_ES_timestamp,
    W10G_ES_present, W10G_ES_NIDENT
};

/* `present` bits: which parts of the message the module sent. */
enum {
    W10G_ES_HAVE_TIME = 1 << 6,
    W10G_ES_HAVE_TUPLE = 1 << 7,      /* bits 0-5: the six VALS nests, by table */
};

struct w10g_es_config {
    int32_t ident[W10G_ES_NIDENT];                  /* column offsets, -1 = not in the row */
    int32_t off[W10G_ES_TABLES][W10G_ES_MAX_INDEX];  /* variable column offsets, -1 = none */
    uint8_t width[W10G_ES_TABLES][W10G_ES_MAX_INDEX];/* payload bytes INIT implies, 0 = none */
    uint16_t family_id;            /* nlmsg_type of the module's messages */
    int64_t usec_mult;             /* ns per NEA_TIME_USEC unit: 1000 (us) or 1 (kernel-5.0 ns) */
    int8_t state_table, state_index;   /* where the State variable lives, -1 if nowhere */
};

/* The commands whose replies the decoder checks beyond their shape. */
enum { W10G_ES_LIST_CONNS = 0, W10G_ES_READ_ALL = 1, W10G_ES_READ_VARS = 2 };

/* One call's state. The config is shared and read-only while calls run; everything a
 * call changes is here (on the caller's stack), so calls on one config do not interfere. */
struct w10g_es_sink {
    const struct w10g_es_config *cfg;
    uint8_t cmd;                   /* the command being answered */
    uint8_t cid_adjust;            /* READ_ALL reports the CID plus one (ABI 5.3) */
    /* LIST_CONNS / READ_ALL: the module walks its CID table upwards and every page starts
     * after the previous one, so the reported CIDs of one call must strictly increase; a
     * repeated or lower one is a duplicated or stale datagram. */
    uint8_t ordered;               /* check that (live calls; recordings are not) */
    uint64_t min_cid;              /* the lowest reported CID acceptable next */
    /* READ_VARS of a batch (req_cids != NULL): data messages carry seq 0, so a message
     * answers the first request without an ACK or error yet (req_status[i] == -1), must
     * name that request's CID, and only once (req_got[i]). */
    const uint32_t *req_cids;
    const int *req_status;
    uint8_t *req_got;
    uint32_t req_n;
    uint32_t req_at;
    char *rows;
    size_t itemsize;
    size_t capacity;
    size_t n;
    char *spill;
    size_t spill_cap;
    uint32_t batch_rows;           /* rows of the current request */
    uint32_t max_cid;              /* largest CID as reported (READ_ALL: CID + 1) */
    uint32_t first_sec, first_usec, max_usec;   /* to tell us from ns (ABI section 9) */
    uint8_t have_time;
    uint32_t bad_index;            /* which message was malformed */
    const char *bad_reason;
};

int w10g_es_on_message(const struct nlmsghdr *nlh, void *sink);

#endif
