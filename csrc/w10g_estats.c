/* The estats decoder; see w10g_estats.h. */
#include "w10g_estats.h"

#include <errno.h>
#include <libmnl/libmnl.h>
#include <stdlib.h>
#include <string.h>

#include "w10g_rows.h"
#include <sys/socket.h>

enum {
    NLE_ATTR_PERF_VALS = 1, NLE_ATTR_EXTRAS_VALS = 6, NLE_ATTR_4TUPLE = 14, NLE_ATTR_TIME = 16,
    NEA_REM_ADDR = 1, NEA_REM_PORT = 2, NEA_LOCAL_ADDR = 3, NEA_LOCAL_PORT = 4,
    NEA_ADDR_TYPE = 5, NEA_CID = 6, NEA_TIME_SEC = 1, NEA_TIME_USEC = 2,
};

#define GENL_HDR 4

/* Iterate the attributes in [p, p + len): each header and length checked against what
 * is left. Returns 0 at a clean end, -1 when an attribute runs past the end. */
typedef int (*attr_fn)(uint16_t type, const uint8_t *payload, uint16_t plen, void *arg);

static int walk(const uint8_t *p, size_t len, attr_fn fn, void *arg)
{
    while (len >= sizeof(struct nlattr)) {
        struct nlattr a;
        memcpy(&a, p, sizeof(a));
        if (a.nla_len < sizeof(a) || a.nla_len > len)
            return -1;
        /* the module sets NLA_F_NESTED on every nest it emits: mask it (ABI section 1) */
        if (fn(a.nla_type & NLA_TYPE_MASK, p + sizeof(a), a.nla_len - sizeof(a), arg) < 0)
            return -1;
        size_t step = NLA_ALIGN(a.nla_len);
        if (step > len)
            step = len;
        p += step;
        len -= step;
    }
    return len == 0 ? 0 : -1;
}

struct msg_state {
    struct w10g_es_sink *s;
    char *row;
    int table;                     /* VALS nest being walked */
    uint16_t present;
    uint32_t sec, usec;
    uint8_t addr_type;
    uint8_t local[16], remote[16];
    uint16_t lport, rport;
    uint32_t cid;
    int has_cid;
    const char *why;
};

static int on_time(uint16_t type, const uint8_t *p, uint16_t plen, void *arg)
{
    struct msg_state *m = arg;
    if (type == NEA_TIME_SEC || type == NEA_TIME_USEC) {
        if (plen < 4) {
            m->why = "a time attribute is shorter than 4 bytes";
            return -1;
        }
        memcpy(type == NEA_TIME_SEC ? &m->sec : &m->usec, p, 4);
    }
    return 0;
}

static int on_tuple(uint16_t type, const uint8_t *p, uint16_t plen, void *arg)
{
    struct msg_state *m = arg;
    switch (type) {
    case NEA_REM_ADDR:
    case NEA_LOCAL_ADDR:
        if (plen > 16) {
            m->why = "an address is longer than 16 bytes";
            return -1;
        }
        memcpy(type == NEA_REM_ADDR ? m->remote : m->local, p, plen);
        break;
    case NEA_REM_PORT:
    case NEA_LOCAL_PORT:
        if (plen < 2) {
            m->why = "a port is shorter than 2 bytes";
            return -1;
        }
        memcpy(type == NEA_REM_PORT ? &m->rport : &m->lport, p, 2);   /* host order */
        break;
    case NEA_ADDR_TYPE:
        if (plen < 1) {
            m->why = "the address type is empty";
            return -1;
        }
        m->addr_type = p[0];
        break;
    case NEA_CID:
        if (plen < 4) {
            m->why = "the CID is shorter than 4 bytes";
            return -1;
        }
        memcpy(&m->cid, p, 4);
        m->has_cid = 1;
        break;
    }
    return 0;
}

static int on_value(uint16_t idx, const uint8_t *p, uint16_t plen, void *arg)
{
    struct msg_state *m = arg;
    const struct w10g_es_config *cfg = m->s->cfg;
    if (plen == 0)
        return 0;      /* NLE_ATTR_PAD filler: type 28 collides with a real index (6.5) */
    if (idx >= W10G_ES_MAX_INDEX || !cfg->width[m->table][idx]) {
        m->why = "a value's index is not a variable the module described in INIT";
        return -1;
    }
    if (plen != cfg->width[m->table][idx]) {
        m->why = "a value's length differs from its variable's width";
        return -1;
    }
    if (m->table == cfg->state_table && idx == cfg->state_index && plen == 4 &&
        cfg->ident[W10G_ES_state] >= 0) {
        int32_t st;
        memcpy(&st, p, 4);
        m->row[cfg->ident[W10G_ES_state]] = (uint8_t)(st > 0 && st < 256 ? st : 0);
    }
    int32_t off = cfg->off[m->table][idx];
    if (off >= 0)
        memcpy(m->row + off, p, plen);      /* native byte order, widths 1/2/4/8 */
    return 0;
}

static int on_top(uint16_t type, const uint8_t *p, uint16_t plen, void *arg)
{
    struct msg_state *m = arg;
    if (type >= NLE_ATTR_PERF_VALS && type <= NLE_ATTR_EXTRAS_VALS) {
        m->table = type - NLE_ATTR_PERF_VALS;
        m->present |= 1u << m->table;
        if (walk(p, plen, on_value, m) < 0) {
            if (!m->why)
                m->why = "a value attribute runs past its table";
            return -1;
        }
    } else if (type == NLE_ATTR_4TUPLE) {
        m->present |= W10G_ES_HAVE_TUPLE;
        if (walk(p, plen, on_tuple, m) < 0) {
            if (!m->why)
                m->why = "an attribute runs past the connection tuple";
            return -1;
        }
    } else if (type == NLE_ATTR_TIME) {
        m->present |= W10G_ES_HAVE_TIME;
        if (walk(p, plen, on_time, m) < 0) {
            if (!m->why)
                m->why = "an attribute runs past the time nest";
            return -1;
        }
    }
    return 0;          /* other attributes (NLE_ATTR_PAD, future ones) are ignored */
}

static char *row_slot(struct w10g_es_sink *s)
{
    return w10g_row_slot(s->rows, s->itemsize, s->capacity, s->n, &s->spill, &s->spill_cap);
}

#define PUT(F, T, v)                                                   \
    do {                                                               \
        if (cfg->ident[W10G_ES_##F] >= 0) {                            \
            T v_ = (T)(v);                                             \
            memcpy(row + cfg->ident[W10G_ES_##F], &v_, sizeof(v_));    \
        }                                                              \
    } while (0)

int w10g_es_on_message(const struct nlmsghdr *nlh, void *arg)
{
    struct w10g_es_sink *s = arg;
    const struct w10g_es_config *cfg = s->cfg;
    struct msg_state m;
    memset(&m, 0, sizeof(m));
    m.s = s;

    size_t plen = nlh->nlmsg_len - NLMSG_HDRLEN;
    const uint8_t *body = mnl_nlmsg_get_payload(nlh);
    if (nlh->nlmsg_type != cfg->family_id) {
        m.why = "a message of another netlink family";
        goto bad;
    }
    if (plen < GENL_HDR || body[0] != s->cmd) {
        m.why = "the generic netlink header is missing or names another command";
        goto bad;
    }
    char *row = row_slot(s);
    if (!row) {
        errno = ENOMEM;
        return MNL_CB_ERROR;
    }
    memset(row, 0, s->itemsize);
    m.row = row;
    if (walk(body + GENL_HDR, plen - GENL_HDR, on_top, &m) < 0) {
        if (!m.why)
            m.why = "an attribute runs past the message";
        goto bad;
    }
    if (!m.has_cid) {
        m.why = "the message carries no connection id";
        goto bad;
    }
    if (s->cmd == W10G_ES_READ_VARS) {
        if (s->req_cids) {
            while (s->req_at < s->req_n && s->req_status[s->req_at] != -1)
                s->req_at++;
            if (s->req_at >= s->req_n) {
                m.why = "a READ_VARS data message answers no outstanding request";
                goto bad;
            }
            if (s->req_got[s->req_at]) {
                m.why = "a second data message for one READ_VARS request (a duplicate)";
                goto bad;
            }
            if (m.cid != s->req_cids[s->req_at]) {
                m.why = "a READ_VARS reply names another connection than the one requested "
                        "(a stale or misattributed message)";
                goto bad;
            }
            s->req_got[s->req_at] = 1;
        }
    } else if (s->ordered) {
        if (m.cid < s->min_cid) {
            m.why = "a connection id repeats or goes backwards within one listing (a "
                    "duplicated or stale datagram)";
            goto bad;
        }
        s->min_cid = (uint64_t)m.cid + 1;
    }
    if (m.cid > s->max_cid)
        s->max_cid = m.cid;
    uint32_t cid = m.cid - (m.cid >= s->cid_adjust ? s->cid_adjust : 0);
    PUT(cid, uint64_t, cid);
    /* address type 1 = IPv4, 2 = IPv6 (RFC 4001); the row speaks socket families */
    PUT(family, uint8_t, m.addr_type == 1 ? AF_INET : m.addr_type == 2 ? AF_INET6 : 0);
    PUT(local_port, uint16_t, m.lport);
    PUT(rem_port, uint16_t, m.rport);
    if (cfg->ident[W10G_ES_local_addr] >= 0)
        memcpy(row + cfg->ident[W10G_ES_local_addr], m.local, 16);
    if (cfg->ident[W10G_ES_rem_addr] >= 0)
        memcpy(row + cfg->ident[W10G_ES_rem_addr], m.remote, 16);
    PUT(timestamp, int64_t, (int64_t)m.sec * 1000000000 + (int64_t)m.usec * cfg->usec_mult);
    PUT(present, uint16_t, m.present);
    if (m.present & W10G_ES_HAVE_TIME) {
        if (!s->have_time) {
            s->first_sec = m.sec;
            s->first_usec = m.usec;
            s->have_time = 1;
        }
        if (m.usec > s->max_usec)
            s->max_usec = m.usec;
    }
    s->n++;
    s->batch_rows++;
    return MNL_CB_OK;

bad:
    s->bad_index = (uint32_t)s->n;
    s->bad_reason = m.why;
    errno = EBADMSG;
    return MNL_CB_ERROR;
}
