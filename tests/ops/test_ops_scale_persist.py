"""A scale that lasts: the keeper's state without sockets, then across supervisord restarts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdpctl import scalestate
from mdpctl.cluster import Host
from mdpctl.fleet import read_host
from mdpctl.local import endpoint_for
from mdpctl.report import scale_differences
from mdpctl.rpc import Supervisor, make_proxy
from testkit import serving_workers, wait_for

from .opstools import LocalCluster

# --- without sockets ---------------------------------------------------------------------


def test_choices_are_checked_and_recorded(tmp_path: Path) -> None:
    assert scalestate.parse_choice(scalestate.choice_line("ecard", 4)) == ("ecard", 4)
    assert scalestate.parse_choice('{"service": "ecard", "count": null}') == ("ecard", None)
    for bad in ('{"service": "a b", "count": 1}', '{"service": "x", "count": -1}',
                '{"service": "x", "count": true}', "[1]", "nope"):
        with pytest.raises(scalestate.ScaleStateError):
            scalestate.parse_choice(bad)
    chosen = scalestate.apply_choice({"echo": 1}, "ecard", 3)
    assert chosen == {"ecard": 3, "echo": 1}
    assert scalestate.apply_choice(chosen, "echo", None) == {"ecard": 3}

    path = tmp_path / "scale.json"
    assert scalestate.read_state(path) == {}
    scalestate.write_state(path, chosen)
    assert scalestate.read_state(path) == chosen
    assert [p.name for p in tmp_path.iterdir()] == ["scale.json"]  # no temporary file left
    path.write_text('{"chosen": {"ecard": "many"}}')
    with pytest.raises(scalestate.ScaleStateError, match="count 'many'"):
        scalestate.read_state(path)


def test_the_last_state_line_of_a_log_wins() -> None:
    log = (
        scalestate.state_line({"echo": 1}, 10, True, seq=1)
        + "2026-12-01 INFO recorded echo = 2\n"
        + scalestate.state_line({"echo": 2}, 10, True, seq=2)
        + "mdp-scale: {broken\n"
    )
    said = scalestate.last_state(log)
    assert said == scalestate.KeeperState({"echo": 2}, 10, True, None, 2)
    assert scalestate.last_state("nothing here\n") is None


def test_status_names_where_running_differs_from_chosen() -> None:
    report = {"services": [
        {"name": "ecard", "hosts": {"img1": {"running": 3, "chosen": 4},
                                    "img2": {"running": 4, "chosen": 4}}},
        {"name": "echo", "hosts": {"img1": {"running": 1, "chosen": None}}},
    ]}
    assert scale_differences(report) == ["img1 ecard: running 3, chosen 4"]


# --- end to end ------------------------------------------------------------------------

UP = ("--service", "echo=2", "--service", "ecard=2", "--spare", "2")


def running(cluster: LocalCluster) -> dict[str, int]:
    counts: dict[str, int] = {}
    for w in cluster.status()["workers"]:
        if w["state"] == "RUNNING":
            counts[w["service"]] = counts.get(w["service"], 0) + 1
    return counts


def chosen(cluster: LocalCluster) -> dict[str, int | None]:
    return {s["name"]: s["chosen"] for s in cluster.status()["services"]}


@pytest.mark.slow
def test_scale_survives_supervisord_restarts(local_cluster: LocalCluster) -> None:
    up = local_cluster.up(*UP)
    assert up.returncode == 0, up.stderr
    assert chosen(local_cluster) == {"ecard": 2, "echo": 2}  # as configured, never scaled
    for service, count in (("echo", "3"), ("ecard", "1")):
        result = local_cluster.ctl("scale", service, count)
        assert result.returncode == 0, result.stderr
        assert "warning" not in result.stdout
    state = json.loads((local_cluster.run_dir / "scale.json").read_text())
    assert state == {"chosen": {"ecard": 1, "echo": 3}}
    assert running(local_cluster) == {"echo": 3, "ecard": 1}

    # supervisord stopped and started again, as at a reboot: the chosen counts are back.
    down = local_cluster.ctl("down")
    assert down.returncode == 0, down.stderr
    up = local_cluster.up(*UP)
    assert up.returncode == 0, up.stderr
    assert "ecard x1, echo x3" in up.stdout
    assert running(local_cluster) == {"echo": 3, "ecard": 1}
    assert chosen(local_cluster) == {"ecard": 1, "echo": 3}
    for endpoint in local_cluster.brokers:
        assert serving_workers(endpoint, "echo") == 3 and serving_workers(endpoint, "ecard") == 1

    # supervisord restarting itself in place (same pid, every process started again).
    sock = endpoint_for(local_cluster.run_dir)
    host = Host("local", sock)
    keeper_pid = read_host(host, 5.0).keeper.pid  # type: ignore[union-attr]
    make_proxy(sock, 10.0).supervisor.restart()

    def applied_again() -> bool:
        state = read_host(host, 5.0)
        said = state.keeper_state
        return said is not None and said.applied and said.pid != keeper_pid

    wait_for(applied_again, 30, "the keeper to apply the scale after the restart")
    wait_for(lambda: all(serving_workers(e, "echo") == 3 and serving_workers(e, "ecard") == 1
                         for e in local_cluster.brokers), 30, "3 echo and 1 ecard workers")
    wait_for(lambda: running(local_cluster) == {"echo": 3, "ecard": 1}, 10,
             "3 echo and 1 ecard RUNNING (past startsecs)")

    # A worker stopped behind mdpctl's back: status shows the difference.
    Supervisor(sock).stop("echo:echo-02")
    wait_for(lambda: running(local_cluster).get("echo") == 2, 20, "echo-02 to stop")
    text = local_cluster.ctl("status")
    assert "Running count differs from the chosen one" in text.stdout
    assert "local echo: running 2, chosen 3" in text.stdout
