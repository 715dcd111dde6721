"""Shared fixtures. Integration tests need root and the real kernel: they make their own network namespaces
(198.18.0.0/15 only), never write a global setting, and delete everything they made."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from hypothesis import settings

from ctguard.lab.testbed import Testbed

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")

# No per-example deadline: CI and shared 2-core machines stall examples unpredictably; a slow example is
# not a failure of the property.
settings.register_profile("ctguard", deadline=None)
settings.load_profile("ctguard")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Integration tests need root; say so instead of failing obscurely. CI runs as root, so they run there.
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, ctnetlink)")
    for item in items:
        if "integration" in item.keywords or "lab" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def testbed() -> Iterator[Testbed]:
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make setup`")
    with Testbed() as tb:
        yield tb


@pytest.fixture
def fixtures_dir() -> str:
    return FIXTURES
