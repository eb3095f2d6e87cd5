"""The fleet model without processes: commands, matching by pid and host, plans, reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mdp.errors import ProtocolError
from mdp.status import BrokerStatus, BrokerView
from mdpctl import rollout
from mdpctl.cluster import Cluster, Host, local_cluster
from mdpctl.errors import CtlError, ProcessFailed, UsageError
from mdpctl.fleet import Fleet, HostState, Role, build_host_state, parse_command
from mdpctl.readiness import SlotKey, slot_gaps, wait_until
from mdpctl.report import build_report, render_text
from mdpctl.rpc import ProcessConfig, ProcessInfo, SupervisorEndpoint
from mdpctl.scaling import plan_scale
from mdpctl.table import format_duration, format_table

A, B = "tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002"
WORKER = "/usr/bin/python3 -m mdp.worker --broker {a} --broker {b} --service {svc}"


def proc(group: str, name: str, state: str = "RUNNING", pid: int = 0) -> ProcessInfo:
    return ProcessInfo(group, name, state, pid, 1000, 1060, 0, "", "")


def host_state(name: str, specs: list[tuple[str, str, str, int, bool]]) -> HostState:
    """specs: (service, process name, state, pid, autostart)."""
    configs: dict[str, ProcessConfig] = {}
    procs = []
    for service, pname, state, pid, autostart in specs:
        command = WORKER.format(a=A, b=B, svc=service)
        configs[f"{service}:{pname}"] = ProcessConfig(service, pname, command, autostart, 1, 40)
        procs.append(proc(service, pname, state, pid))
    configs["brokers:broker-7001"] = ProcessConfig(
        "brokers", "broker-7001", "python -m mdp.broker --bind " + A, True, 1, 10
    )
    procs.append(proc("brokers", "broker-7001", "RUNNING", 99))
    endpoint = SupervisorEndpoint(f"unix:///nonexistent/{name}.sock")
    return build_host_state(Host(name, endpoint), 1, configs, tuple(procs))


def status(endpoint: str, workers: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "broker": {"endpoint": endpoint, "pid": 5, "host": "h", "version": "v1", "uptime_s": 9.5},
        "services": {s: {"queue": 0, "workers": ws} for s, ws in workers.items()},
        "counters": {"requests": 3, "replies": 3, "errors": 0, "expired": 0, "requeued": 0},
    }


def worker(pid: int, host: str = "box", state: str = "idle", version: str = "v1") -> dict[str, Any]:
    return {
        "identity": f"{pid:08x}",
        "state": state,
        "host": host,
        "pid": pid,
        "version": version,
        "served": 7,
        "uptime_s": 12.0,
    }


def view(endpoint: str, workers: dict[str, list[dict[str, Any]]]) -> BrokerView:
    return BrokerView(endpoint, BrokerStatus.from_wire(status(endpoint, workers)))


@pytest.mark.parametrize(
    "command, role",
    [
        ("python3 -m mdp.worker --broker tcp://a:1 --service ecard", Role("worker", "ecard")),
        ("/opt/bin/mdp-worker --service=thumbnail", Role("worker", "thumbnail")),
        ("python -m mdp.broker --bind tcp://*:5555", Role("broker", binds=("tcp://*:5555",))),
        (
            "/usr/bin/mdp-broker --bind tcp://a:1 --bind tcp://b:2",
            Role("broker", binds=("tcp://a:1", "tcp://b:2")),
        ),
        ("python -m mdpctl.probe", Role("other")),
        ("sleep 'unbalanced", Role("other")),
        ("", Role("other")),
    ],
)
def test_roles_come_from_the_command_line(command: str, role: Role) -> None:
    assert parse_command(command) == role


def test_slots_are_found_and_numbered() -> None:
    state = host_state(
        "alpha",
        [
            ("echo", "echo-01", "RUNNING", 11, True),
            ("echo", "echo-00", "RUNNING", 10, True),
            ("echo", "echo-02", "STOPPED", 0, False),
            ("ecard", "ecard-00", "FATAL", 0, True),
        ],
    )
    assert [s.number for s in state.service_slots("echo")] == [0, 1, 2]
    assert state.services() == ["ecard", "echo"]
    assert [p.name for p in state.broker_processes] == ["broker-7001"]


def test_pids_that_collide_across_hosts_are_told_apart_by_host_name() -> None:
    alpha = host_state(
        "alpha",
        [("echo", "echo-00", "RUNNING", 10, True), ("echo", "echo-01", "RUNNING", 11, True)],
    )
    beta = host_state(
        "beta", [("echo", "echo-00", "RUNNING", 10, True), ("echo", "echo-01", "RUNNING", 12, True)]
    )
    entries = {
        "echo": [
            worker(10, "a.example"),
            worker(11, "a.example"),
            worker(10, "b.example"),
            worker(12, "b.example", version="v2"),
        ]
    }
    fleet = Fleet((alpha, beta), (view(A, entries), view(B, entries)))
    assert fleet.hostnames() == {"alpha": "a.example", "beta": "b.example"}
    beta_10 = fleet.registrations(beta.slots[0])
    assert {e.host for e in beta_10.values() if e} == {"b.example"}
    report = build_report(fleet)
    versions = {(w["host"], w["process"]): w["version"] for w in report["workers"]}
    assert versions[("beta", "echo:echo-01")] == "v2"
    assert versions[("alpha", "echo:echo-00")] == "v1"
    assert report["unmanaged"] == []


def test_report_shows_down_brokers_unmanaged_workers_and_hides_spare_slots() -> None:
    state = host_state(
        "local",
        [("echo", "echo-00", "RUNNING", 10, True), ("echo", "echo-01", "STOPPED", 0, False)],
    )
    fleet = Fleet(
        (state,),
        (
            view(A, {"echo": [worker(10), worker(77, "elsewhere", "busy")]}),
            BrokerView(B, None, "no answer within 2 s"),
        ),
    )
    report = build_report(fleet)
    assert report["brokers"][1] == {"endpoint": B, "up": False, "error": "no answer within 2 s"}
    (echo,) = report["services"]
    assert (echo["running"], echo["slots"]) == (1, 2)
    assert echo["serving"] == {A: 2, B: None}
    assert report["workers"][0]["brokers"] == {A: "idle", B: None}
    assert report["workers"][0]["served"] == 7
    assert report["unmanaged"][0]["pid"] == 77
    text = render_text(report)
    assert "DOWN" in text and "echo:echo-00" in text and "echo:echo-01" not in text
    assert "1 spare slot(s) stopped" in text and "elsewhere" in text
    assert "idle -" in text


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "not a map"),
        ({"broker": {}, "services": {}, "counters": {}}, "broker.endpoint"),
        (dict(status(A, {}), services={"echo": {"queue": "x", "workers": []}}), "queue"),
        (dict(status(A, {"echo": [dict(worker(1), pid=True)]})), "pid"),
    ],
)
def test_malformed_status_is_refused(data: Any, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        BrokerStatus.from_wire(data)


def test_scale_plan_starts_lowest_and_stops_highest() -> None:
    state = host_state(
        "local",
        [
            ("echo", f"echo-0{i}", st, 10 + i, i < 2)
            for i, st in enumerate(["RUNNING", "FATAL", "RUNNING", "STOPPED", "STOPPED"])
        ],
    )
    fleet = Fleet((state,), ())
    (up,) = plan_scale(fleet, "echo", 4)
    assert [s.process.name for s in up.start] == ["echo-01", "echo-03"]
    assert (up.before, up.after) == (2, 4)
    (down,) = plan_scale(fleet, "echo", 1)
    assert [s.process.name for s in down.stop] == ["echo-02"]
    (same,) = plan_scale(fleet, "echo", 2)
    assert not same.start and not same.stop
    with pytest.raises(UsageError, match="5 slots for echo, fewer than 6"):
        plan_scale(fleet, "echo", 6)
    with pytest.raises(UsageError, match="services: echo"):
        plan_scale(fleet, "ecard", 1)


def test_scale_refuses_when_a_host_cannot_be_read() -> None:
    broken = HostState(Host("x", SupervisorEndpoint("unix:///nope")), error="not reachable")
    with pytest.raises(CtlError, match="not reachable; nothing was changed"):
        plan_scale(Fleet((broken,), ()), "echo", 1)


def test_rollout_plan_restarts_failed_first_and_skips_current() -> None:
    state = host_state(
        "local",
        [
            ("echo", "echo-00", "RUNNING", 10, True),
            ("echo", "echo-01", "RUNNING", 11, True),
            ("echo", "echo-02", "FATAL", 0, True),
            ("echo", "echo-03", "STOPPED", 0, False),
        ],
    )
    entries = {"echo": [worker(10, version="v2"), worker(11, version="v1")]}
    fleet = Fleet((state,), (view(A, entries), view(B, entries)))
    cluster = local_cluster(Path("/nonexistent"))
    plan = rollout.make_plan(cluster, fleet, "echo", version="v2")
    assert [s.process.name for s in plan.steps] == ["echo-02", "echo-01"]
    assert [s.process.name for s in plan.up_to_date] == ["echo-00"]
    forced = rollout.make_plan(cluster, fleet, None, version="v2", force=True)
    assert [s.process.name for s in forced.steps] == ["echo-02", "echo-00", "echo-01"]


def test_rollout_batches_never_mix_hosts() -> None:
    alpha = host_state("alpha", [("echo", f"echo-0{i}", "RUNNING", i + 1, True) for i in range(3)])
    beta = host_state("beta", [("echo", "echo-00", "RUNNING", 9, True)])
    steps = list(alpha.slots) + list(beta.slots)
    sizes = [[(s.host, s.number) for s in b] for b in rollout.batches(steps, 2, {"echo": 4})]
    assert sizes == [[("alpha", 0), ("alpha", 1)], [("alpha", 2)], [("beta", 0)]]
    # Never every worker of a service at once: with 2 running, batches of 1.
    two = [[s.number for s in b] for b in rollout.batches(steps[:2], 5, {"echo": 2})]
    assert two == [[0], [1]]
    mixed = host_state(
        "gamma",
        [
            ("echo", "echo-00", "RUNNING", 1, True),
            ("ecard", "ecard-00", "RUNNING", 2, True),
            ("ecard", "ecard-01", "RUNNING", 3, True),
        ],
    )
    grouped = rollout.batches(list(mixed.slots), 3, {"echo": 2, "ecard": 2})
    assert [[s.fullname for s in b] for b in grouped] == [
        ["ecard:ecard-00"],
        ["ecard:ecard-01", "echo:echo-00"],
    ]


def test_rollout_needs_every_broker() -> None:
    fleet = Fleet((), (view(A, {}), BrokerView(B, None, "no answer within 2 s")))
    with pytest.raises(CtlError, match=f"broker {B}: no answer within 2 s"):
        rollout.check_preconditions(fleet)


def test_slot_gaps_name_what_is_missing_and_fail_fast() -> None:
    state = host_state(
        "local",
        [
            ("echo", "echo-00", "RUNNING", 10, True),
            ("echo", "echo-01", "STARTING", 11, True),
            ("echo", "echo-02", "FATAL", 0, True),
        ],
    )
    cluster = Cluster((A, B), (state.host,), "test")
    fleet = Fleet((state,), (view(A, {"echo": [worker(10, version="v2")]}), view(B, {})))
    gaps = slot_gaps(
        cluster, fleet, [SlotKey("local", "echo:echo-00"), SlotKey("local", "echo:echo-01")], "v2"
    )
    assert gaps == (
        f"local/echo:echo-00 (pid 10) is not registered with {B}; local/echo:echo-01 is STARTING"
    )
    with pytest.raises(ProcessFailed, match="runs code version v2, not v3"):
        slot_gaps(cluster, fleet, [SlotKey("local", "echo:echo-00")], "v3")
    with pytest.raises(ProcessFailed, match="echo-02 is FATAL"):
        slot_gaps(cluster, fleet, [SlotKey("local", "echo:echo-02")])


def test_wait_until_reports_what_was_missing() -> None:
    calls = []

    def check() -> str | None:
        calls.append(1)
        return None if len(calls) == 3 else f"try {len(calls)}"

    wait_until(check, 5.0, "three tries", interval_s=0.001)
    with pytest.raises(CtlError, match="gave up after 0.05 s waiting for never: still no"):
        wait_until(lambda: "still no", 0.05, "never", interval_s=0.01)


def test_tables_and_durations() -> None:
    assert format_table(["A", "BB"], [["x", None], ["long", 3]]) == "A     BB\nx     -\nlong  3"
    assert [format_duration(s) for s in (None, 5, 65, 3725, 90000)] == [
        "-",
        "5s",
        "1m05s",
        "1h02m",
        "1d01h",
    ]


def test_broker_upgrade_needs_every_broker_and_finds_each_by_pid() -> None:
    from mdpctl import brokerroll

    fleet = Fleet((host_state("h1", []),), (view(A, {}), BrokerView(B, None, "not reachable")))
    with pytest.raises(CtlError, match=f"broker {B}: not reachable; a rolling upgrade needs "
                       "every broker up"):
        brokerroll.check_preconditions(fleet)
    # The broker process of h1 has pid 99; the status of A says pid 5: not ours.
    with pytest.raises(CtlError, match=f"broker {A} \\(pid 5 on h\\) is not run by one of"):
        brokerroll.locate(Fleet((host_state("h1", []),), (view(A, {}),)))
    data = status(A, {})
    data["broker"]["pid"] = 99
    views = (BrokerView(A, BrokerStatus.from_wire(data)),)
    found = brokerroll.locate(Fleet((host_state("h1", []),), views))
    assert [(b.endpoint, b.host, b.process.fullname, b.version) for b in found] == [
        (A, "h1", "brokers:broker-7001", "v1")
    ]


def test_broker_serving_gaps_name_workers_not_back_yet() -> None:
    from mdpctl import brokerroll

    state = host_state("h1", [("echo", "echo-00", "RUNNING", 11, True),
                              ("echo", "echo-01", "RUNNING", 12, True),
                              ("echo", "echo-02", "STOPPED", 0, False)])
    fleet = Fleet((state,), ())
    cluster = local_cluster(Path("/nonexistent"), (A,))
    back = view(A, {"echo": [worker(11), worker(12)]})
    assert brokerroll.serving_gaps(cluster, fleet, back) is None
    half = view(A, {"echo": [worker(11)]})
    assert brokerroll.serving_gaps(cluster, fleet, half) == (
        f"workers not registered with {A} yet: h1/echo:echo-01"
    )
