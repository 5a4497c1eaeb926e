"""Make the fuzzers' seed corpora (fuzz/corpus/<target>/) from real captures, and
fuzz/c/estats_layout.h (the widths the estats harness decodes with).

    .venv/bin/python fuzz/make_corpus.py [--out fuzz/corpus]

* sockdiag: this machine's kernel, through the package: a Recorder on the sock_diag
  backend while a few loopback flows of different congestion controls, TOS, states
  (listening, established, TIME-WAIT) exist, filtered to their ports (small seeds);
  plus tests/data/sockdiag-dump.bin (the committed real dump).
* estats: the fake Web10G kernel (tests/fakekernel) of each layout (head, middle,
  old), recorded the same way: READ_ALL reply datagrams as the C decoder sees them.
* ebpf: iterator reads (a header record then socket records) and ring records, built
  with the record layout of csrc/w10g_ebpf_rec.h (sizes from web10g._ebpf); the values
  are plausible, not captured (a BPF-capable kernel is not needed to make them).
* recording: small real recordings (sock_diag and estats; codecs none, zlib, zstd).
* record: classic record files written by RecordWriter from the fake kernel's rows
  (each layout, both byte orders, with and without metadata).
* filter: filter texts of the language's every construct.

Every seed starts with the harness's mode byte(s) (see each harness's docstring). The
output is deterministic apart from the live sock_diag values.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import socket
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import numpy as np  # noqa: E402

import web10g  # noqa: E402
from web10g import mib  # noqa: E402


def put(out: str, target: str, data: bytes, name: str | None = None) -> None:
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    name = name or hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as fh:
        fh.write(data)


def chunks(datagrams: list[bytes], dumps_sep: bool = False) -> bytes:
    """The harnesses' [u16 length][datagram]... encoding (fuzz/c/fuzz_common.h)."""
    out = b""
    for d in datagrams:
        if d == b"":
            out += b"\0\0"
            continue
        out += struct.pack("<H", len(d)) + d
    return out


def split_messages(dgram: bytes, per: int) -> list[bytes]:
    """A datagram cut into datagrams of at most ``per`` whole netlink messages."""
    msgs, off = [], 0
    while off + 16 <= len(dgram):
        (n,) = struct.unpack_from("=I", dgram, off)
        if n < 16:
            break
        msgs.append(dgram[off:off + ((n + 3) & ~3)])
        off += (n + 3) & ~3
    return [b"".join(msgs[i:i + per]) for i in range(0, len(msgs), per)]


# ---- live sock_diag --------------------------------------------------------------------

def _flows() -> tuple[list[socket.socket], set[int]]:
    keep: list[socket.socket] = []
    lst = socket.create_server(("127.0.0.1", 0))
    lst6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
    keep += [lst, lst6]
    for cc, server, fam in (("cubic", lst, socket.AF_INET), ("bbr", lst6, socket.AF_INET6),
                            ("reno", lst, socket.AF_INET), ("dctcp", lst, socket.AF_INET),
                            ("vegas", lst6, socket.AF_INET6)):
        c = socket.socket(fam, socket.SOCK_STREAM)
        try:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
        except OSError:
            pass
        c.setsockopt(socket.IPPROTO_IP if fam == socket.AF_INET else socket.IPPROTO_IPV6,
                     socket.IP_TOS if fam == socket.AF_INET else socket.IPV6_TCLASS, 0x20)
        c.connect(server.getsockname()[:2])
        s, _ = server.accept()
        c.sendall(b"x" * 50000)
        s.recv(10000)
        keep += [c, s]
    c = socket.create_connection(lst.getsockname())
    s, _ = lst.accept()
    c.shutdown(socket.SHUT_WR)
    keep += [c, s]
    c = socket.create_connection(lst.getsockname())
    s, _ = lst.accept()
    c.close()
    s.close()
    time.sleep(0.1)
    return keep, {sk.getsockname()[1] for sk in keep}


def _record(agent, path: str, samples: int, codec: str, **kw) -> None:
    from web10g.recording import Recorder

    with Recorder(path, agent, codec=codec) as rec:
        for _ in range(samples):
            rec.sample(**kw)
            time.sleep(0.01)


def _frames(path: str) -> list[list[bytes]]:
    from web10g.recording import Recording

    return [d for _t, d, _times in Recording(path).frames()]


def sockdiag(out: str, tmp: str) -> list[str]:
    keep, ports = _flows()
    port = min(p for p in ports)
    flt = " or ".join(f"sport = :{p} or dport = :{p}" for p in sorted(ports))
    paths = []
    with web10g.open("sock_diag") as agent:
        for codec in ("none", "zlib", "zstd"):
            p = os.path.join(tmp, f"sockdiag-{codec}.w10g")
            try:
                _record(agent, p, 2, codec, filter=flt, states="all")
            except Exception as exc:  # noqa: BLE001 - zstd may be missing
                print(f"  sock_diag recording ({codec}) skipped: {exc}")
                continue
            paths.append(p)
    for k in keep:
        k.close()
    del port
    frames = _frames(paths[0])
    mode_seeds = (0x00, 0x05, 0x26, 0x17, 0xC1, 0x2B)
    sel_all = b"\xff" * 21
    sel_web10g = bytes((0xFF if i < 9 else 0x00) for i in range(21))
    for fi, dgrams in enumerate(frames):
        for dg in dgrams:
            for per in (1, 3):
                for k, piece in enumerate(split_messages(dg, per)[:4]):
                    mode = mode_seeds[(fi + per + k) % len(mode_seeds)]
                    sel = sel_web10g if k & 1 else sel_all
                    put(out, "sockdiag", bytes([mode]) + sel + chunks([piece]))
    # two dumps in one input: the flow table carried over (derived columns)
    allmsgs = [d for fr in frames for d in fr]
    if len(frames) >= 2:
        two = [split_messages(d, 4)[0] for d in frames[0]] + [b""] + \
              [split_messages(d, 4)[0] for d in frames[1]]
        put(out, "sockdiag", bytes([0x04]) + sel_all + chunks(two), "two-dumps")
    # the committed real dump
    fixture = os.path.join(ROOT, "tests", "data", "sockdiag-dump.bin")
    with open(fixture, "rb") as fh:
        raw = fh.read()
    off, dgs = 0, []
    while off + 4 <= len(raw):
        (n,) = struct.unpack_from("<I", raw, off)
        dgs.append(raw[off + 4:off + 4 + n])
        off += 4 + n
    for i, d in enumerate(dgs):
        for k, piece in enumerate(split_messages(d, 2)):
            put(out, "sockdiag", bytes([0x04 | (i << 3 & 8)]) + sel_all + chunks([piece]),
                f"fixture-{i}-{k}")
    print(f"  sockdiag: {len(allmsgs)} datagrams from {len(frames)} live samples, "
          f"{len(dgs)} from the fixture")
    return paths


# ---- the fake Web10G kernel -----------------------------------------------------------

def estats(out: str, tmp: str) -> list[str]:
    from fakekernel import DEFAULT_FLOWS, FakeKernel

    from web10g.backends.estats import _positions
    from web10g.recording import _split

    layouts = {}
    paths = []
    for li, lay in enumerate(mib.LAYOUTS):
        fk = FakeKernel(lay)
        for local, remote, owner in DEFAULT_FLOWS:
            fk.add_flow(local, remote, owner=owner)
        fk.start()
        try:
            with web10g.open(backend="estats", peer=fk.portid) as agent:
                state, _ = agent.recorder_state()
                tables = [[tuple(v) for v in t] for t in state["tables"]]
                positions, widths = _positions(tables)
                layouts[lay] = (widths, positions.get("State", (-1, -1)), state["family_id"])
                # READ_VARS and LIST_CONNS replies, through the socket's tap
                for cmd, call in ((2, lambda: agent.read_many([1, 2, 3])),
                                  (0, lambda: agent.list_conns())):
                    _, sock = agent.recorder_state()
                    sock.tap_start()
                    try:
                        call()
                    except web10g.errors.Web10GError:
                        pass
                    raw = sock.tap_take(True)
                    dgrams, _times = _split(raw, 0)
                    for dg in dgrams:
                        for piece in split_messages(dg, 3)[:2]:
                            put(out, "estats", bytes([li | (128 if cmd == 2 else 64), cmd])
                                + struct.pack("<3I", 1, 2, 3) + chunks([piece]))
                for codec in ("none", "zlib") if li == 0 else ("none",):
                    p = os.path.join(tmp, f"estats-{lay}-{codec}.w10g")
                    fk.tick()
                    _record(agent, p, 2, codec)
                    paths.append(p)
                for dgrams in _frames(paths[-1]):
                    for dg in dgrams:
                        for per in (1, 2):
                            for k, piece in enumerate(split_messages(dg, per)[:3]):
                                mode = li | 4 | (16 if per == 2 else 0) | (64 if k else 0)
                                put(out, "estats", bytes([mode, 1]) + struct.pack("<3I", 1, 2, 3)
                                    + chunks([piece]))
        finally:
            fk.stop()
    write_layout_header(layouts)
    print(f"  estats: layouts {', '.join(layouts)}")
    return paths


def write_layout_header(layouts) -> None:
    lines = ["/* Generated by fuzz/make_corpus.py from the fake kernel's TCPE_CMD_INIT replies",
             " * (tests/fakekernel): per layout (head, middle, old), the wire width of each",
             " * (table, index), 0 where INIT lists no variable; where State lives. */",
             "#ifndef W10G_FUZZ_ESTATS_LAYOUT_H", "#define W10G_FUZZ_ESTATS_LAYOUT_H",
             "#include <stdint.h>", ""]
    fams = {v[2] for v in layouts.values()}
    lines.append(f"#define W10G_FUZZ_ES_FAMILY_ID {fams.pop()}")
    lines.append("static const uint8_t W10G_FUZZ_ES_WIDTH[3][6][64] = {")
    for lay in mib.LAYOUTS:
        widths = layouts[lay][0]
        lines.append(f"    {{ /* {lay} */")
        for t in range(6):
            row = [widths.get((t, i), 0) for i in range(64)]
            lines.append("        {" + ",".join(map(str, row)) + "},")
        lines.append("    },")
    lines.append("};")
    st = ", ".join("{%d, %d}" % layouts[lay][1] for lay in mib.LAYOUTS)
    lines.append(f"static const int8_t W10G_FUZZ_ES_STATE[3][2] = {{{st}}};")
    lines += ["", "#endif", ""]
    with open(os.path.join(HERE, "c", "estats_layout.h"), "w") as fh:
        fh.write("\n".join(lines))


# ---- ebpf -----------------------------------------------------------------------------

def ebpf(out: str) -> None:
    from web10g import _ebpf

    rec_size, hdr_size = _ebpf.REC_SIZE, _ebpf.HDR_SIZE
    MAGIC_HDR, MAGIC_REC = 0x48423031, 0x52423031
    hdr = bytearray(hdr_size)
    struct.pack_into("<IHHHHIII", hdr, 0, MAGIC_HDR, hdr_size, 1, rec_size, 0, 0xFF, 250, 0)
    struct.pack_into("<QQQII", hdr, 24, 1_700_000_000 * 10**9, 5 * 10**12, 4_295_000_000,
                     0, 4026531840)
    rng = np.random.default_rng(7)

    def rec(state: int, family: int, flags: int, netns: int = 4026531840) -> bytes:
        b = bytearray(rng.integers(0, 256, rec_size, dtype=np.uint8).tobytes())
        struct.pack_into("<IH", b, 0, MAGIC_REC, rec_size)
        # state, family, flags and netns sit at the offsets web10g/_ebpf reports
        for name, val in (("state", state), ("family", family), ("flags", flags),
                          ("netns_ino", netns)):
            off, size = _REC_FIELDS.get(name, (None, None))
            if off is not None:
                b[off:off + size] = val.to_bytes(size, "little")
        return bytes(b)

    seeds = {
        "iter-est": [bytes(hdr) + rec(1, 2, 7) + rec(1, 10, 3) + rec(10, 2, 1)],
        "iter-mixed": [bytes(hdr) + b"".join(rec(s, (2, 10)[s & 1], s & 31) for s in range(12))],
        "ring-close": [rec(7, 2, 8 | 2), rec(7, 10, 8 | 2 | 1, 1234)],
        "two-reads": [bytes(hdr) + rec(1, 2, 3), bytes(hdr) + rec(1, 2, 1)],
    }
    # the fields reader: its header announces records cut before the counters
    fields_size = _ebpf.FIELDS_SIZE
    fhdr = bytearray(hdr)
    struct.pack_into("<H", fhdr, 8, fields_size)

    def short(state: int, family: int, flags: int) -> bytes:
        b = bytearray(rec(state, family, flags)[:fields_size])
        struct.pack_into("<H", b, 4, fields_size)
        return bytes(b)

    seeds["fields"] = [bytes(fhdr) + short(1, 2, 5) + short(10, 10, 1) + short(6, 2, 0),
                       bytes(hdr) + rec(1, 2, 3)]
    seeds["fields-storage-flag"] = [bytes(fhdr) + short(1, 2, 3)]
    for mode in (0x01, 0x0B, 0x31, 0xC5):
        for name, reads in seeds.items():
            # hz bit 30: through w10g_eb_read_decode (a socket); bit 31: a 4 MiB output
            for tag, bits in (("", 0), ("-fd", 1 << 30), ("-big", 1 << 31)):
                put(out, "ebpf", bytes([mode]) + struct.pack("<I", 250 | bits) + chunks(reads),
                    f"{name}-{mode:02x}{tag}")


def _rec_fields() -> dict[str, tuple[int, int]]:
    """Offsets and sizes of the struct w10g_eb_rec fields the decoder filters on, from the
    C compiler (a four-line program against csrc/w10g_ebpf_rec.h)."""
    import subprocess

    names = ("state", "family", "flags", "netns_ino")
    src = ('#include <stdio.h>\n#include <stddef.h>\n#include "w10g_ebpf_rec.h"\n'
           "int main(void) {\n" + "".join(
               f'printf("%zu %zu\\n", offsetof(struct w10g_eb_rec, {n}), '
               f"sizeof(((struct w10g_eb_rec *)0)->{n}));\n" for n in names) + "}\n")
    with tempfile.TemporaryDirectory() as d:
        c, exe = os.path.join(d, "o.c"), os.path.join(d, "o")
        with open(c, "w") as fh:
            fh.write(src)
        subprocess.run([os.environ.get("CC", "cc"), "-I", os.path.join(ROOT, "csrc"), c, "-o",
                        exe], check=True)
        lines = subprocess.run([exe], capture_output=True, text=True,
                               check=True).stdout.split("\n")
    return {n: tuple(map(int, ln.split())) for n, ln in zip(names, lines)}


_REC_FIELDS: dict[str, tuple[int, int]] = {}


# ---- recordings, record files, filters ---------------------------------------------------

def recordings(out: str, paths: list[str]) -> None:
    for p in paths:
        with open(p, "rb") as fh:
            data = fh.read()
        if len(data) > 48 * 1024:
            print(f"  recording {os.path.basename(p)}: {len(data)} bytes, skipped (> 48 KiB)")
            continue
        name = os.path.basename(p).rsplit(".", 1)[0]
        put(out, "recording", bytes([0x00]) + data, name)
        put(out, "recording", bytes([0x01]) + data, name + "-fix")
        put(out, "replay", bytes([0x01]) + data, name + "-fix")
        put(out, "replay", bytes([0x09]) + data, name + "-fix-all")


def deltas(out: str, paths: list[str]) -> None:
    """Seeds for the delta target: [u32 split][previous sample][difference] from each
    pair of consecutive samples of the recordings (and a first sample with none)."""
    from web10g import _delta
    from web10g.recording import Recording

    n = 0
    for p in paths:
        raws = []
        for _t, dgrams, times in Recording(p).frames():
            raws.append(b"".join(struct.pack("<Iq", len(d), t) + d
                                 for d, t in zip(dgrams, times)))
        for prev, cur in zip([None] + raws, raws):
            enc = bytearray(len(cur))
            if _delta.encode(prev, cur, enc) < 0:
                continue
            prev = prev or b""
            if 4 + len(prev) + len(cur) > 64 * 1024:
                continue
            split = len(prev) if prev else 0x80000000
            put(out, "delta", struct.pack("<I", split) + prev + bytes(enc))
            n += 1
    print(f"  delta: {n} seeds")


def records(out: str) -> None:
    from fakekernel import DEFAULT_FLOWS, FakeKernel

    from web10g.record import RecordWriter

    for li, lay in enumerate(mib.LAYOUTS):
        fk = FakeKernel(lay)
        for local, remote, owner in DEFAULT_FLOWS:
            fk.add_flow(local, remote, owner=owner)
        fk.start()
        try:
            with web10g.open(backend="estats", peer=fk.portid) as agent:
                all_rows = agent.read_all()
        finally:
            fk.stop()
        for order in ("little", "big"):
            for meta in (True, False):
                fh = tempfile.SpooledTemporaryFile()
                import io

                buf = io.BytesIO()
                cid = int(all_rows["cid"][0]) if meta else None
                rows = all_rows[:1] if meta else all_rows[:2]
                with RecordWriter(buf, layout=lay, metadata=meta, byteorder=order,
                                  cid=cid) as w:
                    w.write(rows)
                data = buf.getvalue()
                fh.close()
                for mode in (0x00, 0x01 | (li + 1) << 2, 0x02):
                    put(out, "record", bytes([mode]) + data,
                        f"{lay}-{order}-{'meta' if meta else 'bare'}-{mode:02x}")


FILTERS = [
    "sport = :22", "dport != :443", "sport >= :1024 and dport < :2000",
    "src 10.0.0.0/8", "dst 192.168.1.1:443", "src [2001:db8::1]:22", "dst [::1]",
    "not src 127.0.0.1", "( sport = :22 or sport = :80 ) and not dst 10.1.2.3",
    "src 10.0.0.1 or src 10.0.0.2 or src 10.0.0.3", "sport eq :0x50", "dport gt :1023",
    "src ::ffff:10.1.2.3", "dst *:80", "src fe80::/10", "sport le :ssh", "dport neq :https",
    "!(dport = :53)", "src 0.0.0.0/0 and dst ::/0", "sport = 22", "( ( ( dport = :1 ) ) )",
    "src 127.0.0.1:8080 and dst 127.0.0.1", "dport ge :1 and dport le :65535",
]


def filters(out: str) -> None:
    for i, f in enumerate(FILTERS):
        put(out, "filter", b"\x00" + f.encode(), f"f{i:02d}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "corpus"))
    ap.add_argument("--skip-live", action="store_true",
                    help="no live sock_diag capture (keeps the existing sockdiag seeds)")
    args = ap.parse_args()
    _REC_FIELDS.update(_rec_fields())
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        if not args.skip_live:
            paths += sockdiag(args.out, tmp)
        paths += estats(args.out, tmp)
        ebpf(args.out)
        recordings(args.out, paths)
        deltas(args.out, paths)
    records(args.out)
    filters(args.out)
    for t in sorted(os.listdir(args.out)):
        d = os.path.join(args.out, t)
        files = os.listdir(d)
        size = sum(os.path.getsize(os.path.join(d, f)) for f in files)
        print(f"  {t:10s} {len(files):4d} seeds, {size / 1024:7.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
