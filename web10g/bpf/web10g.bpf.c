// SPDX-License-Identifier: GPL-2.0
/* The instruments of the ebpf backend: RFC 4898 (Web10G) statistics on a stock kernel.
 *
 *   w10g_sockops     sock_ops on the cgroup v2 root: start time, open direction, RTO/
 *                    RTT/retransmit/state callbacks into the per-socket storage; at
 *                    TCP_CLOSE a final record into the ring buffer
 *   w10g_cong        tp_btf/tcp_cong_state_set: fast retransmits, congestion signals,
 *                    undo (spurious) detection, pre/post-congestion sums
 *   w10g_retrans     tp_btf/tcp_retransmit_skb: retransmissions of retransmitted data
 *   w10g_drop        tp_btf/kfree_skb: segments a TCP socket's input checks dropped, by
 *                    drop reason (SoftErrors, SoftErrorReason)
 *   w10g_probe       tp_btf/tcp_probe ("full" mode): every received segment of an
 *                    ESTABLISHED socket: duplicate ACKs, SACKs, zero windows, TTL/TOS,
 *                    raw RTT samples recovered from srtt steps, slow start / CA steps
 *   w10g_iter        iter/tcp reader: one header, then one fixed-size record per socket
 *                    of the reader's network namespace (tcp_sock fields via BTF + the
 *                    storage's counters); switches callbacks on for older flows
 *   w10g_iter_fields iter/tcp reader of the same records without the counters (no
 *                    storage lookup), for reads that select no counter
 *   w10g_write       iter/tcp writer: TCP_BPF_SNDCWND_CLAMP / TCP_WINDOW_CLAMP by cookie
 *   w10g_kill        iter/tcp: bpf_sock_destroy() by cookie
 *
 * Built with clang -target bpf against the running kernel's BTF (CO-RE). The record
 * layouts are in csrc/w10g_ebpf_rec.h, shared with the user-space decoder.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "w10g_ebpf_rec.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define SOL_TCP 6
#define TCP_WINDOW_CLAMP 10
#define TCP_CA_CWR 2
#define TCP_CA_Recovery 3
#define TCP_CA_Loss 4
#define TCP_ECN_OK 1
#define TCP_ECN_DEMAND_CWR 4
#define TCPHDR_ACK 0x10
#define TCPCB_EVER_RETRANS 0x80
#define U32_MAX 0xffffffffu

/* set by the loader before loading */
const volatile struct w10g_eb_cfg cfg = {};

/* the callbacks every instrumented socket gets (OR-ed with what is already set) */
#define W10G_CB_FLAGS (BPF_SOCK_OPS_RTO_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG | \
                       BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTT_CB_FLAG)
/* "full" mode adds HDR_OPT_LEN_CB on every sent segment. WRITE_HDR_OPT_CB itself runs
 * only for a program that reserves option space, which this one never does: nothing on
 * the wire changes. */
#define W10G_CB_FLAGS_NOW (W10G_CB_FLAGS | (cfg.full ? BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG : 0))

struct {
    __uint(type, BPF_MAP_TYPE_SK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct w10g_eb_sk);
} w10g_sk SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 22);
} w10g_closed SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct w10g_eb_rec);
} w10g_scratch SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct w10g_eb_ctl);
} w10g_ctl SEC(".maps");

/* The iterator's clock, per CPU. bpf_ktime_get_ns() is a paravirtual clock read on a
 * VM (kvm-clock: 6% of the iterator's time at 20,000 sockets) behind an ordered rdtsc
 * that waits for every load before it; the records of one read share one reading for
 * up to W10G_CLOCK_RECORDS records (about 40 us of walking), never across a jiffy or
 * into another read (another seq_file, or its numbering starting again). */
#define W10G_CLOCK_RECORDS 32
struct w10g_clock {
    __u64 seq;                   /* the seq_file of the read that took the reading */
    __u64 seq_num;               /* its record number then */
    __u64 jiffies;
    __u64 ns;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct w10g_clock);
} w10g_clock SEC(".maps");

/* records lost because the ring buffer was full */
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u64);
} w10g_drops SEC(".maps");

extern int bpf_sock_destroy(struct sock_common *sk) __ksym __weak;

static __always_inline void max32(__u32 *m, __u32 v) { if (v > *m) *m = v; }
static __always_inline void min32(__u32 *m, __u32 v) { if (v < *m) *m = v; }

static __always_inline void init_counters(struct w10g_eb_sk *st, __u32 how)
{
    if (st->c.start_ns)
        return;
    st->c.start_ns = bpf_ktime_get_ns();
    st->c.flags |= how;
    st->c.min_rtt_us = U32_MAX;
    st->c.min_rto_j = U32_MAX;
    st->c.min_ssthresh = U32_MAX;
    st->c.min_mss = U32_MAX;
}

/* Samples taken at every callback: the running maxima and minima. */
static __always_inline void sample_state(struct w10g_eb_sk *st, __u32 cwnd, __u32 ssthresh,
                                         __u32 mss, __u32 inflight, __u32 rto_j)
{
    __u32 cw = cwnd * mss;
    if (mss) {
        max32(&st->c.max_mss, mss);
        min32(&st->c.min_mss, mss);
    }
    max32(&st->c.max_pipe, inflight * mss);
    if (cwnd <= ssthresh)
        max32(&st->c.max_ss_cwnd, cw);
    else
        max32(&st->c.max_ca_cwnd, cw);
    if (ssthresh < 0x7fffffff) {
        max32(&st->c.max_ssthresh, ssthresh * mss);
        min32(&st->c.min_ssthresh, ssthresh * mss);
    }
    if (rto_j) {
        max32(&st->c.max_rto_j, rto_j);
        min32(&st->c.min_rto_j, rto_j);
    }
}

static __always_inline void rtt_sample(struct w10g_eb_sk *st, __u32 us)
{
    st->c.sample_rtt_us = us;
    max32(&st->c.max_rtt_us, us);
    min32(&st->c.min_rtt_us, us);
    st->c.sum_rtt_us += us;
    st->c.count_rtt++;
    if (st->post_cong_pending) {
        st->post_cong_pending = 0;
        st->c.post_cong_sum_rtt_us += us;
        st->c.post_cong_count_rtt++;
    }
}

/* ---- one record from a full tcp_sock -------------------------------------------- */

static __always_inline void fill_identity(struct w10g_eb_rec *r, struct sock_common *skc)
{
    /* direct loads from the BTF pointer (no bpf_probe_read: a helper call and a
     * fault-tolerant copy per field cost more than the field) */
    r->family = skc->skc_family;
    r->state = skc->skc_state;
    r->sport = skc->skc_num;
    r->dport = bpf_ntohs(skc->skc_dport);
    if (r->family == AF_INET6) {
        __u32 *s = (__u32 *)r->saddr, *d = (__u32 *)r->daddr;
        s[0] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[0];
        s[1] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[1];
        s[2] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[2];
        s[3] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[3];
        d[0] = skc->skc_v6_daddr.in6_u.u6_addr32[0];
        d[1] = skc->skc_v6_daddr.in6_u.u6_addr32[1];
        d[2] = skc->skc_v6_daddr.in6_u.u6_addr32[2];
        d[3] = skc->skc_v6_daddr.in6_u.u6_addr32[3];
    } else {
        __u32 *s = (__u32 *)r->saddr, *d = (__u32 *)r->daddr;
        s[0] = skc->skc_rcv_saddr;
        d[0] = skc->skc_daddr;
        s[1] = s[2] = s[3] = d[1] = d[2] = d[3] = 0;
    }
    r->netns_ino = skc->skc_net.net->ns.inum;
}

/* The socket's inode number (as sock_i_ino): sk->sk_ino where the kernel has it (6.17+:
 * same cache line as fields read anyway), else the inode next to the struct socket
 * (struct socket_alloc, SOCK_INODE): one cache miss instead of socket -> file -> inode. */
static __always_inline __u32 sock_ino(struct sock *sk)
{
    if (bpf_core_field_exists(sk->sk_ino))
        return sk->sk_ino;
    {
        struct socket *so = sk->sk_socket;
        struct socket_alloc *sa;
        if (!so)
            return 0;
        sa = container_of(so, struct socket_alloc, socket);
        return BPF_CORE_READ(sa, vfs_inode.i_ino);
    }
}

static __always_inline void fill_full(struct w10g_eb_rec *r, struct tcp_sock *tp)
{
    struct sock *sk = (struct sock *)tp;
    struct inet_connection_sock *icsk = &tp->inet_conn;
    struct sk_buff *ooo;

    r->flags |= W10G_EB_R_FULL;
    r->uid = sk->sk_uid.val;
    r->inode = sock_ino(sk);
    r->bytes_sent = tp->bytes_sent;
    r->bytes_retrans = tp->bytes_retrans;
    r->bytes_received = tp->bytes_received;
    r->bytes_acked = tp->bytes_acked;
    r->segs_out = tp->segs_out;
    r->data_segs_out = tp->data_segs_out;
    r->segs_in = tp->segs_in;
    r->data_segs_in = tp->data_segs_in;
    r->total_retrans = tp->total_retrans;
    r->mss_cache = tp->mss_cache;
    r->advmss = tp->advmss;
    r->packets_out = tp->packets_out;
    r->sacked_out = tp->sacked_out;
    r->lost_out = tp->lost_out;
    r->retrans_out = tp->retrans_out;
    r->srtt_us = tp->srtt_us;
    r->mdev_us = tp->mdev_us;
    r->rttvar_us = tp->rttvar_us;
    r->rto_j = icsk->icsk_rto;
    r->rcv_rtt_us = tp->rcv_rtt_est.rtt_us;
    r->snd_cwnd = tp->snd_cwnd;
    r->snd_ssthresh = tp->snd_ssthresh;
    r->snd_cwnd_clamp = tp->snd_cwnd_clamp;
    r->window_clamp = tp->window_clamp;
    r->rcv_wnd = tp->rcv_wnd;
    r->snd_wnd = tp->snd_wnd;
    r->max_window = tp->max_window;
    r->reordering = tp->reordering;
    r->snd_una = tp->snd_una;
    r->snd_nxt = tp->snd_nxt;
    r->rcv_nxt = tp->rcv_nxt;
    r->app_wq = tp->write_seq - r->snd_nxt;
    r->app_rq = r->rcv_nxt - tp->copied_seq;
    ooo = tp->ooo_last_skb;
    r->reasm = 0;
    if (ooo) {
        __u32 end_seq = 0;
        /* TCP_SKB_CB(skb)->end_seq: the second word of skb->cb */
        bpf_probe_read_kernel(&end_seq, 4, (char *)ooo +
                              bpf_core_field_offset(struct sk_buff, cb) + 4);
        r->reasm = end_seq - r->rcv_nxt;
        r->flags |= W10G_EB_R_OOO;
    }
    r->dsack_dups = tp->dsack_dups;
    r->received_ce = bpf_core_field_exists(tp->received_ce) ? tp->received_ce : 0;
    r->delivered_ce = tp->delivered_ce;
    r->chrono_stat[0] = tp->chrono_stat[0];
    r->chrono_stat[1] = tp->chrono_stat[1];
    r->chrono_stat[2] = tp->chrono_stat[2];
    r->chrono_start = tp->chrono_start;
    r->chrono_type = BPF_CORE_READ_BITFIELD(tp, chrono_type);
    r->lsndtime = tp->lsndtime;
    r->rcv_tstamp = tp->rcv_tstamp;
    r->priority = sk->sk_priority;
    r->user_mss = tp->rx_opt.user_mss;
    r->mss_clamp = tp->rx_opt.mss_clamp;
    if (bpf_core_field_exists(tp->total_rto)) {
        r->total_rto = tp->total_rto;
        r->total_rto_recoveries = tp->total_rto_recoveries;
    } else {
        r->total_rto = r->total_rto_recoveries = 0;
    }
    r->ca_state = BPF_CORE_READ_BITFIELD(icsk, icsk_ca_state);
    r->retransmits = icsk->icsk_retransmits;
    r->nonagle = BPF_CORE_READ_BITFIELD(tp, nonagle);
    if (r->family == AF_INET6)
        {
            struct ipv6_pinfo *np = tp->inet_conn.icsk_inet.pinet6;
            r->tos = np ? np->tclass : 0;
        }
    else
        r->tos = tp->inet_conn.icsk_inet.tos;
    r->snd_wscale = BPF_CORE_READ_BITFIELD(tp, rx_opt.snd_wscale);
    r->rcv_wscale = BPF_CORE_READ_BITFIELD(tp, rx_opt.rcv_wscale);
    r->opts = (BPF_CORE_READ_BITFIELD(tp, rx_opt.tstamp_ok) ? 1 : 0) |
              (BPF_CORE_READ_BITFIELD(tp, rx_opt.sack_ok) ? 2 : 0) |
              (BPF_CORE_READ_BITFIELD(tp, rx_opt.wscale_ok) ? 4 : 0) |
              ((tp->ecn_flags & TCP_ECN_OK) ? 8 : 0);
    r->cb_flags = tp->bpf_sock_ops_cb_flags;
}

static __always_inline void fill_counters(struct w10g_eb_rec *r, struct w10g_eb_sk *st)
{
    if (!st) {
        __builtin_memset(&r->c, 0, sizeof(r->c));
        return;
    }
    __builtin_memcpy(&r->c, &st->c, sizeof(r->c));
    r->flags |= W10G_EB_R_STORAGE;
}

static __always_inline __u64 record_clock(struct seq_file *seq, __u64 seq_num, __u64 j)
{
    __u32 zero = 0;
    struct w10g_clock *c = bpf_map_lookup_elem(&w10g_clock, &zero);

    if (!c)
        return bpf_ktime_get_ns();
    if (c->seq != (__u64)(unsigned long)seq || c->jiffies != j ||
        seq_num - c->seq_num >= W10G_CLOCK_RECORDS) {
        c->seq = (__u64)(unsigned long)seq;
        c->seq_num = seq_num;
        c->jiffies = j;
        c->ns = bpf_ktime_get_ns();
    }
    return c->ns;
}

static __always_inline struct w10g_eb_rec *scratch(void)
{
    __u32 zero = 0;
    return bpf_map_lookup_elem(&w10g_scratch, &zero);
}

/* ---- sock_ops ----------------------------------------------------------------------- */

/* One segment about to be sent (HDR_OPT_LEN_CB, "full" mode): its header is not written
 * yet, so the window is the one advertised before it and ECE what tcp_ecn_send() will
 * set from ecn_flags. */
static __always_inline void sent_segment(struct bpf_sock_ops *skops, struct w10g_eb_sk *st,
                                         struct tcp_sock *tp)
{
    __u8 chrono = BPF_CORE_READ_BITFIELD(tp, chrono_type);

    /* SndLimTrans*: entries into each limit state of tcp_chrono (1 busy = cwnd-limited,
     * 2 rwnd-limited, 3 sndbuf-limited), sampled at each sent segment */
    if (chrono != st->last_chrono) {
        st->last_chrono = chrono;
        if (chrono == 1)
            st->c.snd_lim_trans_cwnd++;
        else if (chrono == 2)
            st->c.snd_lim_trans_rwin++;
        else if (chrono == 3)
            st->c.snd_lim_trans_snd++;
    }
    if (tp->rcv_wnd == 0)
        st->c.zero_rwin_sent++;
    if ((tp->ecn_flags & (TCP_ECN_OK | TCP_ECN_DEMAND_CWR)) == (TCP_ECN_OK | TCP_ECN_DEMAND_CWR))
        st->c.ece_sent++;
    /* a duplicate ACK: a pure ACK repeating the previous segment's cumulative ACK
     * (rcv_nxt, which the header about to be written carries) while out-of-order data
     * is queued; an episode: one whose previous segment was not one */
    {
        __u32 rcv_nxt = tp->rcv_nxt;
        int dup = skops->skb_len == 0 && skops->skb_tcp_flags == TCPHDR_ACK &&
                  rcv_nxt == st->last_ack_sent && tp->ooo_last_skb;
        if (dup) {
            st->c.dupacks_out++;
            if (!st->dup_out_run)
                st->c.dupack_episodes++;
        }
        st->dup_out_run = dup;
        st->last_ack_sent = rcv_nxt;
    }
}

static __always_inline void close_record(struct bpf_sock_ops *skops, struct w10g_eb_sk *st)
{
    struct bpf_sock *bsk = skops->sk;
    struct tcp_sock *tp;
    struct w10g_eb_rec *r;

    if (!bsk)
        return;
    tp = bpf_skc_to_tcp_sock(bsk);
    if (!tp)
        return;
    r = bpf_ringbuf_reserve(&w10g_closed, sizeof(*r), 0);
    if (!r) {
        __u32 zero = 0;
        __u64 *d = bpf_map_lookup_elem(&w10g_drops, &zero);
        if (d)
            __sync_fetch_and_add(d, 1);
        return;
    }
    __builtin_memset(r, 0, sizeof(*r));
    r->magic = W10G_EB_MAGIC_REC;
    r->size = sizeof(*r);
    r->flags = W10G_EB_R_CLOSE | W10G_EB_R_SEQ;
    r->cookie = bpf_get_socket_cookie(skops);
    r->ktime_ns = bpf_ktime_get_ns();
    r->jiffies32 = (__u32)bpf_jiffies64();
    fill_identity(r, (struct sock_common *)tp);
    fill_full(r, tp);
    r->state = BPF_TCP_CLOSE;
    fill_counters(r, st);
    bpf_ringbuf_submit(r, 0);
}

SEC("sockops")
int w10g_sockops(struct bpf_sock_ops *skops)
{
    struct w10g_eb_sk *st;
    __u32 op = skops->op;
    struct bpf_sock *bsk;

    if (skops->family != AF_INET && skops->family != AF_INET6)
        return 1;
    switch (op) {
    case BPF_SOCK_OPS_TCP_CONNECT_CB:
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
    case BPF_SOCK_OPS_RTO_CB:
    case BPF_SOCK_OPS_RETRANS_CB:
    case BPF_SOCK_OPS_STATE_CB:
    case BPF_SOCK_OPS_RTT_CB:
        break;
    case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
        /* also called by tcp_current_mss() with no segment: not a send */
        if (!cfg.full || (skops->args[0] & BPF_WRITE_HDR_TCP_CURRENT_MSS))
            return 1;
        break;
    default:
        return 1;
    }
    bsk = skops->sk;
    if (!bsk)
        return 1;
    st = bpf_sk_storage_get(&w10g_sk, bsk, 0,
                            op == BPF_SOCK_OPS_STATE_CB || op == BPF_SOCK_OPS_HDR_OPT_LEN_CB
                            ? 0 : BPF_SK_STORAGE_GET_F_CREATE);
    if (!st)
        return 1;

    switch (op) {
    case BPF_SOCK_OPS_TCP_CONNECT_CB:
        init_counters(st, W10G_EB_ST_ACTIVE);
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | W10G_CB_FLAGS_NOW);
        return 1;
    case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
        init_counters(st, W10G_EB_ST_ACTIVE);
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | W10G_CB_FLAGS_NOW);
        break;
    case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
        init_counters(st, W10G_EB_ST_PASSIVE);
        bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | W10G_CB_FLAGS_NOW);
        break;
    case BPF_SOCK_OPS_RTO_CB:
        /* args: icsk_retransmits (before this expiry), icsk_rto, expired */
        if (skops->args[0] == 0) {
            st->c.timeouts++;
            if (st->dup_since_adv == 0)
                st->c.abrupt_timeouts++;
        } else {
            st->c.subsequent_timeouts++;
        }
        break;
    case BPF_SOCK_OPS_RTT_CB:
        /* once per RTT: args[0] = the sample (us) when the per-segment hook is absent */
        if (!cfg.full)
            rtt_sample(st, skops->args[0]);
        break;
    case BPF_SOCK_OPS_STATE_CB:
        if (skops->args[1] == BPF_TCP_CLOSE)
            close_record(skops, st);
        return 1;
    default:
        break;
    }
    {
        __u32 inflight = skops->packets_out - skops->sacked_out - skops->lost_out +
                         skops->retrans_out;
        struct tcp_sock *tp = bpf_skc_to_tcp_sock(bsk);
        if (op == BPF_SOCK_OPS_HDR_OPT_LEN_CB && tp)
            sent_segment(skops, st, tp);
        __u32 rto = tp ? tp->inet_conn.icsk_rto : 0;
        if ((int)inflight < 0)
            inflight = 0;
        sample_state(st, skops->snd_cwnd, skops->snd_ssthresh, skops->mss_cache, inflight, rto);
    }
    return 1;
}

/* ---- tracepoints ----------------------------------------------------------------------- */

SEC("tp_btf/tcp_cong_state_set")
int BPF_PROG(w10g_cong, struct sock *sk, const __u8 ca_state)
{
    struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
    struct w10g_eb_sk *st;
    __u8 old;

    if (!tp)
        return 0;
    st = bpf_sk_storage_get(&w10g_sk, sk, 0, 0);
    if (!st)
        return 0;
    old = BPF_CORE_READ_BITFIELD(&tp->inet_conn, icsk_ca_state);
    if (ca_state == old)
        return 0;
    if (ca_state >= TCP_CA_CWR && old < TCP_CA_CWR) {
        __u32 mss = tp->mss_cache;
        st->c.cong_signals++;
        st->c.pre_cong_sum_cwnd += tp->snd_cwnd * mss;
        st->c.pre_cong_sum_rtt_us += st->c.sample_rtt_us;
        st->post_cong_pending = 1;
        st->cong_ssthresh = tp->snd_ssthresh;
        if (ca_state == TCP_CA_Recovery) {
            st->c.fast_retran++;
            st->run_had_recovery = 1;
        } else if (ca_state == TCP_CA_CWR) {
            if (tp->ecn_flags & TCP_ECN_OK)
                st->c.ecn_signals++;
            else
                st->c.send_stall++;
        }
    } else if (ca_state == TCP_CA_Recovery && old == TCP_CA_CWR) {
        st->c.fast_retran++;
        st->run_had_recovery = 1;
    } else if (ca_state == TCP_CA_Loss && old < TCP_CA_Loss) {
        /* a timeout during recovery: already counted as one congestion signal */
        st->cong_ssthresh = tp->snd_ssthresh;
    } else if (ca_state < TCP_CA_CWR && old >= TCP_CA_Recovery) {
        /* leaving recovery/loss: an undo restores ssthresh above the reduced value */
        if (tp->snd_ssthresh > st->cong_ssthresh) {
            st->c.cong_over_count++;
            if (old == TCP_CA_Recovery)
                st->c.spurious_fr++;
            else
                st->c.spurious_rto++;
        }
    }
    return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(w10g_retrans, const struct sock *sk, const struct sk_buff *skb)
{
    struct w10g_eb_sk *st = bpf_sk_storage_get(&w10g_sk, (struct sock *)sk, 0, 0);
    __u8 sacked = 0;

    if (!st || !skb)
        return 0;
    /* TCP_SKB_CB(skb)->sacked: byte 13 of skb->cb */
    bpf_probe_read_kernel(&sacked, 1, (char *)skb + bpf_core_field_offset(struct sk_buff, cb) + 13);
    if (sacked & TCPCB_EVER_RETRANS)
        st->c.lost_retrans++;
    return 0;
}

/* RFC 4898 tcpEStatsStackSoftErrorReason of a kernel drop reason; 0: not a soft error
 * (a reset, a closed or overflowing socket, memory pressure, coalescing...). CO-RE: the
 * enum's values are the running kernel's; a reason it does not have never matches. */
#define W10G_DR(name) (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_##name) \
                       ? (__u32)bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_##name) \
                       : 0xFFFFFFFFu)
static __always_inline __u32 soft_error_reason(__u32 r)
{
    if (r == W10G_DR(TCP_OLD_DATA) || r == W10G_DR(TCP_OLD_SEQUENCE))
        return 1;                                   /* belowDataWindow */
    if (r == W10G_DR(TCP_OVERWINDOW) || r == W10G_DR(TCP_INVALID_SEQUENCE) ||
        r == W10G_DR(TCP_INVALID_END_SEQUENCE) || r == W10G_DR(TCP_ZEROWINDOW))
        return 2;                                   /* aboveDataWindow */
    if (r == W10G_DR(TCP_OLD_ACK) || r == W10G_DR(TCP_TOO_OLD_ACK))
        return 3;                                   /* belowAckWindow */
    if (r == W10G_DR(TCP_ACK_UNSENT_DATA) || r == W10G_DR(TCP_INVALID_ACK_SEQUENCE))
        return 4;                                   /* aboveAckWindow */
    if (r == W10G_DR(TCP_RFC7323_PAWS) || r == W10G_DR(TCP_RFC7323_PAWS_ACK))
        return 5;                                   /* belowTSWindow */
    if (r == W10G_DR(TCP_RFC7323_TSECR))
        return 6;                                   /* aboveTSWindow */
    if (r == W10G_DR(TCP_CSUM))
        return 7;                                   /* dataCheckSum */
    if (r == W10G_DR(TCP_FLAGS) || r == W10G_DR(TCP_INVALID_SYN))
        return 8;                                   /* otherSoftError */
    return 0;
}

/* Drops charged to a socket (rx_sk: set once the segment found its socket; a checksum
 * failure is found before, so it is seldom seen here). Runs only when something is
 * dropped, on any protocol: the socket's storage is looked up only for TCP soft errors. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(w10g_drop, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
             struct sock *rx_sk)
{
    struct w10g_eb_sk *st;
    __u32 why;

    if (!rx_sk || rx_sk->sk_protocol != IPPROTO_TCP)
        return 0;
    why = soft_error_reason((__u32)reason);
    if (!why)
        return 0;
    st = bpf_sk_storage_get(&w10g_sk, rx_sk, 0, 0);
    if (!st)
        return 0;
    st->c.soft_errors++;
    st->c.soft_error_reason = why;
    return 0;
}

struct opt_walk {
    __u8 opt[40];
    __u32 len;
    __u32 off;
    __u32 sack_blocks;
};

static long walk_option(__u64 i, void *data)
{
    struct opt_walk *w = data;
    __u32 off = w->off;
    __u8 kind, l;

    if (off >= w->len || off >= 39)
        return 1;
    barrier_var(off);
    off &= 63;
    if (off >= 39)
        return 1;
    kind = w->opt[off];
    if (kind == 0)
        return 1;
    if (kind == 1) {
        w->off = off + 1;
        return 0;
    }
    l = w->opt[off + 1];
    if (l < 2)
        return 1;
    if (kind == 5 && l >= 10)
        w->sack_blocks += (l - 2) / 8;
    w->off = off + l;
    return 0;
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(w10g_probe, struct sock *sk, struct sk_buff *skb)
{
    struct tcp_sock *tp = bpf_skc_to_tcp_sock(sk);
    struct w10g_eb_sk *st;
    struct tcphdr th;
    unsigned char *head;
    __u16 nh;
    __u32 len, doff, ack, snd_una, snd_nxt, wnd, srtt, cwnd, ssthresh, mss, payload;
    __u8 flags;

    if (!tp || !skb)
        return 0;
    st = bpf_sk_storage_get(&w10g_sk, sk, 0, 0);
    if (!st)
        return 0;
    if (bpf_probe_read_kernel(&th, sizeof(th), skb->data))
        return 0;
    len = skb->len;
    doff = th.doff * 4;
    payload = len > doff ? len - doff : 0;
    st->c.data_octets_in += payload;
    ack = bpf_ntohl(th.ack_seq);
    wnd = bpf_ntohs(th.window);
    snd_una = tp->snd_una;
    snd_nxt = tp->snd_nxt;
    flags = ((__u8 *)&th)[13];

    /* IP header: TTL and TOS / traffic class */
    head = skb->head;
    nh = skb->network_header;
    if (sk->__sk_common.skc_family == AF_INET6) {
        __u8 b[8];
        if (!bpf_probe_read_kernel(b, 8, head + nh)) {
            st->c.ip_tos_in = (b[0] << 4) | (b[1] >> 4);
            st->c.ip_ttl = b[7];
        }
    } else {
        __u8 b[9];
        if (!bpf_probe_read_kernel(b, 9, head + nh)) {
            st->c.ip_tos_in = b[1];
            st->c.ip_ttl = b[8];
        }
    }

    if (wnd == 0 && !(flags & 0x07))
        st->c.zero_rwin_rcvd++;

    /* SACK option blocks */
    if (doff > 20 && doff <= 60) {
        struct opt_walk w = {};
        __u32 olen = doff - 20;
        if (olen > 40)
            olen = 40;
        if (!bpf_probe_read_kernel(w.opt, olen & 63, (char *)skb->data + 20)) {
            w.len = olen;
            bpf_loop(40, walk_option, &w, 0);
            if (w.sack_blocks) {
                st->c.sacks_rcvd++;
                st->c.sack_blocks_rcvd += w.sack_blocks;
            }
        }
    }

    /* RFC 5681 duplicate ACK: no data, no SYN/FIN, ACK == SND.UNA with data outstanding,
     * window unchanged */
    if ((flags & 0x10) && !(flags & 0x03) && payload == 0 && ack == snd_una &&
        snd_una != snd_nxt && wnd == st->last_wnd) {
        st->c.dupacks_in++;
        st->dup_run++;
        st->dup_since_adv++;
    } else if ((flags & 0x10) && (__s32)(ack - snd_una) > 0) {
        if (st->dup_run && !st->run_had_recovery) {
            st->c.nonrecov_da_episodes++;
            st->c.nonrecov_da += st->dup_run;
            st->c.sum_octets_reordered += ack - snd_una;
        }
        st->dup_run = 0;
        st->dup_since_adv = 0;
        st->run_had_recovery = 0;
    }
    st->last_wnd = wnd;

    /* the raw RTT sample behind each srtt step (inverse of tcp_rtt_estimator) */
    srtt = tp->srtt_us;
    if (srtt != st->last_srtt) {
        __u32 old = st->last_srtt;
        __s64 m = old ? (__s64)srtt - old + (old >> 3) : srtt >> 3;
        if (m > 0 && cfg.full)
            rtt_sample(st, (__u32)m);
        st->last_srtt = srtt;
    }

    /* window growth steps, and the sampled maxima */
    cwnd = tp->snd_cwnd;
    ssthresh = tp->snd_ssthresh;
    mss = tp->mss_cache;
    if (st->last_cwnd && cwnd > st->last_cwnd) {
        if (st->last_cwnd < ssthresh)
            st->c.slow_start++;
        else
            st->c.cong_avoid++;
    }
    st->last_cwnd = cwnd;
    {
        __u32 po = tp->packets_out, so = tp->sacked_out,
              lo = tp->lost_out, ro = tp->retrans_out;
        __u32 inflight = po - so - lo + ro;
        __u32 rcv_nxt = tp->rcv_nxt;
        struct sk_buff *ooo = tp->ooo_last_skb;
        if ((int)inflight < 0)
            inflight = 0;
        sample_state(st, cwnd, ssthresh, mss, inflight, tp->inet_conn.icsk_rto);
        max32(&st->c.max_app_wq, tp->write_seq - snd_nxt);
        max32(&st->c.max_app_rq, rcv_nxt - tp->copied_seq);
        max32(&st->c.max_rwin_sent, tp->rcv_wnd);
        if (ooo) {
            __u32 end_seq = 0;
            bpf_probe_read_kernel(&end_seq, 4, (char *)ooo +
                                  bpf_core_field_offset(struct sk_buff, cb) + 4);
            max32(&st->c.max_reasm, end_seq - rcv_nxt);
        }
    }
    return 0;
}

/* ---- the reader --------------------------------------------------------------------- */

/* One reader pass over one socket. counters: a full record (the storage's counters, and
 * callbacks switched on for flows older than the programs); 0: the fields reader's
 * record, cut before the counters, without the storage lookup. A constant at each call,
 * so each program is compiled with only its own branch. */
static __always_inline int iter_record(struct bpf_iter__tcp *ctx, const int counters)
{
    struct seq_file *seq = ctx->meta->seq;
    struct sock_common *skc = ctx->sk_common;
    struct w10g_eb_rec *r;
    struct tcp_sock *tp;
    struct w10g_eb_sk *st = NULL;
    __u32 reader = (__u32)bpf_get_current_uid_gid();

    /* The header: before the first socket, or, when there is none (a namespace without
     * TCP sockets), at the end-of-walk call (no socket; the kernel passes seq_num as
     * the count of sockets shown minus one, so (u64)-1 there). */
    if (skc ? ctx->meta->seq_num == 0 : ctx->meta->seq_num == (__u64)-1) {
        struct w10g_eb_hdr h = {};
        h.magic = W10G_EB_MAGIC_HDR;
        h.size = sizeof(h);
        h.version = W10G_EB_VERSION;
        h.rec_size = counters ? sizeof(struct w10g_eb_rec) : W10G_EB_FIELDS_SIZE;
        h.hooks = cfg.hooks;
        h.hz = cfg.hz;
        h.full = cfg.full;
        h.load_realtime_ns = cfg.load_realtime_ns;
        h.ktime_ns = bpf_ktime_get_ns();
        h.jiffies = bpf_jiffies64();
        h.reader_uid = reader;
        if (skc)
            h.netns_ino = skc->skc_net.net->ns.inum;
        bpf_seq_write(seq, &h, sizeof(h));
    }
    if (!skc)
        return 0;
    r = scratch();
    if (!r)
        return 0;
    /* The clock first: a fresh reading (bpf_ktime_get_ns, an ordered rdtsc) waits for
     * every load before it. Then the storage lookup: its chain of dependent loads (sk ->
     * sk_bpf_storage -> cache slot -> element), three cache misses in a row, is the
     * longest path of the program; started first, the tcp_sock loads below overlap
     * with it instead of adding to it. */
    {
        __u64 j = bpf_jiffies64();
        r->ktime_ns = record_clock(seq, ctx->meta->seq_num, j);
        r->jiffies32 = (__u32)j;
    }
    tp = bpf_skc_to_tcp_sock(skc);
    if (counters && tp)
        st = bpf_sk_storage_get(&w10g_sk, tp, 0, 0);
    /* Every field of the record is written below (no memset of the per-CPU scratch:
     * the padding stays as the map was created, zero). */
    r->magic = W10G_EB_MAGIC_REC;
    r->size = counters ? sizeof(*r) : W10G_EB_FIELDS_SIZE;
    r->flags = 0;
    r->cookie = bpf_get_socket_cookie(skc);
    fill_identity(r, skc);
    if (tp) {
        fill_full(r, tp);
        r->uid = ctx->uid;
        if (reader == 0 || reader == ctx->uid)
            r->flags |= W10G_EB_R_SEQ;
        else
            r->snd_una = r->snd_nxt = r->rcv_nxt = 0;
        if (counters && !st && r->state != BPF_TCP_LISTEN && r->state != BPF_TCP_CLOSE &&
            (cfg.hooks & W10G_EB_HOOK_SOCKOPS)) {
            /* a flow older than the programs: counters from now on, callbacks on */
            st = bpf_sk_storage_get(&w10g_sk, tp, 0, BPF_SK_STORAGE_GET_F_CREATE);
            if (st) {
                int flags = r->cb_flags | W10G_CB_FLAGS_NOW;
                init_counters(st, W10G_EB_ST_LATE);
                bpf_setsockopt(tp, SOL_TCP, TCP_BPF_SOCK_OPS_CB_FLAGS, &flags, sizeof(flags));
            }
        }
    } else {
        /* a request or TIME_WAIT socket: identity only */
        r->uid = ctx->uid;
        r->inode = 0;
        __builtin_memset(&r->bytes_sent, 0,
                         offsetof(struct w10g_eb_rec, c) - offsetof(struct w10g_eb_rec, bytes_sent));
    }
    if (!counters) {
        bpf_seq_write(seq, r, W10G_EB_FIELDS_SIZE);
        return 0;
    }
    fill_counters(r, st);
    bpf_seq_write(seq, r, sizeof(*r));
    return 0;
}

SEC("iter/tcp")
int w10g_iter(struct bpf_iter__tcp *ctx)
{
    return iter_record(ctx, 1);
}

/* The fields reader: for reads that ask for no counter (their variables all come from
 * the tcp_sock). Same records, cut before the counters; no storage lookup. */
SEC("iter/tcp")
int w10g_iter_fields(struct bpf_iter__tcp *ctx)
{
    return iter_record(ctx, 0);
}

/* ---- writes and kills, by cookie ------------------------------------------------------ */

SEC("iter/tcp")
int w10g_write(struct bpf_iter__tcp *ctx)
{
    struct sock_common *skc = ctx->sk_common;
    struct w10g_eb_ctl *c;
    struct tcp_sock *tp;
    __u32 zero = 0;
    int v, ret;

    if (!skc)
        return 0;
    c = bpf_map_lookup_elem(&w10g_ctl, &zero);
    if (!c || c->done || bpf_get_socket_cookie(skc) != c->cookie)
        return 0;
    tp = bpf_skc_to_tcp_sock(skc);
    if (!tp) {
        c->ret = -22;
        c->done = 1;
        return 0;
    }
    v = c->value;
    if (c->op == W10G_EB_OP_CWND_CLAMP)
        ret = bpf_setsockopt(tp, SOL_TCP, TCP_BPF_SNDCWND_CLAMP, &v, sizeof(v));
    else if (c->op == W10G_EB_OP_WINDOW_CLAMP)
        ret = bpf_setsockopt(tp, SOL_TCP, TCP_WINDOW_CLAMP, &v, sizeof(v));
    else
        ret = -22;
    c->ret = ret;
    c->done = 1;
    bpf_seq_write(ctx->meta->seq, &ret, sizeof(ret));
    return 0;
}

SEC("iter/tcp")
int w10g_kill(struct bpf_iter__tcp *ctx)
{
    struct sock_common *skc = ctx->sk_common;
    struct w10g_eb_ctl *c;
    __u32 zero = 0;
    int ret;

    if (!skc)
        return 0;
    c = bpf_map_lookup_elem(&w10g_ctl, &zero);
    if (!c || c->done || c->op != W10G_EB_OP_DESTROY || bpf_get_socket_cookie(skc) != c->cookie)
        return 0;
    ret = bpf_sock_destroy(skc);
    c->ret = ret;
    c->done = 1;
    bpf_seq_write(ctx->meta->seq, &ret, sizeof(ret));
    return 0;
}
