"""End to end: three "hosts", each with its own supervisord, driven by one cluster file.

hub runs the two brokers (broker-host profile); alpha and beta are worker hosts that
give 2 and 1 CPUs to image work.  mdpctl reaches each supervisord over HTTP with a
password, as it would reach remote hosts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mdpctl.errors import CtlError
from mdpctl.rpc import Supervisor, SupervisorEndpoint
from testkit import free_ports, kill_all_under, processes_under, serving_workers, wait_for

from .opstools import (
    change_code,
    code_version,
    copy_code,
    mdpctl,
    service_load,
)

pytestmark = pytest.mark.slow

PASSWORD = "s3cret-for-tests"
USER = "dips"


@dataclass
class Fleet:
    root: Path
    code: Path
    brokers: list[str]
    rpc: dict[str, str]
    cluster_file: Path

    def ctl(self, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
        return mdpctl(
            "--cluster",
            str(self.cluster_file),
            *args,
            code=self.code,
            env={"DIPS_TEST_PASSWORD": password},
        )

    def status(self) -> dict[str, Any]:
        result = self.ctl("status", "--json")
        assert result.returncode in (0, 3), result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def supervisor(self, host: str) -> Supervisor:
        return Supervisor(SupervisorEndpoint(self.rpc[host], USER, PASSWORD), timeout_s=5)


def render_host(code: Path, run_dir: Path, *args: str) -> Path:
    run_dir.mkdir()
    (run_dir / "log").mkdir()
    conf = run_dir / "supervisord.conf"
    result = mdpctl(
        "config",
        *args,
        "--run-dir",
        str(run_dir),
        "--pythonpath",
        str(code),
        "--heartbeat-interval",
        "0.2",
        "--time-limit",
        "5",
        "-o",
        str(conf),
        code=code,
        env={"DIPS_SUPERVISOR_PASSWORD": PASSWORD},
    )
    assert result.returncode == 0, result.stderr
    return conf


def start_supervisord(conf: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
        cwd=conf.parent,
        check=True,
        timeout=30,
        capture_output=True,
    )


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    code = copy_code(tmp_path / "code")
    ports = free_ports(5)
    brokers = [f"tcp://127.0.0.1:{p}" for p in ports[:2]]
    rpc_ports = dict(zip(("hub", "alpha", "beta"), ports[2:], strict=True))
    rpc = {host: f"http://127.0.0.1:{port}" for host, port in rpc_ports.items()}
    common = ["--rpc-user", USER]
    confs = {
        "hub": render_host(
            code,
            tmp_path / "hub",
            "broker-host",
            "--bind",
            brokers[0],
            "--bind",
            brokers[1],
            "--rpc-listen",
            f"127.0.0.1:{rpc_ports['hub']}",
            *common,
        ),
        "alpha": render_host(
            code,
            tmp_path / "alpha",
            "worker-host",
            "--cpus",
            "2",
            "--spare",
            "0",
            "--service",
            "echo",
            "--broker",
            brokers[0],
            "--broker",
            brokers[1],
            "--rpc-listen",
            f"127.0.0.1:{rpc_ports['alpha']}",
            *common,
        ),
        "beta": render_host(
            code,
            tmp_path / "beta",
            "worker-host",
            "--cpus",
            "1",
            "--spare",
            "2",
            "--service",
            "echo",
            "--broker",
            brokers[0],
            "--broker",
            brokers[1],
            "--rpc-listen",
            f"127.0.0.1:{rpc_ports['beta']}",
            *common,
        ),
    }
    cluster_file = tmp_path / "cluster.toml"
    hosts = "".join(f'\n[hosts.{h}]\nsupervisor = "{url}"\n' for h, url in rpc.items())
    cluster_file.write_text(
        f"brokers = {json.dumps(brokers)}\n"
        f'username = "{USER}"\npassword_env = "DIPS_TEST_PASSWORD"\n{hosts}'
    )
    env_fleet = Fleet(tmp_path, code, brokers, rpc, cluster_file)
    try:
        for conf in confs.values():
            start_supervisord(conf)
        yield env_fleet
    finally:
        for host in rpc:
            try:
                env_fleet.supervisor(host).shutdown()
            except CtlError:
                pass
        try:
            wait_for(lambda: not processes_under(tmp_path), 30, "the hosts to shut down")
        finally:
            kill_all_under(tmp_path)


def all_registered(status: dict[str, Any], count: int) -> bool:
    workers = [w for w in status["workers"] if w["state"] == "RUNNING"]
    return len(workers) == count and all(
        w["brokers"] and all(s in ("idle", "busy", "away") for s in w["brokers"].values())
        for w in workers
    )


def test_one_cluster_file_drives_every_host(fleet: Fleet) -> None:
    wait_for(lambda: all_registered(fleet.status(), 3), 60, "3 workers on 2 hosts to register")
    status = fleet.status()
    assert [h["name"] for h in status["hosts"]] == ["hub", "alpha", "beta"]
    assert all(h["up"] for h in status["hosts"]) and all(b["up"] for b in status["brokers"])
    by_host = sorted((w["host"], w["process"]) for w in status["workers"] if w["pid"])
    assert by_host == [
        ("alpha", "echo:echo-00"),
        ("alpha", "echo:echo-01"),
        ("beta", "echo:echo-00"),
    ]
    text = fleet.ctl("status")
    assert text.returncode == 0, text.stderr
    assert "alpha" in text.stdout and "beta" in text.stdout and PASSWORD not in text.stdout

    load = service_load(fleet.brokers, "echo", in_flight=8).start()
    try:
        load.wait_ok(20)
        alpha_pids = {w["pid"] for w in status["workers"] if w["host"] == "alpha"}

        change_code(fleet.code, "multi-host rollout")
        new = code_version(fleet.code)
        reload = fleet.ctl("reload")
        assert reload.returncode == 0, reload.stdout + reload.stderr
        assert "alpha: target version " + new in reload.stdout
        assert "[3/3] beta/echo:echo-00" in reload.stdout
        versions = {w["version"] for w in fleet.status()["workers"] if w["state"] == "RUNNING"}
        assert versions == {new}
        load.wait_ok(20)

        scale = fleet.ctl("scale", "echo", "3", "--host", "beta")
        assert scale.returncode == 0, scale.stderr
        assert "beta: 1 -> 3 workers" in scale.stdout and "alpha" not in scale.stdout
        assert all(serving_workers(e, "echo") == 5 for e in fleet.brokers)
        load.wait_ok(20)
        after = fleet.status()
        new_alpha = {w["pid"] for w in after["workers"] if w["host"] == "alpha"}
        assert new_alpha.isdisjoint(alpha_pids)  # reloaded, then left alone by scale
        assert all_registered(after, 5)
        echo = next(s for s in after["services"] if s["name"] == "echo")
        assert echo["hosts"]["beta"] == {"running": 3, "chosen": 3}  # recorded over HTTP
        assert json.loads((fleet.root / "beta" / "scale.json").read_text()) == {
            "chosen": {"echo": 3}
        }

        brokers = fleet.ctl("reload", "--brokers", "--force")  # the broker host, over HTTP
        assert brokers.returncode == 0, brokers.stdout + brokers.stderr
        assert "[2/2] hub/brokers:" in brokers.stdout
        assert all(serving_workers(e, "echo") == 5 for e in fleet.brokers)
        load.wait_ok(20)
    finally:
        load.stop()
    assert load.failures == [], load.failures[:5]

    wrong = fleet.ctl("status", password="wrong")
    assert wrong.returncode == 3
    assert "refused the credentials" in wrong.stdout
    up = fleet.ctl("up")
    assert up.returncode == 2 and "local cluster only" in up.stderr
