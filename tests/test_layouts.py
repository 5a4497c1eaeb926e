"""One source of truth per layout: the C structs and tables against the numpy side."""
import numpy as np

from web10g import mib
from web10g._sockdiag import FIELD_KINDS, FIELD_NAMES, FIELD_WIDTHS, tcp_info_layout
from web10g._tcpinfo import TCP_INFO_DTYPE, TCP_INFO_SIZE
from web10g.backends.sockdiag import META_FIELDS, SockDiagAgent


def test_tcp_info_struct_matches_the_dtype():
    fields, size = tcp_info_layout()
    assert size == TCP_INFO_SIZE == TCP_INFO_DTYPE.itemsize == 280
    assert list(fields) == list(TCP_INFO_DTYPE.names)
    for name, (off, width) in fields.items():
        ftype, doff = TCP_INFO_DTYPE.fields[name][:2]
        assert (off, width) == (doff, ftype.itemsize), name


def test_tcp_info_offsets_agree_with_the_registry():
    by_source = {}
    for v in mib.variables(backend="sock_diag"):
        sd = v.sock_diag
        if sd.group == "tcp_info" and sd.source.startswith("tcpi_") and sd.source.isidentifier():
            by_source[sd.source] = (sd.tcpi_offset, sd.tcpi_width)
    assert len(by_source) > 40
    for source, (off, width) in by_source.items():
        if source in TCP_INFO_DTYPE.fields:
            ftype, doff = TCP_INFO_DTYPE.fields[source][:2]
            assert (doff, ftype.itemsize) == (off, width), source
        else:
            # a sub-field of a word the dtype keeps whole (6.18's two u16 at 276)
            word = TCP_INFO_DTYPE.fields["tcpi_accecn_word"]
            assert word[1] <= off and off + width <= word[1] + word[0].itemsize, source


def test_decoder_columns_are_the_registry_columns():
    identity = [name for name, _ in mib.IDENTITY_FIELDS]
    assert list(FIELD_NAMES[:len(identity)]) == identity
    assert FIELD_NAMES[len(identity):len(identity) + 2] == ("timestamp", "present")
    registry = [v.name for v in mib.variables(backend="sock_diag")]
    assert list(FIELD_NAMES[len(identity) + 2:]) == registry


def test_decoder_store_widths_match_the_dtypes():
    dt = np.dtype(list(mib.IDENTITY_FIELDS) + [("timestamp", "i8"), ("present", "u2")] + META_FIELDS
                  + [(v.name, v.dtype) for v in mib.variables(backend="sock_diag")
                     if v.name != "tcp_info_len"], align=True)
    for name, kind, width in zip(FIELD_NAMES, FIELD_KINDS, FIELD_WIDTHS):
        assert dt.fields[name][0].itemsize == width, (name, kind)


def test_agent_dtype_is_aligned_and_ordered():
    with SockDiagAgent() as agent:
        dt = agent.dtype(["SmoothedRTT", "HCThruOctetsAcked", "cc_algorithm"])
    names = list(dt.names)
    assert names[:9] == [n for n, _ in mib.IDENTITY_FIELDS]
    assert names[9:] == ["timestamp", "present", "tcp_info_len", "SmoothedRTT",
                         "HCThruOctetsAcked", "cc_algorithm"]
    for name in names:
        ftype, off = dt.fields[name][:2]
        align = ftype.base.alignment
        assert off % align == 0, name
