"""A fake Web10G kernel for testing the estats backend without a Web10G kernel.

``FakeKernel`` answers the ``tcp_estats`` generic-netlink ABI (docs: the shared spec
``web10g-abi.md``) on a real ``NETLINK_USERSOCK`` socket: a client sends every request,
the controller lookup included, to ``fk.portid`` instead of the kernel.

    with FakeKernel() as fk:
        cid = fk.add_flow(("10.0.0.1", 22), ("192.0.2.7", 51000))
        ...  # client talks to fk.portid
        assert fk.expected(cid, "SegsOut") == 1000 * cid

Modules: ``const`` (ABI numbers), ``encode`` (kernel-faithful byte layout and parsing),
``flows`` (the deterministic value model), ``kernel`` (the responder), ``plugin`` (pytest
fixtures ``fake_kernel`` / ``fake_kernel_factory``).
"""
from __future__ import annotations

from . import const
from .flows import INCREMENTS, TWINS, Flow
from .kernel import FakeKernel, Request

# (local, remote, owner) of the flows the ``fake_kernel`` fixture adds, CIDs 1.. in order.
DEFAULT_FLOWS = (
    (("10.0.0.1", 22), ("192.0.2.7", 51000), "self"),            # CID 1
    (("10.0.0.1", 443), ("198.51.100.20", 40001), "self"),       # CID 2
    (("2001:db8::1", 40000), ("2001:db8::2", 443), "self"),      # CID 3 (no window scaling)
    (("10.0.0.1", 8080), ("203.0.113.9", 33333), "other"),       # CID 4: EACCES
    (("2001:db8::1", 22), ("2001:db8::99", 50000), "self"),      # CID 5
)

__all__ = ["FakeKernel", "Flow", "Request", "INCREMENTS", "TWINS", "DEFAULT_FLOWS", "const"]
