"""Named network namespaces for tests (`ip netns`): made fresh with loopback up, deleted
afterwards whatever happens. Needs root and iproute2."""
from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator


@contextlib.contextmanager
def named_netns(name: str | None = None, *, prefix: str = "w10g-t") -> Iterator[str]:
    """A new namespace (``name``, else ``prefix`` and a random suffix) with lo up."""
    name = name or f"{prefix}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)   # a stale one
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
