/* struct tcp_info as the newest kernel lays it out (stock-kernel-mapping.md section 2).
 *
 * Defined here rather than taken from <linux/tcp.h> because the build machine's headers
 * may be older than the running kernel: the decoder must know every field the kernel
 * can send. Offsets are those of x86-64 and other little-endian LP64 ABIs; the u64
 * fields sit on multiples of 8, so natural alignment gives exactly the kernel layout.
 * tests/test_layouts.py checks every offset against web10g._tcpinfo.TCP_INFO_DTYPE.
 */
#ifndef W10G_TCP_INFO_H
#define W10G_TCP_INFO_H
#include <stdint.h>

struct w10g_tcp_info {
    uint8_t  tcpi_state;
    uint8_t  tcpi_ca_state;
    uint8_t  tcpi_retransmits;
    uint8_t  tcpi_probes;
    uint8_t  tcpi_backoff;
    uint8_t  tcpi_options;
    uint8_t  tcpi_wscale;            /* snd_wscale low nibble, rcv_wscale high nibble */
    uint8_t  tcpi_flags7;            /* bit 0 delivery_rate_app_limited, 1-2 fastopen_client_fail */
    uint32_t tcpi_rto;
    uint32_t tcpi_ato;
    uint32_t tcpi_snd_mss;
    uint32_t tcpi_rcv_mss;
    uint32_t tcpi_unacked;
    uint32_t tcpi_sacked;
    uint32_t tcpi_lost;
    uint32_t tcpi_retrans;
    uint32_t tcpi_fackets;
    uint32_t tcpi_last_data_sent;
    uint32_t tcpi_last_ack_sent;
    uint32_t tcpi_last_data_recv;
    uint32_t tcpi_last_ack_recv;
    uint32_t tcpi_pmtu;
    uint32_t tcpi_rcv_ssthresh;
    uint32_t tcpi_rtt;
    uint32_t tcpi_rttvar;
    uint32_t tcpi_snd_ssthresh;
    uint32_t tcpi_snd_cwnd;
    uint32_t tcpi_advmss;
    uint32_t tcpi_reordering;
    uint32_t tcpi_rcv_rtt;
    uint32_t tcpi_rcv_space;
    uint32_t tcpi_total_retrans;
    uint64_t tcpi_pacing_rate;
    uint64_t tcpi_max_pacing_rate;
    uint64_t tcpi_bytes_acked;
    uint64_t tcpi_bytes_received;
    uint32_t tcpi_segs_out;
    uint32_t tcpi_segs_in;
    uint32_t tcpi_notsent_bytes;
    uint32_t tcpi_min_rtt;
    uint32_t tcpi_data_segs_in;
    uint32_t tcpi_data_segs_out;
    uint64_t tcpi_delivery_rate;
    uint64_t tcpi_busy_time;
    uint64_t tcpi_rwnd_limited;
    uint64_t tcpi_sndbuf_limited;
    uint32_t tcpi_delivered;
    uint32_t tcpi_delivered_ce;
    uint64_t tcpi_bytes_sent;
    uint64_t tcpi_bytes_retrans;
    uint32_t tcpi_dsack_dups;
    uint32_t tcpi_reord_seen;
    uint32_t tcpi_rcv_ooopack;
    uint32_t tcpi_snd_wnd;
    uint32_t tcpi_rcv_wnd;
    uint32_t tcpi_rehash;
    uint16_t tcpi_total_rto;
    uint16_t tcpi_total_rto_recoveries;
    uint32_t tcpi_total_rto_time;
    uint32_t tcpi_received_ce;
    uint32_t tcpi_delivered_e1_bytes;
    uint32_t tcpi_delivered_e0_bytes;
    uint32_t tcpi_delivered_ce_bytes;
    uint32_t tcpi_received_e1_bytes;
    uint32_t tcpi_received_e0_bytes;
    uint32_t tcpi_received_ce_bytes;
    uint32_t tcpi_accecn_word;       /* 6.18: two u16 (fail_mode, opt_seen); 7.0+: bit-field */
};

#define W10G_TCP_INFO_SIZE 280

/* Offsets of every field, for the layout test (name, offsetof, size). */
#define W10G_TCP_INFO_FIELDS(X) \
    X(tcpi_state) X(tcpi_ca_state) X(tcpi_retransmits) X(tcpi_probes) X(tcpi_backoff) \
    X(tcpi_options) X(tcpi_wscale) X(tcpi_flags7) X(tcpi_rto) X(tcpi_ato) X(tcpi_snd_mss) \
    X(tcpi_rcv_mss) X(tcpi_unacked) X(tcpi_sacked) X(tcpi_lost) X(tcpi_retrans) \
    X(tcpi_fackets) X(tcpi_last_data_sent) X(tcpi_last_ack_sent) X(tcpi_last_data_recv) \
    X(tcpi_last_ack_recv) X(tcpi_pmtu) X(tcpi_rcv_ssthresh) X(tcpi_rtt) X(tcpi_rttvar) \
    X(tcpi_snd_ssthresh) X(tcpi_snd_cwnd) X(tcpi_advmss) X(tcpi_reordering) \
    X(tcpi_rcv_rtt) X(tcpi_rcv_space) X(tcpi_total_retrans) X(tcpi_pacing_rate) \
    X(tcpi_max_pacing_rate) X(tcpi_bytes_acked) X(tcpi_bytes_received) X(tcpi_segs_out) \
    X(tcpi_segs_in) X(tcpi_notsent_bytes) X(tcpi_min_rtt) X(tcpi_data_segs_in) \
    X(tcpi_data_segs_out) X(tcpi_delivery_rate) X(tcpi_busy_time) X(tcpi_rwnd_limited) \
    X(tcpi_sndbuf_limited) X(tcpi_delivered) X(tcpi_delivered_ce) X(tcpi_bytes_sent) \
    X(tcpi_bytes_retrans) X(tcpi_dsack_dups) X(tcpi_reord_seen) X(tcpi_rcv_ooopack) \
    X(tcpi_snd_wnd) X(tcpi_rcv_wnd) X(tcpi_rehash) X(tcpi_total_rto) \
    X(tcpi_total_rto_recoveries) X(tcpi_total_rto_time) X(tcpi_received_ce) \
    X(tcpi_delivered_e1_bytes) X(tcpi_delivered_e0_bytes) X(tcpi_delivered_ce_bytes) \
    X(tcpi_received_e1_bytes) X(tcpi_received_e0_bytes) X(tcpi_received_ce_bytes) \
    X(tcpi_accecn_word)

_Static_assert(sizeof(struct w10g_tcp_info) == W10G_TCP_INFO_SIZE, "tcp_info is 280 bytes");

#endif
