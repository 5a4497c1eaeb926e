"""The sock_diag backend's values against the Web10G kernel module's definitions.

Each test builds inet_diag records with chosen tcp_info fields and runs them through both
decoders (the C one and the pure-Python reference), which must agree with each other and
with what Web10G's read functions and update hooks would report for the same socket.
"""
from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from web10g import _pyref, _sockdiag, mib
from web10g._netlink import NetlinkSocket
from web10g._tcpinfo import TCP_INFO_DTYPE

DECODERS = {"c": _sockdiag.decode_datagrams, "python": _pyref.decode_datagrams}
FLOW_TABLES = {"c": _sockdiag.FlowTable, "python": _pyref.FlowTable}
ROOT = Path(__file__).resolve().parent.parent
RECORDING = Path(__file__).with_name("data") / "sockdiag-dump.bin"
U32_MAX = 0xFFFFFFFF
# tcp_rto_min (200 ms) / 4, less 1 ms: the RTO is kept in jiffies (4 ms at HZ = 250), and
# on 6.18 a tiny-RTT flow's RTO is exactly 200 ms, a few us short of SRTT + rttvar_us.
MIN_RTTVAR = 49
CA_STATES = {"Open": 0, "Disorder": 1, "CWR": 2, "Recovery": 3, "Loss": 4}

_KINDS = {"U8": "u1", "U16": "u2", "U32": "u4", "U64": "u8", "I32": "i4", "I64": "i8",
          "F64": "f8", "S16": "S16", "A16": ("u1", (16,))}
# Every column the decoder can fill, built from the decoder itself (no agent needed).
DTYPE = np.dtype([(name, _KINDS[kind])
                  for name, kind in zip(_sockdiag.FIELD_NAMES, _sockdiag.FIELD_KINDS)])


def message(*, cookie: int = 1, timer: int = 0, state: int = 1, **tcpi: int) -> bytes:
    """One SOCK_DIAG_BY_FAMILY message: an ESTABLISHED IPv4 socket whose tcp_info has
    the given ``tcpi_*`` fields (name without the prefix) and zeros elsewhere."""
    info = np.zeros(1, TCP_INFO_DTYPE)
    for name, value in tcpi.items():
        info[0]["tcpi_" + name] = value
    payload = info.tobytes()
    attr = struct.pack("=HH", 4 + len(payload), 2) + payload
    body = struct.pack("=BBBBHH16s16sIII", socket.AF_INET, state, timer, 0,
                       socket.htons(40000), socket.htons(5001), b"\x7f\0\0\1",
                       b"\x7f\0\0\1", 0, cookie & U32_MAX, cookie >> 32)
    body += struct.pack("=5I", 0, 0, 0, 0, 0)
    return struct.pack("=IHHII", 16 + len(body) + len(attr), 20, 2, 1, 0) + body + attr


def decode(decoder: str, *msgs: bytes, **kw) -> np.ndarray:
    arr, n = DECODERS[decoder]([b"".join(msgs)], DTYPE, **kw)
    return arr[:n]


def one(decoder: str, **fields) -> np.void:
    sysctls = fields.pop("sysctls", (1, 1, 2))
    rows = decode(decoder, message(**fields), sysctls=sysctls)
    assert len(rows) == 1
    return rows[0]


def both(**fields) -> dict[str, np.void]:
    """The row each decoder makes of one record; they must be identical."""
    rows = {name: one(name, **dict(fields)) for name in DECODERS}
    for col in DTYPE.names:
        assert np.array_equal(rows["c"][col], rows["python"][col]), col
    return rows


def series(decoder: str, samples: list[dict[str, int]]) -> list[np.void]:
    """Successive dumps of one flow (cookie 7) through a flow table: the derived
    columns after each sample."""
    flows = FLOW_TABLES[decoder]()
    out = []
    for fields in samples:
        arr, n = DECODERS[decoder]([message(cookie=7, **fields)], DTYPE,
                                   flags=_sockdiag.DERIVED, flows=flows)
        assert n == 1
        out.append(arr[0].copy())
    assert len(flows) == 1
    return out


def load_recording() -> list[bytes]:
    data = RECORDING.read_bytes()
    out, off = [], 0
    while off < len(data):
        (n,) = struct.unpack_from("<I", data, off)
        out.append(data[off + 4:off + 4 + n])
        off += 4 + n
    return out


# ------------------------------------------------------------------------- 1. RTTVar

@pytest.mark.parametrize(("rto", "rtt", "backoff", "timer", "want"), [
    (220_000, 20_000, 0, 0, 50),          # RTO 220 ms = SRTT 20 ms + 4 * 50 ms
    (204_000, 3_500, 0, 1, 50),           # floor((204000 - 3500) / 4000): as rttvar_us/1000>>2
    (231_000, 30_000, 0, 0, 50),          # 50.25 -> 50
    (880_000, 20_000, 2, 1, 50),          # two expiries doubled the RTO twice: 880 >> 2
    (1_760_000, 20_000, 3, 1, 50),
    (220_000, 20_000, 3, 4, 50),          # zero-window probes: backoff without doubling
    (100_000, 300_000, 0, 0, 0),          # an RTO below the RTT gives no variation
    (120_000_000, 20_000, 40, 1, 0),      # shift past the word: nothing left
    (1_000_000, 0, 0, 0, 250),            # no RTT sample yet: the RTO is all variation
    (0, 0, 0, 0, 0),
])
def test_rttvar_is_the_rto_variation_term(rto, rtt, backoff, timer, want):
    """Web10G's RTTVar is (rttvar_us / 1000) >> 2, the term RTO = SRTT + 4 * RTTVar
    is computed from; tcp_info's tcpi_rttvar (mean deviation) is another quantity."""
    rows = both(rto=rto, rtt=rtt, backoff=backoff, timer=timer, rttvar=1_234)
    for row in rows.values():
        assert row["RTTVar"] == want
        assert row["rttvar_us"] == 1_234          # the mean deviation stays, under its name
        assert row["rto_us"] == rto and row["rto_backoff"] == backoff


def test_rttvar_of_real_kernel_bytes_obeys_the_rto_formula():
    """The recorded connections: RTO = SRTT + 4 * RTTVar, and the variation is floored
    at tcp_rto_min (200 ms) / 4, where the mean deviation of a loopback flow is tiny."""
    for decoder in DECODERS:
        arr, n = DECODERS[decoder](load_recording(), DTYPE)
        est = arr[:n][(arr[:n]["state"] == 5) & (arr[:n]["rto_backoff"] == 0)]
        assert len(est) == 6
        assert (est["RTTVar"] == (est["rto_us"] - est["rtt_us"]) // 4000).all()
        assert (est["RTTVar"] >= MIN_RTTVAR).all()
        assert (est["RTTVar"] * 1000 > 4 * est["rttvar_us"]).all()
        lhs = est["SmoothedRTT"].astype(int) + 4 * est["RTTVar"].astype(int)
        assert (abs(est["CurRTO"].astype(int) - lhs) <= 4).all()       # one jiffy at most


def test_rttvar_of_a_live_connection(tcp_pair):
    _, cli, srv = tcp_pair
    cli.sendall(b"x" * 20000)
    srv.recv(20000)
    cport, sport = cli.getsockname()[1], srv.getsockname()[1]
    with NetlinkSocket(4) as sock:
        req = struct.pack("=BBBxI", socket.AF_INET, socket.IPPROTO_TCP, 0xFF, 1 << 1)
        dgram = b"".join(sock.request(20, 0, req + bytes(48), dump=True))
    for decoder in DECODERS:
        arr, n = DECODERS[decoder]([dgram], DTYPE)
        lp, rp = arr[:n]["local_port"], arr[:n]["rem_port"]
        mine = arr[:n][((lp == cport) & (rp == sport)) | ((lp == sport) & (rp == cport))]
        assert len(mine) == 2
        assert (mine["RTTVar"] >= MIN_RTTVAR).all()
        assert (mine["RTTVar"] == (mine["rto_us"] - mine["rtt_us"]) // 4000).all()


def test_rttvar_is_classified_approx_and_documented():
    sd = mib.lookup("RTTVar").sock_diag
    assert sd.match == "approx"
    assert "tcpi_rto" in sd.source and "tcpi_rtt" in sd.source
    assert "tcpi_rttvar" not in sd.source
    assert "tcpi_backoff" in sd.source and "back-off" in sd.note
    assert (sd.tcpi_offset, sd.tcpi_width) == (68, 4)       # the last field it reads
    extra = mib.lookup("rttvar_us")
    assert extra.sock_diag.source == "tcpi_rttvar" and extra.units == "microseconds"


# --------------------------------------------------------------------- 2. InRecovery

def _conversion_table(text: str) -> dict[int, int]:
    """'A or B -> 1; C -> 2' as {ca_state: value}."""
    out = {}
    for clause in text.split(";"):
        lhs, rhs = clause.split("->")
        for name in re.findall("|".join(CA_STATES), lhs):
            out[CA_STATES[name]] = int(rhs)
    return out


@pytest.mark.parametrize("ca_state", range(6))
def test_in_recovery_follows_web10g(ca_state):
    """read_InRecovery: icsk_ca_state > TCP_CA_CWR ? 1 : 2."""
    rows = both(ca_state=ca_state)
    assert rows["c"]["InRecovery"] == (1 if ca_state > 2 else 2)


def test_in_recovery_text_says_what_the_decoders_do():
    sd = mib.lookup("InRecovery").sock_diag
    table = _conversion_table(sd.conversion)
    assert set(table) == set(CA_STATES.values())
    for ca_state, value in table.items():
        assert both(ca_state=ca_state)["c"]["InRecovery"] == value
    assert table == {0: 2, 1: 2, 2: 2, 3: 1, 4: 1}


# ---------------------------------------------------------------- 3. MaxSsCwnd/MaxCaCwnd

@pytest.mark.parametrize("decoder", DECODERS)
def test_cwnd_equal_to_ssthresh_counts_as_slow_start(decoder):
    """tcp_estats_update_finish_segrecv: snd_cwnd <= snd_ssthresh is slow start."""
    base = {"snd_mss": 1000, "rtt": 10_000, "rto": 210_000}
    rows = series(decoder, [
        {**base, "snd_cwnd": 10, "snd_ssthresh": 0x7FFFFFFF},
        {**base, "snd_cwnd": 20, "snd_ssthresh": 20},
        {**base, "snd_cwnd": 21, "snd_ssthresh": 20},
        {**base, "snd_cwnd": 15, "snd_ssthresh": 15},
    ])
    assert [(r["MaxSsCwnd"], r["MaxCaCwnd"]) for r in rows] == [
        (10_000, 0), (20_000, 0), (20_000, 21_000), (20_000, 21_000)]


# ---------------------------------------------------------------------- 4. MaxRTO/MinRTO

@pytest.mark.parametrize("decoder", DECODERS)
def test_rto_extremes_skip_backed_off_and_unsampled_rtos(decoder):
    """Web10G updates MaxRTO/MinRTO in tcp_estats_update_rtt (an RTT sample, after which
    the back-off is 0): a backed-off RTO, or the initial one, is never recorded."""
    rows = series(decoder, [
        {"rto": 1_000_000, "rtt": 0},                            # handshake: no sample yet
        {"rto": 204_000, "rtt": 3_000},
        {"rto": 408_000, "rtt": 3_000, "backoff": 1, "retransmits": 1},
        {"rto": 816_000, "rtt": 3_000, "backoff": 2, "retransmits": 2},
        {"rto": 208_000, "rtt": 5_000},
        {"rto": 201_000, "rtt": 1_000},
    ])
    assert [(r["MaxRTO"], r["MinRTO"]) for r in rows] == [
        (0, U32_MAX), (204, 204), (204, 204), (204, 204), (208, 204), (208, 201)]
    assert [r["CurRTO"] for r in rows] == [1000, 204, 408, 816, 208, 201]


@pytest.mark.parametrize("decoder", DECODERS)
def test_derived_columns_of_both_decoders_agree(decoder):
    """The reference decoder keeps the same per-flow state as the C flow table."""
    samples = [
        {"rto": 204_000, "rtt": 3_000, "snd_mss": 1448, "snd_cwnd": 10,
         "snd_ssthresh": 0x7FFFFFFF, "unacked": 8, "rcv_wnd": 65535, "snd_wnd": 1 << 20,
         "notsent_bytes": 900},
        {"rto": 412_000, "rtt": 6_000, "backoff": 1, "snd_mss": 1400, "snd_cwnd": 1,
         "snd_ssthresh": 7, "unacked": 9, "lost": 2, "retrans": 1, "rcv_wnd": 60000,
         "snd_wnd": 1 << 19, "notsent_bytes": 100},
        {"rto": 230_000, "rtt": 20_000, "snd_mss": 1448, "snd_cwnd": 9,
         "snd_ssthresh": 7, "rcv_wnd": 70000, "snd_wnd": 1 << 18},
    ]
    mine = series(decoder, samples)
    ref = series("python" if decoder == "c" else "c", samples)
    for a, b in zip(mine, ref):
        for col in DTYPE.names:
            assert np.array_equal(a[col], b[col]), col
    last = mine[-1]
    assert (last["MaxSsthresh"], last["MinSsthresh"]) == (7 * 1448, 7 * 1400)
    assert (last["MaxMSS"], last["MinMSS"]) == (1448, 1400)
    assert last["MaxRTT"] == 20 and last["MaxPipeSize"] == 8 * 1448
    assert last["MaxAppWQueue"] == 900 and last["MaxRwinSent"] == 70000


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_flow_absent_from_a_dump_starts_over(decoder):
    flows = FLOW_TABLES[decoder]()
    kw = {"flags": _sockdiag.DERIVED, "flows": flows}
    DECODERS[decoder]([message(cookie=1, rto=300_000, rtt=1_000)], DTYPE, **kw)
    DECODERS[decoder]([message(cookie=2, rto=250_000, rtt=1_000)], DTYPE, **kw)
    arr, _ = DECODERS[decoder]([message(cookie=1, rto=200_000, rtt=1_000)], DTYPE, **kw)
    assert (arr[0]["MaxRTO"], arr[0]["MinRTO"]) == (200, 200)
    assert len(flows) == 1


def test_rto_map_notes_document_the_rule():
    for name in ("MaxRTO", "MinRTO"):
        assert "tcpi_backoff > 0" in mib.lookup(name).sock_diag.note
    assert "<= ssthresh" in mib.lookup("MaxSsCwnd").sock_diag.source
    assert "> ssthresh" in mib.lookup("MaxCaCwnd").sock_diag.source


# ----------------------------------------------------------------------------- 5. ECN

@pytest.mark.parametrize("tcp_ecn", range(6))
@pytest.mark.parametrize("negotiated", [False, True])
def test_ecn_follows_read_ecn(tcp_ecn, negotiated):
    """read_ECN: 1 if negotiated; else 3 for any nonzero tcp_ecn sysctl; else 2."""
    rows = both(options=0x8 if negotiated else 0x3, sysctls=(1, 1, tcp_ecn))
    want = 1 if negotiated else (3 if tcp_ecn else 2)
    assert rows["c"]["ECN"] == want


# --------------------------------------------------------------------- 6. build warnings

def test_sockdiag_c_compiles_without_sign_compare_warnings():
    """The decoder and the Cython-generated module build clean with the flags Python
    builds extensions with (-Wsign-compare among them)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler")
    generated = ROOT / "build" / "cython" / "web10g" / "_sockdiag.c"
    pyx = ROOT / "web10g" / "_sockdiag.pyx"
    sources = [ROOT / "csrc" / "w10g_sockdiag.c"]
    if generated.exists() and generated.stat().st_mtime >= pyx.stat().st_mtime:
        sources.append(generated)
    flags = ["-fsyntax-only", "-std=gnu11", "-Wall", "-Wsign-compare", "-Werror",
             "-Wno-unused-function", "-Wno-unreachable-code",
             "-DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION", f"-I{ROOT / 'csrc'}",
             f"-I{np.get_include()}", f"-I{sysconfig.get_paths()['include']}"]
    for src in sources:
        res = subprocess.run([cc, *flags, str(src)], capture_output=True, text=True,
                             check=False)
        assert res.returncode == 0, res.stderr[-2000:]
