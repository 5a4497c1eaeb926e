"""pytest fixtures for the fake Web10G kernel.

Load with ``pytest_plugins = ["fakekernel.plugin"]`` (tests/ on sys.path).

* ``fake_kernel_factory(**kwargs)`` -> a started :class:`FakeKernel` built with those
  keyword arguments; every kernel made is stopped at teardown.
* ``fake_kernel`` -> a started HEAD-layout FakeKernel holding ``fakekernel.DEFAULT_FLOWS``
  (CIDs 1..5: IPv4 and IPv6, CID 4 owned by another user).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from fakekernel import DEFAULT_FLOWS, FakeKernel


@pytest.fixture
def fake_kernel_factory() -> Iterator[Callable[..., FakeKernel]]:
    made: list[FakeKernel] = []

    def make(*args, **kwargs) -> FakeKernel:
        fk = FakeKernel(*args, **kwargs)
        made.append(fk)
        return fk.start()

    try:
        yield make
    finally:
        for fk in made:
            fk.stop()


@pytest.fixture
def fake_kernel(fake_kernel_factory: Callable[..., FakeKernel]) -> FakeKernel:
    fk = fake_kernel_factory("head")
    for local, remote, owner in DEFAULT_FLOWS:
        fk.add_flow(local, remote, owner=owner)
    return fk
