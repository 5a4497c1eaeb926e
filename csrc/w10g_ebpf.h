/* The ebpf decoder: iterator / ring-buffer records (csrc/w10g_ebpf_rec.h) -> rows of a
 * numpy structured array. Same shape as the sock_diag decoder: W10G_EB_FIELDS lists every
 * column once (identity, metadata, then mib.variables(backend="ebpf") in order), the
 * config holds each selected column's offset (-1 = not selected), and every record is
 * checked against the bytes that are really there before it is read. Runs without the
 * GIL.
 */
#ifndef W10G_EBPF_H
#define W10G_EBPF_H
#include <stddef.h>
#include <stdint.h>

#include "w10g_runs.h"

#define W10G_EB_FIELDS(X) \
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
    X(present, U16) \
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
    X(ElapsedSecs, U32) \
    X(ElapsedMicroSecs, U32) \
    X(StartTimeStamp, U64) \
    X(CurMSS, U32) \
    X(PipeSize, U32) \
    X(MaxPipeSize, U32) \
    X(SmoothedRTT, U32) \
    X(CurRTO, U32) \
    X(CongSignals, U32) \
    X(CurCwnd, U32) \
    X(CurSsthresh, U32) \
    X(Timeouts, U32) \
    X(CurRwinSent, U32) \
    X(MaxRwinSent, U32) \
    X(ZeroRwinSent, U32) \
    X(CurRwinRcvd, U32) \
    X(MaxRwinRcvd, U32) \
    X(ZeroRwinRcvd, U32) \
    X(SndLimTransSnd, U32) \
    X(SndLimTransCwnd, U32) \
    X(SndLimTransRwin, U32) \
    X(SndLimTimeSnd, U32) \
    X(SndLimTimeCwnd, U32) \
    X(SndLimTimeRwin, U32) \
    X(LostRetransmitSegs, U32) \
    X(RetranThresh, U32) \
    X(NonRecovDAEpisodes, U32) \
    X(SumOctetsReordered, U32) \
    X(NonRecovDA, U32) \
    X(SampleRTT, U32) \
    X(RTTVar, U32) \
    X(MaxRTT, U32) \
    X(MinRTT, U32) \
    X(SumRTT, U32) \
    X(HCSumRTT, U64) \
    X(CountRTT, U32) \
    X(MaxRTO, U32) \
    X(MinRTO, U32) \
    X(IpTtl, U32) \
    X(IpTosIn, U8) \
    X(IpTosOut, U8) \
    X(PreCongSumCwnd, U32) \
    X(PreCongSumRTT, U32) \
    X(PostCongSumRTT, U32) \
    X(PostCongCountRTT, U32) \
    X(ECNsignals, U32) \
    X(DupAckEpisodes, U32) \
    X(RcvRTT, U32) \
    X(DupAcksOut, U32) \
    X(CERcvd, U32) \
    X(ECESent, U32) \
    X(ActiveOpen, I32) \
    X(MSSSent, U32) \
    X(MSSRcvd, U32) \
    X(WinScaleSent, I32) \
    X(WinScaleRcvd, I32) \
    X(TimeStamps, I32) \
    X(ECN, I32) \
    X(WillSendSACK, I32) \
    X(WillUseSACK, I32) \
    X(State, I32) \
    X(Nagle, I32) \
    X(MaxSsCwnd, U32) \
    X(MaxCaCwnd, U32) \
    X(MaxSsthresh, U32) \
    X(MinSsthresh, U32) \
    X(InRecovery, I32) \
    X(DupAcksIn, U32) \
    X(SpuriousFrDetected, U32) \
    X(SpuriousRtoDetected, U32) \
    X(SoftErrors, U32) \
    X(SoftErrorReason, I32) \
    X(SlowStart, U32) \
    X(CongAvoid, U32) \
    X(CongOverCount, U32) \
    X(FastRetran, U32) \
    X(SubsequentTimeouts, U32) \
    X(CurTimeoutCount, U32) \
    X(AbruptTimeouts, U32) \
    X(SACKsRcvd, U32) \
    X(SACKBlocksRcvd, U32) \
    X(SendStall, U32) \
    X(DSACKDups, U32) \
    X(MaxMSS, U32) \
    X(MinMSS, U32) \
    X(SndInitial, U32) \
    X(RecInitial, U32) \
    X(CurReasmQueue, U32) \
    X(MaxReasmQueue, U32) \
    X(SndUna, U32) \
    X(SndNxt, U32) \
    X(SndMax, U32) \
    X(ThruOctetsAcked, U32) \
    X(HCThruOctetsAcked, U64) \
    X(RcvNxt, U32) \
    X(ThruOctetsReceived, U32) \
    X(HCThruOctetsReceived, U64) \
    X(CurAppWQueue, U32) \
    X(MaxAppWQueue, U32) \
    X(CurAppRQueue, U32) \
    X(MaxAppRQueue, U32) \
    X(LimCwnd, U32) \
    X(LimRwin, U32) \
    X(LimMSS, U32) \
    X(Priority, U32)

enum w10g_eb_field {
#define W10G_EB_ENUM(name, kind) W10G_EB_##name,
    W10G_EB_FIELDS(W10G_EB_ENUM)
#undef W10G_EB_ENUM
    W10G_EB_NFIELDS
};

/* bits of the `present` column of ebpf rows */
enum {
    W10G_EB_P_INFO = 1 << 0,        /* a full tcp_sock: the iterator's tcp_sock fields */
    W10G_EB_P_COUNTERS = 1 << 1,    /* event counters kept since the flow's start */
    W10G_EB_P_SEQ = 1 << 2,         /* sequence numbers shown to this reader */
};

/* One whole row: every column at the offset an aligned numpy row type of all of them in
 * this order gives it (the dtype of read_all() of every variable). The decoder fills one
 * per record (w10g_runs.h), straight into the output when the output's row type is
 * exactly this (w10g_eb_config.direct), else in a scratch row copied out in runs. */
#define W10G_EB_DECL_U8(n) uint8_t n;
#define W10G_EB_DECL_U16(n) uint16_t n;
#define W10G_EB_DECL_U32(n) uint32_t n;
#define W10G_EB_DECL_U64(n) uint64_t n;
#define W10G_EB_DECL_I32(n) int32_t n;
#define W10G_EB_DECL_I64(n) int64_t n;
#define W10G_EB_DECL_A16(n) uint8_t n[16];
#define W10G_EB_MEMBER(name, kind) W10G_EB_DECL_##kind(name)
struct w10g_eb_row {
    W10G_EB_FIELDS(W10G_EB_MEMBER)
};
#undef W10G_EB_MEMBER

struct w10g_eb_config {
    int32_t off[W10G_EB_NFIELDS];   /* byte offset of each column in the row, -1 = not selected */
    uint8_t sysctl_timestamps, sysctl_sack, sysctl_ecn;
    /* set by w10g_eb_plan() from off[] and the row size: */
    int direct;                      /* the output row is struct w10g_eb_row itself */
    uint32_t nruns;
    struct w10g_run runs[W10G_EB_NFIELDS];
};

/* Fill cfg->direct and cfg->runs from cfg->off and the output's row size. */
void w10g_eb_plan(struct w10g_eb_config *cfg, size_t itemsize);
/* Column f's offset in struct w10g_eb_row (-1: no such column), and the struct's size:
 * the tests check them against the numpy row type of every column. */
int w10g_eb_row_offset(int field);
size_t w10g_eb_row_size(void);

struct w10g_eb_sink {
    const struct w10g_eb_config *cfg;
    char *rows;
    size_t itemsize;
    size_t capacity;
    size_t n;
    char *spill;
    size_t spill_cap;
    int64_t now_ns;                 /* CLOCK_REALTIME of the read (row timestamp) */
    int64_t mono_to_real_ns;        /* CLOCK_REALTIME - CLOCK_MONOTONIC at the read */
    uint32_t hz;                    /* from the header (or the last one seen) */
    uint32_t hooks;                 /* from the header */
    uint32_t state_mask;            /* kernel states to keep (bit k = state k) */
    uint32_t family_mask;           /* 1: AF_INET, 2: AF_INET6 */
    uint32_t netns_ino;             /* keep only this namespace (0: any; ring records) */
    uint32_t headers;               /* headers seen */
    uint32_t rec_size;              /* record size the last header announced (0: whole) */
    size_t bad_offset;              /* where a malformed record was found */
};

/* Decode ``len`` bytes of records into the sink. 0, or -EBADMSG (malformed: bad_offset
 * says where) or -ENOMEM. */
int w10g_eb_decode(const uint8_t *buf, size_t len, struct w10g_eb_sink *s);

/* read() ``fd`` to its end into *buf (grown with realloc as needed); the byte count in
 * *len. 0 or -errno. */
int w10g_eb_read_all(int fd, uint8_t **buf, size_t *cap, size_t *len);

/* read() ``fd`` to its end, decoding the records of each read while they are still in
 * the cache (no copy of the whole output is kept: recordings use w10g_eb_read_all).
 * *buf is a reusable buffer of at least W10G_EB_CHUNK bytes (allocated here when
 * smaller). Each read() of a BPF iterator returns at most one seq_file buffer (8 pages,
 * 32 KiB on x86), so a larger buffer would not cut the number of system calls. The byte
 * count read goes to *total. 0, -errno (read), -EBADMSG or -ENOMEM (decode). */
#define W10G_EB_CHUNK (256u * 1024u)
int w10g_eb_read_decode(int fd, uint8_t **buf, size_t *cap, struct w10g_eb_sink *s,
                        size_t *total);

const char *w10g_eb_field_name(int field);
const char *w10g_eb_field_kind(int field);
size_t w10g_eb_rec_size(void);
size_t w10g_eb_hdr_size(void);
size_t w10g_eb_fields_size(void);   /* the fields reader's records */

#endif
