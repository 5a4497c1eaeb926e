"""struct tcp_info as a numpy dtype, offsets from stock-kernel-mapping.md section 2.

The C decoder has the same layout as a C struct (csrc/w10g_tcp_info.h); a test holds the
two against each other. The pure-Python reference decoder reads tcp_info through this.
"""
from __future__ import annotations

import numpy as np

# (field, numpy type, offset) in kernel order. Bytes 6 and 7 are bit-fields, kept whole;
# the last word is two u16 on 6.18 and a bit-field from 7.0, kept whole too.
_FIELDS = [
    ("tcpi_state", "u1", 0), ("tcpi_ca_state", "u1", 1), ("tcpi_retransmits", "u1", 2),
    ("tcpi_probes", "u1", 3), ("tcpi_backoff", "u1", 4), ("tcpi_options", "u1", 5),
    ("tcpi_wscale", "u1", 6), ("tcpi_flags7", "u1", 7), ("tcpi_rto", "u4", 8),
    ("tcpi_ato", "u4", 12), ("tcpi_snd_mss", "u4", 16), ("tcpi_rcv_mss", "u4", 20),
    ("tcpi_unacked", "u4", 24), ("tcpi_sacked", "u4", 28), ("tcpi_lost", "u4", 32),
    ("tcpi_retrans", "u4", 36), ("tcpi_fackets", "u4", 40),
    ("tcpi_last_data_sent", "u4", 44), ("tcpi_last_ack_sent", "u4", 48),
    ("tcpi_last_data_recv", "u4", 52), ("tcpi_last_ack_recv", "u4", 56),
    ("tcpi_pmtu", "u4", 60), ("tcpi_rcv_ssthresh", "u4", 64), ("tcpi_rtt", "u4", 68),
    ("tcpi_rttvar", "u4", 72), ("tcpi_snd_ssthresh", "u4", 76), ("tcpi_snd_cwnd", "u4", 80),
    ("tcpi_advmss", "u4", 84), ("tcpi_reordering", "u4", 88), ("tcpi_rcv_rtt", "u4", 92),
    ("tcpi_rcv_space", "u4", 96), ("tcpi_total_retrans", "u4", 100),
    ("tcpi_pacing_rate", "u8", 104), ("tcpi_max_pacing_rate", "u8", 112),
    ("tcpi_bytes_acked", "u8", 120), ("tcpi_bytes_received", "u8", 128),
    ("tcpi_segs_out", "u4", 136), ("tcpi_segs_in", "u4", 140),
    ("tcpi_notsent_bytes", "u4", 144), ("tcpi_min_rtt", "u4", 148),
    ("tcpi_data_segs_in", "u4", 152), ("tcpi_data_segs_out", "u4", 156),
    ("tcpi_delivery_rate", "u8", 160), ("tcpi_busy_time", "u8", 168),
    ("tcpi_rwnd_limited", "u8", 176), ("tcpi_sndbuf_limited", "u8", 184),
    ("tcpi_delivered", "u4", 192), ("tcpi_delivered_ce", "u4", 196),
    ("tcpi_bytes_sent", "u8", 200), ("tcpi_bytes_retrans", "u8", 208),
    ("tcpi_dsack_dups", "u4", 216), ("tcpi_reord_seen", "u4", 220),
    ("tcpi_rcv_ooopack", "u4", 224), ("tcpi_snd_wnd", "u4", 228), ("tcpi_rcv_wnd", "u4", 232),
    ("tcpi_rehash", "u4", 236), ("tcpi_total_rto", "u2", 240),
    ("tcpi_total_rto_recoveries", "u2", 242), ("tcpi_total_rto_time", "u4", 244),
    ("tcpi_received_ce", "u4", 248), ("tcpi_delivered_e1_bytes", "u4", 252),
    ("tcpi_delivered_e0_bytes", "u4", 256), ("tcpi_delivered_ce_bytes", "u4", 260),
    ("tcpi_received_e1_bytes", "u4", 264), ("tcpi_received_e0_bytes", "u4", 268),
    ("tcpi_received_ce_bytes", "u4", 272), ("tcpi_accecn_word", "u4", 276),
]

TCP_INFO_SIZE = 280
TCP_INFO_DTYPE = np.dtype({
    "names": [f[0] for f in _FIELDS],
    "formats": ["<" + f[1] if f[1] != "u1" else f[1] for f in _FIELDS],
    "offsets": [f[2] for f in _FIELDS],
    "itemsize": TCP_INFO_SIZE,
})


def parse(payload: bytes) -> np.void:
    """tcp_info of any length as one record: a shorter one zero-extended, a longer one cut."""
    buf = bytes(payload[:TCP_INFO_SIZE]).ljust(TCP_INFO_SIZE, b"\0")
    return np.frombuffer(buf, dtype=TCP_INFO_DTYPE)[0]
