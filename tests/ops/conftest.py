"""Fixtures for the operations tests: local clusters in tmp_path, always torn down."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opstools import (
    FAST,
    Load,
    ServingMonitor,
    copy_code,
    free_ports,
    kill_all_under,
    mdpctl,
)


@dataclass
class LocalCluster:
    """A cluster started with `mdpctl up` in its own run directory and code tree."""

    root: Path
    code: Path
    run_dir: Path
    brokers: list[str]
    up_args: list[str] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)
    monitors: list[ServingMonitor] = field(default_factory=list)

    def ctl(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return mdpctl("--run-dir", str(self.run_dir), *args, code=self.code, timeout=timeout)

    def up(self, *extra: str) -> subprocess.CompletedProcess[str]:
        brokers = [arg for b in self.brokers for arg in ("--broker", b)]
        return self.ctl("up", *brokers, *FAST, *self.up_args, *extra)

    def load(self, service: str, in_flight: int = 8) -> Load:
        """Start a load that the fixture stops in the end, whatever happens."""
        load = Load(self.brokers, service, in_flight=in_flight).start()
        self.loads.append(load)
        return load

    def monitor(self, service: str) -> ServingMonitor:
        monitor = ServingMonitor(self.brokers, service).start()
        self.monitors.append(monitor)
        return monitor

    def status(self) -> dict[str, Any]:
        result = self.ctl("status", "--json")
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data


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
    )
    try:
        yield cluster
    finally:
        for load in cluster.loads:
            load.stop()
        for monitor in cluster.monitors:
            monitor.stop()
        if (cluster.run_dir / "supervisor.sock").exists():
            cluster.ctl("down", "--timeout", "30", timeout=60)
        kill_all_under(tmp_path)
