/* The ebpf decoder; see w10g_ebpf.h. */
#include "w10g_ebpf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "w10g_ebpf_rec.h"
#include "w10g_rows.h"
#include "w10g_stream.h"

/* Linux TCP state -> RFC 4898 tcpEStatsStackState (as the sock_diag decoder). */
static const uint8_t rfc_state[16] = {
    0, 5, 3, 4, 6, 7, 11, 1, 8, 9, 2, 10, 4, 1, 0, 0,
};

static const char *const field_names[] = {
#define W10G_EB_NAME(name, kind) #name,
    W10G_EB_FIELDS(W10G_EB_NAME)
#undef W10G_EB_NAME
};
static const char *const field_kinds[] = {
#define W10G_EB_KIND(name, kind) #kind,
    W10G_EB_FIELDS(W10G_EB_KIND)
#undef W10G_EB_KIND
};

const char *w10g_eb_field_name(int f) { return f >= 0 && f < W10G_EB_NFIELDS ? field_names[f] : NULL; }
const char *w10g_eb_field_kind(int f) { return f >= 0 && f < W10G_EB_NFIELDS ? field_kinds[f] : NULL; }
size_t w10g_eb_rec_size(void) { return sizeof(struct w10g_eb_rec); }
size_t w10g_eb_hdr_size(void) { return sizeof(struct w10g_eb_hdr); }
size_t w10g_eb_fields_size(void) { return W10G_EB_FIELDS_SIZE; }

/* ---- the row layout and the copy plan ------------------------------------------------ */

static const uint16_t row_off[] = {
#define W10G_EB_ROFF(name, kind) offsetof(struct w10g_eb_row, name),
    W10G_EB_FIELDS(W10G_EB_ROFF)
#undef W10G_EB_ROFF
};
static const uint8_t row_width[] = {
#define W10G_EB_RW(name, kind) sizeof(((struct w10g_eb_row *)0)->name),
    W10G_EB_FIELDS(W10G_EB_RW)
#undef W10G_EB_RW
};

int w10g_eb_row_offset(int f) { return f >= 0 && f < W10G_EB_NFIELDS ? row_off[f] : -1; }
size_t w10g_eb_row_size(void) { return sizeof(struct w10g_eb_row); }

void w10g_eb_plan(struct w10g_eb_config *cfg, size_t itemsize)
{
    cfg->nruns = w10g_runs_plan(cfg->runs, W10G_EB_NFIELDS, cfg->off, row_off, row_width,
                                itemsize, sizeof(struct w10g_eb_row), &cfg->direct);
}

/* ---- one record -> one row -------------------------------------------------------- */

/* Every column is computed for every record, into struct w10g_eb_row: straight-line
 * stores at fixed offsets, no test of whether the column was asked for. */
#define PUT(F, T, expr) (w->F = (T)(expr))
#define PUT_U8(F, e) PUT(F, uint8_t, e)
#define PUT_U16(F, e) PUT(F, uint16_t, e)
#define PUT_U32(F, e) PUT(F, uint32_t, e)
#define PUT_U64(F, e) PUT(F, uint64_t, e)
#define PUT_I32(F, e) PUT(F, int32_t, e)
#define PUT_I64(F, e) PUT(F, int64_t, e)

static inline uint32_t sat_mul(uint32_t a, uint32_t b)
{
    uint64_t p = (uint64_t)a * b;
    return p > UINT32_MAX ? UINT32_MAX : (uint32_t)p;
}

static inline uint32_t us_to_ms(uint32_t us) { return us == UINT32_MAX ? UINT32_MAX : us / 1000; }

/* Jiffies to time. A division by a run-time hz is a hardware divide (tens of cycles,
 * eight per row: most of the decoder's time); the usual CONFIG_HZ values get divisions
 * by constants instead, which the compiler turns into multiplications. The switch is
 * predicted: hz is the same for every record. Same results as the plain division. */
static inline uint64_t j_to_us(uint64_t j, uint32_t hz)
{
    switch (hz) {
    case 1000: return j * 1000u;
    case 250: return j * 4000u;
    case 100: return j * 10000u;
    case 300: return j * 10000u / 3u;
    case 0: return 0;
    default: return j * 1000000u / hz;
    }
}

static inline uint32_t j_to_ms(uint32_t j, uint32_t hz)
{
    if (j == UINT32_MAX)
        return UINT32_MAX;
    switch (hz) {
    case 1000: return j;
    case 250: return (uint32_t)((uint64_t)j * 4u);
    case 100: return (uint32_t)((uint64_t)j * 10u);
    case 300: return (uint32_t)((uint64_t)j * 10u / 3u);
    case 0: return 0;
    default: return (uint32_t)((uint64_t)j * 1000u / hz);
    }
}

/* a + b, wrapping instead of overflowing (signed overflow is undefined): the times come
 * from records a recording may have forged */
static inline int64_t add_wrap(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }

static inline int32_t negotiated(int on, int sysctl_on) { return on ? 1 : (sysctl_on ? 3 : 2); }

/* c: the record's counters, or zeros for the fields reader's records (which end before
 * them: nothing at or past r->c is read through r). */
static inline void decode_rec(const struct w10g_eb_rec *r, const struct w10g_eb_counters *c,
                              struct w10g_eb_row *w, const struct w10g_eb_sink *s)
{
    const struct w10g_eb_config *cfg = s->cfg;
    const uint32_t hz = s->hz;
    uint16_t present = 0;
    const int full = r->flags & W10G_EB_R_FULL;

    if (full)
        present |= W10G_EB_P_INFO;
    if ((r->flags & W10G_EB_R_STORAGE) && c->start_ns && !(c->flags & W10G_EB_ST_LATE))
        present |= W10G_EB_P_COUNTERS;
    if (full && (r->flags & W10G_EB_R_SEQ))
        present |= W10G_EB_P_SEQ;

    const uint8_t rfc = r->state < 16 ? rfc_state[r->state] : 0;
    PUT_U64(cid, r->cookie);
    PUT_U8(family, r->family);
    PUT_U8(state, rfc);
    PUT_U16(local_port, r->sport);
    PUT_U16(rem_port, r->dport);
    memcpy(w->local_addr, r->saddr, 16);
    memcpy(w->rem_addr, r->daddr, 16);
    PUT_U32(uid, r->uid);
    PUT_U32(inode, r->inode);
    PUT_I64(timestamp, (r->flags & W10G_EB_R_CLOSE) ? add_wrap((int64_t)r->ktime_ns, s->mono_to_real_ns)
                                                  : s->now_ns);
    PUT_U16(present, present);

    const uint32_t mss = r->mss_cache;
    int64_t inflight = (int64_t)r->packets_out - r->sacked_out - r->lost_out + r->retrans_out;
    const uint32_t pipe = inflight > 0 ? sat_mul((uint32_t)inflight, mss) : 0;
    const int ssthresh_set = r->snd_ssthresh < 0x7FFFFFFF;
    /* chrono: the stored totals plus the running interval of the current type */
    uint64_t chrono[3];
    for (int i = 0; i < 3; i++) {
        chrono[i] = r->chrono_stat[i];
        if (r->chrono_type == i + 1)
            chrono[i] += (uint32_t)(r->jiffies32 - r->chrono_start);
    }
    const uint64_t busy = chrono[0] + chrono[1] + chrono[2];
    const int wscale = r->opts & 4;
    const int active = c->flags & W10G_EB_ST_ACTIVE;
    /* elapsed: from the first callback to the flow's last send or receive */
    int64_t elapsed_ns = 0;
    if (present & W10G_EB_P_COUNTERS) {
        uint32_t last = (int32_t)(r->lsndtime - r->rcv_tstamp) > 0 ? r->lsndtime : r->rcv_tstamp;
        uint32_t idle_j = r->jiffies32 - last;
        if (idle_j > 0x7FFFFFFF)
            idle_j = 0;
        elapsed_ns = add_wrap((int64_t)(r->ktime_ns - c->start_ns),
                              -(int64_t)j_to_us(idle_j, hz) * 1000);
        if (elapsed_ns < 0)
            elapsed_ns = 0;
    }

    /* perf */
    PUT_U32(SegsOut, r->segs_out);
    PUT_U32(DataSegsOut, r->data_segs_out);
    PUT_U32(DataOctetsOut, r->bytes_sent);
    PUT_U64(HCDataOctetsOut, r->bytes_sent);
    PUT_U32(SegsRetrans, r->total_retrans);
    PUT_U32(OctetsRetrans, r->bytes_retrans);
    PUT_U32(SegsIn, r->segs_in);
    PUT_U32(DataSegsIn, r->data_segs_in);
    PUT_U32(DataOctetsIn, r->bytes_received);
    PUT_U64(HCDataOctetsIn, r->bytes_received);
    PUT_U32(ElapsedSecs, elapsed_ns / 1000000000);
    PUT_U32(ElapsedMicroSecs, (elapsed_ns % 1000000000) / 1000);
    PUT_U64(StartTimeStamp, c->start_ns ? add_wrap((int64_t)c->start_ns, s->mono_to_real_ns) / 1000 : 0);
    PUT_U32(CurMSS, mss);
    PUT_U32(PipeSize, pipe);
    PUT_U32(MaxPipeSize, c->max_pipe);
    PUT_U32(SmoothedRTT, (r->srtt_us >> 3) / 1000);
    PUT_U32(CurRTO, j_to_us(r->rto_j, hz) / 1000);
    PUT_U32(CongSignals, c->cong_signals);
    PUT_U32(CurCwnd, sat_mul(r->snd_cwnd, mss));
    PUT_U32(CurSsthresh, ssthresh_set ? sat_mul(r->snd_ssthresh, mss) : UINT32_MAX);
    PUT_U32(Timeouts, c->timeouts);
    PUT_U32(CurRwinSent, r->rcv_wnd);
    PUT_U32(MaxRwinSent, c->max_rwin_sent);
    PUT_U32(ZeroRwinSent, c->zero_rwin_sent);
    PUT_U32(CurRwinRcvd, r->snd_wnd);
    PUT_U32(MaxRwinRcvd, r->max_window);
    PUT_U32(ZeroRwinRcvd, c->zero_rwin_rcvd);
    PUT_U32(SndLimTransSnd, c->snd_lim_trans_snd);
    PUT_U32(SndLimTransCwnd, c->snd_lim_trans_cwnd);
    PUT_U32(SndLimTransRwin, c->snd_lim_trans_rwin);
    PUT_U32(SndLimTimeSnd, j_to_us(chrono[2], hz));
    PUT_U32(SndLimTimeCwnd, j_to_us(busy - chrono[1] - chrono[2], hz));
    PUT_U32(SndLimTimeRwin, j_to_us(chrono[1], hz));
    PUT_U32(LostRetransmitSegs, c->lost_retrans);
    /* path */
    PUT_U32(RetranThresh, r->reordering);
    PUT_U32(NonRecovDAEpisodes, c->nonrecov_da_episodes);
    PUT_U32(SumOctetsReordered, c->sum_octets_reordered);
    PUT_U32(NonRecovDA, c->nonrecov_da);
    PUT_U32(SampleRTT, c->sample_rtt_us / 1000);
    PUT_U32(RTTVar, (r->rttvar_us >> 2) / 1000);
    PUT_U32(MaxRTT, c->max_rtt_us / 1000);
    PUT_U32(MinRTT, us_to_ms(c->min_rtt_us));
    PUT_U32(SumRTT, c->sum_rtt_us / 1000);
    PUT_U64(HCSumRTT, c->sum_rtt_us / 1000);
    PUT_U32(CountRTT, c->count_rtt);
    PUT_U32(MaxRTO, j_to_ms(c->max_rto_j, hz));
    PUT_U32(MinRTO, j_to_ms(c->min_rto_j, hz));
    PUT_U32(IpTtl, c->ip_ttl);
    PUT_U8(IpTosIn, c->ip_tos_in);
    PUT_U8(IpTosOut, r->tos);
    PUT_U32(PreCongSumCwnd, c->pre_cong_sum_cwnd);
    PUT_U32(PreCongSumRTT, c->pre_cong_sum_rtt_us / 1000);
    PUT_U32(PostCongSumRTT, c->post_cong_sum_rtt_us / 1000);
    PUT_U32(PostCongCountRTT, c->post_cong_count_rtt);
    PUT_U32(ECNsignals, c->ecn_signals);
    PUT_U32(DupAckEpisodes, c->dupack_episodes);
    PUT_U32(RcvRTT, r->rcv_rtt_us >> 3);
    PUT_U32(DupAcksOut, c->dupacks_out);
    PUT_U32(CERcvd, r->received_ce);
    PUT_U32(ECESent, c->ece_sent);
    /* stack */
    PUT_I32(ActiveOpen, active ? 1 : 2);
    PUT_U32(MSSSent, r->advmss);
    PUT_U32(MSSRcvd, r->mss_clamp);
    PUT_I32(WinScaleSent, wscale ? r->rcv_wscale : -1);
    PUT_I32(WinScaleRcvd, wscale ? r->snd_wscale : -1);
    PUT_I32(TimeStamps, negotiated(r->opts & 1, cfg->sysctl_timestamps));
    PUT_I32(ECN, negotiated(r->opts & 8, cfg->sysctl_ecn));
    PUT_I32(WillSendSACK, negotiated(r->opts & 2, cfg->sysctl_sack));
    PUT_I32(WillUseSACK, negotiated(r->opts & 2, cfg->sysctl_sack));
    PUT_I32(State, rfc);
    PUT_I32(Nagle, (r->nonagle & 1) ? 2 : 1);       /* TCP_NAGLE_OFF: TCP_NODELAY */
    PUT_U32(MaxSsCwnd, c->max_ss_cwnd);
    PUT_U32(MaxCaCwnd, c->max_ca_cwnd);
    PUT_U32(MaxSsthresh, c->max_ssthresh);
    PUT_U32(MinSsthresh, c->min_ssthresh);
    PUT_I32(InRecovery, r->ca_state > 2 ? 1 : 2);
    PUT_U32(DupAcksIn, c->dupacks_in);
    PUT_U32(SpuriousFrDetected, c->spurious_fr);
    PUT_U32(SpuriousRtoDetected, c->spurious_rto);
    PUT_U32(SoftErrors, c->soft_errors);
    PUT_I32(SoftErrorReason, c->soft_error_reason);
    PUT_U32(SlowStart, c->slow_start);
    PUT_U32(CongAvoid, c->cong_avoid);
    PUT_U32(CongOverCount, c->cong_over_count);
    PUT_U32(FastRetran, c->fast_retran);
    PUT_U32(SubsequentTimeouts, c->subsequent_timeouts);
    PUT_U32(CurTimeoutCount, r->retransmits);
    PUT_U32(AbruptTimeouts, c->abrupt_timeouts);
    PUT_U32(SACKsRcvd, c->sacks_rcvd);
    PUT_U32(SACKBlocksRcvd, c->sack_blocks_rcvd);
    PUT_U32(SendStall, c->send_stall);
    PUT_U32(DSACKDups, r->dsack_dups);
    PUT_U32(MaxMSS, c->max_mss);
    PUT_U32(MinMSS, c->min_mss);
    PUT_U32(SndInitial, r->snd_una - (uint32_t)r->bytes_acked - (active ? 0 : 1));
    PUT_U32(RecInitial, r->rcv_nxt - (uint32_t)r->bytes_received - 1);
    PUT_U32(CurReasmQueue, (r->flags & W10G_EB_R_OOO) ? r->reasm : 0);
    PUT_U32(MaxReasmQueue, c->max_reasm);
    /* app */
    PUT_U32(SndUna, r->snd_una);
    PUT_U32(SndNxt, r->snd_nxt);
    PUT_U32(SndMax, r->snd_nxt);
    PUT_U32(ThruOctetsAcked, r->bytes_acked);
    PUT_U64(HCThruOctetsAcked, r->bytes_acked);
    PUT_U32(RcvNxt, r->rcv_nxt);
    PUT_U32(ThruOctetsReceived, r->bytes_received);
    PUT_U64(HCThruOctetsReceived, r->bytes_received);
    PUT_U32(CurAppWQueue, (int32_t)r->app_wq > 0 ? r->app_wq : 0);
    PUT_U32(MaxAppWQueue, c->max_app_wq);
    PUT_U32(CurAppRQueue, r->state == 10 || (int32_t)r->app_rq < 0 ? 0 : r->app_rq);
    PUT_U32(MaxAppRQueue, c->max_app_rq);
    /* tune, extras */
    PUT_U32(LimCwnd, sat_mul(r->snd_cwnd_clamp, mss));
    PUT_U32(LimRwin, r->window_clamp);
    PUT_U32(LimMSS, r->user_mss);
    PUT_U32(Priority, r->priority);
}

/* Large outputs are written with non-temporal stores (as the sock_diag decoder does): a
 * read of 100,000 flows of every column writes 52 MB, which no cache keeps, and ordinary
 * stores first read each line in. The row is built whole, then streamed. */
#define W10G_EB_STREAM_MIN (4u << 20)       /* capacity x itemsize, bytes */
#define W10G_EB_ROW_MAX 1024u               /* widest row streamed */

/* Decode the whole records at the start of buf[0, len); *used says how many bytes they
 * took (a record cut at the end is left for the caller: used < len). Records are read in
 * place when aligned (the read buffers are malloc'd and every record size is a multiple
 * of 8), else copied first. */
static int decode_part(const uint8_t *buf, size_t len, struct w10g_eb_sink *s, size_t base,
                       size_t *used)
{
    size_t off = 0;
    struct w10g_eb_rec copy;
    static const struct w10g_eb_counters no_counters;
    const struct w10g_eb_config *cfg = s->cfg;
    _Alignas(16) struct w10g_eb_row whole;      /* the record's row, every column */
    _Alignas(16) char outrow[W10G_EB_ROW_MAX];  /* the selected columns, to be streamed */
    const int stream = W10G_CAN_STREAM && s->itemsize <= sizeof(outrow) &&
                       s->capacity * s->itemsize >= W10G_EB_STREAM_MIN &&
                       !((uintptr_t)s->rows & 7) && !(s->itemsize & 7);
    int streamed = 0;

    /* padding stays zero in what is copied out */
    memset(&whole, 0, sizeof(whole));
    if (stream && !cfg->direct)
        memset(outrow, 0, s->itemsize);
    while (off < len) {
        uint32_t magic;
        uint16_t size;
        /* what the last header announced (records without one: ring buffer, full) */
        const size_t rec_size = s->rec_size ? s->rec_size : sizeof(struct w10g_eb_rec);
        if (len - off < 6)
            break;
        memcpy(&magic, buf + off, 4);
        memcpy(&size, buf + off + 4, 2);
        if (magic == W10G_EB_MAGIC_HDR) {
            struct w10g_eb_hdr h;
            if (size != sizeof(h))
                goto bad;
            if (len - off < sizeof(h))
                break;
            memcpy(&h, buf + off, sizeof(h));
            if (h.version != W10G_EB_VERSION ||
                (h.rec_size != sizeof(struct w10g_eb_rec) && h.rec_size != W10G_EB_FIELDS_SIZE))
                goto bad;
            if (h.hz)
                s->hz = h.hz;
            s->hooks = h.hooks;
            s->rec_size = h.rec_size;
            s->headers++;
            off += sizeof(h);
            continue;
        }
        if (magic != W10G_EB_MAGIC_REC || size != rec_size)
            goto bad;
        if (len - off < rec_size)
            break;
        const struct w10g_eb_rec *r = (const struct w10g_eb_rec *)(const void *)(buf + off);
        const struct w10g_eb_counters *c = &r->c;
        if ((uintptr_t)r % _Alignof(struct w10g_eb_rec)) {
            memcpy(&copy, buf + off, rec_size);
            r = &copy;
            c = &copy.c;
        }
        if (rec_size != sizeof(struct w10g_eb_rec)) {
            /* the fields reader's record ends before the counters: none in the row */
            if (r->flags & W10G_EB_R_STORAGE)
                goto bad;
            c = &no_counters;
        }
        off += rec_size;
        if (r->state > 31 || !(s->state_mask >> r->state & 1))
            continue;
        if (!((r->family == 2 && (s->family_mask & 1)) || (r->family == 10 && (s->family_mask & 2))))
            continue;
        if (s->netns_ino && r->netns_ino != s->netns_ino)
            continue;
        char *row = w10g_row_slot(s->rows, s->itemsize, s->capacity, s->n, &s->spill,
                                  &s->spill_cap);
        if (!row) {
            if (streamed)
                w10g_stream_fence();
            return -ENOMEM;
        }
        if (stream && s->n < s->capacity) {
            const char *src = (const char *)&whole;
            decode_rec(r, c, &whole, s);
            if (!cfg->direct) {
                w10g_runs_copy(outrow, src, cfg->runs, cfg->nruns);
                src = outrow;
            }
            w10g_stream_out(row, src, s->itemsize);
            streamed = 1;
        } else if (cfg->direct && !((uintptr_t)row & 7)) {
            decode_rec(r, c, (struct w10g_eb_row *)(void *)row, s);
        } else {
            decode_rec(r, c, &whole, s);
            w10g_runs_copy(row, (const char *)&whole, cfg->runs, cfg->nruns);
        }
        s->n++;
    }
    if (streamed)
        w10g_stream_fence();
    *used = off;
    return 0;
bad:
    if (streamed)
        w10g_stream_fence();
    s->bad_offset = base + off;
    return -EBADMSG;
}

int w10g_eb_decode(const uint8_t *buf, size_t len, struct w10g_eb_sink *s)
{
    size_t used = 0;
    int rc = decode_part(buf, len, s, 0, &used);
    if (rc < 0)
        return rc;
    if (used != len) {                  /* a record cut short */
        s->bad_offset = used;
        return -EBADMSG;
    }
    return 0;
}

int w10g_eb_read_all(int fd, uint8_t **buf, size_t *cap, size_t *len)
{
    size_t n = 0;
    for (;;) {
        if (*cap - n < 65536) {
            size_t ncap = *cap ? *cap * 2 : (1u << 20);
            uint8_t *p = realloc(*buf, ncap);
            if (!p)
                return -ENOMEM;
            *buf = p;
            *cap = ncap;
        }
        ssize_t got = read(fd, *buf + n, *cap - n);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            *len = n;
            return -errno;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    *len = n;
    return 0;
}

int w10g_eb_read_decode(int fd, uint8_t **buf, size_t *cap, struct w10g_eb_sink *s,
                        size_t *total)
{
    size_t have = 0, done = 0;
    if (*cap < W10G_EB_CHUNK) {
        uint8_t *p = realloc(*buf, W10G_EB_CHUNK);
        if (!p)
            return -ENOMEM;
        *buf = p;
        *cap = W10G_EB_CHUNK;
    }
    for (;;) {
        ssize_t got = read(fd, *buf + have, *cap - have);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            *total = done + have;
            return -errno;
        }
        if (got == 0)
            break;
        have += (size_t)got;
        size_t used = 0;
        int rc = decode_part(*buf, have, s, done, &used);
        if (rc < 0) {
            *total = done + have;
            return rc;
        }
        /* a record cut by the read's end (bpf_seq_read returns whole records, but a
         * short read would not): keep its start for the next read */
        if (used < have)
            memmove(*buf, *buf + used, have - used);
        have -= used;
        done += used;
        if (*cap - have < W10G_EB_CHUNK / 2) {
            size_t ncap = *cap * 2;
            uint8_t *p = realloc(*buf, ncap);
            if (!p)
                return -ENOMEM;
            *buf = p;
            *cap = ncap;
        }
    }
    *total = done + have;
    if (have) {                         /* the iterator ended inside a record */
        s->bad_offset = done;
        return -EBADMSG;
    }
    return 0;
}
