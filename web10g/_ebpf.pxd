# cython: language_level=3
"""The C ebpf decoder (csrc/w10g_ebpf.h), declared for Cython."""
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t


cdef extern from "w10g_ebpf.h" nogil:
    enum:
        W10G_EB_NFIELDS
        W10G_EB_P_INFO
        W10G_EB_P_COUNTERS
        W10G_EB_P_SEQ

    struct w10g_eb_config:
        int32_t off[W10G_EB_NFIELDS]
        uint8_t sysctl_timestamps
        uint8_t sysctl_sack
        uint8_t sysctl_ecn
        int direct
        uint32_t nruns

    struct w10g_eb_sink:
        const w10g_eb_config *cfg
        char *rows
        size_t itemsize
        size_t capacity
        size_t n
        char *spill
        size_t spill_cap
        int64_t now_ns
        int64_t mono_to_real_ns
        uint32_t hz
        uint32_t hooks
        uint32_t state_mask
        uint32_t family_mask
        uint32_t netns_ino
        uint32_t headers
        uint32_t rec_size
        size_t bad_offset

    int w10g_eb_decode(const uint8_t *buf, size_t len, w10g_eb_sink *s)
    int w10g_eb_read_all(int fd, uint8_t **buf, size_t *cap, size_t *len)
    int w10g_eb_read_decode(int fd, uint8_t **buf, size_t *cap, w10g_eb_sink *s,
                            size_t *total)
    const char *w10g_eb_field_name(int field)
    const char *w10g_eb_field_kind(int field)
    void w10g_eb_plan(w10g_eb_config *cfg, size_t itemsize)
    int w10g_eb_row_offset(int field)
    size_t w10g_eb_row_size()
    size_t w10g_eb_rec_size()
    size_t w10g_eb_fields_size()
    size_t w10g_eb_hdr_size()
