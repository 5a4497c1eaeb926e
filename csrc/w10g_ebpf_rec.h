/* The binary records of the ebpf backend: what the BPF programs (web10g/bpf/web10g.bpf.c)
 * write and what the C decoder (csrc/w10g_ebpf.c) reads. One header, included by both,
 * so the two sides cannot disagree on a layout.
 *
 * A read of the pinned iterator returns one W10G_EB_HDR record, then one struct
 * w10g_eb_rec per socket of the reader's network namespace. The second reader ("fields",
 * W10G_EB_HOOK_FIELDS) writes the same records cut before the counters (c): its
 * header's rec_size is W10G_EB_FIELDS_SIZE. The ring buffer carries
 * struct w10g_eb_rec records of flows at TCP_CLOSE (flag W10G_EB_R_CLOSE). All fields
 * are in host byte order; ports in host order; addresses are 16 raw bytes in network
 * order (IPv4: 4 bytes then 12 zero bytes), as in the sock_diag rows.
 */
#ifndef W10G_EBPF_REC_H
#define W10G_EBPF_REC_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define W10G_EB_MAGIC_HDR 0x48423031u   /* "10BH": iterator header record */
#define W10G_EB_MAGIC_REC 0x52423031u   /* "10BR": one socket */
#define W10G_EB_VERSION 1

/* hooks the loader got the kernel to accept (cfg.hooks, header.hooks) */
enum {
    W10G_EB_HOOK_SOCKOPS = 1 << 0,      /* sock_ops on the cgroup v2 root + sk_storage */
    W10G_EB_HOOK_ITER = 1 << 1,         /* iter/tcp reader */
    W10G_EB_HOOK_CONG = 1 << 2,         /* tp_btf/tcp_cong_state_set */
    W10G_EB_HOOK_RETRANS = 1 << 3,      /* tp_btf/tcp_retransmit_skb */
    W10G_EB_HOOK_PROBE = 1 << 4,        /* tp_btf/tcp_probe ("full" mode: per segment) */
    W10G_EB_HOOK_RING = 1 << 5,         /* close records in the ring buffer */
    W10G_EB_HOOK_WRITE = 1 << 6,        /* iter/tcp writer (LimCwnd, LimRwin) */
    W10G_EB_HOOK_DESTROY = 1 << 7,      /* iter/tcp bpf_sock_destroy (kill) */
    W10G_EB_HOOK_FIELDS = 1 << 8,       /* iter/tcp reader of the tcp_sock fields alone */
    W10G_EB_HOOK_SENT = 1 << 9,         /* sock_ops HDR_OPT_LEN on every sent segment
                                           ("full" mode, with HOOK_SOCKOPS) */
    W10G_EB_HOOK_DROPS = 1 << 10,       /* tp_btf/kfree_skb: TCP input drops by reason */
};

/* struct w10g_eb_rec.flags */
enum {
    W10G_EB_R_FULL = 1 << 0,            /* a full tcp_sock: the tcp_sock fields are valid */
    W10G_EB_R_STORAGE = 1 << 1,         /* the per-socket counters (c) are valid */
    W10G_EB_R_SEQ = 1 << 2,             /* sequence numbers shown (reader root or owner) */
    W10G_EB_R_CLOSE = 1 << 3,           /* a final record from the ring buffer */
    W10G_EB_R_OOO = 1 << 4,             /* the out-of-order queue is not empty */
};

/* struct w10g_eb_counters.flags */
enum {
    W10G_EB_ST_ACTIVE = 1 << 0,         /* active open (TCP_CONNECT_CB) */
    W10G_EB_ST_PASSIVE = 1 << 1,        /* passive open (PASSIVE_ESTABLISHED_CB) */
    W10G_EB_ST_LATE = 1 << 2,           /* flow older than the programs: counters from then */
};

/* The exported part of the per-socket storage, hot counters first (one or two cache
 * lines read per socket by the iterator). Times from bpf_ktime_get_ns (monotonic);
 * RTTs in microseconds; RTOs in jiffies; windows, cwnd, ssthresh, pipe in octets. */
struct w10g_eb_counters {
    __u64 start_ns;
    __u32 flags;
    __u32 timeouts;
    __u32 subsequent_timeouts;
    __u32 fast_retran;
    __u32 cong_signals;
    __u32 dupacks_in;
    __u32 sacks_rcvd;
    __u32 sack_blocks_rcvd;
    __u32 zero_rwin_rcvd;
    __u32 sample_rtt_us;
    __u32 max_rtt_us;
    __u32 min_rtt_us;            /* UINT32_MAX before the first sample */
    __u64 sum_rtt_us;
    __u32 count_rtt;
    __u32 max_rto_j;
    __u32 min_rto_j;             /* UINT32_MAX before the first sample */
    __u32 max_pipe;
    __u32 max_ss_cwnd;
    __u32 max_ca_cwnd;
    __u32 max_ssthresh;
    __u32 min_ssthresh;          /* UINT32_MAX until one is set */
    __u32 max_mss;
    __u32 min_mss;               /* UINT32_MAX before the first value */
    __u32 ecn_signals;
    __u32 send_stall;
    __u32 pre_cong_sum_cwnd;
    __u32 pre_cong_sum_rtt_us;
    __u32 post_cong_sum_rtt_us;
    __u32 post_cong_count_rtt;
    __u32 spurious_fr;
    __u32 spurious_rto;
    __u32 cong_over_count;
    __u32 lost_retrans;
    __u32 abrupt_timeouts;
    __u32 nonrecov_da;
    __u64 data_octets_in;
    __u32 nonrecov_da_episodes;
    __u32 sum_octets_reordered;
    __u32 slow_start;
    __u32 cong_avoid;
    __u32 max_reasm;
    __u32 max_app_wq;
    __u32 max_app_rq;
    __u32 max_rwin_sent;
    /* sampled on every sent segment (W10G_EB_HOOK_SENT) */
    __u32 zero_rwin_sent;        /* segments sent while rcv_wnd was 0 */
    __u32 snd_lim_trans_snd;     /* entries into tp->chrono_type SNDBUF_LIMITED */
    __u32 snd_lim_trans_cwnd;    /* ... BUSY (neither rwnd- nor sndbuf-limited) */
    __u32 snd_lim_trans_rwin;    /* ... RWND_LIMITED */
    __u32 dupacks_out;           /* pure ACKs repeating the last ACK, ooo data queued */
    __u32 dupack_episodes;       /* runs of those (the first of each) */
    __u32 ece_sent;              /* segments sent with ECE (ecn_flags DEMAND_CWR) */
    __u32 soft_errors;           /* input segments dropped by a TCP check (kfree_skb) */
    __u32 soft_error_reason;     /* RFC 4898 code of the last one (0: none yet) */
    __u32 pad_drop;
    __u8 ip_ttl;
    __u8 ip_tos_in;
    __u8 pad[6];
};

/* The whole sk_storage value: the exported counters, then the programs' own state. */
struct w10g_eb_sk {
    struct w10g_eb_counters c;
    __u32 last_srtt;             /* srtt_us seen by the previous tcp_probe */
    __u32 last_cwnd;
    __u32 last_wnd;              /* raw window field of the previous segment */
    __u32 dup_run;               /* duplicate ACKs of the current run */
    __u32 dup_since_adv;         /* duplicate ACKs since snd_una last advanced */
    __u32 cong_ssthresh;         /* ssthresh at the last congestion entry */
    __u32 last_ack_sent;         /* rcv_nxt at the previous sent segment (its ACK) */
    __u8 post_cong_pending;
    __u8 run_had_recovery;
    __u8 last_chrono;            /* tp->chrono_type at the previous sent segment */
    __u8 dup_out_run;            /* the previous sent segment was a duplicate ACK */
};

/* The iterator's first record: what was loaded and how to convert. */
struct w10g_eb_hdr {
    __u32 magic;                 /* W10G_EB_MAGIC_HDR */
    __u16 size;                  /* sizeof(struct w10g_eb_hdr) */
    __u16 version;               /* W10G_EB_VERSION */
    __u16 rec_size;              /* sizeof(struct w10g_eb_rec) */
    __u16 pad0;
    __u32 hooks;                 /* W10G_EB_HOOK_* the kernel accepted */
    __u32 hz;                    /* CONFIG_HZ: jiffies -> time */
    __u32 full;                  /* per-segment hooks loaded */
    __u64 load_realtime_ns;      /* when the programs were loaded (CLOCK_REALTIME) */
    __u64 ktime_ns;              /* bpf_ktime_get_ns() now */
    __u64 jiffies;               /* bpf_jiffies64() now */
    __u32 reader_uid;
    __u32 netns_ino;
};

struct w10g_eb_rec {
    __u32 magic;                 /* W10G_EB_MAGIC_REC */
    __u16 size;                  /* sizeof(struct w10g_eb_rec) */
    __u16 flags;                 /* W10G_EB_R_* */
    __u64 cookie;
    __u8 family;
    __u8 state;                  /* kernel TCP state */
    __u16 sport;
    __u16 dport;
    __u16 pad0;
    __u32 uid;
    __u32 inode;
    __u8 saddr[16];
    __u8 daddr[16];
    __u64 ktime_ns;              /* when this record was made */
    __u32 jiffies32;
    __u32 netns_ino;
    /* tcp_sock (W10G_EB_R_FULL) */
    __u64 bytes_sent;
    __u64 bytes_retrans;
    __u64 bytes_received;
    __u64 bytes_acked;
    __u32 segs_out;
    __u32 data_segs_out;
    __u32 segs_in;
    __u32 data_segs_in;
    __u32 total_retrans;
    __u32 mss_cache;
    __u32 advmss;
    __u32 packets_out;
    __u32 sacked_out;
    __u32 lost_out;
    __u32 retrans_out;
    __u32 srtt_us;               /* 8 x smoothed RTT, microseconds */
    __u32 mdev_us;
    __u32 rttvar_us;             /* 4 x the RTO variation term */
    __u32 rto_j;                 /* icsk_rto, jiffies */
    __u32 rcv_rtt_us;
    __u32 snd_cwnd;              /* segments */
    __u32 snd_ssthresh;          /* segments */
    __u32 snd_cwnd_clamp;        /* segments */
    __u32 window_clamp;          /* octets */
    __u32 rcv_wnd;
    __u32 snd_wnd;
    __u32 max_window;
    __u32 reordering;
    __u32 snd_una;               /* sequence numbers: 0 unless W10G_EB_R_SEQ */
    __u32 snd_nxt;
    __u32 rcv_nxt;
    __u32 app_wq;                /* write_seq - snd_nxt */
    __u32 app_rq;                /* rcv_nxt - copied_seq */
    __u32 reasm;                 /* end_seq of the last out-of-order skb - rcv_nxt */
    __u32 dsack_dups;
    __u32 received_ce;
    __u32 delivered_ce;
    __u32 chrono_stat[3];        /* jiffies: busy, rwnd-limited, sndbuf-limited */
    __u32 chrono_start;
    __u32 lsndtime;
    __u32 rcv_tstamp;
    __u32 priority;
    __u16 user_mss;
    __u16 mss_clamp;
    __u16 total_rto;
    __u16 total_rto_recoveries;
    __u8 ca_state;
    __u8 retransmits;
    __u8 nonagle;
    __u8 tos;
    __u8 snd_wscale;
    __u8 rcv_wscale;
    __u8 opts;                   /* 1 tstamp_ok, 2 sack_ok, 4 wscale_ok, 8 ECN ok */
    __u8 chrono_type;
    __u8 cb_flags;
    __u8 pad1[7];
    struct w10g_eb_counters c;   /* W10G_EB_R_STORAGE */
};

/* The fields reader's records: struct w10g_eb_rec up to the counters. It skips the
 * storage lookup, a chain of dependent cache misses that is the largest part of a
 * full record's cost. A multiple of 8 (c is 8-aligned), as the decoder requires. */
#define W10G_EB_FIELDS_SIZE ((__u16)__builtin_offsetof(struct w10g_eb_rec, c))

/* what the loader sets before loading (the object's only .rodata variable) */
struct w10g_eb_cfg {
    __u32 hooks;                 /* W10G_EB_HOOK_* being loaded */
    __u32 hz;                    /* CONFIG_HZ */
    __u32 full;                  /* per-segment hooks loaded */
    __u32 pad;
    __u64 load_realtime_ns;
};

/* the writer iterator's control block (array map, one entry) */
enum { W10G_EB_OP_NONE = 0, W10G_EB_OP_CWND_CLAMP = 1, W10G_EB_OP_WINDOW_CLAMP = 2,
       W10G_EB_OP_DESTROY = 3 };
struct w10g_eb_ctl {
    __u64 cookie;
    __u32 op;
    __u32 value;
    __s32 ret;
    __u32 done;
};

#endif
