"""web10g.filter: parser, compiler and Python evaluator, checked against the running kernel.

The central check: for a filter, the cookies the kernel returns from a dump carrying the
compiled bytecode equal the cookies to_python() selects from an unfiltered dump of the same
sockets, and the cookies mask() (the vectorised evaluator that filters where the kernel
cannot: estats, replays, destroy notifications) selects from those rows as an identity
array (restricted to this module's own loopback sockets, identified by SO_COOKIE).
"""
from __future__ import annotations

import operator
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from web10g import filter as F
from web10g import mib
from web10g._netlink import NetlinkSocket
from web10g.filter import (
    FilterError,
    compile,
    dport,
    dst,
    parse,
    request_attr,
    sport,
    src,
    to_python,
)

NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, SO_COOKIE = 4, 20, 57
Row = tuple[int, bytes, int, bytes, int]  # family, laddr16, lport, raddr16, rport


def _cookie(s: socket.socket) -> int:
    return struct.unpack("=Q", s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]


def _dump(nl: NetlinkSocket, attr: bytes) -> dict[int, Row]:
    """Both families, all classic states; cookie -> row as inet_diag_msg reports it."""
    out: dict[int, Row] = {}
    for fam in (socket.AF_INET, socket.AF_INET6):
        req = struct.pack("=BBBxI", fam, socket.IPPROTO_TCP, 0, 0xFFF) + bytes(48)
        for m in nl.request(SOCK_DIAG_BY_FAMILY, 0, req + attr, dump=True):
            sp, dp = struct.unpack_from(">HH", m, 20)
            out[struct.unpack_from("=Q", m, 60)[0]] = (m[16], m[24:40], sp, m[40:56], dp)
    return out


@dataclass
class Flows:
    nl: NetlinkSocket
    rows: dict[int, Row]  # this module's sockets only
    ports: list[int]
    lports: dict[str, int]  # listener ports by name
    mapped: int             # cookie of the AF_INET6 socket carrying ::ffff:127.0.0.x addresses

    def kernel(self, spec: object) -> set[int]:
        return set(_dump(self.nl, request_attr(spec))) & set(self.rows)

    def python(self, spec: object) -> set[int]:
        pred = to_python(spec)
        return {c for c, r in self.rows.items() if pred(*r)}

    def numpy(self, spec: object) -> set[int]:
        table = identity_rows(list(self.rows.values()))
        keep = F.mask(spec, table)
        assert keep.dtype == np.bool_ and keep.shape == (len(table),)
        return {c for c, k in zip(self.rows, keep.tolist()) if k}


def identity_rows(rows: list[Row]) -> np.ndarray:
    """The rows as the identity columns every backend's array carries (mask()'s input)."""
    out = np.zeros(len(rows), dtype=mib.dtype([], identity=True))
    for i, (fam, la, lp, ra, rp) in enumerate(rows):
        out[i]["family"], out[i]["local_port"], out[i]["rem_port"] = fam, lp, rp
        out[i]["local_addr"] = np.frombuffer(la, np.uint8)
        out[i]["rem_addr"] = np.frombuffer(ra, np.uint8)
    return out


@pytest.fixture(scope="module")
def flows() -> Iterator[Flows]:
    socks: list[socket.socket] = []

    def listen(fam: int, addr: str, dual: bool = False) -> socket.socket:
        s = socket.socket(fam, socket.SOCK_STREAM)
        if dual:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind((addr, 0))
        s.listen(16)
        socks.append(s)
        return s

    def connect(lst: socket.socket, fam: int, frm: str, to: str) -> socket.socket:
        c = socket.socket(fam, socket.SOCK_STREAM)
        c.bind((frm, 0))
        c.connect((to, lst.getsockname()[1]))
        a, _ = lst.accept()
        socks.extend((c, a))
        return a

    v4a = listen(socket.AF_INET, "127.0.0.1")
    v4b = listen(socket.AF_INET, "127.0.0.2")
    v6 = listen(socket.AF_INET6, "::1")
    dual = listen(socket.AF_INET6, "::", dual=True)
    for frm in ("127.0.0.2", "127.0.0.2", "127.0.0.1"):
        connect(v4a, socket.AF_INET, frm, "127.0.0.1")
    connect(v4b, socket.AF_INET, "127.0.0.1", "127.0.0.2")
    for _ in range(2):
        connect(v6, socket.AF_INET6, "::1", "::1")
    mapped = connect(dual, socket.AF_INET, "127.0.0.2", "127.0.0.1")  # IPv4 into a v6 socket
    connect(dual, socket.AF_INET6, "::1", "::1")
    nl = NetlinkSocket(NETLINK_SOCK_DIAG)
    try:
        mine = {_cookie(s) for s in socks}
        rows = {c: r for c, r in _dump(nl, b"").items() if c in mine}
        assert set(rows) == mine, "every test socket must show up in the unfiltered dump"
        ports = sorted({r[2] for r in rows.values()} | {r[4] for r in rows.values()} - {0})
        lports = {n: s.getsockname()[1] for n, s in
                  (("v4a", v4a), ("v4b", v4b), ("v6", v6), ("dual", dual))}
        yield Flows(nl, rows, ports, lports, _cookie(mapped))
    finally:
        nl.close()
        for s in socks:
            s.close()


# ------------------------------------------------------------ bytes of the spec's examples

def op(code: int, yes: int, no: int) -> bytes:
    return struct.pack("=BBH", code, yes, no)


def test_worked_examples_compile_to_documented_bytes() -> None:
    P = 5201
    port = op(0, 0, P)
    either = op(11, 8, 12) + port + op(1, 4, 12) + op(12, 8, 12) + port
    assert compile(sport(P) | dport(P)) == either
    assert compile(f"sport = :{P} or dport = :{P}") == either
    # The portable equality (S_GE + S_LE) is what a one-port range compiles to.
    assert compile(sport(range(P, P + 1))) == op(2, 8, 20) + port + op(3, 8, 12) + port
    assert compile("dst 10.0.0.0/8") == op(8, 16, 20) + struct.pack("=BBxxi", 2, 8, -1) + \
        bytes([10, 0, 0, 0])


def test_match_all_and_attribute_framing() -> None:
    assert compile(None) == b"" and request_attr(None) == b""
    assert to_python(None)(2, bytes(16), 1, bytes(16), 2) is True
    bc = compile("src [::1]:443")
    attr = request_attr("src [::1]:443")
    assert attr == struct.pack("=HH", 4 + len(bc), F.INET_DIAG_REQ_BYTECODE) + bc
    assert len(bc) == 4 + 8 + 16  # IPv6 host condition op size from the spec


# ------------------------------------------------------------ the kernel agrees

def hand_written(f: Flows) -> list[object]:
    p0, pm = f.ports[0], f.ports[len(f.ports) // 2]
    a, b, v6, dual = (f.lports[n] for n in ("v4a", "v4b", "v6", "dual"))
    client = next(r[2] for r in f.rows.values() if r[4] == a)  # a client of listener v4a
    return [
        f"dport = :{pm} or sport = :{pm}", f"sport = :{client} dport = :{a}", "dst 127.0.0.0/8",
        "src 127.0.0.2", "dst 127.0.0.2", "src ::ffff:127.0.0.1", "dst [::ffff:127.0.0.2]",
        "src [::1] and dport != :22", "src 0.0.0.0/0", "dst ::/0", "src ::/0 and not dst ::/0",
        f"not (sport >= :{p0} and sport <= :{pm})", f"sport < :{pm} || dport > :{pm}",
        f"src 127.0.0.1:{a}", f"dst *:{b}", f"src :{dual} or dst [::1]:{v6}", "src *",
        f"!(src 127.0.0.2/31) & (dport eq {pm} | sport ge {pm})", "src 127.0.0.3",
        sport(range(p0, pm + 1)) & ~dst("::1"), dport("!=", 0), sport("<", 0) | src("::2"),
        src("127.0.0.2", port=b) | dst("::ffff:127.0.0.0/104"), f"sport = :{v6} and dst ::1",
    ]


def test_kernel_matches_python_on_hand_written_filters(flows: Flows) -> None:
    nonempty = 0
    for spec in hand_written(flows):
        got, want = flows.kernel(spec), flows.python(spec)
        assert got == want, spec
        assert flows.numpy(spec) == want, spec
        nonempty += 0 < len(want) < len(flows.rows)
    assert nonempty >= 18  # the filters really discriminate between the test sockets


def test_ipv4_conditions_match_ipv4_mapped_sockets(flows: Flows) -> None:
    fam, la, _, ra, _ = flows.rows[flows.mapped]
    assert fam == socket.AF_INET6 and ra == bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 2])
    for spec in ("dst 127.0.0.2", "dst 127.0.0.0/8", "src 0.0.0.0/0", "dst ::ffff:127.0.0.2"):
        assert flows.mapped in flows.kernel(spec) and flows.mapped in flows.python(spec)
        assert flows.mapped in flows.numpy(spec)
    v4 = {c for c, r in flows.rows.items() if r[0] == socket.AF_INET}
    # An IPv6 condition never matches an AF_INET socket; an IPv4 one never a native v6 one.
    assert flows.kernel("src ::/0").isdisjoint(v4)
    assert flows.kernel("src 0.0.0.0/0") == v4 | {flows.mapped} == flows.numpy("src 0.0.0.0/0")
    assert flows.numpy("src ::/0").isdisjoint(v4)


def test_large_program_is_accepted(flows: Flows) -> None:
    many = [p for p in range(1, 4000) if p not in flows.ports] + [flows.ports[0]]
    expr = F.Or(tuple(sport(p) for p in many))
    assert 40000 < len(compile(expr)) < F.MAX_BYTECODE
    assert flows.kernel(expr) == flows.python(expr) == flows.numpy(expr) != set()
    text = " or ".join(f"sport = :{p}" for p in many)  # a long chain: no deep recursion
    assert compile(text) == compile(expr) and to_python(text)(2, bytes(16), 1, bytes(16), 0)
    with pytest.raises(FilterError, match="too large"):
        compile(F.Or(tuple(dport(p) for p in range(6000))))


OPS = ["==", "!=", "<", "<=", ">", ">="]


def exprs(ports: list[int]) -> st.SearchStrategy[F.Expr]:
    """Random filters over the given ports and loopback-ish prefixes of every length."""
    port = st.one_of(st.sampled_from(ports), st.integers(0, 65535))
    v4 = st.builds("{}/{}".format, st.sampled_from(["127.0.0.1", "127.0.0.2", "10.0.0.0"]),
                   st.integers(0, 32))
    v6 = st.builds("{}/{}".format, st.sampled_from(["::1", "::", "::ffff:127.0.0.2"]),
                   st.integers(0, 128))
    leaf = st.one_of(
        st.builds(lambda f, o, p: f(o, p), st.sampled_from([sport, dport]),
                  st.sampled_from(OPS), port),
        st.builds(lambda f, a, p: f(a, p), st.sampled_from([src, dst]),
                  st.one_of(v4, v6, st.just("*")), st.none() | port),
    )
    return st.recursive(leaf, lambda c: st.one_of(
        st.builds(operator.and_, c, c), st.builds(operator.or_, c, c),
        st.builds(operator.invert, c)), max_leaves=8)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_kernel_matches_python_generated(flows: Flows, data: st.DataObject) -> None:
    expr = data.draw(exprs(flows.ports))
    kernel = flows.kernel(expr)                      # also: the kernel accepted it
    assert kernel == flows.python(expr)
    assert kernel == flows.numpy(expr)               # the client-side evaluator agrees too
    assert parse(repr(expr)) == expr


# ------------------------------------------------------------ offline model of the kernel

ADDR_LEN = {socket.AF_UNSPEC: 0, socket.AF_INET: 4, socket.AF_INET6: 16}


def kernel_model(bc: bytes, row: Row) -> bool:
    """inet_diag_bc_audit + inet_diag_bc_run as spec §1.3 describes them."""
    n, off, chain = len(bc), 0, set()
    while off < n:  # audit: follow the yes chain
        code, yes, no = struct.unpack_from("=BBH", bc, off)
        size = 12 + ADDR_LEN[bc[off + 4]] if code in (7, 8) else 4 if code == 1 else 8
        assert yes % 4 == 0 and size <= yes <= n - off + 4 and no % 4 == 0
        assert size <= no <= n - off + 4
        chain.add(off)
        off += yes
    assert off == n
    fam, la, lp, ra, rp = row
    off = 0
    while off < n:
        code, yes, no = struct.unpack_from("=BBH", bc, off)
        assert off + no >= n or off + no in chain
        if code == 1:
            ok = False
        elif code in (7, 8):
            cfam, plen, port = struct.unpack_from("=BBxxi", bc, off + 4)
            addr, want = (la, lp) if code == 7 else (ra, rp)
            a = bc[off + 12:off + 12 + ADDR_LEN[cfam]]
            bits = lambda b, k: int.from_bytes(b, "big") >> (len(b) * 8 - k)  # noqa: E731
            if port != -1 and port != want:
                ok = False
            elif cfam and cfam != fam:
                ok = (cfam, fam) == (2, 10) and addr[:12] == bytes(10) + b"\xff\xff" and \
                    bits(addr[12:16], plen) == bits(a, plen)
            else:
                ok = bits(addr[:len(a)], plen) == bits(a, plen)
        else:
            v = lp if code in (2, 3, 11) else rp
            arg = struct.unpack_from("=H", bc, off + 6)[0]
            ok = {2: v >= arg, 4: v >= arg, 3: v <= arg, 5: v <= arg}.get(code, v == arg)
        off += yes if ok else no
    return off == n


rows = st.tuples(
    st.sampled_from([socket.AF_INET, socket.AF_INET6]),
    st.sampled_from([bytes(16), b"\x7f\0\0\x01" + bytes(12), bytes(15) + b"\x01",
                     bytes(10) + b"\xff\xff\x7f\0\0\x02", bytes([10, 1, 2, 3]) + bytes(12)]),
    st.sampled_from([0, 1, 22, 80, 1023, 1024, 65535]) | st.integers(0, 65535),
    st.sampled_from([bytes(16), bytes(10) + b"\xff\xff\x7f\0\0\x01", bytes(15) + b"\x01"]),
    st.sampled_from([0, 22, 80, 443, 65535]) | st.integers(0, 65535),
)


@settings(max_examples=300, deadline=None)
@given(expr=exprs([0, 22, 80, 1024, 65535]), row=rows)
def test_bytecode_model_matches_python(expr: F.Expr, row: Row) -> None:
    want = kernel_model(compile(expr), row)
    assert want == to_python(expr)(*row)
    assert F.mask(expr, identity_rows([row])).tolist() == [want]


# ------------------------------------------------------------ parsing


def test_parse_forms() -> None:
    assert parse("dport = :5201 or sport = :22") == dport(5201) | sport(22)
    assert parse("dst 10.0.0.0/8") == dst("10.0.0.0/8")
    assert parse("not (sport >= :1024 and sport <= :2048)") == ~(sport(">=", 1024) &
                                                                sport("<=", 2048))
    assert parse("src [::1] and dport != :22") == src("::1") & dport("!=", 22)
    assert parse("sport = :22 dport = :80") == sport(22) & dport(80)  # juxtaposition
    assert parse("SPORT EQ 22 || ! dst == 10.0.0.1 && dport gt 5") == \
        sport(22) | (~dst("10.0.0.1") & dport(">", 5))  # not > and > or
    assert parse("sport neq 1 & dport lt 2 | src = 1.2.3.4:5") == \
        (sport("!=", 1) & dport("<", 2)) | src("1.2.3.4", 5)
    assert parse("src 10.0.0.1") == src("10.0.0.1/32") and repr(src("10.0.0.9/31")) == \
        "src 10.0.0.8/31"
    assert parse("dst [2001:db8::1]:443") == dst("2001:db8::1", 443) == dst("[2001:db8::1]:443")
    assert parse("src *:80") == parse("src :80") == src("*", 80) == src(None, 80)
    assert parse("src [2001:db8::]/32:80") == parse("src [2001:db8::/32]:80") == \
        src("2001:db8::/32", 80)
    assert sport(22) == sport("==", 22) and sport(range(1000, 2000)) == \
        sport(">=", 1000) & sport("<=", 1999)
    assert (sport(1) & sport(2)) & sport(3) == sport(1) & (sport(2) & sport(3)) == \
        parse("sport = 1 and (sport = 2 and sport = 3)")
    assert parse("(sport = 1 or sport = 2) || sport = 3") == sport(1) | (sport(2) | sport(3))
    assert parse("sport = 1 and (sport = 2 or sport = 3)") != parse("sport = 1 and sport = 2 "
                                                                    "or sport = 3")
    assert repr(~(sport(1) | dst("::1", 2)) & src("10.0.0.0/8")) == \
        "not (sport = :1 or dst [::1]:2) and src 10.0.0.0/8"


@pytest.mark.parametrize("text, position, reason", [
    ("", 0, "empty filter"),
    ("   ", 0, "empty filter"),
    ("dport = foo", 8, "expected a port after 'dport ='"),
    ("sport = :70000", 9, "port 70000 out of range"),
    ("sport > -1", 8, "port -1 out of range"),
    ("sport :22", 6, "expected a comparison operator after 'sport'"),
    ("sport = :22 foo", 12, "unknown keyword 'foo'"),
    ("sport = :22 and", 15, "expected a condition after 'and'"),
    ("sport = :1 or or", 14, "expected a condition, got 'or'"),
    ("(sport = :22", 0, "unclosed '('"),
    ("sport = :1 (dport = :2", 11, "unclosed '('"),
    ("sport = :22)", 11, "unbalanced ')'"),
    ("(sport = :22 :5)", 13, "expected ')' or an operator"),
    ("()", 1, "expected a condition, got ')'"),
    ("src", 3, "expected an address after 'src'"),
    ("dst 300.1.1.1", 4, "invalid address '300.1.1.1'"),
    ("src 10.0.0.0/33", 13, "invalid prefix length /33"),
    ("src ::1/129", 8, "invalid prefix length /129"),
    ("src [::1", 8, "missing ']'"),
    ("src [::1]/200", 10, "invalid prefix length /200"),
    ("src [::1/200]:1", 9, "invalid prefix length /200"),
    ("src [::1]x", 9, "unexpected 'x' after address"),
    ("src 1.2.3.4:x", 12, "invalid port 'x'"),
    ("dst [::1]:99999", 10, "port 99999 out of range"),
    ("src fe80::1%lo", 4, "scoped IPv6"),
    ("sport = :1 && ", 14, "expected a condition after '&&'"),
])
def test_parse_errors(text: str, position: int, reason: str) -> None:
    with pytest.raises(FilterError) as ei:
        parse(text)
    e = ei.value
    assert (e.text, e.position) == (text, position) and e.reason.startswith(reason)
    assert isinstance(e, ValueError)
    assert str(e).splitlines()[-1] == "  " + " " * position + "^"


def test_error_message_layout() -> None:
    with pytest.raises(FilterError) as ei:
        compile("dport = foo")
    assert str(ei.value) == ("invalid filter: expected a port after 'dport =' at position 8\n"
                             "  dport = foo\n"
                             "          ^")


@pytest.mark.parametrize("make", [
    lambda: sport(70000), lambda: dport("<", -1), lambda: sport("~", 1), lambda: sport(True),
    lambda: sport(range(5, 5)), lambda: sport(range(0, 10, 2)), lambda: sport(range(1, 70000)),
    lambda: src("10.0.0.0/33"), lambda: dst("10.0.0.1:80", port=80), lambda: src("nope"),
    lambda: dst("::1", port=65536),
])
def test_structured_errors(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FilterError) as ei:
        make()
    assert ei.value.text is None and ei.value.position is None
    assert str(ei.value).startswith("invalid filter: ")


@pytest.mark.parametrize("text", ["dst 0.3.0.30/\u00b9", "src 10.0.0.0/\u00b2\u2074",
                                  "sport = :\u0663", "dport >= :1\u0662"])
def test_digits_of_other_scripts_are_refused_cleanly(text: str) -> None:
    """str.isdigit() and \\d accept '¹' and Arabic-Indic digits; int() refuses the first
    (the fuzzer's ValueError) and reads the second. Both are FilterErrors here."""
    with pytest.raises(FilterError):
        F.compile(text)
