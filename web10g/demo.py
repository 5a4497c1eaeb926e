"""``make demo``: what web10g sees on this machine.

Shows the MIB registry, which kernel backends this kernel offers, and the TCP sockets
that a single sock_diag dump finds right now.
"""
from __future__ import annotations

import collections
import platform
import socket
import struct

from web10g import genl, mib
from web10g._netlink import NetlinkSocket, parse_attrs

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
INET_DIAG_INFO = 2
KERNEL_STATE_NAMES = {1: "ESTAB", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1",
                      5: "FIN-WAIT-2", 6: "TIME-WAIT", 7: "CLOSE", 8: "CLOSE-WAIT",
                      9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING"}


def _dump(family: int) -> list[bytes]:
    req = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1),
                      0xFFF) + bytes(48)
    with NetlinkSocket(NETLINK_SOCK_DIAG) as sock:
        return sock.request(SOCK_DIAG_BY_FAMILY, 0, req, dump=True, call="sock_diag dump")


def main() -> int:
    print(f"web10g on Linux {platform.release()}\n")
    counts = collections.Counter(v.table for v in mib.variables())
    print("MIB registry: " + ", ".join(f"{t} {counts[t]}" for t in mib.TABLES)
          + f" = {sum(counts[t] for t in mib.TABLES)} Web10G variables, "
          f"{counts[mib.STOCK_TABLE]} stock-only extras")
    matches = collections.Counter(v.sock_diag.match for v in mib.variables()
                                  if not v.is_stock)
    print("on a stock kernel (sock_diag): " + ", ".join(
        f"{matches[m]} {m}" for m in mib.MATCH_CLASSES))
    estats = genl.family_exists("tcp_estats")
    print(f"Web10G kernel module (tcp_estats): {'loaded' if estats else 'not loaded'}")
    print("backend web10g would use: " + ("estats" if estats else "sock_diag") + "\n")

    states: collections.Counter[str] = collections.Counter()
    info_lens: set[int] = set()
    for fam in (socket.AF_INET, socket.AF_INET6):
        for m in _dump(fam):
            states[KERNEL_STATE_NAMES.get(m[17], str(m[17]))] += 1
            info = dict(parse_attrs(m, 16 + 72)).get(INET_DIAG_INFO)
            if info is not None:
                info_lens.add(len(info))
    total = sum(states.values())
    print(f"TCP sockets in this network namespace: {total}"
          + (" (" + ", ".join(f"{n} {s}" for s, n in states.most_common()) + ")" if total else ""))
    if info_lens:
        print(f"tcp_info length reported by this kernel: {sorted(info_lens)} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
