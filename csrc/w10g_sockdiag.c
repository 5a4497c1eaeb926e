/* The sock_diag decoder; see w10g_sockdiag.h. */
#include "w10g_sockdiag.h"
#include "w10g_stream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <stdlib.h>
#include <string.h>

#include "w10g_rows.h"
#include <time.h>

#include "w10g_tcp_info.h"

/* Attribute numbers of the reply (uapi inet_diag.h); spelled out because the build
 * machine's headers may predate some of them. */
enum {
    A_MEMINFO = 1, A_INFO = 2, A_VEGASINFO = 3, A_CONG = 4, A_TOS = 5, A_TCLASS = 6,
    A_SKMEMINFO = 7, A_SHUTDOWN = 8, A_DCTCPINFO = 9, A_MARK = 15, A_BBRINFO = 16,
    A_CLASS_ID = 17, A_CGROUP_ID = 21, A_SOCKOPT = 22,
};

/* Linux TCP state -> RFC 4898 tcpEStatsStackState (mapping section 3.4). */
static const uint8_t rfc_state[16] = {
    0, 5, 3, 4, 6, 7, 11, 1, 8, 9, 2, 10, 4, 1, 0, 0,
};

static const char *const field_names[] = {
#define W10G_SD_NAME(name, kind) #name,
    W10G_SD_FIELDS(W10G_SD_NAME)
#undef W10G_SD_NAME
};
static const char *const field_kinds[] = {
#define W10G_SD_KIND(name, kind) #kind,
    W10G_SD_FIELDS(W10G_SD_KIND)
#undef W10G_SD_KIND
};

const char *w10g_sd_field_name(int f) { return f >= 0 && f < W10G_SD_NFIELDS ? field_names[f] : NULL; }
const char *w10g_sd_field_kind(int f) { return f >= 0 && f < W10G_SD_NFIELDS ? field_kinds[f] : NULL; }

int w10g_sd_kind_width(const char *k)
{
    if (!strcmp(k, "U8")) return 1;
    if (!strcmp(k, "U16")) return 2;
    if (!strcmp(k, "U32") || !strcmp(k, "I32")) return 4;
    if (!strcmp(k, "U64") || !strcmp(k, "I64") || !strcmp(k, "F64")) return 8;
    if (!strcmp(k, "A16") || !strcmp(k, "S16")) return 16;
    return -1;
}

/* ---- per-flow state for the derived columns ------------------------------------- */

static inline size_t flow_hash(uint64_t cookie, size_t cap)
{
    return (size_t)((cookie * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static int build_index(struct w10g_flowtab *ft)
{
    size_t cap = 1024;
    while (cap < ft->nprev * 2 + 2)
        cap *= 2;
    if (cap > ft->index_cap) {
        uint32_t *p = realloc(ft->index, cap * sizeof(*p));
        if (!p)
            return -1;
        ft->index = p;
        ft->index_cap = cap;
    }
    cap = ft->index_cap;
    memset(ft->index, 0, cap * sizeof(*ft->index));
    for (size_t j = 0; j < ft->nprev; j++) {
        size_t i = flow_hash(ft->prev[j].cookie, cap);
        while (ft->index[i])
            i = (i + 1) & (cap - 1);
        ft->index[i] = (uint32_t)(j + 1);
    }
    ft->index_built = 1;
    return 0;
}

/* The state slot for this row's flow: carried over from the last dump, or new. */
static struct w10g_flow *flowtab_get(struct w10g_flowtab *ft, uint64_t cookie)
{
    if (ft->ncur == ft->capcur) {
        size_t cap = ft->capcur ? ft->capcur * 2 : 1024;
        struct w10g_flow *p = realloc(ft->cur, cap * sizeof(*p));
        if (!p)
            return NULL;
        ft->cur = p;
        ft->capcur = cap;
    }
    struct w10g_flow *f = &ft->cur[ft->ncur];
    const struct w10g_flow *old = NULL;
    ptrdiff_t guess = (ptrdiff_t)ft->ncur + ft->shift;
    if (guess >= 0 && (size_t)guess < ft->nprev && ft->prev[guess].cookie == cookie) {
        old = &ft->prev[guess];
        ft->hits++;
    } else if (ft->nprev) {
        if (!ft->index_built && build_index(ft) < 0)
            return NULL;
        ft->probes++;
        size_t i = flow_hash(cookie, ft->index_cap);
        while (ft->index[i]) {
            size_t j = ft->index[i] - 1;
            if (ft->prev[j].cookie == cookie) {
                old = &ft->prev[j];
                ft->shift = (ptrdiff_t)j - (ptrdiff_t)ft->ncur;   /* resynchronise */
                break;
            }
            i = (i + 1) & (ft->index_cap - 1);
        }
    }
    if (old) {
        *f = *old;
    } else {
        memset(f, 0, sizeof(*f));
        f->cookie = cookie;
        f->min_rto_us = f->min_mss = f->min_ssthresh = UINT32_MAX;
    }
    ft->ncur++;
    return f;
}

int w10g_flowtab_end_dump(struct w10g_flowtab *ft)
{
    /* Flows absent from this dump have ended (or left the filter): their state goes.
     * The two buffers swap roles, so steady state allocates nothing. */
    struct w10g_flow *t = ft->prev;
    size_t tcap = ft->capprev;
    ft->prev = ft->cur;
    ft->capprev = ft->capcur;
    ft->nprev = ft->ncur;
    ft->cur = t;
    ft->capcur = tcap;
    ft->ncur = 0;
    ft->shift = 0;
    ft->index_built = 0;
    return 0;
}

void w10g_flowtab_free(struct w10g_flowtab *ft)
{
    free(ft->prev);
    free(ft->cur);
    free(ft->index);
    memset(ft, 0, sizeof(*ft));
}

/* ---- the row layout and the copy plan ------------------------------------------------ */

static const uint16_t row_off[] = {
#define W10G_SD_ROFF(name, kind) offsetof(struct w10g_sd_row, name),
    W10G_SD_FIELDS(W10G_SD_ROFF)
#undef W10G_SD_ROFF
};
static const uint8_t row_width[] = {
#define W10G_SD_RW(name, kind) sizeof(((struct w10g_sd_row *)0)->name),
    W10G_SD_FIELDS(W10G_SD_RW)
#undef W10G_SD_RW
};

/* The block of stock-only columns a column belongs to (0: always computed). */
uint32_t w10g_sd_block(int f)
{
    if (f >= W10G_SD_rtt_us && f <= W10G_SD_accecn_word) return W10G_BLK_STOCK;
    if (f >= W10G_SD_timer && f <= W10G_SD_bound_ifindex) return W10G_BLK_DIAG;
    if (f >= W10G_SD_mem_rmem_bytes && f <= W10G_SD_skmem_drops) return W10G_BLK_MEM;
    if (f >= W10G_SD_cc_algorithm && f <= W10G_SD_vegas_min_rtt_us) return W10G_BLK_CC;
    if (f >= W10G_SD_shutdown_rd && f <= W10G_SD_sockopt_flags) return W10G_BLK_MISC;
    return 0;
}

int w10g_sd_row_offset(int f) { return f >= 0 && f < W10G_SD_NFIELDS ? row_off[f] : -1; }
size_t w10g_sd_row_size(void) { return sizeof(struct w10g_sd_row); }

void w10g_sd_plan(struct w10g_sd_config *cfg, size_t itemsize)
{
    cfg->nruns = w10g_runs_plan(cfg->runs, W10G_SD_NFIELDS, cfg->off, row_off, row_width,
                                itemsize, sizeof(struct w10g_sd_row), &cfg->direct);
    uint32_t blocks = 0;
    for (int f = 0; f < W10G_SD_NFIELDS; f++)
        if (cfg->off[f] >= 0)
            blocks |= w10g_sd_block(f);
    cfg->blocks = blocks;
}

/* ---- one record -> one row -------------------------------------------------------- */

/* Every column is computed for every row, into struct w10g_sd_row: straight-line stores
 * at fixed offsets, no test of whether the column was asked for. */
#define PUT(F, T, expr) (r->F = (T)(expr))
#define PUT_U8(F, e) PUT(F, uint8_t, e)
#define PUT_U16(F, e) PUT(F, uint16_t, e)
#define PUT_U32(F, e) PUT(F, uint32_t, e)
#define PUT_U64(F, e) PUT(F, uint64_t, e)
#define PUT_I32(F, e) PUT(F, int32_t, e)
#define PUT_I64(F, e) PUT(F, int64_t, e)
#define PUT_F64(F, e) PUT(F, double, e)

static inline uint32_t sat_mul(uint32_t a, uint32_t b)
{
    uint64_t p = (uint64_t)a * b;
    return p > UINT32_MAX ? UINT32_MAX : (uint32_t)p;
}

static inline uint32_t us_to_ms(uint32_t us) { return us == UINT32_MAX ? UINT32_MAX : us / 1000; }

static inline uint32_t rd32(const uint8_t *p, size_t i)
{
    uint32_t v;
    memcpy(&v, p + 4 * i, 4);
    return v;
}

static char *row_slot(struct w10g_sd_sink *s)
{
    return w10g_row_slot(s->rows, s->itemsize, s->capacity, s->n, &s->spill, &s->spill_cap);
}

/* The enum answers of RFC 4898 for an option the kernel reports as a bit:
 * 1 = in use; otherwise 2 = disabled here (sysctl 0), 3 = the peer declined. */
static inline int32_t negotiated(int on, int sysctl_on) { return on ? 1 : (sysctl_on ? 3 : 2); }

/* A tcp_info field, read where it lies (the attribute is only 4-byte aligned). */
#define TI(f) ((__typeof__(((struct w10g_tcp_info *)0)->f))ti_load(              \
    tip + offsetof(struct w10g_tcp_info, f), sizeof(((struct w10g_tcp_info *)0)->f)))
static inline uint64_t ti_load(const char *p, size_t n)
{
    switch (n) {
    case 1: return *(const uint8_t *)p;
    case 2: { uint16_t v; memcpy(&v, p, 2); return v; }
    case 4: { uint32_t v; memcpy(&v, p, 4); return v; }
    default: { uint64_t v; memcpy(&v, p, 8); return v; }
    }
}

/* Large outputs are written around the cache (w10g_stream.h). */
void w10g_sd_done(struct w10g_sd_sink *s)
{
    if (s->stream)
        w10g_stream_fence();
}

/* The finished row (in the scratch row) into the output row. */
static inline void emit_row(struct w10g_sd_sink *s, const struct w10g_sd_config *cfg,
                            char *row, const struct w10g_sd_row *r)
{
    const char *src = (const char *)r;
    const int stream = W10G_CAN_STREAM && s->stream && s->itemsize <= sizeof(s->outrow)
                       && !((uintptr_t)row & 7);
    if (!cfg->direct) {
        char *to = stream ? s->outrow : row;
        w10g_runs_copy(to, src, cfg->runs, cfg->nruns);
        if (!stream)
            return;
        src = s->outrow;
    } else if (!stream) {
        w10g_copy_run(row, src, sizeof(*r));
        return;
    }
    w10g_stream_out(row, src, s->itemsize);
}

/* The record's attributes: offset of each type's payload (from the record payload) and
 * its length, valid where `seen` has the type's bit. Fills the sink's template. */
static int walk_attrs(struct w10g_sd_sink *s, const uint8_t *pl, size_t plen, size_t start)
{
    uint32_t *aoff = s->attr_off, *alen = s->attr_len;
    uint32_t seen = 0, n = 0;
    size_t pos = start, rem = plen - start;
    while (rem >= sizeof(struct nlattr)) {
        struct nlattr a;
        memcpy(&a, pl + pos, sizeof(a));
        if (a.nla_len < sizeof(a) || a.nla_len > rem) {
            s->tpl_plen = 0;
            return -1;
        }
        if (n < W10G_SD_TPL_MAX) {
            s->tpl_off[n] = (uint32_t)pos;
            memcpy(&s->tpl_hdr[n], pl + pos, 4);
        }
        n++;
        unsigned t = a.nla_type & NLA_TYPE_MASK;
        if (t < W10G_SD_ATTR_MAX) {
            aoff[t] = (uint32_t)(pos + sizeof(a));
            alen[t] = a.nla_len - sizeof(a);
            seen |= 1u << t;
        }
        size_t step = NLA_ALIGN(a.nla_len);
        if (step > rem)
            step = rem;       /* the last attribute's padding may be cut by nlmsg_len */
        pos += step;
        rem -= step;
    }
    s->tpl_seen = seen;
    s->tpl_n = n;
    s->tpl_plen = n <= W10G_SD_TPL_MAX ? (uint32_t)plen : 0;
    return 0;
}

/* Does this record have the last walked record's layout? Same payload length and the
 * same attribute headers at the same offsets give the same walk. */
static inline int same_layout(const struct w10g_sd_sink *s, const uint8_t *pl, size_t plen)
{
    if (s->tpl_plen != plen)
        return 0;
    uint32_t diff = 0;
    for (uint32_t k = 0; k < s->tpl_n; k++) {
        uint32_t h;
        memcpy(&h, pl + s->tpl_off[k], 4);
        diff |= h ^ s->tpl_hdr[k];
    }
    return diff == 0;
}

#define GOT(t) ((seen >> (t)) & 1u)
#define ATTR(t) (pl + s->attr_off[t])
#define ALEN(t) (s->attr_len[t])

static const struct w10g_flow no_flow;     /* the derived columns when not tracked: 0 */

int w10g_sd_on_message(const struct nlmsghdr *nlh, void *arg)
{
    struct w10g_sd_sink *s = arg;
    const struct w10g_sd_config *cfg = s->cfg;
    struct w10g_tcp_info ti;              /* a short or missing tcp_info, zero-extended */
    const char *tip = (const char *)&ti;  /* where tcp_info's fields are read */
    struct inet_diag_msg m;
    uint16_t present = 0;

    if (s->rxbuf && (const char *)nlh == *s->rxbuf && !s->fixed_time) {
        /* the socket read the clock when the datagram arrived (and the tap recorded it) */
        if (s->rx_ns) {
            s->now_ns = *s->rx_ns;
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            s->now_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        }
    }
    /* libmnl has checked nlmsg_len against the datagram; check the body against it. */
    size_t plen = nlh->nlmsg_len - NLMSG_HDRLEN;
    /* SOCK_DIAG_BY_FAMILY, or TCPDIAG_GETSOCK: the reply to the one-walk request for
     * both families (web10g/_sockdiag.pyx), same record */
    if ((nlh->nlmsg_type != SOCK_DIAG_BY_FAMILY && nlh->nlmsg_type != TCPDIAG_GETSOCK)
        || plen < sizeof(m))
        goto bad;
    const uint8_t *pl = (const uint8_t *)mnl_nlmsg_get_payload(nlh);
    memcpy(&m, pl, sizeof(m));
    if (!same_layout(s, pl, plen) && walk_attrs(s, pl, plen, sizeof(m)) < 0)
        goto bad;
    const uint32_t seen = s->tpl_seen;

    char *row = row_slot(s);
    if (!row) {
        errno = ENOMEM;
        return MNL_CB_ERROR;
    }
    struct w10g_sd_row *r = &s->scratch;

    uint32_t tlen = 0;
    if (GOT(A_INFO)) {
        tlen = ALEN(A_INFO);
        if (tlen >= sizeof(ti)) {
            tip = (const char *)ATTR(A_INFO);   /* read in place: no copy */
        } else {                          /* an older kernel: zero-extend */
            memset(&ti, 0, sizeof(ti));
            memcpy(&ti, ATTR(A_INFO), tlen);
        }
        present |= W10G_HAVE_INFO;
    } else {
        memset(&ti, 0, sizeof(ti));
    }
    uint32_t meminfo[4] = {0}, skmem[9] = {0}, bbr[5] = {0}, vegas[4] = {0};
    uint8_t dctcp[16] = {0};
    uint8_t tos = 0, shut = 0;
    uint32_t class_id = 0, mark = 0;
    uint64_t cgroup = 0;
    uint16_t sockopt = 0;
    if (GOT(A_MEMINFO) && ALEN(A_MEMINFO) >= sizeof(meminfo)) {
        memcpy(meminfo, ATTR(A_MEMINFO), sizeof(meminfo));
        present |= W10G_HAVE_MEMINFO;
    }
    if (GOT(A_SKMEMINFO)) {
        size_t n = ALEN(A_SKMEMINFO) / 4;
        memcpy(skmem, ATTR(A_SKMEMINFO), 4 * (n < 9 ? n : 9));
        if (n >= 9)
            present |= W10G_HAVE_SKMEMINFO;
    }
    if (GOT(A_CONG) && ALEN(A_CONG))
        present |= W10G_HAVE_CONG;
    int tos_attr = m.idiag_family == AF_INET6 ? A_TCLASS : A_TOS;
    if (GOT(tos_attr) && ALEN(tos_attr) >= 1) {
        tos = ATTR(tos_attr)[0];
        present |= W10G_HAVE_TOS;
    } else if (GOT(A_TOS) && ALEN(A_TOS) >= 1) {
        tos = ATTR(A_TOS)[0];
        present |= W10G_HAVE_TOS;
    }
    if (GOT(A_CLASS_ID) && ALEN(A_CLASS_ID) >= 4) {
        memcpy(&class_id, ATTR(A_CLASS_ID), 4);
        present |= W10G_HAVE_CLASS_ID;
    }
    if (GOT(A_SHUTDOWN) && ALEN(A_SHUTDOWN) >= 1) {
        shut = ATTR(A_SHUTDOWN)[0];
        present |= W10G_HAVE_SHUTDOWN;
    }
    if (GOT(A_MARK) && ALEN(A_MARK) >= 4) {
        memcpy(&mark, ATTR(A_MARK), 4);
        present |= W10G_HAVE_MARK;
    }
    if (GOT(A_CGROUP_ID) && ALEN(A_CGROUP_ID) >= 8) {
        memcpy(&cgroup, ATTR(A_CGROUP_ID), 8);
        present |= W10G_HAVE_CGROUP;
    }
    if (GOT(A_SOCKOPT) && ALEN(A_SOCKOPT) >= 2) {
        memcpy(&sockopt, ATTR(A_SOCKOPT), 2);
        present |= W10G_HAVE_SOCKOPT;
    }
    if (GOT(A_BBRINFO) && ALEN(A_BBRINFO) >= sizeof(bbr)) {
        memcpy(bbr, ATTR(A_BBRINFO), sizeof(bbr));
        present |= W10G_HAVE_BBR;
    }
    if (GOT(A_DCTCPINFO) && ALEN(A_DCTCPINFO) >= sizeof(dctcp)) {
        memcpy(dctcp, ATTR(A_DCTCPINFO), sizeof(dctcp));
        present |= W10G_HAVE_DCTCP;
    }
    if (GOT(A_VEGASINFO) && ALEN(A_VEGASINFO) >= sizeof(vegas)) {
        memcpy(vegas, ATTR(A_VEGASINFO), sizeof(vegas));
        present |= W10G_HAVE_VEGAS;
    }

    /* identity */
    uint64_t cookie = ((uint64_t)m.id.idiag_cookie[1] << 32) | m.id.idiag_cookie[0];
    PUT_U64(cid, cookie);
    PUT_U8(family, m.idiag_family);
    const uint8_t rfc = m.idiag_state < 16 ? rfc_state[m.idiag_state] : 0;
    PUT_U8(state, rfc);
    PUT_U16(local_port, ntohs(m.id.idiag_sport));
    PUT_U16(rem_port, ntohs(m.id.idiag_dport));
    memcpy(r->local_addr, m.id.idiag_src, 16);
    memcpy(r->rem_addr, m.id.idiag_dst, 16);
    PUT_U32(uid, m.idiag_uid);
    PUT_U32(inode, m.idiag_inode);
    PUT_I64(timestamp, s->now_ns);
    PUT_U16(present, present);

    /* values shared by several columns */
    const int listen = m.idiag_state == 10;
    const uint32_t mss = TI(tcpi_snd_mss);
    int64_t inflight = (int64_t)TI(tcpi_unacked) - TI(tcpi_sacked) - TI(tcpi_lost) + TI(tcpi_retrans);
    const uint32_t pipe = inflight > 0 ? sat_mul((uint32_t)inflight, mss) : 0;
    const uint32_t cwnd = sat_mul(TI(tcpi_snd_cwnd), mss);
    const int ssthresh_set = TI(tcpi_snd_ssthresh) < 0x7FFFFFFF;
    const uint32_t ssthresh = ssthresh_set ? sat_mul(TI(tcpi_snd_ssthresh), mss) : UINT32_MAX;
    const uint32_t rqueue = listen ? 0 : m.idiag_rqueue;
    const uint64_t busy = TI(tcpi_busy_time), rwnd_lim = TI(tcpi_rwnd_limited),
                   sndbuf_lim = TI(tcpi_sndbuf_limited);
    const uint64_t cwnd_lim = busy > rwnd_lim + sndbuf_lim ? busy - rwnd_lim - sndbuf_lim : 0;
    const int wscale = TI(tcpi_options) & 0x4;
    const uint32_t word = TI(tcpi_accecn_word);
    const int bitfield = cfg->flags & W10G_SD_ACCECN_BITFIELD;
    /* RTTVar: Web10G reads rttvar_us >> 2, the variation term of RTO = SRTT + 4 * RTTVar
     * (floored at tcp_rto_min / 4), which tcp_info lacks (tcpi_rttvar is the mean
     * deviation). Derived from the RTO: each expiry doubles it and counts in tcpi_backoff,
     * so shift back; zero-window probes (idiag_timer 4) count there without doubling it. */
    const unsigned shift = m.idiag_timer == 4 ? 0 : TI(tcpi_backoff);
    const uint32_t base_rto = shift < 32 ? TI(tcpi_rto) >> shift : 0;
    const uint32_t rttvar = base_rto > TI(tcpi_rtt) ? (base_rto - TI(tcpi_rtt)) / 4000 : 0;
    const int rto_sampled = TI(tcpi_backoff) == 0 && TI(tcpi_rtt) != 0;

    /* derived columns: the client's running max/min per flow */
    const struct w10g_flow *f = &no_flow;
    if ((cfg->flags & W10G_SD_DERIVED) && (present & W10G_HAVE_INFO) && cookie && s->flows) {
        struct w10g_flow *t = flowtab_get(s->flows, cookie);
        if (!t) {
            errno = ENOMEM;
            return MNL_CB_ERROR;
        }
        if (pipe > t->max_pipe) t->max_pipe = pipe;
        if (TI(tcpi_rtt) > t->max_rtt_us) t->max_rtt_us = TI(tcpi_rtt);
        /* Web10G records the RTO only on an RTT sample, which also clears the back-off:
         * never a backed-off RTO, nor the initial one before the first sample. */
        if (rto_sampled) {
            if (TI(tcpi_rto) > t->max_rto_us) t->max_rto_us = TI(tcpi_rto);
            if (TI(tcpi_rto) && TI(tcpi_rto) < t->min_rto_us) t->min_rto_us = TI(tcpi_rto);
        }
        if (TI(tcpi_rcv_wnd) > t->max_rwin_sent) t->max_rwin_sent = TI(tcpi_rcv_wnd);
        if (TI(tcpi_snd_wnd) > t->max_rwin_rcvd) t->max_rwin_rcvd = TI(tcpi_snd_wnd);
        if (mss > t->max_mss) t->max_mss = mss;
        if (mss && mss < t->min_mss) t->min_mss = mss;
        if (TI(tcpi_snd_cwnd) <= TI(tcpi_snd_ssthresh)) {     /* Web10G: slow start */
            if (cwnd > t->max_ss_cwnd) t->max_ss_cwnd = cwnd;
        } else if (cwnd > t->max_ca_cwnd) {
            t->max_ca_cwnd = cwnd;
        }
        if (ssthresh_set) {
            if (ssthresh > t->max_ssthresh) t->max_ssthresh = ssthresh;
            if (ssthresh < t->min_ssthresh) t->min_ssthresh = ssthresh;
        }
        if (TI(tcpi_notsent_bytes) > t->max_app_wq) t->max_app_wq = TI(tcpi_notsent_bytes);
        if (rqueue > t->max_app_rq) t->max_app_rq = rqueue;
        f = t;
    }

    /* perf */
    PUT_U32(SegsOut, TI(tcpi_segs_out));
    PUT_U32(DataSegsOut, TI(tcpi_data_segs_out));
    PUT_U32(DataOctetsOut, TI(tcpi_bytes_sent));
    PUT_U64(HCDataOctetsOut, TI(tcpi_bytes_sent));
    PUT_U32(SegsRetrans, TI(tcpi_total_retrans));
    PUT_U32(OctetsRetrans, TI(tcpi_bytes_retrans));
    PUT_U32(SegsIn, TI(tcpi_segs_in));
    PUT_U32(DataSegsIn, TI(tcpi_data_segs_in));
    PUT_U32(DataOctetsIn, TI(tcpi_bytes_received));
    PUT_U64(HCDataOctetsIn, TI(tcpi_bytes_received));
    PUT_U32(CurMSS, mss);
    PUT_U32(PipeSize, pipe);
    PUT_U32(MaxPipeSize, f->max_pipe);
    PUT_U32(SmoothedRTT, TI(tcpi_rtt) / 1000);
    PUT_U32(CurRTO, TI(tcpi_rto) / 1000);
    PUT_U32(CurCwnd, cwnd);
    PUT_U32(CurSsthresh, ssthresh);
    PUT_U32(Timeouts, TI(tcpi_total_rto_recoveries));
    PUT_U32(CurRwinSent, TI(tcpi_rcv_wnd));
    PUT_U32(MaxRwinSent, f->max_rwin_sent);
    PUT_U32(CurRwinRcvd, TI(tcpi_snd_wnd));
    PUT_U32(MaxRwinRcvd, f->max_rwin_rcvd);
    PUT_U32(SndLimTimeSnd, sndbuf_lim);
    PUT_U32(SndLimTimeCwnd, cwnd_lim);
    PUT_U32(SndLimTimeRwin, rwnd_lim);
    /* path */
    PUT_U32(RetranThresh, TI(tcpi_reordering));
    PUT_U32(RTTVar, rttvar);                         /* ms */
    PUT_U32(MaxRTT, f->max_rtt_us / 1000);
    PUT_U32(MinRTT, us_to_ms(TI(tcpi_min_rtt)));     /* all-ones = no sample, as Web10G */
    PUT_U32(MaxRTO, f->max_rto_us / 1000);
    PUT_U32(MinRTO, us_to_ms(f->min_rto_us));
    PUT_U8(IpTosOut, tos);
    PUT_U32(ECNsignals, TI(tcpi_delivered_ce));
    PUT_U32(RcvRTT, TI(tcpi_rcv_rtt));
    PUT_U32(CERcvd, TI(tcpi_received_ce));
    /* stack */
    PUT_U32(MSSSent, TI(tcpi_advmss));
    PUT_I32(WinScaleSent, wscale ? (TI(tcpi_wscale) >> 4) : -1);
    PUT_I32(WinScaleRcvd, wscale ? (TI(tcpi_wscale) & 15) : -1);
    PUT_I32(TimeStamps, negotiated(TI(tcpi_options) & 0x1, cfg->sysctl_timestamps));
    PUT_I32(ECN, negotiated(TI(tcpi_options) & 0x8, cfg->sysctl_ecn));   /* any mode: 3 */
    PUT_I32(WillSendSACK, negotiated(TI(tcpi_options) & 0x2, cfg->sysctl_sack));
    PUT_I32(WillUseSACK, negotiated(TI(tcpi_options) & 0x2, cfg->sysctl_sack));
    PUT_I32(State, rfc);
    PUT_U32(MaxSsCwnd, f->max_ss_cwnd);
    PUT_U32(MaxCaCwnd, f->max_ca_cwnd);
    PUT_U32(MaxSsthresh, f->max_ssthresh);
    PUT_U32(MinSsthresh, f->min_ssthresh);
    /* Web10G's InRecovery: 1 past CWR (Recovery or Loss), 2 otherwise (ABI section 7.6) */
    PUT_I32(InRecovery, TI(tcpi_ca_state) > 2 ? 1 : 2);
    PUT_U32(SubsequentTimeouts, TI(tcpi_total_rto) > TI(tcpi_total_rto_recoveries)
                                ? TI(tcpi_total_rto) - TI(tcpi_total_rto_recoveries) : 0);
    PUT_U32(CurTimeoutCount, TI(tcpi_retransmits));
    PUT_U32(DSACKDups, TI(tcpi_dsack_dups));
    PUT_U32(MaxMSS, f->max_mss);
    PUT_U32(MinMSS, f->min_mss);
    /* app */
    PUT_U32(ThruOctetsAcked, TI(tcpi_bytes_acked));
    PUT_U64(HCThruOctetsAcked, TI(tcpi_bytes_acked));
    PUT_U32(ThruOctetsReceived, TI(tcpi_bytes_received));
    PUT_U64(HCThruOctetsReceived, TI(tcpi_bytes_received));
    PUT_U32(CurAppWQueue, TI(tcpi_notsent_bytes));
    PUT_U32(MaxAppWQueue, f->max_app_wq);
    PUT_U32(CurAppRQueue, rqueue);
    PUT_U32(MaxAppRQueue, f->max_app_rq);
    /* extras */
    PUT_U32(Priority, class_id);

    /* stock-only columns, in blocks a selection may leave out altogether */
    const uint32_t blocks = cfg->blocks;
    if (blocks & W10G_BLK_STOCK) {
        PUT_U32(rtt_us, TI(tcpi_rtt));
        PUT_U32(rttvar_us, TI(tcpi_rttvar));
        PUT_U32(rto_us, TI(tcpi_rto));
        PUT_U32(min_rtt_us, TI(tcpi_min_rtt));
        PUT_U32(cwnd_segs, TI(tcpi_snd_cwnd));
        PUT_U32(ssthresh_segs, TI(tcpi_snd_ssthresh));
        PUT_U8(ca_state, TI(tcpi_ca_state));
        PUT_U8(probes_out, TI(tcpi_probes));
        PUT_U8(rto_backoff, TI(tcpi_backoff));
        PUT_U8(options, TI(tcpi_options));
        PUT_U8(opt_timestamps, (TI(tcpi_options) >> 0) & 1);
        PUT_U8(opt_sack, (TI(tcpi_options) >> 1) & 1);
        PUT_U8(opt_wscale, (TI(tcpi_options) >> 2) & 1);
        PUT_U8(opt_ecn, (TI(tcpi_options) >> 3) & 1);
        PUT_U8(opt_ecn_seen, (TI(tcpi_options) >> 4) & 1);
        PUT_U8(opt_syn_data, (TI(tcpi_options) >> 5) & 1);
        PUT_U8(opt_usec_ts, (TI(tcpi_options) >> 6) & 1);
        PUT_U8(opt_tfo_child, (TI(tcpi_options) >> 7) & 1);
        PUT_U8(delivery_rate_app_limited, TI(tcpi_flags7) & 1);
        PUT_U8(fastopen_client_fail, (TI(tcpi_flags7) >> 1) & 3);
        PUT_U32(delayed_ack_timeout_us, TI(tcpi_ato));
        PUT_U32(rcv_mss_bytes, TI(tcpi_rcv_mss));
        PUT_U32(unacked_segs, TI(tcpi_unacked));
        PUT_U32(sacked_segs, TI(tcpi_sacked));
        PUT_U32(lost_segs, TI(tcpi_lost));
        PUT_U32(retrans_in_flight_segs, TI(tcpi_retrans));
        PUT_U32(last_data_sent_ago_ms, TI(tcpi_last_data_sent));
        PUT_U32(last_data_recv_ago_ms, TI(tcpi_last_data_recv));
        PUT_U32(last_ack_recv_ago_ms, TI(tcpi_last_ack_recv));
        PUT_U32(path_mtu_bytes, TI(tcpi_pmtu));
        PUT_U32(rcv_ssthresh_bytes, TI(tcpi_rcv_ssthresh));
        PUT_U32(rcv_space_bytes, TI(tcpi_rcv_space));
        PUT_U64(pacing_rate_bytes_per_s, TI(tcpi_pacing_rate));
        PUT_U64(max_pacing_rate_bytes_per_s, TI(tcpi_max_pacing_rate));
        PUT_U64(delivery_rate_bytes_per_s, TI(tcpi_delivery_rate));
        PUT_U64(busy_time_us, busy);
        PUT_U32(delivered_segs, TI(tcpi_delivered));
        PUT_U32(delivered_ce_segs, TI(tcpi_delivered_ce));
        PUT_U32(reord_events, TI(tcpi_reord_seen));
        PUT_U32(ooo_segs_in, TI(tcpi_rcv_ooopack));
        PUT_U32(rehash_count, TI(tcpi_rehash));
        PUT_U16(rto_expirations, TI(tcpi_total_rto));
        PUT_U32(rto_recovery_time_ms, TI(tcpi_total_rto_time));
        PUT_U32(accecn_delivered_ect1_bytes, TI(tcpi_delivered_e1_bytes));
        PUT_U32(accecn_delivered_ect0_bytes, TI(tcpi_delivered_e0_bytes));
        PUT_U32(accecn_delivered_ce_bytes, TI(tcpi_delivered_ce_bytes));
        PUT_U32(ecn_received_ect1_bytes, TI(tcpi_received_e1_bytes));
        PUT_U32(ecn_received_ect0_bytes, TI(tcpi_received_e0_bytes));
        PUT_U32(ecn_received_ce_bytes, TI(tcpi_received_ce_bytes));
        /* The last word: two u16 on 6.18, a bit-field from 7.0 (mapping section 2). */
        PUT_U16(accecn_fail_mode, bitfield ? (word >> 4) & 0xF : (word & 0xFFFF));
        PUT_U16(accecn_opt_seen, bitfield ? (word >> 2) & 0x3 : (word >> 16));
        PUT_U8(ecn_mode, bitfield ? word & 0x3 : 0);
        PUT_U32(options2, bitfield ? word >> 8 : 0);
        PUT_U32(accecn_word, word);
    }
    if (blocks & W10G_BLK_DIAG) {
        PUT_U8(timer, m.idiag_timer);
        PUT_U32(timer_expires_ms, m.idiag_expires);
        PUT_U8(timer_retrans, m.idiag_retrans);
        PUT_U32(bound_ifindex, m.id.idiag_if);
    }
    if (blocks & W10G_BLK_MEM) {
        PUT_U32(mem_rmem_bytes, meminfo[0]);
        PUT_U32(mem_wmem_bytes, meminfo[1]);
        PUT_U32(mem_fmem_bytes, meminfo[2]);
        PUT_U32(mem_tmem_bytes, meminfo[3]);
        PUT_U32(skmem_rmem_alloc, skmem[0]);
        PUT_U32(skmem_rcvbuf, skmem[1]);
        PUT_U32(skmem_wmem_alloc, skmem[2]);
        PUT_U32(skmem_sndbuf, skmem[3]);
        PUT_U32(skmem_fwd_alloc, skmem[4]);
        PUT_U32(skmem_wmem_queued, skmem[5]);
        PUT_U32(skmem_optmem, skmem[6]);
        PUT_U32(skmem_backlog, skmem[7]);
        PUT_U32(skmem_drops, skmem[8]);
    }
    if (blocks & W10G_BLK_CC) {
        /* cc_algorithm: up to the NUL, zero-padded */
        memset(r->cc_algorithm, 0, sizeof(r->cc_algorithm));
        if (present & W10G_HAVE_CONG) {
            size_t n = ALEN(A_CONG) < sizeof(r->cc_algorithm) ? ALEN(A_CONG)
                                                               : sizeof(r->cc_algorithm);
            const char *c = (const char *)ATTR(A_CONG);
            for (size_t i = 0; i < n && c[i]; i++)
                r->cc_algorithm[i] = c[i];
        }
        PUT_U64(bbr_bw_bytes_per_s, (uint64_t)bbr[1] << 32 | bbr[0]);
        PUT_U32(bbr_min_rtt_us, bbr[2]);
        PUT_F64(bbr_pacing_gain, bbr[3] / 256.0);
        PUT_F64(bbr_cwnd_gain, bbr[4] / 256.0);
        uint16_t dctcp_enabled, dctcp_ce_state;
        memcpy(&dctcp_enabled, dctcp, 2);
        memcpy(&dctcp_ce_state, dctcp + 2, 2);
        PUT_U16(dctcp_enabled, dctcp_enabled);
        PUT_U16(dctcp_ce_state, dctcp_ce_state);
        PUT_F64(dctcp_alpha, rd32(dctcp, 1) / 1024.0);
        PUT_U32(dctcp_ab_ecn, rd32(dctcp, 2));
        PUT_U32(dctcp_ab_tot, rd32(dctcp, 3));
        PUT_U32(vegas_enabled, vegas[0]);
        PUT_U32(vegas_rtt_count, vegas[1]);
        PUT_U32(vegas_rtt_us, vegas[2]);
        PUT_U32(vegas_min_rtt_us, vegas[3]);
    }
    if (blocks & W10G_BLK_MISC) {
        PUT_U8(shutdown_rd, shut & 1);
        PUT_U8(shutdown_wr, (shut >> 1) & 1);
        PUT_U32(mark, mark);
        PUT_U32(class_id, class_id);
        PUT_U64(cgroup_id, cgroup);
        PUT_U16(sockopt_flags, sockopt);
    }
    PUT_U16(tcp_info_len, tlen);

    emit_row(s, cfg, row, r);
    s->n++;
    return MNL_CB_OK;

bad:
    s->bad_offset = (uint32_t)s->n;
    errno = EBADMSG;
    return MNL_CB_ERROR;
}

/* The layout of struct w10g_tcp_info, for the test that holds it against the numpy dtype. */
static const struct { const char *name; size_t off, size; } tcp_info_fields[] = {
#define W10G_TI_FIELD(f) {#f, offsetof(struct w10g_tcp_info, f), sizeof(((struct w10g_tcp_info *)0)->f)},
    W10G_TCP_INFO_FIELDS(W10G_TI_FIELD)
#undef W10G_TI_FIELD
};

int w10g_tcp_info_field(int i, const char **name, size_t *off, size_t *size)
{
    if (i < 0 || (size_t)i >= sizeof(tcp_info_fields) / sizeof(tcp_info_fields[0]))
        return -1;
    *name = tcp_info_fields[i].name;
    *off = tcp_info_fields[i].off;
    *size = tcp_info_fields[i].size;
    return 0;
}

size_t w10g_tcp_info_size(void) { return sizeof(struct w10g_tcp_info); }
