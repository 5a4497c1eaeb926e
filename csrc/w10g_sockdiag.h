/* The sock_diag decoder: one inet_diag record -> one row of a numpy structured array.
 *
 * W10G_SD_FIELDS lists every column the sock_diag backend can produce, once: the C enum,
 * the name table that Python matches against the MIB registry, and the store kinds all
 * come from it. Its order after the identity block is mib.variables(backend="sock_diag");
 * tests/test_layouts.py checks names and widths against the registry.
 *
 * The decoder runs inside libmnl's receive loop without the GIL. Every length it reads
 * comes from the message and is checked against the bytes actually received.
 */
#ifndef W10G_SOCKDIAG_H
#define W10G_SOCKDIAG_H
#include <stddef.h>
#include <stdint.h>
#include <linux/netlink.h>

#include "w10g_runs.h"

/* store kinds: U8 U16 U32 U64 I32 I64 F64, A16 = 16 raw bytes, S16 = NUL-padded string.
 * Three parts: the identity and per-row metadata (HEAD), the variables in registry order
 * (BODY), and tcp_info_len (TAIL), which the registry lists last but a row type puts
 * right after `present` (struct w10g_sd_row follows the row type's order). */
#define W10G_SD_FIELDS(X) W10G_SD_HEAD(X) W10G_SD_BODY(X) W10G_SD_TAIL(X)

#define W10G_SD_HEAD(X) \
    X(cid, U64) \
    X(family, U8) \
    X(state, U8) \
    X(local_port, U16) \
    X(rem_port, U16) \
    X(local_addr, A16) \
    X(rem_addr, A16) \
    X(uid, U32) \
    X(inode, U32) \
    X(timestamp, I64) \
    X(present, U16)

#define W10G_SD_BODY(X) \
    X(SegsOut, U32) \
    X(DataSegsOut, U32) \
    X(DataOctetsOut, U32) \
    X(HCDataOctetsOut, U64) \
    X(SegsRetrans, U32) \
    X(OctetsRetrans, U32) \
    X(SegsIn, U32) \
    X(DataSegsIn, U32) \
    X(DataOctetsIn, U32) \
    X(HCDataOctetsIn, U64) \
    X(CurMSS, U32) \
    X(PipeSize, U32) \
    X(MaxPipeSize, U32) \
    X(SmoothedRTT, U32) \
    X(CurRTO, U32) \
    X(CurCwnd, U32) \
    X(CurSsthresh, U32) \
    X(Timeouts, U32) \
    X(CurRwinSent, U32) \
    X(MaxRwinSent, U32) \
    X(CurRwinRcvd, U32) \
    X(MaxRwinRcvd, U32) \
    X(SndLimTimeSnd, U32) \
    X(SndLimTimeCwnd, U32) \
    X(SndLimTimeRwin, U32) \
    X(RetranThresh, U32) \
    X(RTTVar, U32) \
    X(MaxRTT, U32) \
    X(MinRTT, U32) \
    X(MaxRTO, U32) \
    X(MinRTO, U32) \
    X(IpTosOut, U8) \
    X(ECNsignals, U32) \
    X(RcvRTT, U32) \
    X(CERcvd, U32) \
    X(MSSSent, U32) \
    X(WinScaleSent, I32) \
    X(WinScaleRcvd, I32) \
    X(TimeStamps, I32) \
    X(ECN, I32) \
    X(WillSendSACK, I32) \
    X(WillUseSACK, I32) \
    X(State, I32) \
    X(MaxSsCwnd, U32) \
    X(MaxCaCwnd, U32) \
    X(MaxSsthresh, U32) \
    X(MinSsthresh, U32) \
    X(InRecovery, I32) \
    X(SubsequentTimeouts, U32) \
    X(CurTimeoutCount, U32) \
    X(DSACKDups, U32) \
    X(MaxMSS, U32) \
    X(MinMSS, U32) \
    X(ThruOctetsAcked, U32) \
    X(HCThruOctetsAcked, U64) \
    X(ThruOctetsReceived, U32) \
    X(HCThruOctetsReceived, U64) \
    X(CurAppWQueue, U32) \
    X(MaxAppWQueue, U32) \
    X(CurAppRQueue, U32) \
    X(MaxAppRQueue, U32) \
    X(Priority, U32) \
    X(rtt_us, U32) \
    X(rttvar_us, U32) \
    X(rto_us, U32) \
    X(min_rtt_us, U32) \
    X(cwnd_segs, U32) \
    X(ssthresh_segs, U32) \
    X(ca_state, U8) \
    X(probes_out, U8) \
    X(rto_backoff, U8) \
    X(options, U8) \
    X(opt_timestamps, U8) \
    X(opt_sack, U8) \
    X(opt_wscale, U8) \
    X(opt_ecn, U8) \
    X(opt_ecn_seen, U8) \
    X(opt_syn_data, U8) \
    X(opt_usec_ts, U8) \
    X(opt_tfo_child, U8) \
    X(delivery_rate_app_limited, U8) \
    X(fastopen_client_fail, U8) \
    X(delayed_ack_timeout_us, U32) \
    X(rcv_mss_bytes, U32) \
    X(unacked_segs, U32) \
    X(sacked_segs, U32) \
    X(lost_segs, U32) \
    X(retrans_in_flight_segs, U32) \
    X(last_data_sent_ago_ms, U32) \
    X(last_data_recv_ago_ms, U32) \
    X(last_ack_recv_ago_ms, U32) \
    X(path_mtu_bytes, U32) \
    X(rcv_ssthresh_bytes, U32) \
    X(rcv_space_bytes, U32) \
    X(pacing_rate_bytes_per_s, U64) \
    X(max_pacing_rate_bytes_per_s, U64) \
    X(delivery_rate_bytes_per_s, U64) \
    X(busy_time_us, U64) \
    X(delivered_segs, U32) \
    X(delivered_ce_segs, U32) \
    X(reord_events, U32) \
    X(ooo_segs_in, U32) \
    X(rehash_count, U32) \
    X(rto_expirations, U16) \
    X(rto_recovery_time_ms, U32) \
    X(accecn_delivered_ect1_bytes, U32) \
    X(accecn_delivered_ect0_bytes, U32) \
    X(accecn_delivered_ce_bytes, U32) \
    X(ecn_received_ect1_bytes, U32) \
    X(ecn_received_ect0_bytes, U32) \
    X(ecn_received_ce_bytes, U32) \
    X(accecn_fail_mode, U16) \
    X(accecn_opt_seen, U16) \
    X(ecn_mode, U8) \
    X(options2, U32) \
    X(accecn_word, U32) \
    X(timer, U8) \
    X(timer_expires_ms, U32) \
    X(timer_retrans, U8) \
    X(bound_ifindex, U32) \
    X(mem_rmem_bytes, U32) \
    X(mem_wmem_bytes, U32) \
    X(mem_fmem_bytes, U32) \
    X(mem_tmem_bytes, U32) \
    X(skmem_rmem_alloc, U32) \
    X(skmem_rcvbuf, U32) \
    X(skmem_wmem_alloc, U32) \
    X(skmem_sndbuf, U32) \
    X(skmem_fwd_alloc, U32) \
    X(skmem_wmem_queued, U32) \
    X(skmem_optmem, U32) \
    X(skmem_backlog, U32) \
    X(skmem_drops, U32) \
    X(cc_algorithm, S16) \
    X(bbr_bw_bytes_per_s, U64) \
    X(bbr_min_rtt_us, U32) \
    X(bbr_pacing_gain, F64) \
    X(bbr_cwnd_gain, F64) \
    X(dctcp_enabled, U16) \
    X(dctcp_ce_state, U16) \
    X(dctcp_alpha, F64) \
    X(dctcp_ab_ecn, U32) \
    X(dctcp_ab_tot, U32) \
    X(vegas_enabled, U32) \
    X(vegas_rtt_count, U32) \
    X(vegas_rtt_us, U32) \
    X(vegas_min_rtt_us, U32) \
    X(shutdown_rd, U8) \
    X(shutdown_wr, U8) \
    X(mark, U32) \
    X(class_id, U32) \
    X(cgroup_id, U64) \
    X(sockopt_flags, U16)

#define W10G_SD_TAIL(X) \
    X(tcp_info_len, U16)

enum w10g_sd_field {
#define W10G_SD_ENUM(name, kind) W10G_SD_##name,
    W10G_SD_FIELDS(W10G_SD_ENUM)
#undef W10G_SD_ENUM
    W10G_SD_NFIELDS
};

/* Bits of the per-row `present` column: which parts of the record the kernel sent, so
 * that a zero can be told from "not reported" (web10g.sockdiag.available()). */
enum {
    W10G_HAVE_INFO = 1 << 0,
    W10G_HAVE_MEMINFO = 1 << 1,
    W10G_HAVE_SKMEMINFO = 1 << 2,
    W10G_HAVE_CONG = 1 << 3,
    W10G_HAVE_TOS = 1 << 4,        /* INET_DIAG_TOS (IPv4) or INET_DIAG_TCLASS (IPv6) */
    W10G_HAVE_CLASS_ID = 1 << 5,
    W10G_HAVE_SHUTDOWN = 1 << 6,
    W10G_HAVE_MARK = 1 << 7,
    W10G_HAVE_CGROUP = 1 << 8,
    W10G_HAVE_SOCKOPT = 1 << 9,
    W10G_HAVE_BBR = 1 << 10,
    W10G_HAVE_DCTCP = 1 << 11,
    W10G_HAVE_VEGAS = 1 << 12,
};

/* One whole row: every column at the offset an aligned numpy row type of all of them in
 * this order gives it (the dtype of read_all() of every variable). The decoder fills one
 * per record, straight into the output when the output's row type is exactly this
 * (w10g_sd_config.direct), else in the sink's scratch row, whose selected columns are
 * then copied out in runs. No per-column test on the hot path either way. */
#define W10G_SD_DECL_U8(n) uint8_t n;
#define W10G_SD_DECL_U16(n) uint16_t n;
#define W10G_SD_DECL_U32(n) uint32_t n;
#define W10G_SD_DECL_U64(n) uint64_t n;
#define W10G_SD_DECL_I32(n) int32_t n;
#define W10G_SD_DECL_I64(n) int64_t n;
#define W10G_SD_DECL_F64(n) double n;
#define W10G_SD_DECL_A16(n) uint8_t n[16];
#define W10G_SD_DECL_S16(n) char n[16];
#define W10G_SD_MEMBER(name, kind) W10G_SD_DECL_##kind(name)
struct w10g_sd_row {
    W10G_SD_HEAD(W10G_SD_MEMBER)
    W10G_SD_TAIL(W10G_SD_MEMBER)
    W10G_SD_BODY(W10G_SD_MEMBER)
};
#undef W10G_SD_MEMBER

/* Blocks of stock-only columns: the decoder computes a block only when a selected column
 * is in it (the Web10G variables and the identity are always computed). */
enum {
    W10G_BLK_STOCK = 1 << 0,    /* rtt_us .. accecn_word: tcp_info as the kernel has it */
    W10G_BLK_DIAG = 1 << 1,     /* timer .. bound_ifindex: inet_diag_msg fields */
    W10G_BLK_MEM = 1 << 2,      /* mem_* and skmem_* */
    W10G_BLK_CC = 1 << 3,       /* cc_algorithm, bbr_*, dctcp_*, vegas_* */
    W10G_BLK_MISC = 1 << 4,     /* shutdown_*, mark, class_id, cgroup_id, sockopt_flags */
};
uint32_t w10g_sd_block(int field);

/* config flags */
enum {
    W10G_SD_ACCECN_BITFIELD = 1 << 0,  /* kernel >= 7.0: tcp_info's last word is a bit-field */
    W10G_SD_DERIVED = 1 << 1,          /* a client-derived column (Max*, Min*) is selected */
};

struct w10g_sd_config {
    int32_t off[W10G_SD_NFIELDS];   /* byte offset of each column in the row, -1 = not selected */
    uint32_t flags;
    /* The namespace's sysctls, read at open: they tell "disabled here" (2) from "peer
     * declined" (3) for TimeStamps, WillSendSACK/WillUseSACK and ECN. */
    uint8_t sysctl_timestamps, sysctl_sack, sysctl_ecn;
    /* set by w10g_sd_plan() from off[] and the row size: */
    int direct;                      /* the output row is struct w10g_sd_row itself */
    uint32_t blocks;                 /* W10G_BLK_*: stock-only column blocks selected */
    uint32_t nruns;
    struct w10g_run runs[W10G_SD_NFIELDS];
};

/* What the client tracks per flow (keyed by socket cookie) for the derived columns. */
struct w10g_flow {
    uint64_t cookie;
    uint32_t max_pipe, max_rtt_us, max_rto_us, min_rto_us;
    uint32_t max_rwin_sent, max_rwin_rcvd, max_mss, min_mss;
    uint32_t max_ss_cwnd, max_ca_cwnd, max_ssthresh, min_ssthresh;
    uint32_t max_app_wq, max_app_rq;
};

/* The per-flow state, kept in the order of the last dump. The kernel walks its hash in
 * the same order every time, so row k of this dump is usually row k (+ a shift that
 * changes only where sockets came or went) of the last one: a sequential scan instead of
 * a hash probe per row, which at 100k flows missed the cache on every row. Only when
 * the guess fails is an index over the last dump built (once per dump). */
struct w10g_flowtab {
    struct w10g_flow *prev;          /* states in the last dump's row order */
    size_t nprev, capprev;
    struct w10g_flow *cur;           /* states of this dump, appended row by row */
    size_t ncur, capcur;
    uint32_t *index;                 /* open addressing: cookie -> position in prev + 1 */
    size_t index_cap;
    int index_built;
    ptrdiff_t shift;                 /* this dump's row k is prev[k + shift] */
    uint64_t hits, probes;           /* guesses that held / index look-ups (for tests) */
};

#define W10G_SD_TPL_MAX 24     /* attributes a remembered layout may have */
#define W10G_SD_ATTR_MAX 32    /* attribute types the decoder looks at: below this */

/* Where decoded rows go: the caller's array, then a spill area for rows beyond its
 * capacity (moved into a larger array once the GIL is held again; no row is lost). */
struct w10g_sd_sink {
    const struct w10g_sd_config *cfg;
    char *rows;
    size_t itemsize;
    size_t capacity;
    size_t n;                       /* rows decoded so far (may exceed capacity) */
    char *spill;
    size_t spill_cap;               /* in rows */
    const char *const *rxbuf;       /* where the socket received the datagram being decoded
                                     * (it moves: straight into the tap when recording);
                                     * a message there starts a datagram. NULL: none */
    int64_t now_ns;                 /* CLOCK_REALTIME of the current datagram */
    const int64_t *rx_ns;           /* where the socket keeps that time (NULL: read the clock) */
    int fixed_time;                 /* replay: keep now_ns as given */
    struct w10g_flowtab *flows;
    uint32_t bad_offset;            /* where a malformed message was found, for the error */
    /* The last record's attribute layout: a record laid out the same way (the usual
     * case) is recognised by comparing its headers at those offsets, loads that do not
     * depend on each other, instead of walking the chain of lengths. */
    uint32_t tpl_plen;              /* payload length of that record; 0 = none yet */
    uint32_t tpl_n;
    uint32_t tpl_seen;
    uint32_t tpl_off[W10G_SD_TPL_MAX];   /* attribute header offsets in the payload */
    uint32_t tpl_hdr[W10G_SD_TPL_MAX];   /* the headers, as 4 raw bytes */
    uint32_t attr_off[W10G_SD_ATTR_MAX]; /* per type: payload offset in the record ... */
    uint32_t attr_len[W10G_SD_ATTR_MAX]; /* ... and length, where tpl_seen has its bit */
    int stream;                     /* write rows with non-temporal stores (large outputs) */
    struct w10g_sd_row scratch;     /* every column of the row being decoded */
    char outrow[2 * sizeof(struct w10g_sd_row)];   /* the output row, when streamed */
};

/* Large outputs: at least this many bytes (capacity x row size) are streamed. */
#define W10G_SD_STREAM_MIN (4u << 20)

/* After a decode: make streamed rows visible in order (a store fence). */
void w10g_sd_done(struct w10g_sd_sink *sink);

/* Fill cfg->direct and cfg->runs from cfg->off and the output's row size. */
void w10g_sd_plan(struct w10g_sd_config *cfg, size_t itemsize);

/* Byte offset of a column in struct w10g_sd_row (for the layout test), -1 if none. */
int w10g_sd_row_offset(int field);
size_t w10g_sd_row_size(void);

/* libmnl data callback (mnl_cb_t): decode one SOCK_DIAG_BY_FAMILY message.
 * Returns MNL_CB_OK, or MNL_CB_ERROR with errno EBADMSG (malformed) or ENOMEM. */
int w10g_sd_on_message(const struct nlmsghdr *nlh, void *sink);

const char *w10g_sd_field_name(int field);
const char *w10g_sd_field_kind(int field);
int w10g_sd_kind_width(const char *kind);

int w10g_flowtab_end_dump(struct w10g_flowtab *ft);  /* this dump becomes the last */
void w10g_flowtab_free(struct w10g_flowtab *ft);

/* i-th field of struct w10g_tcp_info: name, offset, size; -1 past the end */
int w10g_tcp_info_field(int i, const char **name, size_t *off, size_t *size);
size_t w10g_tcp_info_size(void);

#endif
