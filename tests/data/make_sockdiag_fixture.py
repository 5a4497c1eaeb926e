"""Record a sock_diag dump of a known set of loopback sockets into sockdiag-dump.bin.

Run once on a real kernel (as root: CAP_NET_ADMIN adds MARK/CLASS_ID); the recording is
committed so the decoders can be tested offline on real kernel bytes. Format: for each
datagram, a little-endian u32 length then the bytes.
"""
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from web10g._netlink import NetlinkSocket  # noqa: E402

OUT = Path(__file__).with_name("sockdiag-dump.bin")


def main() -> None:
    keep = []
    lst = socket.create_server(("127.0.0.1", 0))
    lst6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
    keep += [lst, lst6]
    for cc, server, fam in (("cubic", lst, socket.AF_INET), ("bbr", lst6, socket.AF_INET6),
                            ("reno", lst, socket.AF_INET)):
        c = socket.socket(fam, socket.SOCK_STREAM)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
        c.setsockopt(socket.IPPROTO_IP if fam == socket.AF_INET else socket.IPPROTO_IPV6,
                     socket.IP_TOS if fam == socket.AF_INET else socket.IPV6_TCLASS, 0x20)
        c.connect(server.getsockname()[:2])
        s, _ = server.accept()
        c.sendall(b"x" * 50000)
        s.recv(10000)                     # leave data unread: CurAppRQueue > 0
        keep += [c, s]
    # a TIME_WAIT record: the active closer lingers
    c = socket.create_connection(lst.getsockname())
    s, _ = lst.accept()
    c.close()
    s.close()
    time.sleep(0.2)
    ports = {sk.getsockname()[1] for sk in keep}
    ext = 0xFF
    datagrams = []
    with NetlinkSocket(4) as nl:
        for fam in (socket.AF_INET, socket.AF_INET6):
            req = struct.pack("=BBBxI", fam, socket.IPPROTO_TCP, ext, 0xFFF) + bytes(48)
            msgs = nl.request(20, 0, req, dump=True)
            mine = [m for m in msgs if set(struct.unpack_from("!HH", m, 20)) & ports]
            datagrams.append(b"".join(mine))
    OUT.write_bytes(b"".join(struct.pack("<I", len(d)) + d for d in datagrams))
    print(f"wrote {OUT} ({sum(len(d) for d in datagrams)} bytes)")


if __name__ == "__main__":
    main()
