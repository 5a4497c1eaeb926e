"""Simulated connections and their deterministic variable values.

Value model (what :meth:`FakeKernel.expected` reports)
------------------------------------------------------
Every variable ``v`` of a flow with CID ``c`` that has seen ``t`` ticks reads

    value = wrap(base[v] + inc[v] * t)

where ``base`` comes from :func:`initial_values` (a pure function of ``c``, the variable's
(table, index) in the layout, the fake's ``seed`` and ``start_time_us``) and ``inc`` from
:data:`INCREMENTS` (0 for everything not listed; ``HCSumRTT`` advances by 5 RTT samples of
the flow's initial ``SampleRTT``).  ``wrap`` reduces to the wire type (u8/u32/u64 modulo
2**bits, s32 to a signed 32-bit int).

The five 32-bit "twins" (``DataOctetsOut``, ``DataOctetsIn``, ``SumRTT``,
``ThruOctetsAcked``, ``ThruOctetsReceived``) are never stored: they always read as the low
32 bits of their 64-bit ``HC*`` counterpart, so they stay consistent through ticks, writes
and :meth:`Flow.set`.

``set`` (FakeKernel.set_value) pins the *current* value and keeps the increment, so a
counter set to 1234 reads 1244 after one tick of +10.  Setting a twin replaces the low 32
bits of the HC counter.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from . import const as C

# 32-bit twin -> 64-bit counter it is the low half of (vars.csv descriptions).
TWINS = {
    "DataOctetsOut": "HCDataOctetsOut",
    "DataOctetsIn": "HCDataOctetsIn",
    "SumRTT": "HCSumRTT",
    "ThruOctetsAcked": "HCThruOctetsAcked",
    "ThruOctetsReceived": "HCThruOctetsReceived",
}

MSS = 1448                   # CurMSS of every flow (1460 minus 12 bytes of timestamps)
SEG_OUT_PER_TICK = 10        # one tick = one second of a modest bulk sender
OCTETS_OUT_PER_TICK = SEG_OUT_PER_TICK * MSS          # 14480
SEG_IN_PER_TICK = 5
OCTETS_IN_PER_TICK = 2 * MSS                          # 2896 (two data segments in)
RTT_SAMPLES_PER_TICK = 5

# Per-tick increments.  Sequence numbers move with the acknowledged/received octets so
# SndUna - SndInitial - 1 == ThruOctetsAcked (mod 2**32) holds at every tick.
INCREMENTS: dict[str, int] = {
    "SegsOut": SEG_OUT_PER_TICK,
    "DataSegsOut": SEG_OUT_PER_TICK,
    "HCDataOctetsOut": OCTETS_OUT_PER_TICK,
    "SegsIn": SEG_IN_PER_TICK,
    "DataSegsIn": 2,
    "HCDataOctetsIn": OCTETS_IN_PER_TICK,
    "ElapsedSecs": 1,
    "SndLimTimeSnd": 400_000,        # µs: 0.4 s + 0.6 s = the whole 1 s tick
    "SndLimTimeCwnd": 600_000,
    "CountRTT": RTT_SAMPLES_PER_TICK,
    "CongAvoid": 5,
    "SndUna": OCTETS_OUT_PER_TICK,
    "SndNxt": OCTETS_OUT_PER_TICK,
    "SndMax": OCTETS_OUT_PER_TICK,
    "HCThruOctetsAcked": OCTETS_OUT_PER_TICK,
    "RcvNxt": OCTETS_IN_PER_TICK,
    "HCThruOctetsReceived": OCTETS_IN_PER_TICK,
    # "HCSumRTT": RTT_SAMPLES_PER_TICK * SampleRTT, set per flow in Flow.__init__
}

_BITS = {"u8": 8, "u16": 16, "u32": 32, "u64": 64}


def wrap(wire: str, value: int) -> int:
    """Reduce ``value`` to what the wire type can carry (s32 stays signed)."""
    if wire == "s32":
        return ((value + 2**31) % 2**32) - 2**31
    return value % (1 << _BITS[wire])


def check_range(wire: str, value: int) -> int:
    """Validate a value a test wants to set; s32 accepts its unsigned spelling too."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"value must be int, not {type(value).__name__}")
    if wire == "s32":
        if not -2**31 <= value < 2**32:
            raise ValueError(f"{value} does not fit s32")
        return wrap("s32", value)
    if not 0 <= value < (1 << _BITS[wire]):
        raise ValueError(f"{value} does not fit {wire}")
    return value


def _isn(cid: int, seed: int, salt: int) -> int:
    """A fixed pseudo-random initial sequence number (Knuth multiplicative hash)."""
    return ((2 * cid + salt) * 2654435761 + seed * 0x9E3779B9) & 0xFFFFFFFF


def initial_values(layout, cid: int, *, seed: int, start_time_us: int) -> dict[str, int]:
    """Base values (tick 0) of every variable of ``layout`` for CID ``cid``.

    Realistic where it matters to a client (MSS, enumerations, sequence numbers, the
    infinite-ssthresh quirk, -1 window scales), a plain ``1000*cid + 100*table + index``
    elsewhere, so every value is distinct and computable.
    """
    c = cid
    wscale = -1 if c % 3 == 0 else 7                  # every third flow: no window scaling
    rtt = 40 + c % 20
    hc_out = 1_000_000_007 * c                        # > 2**32 from CID 5 on: u64 matters
    hc_in = 289_600 * c
    octets_retrans = MSS * c
    pipe = 10 * MSS
    thru_acked = hc_out - octets_retrans - pipe
    snd_isn = _isn(c, seed, 0)
    rcv_isn = _isn(c, seed, 1)
    snd_una = (snd_isn + 1 + thru_acked) & 0xFFFFFFFF
    tos_in = (4 * c) & 0xFC
    known: dict[str, int] = {
        # perf
        "SegsOut": 1000 * c, "DataSegsOut": 900 * c, "HCDataOctetsOut": hc_out,
        "SegsRetrans": c, "OctetsRetrans": octets_retrans,
        "SegsIn": 500 * c, "DataSegsIn": 200 * c, "HCDataOctetsIn": hc_in,
        "ElapsedSecs": c, "ElapsedMicroSecs": (c * 123_457) % 1_000_000,
        "StartTimeStamp": start_time_us + 1000 * c,    # µs since the epoch (§7.6)
        "CurMSS": MSS, "PipeSize": pipe, "MaxPipeSize": 2 * pipe,
        "SmoothedRTT": rtt, "CurRTO": 200 + rtt, "CongSignals": c % 4,
        "CurCwnd": 10 * MSS,
        # odd CIDs: ssthresh still "infinite" -> (0x7FFFFFFF * MSS) mod 2**32 (§7.6)
        "CurSsthresh": (0x7FFFFFFF * MSS) & 0xFFFFFFFF if c % 2 else 20 * MSS,
        "Timeouts": c % 3, "CurRwinSent": 64 * 1024, "MaxRwinSent": 128 * 1024,
        "ZeroRwinSent": 0, "CurRwinRcvd": 256 * 1024, "MaxRwinRcvd": 512 * 1024,
        "ZeroRwinRcvd": 0,
        "SndLimTransSnd": c, "SndLimTransCwnd": 2 * c, "SndLimTransRwin": 0,
        "SndLimTransStartup": 1, "SndLimTransTSODefer": 3 * c, "SndLimTransPace": 0,
        "SndLimTimeSnd": 400_000 * c, "SndLimTimeCwnd": 600_000 * c, "SndLimTimeRwin": 0,
        "SndLimTimeStartup": 1000, "SndLimTimeTSODefer": 10 * c, "SndLimTimePace": 0,
        "LostRetransmitSegs": c % 2,
        # path
        "RetranThresh": 3, "NonRecovDAEpisodes": c % 5, "SumOctetsReordered": 0,
        "NonRecovDA": 2 * (c % 5), "SampleRTT": rtt, "RTTVar": 10,
        "MaxRTT": 100 + c % 50, "MinRTT": 30 + c % 10,
        "HCSumRTT": 10 * c * rtt, "CountRTT": 10 * c,
        "MaxRTO": 300 + c % 50, "MinRTO": 200,
        # IpTtl quirk (§7.6): 4 bytes copied from an 8-bit field -> TTL + 256 * TOS byte
        "IpTtl": 64 + 256 * tos_in, "IpTosIn": tos_in, "IpTosOut": (8 * c) & 0xFC,
        "ECNsignals": 0, "DupAckEpisodes": c % 7, "RcvRTT": 50_000 + c, "CERcvd": 0,
        "ECESent": 0,
        # stack
        "ActiveOpen": 1 if c % 2 else 2, "MSSSent": 1460, "MSSRcvd": 1460,
        "WinScaleSent": wscale, "WinScaleRcvd": -1 if wscale < 0 else 9,
        "TimeStamps": 1, "ECN": 1 if c % 4 == 1 else 2, "WillSendSACK": 1,
        "WillUseSACK": 1, "State": 5, "Nagle": 2 if c % 4 == 0 else 1,
        "MaxSsCwnd": 20 * MSS, "MaxCaCwnd": 30 * MSS, "MaxSsthresh": 20 * MSS,
        "MinSsthresh": 0xFFFFFFFF if c % 2 else 20 * MSS, "InRecovery": 2,
        "DupAcksIn": c % 11, "SpuriousFrDetected": 0, "SpuriousRtoDetected": 0,
        "SoftErrors": c % 9, "SoftErrorReason": c % 9,   # enum 0..8, 0 = none yet
        "SlowStart": 10 + c, "CongAvoid": 5 * c, "CongOverCount": 0, "FastRetran": c % 4,
        "SubsequentTimeouts": 0, "CurTimeoutCount": 0, "AbruptTimeouts": 0,
        "SendStall": 0, "DSACKDups": 0, "MaxMSS": MSS, "MinMSS": MSS,
        "SndInitial": snd_isn, "RecInitial": rcv_isn, "CurReasmQueue": 0,
        "MaxReasmQueue": MSS * (c % 3), "EarlyRetrans": 0, "EarlyRetransDelay": 0,
        "RackTimeout": c % 2, "OtherReductions": c % 5,
        # app
        "SndUna": snd_una, "SndNxt": (snd_una + pipe) & 0xFFFFFFFF,
        "SndMax": (snd_una + pipe) & 0xFFFFFFFF,
        "HCThruOctetsAcked": thru_acked,
        "RcvNxt": (rcv_isn + 1 + hc_in) & 0xFFFFFFFF, "HCThruOctetsReceived": hc_in,
        "CurAppWQueue": 0, "MaxAppWQueue": 65536, "CurAppRQueue": 0,
        "MaxAppRQueue": 1000 * c,
        # tune: clamps as the module reports them (§5.5)
        "LimCwnd": (65535 * MSS) & 0xFFFFFFFF,
        "LimRwin": 65535 << max(wscale, 0),
        # LimMSS quirk (§7.6): high 16 bits are unrelated adjacent data
        "LimMSS": 1460 | ((c & 0xFF) << 16),
        # extras
        "Priority": c % 8, "OtherReductionsCM": c % 5,
    }
    out = {}
    for t, table in enumerate(layout.tables):
        for i, var in enumerate(table):
            if var.name in TWINS:
                continue                       # derived from the HC counter
            if var.name in known:
                v = known[var.name]
            elif var.wire == "u8":
                v = (c + i) & 0xFF
            elif var.wire == "s32":
                v = 0
            else:
                v = 1000 * c + 100 * t + i + seed
            out[var.name] = wrap(var.wire, v)
    return out


def parse_endpoint(ep) -> tuple[int, bytes, int, str]:
    """("10.0.0.1", 22) -> (addr type, 16 address bytes, port, canonical address)."""
    host, port = ep
    addr = ipaddress.ip_address(host)
    if not 0 <= int(port) <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    if addr.version == 4:
        return C.ADDR_TYPE_IPV4, addr.packed + bytes(12), int(port), str(addr)
    return C.ADDR_TYPE_IPV6, addr.packed, int(port), str(addr)


OWNERS = ("self", "group", "other")


@dataclass
class Flow:
    """One established connection in the fake CID table.

    ``owner``: "self" = the client's uid (read + write), "group" = same primary gid only
    (read, but writes get EACCES, §10), "other" = neither (READ_VARS/WRITE_VAR EACCES,
    skipped by READ_ALL).  ``activity`` is the last send/receive time on the fake jiffies
    clock; ``idle`` flows do not advance on tick().
    """

    cid: int
    local: tuple[str, int]
    remote: tuple[str, int]
    addr_type: int
    local_addr: bytes
    rem_addr: bytes
    owner: str
    created: int
    activity: int
    base: dict[str, int]
    inc: dict[str, int]
    wires: dict[str, str] = field(repr=False, default_factory=dict)
    ticks: int = 0
    idle: bool = False

    @property
    def ipv6(self) -> bool:
        return self.addr_type == C.ADDR_TYPE_IPV6

    @property
    def readable(self) -> bool:
        return self.owner in ("self", "group")

    @property
    def writable(self) -> bool:
        return self.owner == "self"

    def value(self, name: str) -> int:
        if name in TWINS:
            return self.value(TWINS[name]) & 0xFFFFFFFF
        return wrap(self.wires[name], self.base[name] + self.inc.get(name, 0) * self.ticks)

    def set(self, name: str, value: int) -> None:
        """Make ``name`` read ``value`` now (counters keep advancing from there)."""
        value = check_range(self.wires[name], value)
        if name in TWINS:
            hc = TWINS[name]
            self.set(hc, (self.value(hc) & ~0xFFFFFFFF) | value)
            return
        self.base[name] = value - self.inc.get(name, 0) * self.ticks

    def values(self) -> dict[str, int]:
        return {name: self.value(name) for name in self.wires}
