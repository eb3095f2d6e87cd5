"""Shared fixtures for the core's tests (helpers live in clusterkit.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from clusterkit import Cluster


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under CI a test whose real peer is missing fails (see ``clusterkit.needs``)."""
    marker = item.get_closest_marker("missing_peer")
    if marker is not None:
        pytest.fail(f"needs {marker.args[0]}, which .ci/run must install", pytrace=False)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop_all()


@pytest.fixture
def zctx() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    try:
        yield ctx
    finally:
        ctx.destroy(linger=0)
