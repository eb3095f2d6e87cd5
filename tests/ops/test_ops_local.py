"""End to end: the local cluster with `mdpctl up`, status, call, scale, reload and down."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mdpctl.cluster import local_cluster_toml
from testkit import free_ports, kill_all_under, processes_under, serving_workers, wait_for

from .opstools import (
    REPO,
    LocalCluster,
    break_code,
    change_code,
    code_version,
    copy_code,
    mdpctl,
)

pytestmark = pytest.mark.slow


def running_workers(status: dict, service: str | None = None) -> list[dict]:
    return [
        w for w in status["workers"] if w["state"] == "RUNNING" and service in (None, w["service"])
    ]


def test_up_status_call_down(local_cluster: LocalCluster) -> None:
    result = local_cluster.up("--service", "echo=2", "--service", "ecard=1", "--spare", "1",
                              "--link-floor", "50Mbit/s")
    assert result.returncode == 0, result.stderr
    assert "cluster up" in result.stdout
    programs = [line for line in (local_cluster.run_dir / "supervisord.conf").read_text()
                .splitlines() if line.startswith("command=") and " -m mdp." in line]
    assert len(programs) == 2 + 4  # two brokers; each pool's started and spare slots
    assert all("--link-floor 6250KB/s" in line for line in programs)  # (up started them)

    # up returned: every worker is already registered with every broker.
    status = local_cluster.status()
    version = code_version(local_cluster.code)
    workers = running_workers(status)
    assert sorted(w["service"] for w in workers) == ["ecard", "echo", "echo"]
    assert len(running_workers(status, "echo")) == 2
    for worker in workers:
        assert set(worker["brokers"]) == set(local_cluster.brokers)
        assert all(state == "idle" for state in worker["brokers"].values()), worker
        assert worker["version"] == version
    assert [b["up"] for b in status["brokers"]] == [True, True]

    text = local_cluster.ctl("status")
    assert text.returncode == 0, text.stderr
    for heading in ("BROKER", "SERVICE", "WORKER", "echo:echo-00", version):
        assert heading in text.stdout

    echo = local_cluster.ctl("call", "echo", "--json", '{"hello": "world", "n": [1, 2]}')
    assert echo.returncode == 0, echo.stderr
    assert json.loads(echo.stdout) == {"hello": "world", "n": [1, 2]}

    card = local_cluster.root / "card.png"
    ecard = local_cluster.ctl(
        "call",
        "ecard",
        "--json",
        json.dumps({"pSN": "12345", "pData": list(range(80))}),
        "-o",
        str(card),
    )
    assert ecard.returncode == 0, ecard.stderr
    assert card.read_bytes().startswith(b"\x89PNG")
    assert "PNG image" in ecard.stdout

    bad = local_cluster.ctl("call", "ecard", "--json", '{"pSN": "1"}')
    assert bad.returncode == 1
    assert bad.stderr.count("\n") == 1 and "pData" in bad.stderr

    again = local_cluster.up()
    assert again.returncode == 0 and "already running" in again.stdout
    other = local_cluster.up("--link-floor", "20MB/s")
    assert other.returncode == 2
    assert "link_floor: 6250000 running, 20000000 asked" in other.stderr, other.stderr

    down = local_cluster.ctl("down")
    assert down.returncode == 0, down.stderr
    assert processes_under(local_cluster.root) == []
    assert local_cluster.ctl("down").returncode == 0


def test_reload_under_load_loses_nothing(local_cluster: LocalCluster) -> None:
    workers = 2
    result = local_cluster.up(
        "--service", "echo", "--service", "ecard", "--workers", str(workers), "--spare", "1"
    )
    assert result.returncode == 0, result.stderr
    old = code_version(local_cluster.code)
    loads = [local_cluster.load(s) for s in ("echo", "ecard")]
    monitors = [local_cluster.monitor(s) for s in ("echo", "ecard")]
    for load in loads:
        load.wait_ok(20)

    change_code(local_cluster.code, "reload test: new version")
    new = code_version(local_cluster.code)
    assert new != old
    reload = local_cluster.ctl("reload")
    assert reload.returncode == 0, reload.stdout + reload.stderr
    assert f"[{2 * workers}/{2 * workers}]" in reload.stdout

    for load in loads:
        load.wait_ok(20)
        load.stop()
    minimums = [monitor.stop() for monitor in monitors]
    for load in loads:
        assert load.failures == [], load.failures[:5]
    for minimum in minimums:
        assert set(minimum) == set(local_cluster.brokers)
        assert min(minimum.values()) >= workers - 1, minimum

    status = local_cluster.status()
    assert {w["version"] for w in running_workers(status)} == {new}
    assert len(running_workers(status)) == 2 * workers

    down = local_cluster.ctl("down")
    assert down.returncode == 0, down.stderr
    assert processes_under(local_cluster.root) == []


def test_broken_version_stops_the_rollout(local_cluster: LocalCluster) -> None:
    # One start retry, not three: supervisord gives up on the broken worker after 1 s, not 6.
    result = local_cluster.up(
        "--service", "echo", "--service", "ecard", "--workers", "2", "--spare", "0",
        "--start-retries", "1",
    )
    assert result.returncode == 0, result.stderr
    old = code_version(local_cluster.code)
    pristine = local_cluster.root / "pristine-worker.py"
    shutil.copy(local_cluster.code / "mdp" / "worker.py", pristine)
    loads = [local_cluster.load(s) for s in ("echo", "ecard")]
    for load in loads:
        load.wait_ok(20)

    break_code(local_cluster.code)
    reload = local_cluster.ctl("reload")
    assert reload.returncode == 5, reload.stdout + reload.stderr
    assert reload.stderr.count("\n") == 1
    assert "rollout stopped at local/ecard:ecard-00" in reload.stderr
    assert (
        "FATAL" in reload.stderr
        and "(0 of 4 restarted; 3 not touched and still serving)" in reload.stderr
    )

    for load in loads:
        load.wait_ok(20)
    status = local_cluster.status()
    states = {w["process"]: (w["state"], w["version"]) for w in status["workers"]}
    assert states["ecard:ecard-00"][0] == "FATAL"
    for name in ("ecard:ecard-01", "echo:echo-00", "echo:echo-01"):
        assert states[name] == ("RUNNING", old)
    for endpoint in local_cluster.brokers:
        assert serving_workers(endpoint, "ecard") == 1 and serving_workers(endpoint, "echo") == 2

    # A fixed version rolls out, the failed slot first.
    shutil.copy(pristine, local_cluster.code / "mdp" / "worker.py")
    change_code(local_cluster.code, "fixed")
    fixed = code_version(local_cluster.code)
    reload = local_cluster.ctl("reload")
    assert reload.returncode == 0, reload.stdout + reload.stderr
    assert "[1/4] local/ecard:ecard-00" in reload.stdout
    for load in loads:
        load.wait_ok(20)
        load.stop()
        assert load.failures == [], load.failures[:5]
    status = local_cluster.status()
    assert {w["version"] for w in running_workers(status)} == {fixed}
    assert len(running_workers(status)) == 4


def test_scale_under_load(local_cluster: LocalCluster) -> None:
    result = local_cluster.up("--service", "echo=2", "--spare", "2")
    assert result.returncode == 0, result.stderr
    first_pid = {w["process"]: w["pid"] for w in local_cluster.status()["workers"]}["echo:echo-00"]
    load = local_cluster.load("echo")
    load.wait_ok(20)

    up = local_cluster.ctl("scale", "echo", "4")
    assert up.returncode == 0, up.stderr
    assert "2 -> 4 workers (started echo-02, echo-03)" in up.stdout
    for endpoint in local_cluster.brokers:  # scale returns once they serve everywhere
        assert serving_workers(endpoint, "echo") == 4
    load.wait_ok(50)

    down = local_cluster.ctl("scale", "echo", "1")
    assert down.returncode == 0, down.stderr
    assert "4 -> 1 workers (stopped echo-03, echo-02, echo-01)" in down.stdout
    wait_for(
        lambda: all(serving_workers(e, "echo") == 1 for e in local_cluster.brokers),
        5,
        "one echo worker left at each broker",
    )
    load.wait_ok(50)

    too_many = local_cluster.ctl("scale", "echo", "5")
    assert too_many.returncode == 2
    assert "has 4 slots for echo, fewer than 5" in too_many.stderr

    load.stop()
    assert load.failures == [], load.failures[:5]
    status = local_cluster.status()
    running = running_workers(status, "echo")
    assert [(w["process"], w["pid"]) for w in running] == [("echo:echo-00", first_pid)]


def test_supervisor_local_conf_runs_as_it_is(tmp_path: Path) -> None:
    """supervisor/local.conf from a checkout: `supervisord -c supervisor/local.conf`."""
    tree = copy_code(tmp_path / "checkout")
    text = (REPO / "supervisor" / "local.conf").read_text()
    ports = free_ports(4)
    # One pass, whole port numbers only: replacing one default after another would turn a
    # new port such as 55563 (written for 5555) into 571073 when 5556 is replaced next.
    chosen = dict(zip(("5555", "5556", "8080", "4730"), map(str, ports), strict=True))
    text = re.sub(
        r"127\.0\.0\.1:(5555|5556|8080|4730)\b",
        lambda match: f"127.0.0.1:{chosen[match.group(1)]}",
        text,
    )
    (tree / "supervisor").mkdir()
    (tree / "supervisor" / "local.conf").write_text(text)
    run_dir = tree / "run"
    (run_dir / "log").mkdir(parents=True)
    brokers = tuple(f"tcp://127.0.0.1:{p}" for p in ports[:2])
    (run_dir / "cluster.toml").write_text(local_cluster_toml(run_dir, brokers))
    try:
        subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", "supervisor/local.conf"],
            cwd=tree,
            check=True,
            timeout=30,
        )
        # `up` finds it running and only waits until every worker serves at both brokers.
        up = mdpctl("--run-dir", str(run_dir), "up", "--timeout", "90", code=tree)
        assert up.returncode == 0, up.stderr
        assert "already running" in up.stdout
        call = mdpctl("--run-dir", str(run_dir), "call", "echo", "--json", '{"a": 1}', code=tree)
        assert call.returncode == 0 and json.loads(call.stdout) == {"a": 1}, call.stderr
        down = mdpctl("--run-dir", str(run_dir), "down", code=tree)
        assert down.returncode == 0, down.stderr
        assert processes_under(tmp_path) == []
    finally:
        kill_all_under(tmp_path)
