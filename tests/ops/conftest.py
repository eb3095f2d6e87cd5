"""Fixtures for the operations tests: local clusters in tmp_path, always torn down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit import free_ports, kill_all_under

from .opstools import LocalCluster, copy_code

NO_DOORS = ("--http", "off", "--gearman", "off")  # the doors' own tests choose free ports


@pytest.fixture
def local_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A not yet started local cluster on free ports, with a private copy of the code."""
    code = copy_code(tmp_path / "code")
    ports = free_ports(2)
    cluster = LocalCluster(
        root=tmp_path,
        code=code,
        run_dir=tmp_path / "run",
        brokers=[f"tcp://127.0.0.1:{port}" for port in ports],
        up_args=list(NO_DOORS),
    )
    try:
        yield cluster
    finally:
        for load in cluster.loads:
            load.stop()
        for monitor in cluster.monitors:
            monitor.stop()
        # SIGKILL, not `mdpctl down`: a clean-up checks nothing (the tests of down run it
        # themselves), and a graceful stop took 0.5-3 s at the end of every test.
        kill_all_under(tmp_path)
