"""End to end: `mdpctl reload --brokers` upgrades the brokers of a live cluster under load."""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit import broker_status, serving_workers

from .opstools import LocalCluster, code_version

pytestmark = pytest.mark.slow

SERVICES = ("--service", "echo=2", "--service", "ecard=2", "--spare", "0")


def change_broker_code(code: Path, marker: str) -> None:
    """New broker code (and so a new version) that does what the old one did."""
    with open(code / "mdp" / "broker.py", "a", encoding="utf-8") as f:
        f.write(f"\n# {marker}\n")


def break_broker_code(code: Path) -> None:
    """New broker code that raises at import."""
    path = code / "mdp" / "broker.py"
    text = path.read_text(encoding="utf-8")
    assert "\nif __name__ ==" in text
    broken = 'raise RuntimeError("broken broker build")\n\n\nif __name__ =='
    path.write_text(text.replace("if __name__ ==", broken, 1), encoding="utf-8")


def broker_versions(cluster: LocalCluster) -> dict[str, tuple[str, int]]:
    result = {}
    for endpoint in cluster.brokers:
        status = broker_status(endpoint)
        assert status is not None, f"{endpoint} does not answer"
        result[endpoint] = (status.broker.version, status.broker.pid)
    return result


def start_load(cluster: LocalCluster) -> list:
    loads = [cluster.load("echo", in_flight=4), cluster.load("ecard", in_flight=4)]
    for load in loads:
        load.wait_ok(20)
    return loads


def test_rolling_broker_upgrade_under_load(local_cluster: LocalCluster) -> None:
    up = local_cluster.up(*SERVICES)
    assert up.returncode == 0, up.stderr
    old = code_version(local_cluster.code)
    before = broker_versions(local_cluster)
    assert {v for v, _ in before.values()} == {old}
    loads = start_load(local_cluster)

    change_broker_code(local_cluster.code, "broker upgrade test: new version")
    new = code_version(local_cluster.code)
    assert new != old
    reload = local_cluster.ctl("reload", "--brokers")
    assert reload.returncode == 0, reload.stdout + reload.stderr
    assert f"target broker version {new}" in reload.stdout
    assert "[1/2]" in reload.stdout and "[2/2]" in reload.stdout
    assert f"{old} -> {new}" in reload.stdout

    for load in loads:
        load.wait_ok(30)
        load.stop()
        assert load.failures == [], load.failures[:5]
    after = broker_versions(local_cluster)
    for endpoint in local_cluster.brokers:
        version, pid = after[endpoint]
        assert version == new and pid != before[endpoint][1]
        assert serving_workers(endpoint, "echo") == 2 and serving_workers(endpoint, "ecard") == 2

    # status shows each broker's version beside the workers' (which did not restart).
    status = local_cluster.status()
    assert [b["version"] for b in status["brokers"]] == [new, new]
    assert {w["version"] for w in status["workers"] if w["state"] == "RUNNING"} == {old}
    text = local_cluster.ctl("status").stdout
    assert new in text and old in text

    again = local_cluster.ctl("reload", "--brokers")
    assert again.returncode == 0, again.stderr
    assert "nothing to reload" in again.stdout


def test_broken_broker_stops_the_upgrade(local_cluster: LocalCluster) -> None:
    up = local_cluster.up(*SERVICES)
    assert up.returncode == 0, up.stderr
    before = broker_versions(local_cluster)
    loads = start_load(local_cluster)

    break_broker_code(local_cluster.code)
    reload = local_cluster.ctl("reload", "--brokers")
    assert reload.returncode == 5, reload.stdout + reload.stderr
    assert reload.stderr.count("\n") == 1, reload.stderr
    first, second = local_cluster.brokers
    assert "broker upgrade stopped at local/brokers:" in reload.stderr
    assert "broken broker build" in reload.stderr  # why: the tail of its log
    assert f"(0 of 2 restarted; brokers not touched and still serving: {second})" in (
        reload.stderr
    )

    for load in loads:
        load.wait_ok(30)  # served by the other broker
        load.stop()
        assert load.failures == [], load.failures[:5]
    assert broker_status(first) is None
    assert broker_versions_one(second) == before[second]
    assert serving_workers(second, "echo") == 2 and serving_workers(second, "ecard") == 2

    # With a broker down, a new upgrade is refused and touches nothing.
    refused = local_cluster.ctl("reload", "--brokers")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert f"broker {first}" in refused.stderr and "no broker was restarted" in refused.stderr
    assert broker_versions_one(second) == before[second]


def broker_versions_one(endpoint: str) -> tuple[str, int]:
    status = broker_status(endpoint)
    assert status is not None
    return status.broker.version, status.broker.pid
