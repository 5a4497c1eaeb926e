"""Kernel-side socket filters: an ``ss``-style language compiled to inet_diag bytecode.

A filter (text for :func:`parse`, or built from :func:`sport`, :func:`dport`, :func:`src`,
:func:`dst` with ``& | ~``) becomes an expression tree. :func:`compile` turns it into the
program the kernel runs on every socket of a sock_diag dump (``INET_DIAG_REQ_BYTECODE``), so
rejected sockets never cost ``tcp_info`` or message space. :func:`to_python` evaluates the
tree with the kernel's semantics (replay backend, tests).

Bytecode (spec stock-kernel-mapping.md §1.3; net/ipv4/inet_diag.c): ops are
``{u8 code; u8 yes; u16 no}`` in host order plus an operand; true advances ``yes`` bytes,
false ``no``; a socket is accepted iff execution ends exactly at the end. The kernel's audit
follows only the ``yes`` chain, so here every ``yes`` is the op's own size: every op is then
on that chain and any ``no`` target is a valid boundary. A true outcome that must go
elsewhere goes through an unconditional JMP placed right after the op.
"""
from __future__ import annotations

import ipaddress
import operator
import re
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from web10g.errors import FilterError

__all__ = [
    "FilterError", "Expr", "sport", "dport", "src", "dst", "parse", "compile", "to_python",
    "request_attr", "INET_DIAG_REQ_BYTECODE",
]

INET_DIAG_REQ_BYTECODE = 1
# Op codes (include/uapi/linux/inet_diag.h).
_JMP, _S_GE, _S_LE, _D_GE, _D_LE, _S_COND, _D_COND, _S_EQ, _D_EQ = 1, 2, 3, 4, 5, 7, 8, 11, 12
# The attribute is {u16 nla_len, u16 type} + program and `no` is a u16 that may reach
# len + 4, so the program must stay below 65535 - 4 bytes.
MAX_BYTECODE = 65535 - 4 - 1
# Nesting limit: levels of '(' and 'not' in text, and the depth of an expression tree
# however it was built. The parser, compile(), to_python() and mask() recurse once or a
# few times per level, so this keeps them far below Python's recursion limit (1000); a
# deeper filter is a FilterError, never a RecursionError. ss itself nests far less.
MAX_DEPTH = 100
_V4MAPPED = b"\0" * 10 + b"\xff\xff"

Pred = Callable[[int, bytes, int, bytes, int], bool]  # (family, laddr16, lport, raddr16, rport)
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


# ---------------------------------------------------------------- expression tree

class Expr:
    """A filter expression. Combine with ``a & b``, ``a | b``, ``~a``; repr is ss-style."""

    __slots__ = ()

    def __and__(self, other: object) -> Expr:
        return _combine(And, self, other)

    def __or__(self, other: object) -> Expr:
        return _combine(Or, self, other)

    def __invert__(self) -> Expr:
        return Not(self)

    def __repr__(self) -> str:
        return _text(self, 0)


@dataclass(frozen=True, repr=False)
class Port(Expr):
    side: str  # "s" (local) or "d" (remote)
    op: str    # one of == != < <= > >=
    port: int


@dataclass(frozen=True, repr=False)
class Host(Expr):
    side: str
    net: Net | None  # None: any address (AF_UNSPEC)
    port: int | None


def _too_deep() -> FilterError:
    return FilterError(f"filter nested too deeply (more than {MAX_DEPTH} levels of "
                       "parentheses, 'not' or alternating 'and'/'or'); simplify it: "
                       "'not not x' is x, and a chain of 'and' or of 'or' needs no "
                       "parentheses")


def depth(e: Expr) -> int:
    """Nesting depth of an expression tree (0 for a single condition)."""
    return int(getattr(e, "_depth", 0))


def _set_depth(node: Expr, children: tuple[Expr, ...]) -> None:
    # Every tree is built bottom up through these constructors, so a tree deeper than
    # MAX_DEPTH can never exist: compile, to_python, mask and repr need no check of their own.
    d = 1 + max((depth(c) for c in children), default=0)
    if d > MAX_DEPTH:
        raise _too_deep()
    object.__setattr__(node, "_depth", d)


@dataclass(frozen=True, repr=False)
class And(Expr):
    items: tuple[Expr, ...]

    def __post_init__(self) -> None:
        _set_depth(self, self.items)


@dataclass(frozen=True, repr=False)
class Or(Expr):
    items: tuple[Expr, ...]

    def __post_init__(self) -> None:
        _set_depth(self, self.items)


@dataclass(frozen=True, repr=False)
class Not(Expr):
    item: Expr

    def __post_init__(self) -> None:
        _set_depth(self, (self.item,))


def _flat(kind: type[And] | type[Or], items: list[Expr] | tuple[Expr, ...]) -> Expr:
    # n-ary, flattened nodes: (a & b) & c == a & (b & c) == parse("a and (b and c)"), and a
    # chain of thousands of ports does not become deep recursion in compile/to_python.
    out: list[Expr] = []
    for e in items:
        out.extend(e.items if isinstance(e, kind) else (e,))
    return out[0] if len(out) == 1 else kind(tuple(out))


def _combine(kind: type[And] | type[Or], a: Expr, b: object) -> Expr:
    if not isinstance(b, Expr):
        return NotImplemented
    return _flat(kind, (a, b))


def _text(e: Expr, prec: int) -> str:
    """ss-style text; prec is the binding strength the context needs (0 or, 1 and, 2 not)."""
    if isinstance(e, Port):
        return f"{'sport' if e.side == 's' else 'dport'} {'=' if e.op == '==' else e.op} :{e.port}"
    if isinstance(e, Host):
        return f"{'src' if e.side == 's' else 'dst'} {_host_text(e.net, e.port)}"
    if isinstance(e, Not):
        return "not " + _text(e.item, 2)
    assert isinstance(e, (And, Or))
    mine = 1 if isinstance(e, And) else 0
    s = (" and " if mine else " or ").join(_text(i, mine + 1) for i in e.items)
    return f"({s})" if prec > mine else s


def _host_text(net: Net | None, port: int | None) -> str:
    if net is None:
        return "*" if port is None else f"*:{port}"
    a = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
    if port is None:
        return a
    return f"[{a}]:{port}" if net.version == 6 else f"{a}:{port}"


# ---------------------------------------------------------------- structured constructors

_OPS = {"=": "==", "==": "==", "eq": "==", "!=": "!=", "neq": "!=", "ne": "!=",
        "<": "<", "lt": "<", "<=": "<=", "le": "<=", ">": ">", "gt": ">", ">=": ">=", "ge": ">="}


def _port_value(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise FilterError(f"port must be an int, not {type(v).__name__}")
    if not 0 <= v <= 65535:
        raise FilterError(f"port {v} out of range 0..65535")
    return v


def _port_expr(side: str, op_or_value: object, value: object) -> Expr:
    if value is None:
        if isinstance(op_or_value, range):
            r = op_or_value
            if r.step != 1 or len(r) == 0:
                raise FilterError(f"port range must be non-empty with step 1, not {r!r}")
            lo, hi = _port_value(r.start), _port_value(r.stop - 1)
            return And((Port(side, ">=", lo), Port(side, "<=", hi)))
        return Port(side, "==", _port_value(op_or_value))
    op = _OPS.get(op_or_value) if isinstance(op_or_value, str) else None
    if op is None:
        raise FilterError(f"unknown comparison {op_or_value!r}; use == != < <= > >=")
    return Port(side, op, _port_value(value))


def sport(op_or_value: str | int | range, value: int | None = None) -> Expr:
    """Local port: ``sport(22)``, ``sport(">=", 1024)``, ``sport(range(1000, 2000))``."""
    return _port_expr("s", op_or_value, value)


def dport(op_or_value: str | int | range, value: int | None = None) -> Expr:
    """Remote port, same forms as :func:`sport`."""
    return _port_expr("d", op_or_value, value)


def _host_expr(side: str, prefix: object, port: int | None) -> Expr:
    text = "*" if prefix is None else str(prefix)
    try:
        net, p = _parse_host(text)
    except FilterError as e:  # the offset into the prefix means nothing here
        raise FilterError(e.reason) from None
    if port is not None:
        if p is not None:
            raise FilterError(f"port given twice: in {text!r} and as port={port}")
        p = _port_value(port)
    return Host(side, net, p)


def src(prefix: str | None, port: int | None = None) -> Expr:
    """Local address in ``prefix`` ("10.0.0.0/8", "::1", "*" = any), optionally on ``port``."""
    return _host_expr("s", prefix, port)


def dst(prefix: str | None, port: int | None = None) -> Expr:
    """Remote address in ``prefix``, optionally with remote ``port``."""
    return _host_expr("d", prefix, port)


# ---------------------------------------------------------------- parser

def _err(reason: str, offset: int) -> FilterError:
    """An error inside one token; the parser adds the token's position (Parser.located)."""
    return FilterError(reason, None, offset)


def _parse_port(s: str, base: int = 0) -> int:
    """PORT is `5201` or `:5201`; errors point ``base`` + offset into the token."""
    m = re.fullmatch(r":?(-?[0-9]+)", s)     # ASCII digits: \d takes any script's
    if not m:
        raise _err(f"invalid port {s!r}", base)
    v = int(m.group(1))
    if not 0 <= v <= 65535:
        raise _err(f"port {v} out of range 0..65535", base + m.start(1))
    return v


def _parse_host(s: str) -> tuple[Net | None, int | None]:
    """ADDR forms: a.b.c.d[/n][:port], v6[/n], [v6][/n][:port], [v6/n][:port], *[:port],
    :port."""
    port, p_off = None, None  # p_off: where the prefix length digits start, if not after addr
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            raise _err("missing ']' after IPv6 address", len(s))
        addr, a_off = s[1:end], 1
        m = re.fullmatch(r"(/[^:]*)?(:.*)?", s[end + 1:])
        if not m:
            raise _err(f"unexpected {s[end + 1:]!r} after address", end + 1)
        if m.group(1):
            if "/" in addr:
                raise _err("prefix length given twice", end + 1)
            addr, p_off = addr + m.group(1), end + 2
        if m.group(2) is not None:
            port = _parse_port(m.group(2)[1:], m.start(2) + end + 2)
    elif s.count(":") == 1 or s == "*":
        addr, a_off = s, 0
        if ":" in s:  # IPv4 or wildcard with a port: split at the last colon
            addr, _, p = s.rpartition(":")
            port = _parse_port(p, len(addr) + 1)
    else:
        addr, a_off = s, 0  # bare IPv6 (two or more colons) or IPv4 without port
    if addr in ("*", ""):
        return None, port
    a, slash, plen = addr.partition("/")
    try:
        ip = ipaddress.ip_address(a)
    except ValueError:
        raise _err(f"invalid address {a!r}", a_off) from None
    if getattr(ip, "scope_id", None):
        raise _err("scoped IPv6 addresses are not supported", a_off)
    bits: int = ip.max_prefixlen
    if slash:
        # ASCII digits only: str.isdigit() also takes '¹', which int() refuses
        if not (plen.isascii() and plen.isdigit()) or int(plen) > bits:
            raise _err(f"invalid prefix length /{plen} for an IPv{ip.version} address "
                       f"(0..{bits})", p_off or a_off + len(a) + 1)
        bits = int(plen)
    return ipaddress.ip_network((ip, bits), strict=False), port


_TOKEN = re.compile(r"\s*(?:(==|!=|<=|>=|&&|\|\||[=<>!&|()])|([^\s=<>!&|()]+))")
_NOT, _AND, _OR = {"not", "!"}, {"and", "&&", "&"}, {"or", "||", "|"}
_PRIMARY = {"sport", "dport", "src", "dst"}


class _Parser:
    def __init__(self, text: str):
        self.text, self.i, self.depth = text, 0, 0
        # (token, lowercased, position, is a word rather than punctuation)
        self.toks = [(m[2] or m[1], (m[2] or m[1]).lower(), m.start(2 if m[2] else 1), bool(m[2]))
                     for m in _TOKEN.finditer(text)]
        self.end = len(self.toks)
        self.toks.append(("", "", len(text), False))  # end marker; take() stops on it

    def fail(self, reason: str, position: int) -> FilterError:
        return FilterError(reason, self.text, position)

    def located(self, fn: Callable[[str], Any], tok: str, pos: int) -> Any:
        """fn(tok), its errors (position = offset inside tok) moved to the whole text."""
        try:
            return fn(tok)
        except FilterError as e:
            raise self.fail(e.reason, pos + (e.position or 0)) from None

    def peek(self) -> tuple[str, str, int, bool]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str, int, bool]:
        tok = self.toks[self.i]
        self.i = min(self.i + 1, self.end)
        return tok

    def parse(self) -> Expr:
        if len(self.toks) == 1:
            raise self.fail("empty filter", 0)
        e = self.or_expr()
        tok, low, pos, _ = self.peek()
        if tok:
            raise self.fail("unbalanced ')'" if tok == ")" else f"unexpected {tok!r}", pos)
        return e

    def flat(self, kind: type[And] | type[Or], items: list[Expr], pos: int) -> Expr:
        try:
            return _flat(kind, items)
        except FilterError as e:  # nested too deeply: point at where the group starts
            raise self.fail(e.reason, pos) from None

    def or_expr(self) -> Expr:
        pos = self.peek()[2]
        items = [self.and_expr(None)]
        while self.peek()[1] in _OR:
            items.append(self.and_expr(self.take()[0]))
        return self.flat(Or, items, pos)

    def and_expr(self, after: str | None) -> Expr:
        pos = self.peek()[2]
        items = [self.unary(after)]
        while True:
            tok, low, _, word = self.peek()
            if low in _AND:
                items.append(self.unary(self.take()[0]))
            elif low in _NOT or tok == "(" or (word and tok[:1].isalpha() and low not in _OR):
                items.append(self.unary(None))  # juxtaposition means "and", as in ss
            else:
                break
        return self.flat(And, items, pos)

    def nest(self, pos: int) -> None:
        """One more level of '(' or 'not', refused past MAX_DEPTH: the parser recurses
        per level, so the limit is checked before Python's recursion limit is near."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(_too_deep().reason, pos)

    def unary(self, after: str | None) -> Expr:
        tok, low, pos, word = self.peek()
        if low in _NOT:
            self.take()
            self.nest(pos)
            item = self.unary(tok)
            self.depth -= 1
            try:
                return Not(item)
            except FilterError as exc:
                raise self.fail(exc.reason, pos) from None
        if tok == "(":
            self.take()
            self.nest(pos)
            e = self.or_expr()
            if self.peek()[0] != ")":
                t, _, p, _ = self.peek()
                raise self.fail("unclosed '('", pos) if not t else \
                    self.fail(f"expected ')' or an operator, got {t!r}", p)
            self.take()
            self.depth -= 1
            return e
        if low in _PRIMARY:
            return self.primary()
        if not tok:
            what = f"after {after!r}" if after else "before the end"
            raise self.fail(f"expected a condition {what}", pos)
        if word and tok[:1].isalpha() and low not in _AND | _OR:
            raise self.fail(f"unknown keyword {tok!r}", pos)
        raise self.fail(f"expected a condition, got {tok!r}", pos)

    def primary(self) -> Expr:
        kw, low, _, _ = self.take()
        side = low[0]
        if low in ("sport", "dport"):
            op_tok, op_low, opos, _ = self.take()
            if op_low not in _OPS:
                raise self.fail(f"expected a comparison operator after {kw!r}", opos)
            t, _, p, word = self.take()
            if not (word and re.fullmatch(r":?-?[0-9]+", t)):
                raise self.fail(f"expected a port after '{kw} {op_tok}'", p)
            return Port(side, _OPS[op_low], self.located(_parse_port, t, p))
        if self.peek()[0] in ("=", "=="):
            self.take()
        t, _, p, word = self.take()
        if not word:
            raise self.fail(f"expected an address after {kw!r}", p)
        return Host(side, *self.located(_parse_host, t, p))


def parse(text: str) -> Expr:
    """Parse the ss-style filter language into an :class:`Expr`."""
    if not isinstance(text, str):
        raise TypeError(f"filter text must be str, not {type(text).__name__}")
    return _Parser(text).parse()


def _as_expr(spec: str | Expr | None) -> Expr | None:
    if spec is None or isinstance(spec, Expr):
        return spec
    return parse(spec)


# ---------------------------------------------------------------- bytecode compiler

# (op code for a true result, whether to swap the true/false continuations)
_PORT_OPS = {"==": (_S_EQ, False), "!=": (_S_EQ, True), ">=": (_S_GE, False),
             "<=": (_S_LE, False), "<": (_S_GE, True), ">": (_S_LE, True)}
_D_CODE = {_S_EQ: _D_EQ, _S_GE: _D_GE, _S_LE: _D_LE}


class _Emitter:
    """Builds the program back to front. A jump target is named by the number of bytes
    from it to the end of the program: 0 = accept (exactly the end), -4 = reject (end+4,
    the largest `no` the audit allows).

    Ops are kept as (code, yes, no, operand) and packed only once the whole program's size
    is known to fit: a `no` past 65,535 would not fit its u16 (it used to end in
    struct.error), and the error can say how large the program would have been."""

    def __init__(self) -> None:
        self.parts: list[tuple[int, int, int, bytes]] = []
        self.size = 0

    def _put(self, code: int, yes: int, no: int, operand: bytes = b"") -> None:
        self.size += 4 + len(operand)
        self.parts.append((code, yes, no, operand))

    def op(self, code: int, operand: bytes, on_true: int, on_false: int) -> int:
        """Emit one condition; returns its own target name."""
        if on_true != self.size:  # true must fall through (yes = size), so hop via JMP
            self._put(_JMP, 4, self.size + 4 - on_true)
        n = 4 + len(operand)
        # no >= n and <= remaining + 4 and a multiple of 4, as the audit requires: on_false
        # is either an op already emitted (so on the yes chain) or -4.
        self._put(code, n, self.size + n - on_false, operand)
        return self.size

    def bytecode(self) -> bytes:
        if self.size > MAX_BYTECODE:
            raise FilterError(
                f"filter too long: its bytecode would be {self.size:,} bytes, too large "
                f"for the kernel, which accepts at most {MAX_BYTECODE:,} (the netlink "
                "attribute length is 16 bits); use fewer conditions (a port range such as "
                "'sport >= :1000 and sport <= :2000', an address prefix such as "
                "'src 10.0.0.0/8'), select by state or family with states=/family= "
                "instead, or split it into several reads")
        return b"".join(struct.pack("=BBH", code, yes, no) + operand
                        for code, yes, no, operand in reversed(self.parts))


def _emit(e: Expr, em: _Emitter, t: int, f: int) -> int:
    """Emit code that continues at t if e holds, else at f; return e's entry target."""
    if isinstance(e, Port):
        code, swap = _PORT_OPS[e.op]
        if e.side == "d":
            code = _D_CODE[code]
        return em.op(code, struct.pack("=xxH", e.port), *((f, t) if swap else (t, f)))
    if isinstance(e, Host):
        code = _S_COND if e.side == "s" else _D_COND
        port = -1 if e.port is None else e.port
        if e.net is None:  # AF_UNSPEC, prefix 0: no address bytes (valid_hostcond)
            return em.op(code, struct.pack("=BBxxi", socket.AF_UNSPEC, 0, port), t, f)
        fam = socket.AF_INET if e.net.version == 4 else socket.AF_INET6
        hc = struct.pack("=BBxxi", fam, e.net.prefixlen, port) + e.net.network_address.packed
        return em.op(code, hc, t, f)
    if isinstance(e, Not):
        return _emit(e.item, em, f, t)
    assert isinstance(e, (And, Or))
    # Back to front: the last item first, each earlier item continuing into the next one.
    entry = _emit(e.items[-1], em, t, f)
    for item in reversed(e.items[:-1]):
        entry = _emit(item, em, entry, f) if isinstance(e, And) else _emit(item, em, t, entry)
    return entry


def compile(spec: str | Expr | None) -> bytes:  # noqa: A001 - the module's public verb
    """Bytecode for ``spec`` (text or Expr), the INET_DIAG_REQ_BYTECODE payload.

    ``None`` (no filter) gives ``b""``: send no attribute at all (the kernel rejects an
    empty program with EINVAL)."""
    e = _as_expr(spec)
    if e is None:
        return b""
    em = _Emitter()
    _emit(e, em, 0, -4)
    return em.bytecode()


def request_attr(spec: str | Expr | None) -> bytes:
    """The whole INET_DIAG_REQ_BYTECODE attribute (nlattr header + program), or b""."""
    bc = compile(spec)
    if not bc:
        return b""
    return struct.pack("=HH", 4 + len(bc), INET_DIAG_REQ_BYTECODE) + bc + b"\0" * (-len(bc) % 4)


# ---------------------------------------------------------------- Python evaluator

_CMP = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge}


def _prefix_match(net: Net) -> Callable[[bytes], bool]:
    """The kernel's bitstring_match over the first prefixlen bits."""
    nbytes, plen = len(net.network_address.packed), net.prefixlen
    want = int(net.network_address) >> (nbytes * 8 - plen)
    return lambda a: int.from_bytes(a[:nbytes], "big") >> (nbytes * 8 - plen) == want


def _pred(e: Expr) -> Pred:
    if isinstance(e, Port):
        cmp, v = _CMP[e.op], e.port
        if e.side == "s":
            return lambda fam, la, lp, ra, rp: cmp(lp, v)
        return lambda fam, la, lp, ra, rp: cmp(rp, v)
    if isinstance(e, Host):
        return _host_pred(e)
    if isinstance(e, Not):
        p = _pred(e.item)
        return lambda *a: not p(*a)
    assert isinstance(e, (And, Or))
    ps = tuple(_pred(i) for i in e.items)
    if isinstance(e, And):
        return lambda *a: all(p(*a) for p in ps)
    return lambda *a: any(p(*a) for p in ps)


def _host_pred(e: Host) -> Pred:
    # Mirrors inet_diag_bc_run's S_COND/D_COND case, step by step.
    local, port, net = e.side == "s", e.port, e.net
    cfam = 0 if net is None else (socket.AF_INET if net.version == 4 else socket.AF_INET6)
    match = _prefix_match(net) if net is not None else lambda a: True  # AF_UNSPEC, /0

    def pred(fam: int, la: bytes, lp: int, ra: bytes, rp: int) -> bool:
        if port is not None and port != (lp if local else rp):
            return False
        addr = la if local else ra
        if cfam != socket.AF_UNSPEC and cfam != fam:
            # An IPv4 condition also matches ::ffff:a.b.c.d on an AF_INET6 socket.
            return (fam == socket.AF_INET6 and cfam == socket.AF_INET
                    and addr[:12] == _V4MAPPED and match(addr[12:16]))
        return match(addr)  # prefix_len 0 matches: the shift leaves nothing to compare

    return pred


def to_python(spec: str | Expr | None) -> Pred:
    """``f(family, laddr16, lport, raddr16, rport) -> bool`` with the kernel program's
    semantics (IPv4 addresses in the first 4 of the 16 bytes, as inet_diag_msg has them)."""
    e = _as_expr(spec)
    if e is None:
        return lambda fam, la, lp, ra, rp: True
    return _pred(e)


# ---------------------------------------------------------------- vectorised evaluation

def mask(spec: str | Expr | None, rows: Any) -> Any:
    """Which ``rows`` (a structured array with family, local/rem addr and port columns)
    the filter accepts, as a boolean array, with the kernel program's semantics.

    For backends and recordings where the kernel cannot filter (estats, replays): one
    numpy pass per node of the expression, no per-row Python.
    """
    import numpy as np

    e = _as_expr(spec)
    n = len(rows)
    if e is None:
        return np.ones(n, dtype=bool)

    def prefix(addr: Any, net: Net) -> Any:
        packed = np.frombuffer(net.network_address.packed, dtype=np.uint8)
        full, rest = divmod(net.prefixlen, 8)
        ok = np.all(addr[:, :full] == packed[:full], axis=1)
        if rest:
            m = (0xFF << (8 - rest)) & 0xFF
            ok &= (addr[:, full] & m) == (packed[full] & m)
        return ok

    def ev(x: Expr) -> Any:
        if isinstance(x, Port):
            col = rows["local_port" if x.side == "s" else "rem_port"].astype(np.int64)
            return _CMP[x.op](col, x.port)
        if isinstance(x, Host):
            local = x.side == "s"
            addr = rows["local_addr" if local else "rem_addr"]
            ok = np.ones(n, dtype=bool)
            if x.port is not None:
                ok &= rows["local_port" if local else "rem_port"] == x.port
            if x.net is None:
                return ok
            fam = socket.AF_INET if x.net.version == 4 else socket.AF_INET6
            same = (rows["family"] == fam) & prefix(addr, x.net)
            if fam == socket.AF_INET:
                mapped = ((rows["family"] == socket.AF_INET6)
                          & np.all(addr[:, :12] == np.frombuffer(_V4MAPPED, np.uint8), axis=1)
                          & prefix(addr[:, 12:16], x.net))
                same |= mapped
            return ok & same
        if isinstance(x, Not):
            return ~ev(x.item)
        assert isinstance(x, (And, Or))
        parts = [ev(i) for i in x.items]
        out = parts[0].copy()
        for p in parts[1:]:
            if isinstance(x, And):
                out &= p
            else:
                out |= p
        return out

    return ev(e)
