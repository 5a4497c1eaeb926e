"""Byte-level netlink encoding and parsing with the kernel's semantics.

Encoding mirrors the kernel's skb helpers (``genlmsg_put``, ``nla_put``,
``nla_nest_start``/``nla_nest_end``, ``nla_put_u64_64bit``) so that the bytes come out as
a real kernel would lay them out: attributes padded to 4 bytes *inside* the buffer (a nest's
length therefore includes the padding of its last member, §13.3), a bounded buffer that
refuses a put that does not fit (``-EMSGSIZE``), and 64-bit alignment padding decided from
the absolute position in the datagram (§6.5).

Parsing mirrors ``nla_parse`` of kernels <= 5.1 (the module's era, §3.5): no strict mode,
attributes with a type above ``maxtype`` or type 0 ignored, a later duplicate overrides an
earlier one, trailing garbage tolerated, per-type policy checks only where a policy exists.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from . import const as C

_HDR = struct.Struct("=IHHII")     # nlmsghdr
_GENL = struct.Struct("=BBH")      # genlmsghdr
_NLA = struct.Struct("=HH")        # nlattr


def align4(n: int) -> int:
    return (n + 3) & ~3


# ============================================================================ encoding

class MsgSize(Exception):
    """A put did not fit the bounded buffer (the kernel's -EMSGSIZE)."""


# How NLE_ATTR_PAD fillers are emitted before 64-bit values (§6.5).
PAD_NEVER = "never"      # x86-64/arm64, and every tag before kernel-4.7 (plain 64-bit put)
PAD_ALIGN = "align"      # strict-alignment CPU: pad when the payload would not be 8-aligned
PAD_ALWAYS = "always"    # not a real kernel: a filler before *every* u64 (client stress test)


class SkbWriter:
    """An append-only reply buffer, like a kernel skb being filled.

    Offsets are absolute within the datagram being built, which is what the kernel's
    alignment decision for 64-bit payloads depends on (the skb data area is 8-aligned).
    """

    def __init__(self, capacity: int | None = None, pad_mode: str = PAD_NEVER) -> None:
        self.buf = bytearray()
        self.capacity = capacity
        self.pad_mode = pad_mode

    def __len__(self) -> int:
        return len(self.buf)

    @property
    def tailroom(self) -> int:
        if self.capacity is None:
            return 1 << 30
        return self.capacity - len(self.buf)

    def _reserve(self, n: int) -> None:
        if self.capacity is not None and len(self.buf) + n > self.capacity:
            raise MsgSize(n)

    # ---- messages
    def msg_start(self, nl_type: int, flags: int, seq: int, pid: int,
                  cmd: int | None = None, version: int = C.FAMILY_VERSION) -> int:
        """nlmsghdr (+ genlmsghdr when ``cmd`` is given); length patched by msg_end."""
        size = C.NLMSG_HDRLEN + (C.GENL_HDRLEN if cmd is not None else 0)
        self._reserve(size)
        start = len(self.buf)
        self.buf += _HDR.pack(0, nl_type, flags, seq & 0xFFFFFFFF, pid & 0xFFFFFFFF)
        if cmd is not None:
            self.buf += _GENL.pack(cmd & 0xFF, version & 0xFF, 0)
        return start

    def msg_end(self, start: int) -> int:
        """Patch nlmsg_len (tail - start, like nlmsg_end); returns the message size."""
        n = len(self.buf) - start
        struct.pack_into("=I", self.buf, start, n)
        return n

    def cancel(self, start: int) -> None:
        """Drop everything from ``start`` (genlmsg_cancel / nla_nest_cancel)."""
        del self.buf[start:]

    # ---- attributes
    def put(self, atype: int, payload: bytes = b"") -> None:
        n = C.NLA_HDRLEN + len(payload)
        self._reserve(align4(n))
        self.buf += _NLA.pack(n, atype & 0xFFFF) + payload + bytes(align4(n) - n)

    def put_u8(self, atype: int, v: int) -> None:
        self.put(atype, struct.pack("=B", v & 0xFF))

    def put_u16(self, atype: int, v: int) -> None:
        self.put(atype, struct.pack("=H", v & 0xFFFF))

    def put_u32(self, atype: int, v: int) -> None:
        self.put(atype, struct.pack("=I", v & 0xFFFFFFFF))

    def put_s32(self, atype: int, v: int) -> None:
        self.put(atype, struct.pack("=i", ((v + 2**31) % 2**32) - 2**31))

    def put_string(self, atype: int, s: str) -> None:
        """nla_put_string: the characters plus the terminating NUL."""
        self.put(atype, s.encode() + b"\0")

    def need_pad_for_64bit(self) -> bool:
        """nla_need_padding_for_64bit(): the 4-byte header placed at an 8-aligned tail
        would leave the 8-byte payload at 4 mod 8."""
        if self.pad_mode == PAD_ALWAYS:
            return True
        if self.pad_mode == PAD_ALIGN:
            return len(self.buf) % 8 == 0
        return False

    def put_u64_64bit(self, atype: int, v: int, padattr: int = C.NLE_ATTR_PAD) -> None:
        """nla_put_u64_64bit(): optional zero-length filler, then the u64.

        Reserve both up front so a filler is never left behind when the value does not
        fit (the kernel checks the total size first too)."""
        pad = self.need_pad_for_64bit()
        self._reserve(12 + (4 if pad else 0))
        if pad:
            self.put(padattr)
        self.put(atype, struct.pack("=Q", v & 0xFFFFFFFFFFFFFFFF))

    def nest_start(self, atype: int, nested_flag: bool = True) -> int:
        """nla_nest_start; the module always sets NLA_F_NESTED (§1), the controller
        never does (it uses the _noflag variant)."""
        self._reserve(C.NLA_HDRLEN)
        start = len(self.buf)
        self.buf += _NLA.pack(0, (atype | (C.NLA_F_NESTED if nested_flag else 0)) & 0xFFFF)
        return start

    def nest_end(self, start: int) -> None:
        struct.pack_into("=H", self.buf, start, len(self.buf) - start)

    def getvalue(self) -> bytes:
        return bytes(self.buf)


def nlmsg_error(request: bytes, err: int, portid: int) -> bytes:
    """The NLMSG_ERROR a kernel sends for ``request`` (netlink_ack, §4.2).

    Success (err 0): flags NLM_F_CAPPED and only the request's nlmsghdr is copied (§13.3
    shows exactly this).  Failure: flags 0 and the whole request (nlmsg_len bytes) is
    copied, since the fake cannot see a NETLINK_CAP_ACK option on the client socket.
    nlmsg_seq is the request's, nlmsg_pid the client's port id.
    """
    nlen = struct.unpack_from("=I", request, 0)[0]
    seq = struct.unpack_from("=I", request, 8)[0]
    if err == 0:
        copy, flags = request[:C.NLMSG_HDRLEN], C.NLM_F_CAPPED
    else:
        copy, flags = request[:nlen], 0
    n = C.NLMSG_HDRLEN + 4 + len(copy)
    out = _HDR.pack(n, C.NLMSG_ERROR, flags, seq, portid) + struct.pack("=i", err) + copy
    return out + bytes(align4(n) - n)


def nlmsg_done(seq: int, portid: int, flags: int = C.NLM_F_MULTI) -> bytes:
    return _HDR.pack(20, C.NLMSG_DONE, flags, seq, portid) + struct.pack("=i", 0)


# ============================================================================== parsing

@dataclass(frozen=True)
class Attr:
    """One parsed attribute: where its payload is inside the request buffer."""

    buf: bytes
    type: int          # nla_type with the flag bits stripped
    raw_type: int      # nla_type as sent
    offset: int        # of the payload
    length: int        # payload length (nla_len - 4)

    @property
    def payload(self) -> bytes:
        return self.buf[self.offset:self.offset + self.length]

    def read(self, n: int) -> bytes:
        """``n`` bytes from the payload start regardless of the attribute's length: the
        kernel's nla_get_u64() on an unvalidated attribute does exactly that (§3.5).
        Bytes past the end of the received data read as zero."""
        return self.buf[self.offset:self.offset + n].ljust(n, b"\0")

    def get_u32(self) -> int:
        return struct.unpack("=I", self.read(4))[0]

    def get_u64(self) -> int:
        return struct.unpack("=Q", self.read(8))[0]

    def get_u16(self) -> int:
        return struct.unpack("=H", self.read(2))[0]

    def get_u8(self) -> int:
        return self.read(1)[0]


class PolicyError(Exception):
    """nla_parse() refused an attribute (-EINVAL / -ERANGE in the kernel)."""

    def __init__(self, errno_: int) -> None:
        super().__init__(errno_)
        self.errno = errno_


def iter_attrs(buf: bytes, start: int, end: int):
    """Walk attributes like nla_for_each_attr (stops at the first malformed header)."""
    end = min(end, len(buf))
    pos = start
    while end - pos >= C.NLA_HDRLEN:
        nla_len, nla_type = _NLA.unpack_from(buf, pos)
        if nla_len < C.NLA_HDRLEN or nla_len > end - pos:
            break
        yield Attr(buf, nla_type & C.NLA_TYPE_MASK, nla_type, pos + C.NLA_HDRLEN,
                   nla_len - C.NLA_HDRLEN)
        pos += align4(nla_len)


# Policy entries: (kind, n). kinds: "min" = at least n bytes (NLA_U8/U16/U32/U64),
# "max" = at most n bytes (NLA_BINARY with len), "string" = NLA_STRING (at least 1 byte),
# "nulstring" = NLA_NUL_STRING with max length n (NUL within the first n+1 bytes).
Policy = dict[int, tuple[str, int]]


def _validate(a: Attr, kind: str, n: int) -> None:
    import errno
    if kind == "min":
        if a.length < n:
            raise PolicyError(errno.ERANGE)
    elif kind == "max":
        if a.length > n:
            raise PolicyError(errno.ERANGE)
    elif kind == "string":
        if a.length < 1:
            raise PolicyError(errno.ERANGE)
    elif kind == "nulstring":
        data = a.payload
        minlen = min(len(data), n + 1) if n else len(data)
        if minlen == 0 or b"\0" not in data[:minlen]:
            raise PolicyError(errno.EINVAL)
        if n:
            length = len(data) - 1 if data[-1:] == b"\0" else len(data)
            if length > n:
                raise PolicyError(errno.ERANGE)


def nla_parse(buf: bytes, start: int, end: int, maxtype: int,
              policy: Policy | None = None) -> dict[int, Attr]:
    """nla_parse(): table of the last attribute of each type 1..maxtype."""
    tb: dict[int, Attr] = {}
    for a in iter_attrs(buf, start, end):
        if 0 < a.type <= maxtype:
            if policy and a.type in policy:
                _validate(a, *policy[a.type])
            tb[a.type] = a
    return tb


def parse_nested(a: Attr, maxtype: int, policy: Policy | None = None) -> dict[int, Attr]:
    return nla_parse(a.buf, a.offset, a.offset + a.length, maxtype, policy)


def split_messages(data: bytes):
    """Yield (offset, nlmsg_len, bytes) of each netlink message like netlink_rcv_skb:
    stop at a header shorter than 16 bytes or longer than what is left."""
    pos = 0
    while len(data) - pos >= C.NLMSG_HDRLEN:
        nlen = struct.unpack_from("=I", data, pos)[0]
        if nlen < C.NLMSG_HDRLEN or nlen > len(data) - pos:
            return
        yield pos, nlen, data[pos:pos + nlen]
        pos += align4(nlen)
