"""Tests of web10g.mib against its shipped data (web10g/data/) and, where it is checked out
beside the repository, the shared specification in ../shared/spec.

Tests that read the specification itself skip when it is absent (a fresh clone has only
this repository); ``WEB10G_SPEC_DIR`` points them at another copy.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from web10g import mib

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "web10g" / "data"


def _spec(name: str) -> Path:
    """A file of the shared specification, or a skip saying why it is not there."""
    spec = Path(os.environ.get("WEB10G_SPEC_DIR") or ROOT.parent / "shared" / "spec")
    path = spec / name
    if not path.is_file():
        pytest.skip(f"shared specification not found: {path} does not exist (it lives "
                    "beside the repository in ../shared/spec; set WEB10G_SPEC_DIR to use "
                    "another copy)")
    return path


def _spec_rows() -> list[dict[str, str]]:
    """The variable registry as the package ships it (a byte-identical copy of the spec's
    web10g-vars.csv: test_shipped_csv_is_byte_identical_to_spec)."""
    return _data_rows("web10g-vars.csv")


def _data_rows(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _init_tables(layout: mib.Layout) -> list[list[tuple[str, int]]]:
    return [[(v.name, v.type_code) for v in t] for t in layout.tables]


# ------------------------------------------------------------------ registry vs spec

def test_shipped_csv_is_byte_identical_to_spec() -> None:
    assert (DATA / "web10g-vars.csv").read_bytes() == _spec("web10g-vars.csv").read_bytes()


def test_registry_matches_spec_csv_field_by_field() -> None:
    rows = _spec_rows()
    assert len(rows) == 124
    head = mib.layout("head")
    wire_dtypes = {"u8": np.uint8, "u32": np.uint32, "s32": np.int32, "u64": np.uint64}
    for row in rows:
        v = mib.lookup(row["name"])
        t = mib.TABLES.index(row["table"])
        assert head.tables[t][int(row["index"])] is v
        assert v.name == row["name"]
        assert v.table == row["table"]
        assert v.index == int(row["index"])
        assert v.var_type == row["var_type"]
        assert v.type_code == mib.TYPE_CODES[row["var_type"]]
        assert v.wire == row["val_type"]
        assert v.dtype == np.dtype(wire_dtypes[row["val_type"]])
        assert v.dtype.isnative
        assert v.width == v.dtype.itemsize
        assert v.writable is (row["writable"] == "yes")
        assert v.units == row["units"]
        assert v.description == row["description"]
        assert v.since == row["since_tag"]
        assert v.rfc_name == "tcpEStats" + row["table"].capitalize() + row["name"]
        assert v.is_counter is (row["var_type"] in ("Counter32", "Counter64")
                                and row["name"] != "SoftErrorReason")
    assert [v.name for v in mib.variables(backend="estats")] == [r["name"] for r in rows]


def test_type_code_users_match_abi_7_2() -> None:
    users = {
        0: {"ActiveOpen", "TimeStamps", "ECN", "WillSendSACK", "WillUseSACK", "State",
            "Nagle", "InRecovery"},
        1: {"WinScaleSent", "WinScaleRcvd"},
        4: {"IpTtl", "MSSSent", "MSSRcvd", "SndInitial", "RecInitial", "EarlyRetrans",
            "EarlyRetransDelay", "SndNxt", "Priority"},
        5: {"HCDataOctetsOut", "HCDataOctetsIn", "HCSumRTT", "HCThruOctetsAcked",
            "HCThruOctetsReceived"},
        6: {"StartTimeStamp"},
        9: {"IpTosIn", "IpTosOut"},
    }
    for code, names in users.items():
        assert {v.name for v in mib.variables(backend="estats") if v.type_code == code} == names


def test_wire_type_for_matches_every_variable() -> None:
    for lay in (mib.layout(n) for n in mib.LAYOUTS):
        for v in lay.variables():
            assert mib.wire_type_for(v.type_code, v.name) == v.wire, v.name
    assert mib.wire_type_for(2, "SoftErrorReason") == "s32"
    assert mib.wire_type_for(2, "SoftErrors") == "u32"
    assert mib.wire_type_for(6, "StartTimeStamp") == "u64"
    with pytest.raises(ValueError):
        mib.wire_type_for(42, "Nope")


def test_is_counter_flags() -> None:
    assert mib.lookup("SegsOut").is_counter
    assert mib.lookup("HCDataOctetsOut").is_counter
    assert not mib.lookup("SoftErrorReason").is_counter  # Counter32-typed enumeration
    assert not mib.lookup("SmoothedRTT").is_counter
    assert mib.lookup("skmem_drops").is_counter


def test_writable_set() -> None:
    every = mib.variables() + [mib.lookup("OtherReductions"), mib.lookup("OtherReductionsCM")]
    assert {v.name for v in every if v.writable} == {"LimCwnd", "LimRwin"}


# ----------------------------------------------------------------------------- layouts

def test_head_counts_per_table() -> None:
    head = mib.layout()
    assert head.name == "head"
    assert dict(zip(mib.TABLES, head.counts)) == {
        "perf": 41, "path": 26, "stack": 41, "app": 12, "tune": 3, "extras": 1}
    assert head.total == 124
    for table, n in zip(mib.TABLES, head.counts):
        assert len(mib.variables(table=table, backend="estats")) == n


def test_layout_totals_and_all_masks_abi_6_1() -> None:
    expected = {
        "head": (0x1FFFFFFFFFF, 0x3FFFFFF, 0x1FFFFFFFFFF, 0xFFF, 0x7, 0x1),
        "middle": (0xFFFFFFFFFF, 0x3FFFFFF, 0xFFFFFFFFFF, 0xFFF, 0x7, 0x1),
        "old": (0xFFFFFFFFFF, 0x3FFFFFF, 0x1FFFFFFFFFF, 0xFFF, 0x7, 0x3),
    }
    totals = {"head": 124, "middle": 122, "old": 124}
    for name, masks in expected.items():
        lay = mib.layout(name)
        assert lay.all_masks == masks
        assert lay.total == totals[name]
        assert lay.mask(lay.flat_names()) == masks


def test_old_and_middle_layout_positions_abi_11_2() -> None:
    head, middle, old = (mib.layout(n) for n in ("head", "middle", "old"))
    assert [v.name for v in old.tables[0]] == [v.name for v in head.tables[0][:40]]
    assert old.tables[2][23].name == "OtherReductions"
    assert [v.name for v in old.tables[2][24:]] == [v.name for v in head.tables[2][23:40]]
    assert old.tables[2][24].name == "CongOverCount"
    assert old.tables[2][40].name == "EarlyRetransDelay"
    assert [v.name for v in old.tables[5]] == ["OtherReductionsCM", "Priority"]
    assert "LostRetransmitSegs" not in old and "RackTimeout" not in old
    assert old.position("Priority") == (5, 1)
    assert old.flat_names().index("Priority") == 123
    assert "LostRetransmitSegs" not in middle and "RackTimeout" not in middle
    assert middle.tables[2][23].name == "CongOverCount"
    assert middle.position("Priority") == (5, 0)
    assert "OtherReductions" not in head and "SegsOut" in head
    assert head.flat_names() == [r["name"] for r in _spec_rows()]
    for v in (mib.lookup("OtherReductions"), mib.lookup("OtherReductionsCM")):
        assert (v.var_type, v.type_code, v.wire, v.index, v.since) == (
            "Counter32", 2, "u32", None, "dlkm-3.19")
        assert v.description and not v.sock_diag.available
    assert mib.lookup("OtherReductionsCM").table == "extras"
    assert mib.lookup("OtherReductions").rfc_name == "tcpEStatsStackOtherReductions"


def test_init_reply_size_matches_abi_13_5() -> None:
    # The INIT reply is 3688 bytes at HEAD and 3624 for the 122-variable layout; this
    # pins every name length (NEA_VAR_NAME is NUL-terminated, padded to 4).
    def size(lay: mib.Layout) -> int:
        total = 16 + 4 + 8 + 8
        for table in lay.tables:
            total += 4 + sum(4 + (4 + len(v.name) + 1 + 3) // 4 * 4 + 8 for v in table)
        return total

    assert size(mib.layout("head")) == 3688
    assert size(mib.layout("middle")) == 3624


def test_mask_examples_abi_13_2() -> None:
    head = mib.layout()
    m = head.mask(["SegsOut", "HCDataOctetsOut", "SmoothedRTT", "IpTosIn", "WinScaleSent"])
    assert m == (0x10009, 0x4000, 0x8, 0, 0, 0)
    assert head.mask("tcpEStatsPerfSegsOut") == (1, 0, 0, 0, 0, 0)
    assert mib.layout("old").mask(["CongOverCount"])[2] == 1 << 24
    with pytest.raises(ValueError, match="not part of the 'head' layout"):
        head.mask(["OtherReductions"])
    with pytest.raises(ValueError, match="not part of the 'middle' layout"):
        mib.layout("middle").mask(["RackTimeout"])
    with pytest.raises(mib.UnknownVariable):
        head.mask(["NoSuchVar"])
    with pytest.raises(ValueError):
        head.mask(["rtt_us"])  # a stock extra is never on the estats wire


def test_unknown_layout_name() -> None:
    with pytest.raises(ValueError, match="head, middle, old"):
        mib.layout("newest")


# --------------------------------------------------------------------------- lookups

def test_lookup_spellings() -> None:
    v = mib.lookup("SmoothedRTT")
    assert mib.lookup("tcpEStatsPerfSmoothedRTT") is v
    assert mib.lookup("smoothedrtt") is v
    assert mib.lookup("TCPESTATSPERFSMOOTHEDRTT") is v
    assert mib.lookup("segsout").name == "SegsOut"
    assert mib.lookup("ECNSIGNALS").name == "ECNsignals"
    assert mib.lookup("tcpEStatsExtrasPriority").name == "Priority"
    assert mib.lookup("RTT_US").name == "rtt_us"
    assert mib.lookup("otherreductionscm").name == "OtherReductionsCM"


@pytest.mark.parametrize("bad", [None, 5, b"SegsOut", ["SegsOut"]])
def test_lookup_rejects_non_str(bad: object) -> None:
    with pytest.raises(TypeError):
        mib.lookup(bad)  # type: ignore[arg-type]


def test_unknown_variable_suggestions_and_message() -> None:
    with pytest.raises(mib.UnknownVariable) as info:
        mib.lookup("SmothedRTT")
    e = info.value
    assert isinstance(e, KeyError) and isinstance(e, ValueError) and isinstance(e, LookupError)
    assert e.name == "SmothedRTT"
    assert e.suggestions[0] == "SmoothedRTT"
    assert "SampleRTT" in e.suggestions and len(e.suggestions) <= 5
    assert str(e).startswith("unknown variable 'SmothedRTT'; did you mean: SmoothedRTT, ")
    assert str(e).endswith("?")

    with pytest.raises(mib.UnknownVariable) as info:
        mib.lookup("tcpEStatsPerfSmothedRTT")
    assert info.value.suggestions[0] == "tcpEStatsPerfSmoothedRTT"

    with pytest.raises(mib.UnknownVariable) as info:
        mib.lookup("segsot")
    assert info.value.suggestions[0] == "SegsOut"

    with pytest.raises(mib.UnknownVariable) as info:
        mib.lookup("rtt_u")
    assert "rtt_us" in info.value.suggestions

    with pytest.raises(mib.UnknownVariable) as info:
        mib.lookup("qqqqqqqqqq")
    assert info.value.suggestions == []
    assert str(info.value) == "unknown variable 'qqqqqqqqqq'"


# ------------------------------------------------------------------------- variables()

def test_variables_default_is_head_plus_extras() -> None:
    allv = mib.variables()
    extras = _data_rows("stock-extras.csv")
    assert len(allv) == 124 + len(extras)
    assert [v.name for v in allv[:124]] == [r["name"] for r in _spec_rows()]
    assert all(v.table == "stock" and v.index is None for v in allv[124:])
    assert [v.name for v in allv[124:]] == [r["name"] for r in extras]
    names = {v.name for v in allv}
    assert "OtherReductions" not in names and "OtherReductionsCM" not in names
    assert [v.name for v in mib.variables(table="stock")] == [r["name"] for r in extras]
    assert [v.name for v in mib.variables(table="tune")] == ["LimCwnd", "LimRwin", "LimMSS"]


def test_variables_estats_layouts() -> None:
    assert len(mib.variables(backend="estats")) == 124
    assert len(mib.variables(backend="estats", layout="middle")) == 122
    old = mib.variables(backend="estats", layout="old")
    assert len(old) == 124
    assert [v.name for v in old] == mib.layout("old").flat_names()
    assert [v.name for v in mib.variables("extras", "estats", "old")] == [
        "OtherReductionsCM", "Priority"]
    assert mib.variables(table="stock", backend="estats") == []


def test_variables_sock_diag() -> None:
    sd = mib.variables(backend="sock_diag")
    web10g = [v for v in sd if not v.is_stock]
    assert all(v.sock_diag.available for v in sd)
    assert {v.name for v in web10g} == {
        v.name for v in mib.variables(backend="estats") if v.sock_diag.match != "unavailable"}
    assert "SmoothedRTT" in {v.name for v in web10g}
    assert "SampleRTT" not in {v.name for v in web10g}
    assert len(sd) - len(web10g) == len(_data_rows("stock-extras.csv"))


@pytest.mark.parametrize("kwargs,choice", [
    ({"table": "perfs"}, "perf, path, stack, app, tune, extras, stock"),
    ({"backend": "web10g"}, "estats, sock_diag"),
    ({"layout": "new"}, "head, middle, old"),
])
def test_variables_bad_arguments(kwargs: dict, choice: str) -> None:
    with pytest.raises(ValueError) as info:
        mib.variables(**kwargs)
    assert choice in str(info.value)


# ------------------------------------------------------------------------------- dtype

def test_dtype_identity_timestamp_alignment() -> None:
    names = ["SegsOut", "tcpEStatsPerfHCDataOctetsOut", "ipTOSin", "WinScaleSent",
             "cc_algorithm", "rtt_us", "pacing_rate_bytes_per_s"]
    dt = mib.dtype(names, identity=True, timestamp=True)
    ident = [f[0] for f in mib.IDENTITY_FIELDS]
    assert list(dt.names) == ident + ["timestamp", "SegsOut", "HCDataOctetsOut", "IpTosIn",
                                      "WinScaleSent", "cc_algorithm", "rtt_us",
                                      "pacing_rate_bytes_per_s"]
    assert dt.isalignedstruct
    for name in dt.names:
        sub, off = dt.fields[name][:2]
        align = sub.base.alignment
        assert off % align == 0, name
    assert dt.fields["cid"][1] == 0
    assert dt["timestamp"] == np.dtype(np.int64)
    assert dt["local_addr"].shape == (16,) and dt["local_addr"].base == np.dtype(np.uint8)
    assert dt["HCDataOctetsOut"] == np.dtype(np.uint64)
    assert dt["IpTosIn"] == np.dtype(np.uint8)
    assert dt["WinScaleSent"] == np.dtype(np.int32)
    assert dt["cc_algorithm"] == np.dtype("S16")
    assert dt.itemsize % 8 == 0
    assert dt.itemsize >= sum(dt[n].itemsize for n in dt.names)


def test_dtype_sizes_and_packing() -> None:
    assert mib.dtype(["SegsOut", "HCDataOctetsOut"]).itemsize == 16
    assert mib.dtype(["SegsOut", "HCDataOctetsOut"], align=False).itemsize == 12
    assert mib.dtype(["IpTosIn", "SegsOut"]).fields["SegsOut"][1] == 4
    assert mib.dtype("SegsOut").names == ("SegsOut",)  # one name, not its characters
    assert mib.dtype([mib.lookup("CurMSS")]).names == ("CurMSS",)
    ident = mib.dtype([], identity=True)
    assert ident.names == tuple(f[0] for f in mib.IDENTITY_FIELDS)
    assert ident.itemsize == 56
    every = mib.dtype(None)
    assert list(every.names) == [v.name for v in mib.variables()]
    assert every.itemsize >= sum(v.width for v in mib.variables())


def test_dtype_rejects_duplicates_and_unknown() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        mib.dtype(["SegsOut", "segsout"])
    with pytest.raises(ValueError, match="duplicate"):
        mib.dtype(["SmoothedRTT", "tcpEStatsPerfSmoothedRTT"])
    with pytest.raises(mib.UnknownVariable):
        mib.dtype(["SegsOut", "NoSuchVariable"])


# ------------------------------------------------------------------ identify / getmib

@pytest.mark.parametrize("name", ["head", "middle", "old"])
def test_identify_layout_known(name: str) -> None:
    tables = _init_tables(mib.layout(name))
    assert mib.identify_layout(tables) is mib.layout(name)
    as_tuples = tuple(tuple(t) for t in tables)
    assert mib.identify_layout(as_tuples) is mib.layout(name)


def test_identify_layout_renamed_variable() -> None:
    tables = _init_tables(mib.layout("head"))
    tables[2][23] = ("CongOverCnt", 2)
    with pytest.raises(mib.LayoutMismatch) as info:
        mib.identify_layout(tables)
    e = info.value
    assert isinstance(e, ValueError)
    assert (e.nearest, e.table, e.index) == ("head", "stack", 23)
    assert e.got == ("CongOverCnt", 2) and e.expected == ("CongOverCount", 2)
    msg = str(e)
    assert "'head'" in msg and "stack index 23" in msg
    assert "'CongOverCnt'" in msg and "'CongOverCount'" in msg


def test_identify_layout_wrong_type_and_truncation() -> None:
    tables = _init_tables(mib.layout("middle"))
    tables[0][16] = ("SmoothedRTT", 2)
    with pytest.raises(mib.LayoutMismatch) as info:
        mib.identify_layout(tables)
    assert info.value.nearest == "middle"
    assert "perf index 16" in str(info.value) and "type 2" in str(info.value)
    assert "type 3" in str(info.value)

    tables = _init_tables(mib.layout("old"))
    del tables[5][1]
    with pytest.raises(mib.LayoutMismatch) as info:
        mib.identify_layout(tables)
    assert info.value.nearest == "old"
    assert "extras index 1" in str(info.value) and "'Priority'" in str(info.value)
    assert info.value.got is None

    with pytest.raises(mib.LayoutMismatch, match="6"):
        mib.identify_layout(_init_tables(mib.layout("head"))[:5])


def test_format_getmib() -> None:
    text = mib.format_getmib(mib.layout("head"))
    lines = text.split("\n")
    assert lines[0] == ("TCP Extended Statistics (RFC 4898) contains 6 table(s) comprised "
                        "of 124 variables.")
    assert lines[1:4] == ["Performance Table:", "\tSegsOut\t(2)", "\tDataSegsOut\t(2)"]
    assert "Tune Table:\n\tLimCwnd\t(3)\n\tLimRwin\t(3)\n\tLimMSS\t(3)\n" in text
    assert text.endswith("Extras Table:\n\tPriority\t(4)\n")
    headers = [ln for ln in lines if ln.endswith("Table:")]
    assert headers == ["Performance Table:", "Path Table:", "Stack Table:",
                       "Application Table:", "Tune Table:", "Extras Table:"]
    assert text.count("\n") == 1 + 6 + 124
    assert "\tStartTimeStamp\t(6)\n" in text and "\tHCSumRTT\t(5)\n" in text
    assert mib.format_getmib(_init_tables(mib.layout("head"))) == text
    assert mib.format_getmib("head") == text
    old = mib.format_getmib("old")
    assert "\tOtherReductions\t(2)\n" in old
    assert old.endswith("Extras Table:\n\tOtherReductionsCM\t(2)\n\tPriority\t(4)\n")
    assert "comprised of 122 variables." in mib.format_getmib("middle")


# ------------------------------------------------------------------------ sock_diag map

def _tcp_info_fields() -> dict[str, tuple[int, int]]:
    """Field name -> (offset, width) from stock-kernel-mapping.md §2."""
    text = _spec("stock-kernel-mapping.md").read_text(encoding="utf-8")
    section = text.split("## 2. `struct tcp_info`", 1)[1].split("### 2.1", 1)[0]
    widths = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}
    out: dict[str, tuple[int, int]] = {}
    for line in section.splitlines():
        m = re.match(r"\| (\d+) \| (u\d+)[^|]*\| ([^|]+)\|", line)
        if m:
            for name in re.findall(r"tcpi_\w+", m.group(3)):
                out.setdefault(name, (int(m.group(1)), widths[m.group(2)]))
    return out


def test_sock_diag_map_covers_every_variable() -> None:
    rows = _data_rows("sock_diag-map.csv")
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names)) == 126
    expected = {r["name"] for r in _spec_rows()} | {"OtherReductions", "OtherReductionsCM"}
    assert set(names) == expected
    for v in mib.variables(backend="estats"):
        assert v.sock_diag.match in mib.MATCH_CLASSES
    for row in rows:
        sd = mib.lookup(row["name"]).sock_diag
        assert sd.match == row["match"]
        if sd.match == "unavailable":
            assert not sd.available and sd.source == "" and sd.tcpi_offset is None
        else:
            assert sd.source and sd.group
        assert (sd.tcpi_offset is None) == (sd.tcpi_width is None)
        if sd.tcpi_offset is not None:
            assert sd.group == "tcp_info"
            assert sd.tcpi_offset + sd.tcpi_width <= 280
            assert sd.kernel


def test_sock_diag_offsets_match_tcp_info_layout() -> None:
    fields = _tcp_info_fields()
    assert fields["tcpi_rtt"] == (68, 4) and fields["tcpi_bytes_sent"] == (200, 8)
    rows = _data_rows("sock_diag-map.csv") + _data_rows("stock-extras.csv")
    checked = 0
    for row in rows:
        used = re.findall(r"tcpi_\w+", row["source"])
        if not used or row["name"].startswith(("ecn_mode", "options2")):
            continue  # 7.0 bit-fields of the last word: width is the whole word
        ends = [sum(fields[f]) for f in used if f in fields]
        assert ends, row["name"]
        # The row's (offset, width) is the field that ends last: available iff it fits.
        assert int(row["tcpi_offset"]) + int(row["tcpi_width"]) == max(ends), row["name"]
        if re.fullmatch(r"tcpi_\w+", row["source"]):
            assert (int(row["tcpi_offset"]), int(row["tcpi_width"])) == fields[row["source"]]
        checked += 1
    assert checked > 80


def test_sock_diag_spot_checks() -> None:
    def sd(name: str) -> mib.SockDiagSource:
        return mib.lookup(name).sock_diag

    s = sd("SmoothedRTT")
    assert (s.match, s.source, s.tcpi_offset, s.tcpi_width) == ("exact", "tcpi_rtt", 68, 4)
    assert "1000" in s.conversion
    s = sd("HCDataOctetsOut")
    assert (s.match, s.source, s.tcpi_offset, s.tcpi_width, s.kernel) == (
        "exact", "tcpi_bytes_sent", 200, 8, "4.19")
    s = sd("CERcvd")
    assert (s.match, s.source, s.kernel, s.tcpi_offset, s.tcpi_width) == (
        "exact", "tcpi_received_ce", "6.18", 248, 4)
    assert sd("SampleRTT").match == "unavailable" and not sd("SampleRTT").available
    assert sd("CurCwnd").match == "approx" and "tcpi_snd_cwnd" in sd("CurCwnd").source
    assert sd("MaxRwinRcvd").match == "derived"
    assert sd("State").match == "exact" and sd("State").source == "idiag_state"
    assert sd("IpTosOut").match == "exact" and sd("IpTosOut").group == "tos"
    assert sd("Priority").match == "approx" and sd("Priority").group == "class_id"
    assert sd("SndLimTimeRwin").kernel == "4.10"
    assert all(sd(n).match == "unavailable" for n in ("LimCwnd", "LimRwin", "LimMSS"))
    # Availability by tcp_info length (mapping §2.2: present iff offset + width <= L).
    assert sd("CERcvd").available_for(280) and not sd("CERcvd").available_for(248)
    assert sd("SegsOut").available_for(144) and not sd("SegsOut").available_for(136)
    assert sd("State").available_for(0)
    assert not sd("SampleRTT").available_for(280)


def test_sock_diag_match_counts() -> None:
    counts: dict[str, int] = {}
    for v in mib.variables(backend="estats"):
        counts[v.sock_diag.match] = counts.get(v.sock_diag.match, 0) + 1
    assert sum(counts.values()) == 124
    # exact rows: every one listed as exact in mapping §3.2-§3.5 and §3.9, except RTTVar
    # (Web10G's rttvar_us >> 2 is not in tcp_info: derived from the RTO, approx).
    exact = {v.name for v in mib.variables(backend="estats") if v.sock_diag.match == "exact"}
    assert exact == {
        "SegsOut", "DataSegsOut", "DataOctetsOut", "HCDataOctetsOut", "SegsRetrans",
        "OctetsRetrans", "SegsIn", "DataSegsIn", "CurMSS", "SmoothedRTT", "CurRTO",
        "CurRwinSent", "CurRwinRcvd", "SndLimTimeRwin", "IpTosOut", "CERcvd",
        "WinScaleSent", "WinScaleRcvd", "State", "CurTimeoutCount", "DSACKDups",
        "ThruOctetsAcked", "HCThruOctetsAcked", "ThruOctetsReceived",
        "HCThruOctetsReceived", "CurAppWQueue", "CurAppRQueue"}


# ------------------------------------------------------------------------------ extras

def test_stock_extras() -> None:
    rows = _data_rows("stock-extras.csv")
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names))
    for must in ("rtt_us", "rttvar_us", "rto_us", "min_rtt_us", "cwnd_segs", "ssthresh_segs",
                 "tcp_info_len", "cc_algorithm", "skmem_drops", "bbr_bw_bytes_per_s",
                 "ca_state", "opt_sack", "delivery_rate_app_limited", "timer",
                 "timer_expires_ms", "timer_retrans", "bound_ifindex", "mem_rmem_bytes",
                 "dctcp_alpha", "vegas_min_rtt_us", "shutdown_rd", "shutdown_wr", "mark",
                 "class_id", "cgroup_id", "sockopt_flags", "accecn_word", "ecn_mode",
                 "ecn_received_ce_bytes", "accecn_delivered_ect0_bytes", "rto_expirations"):
        assert must in names, must
    for banned in ("fackets", "last_ack_sent", "cookie", "uid", "inode", "cid"):
        assert not any(banned in n for n in names), banned
    groups = {"tcp_info", "inet_diag", "meminfo", "skmeminfo", "cong", "bbr", "dctcp",
              "vegas", "shutdown", "mark", "class_id", "cgroup", "sockopt", "tos", "client"}
    dtypes = {"u1", "u2", "u4", "u8", "i4", "f8", "S16"}
    for row in rows:
        v = mib.lookup(row["name"])
        assert row["group"] in groups and row["dtype"] in dtypes, row["name"]
        assert (v.table, v.index, v.type_code, v.rfc_name) == ("stock", None, None, v.name)
        assert v.dtype == np.dtype(row["dtype"]) and v.wire == row["dtype"]
        assert v.description and v.units and not v.writable
        assert v.sock_diag.available and v.sock_diag.group == row["group"]
        assert (row["tcpi_offset"] == "") == (row["group"] != "tcp_info"), row["name"]
        assert re.fullmatch(r"[a-z][a-z0-9_]*", v.name)
    assert mib.lookup("cc_algorithm").dtype == np.dtype("S16")
    assert mib.lookup("bbr_bw_bytes_per_s").dtype == np.dtype(np.uint64)
    assert mib.lookup("rtt_us").sock_diag.tcpi_offset == 68
    assert mib.lookup("busy_time_us").is_counter


# ---------------------------------------------------------------- identity and states

def test_states() -> None:
    k = mib.KERNEL_TO_RFC_STATE
    assert k.dtype == np.uint8 and k.shape == (16,) and not k.flags.writeable
    mapping = {1: 5, 2: 3, 3: 4, 12: 4, 4: 6, 5: 7, 6: 11, 7: 1, 8: 8, 9: 9, 10: 2, 11: 10}
    for kernel, rfc in mapping.items():
        assert k[kernel] == rfc
    assert k[0] == 0 and k[14] == 0 and k[15] == 0
    assert mib.STATE_NAMES[int(k[1])] == "established"
    assert mib.STATE_NAMES[int(k[10])] == "listen"
    assert sorted(mib.STATE_NAMES) == list(range(1, 13))
    assert 12 not in k  # deleteTCB is never reported by a stock kernel
    assert mib.TYPE_CODES["Octet"] == 9 and mib.TYPE_NAMES[5] == "Counter64"
    assert mib.TABLES == ("perf", "path", "stack", "app", "tune", "extras")


def test_import_needs_no_compiled_extension() -> None:
    # Pure-Python helpers (web10g.errors) may come along; no extension module may.
    code = ("import json, sys, web10g.mib; "
            "print(json.dumps({m: getattr(sys.modules[m], '__file__', '') or '' "
            "for m in sys.modules if m.startswith('web10g')}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    loaded = json.loads(out)
    assert {"web10g", "web10g.mib"} <= set(loaded)
    assert all(f.endswith(".py") for f in loaded.values()), loaded
