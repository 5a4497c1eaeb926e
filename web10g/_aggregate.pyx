# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The Prometheus aggregator's per-sample fold, in C: one pass over a sample's flows.

:class:`web10g.collector.prometheus.Aggregator` folds every sample of 20,000 flows into
a few groups. Its numpy formulation (kept as the reference, ``Aggregator(fast=False)``)
makes some forty passes over the flows per sample: sorting cids, binary searches against
the previous sample, masks, scatters. Here the same fold is two passes over the rows and
two hash tables:

* the **flow table** (open addressing on the socket cookie): per flow its last counted
  counter values and group, and whether it is *open* (in the latest sample), in *limbo*
  (it vanished from the samples and waits for its end-of-flow record) or a *tombstone*
  (closed: never counted again); limbo and tombstones expire;
* the **group table**: the group id of each distinct key (the label columns, the local
  port already mapped to 0 for a port nobody listens on, the remote address masked to
  its prefix). Keys not seen before are returned to Python, which names the group
  (labels, the series budget) and enters it with :meth:`FlowTable.add_key`.

A pass (:meth:`FlowTable.groups`) gives each row its group; a second
(:meth:`FlowTable.fold`) adds each flow's counter increases to its group's totals, counts
the flows and the histogram observations per group, and updates the flow table;
:meth:`FlowTable.fold_closed` folds end-of-flow records. Same results as the reference:
tests/test_collector.py runs both over the same random samples.
"""
import numpy as np
cimport numpy as cnp

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

cnp.import_array()

DEF MAXC = 4                 # counters per flow (the exporter's four): a Flow is 64 B
DEF KEY_WORDS = 5            # a group key: 40 bytes

cdef enum:
    NEW_KEY = -3             # a group key groups() reported and the caller has to enter

cdef enum:
    EMPTY = 0
    OPEN = 1
    LIMBO = 2
    TOMB = 3
    GONE = 4                 # deleted: probing goes on past it

# which parts make a group's key (Aggregator keys -> these bits)
cdef enum:
    KP_LPORT = 1
    KP_RPORT = 2
    KP_STATE = 4
    KP_RNET = 8
    KP_LADDR = 16

K_LPORT, K_RPORT, K_STATE, K_RNET, K_LADDR = KP_LPORT, KP_RPORT, KP_STATE, KP_RNET, KP_LADDR

cdef struct Flow:
    uint64_t cid
    uint64_t val[MAXC]
    double t                 # when it entered limbo or became a tombstone
    int32_t gid
    uint32_t seen            # the sample (generation) that last held it
    uint8_t kind

cdef struct GKey:
    uint64_t w[KEY_WORDS]

cdef struct GSlot:
    GKey key
    int64_t gid              # -1: empty


cdef extern from *:
    """
    /* Rows are independent: the flow-table slot of a row some rows ahead is fetched
       while this one is worked on (the table is larger than L2, its order random). */
    #define w10g_prefetch(p) __builtin_prefetch((p), 1, 3)
    """
    void w10g_prefetch(const void *p) nogil

DEF AHEAD = 32                # rows ahead to prefetch (DRAM latency / ~10 ns a row)


cdef inline uint64_t _mix(uint64_t x) nogil:
    x ^= x >> 33
    x *= <uint64_t>0xff51afd7ed558ccd
    x ^= x >> 33
    x *= <uint64_t>0xc4ceb9fe1a85ec53
    x ^= x >> 33
    return x


cdef inline uint64_t _khash(const GKey *k) nogil:
    # independent multiplies, one final mix: a chain of five mixes cost 60 cycles a row
    return _mix(k.w[0] * <uint64_t>0x9e3779b97f4a7c15 + k.w[1] * <uint64_t>0xc2b2ae3d27d4eb4f
                + k.w[2] * <uint64_t>0x165667b19e3779f9 + k.w[3] * <uint64_t>0xd6e8feb86659fd93
                + k.w[4] * <uint64_t>0xff51afd7ed558ccd)


cdef inline bint _keq(const GKey *a, const GKey *b) nogil:
    return (a.w[0] == b.w[0] and a.w[1] == b.w[1] and a.w[2] == b.w[2] and
            a.w[3] == b.w[3] and a.w[4] == b.w[4])


cdef inline double _diff(uint64_t cur, uint64_t prev, int width) nogil:
    """A counter's increase: 64-bit counters as signed differences, never negative; the
    narrower ones wrap in their own width (as Aggregator._diff)."""
    cdef int64_t d
    if width >= 64:
        d = <int64_t>(cur - prev)
        return <double>d if d > 0 else 0.0
    return <double>((cur - prev) & ((<uint64_t>1 << width) - 1))


cdef class FlowTable:
    cdef Flow *flows
    cdef size_t cap, used        # used: slots not EMPTY (GONE included)
    cdef size_t live             # OPEN + LIMBO + TOMB
    cdef GSlot *gslots
    cdef size_t gcap, gused
    cdef uint32_t gen
    cdef readonly int nc
    cdef int width[MAXC]
    cdef int keyparts
    cdef uint64_t mask4[2]          # prefix masks, as the address bytes in memory
    cdef uint64_t mask6[2]
    cdef int af_inet6
    cdef uint8_t listening[8192]
    cdef readonly size_t open_flows, limbo, tombs
    cdef readonly uint64_t tombs_made   # tombstones ever made (a cache of groups() checks it)
    cdef double oldest
    cdef bint nomem

    def __cinit__(self, widths, int keyparts, int v4, int v6, int af_inet6):
        cdef int j, full, rest
        if len(widths) > MAXC:
            raise ValueError(f"at most {MAXC} counters")
        self.nc = len(widths)
        for j in range(self.nc):
            self.width[j] = int(widths[j])
        self.keyparts = keyparts
        self.af_inet6 = af_inet6
        cdef uint8_t m4[16]
        cdef uint8_t m6[16]
        for bits, m in ((v4, 4), (v6, 6)):
            full, rest = divmod(bits, 8)
            for j in range(16):
                x = 0xFF if j < full else ((0xFF << (8 - rest)) & 0xFF if j == full else 0)
                if m == 4:
                    m4[j] = x
                else:
                    m6[j] = x
        memcpy(self.mask4, m4, 16)
        memcpy(self.mask6, m6, 16)
        memset(self.listening, 0, sizeof(self.listening))
        self.cap = 0
        self.flows = NULL
        if self._rehash(1024) < 0:
            raise MemoryError()
        self.gcap = 64
        self.gslots = <GSlot *>calloc(self.gcap, sizeof(GSlot))
        if self.gslots == NULL:
            raise MemoryError()
        for j in range(<int>self.gcap):
            self.gslots[j].gid = -1
        self.gused = 0

    def __dealloc__(self):
        free(self.flows)
        free(self.gslots)

    # -- the flow table ---------------------------------------------------------------
    cdef int _rehash(self, size_t cap) noexcept nogil:
        """Move the flows into a table of ``cap`` slots (GONE ones are left behind);
        -1 when it cannot be allocated (the table is then as it was)."""
        cdef Flow *old = self.flows
        cdef size_t oldcap = self.cap, i
        cdef Flow *new = <Flow *>calloc(cap, sizeof(Flow))
        if new == NULL:
            return -1
        self.flows, self.cap, self.used = new, cap, 0
        for i in range(oldcap):
            if old[i].kind != EMPTY and old[i].kind != GONE:
                self._slot(old[i].cid)[0] = old[i]
                self.used += 1
        free(old)
        return 0

    cdef inline Flow *_find(self, uint64_t cid) noexcept nogil:
        cdef size_t m = self.cap - 1
        cdef size_t i = _mix(cid) & m
        while True:
            if self.flows[i].kind == EMPTY:
                return NULL
            if self.flows[i].kind != GONE and self.flows[i].cid == cid:
                return &self.flows[i]
            i = (i + 1) & m

    cdef inline Flow *_slot(self, uint64_t cid) noexcept nogil:
        """The flow's slot: its own, or an empty one (not counted: the caller fills it).
        GONE slots are not reused, so a later copy of the cid cannot hide behind one."""
        cdef size_t m = self.cap - 1
        cdef size_t i = _mix(cid) & m
        while True:
            if self.flows[i].kind == EMPTY:
                self.flows[i].cid = cid
                return &self.flows[i]
            if self.flows[i].kind != GONE and self.flows[i].cid == cid:
                return &self.flows[i]
            i = (i + 1) & m

    cdef inline Flow *_add(self, uint64_t cid) noexcept nogil:
        """The slot of a new flow (zeroed), the table grown first when it would be more
        than 5/8 full (GONE slots count: they slow probing); NULL when out of memory."""
        cdef Flow *f
        cdef size_t cap = self.cap
        if (self.used + 1) * 8 > self.cap * 5:
            while (self.live + 1) * 8 > cap * 3:
                cap *= 2
            if self._rehash(cap) < 0:
                return NULL
        f = self._slot(cid)
        if f.kind == EMPTY:
            self.used += 1
            self.live += 1
            memset(f.val, 0, sizeof(f.val))
            f.gid = -1
            f.t = 0
            f.seen = 0
        return f

    cdef inline void _entered(self, double now) noexcept nogil:
        """A flow went to limbo or became a tombstone at ``now``: the oldest such time
        is kept, so that expire() scans the table only when something is due."""
        if self.limbo + self.tombs == 1 or now < self.oldest:
            self.oldest = now

    # -- listening ports and group keys --------------------------------------------
    def set_listening(self, ports):
        memset(self.listening, 0, sizeof(self.listening))
        for p in ports:
            p = int(p)
            if 0 <= p < 65536:
                self.listening[p >> 3] |= 1 << (p & 7)

    cdef inline void _key(self, GKey *k, Py_ssize_t i, const uint16_t *lport,
                          const uint16_t *rport, const uint8_t *state,
                          const uint8_t *family, const uint8_t *raddr,
                          const uint8_t *laddr) noexcept nogil:
        # words: 0 = local port (0 unless listened on) | remote port << 16 | state << 32
        # | family << 40; 1-2 = the remote address masked to its prefix; 3-4 = the local
        # address
        cdef uint64_t w0 = 0, a, b
        cdef uint16_t p
        cdef const uint64_t *mask
        k.w[1] = k.w[2] = k.w[3] = k.w[4] = 0
        if self.keyparts & KP_LPORT:
            p = lport[i]
            if (self.listening[p >> 3] >> (p & 7)) & 1:
                w0 = p
        if self.keyparts & KP_RPORT:
            w0 |= <uint64_t>rport[i] << 16
        if self.keyparts & KP_STATE:
            w0 |= <uint64_t>state[i] << 32
        if self.keyparts & (KP_RNET | KP_LADDR):
            w0 |= <uint64_t>family[i] << 40
        k.w[0] = w0
        if self.keyparts & KP_RNET:
            if family[i] == self.af_inet6:
                mask = &self.mask6[0]
            else:
                mask = &self.mask4[0]
            memcpy(&a, raddr + 16 * i, 8)
            memcpy(&b, raddr + 16 * i + 8, 8)
            k.w[1] = a & mask[0]
            k.w[2] = b & mask[1]
        if self.keyparts & KP_LADDR:
            memcpy(&k.w[3], laddr + 16 * i, 16)

    cdef inline int64_t _gfind(self, const GKey *k) noexcept nogil:
        cdef size_t m = self.gcap - 1
        cdef size_t i = _khash(k) & m
        while self.gslots[i].gid != -1:        # -1: empty (NEW_KEY is a key)
            if _keq(&self.gslots[i].key, k):
                return self.gslots[i].gid
            i = (i + 1) & m
        return -1

    cdef int _gput(self, const GKey *k, int64_t gid) except -1:
        cdef GSlot *old
        cdef size_t oldcap, i, j, m
        if (self.gused + 1) * 2 > self.gcap:
            old, oldcap = self.gslots, self.gcap
            self.gcap *= 2
            self.gslots = <GSlot *>calloc(self.gcap, sizeof(GSlot))
            if self.gslots == NULL:
                self.gslots, self.gcap = old, oldcap
                raise MemoryError()
            for i in range(self.gcap):
                self.gslots[i].gid = -1
            self.gused = 0
            for i in range(oldcap):
                if old[i].gid != -1:
                    self._gput(&old[i].key, old[i].gid)
            free(old)
        m = self.gcap - 1
        j = _khash(k) & m
        while self.gslots[j].gid != -1:
            if _keq(&self.gslots[j].key, k):
                self.gslots[j].gid = gid
                return 0
            j = (j + 1) & m
        self.gslots[j].key = k[0]
        self.gslots[j].gid = gid
        self.gused += 1
        return 0

    def groups(self, cnp.uint64_t[::1] cid not None, lport, rport, state, family, raddr,
               laddr, cnp.int64_t[::1] out not None, bint tombs=True,
               cnp.int32_t[::1] slots=None):
        """Each row's group into ``out``: -1 where the key is new, -2 for a flow that
        has a tombstone (when ``tombs``); ``slots``: each row's place in the flow table
        (-1: not in it), which saves fold() the look-up. Returns the first row of each
        new key; the caller must enter every one of them (:meth:`add_key`) before the
        next call, or call :meth:`drop_new_keys`."""
        cdef Py_ssize_t n = cid.shape[0], i, nnew = 0
        cdef const uint16_t *lp = _ptr16(lport, n)
        cdef const uint16_t *rp = _ptr16(rport, n)
        cdef const uint8_t *st = _ptr8(state, n, 1)
        cdef const uint8_t *fa = _ptr8(family, n, 1)
        cdef const uint8_t *ra = _ptr8(raddr, n, 16)
        cdef const uint8_t *la = _ptr8(laddr, n, 16)
        cdef GKey k
        cdef Flow *f
        cdef int64_t g
        if out.shape[0] < n:
            raise ValueError("out is too short")
        cdef int kp = self.keyparts
        if ((kp & KP_LPORT and lp == NULL) or (kp & KP_RPORT and rp == NULL)
                or (kp & KP_STATE and st == NULL)
                or (kp & (KP_RNET | KP_LADDR) and fa == NULL)
                or (kp & KP_RNET and ra == NULL) or (kp & KP_LADDR and la == NULL)):
            raise ValueError("a key column is missing")
        if slots is not None and slots.shape[0] < n:
            raise ValueError("slots is too short")
        new = np.empty(n, np.int64)
        cdef cnp.int64_t[::1] nw = new
        cdef size_t m = self.cap - 1
        cdef bint look = tombs or slots is not None
        for i in range(n):
            if look:
                if i + AHEAD < n:
                    w10g_prefetch(&self.flows[_mix(cid[i + AHEAD]) & m])
                f = self._find(cid[i])
                if slots is not None:
                    slots[i] = <int32_t>(f - self.flows) if f != NULL else -1
                if tombs and f != NULL and f.kind == TOMB:
                    out[i] = -2
                    continue
            self._key(&k, i, lp, rp, st, fa, ra, la)
            g = self._gfind(&k)
            if g == -1:
                # a new key: entered as a placeholder (NEW_KEY), so that the later rows
                # with the same key are not reported again
                nw[nnew] = i
                nnew += 1
                self._gput(&k, NEW_KEY)
            elif g == NEW_KEY:
                g = -1
            out[i] = g
        return new[:nnew]

    def drop_new_keys(self):
        """Forget the keys groups() reported that were not entered (after a failure)."""
        cdef GSlot *old = self.gslots
        cdef size_t oldcap = self.gcap, i
        self.gslots = <GSlot *>calloc(oldcap, sizeof(GSlot))
        if self.gslots == NULL:
            self.gslots = old
            raise MemoryError()
        for i in range(oldcap):
            self.gslots[i].gid = -1
        self.gused = 0
        for i in range(oldcap):
            if old[i].gid >= 0:
                self._gput(&old[i].key, old[i].gid)
        free(old)

    def add_key(self, Py_ssize_t row, int64_t gid, lport, rport, state, family, raddr,
                laddr):
        """Enter the key of ``row`` (of the columns given to groups()) as group ``gid``."""
        cdef Py_ssize_t n = row + 1
        cdef GKey k
        if gid < 0:
            raise ValueError("a group id is >= 0")
        if row < 0:
            raise ValueError("a row number is >= 0")
        self._key(&k, row, _ptr16(lport, n), _ptr16(rport, n), _ptr8(state, n, 1),
                  _ptr8(family, n, 1), _ptr8(raddr, n, 16), _ptr8(laddr, n, 16))
        self._gput(&k, gid)

    @property
    def keys(self):
        return self.gused

    # -- folding ----------------------------------------------------------------------
    def fold(self, cnp.uint64_t[::1] cid not None, cnp.int64_t[::1] gid not None,
             cnp.uint64_t[:, ::1] vals not None, bint first, double now,
             cnp.float64_t[:, ::1] totals not None, cnp.int64_t[::1] flows not None,
             hx=(), hbounds=(), hcounts=(), hsums=(), cnp.float64_t[::1] delta0=None,
             cnp.int32_t[::1] slots=None):
        """Fold one sample (rows with their groups, none negative): counter increases
        into ``totals`` (G x nc), flows per group into ``flows`` (set, not added), the
        observations of histogram h (``hx[h]``: values in the base unit, NaN where not
        reported) into ``hcounts[h]`` (G x buckets) and ``hsums[h]``; ``delta0``: each
        row's increase of counter 0. Flows of the previous sample that are missing from
        this one go to limbo (at ``now``)."""
        cdef Py_ssize_t n = cid.shape[0], i, G = flows.shape[0]
        cdef int nc = self.nc, j, h, nh = len(hx), lo, hi, mid
        cdef Flow *f
        cdef uint64_t base[MAXC]
        cdef uint64_t v
        cdef double d, x
        cdef int64_t g
        cdef size_t k, matched = 0, distinct = 0, before = self.open_flows
        cdef bint nomem = False
        if gid.shape[0] != n or vals.shape[0] != n or vals.shape[1] != nc:
            raise ValueError("rows, groups and values disagree")
        if totals.shape[0] < G or totals.shape[1] != nc:
            raise ValueError("totals: G x counters")
        if delta0 is not None and delta0.shape[0] < n:
            raise ValueError("delta0 is too short")
        if nh > 8 or len(hbounds) != nh or len(hcounts) != nh or len(hsums) != nh:
            raise ValueError("at most 8 histograms, each with bounds, counts and sums")
        cdef const double *xs[8]
        cdef const double *bs[8]
        cdef int64_t *cs[8]
        cdef double *ss[8]
        cdef int nbs[8]
        keep = []
        for h in range(nh):
            xa = np.ascontiguousarray(hx[h], np.float64)
            ba = np.ascontiguousarray(hbounds[h], np.float64)
            ca, sa = hcounts[h], hsums[h]
            if (xa.shape[0] != n or ca.dtype != np.int64 or sa.dtype != np.float64
                    or not ca.flags.c_contiguous or not sa.flags.c_contiguous
                    or not ca.flags.writeable or not sa.flags.writeable
                    or ca.ndim != 2 or ca.shape[0] < G or ca.shape[1] != ba.shape[0] + 1
                    or sa.shape[0] < G):
                raise ValueError(f"histogram {h}: arrays of the wrong shape or type")
            keep += [xa, ba]
            xs[h] = <const double *>cnp.PyArray_DATA(xa)
            bs[h] = <const double *>cnp.PyArray_DATA(ba)
            cs[h] = <int64_t *>cnp.PyArray_DATA(ca)
            ss[h] = <double *>cnp.PyArray_DATA(sa)
            nbs[h] = ba.shape[0]
        for i in range(n):
            if gid[i] < 0 or gid[i] >= G:
                raise ValueError(f"row {i}: group {gid[i]} out of range 0..{G - 1}")
        if slots is not None and slots.shape[0] < n:
            raise ValueError("slots is too short")
        cdef bint hint = slots is not None
        cdef int32_t sl
        self.gen += 1
        with nogil:
            for i in range(G):
                flows[i] = 0
            for i in range(n):
                g = gid[i]
                f = NULL
                if hint:
                    # the slot groups() found, if the table has not moved since (a
                    # rehash, or a GONE slot reused, would show as another cid there)
                    if i + AHEAD < n and 0 <= slots[i + AHEAD] < <int32_t>self.cap:
                        w10g_prefetch(&self.flows[slots[i + AHEAD]])
                    sl = slots[i]
                    if 0 <= sl < <int32_t>self.cap and self.flows[sl].cid == cid[i] and (
                            self.flows[sl].kind == OPEN or self.flows[sl].kind == LIMBO or
                            self.flows[sl].kind == TOMB):
                        f = &self.flows[sl]
                if f == NULL:
                    f = self._find(cid[i])
                if f == NULL:
                    f = self._add(cid[i])
                    if f == NULL:
                        nomem = True
                        break
                    memset(base, 0, sizeof(base))
                elif f.kind == TOMB:
                    continue                # groups() marked it: not given here
                else:
                    # open in the previous sample, back from limbo, or a cid this sample
                    # held already (its second row adds nothing)
                    memcpy(base, f.val, sizeof(base))
                    if f.kind == LIMBO:
                        self.limbo -= 1
                    elif f.seen == self.gen - 1:
                        matched += 1
                flows[g] += 1
                if first:
                    for j in range(nc):
                        base[j] = vals[i, j]
                d = 0.0
                for j in range(nc):
                    v = vals[i, j]
                    if v != base[j]:
                        x = _diff(v, base[j], self.width[j])
                        totals[g, j] += x
                        if j == 0:
                            d = x
                    f.val[j] = v
                if delta0 is not None:
                    delta0[i] = d
                if f.seen != self.gen or f.kind != OPEN:
                    distinct += 1
                f.gid = <int32_t>g
                f.seen = self.gen
                f.kind = OPEN
                for h in range(nh):
                    x = xs[h][i]
                    if x != x:
                        continue
                    # the first bound >= x (numpy's searchsorted, side="left")
                    lo, hi = 0, nbs[h]
                    while lo < hi:
                        mid = (lo + hi) >> 1
                        if bs[h][mid] < x:
                            lo = mid + 1
                        else:
                            hi = mid
                    cs[h][g * (nbs[h] + 1) + lo] += 1
                    ss[h][g] += x
            # the previous sample's flows that this one lacks go to limbo (the table is
            # scanned only when there are some)
            if not nomem and matched < before:
                for k in range(self.cap):
                    f = &self.flows[k]
                    if f.kind == OPEN and f.seen != self.gen:
                        f.kind = LIMBO
                        f.t = now
                        self.limbo += 1
                        self._entered(now)
            self.open_flows = distinct
        if nomem:
            raise MemoryError("the aggregator's flow table cannot grow")

    def fold_closed(self, cnp.uint64_t[::1] cid not None, cnp.int64_t[::1] gid not None,
                    cnp.uint64_t[:, ::1] vals not None, bint first, double now,
                    cnp.float64_t[:, ::1] totals not None):
        """Fold end-of-flow records: each flow once (a repeat, or a flow with a
        tombstone, is dead), from its last counted values (open or in limbo: in the
        group it was counted in), else from 0 in its own group ``gid`` -- except at the
        first sample, when only flows open before count. Every record that is not dead
        leaves a tombstone. Returns how many were folded."""
        cdef Py_ssize_t n = cid.shape[0], i, G = totals.shape[0]
        cdef int nc = self.nc, j
        cdef Flow *f
        cdef uint64_t base[MAXC]
        cdef int64_t g
        cdef bint known, nomem = False
        cdef Py_ssize_t folded = 0
        if gid.shape[0] != n or vals.shape[0] != n or vals.shape[1] != nc:
            raise ValueError("rows, groups and values disagree")
        if totals.shape[1] != nc:
            raise ValueError("totals: G x counters")
        for i in range(n):
            if gid[i] >= G:
                raise ValueError(f"row {i}: group {gid[i]} out of range 0..{G - 1}")
        with nogil:
            for i in range(n):
                f = self._find(cid[i])
                if f != NULL and f.kind == TOMB:
                    continue                    # dead: counted already
                known = f != NULL and (f.kind == OPEN or f.kind == LIMBO)
                if known:
                    memcpy(base, f.val, sizeof(base))
                    g = f.gid
                    if f.kind == LIMBO:
                        self.limbo -= 1
                    else:
                        self.open_flows -= 1
                else:
                    memset(base, 0, sizeof(base))
                    g = gid[i]
                    f = self._add(cid[i])
                    if f == NULL:
                        nomem = True
                        break
                f.kind = TOMB
                self.tombs += 1
                self.tombs_made += 1
                f.t = now
                self._entered(now)
                if (first and not known) or g < 0:
                    continue
                for j in range(nc):
                    if vals[i, j] != base[j]:
                        totals[g, j] += _diff(vals[i, j], base[j], self.width[j])
                folded += 1
        if nomem:
            raise MemoryError("the aggregator's flow table cannot grow")
        return folded

    def expire(self, double cut):
        """Forget the limbo entries and tombstones made before ``cut`` (the table is
        scanned only when the oldest of them is due)."""
        cdef size_t k
        cdef Flow *f
        cdef double oldest = 0
        if not (self.limbo + self.tombs) or self.oldest >= cut:
            return
        with nogil:
            for k in range(self.cap):
                f = &self.flows[k]
                if f.kind == LIMBO or f.kind == TOMB:
                    if f.t < cut:
                        if f.kind == LIMBO:
                            self.limbo -= 1
                        else:
                            self.tombs -= 1
                        f.kind = GONE
                        self.live -= 1
                    elif oldest == 0 or f.t < oldest:
                        oldest = f.t
            self.oldest = oldest

    def state(self, uint64_t cid):
        """(kind, values, group) of a flow: kind "open", "limbo", "tomb" or None."""
        cdef Flow *f = self._find(cid)
        if f == NULL:
            return None, None, None
        kind = {OPEN: "open", LIMBO: "limbo", TOMB: "tomb"}[f.kind]
        return kind, [f.val[j] for j in range(self.nc)], f.gid

    def __len__(self):
        return self.live


cdef const uint16_t *_ptr16(a, Py_ssize_t n) except? NULL:
    if a is None:
        return NULL
    if (not isinstance(a, np.ndarray) or a.dtype != np.uint16 or not a.flags.c_contiguous
            or a.shape[0] < n):
        raise ValueError("a port column: contiguous uint16, one per row")
    return <const uint16_t *>cnp.PyArray_DATA(a)


cdef const uint8_t *_ptr8(a, Py_ssize_t n, int width) except? NULL:
    if a is None:
        return NULL
    if (not isinstance(a, np.ndarray) or a.dtype.itemsize != 1 or not a.flags.c_contiguous
            or a.shape[0] < n or a.size < n * width):
        raise ValueError(f"a key column: contiguous bytes, {width} per row")
    return <const uint8_t *>cnp.PyArray_DATA(a)
