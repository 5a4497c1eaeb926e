"""The pure-Python reference decoder for sock_diag replies.

Written from the specification independently of csrc/w10g_sockdiag.c, and slow on
purpose (plain ``struct`` and dicts): it exists so the fast decoder has something to be
held against. ``decode_datagrams`` has the same signature and results as
:func:`web10g._sockdiag.decode_datagrams`; the decoder test suite runs on both.
Client-derived columns (running max/min per flow) read 0 unless a :class:`FlowTable` is
passed, as with the C decoder's ``flows``.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import numpy as np

from web10g import errors
from web10g._tcpinfo import parse as parse_tcp_info

NLMSG_ERROR, NLMSG_DONE, TCPDIAG_GETSOCK, SOCK_DIAG_BY_FAMILY = 2, 3, 18, 20
NLM_F_DUMP_INTR = 0x10
DERIVED = 2                                 # decoder flag: keep the derived columns
AF_INET6 = 10
_RFC_STATE = {1: 5, 2: 3, 3: 4, 4: 6, 5: 7, 6: 11, 7: 1, 8: 8, 9: 9, 10: 2, 11: 10, 12: 4,
              13: 1}
_MSG = struct.Struct("=BBBBHH16s16sIII")   # inet_diag_msg up to the cookie's low word
_PRESENT = {"info": 1, "meminfo": 2, "skmeminfo": 4, "cong": 8, "tos": 16, "class_id": 32,
            "shutdown": 64, "mark": 128, "cgroup": 256, "sockopt": 512, "bbr": 1024,
            "dctcp": 2048, "vegas": 4096}


def _messages(datagram: bytes) -> list[tuple[int, int, bytes]]:
    """The messages of a datagram, which must be exactly a sequence of whole messages."""
    out, off = [], 0
    while off < len(datagram):
        if len(datagram) - off < 16:
            raise errors.MalformedReply("recorded datagram: trailing bytes after the last "
                                        "message")
        length, mtype, flags = struct.unpack_from("=IHH", datagram, off)
        if length < 16 or off + length > len(datagram):
            raise errors.MalformedReply("recorded datagram: a message length runs past "
                                        "the datagram")
        out.append((mtype, flags, datagram[off + 16:off + length]))
        off += min((length + 3) & ~3, len(datagram) - off)
    return out


def _attrs(body: bytes) -> dict[int, bytes] | None:
    out: dict[int, bytes] = {}
    off = 0
    while len(body) - off >= 4:
        alen, atype = struct.unpack_from("=HH", body, off)
        if alen < 4 or alen > len(body) - off:
            return None
        out[atype & 0x3FFF] = body[off + 4:off + alen]
        off += min((alen + 3) & ~3, len(body) - off)
    return out


def _sat(v: int) -> int:
    return min(max(v, 0), 0xFFFFFFFF)


def _negotiated(on: int, sysctl_on: bool) -> int:
    return 1 if on else (3 if sysctl_on else 2)


_LOW32 = 0xFFFFFFFF
_FLOW_MAX = ("max_pipe", "max_rtt_us", "max_rto_us", "max_rwin_sent", "max_rwin_rcvd",
             "max_mss", "max_ss_cwnd", "max_ca_cwnd", "max_ssthresh", "max_app_wq",
             "max_app_rq")
_FLOW_MIN = ("min_rto_us", "min_mss", "min_ssthresh")


class FlowTable:
    """The running max/min per flow (socket cookie) behind the derived columns, kept as
    :class:`web10g._sockdiag.FlowTable` keeps them: one decode call is one dump, and a
    flow's state goes with the first dump that lacks it."""

    def __init__(self) -> None:
        self._prev: dict[int, dict[str, int]] = {}
        self._cur: dict[int, dict[str, int]] = {}

    def __len__(self) -> int:
        return len(self._prev)

    def state(self, cookie: int) -> dict[str, int]:
        """This dump's state of a flow: the last dump's, or a new one."""
        old = self._prev.get(cookie)
        if old is not None:
            st = dict(old)
        else:
            st = dict.fromkeys(_FLOW_MAX, 0) | dict.fromkeys(_FLOW_MIN, _LOW32)
        self._cur[cookie] = st
        return st

    def end_dump(self) -> None:
        self._prev, self._cur = self._cur, {}


def _update_flow(f: dict[str, int], t: dict[str, int], *, pipe: int, cwnd: int,
                 ssthresh: int, ssthresh_set: bool, rq: int) -> None:
    """One sample into a flow's running max/min, as Web10G updates them."""
    mss, rto = t["tcpi_snd_mss"], t["tcpi_rto"]
    f["max_pipe"] = max(f["max_pipe"], pipe)
    f["max_rtt_us"] = max(f["max_rtt_us"], t["tcpi_rtt"])
    # Web10G records the RTO on RTT samples only (which clear the back-off): never a
    # backed-off RTO, nor the initial one before the first sample.
    if t["tcpi_backoff"] == 0 and t["tcpi_rtt"] != 0:
        f["max_rto_us"] = max(f["max_rto_us"], rto)
        if rto:
            f["min_rto_us"] = min(f["min_rto_us"], rto)
    f["max_rwin_sent"] = max(f["max_rwin_sent"], t["tcpi_rcv_wnd"])
    f["max_rwin_rcvd"] = max(f["max_rwin_rcvd"], t["tcpi_snd_wnd"])
    f["max_mss"] = max(f["max_mss"], mss)
    if mss:
        f["min_mss"] = min(f["min_mss"], mss)
    key = "max_ss_cwnd" if t["tcpi_snd_cwnd"] <= t["tcpi_snd_ssthresh"] else "max_ca_cwnd"
    f[key] = max(f[key], cwnd)
    if ssthresh_set:
        f["max_ssthresh"] = max(f["max_ssthresh"], ssthresh)
        f["min_ssthresh"] = min(f["min_ssthresh"], ssthresh)
    f["max_app_wq"] = max(f["max_app_wq"], t["tcpi_notsent_bytes"])
    f["max_app_rq"] = max(f["max_app_rq"], rq)


def _derived_columns(f: dict[str, int]) -> dict[str, int]:
    def ms(us: int) -> int:
        return _LOW32 if us == _LOW32 else us // 1000

    return {
        "MaxPipeSize": f["max_pipe"], "MaxRTT": f["max_rtt_us"] // 1000,
        "MaxRTO": f["max_rto_us"] // 1000, "MinRTO": ms(f["min_rto_us"]),
        "MaxRwinSent": f["max_rwin_sent"], "MaxRwinRcvd": f["max_rwin_rcvd"],
        "MaxMSS": f["max_mss"], "MinMSS": f["min_mss"], "MaxSsCwnd": f["max_ss_cwnd"],
        "MaxCaCwnd": f["max_ca_cwnd"], "MaxSsthresh": f["max_ssthresh"],
        "MinSsthresh": f["min_ssthresh"], "MaxAppWQueue": f["max_app_wq"],
        "MaxAppRQueue": f["max_app_rq"],
    }


def _rttvar_ms(t: dict[str, int], timer: int) -> int:
    """Web10G's RTTVar, rttvar_us >> 2 in ms: the variation term of RTO = SRTT + 4 * RTTVar.

    tcp_info has no such field (tcpi_rttvar is the mean deviation), so it comes from the
    RTO taken back to before its back-off: every expiry doubles the RTO and counts in
    tcpi_backoff, while zero-window probes (idiag_timer 4) count there and double nothing.
    """
    shift = 0 if timer == 4 else t["tcpi_backoff"]
    base = t["tcpi_rto"] >> shift
    return (base - t["tcpi_rtt"]) // 4000 if base > t["tcpi_rtt"] else 0


def record(body: bytes, *, now_ns: int, bitfield: bool, sysctls: tuple[int, int, int],
           flows: FlowTable | None = None) -> dict[str, Any] | None:
    """Every column of one inet_diag record, or None when it is malformed. With ``flows``
    the derived columns are the flow's running max/min, else 0."""
    if len(body) < 72:
        return None
    (family, kstate, timer, retrans, sport, dport, src, dst, ifindex, ck_lo,
     ck_hi) = _MSG.unpack_from(body)
    expires, rqueue, _wqueue, uid, inode = struct.unpack_from("=5I", body, 52)
    attrs = _attrs(body[72:])
    if attrs is None:
        return None
    sport, dport = struct.unpack("!HH", struct.pack("=HH", sport, dport))
    present = 0
    info = attrs.get(2)
    ti = parse_tcp_info(info if info is not None else b"")
    if info is not None:
        present |= _PRESENT["info"]

    def u32s(atype: int, count: int, group: str, partial: bool = False) -> list[int]:
        # A short array counts as absent, except SKMEMINFO, which has grown over time:
        # its leading entries are kept, but only a full one sets the present bit.
        nonlocal present
        raw = attrs.get(atype, b"")
        if len(raw) >= 4 * count:
            present |= _PRESENT[group]
            return list(struct.unpack_from(f"={count}I", raw))
        if not partial:
            return [0] * count
        n = len(raw) // 4
        return list(struct.unpack_from(f"={n}I", raw)) + [0] * (count - n)

    mem = u32s(1, 4, "meminfo")
    skmem = u32s(7, 9, "skmeminfo", partial=True)
    bbr = u32s(16, 5, "bbr")
    vegas = u32s(3, 4, "vegas")
    dctcp_raw = attrs.get(9, b"")
    dctcp = (struct.unpack_from("=HHIII", dctcp_raw) if len(dctcp_raw) >= 16
             else (0, 0, 0, 0, 0))
    if len(dctcp_raw) >= 16:
        present |= _PRESENT["dctcp"]
    cong = b""
    if attrs.get(4):
        cong = attrs[4][:16].split(b"\0", 1)[0]
        present |= _PRESENT["cong"]
    tos = 0
    for atype in ((6, 5) if family == AF_INET6 else (5,)):
        if attrs.get(atype):
            tos = attrs[atype][0]
            present |= _PRESENT["tos"]
            break

    def scalar(atype: int, fmt: str, group: str) -> int:
        nonlocal present
        raw = attrs.get(atype, b"")
        if len(raw) >= struct.calcsize(fmt):
            present |= _PRESENT[group]
            return struct.unpack_from(fmt, raw)[0]
        return 0

    class_id = scalar(17, "=I", "class_id")
    shut = scalar(8, "=B", "shutdown")
    mark = scalar(15, "=I", "mark")
    cgroup = scalar(21, "=Q", "cgroup")
    sockopt = scalar(22, "=H", "sockopt")

    t = {name: int(ti[name]) for name in ti.dtype.names}
    mss = t["tcpi_snd_mss"]
    opts = t["tcpi_options"]
    inflight = t["tcpi_unacked"] - t["tcpi_sacked"] - t["tcpi_lost"] + t["tcpi_retrans"]
    ssthresh_set = t["tcpi_snd_ssthresh"] < 0x7FFFFFFF
    busy, rwnd, sndbuf = t["tcpi_busy_time"], t["tcpi_rwnd_limited"], t["tcpi_sndbuf_limited"]
    word = t["tcpi_accecn_word"]
    rq = 0 if kstate == 10 else rqueue
    ts_on, sack_on, ecn_mode_sysctl = sysctls
    low32 = 0xFFFFFFFF
    row: dict[str, Any] = {
        "cid": ck_hi << 32 | ck_lo, "family": family, "state": _RFC_STATE.get(kstate, 0),
        "local_port": sport, "rem_port": dport,
        "local_addr": np.frombuffer(src, np.uint8), "rem_addr": np.frombuffer(dst, np.uint8),
        "uid": uid, "inode": inode, "timestamp": now_ns, "present": present,
        "SegsOut": t["tcpi_segs_out"], "DataSegsOut": t["tcpi_data_segs_out"],
        "DataOctetsOut": t["tcpi_bytes_sent"] & low32, "HCDataOctetsOut": t["tcpi_bytes_sent"],
        "SegsRetrans": t["tcpi_total_retrans"], "OctetsRetrans": t["tcpi_bytes_retrans"] & low32,
        "SegsIn": t["tcpi_segs_in"], "DataSegsIn": t["tcpi_data_segs_in"],
        "DataOctetsIn": t["tcpi_bytes_received"] & low32,
        "HCDataOctetsIn": t["tcpi_bytes_received"], "CurMSS": mss,
        "PipeSize": _sat(inflight * mss) if inflight > 0 else 0,
        "SmoothedRTT": t["tcpi_rtt"] // 1000, "CurRTO": t["tcpi_rto"] // 1000,
        "CurCwnd": _sat(t["tcpi_snd_cwnd"] * mss),
        "CurSsthresh": _sat(t["tcpi_snd_ssthresh"] * mss) if ssthresh_set else low32,
        "Timeouts": t["tcpi_total_rto_recoveries"], "CurRwinSent": t["tcpi_rcv_wnd"],
        "CurRwinRcvd": t["tcpi_snd_wnd"], "SndLimTimeSnd": sndbuf & low32,
        "SndLimTimeCwnd": max(busy - rwnd - sndbuf, 0) & low32, "SndLimTimeRwin": rwnd & low32,
        "RetranThresh": t["tcpi_reordering"], "RTTVar": _rttvar_ms(t, timer),
        "MinRTT": low32 if t["tcpi_min_rtt"] == low32 else t["tcpi_min_rtt"] // 1000,
        "IpTosOut": tos, "ECNsignals": t["tcpi_delivered_ce"], "RcvRTT": t["tcpi_rcv_rtt"],
        "CERcvd": t["tcpi_received_ce"], "MSSSent": t["tcpi_advmss"],
        "WinScaleSent": t["tcpi_wscale"] >> 4 if opts & 4 else -1,
        "WinScaleRcvd": t["tcpi_wscale"] & 15 if opts & 4 else -1,
        "TimeStamps": _negotiated(opts & 1, bool(ts_on)),
        "ECN": _negotiated(opts & 8, ecn_mode_sysctl != 0),
        "WillSendSACK": _negotiated(opts & 2, bool(sack_on)),
        "WillUseSACK": _negotiated(opts & 2, bool(sack_on)),
        "State": _RFC_STATE.get(kstate, 0),
        "InRecovery": 1 if t["tcpi_ca_state"] > 2 else 2,     # past CWR: Recovery, Loss
        "SubsequentTimeouts": max(t["tcpi_total_rto"] - t["tcpi_total_rto_recoveries"], 0),
        "CurTimeoutCount": t["tcpi_retransmits"], "DSACKDups": t["tcpi_dsack_dups"],
        "ThruOctetsAcked": t["tcpi_bytes_acked"] & low32,
        "HCThruOctetsAcked": t["tcpi_bytes_acked"],
        "ThruOctetsReceived": t["tcpi_bytes_received"] & low32,
        "HCThruOctetsReceived": t["tcpi_bytes_received"],
        "CurAppWQueue": t["tcpi_notsent_bytes"], "CurAppRQueue": rq, "Priority": class_id,
        "rtt_us": t["tcpi_rtt"], "rttvar_us": t["tcpi_rttvar"], "rto_us": t["tcpi_rto"],
        "min_rtt_us": t["tcpi_min_rtt"], "cwnd_segs": t["tcpi_snd_cwnd"],
        "ssthresh_segs": t["tcpi_snd_ssthresh"], "ca_state": t["tcpi_ca_state"],
        "probes_out": t["tcpi_probes"], "rto_backoff": t["tcpi_backoff"], "options": opts,
        "delivery_rate_app_limited": t["tcpi_flags7"] & 1,
        "fastopen_client_fail": (t["tcpi_flags7"] >> 1) & 3,
        "delayed_ack_timeout_us": t["tcpi_ato"], "rcv_mss_bytes": t["tcpi_rcv_mss"],
        "unacked_segs": t["tcpi_unacked"], "sacked_segs": t["tcpi_sacked"],
        "lost_segs": t["tcpi_lost"], "retrans_in_flight_segs": t["tcpi_retrans"],
        "last_data_sent_ago_ms": t["tcpi_last_data_sent"],
        "last_data_recv_ago_ms": t["tcpi_last_data_recv"],
        "last_ack_recv_ago_ms": t["tcpi_last_ack_recv"], "path_mtu_bytes": t["tcpi_pmtu"],
        "rcv_ssthresh_bytes": t["tcpi_rcv_ssthresh"], "rcv_space_bytes": t["tcpi_rcv_space"],
        "pacing_rate_bytes_per_s": t["tcpi_pacing_rate"],
        "max_pacing_rate_bytes_per_s": t["tcpi_max_pacing_rate"],
        "delivery_rate_bytes_per_s": t["tcpi_delivery_rate"], "busy_time_us": busy,
        "delivered_segs": t["tcpi_delivered"], "delivered_ce_segs": t["tcpi_delivered_ce"],
        "reord_events": t["tcpi_reord_seen"], "ooo_segs_in": t["tcpi_rcv_ooopack"],
        "rehash_count": t["tcpi_rehash"], "rto_expirations": t["tcpi_total_rto"],
        "rto_recovery_time_ms": t["tcpi_total_rto_time"],
        "accecn_delivered_ect1_bytes": t["tcpi_delivered_e1_bytes"],
        "accecn_delivered_ect0_bytes": t["tcpi_delivered_e0_bytes"],
        "accecn_delivered_ce_bytes": t["tcpi_delivered_ce_bytes"],
        "ecn_received_ect1_bytes": t["tcpi_received_e1_bytes"],
        "ecn_received_ect0_bytes": t["tcpi_received_e0_bytes"],
        "ecn_received_ce_bytes": t["tcpi_received_ce_bytes"],
        "accecn_fail_mode": (word >> 4) & 0xF if bitfield else word & 0xFFFF,
        "accecn_opt_seen": (word >> 2) & 3 if bitfield else word >> 16,
        "ecn_mode": word & 3 if bitfield else 0, "options2": word >> 8 if bitfield else 0,
        "accecn_word": word, "timer": timer, "timer_expires_ms": expires,
        "timer_retrans": retrans, "bound_ifindex": ifindex,
        "cc_algorithm": cong,
        "bbr_bw_bytes_per_s": bbr[1] << 32 | bbr[0], "bbr_min_rtt_us": bbr[2],
        "bbr_pacing_gain": bbr[3] / 256.0, "bbr_cwnd_gain": bbr[4] / 256.0,
        "dctcp_enabled": dctcp[0], "dctcp_ce_state": dctcp[1], "dctcp_alpha": dctcp[2] / 1024.0,
        "dctcp_ab_ecn": dctcp[3], "dctcp_ab_tot": dctcp[4],
        "shutdown_rd": shut & 1, "shutdown_wr": (shut >> 1) & 1, "mark": mark,
        "class_id": class_id, "cgroup_id": cgroup, "sockopt_flags": sockopt,
        "tcp_info_len": len(info) if info is not None else 0,
    }
    cookie = row["cid"]
    if flows is not None and info is not None and cookie:
        f = flows.state(cookie)
        _update_flow(f, t, pipe=row["PipeSize"], cwnd=row["CurCwnd"],
                     ssthresh=row["CurSsthresh"], ssthresh_set=ssthresh_set, rq=rq)
    else:
        f = dict.fromkeys(_FLOW_MAX + _FLOW_MIN, 0)
    row.update(_derived_columns(f))
    for i, bit in enumerate(("timestamps", "sack", "wscale", "ecn", "ecn_seen", "syn_data",
                             "usec_ts", "tfo_child")):
        row[f"opt_{bit}"] = (opts >> i) & 1
    for i, name in enumerate(("mem_rmem_bytes", "mem_wmem_bytes", "mem_fmem_bytes",
                              "mem_tmem_bytes")):
        row[name] = mem[i]
    for i, name in enumerate(("rmem_alloc", "rcvbuf", "wmem_alloc", "sndbuf", "fwd_alloc",
                              "wmem_queued", "optmem", "backlog", "drops")):
        row[f"skmem_{name}"] = skmem[i]
    for i, name in enumerate(("enabled", "rtt_count", "rtt_us", "min_rtt_us")):
        row[f"vegas_{name}"] = vegas[i]
    return row


def decode_datagrams(datagrams: Iterable[bytes], dtype: Any, *, timestamp_ns: int = 0,
                     flags: int = 0, sysctls: tuple[int, int, int] = (1, 1, 2),
                     out: np.ndarray | None = None,
                     flows: FlowTable | None = None) -> tuple[np.ndarray, int]:
    """Decode recorded dump datagrams; ``(array, n)`` like the C decoder. With ``flows``
    (one sample per call, in order) and the DERIVED flag, the derived columns are kept
    across calls."""
    dtype = np.dtype(dtype)
    rows: list[dict[str, Any]] = []
    track = flows if flags & DERIVED else None
    for dgram in datagrams:
        for mtype, mflags, body in _messages(bytes(dgram)):
            # The same control-message rules as libmnl's receive loop.
            if mflags & NLM_F_DUMP_INTR:
                raise errors.MalformedReply("recorded datagram: a message is flagged as "
                                            "part of an interrupted dump (NLM_F_DUMP_INTR)")
            if mtype == NLMSG_DONE:
                break
            if mtype == NLMSG_ERROR:
                if len(body) < 20 or struct.unpack_from("=i", body)[0] != 0:
                    raise errors.MalformedReply("recorded datagram: an error message")
                break                   # an ACK ends the reply
            if mtype < 16:
                continue
            rec = record(body, now_ns=timestamp_ns, bitfield=bool(flags & 1),
                         sysctls=sysctls, flows=track) \
                if mtype in (SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK) else None
            if rec is None:
                raise errors.MalformedReply(f"recorded datagram: record {len(rows)} is "
                                            "malformed")
            rows.append(rec)
    if flows is not None:
        flows.end_dump()
    n = len(rows)
    if out is None or len(out) < n:
        out = np.zeros(max(n, 0 if out is None else len(out)), dtype=dtype)
    for i, rec in enumerate(rows):
        for name in dtype.names:
            out[i][name] = rec.get(name, 0)
    return out, n


# ---------------------------------------------------------------------------- estats

def _walk(buf: bytes) -> list[tuple[int, bytes]] | None:
    """Attributes of ``buf`` (type without the nest flag, payload); None if malformed."""
    out, off = [], 0
    while len(buf) - off >= 4:
        alen, atype = struct.unpack_from("=HH", buf, off)
        if alen < 4 or alen > len(buf) - off:
            return None
        out.append((atype & 0x3FFF, buf[off + 4:off + alen]))
        off += min((alen + 3) & ~3, len(buf) - off)
    return out if off == len(buf) else None


def estats_record(body: bytes, *, cmd: int, widths: dict[tuple[int, int], int],
                  state_pos: tuple[int, int] | None, usec_mult: int,
                  cid_adjust: int) -> dict[str, Any] | None:
    """Identity, time and (table, index) -> value bytes of one tcp_estats message."""
    if len(body) < 4 or body[0] != cmd:
        return None
    top = _walk(body[4:])
    if top is None:
        return None
    rec: dict[str, Any] = {"values": {}, "present": 0}
    sec = usec = 0
    cid = None
    addr_type, local, remote, lport, rport = 0, b"", b"", 0, 0
    for atype, payload in top:
        inner = _walk(payload) if atype in (1, 2, 3, 4, 5, 6, 14, 16) else []
        if inner is None:
            return None
        if 1 <= atype <= 6:
            rec["present"] |= 1 << (atype - 1)
            for idx, val in inner:
                if not val:
                    continue                    # NLE_ATTR_PAD filler
                width = widths.get((atype - 1, idx))
                if width is None or len(val) != width:
                    return None
                rec["values"][(atype - 1, idx)] = val
        elif atype == 14:
            rec["present"] |= 1 << 7
            for t, val in inner:
                if t in (1, 3):
                    if len(val) > 16:
                        return None
                    if t == 1:
                        remote = val
                    else:
                        local = val
                elif t in (2, 4):
                    if len(val) < 2:
                        return None
                    port = struct.unpack_from("=H", val)[0]
                    rport, lport = (port, lport) if t == 2 else (rport, port)
                elif t == 5:
                    if not val:
                        return None
                    addr_type = val[0]
                elif t == 6:
                    if len(val) < 4:
                        return None
                    cid = struct.unpack_from("=I", val)[0]
        elif atype == 16:
            rec["present"] |= 1 << 6
            for t, val in inner:
                if t in (1, 2):
                    if len(val) < 4:
                        return None
                    if t == 1:
                        sec = struct.unpack_from("=I", val)[0]
                    else:
                        usec = struct.unpack_from("=I", val)[0]
    if cid is None:
        return None
    state = 0
    if state_pos is not None and state_pos in rec["values"] and len(rec["values"][state_pos]) == 4:
        st = struct.unpack("=i", rec["values"][state_pos])[0]
        state = st if 0 < st < 256 else 0
    rec.update(
        cid=cid - cid_adjust if cid >= cid_adjust else cid,
        family={1: 2, 2: AF_INET6}.get(addr_type, 0), state=state, local_port=lport,
        rem_port=rport, local_addr=np.frombuffer(local.ljust(16, b"\0"), np.uint8),
        rem_addr=np.frombuffer(remote.ljust(16, b"\0"), np.uint8), uid=0, inode=0,
        timestamp=sec * 1_000_000_000 + usec * usec_mult)
    return rec


def decode_estats(datagrams: Iterable[bytes], dtype: Any, *, cmd: int, family_id: int,
                  positions: dict[str, tuple[int, int]], widths: dict[tuple[int, int], int],
                  state_pos: tuple[int, int] | None = None, usec_mult: int = 1,
                  out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """tcp_estats replies -> rows; the reference for web10g._estats.Reader.decode."""
    dtype = np.dtype(dtype)
    recs: list[dict[str, Any]] = []
    for dgram in datagrams:
        for mtype, mflags, body in _messages(bytes(dgram)):
            if mflags & NLM_F_DUMP_INTR:
                raise errors.MalformedReply("recorded datagram: NLM_F_DUMP_INTR")
            if mtype == NLMSG_DONE:
                break
            if mtype == NLMSG_ERROR:
                if len(body) < 20 or struct.unpack_from("=i", body)[0] != 0:
                    raise errors.MalformedReply("recorded datagram: an error message")
                break
            if mtype < 16:
                continue
            rec = None
            if mtype == family_id:
                rec = estats_record(body, cmd=cmd, widths=widths, state_pos=state_pos,
                                    usec_mult=usec_mult, cid_adjust=1 if cmd == 1 else 0)
            if rec is None:
                raise errors.MalformedReply(f"recorded datagram: message {len(recs)} is "
                                            "malformed")
            recs.append(rec)
    n = len(recs)
    if out is None or len(out) < n:
        out = np.zeros(max(n, 0 if out is None else len(out)), dtype=dtype)
    for i, rec in enumerate(recs):
        row = out[i]
        for name in dtype.names:
            if name in rec:
                row[name] = rec[name]
            elif name in positions:
                raw = rec["values"].get(positions[name])
                row[name] = (np.frombuffer(raw, dtype=dtype.fields[name][0])[0]
                             if raw is not None else 0)
            else:
                row[name] = 0
    return out, n
