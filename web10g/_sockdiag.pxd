# cython: language_level=3
"""The C sock_diag decoder (csrc/w10g_sockdiag.h), declared for Cython."""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, int64_t, uint64_t

from web10g._linux cimport nlmsghdr


cdef extern from "w10g_sockdiag.h" nogil:
    enum:
        W10G_SD_NFIELDS
        W10G_SD_ACCECN_BITFIELD
        W10G_SD_DERIVED
        W10G_SD_STREAM_MIN

    struct w10g_sd_config:
        int32_t off[W10G_SD_NFIELDS]
        uint32_t flags
        uint8_t sysctl_timestamps
        uint8_t sysctl_sack
        uint8_t sysctl_ecn
        int direct
        uint32_t nruns

    struct w10g_flowtab:
        size_t nprev
        size_t ncur
        uint64_t hits
        uint64_t probes

    struct w10g_sd_sink:
        const w10g_sd_config *cfg
        char *rows
        size_t itemsize
        size_t capacity
        size_t n
        char *spill
        size_t spill_cap
        const char *const *rxbuf
        int64_t now_ns
        const int64_t *rx_ns
        int fixed_time
        w10g_flowtab *flows
        uint32_t bad_offset
        int stream

    void w10g_sd_done(w10g_sd_sink *sink)
    void w10g_sd_plan(w10g_sd_config *cfg, size_t itemsize)
    int w10g_sd_row_offset(int field)
    size_t w10g_sd_row_size()
    int w10g_sd_on_message(const nlmsghdr *nlh, void *sink) noexcept
    const char *w10g_sd_field_name(int field)
    const char *w10g_sd_field_kind(int field)
    int w10g_sd_kind_width(const char *kind)
    int w10g_flowtab_end_dump(w10g_flowtab *ft)
    void w10g_flowtab_free(w10g_flowtab *ft)
    int w10g_tcp_info_field(int i, const char **name, size_t *off, size_t *size)
    size_t w10g_tcp_info_size()
