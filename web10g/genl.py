"""Generic netlink: resolve a family by name through the controller (nlctrl)."""
from __future__ import annotations

from dataclasses import dataclass, field

from web10g import errors

NETLINK_GENERIC = 16

# What to tell the user when a family this package uses is missing.
_FAMILY_HINTS = {
    "tcp_estats": (
        "the Web10G kernel module is not loaded. On a Web10G (KIS) kernel run "
        "'modprobe tcp_estats_nl' and enable collection with "
        "'sysctl -w net.ipv4.tcp_estats=127' (only connections opened afterwards are "
        "instrumented); on a stock kernel use backend='sock_diag'"
    ),
}


@dataclass(frozen=True)
class GenlFamily:
    """What the controller says about one generic-netlink family."""

    id: int
    name: str
    version: int = 0
    hdrsize: int = 0
    maxattr: int = 0
    ops: dict[int, int] = field(default_factory=dict)          # command -> op flags
    mcast_groups: dict[str, int] = field(default_factory=dict)  # group name -> id


def resolve(sock, name: str) -> GenlFamily:
    """Resolve family ``name`` on ``sock`` (a NETLINK_GENERIC NetlinkSocket, or one with a
    peer that speaks the controller protocol). Raises :class:`errors.FamilyNotFound`."""
    try:
        info = sock.resolve_family(name)
    except FileNotFoundError as exc:
        if isinstance(exc, errors.FamilyNotFound):
            raise
        raise errors.FamilyNotFound(name, _FAMILY_HINTS.get(name)) from None
    return GenlFamily(
        id=info["id"],
        name=info.get("name", name),
        version=info.get("version", 0),
        hdrsize=info.get("hdrsize", 0),
        maxattr=info.get("maxattr", 0),
        ops=dict(info.get("ops", {})),
        mcast_groups=dict(info.get("mcast_groups", {})),
    )


def family_exists(name: str) -> bool:
    """True when family ``name`` is registered in this network namespace's kernel."""
    from web10g._netlink import NetlinkSocket

    with NetlinkSocket(NETLINK_GENERIC, timeout=2.0) as sock:
        try:
            resolve(sock, name)
        except errors.FamilyNotFound:
            return False
    return True
