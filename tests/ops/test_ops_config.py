"""supervisord configuration: the templates, the profiles, and the files in supervisor/."""

from __future__ import annotations

import hashlib
import shlex
from pathlib import Path

import pytest
from supervisor.datatypes import RestartUnconditionally
from supervisor.options import ServerOptions

from mdpctl import hostconf
from mdpctl.cli import main
from mdpctl.errors import UsageError

from .opstools import REPO, supervisord_reads

SUPERVISOR_DIR = REPO / "supervisor"
COMMITTED = sorted(SUPERVISOR_DIR.glob("*.conf"))


def groups(options: ServerOptions) -> dict[str, list[tuple[str, bool]]]:
    return {
        g.name: [(p.name, p.autostart) for p in g.process_configs]
        for g in options.process_group_configs
    }


def host(**changes: object) -> hostconf.HostConfig:
    fields: dict[str, object] = {
        "title": "test",
        "generated_by": "test",
        "python": "/usr/bin/python3",
        "run_dir": "%(here)s",
        "broker_binds": ("tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002"),
        "brokers": ("tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002"),
        "pools": (hostconf.WorkerPool("echo", 2, 3), hostconf.WorkerPool("ecard", 1, 0)),
    }
    fields.update(changes)
    return hostconf.HostConfig(**fields)  # type: ignore[arg-type]


def test_slots_are_numbered_on_from_the_started_ones_to_the_spare_ones(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    found = groups(supervisord_reads(hostconf.render(host()), tmp_path))
    assert found["echo"] == [
        ("echo-00", True),
        ("echo-01", True),
        ("echo-02", False),
        ("echo-03", False),
        ("echo-04", False),
    ]
    assert found["ecard"] == [("ecard-00", True)]
    assert found["brokers"] == [("broker-7001", True), ("broker-7002", True)]
    assert found["mdp-version"] == [("mdp-version", False)]


def test_the_doors_have_time_to_drain_before_supervisord_kills_them(tmp_path: Path) -> None:
    """On SIGTERM a door gives its requests in flight its --timeout (10 s) and a margin,
    in two phases at most (aiohttp's shutdown; the Gearman door's foreground, then its
    workers' jobs): supervisord must not SIGKILL it before."""
    (tmp_path / "log").mkdir()
    config = host(http_listen="127.0.0.1:8080", gearman_listen="127.0.0.1:4730")
    options = supervisord_reads(hostconf.render(config), tmp_path)
    doors = {p.name: p for g in options.process_group_configs for p in g.process_configs
             if p.name in (hostconf.HTTP_PROGRAM, hostconf.GEARMAN_PROGRAM)}
    assert sorted(doors) == [hostconf.GEARMAN_PROGRAM, hostconf.HTTP_PROGRAM]
    for door in doors.values():
        assert door.stopsignal == 15 and door.stopwaitsecs >= 2 * (10 + 1)


def test_workers_stop_gracefully_with_time_to_spare(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    options = supervisord_reads(hostconf.render(host(time_limit_s=12.5)), tmp_path)
    for group in options.process_group_configs:
        for process in group.process_configs:
            if group.name in ("echo", "ecard"):
                assert process.stopsignal == 15  # SIGTERM: finish the request in hand
                assert process.stopwaitsecs >= 12.5 + 5
                assert "--time-limit 12.5" in process.command
                assert process.autorestart is RestartUnconditionally  # after --max-requests
            assert process.directory == str(tmp_path)  # never the code tree (sys.path[0])


def start_retries(options: ServerOptions) -> dict[str, int]:
    return {p.name: p.startretries for g in options.process_group_configs
            for p in g.process_configs}


def test_start_retries_are_the_programs_own_unless_one_number_is_given(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    doors = {"http_listen": "127.0.0.1:7003", "gearman_listen": "127.0.0.1:7004"}
    default = start_retries(supervisord_reads(hostconf.render(host(**doors)), tmp_path))
    assert default.pop("mdp-version") == 0  # a probe run once, never retried
    assert default.pop("broker-7001") == default.pop("broker-7002") == 10
    assert set(default.values()) == {3} and {"mdp-http", "mdp-gearman", "mdp-scale",
                                         "echo-04", "ecard-00"} <= set(default)
    given = start_retries(supervisord_reads(
        hostconf.render(host(start_retries=1, **doors)), tmp_path))
    assert given.pop("mdp-version") == 0
    assert set(given.values()) == {1} and set(given) == set(default) | {"broker-7001",
                                                                         "broker-7002"}
    with pytest.raises(UsageError, match="--start-retries"):
        host(start_retries=-1)


def test_control_socket_is_for_its_owner_only(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    options = supervisord_reads(hostconf.render(host()), tmp_path)
    (unix,) = options.configroot.supervisord.server_configs
    assert unix["family"] == 1 and unix["chmod"] == 0o700  # AF_UNIX


def test_http_control_needs_a_login(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    rpc = hostconf.RpcListen("127.0.0.1:9101", "ops", "{SHA}" + "ab" * 20)
    options = supervisord_reads(hostconf.render(host(rpc=rpc)), tmp_path)
    inet = next(c for c in options.configroot.supervisord.server_configs if c["family"] != 1)
    assert (inet["host"], inet["port"]) == ("127.0.0.1", 9101)
    assert inet["username"] == "ops" and inet["password"] == "{SHA}" + "ab" * 20


def test_paths_are_protected_from_expansion(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    path = "/srv/100%real"
    text = hostconf.render(host(pythonpath=hostconf.escape_env(path), python=hostconf.escape(path)))
    options = supervisord_reads(text, tmp_path)
    assert options.process_group_configs[-1].process_configs[0].command.startswith(path)
    assert options.configroot.supervisord.environment["PYTHONPATH"] == "/srv/100%real"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"brokers": ()}, "at least one broker"),
        ({"pools": (), "broker_binds": ()}, "at least one broker or one worker pool"),
        ({"broker_binds": ("tcp://a:1", "tcp://b:1")}, "different ports"),
        ({"brokers": ("tcp://127.0.0.1",)}, "not an endpoint"),
        ({"time_limit_s": 0}, "--time-limit"),
        ({"link_floor": 50_000}, "--link-floor must be at least 100KB/s"),
        ({"pools": (hostconf.WorkerPool("echo", 1), hostconf.WorkerPool("echo", 2))}, "twice"),
    ],
)
def test_inconsistent_hosts_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        host(**changes)


@pytest.mark.parametrize("name", ["brokers", "mdp-version", "a:b", "", "-x"])
def test_unusable_service_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError):
        hostconf.WorkerPool(name, 1)


def test_worker_host_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIPS_SUPERVISOR_PASSWORD", "hunter2")
    out = tmp_path / "w.conf"
    argv = ["config", "worker-host", "--cpus", "3", "--broker", "tcp://10.0.0.1:5555"]
    argv += ["--service", "ecard", "--service", "echo=1", "--run-dir", str(tmp_path)]
    assert main([*argv, "-o", str(out)]) == 0
    (tmp_path / "log").mkdir()
    found = groups(supervisord_reads(out.read_text(), tmp_path))
    assert [n for n, started in found["ecard"] if started] == ["ecard-00", "ecard-01", "ecard-02"]
    assert len(found["ecard"]) == 6  # --spare defaults to --cpus
    assert [n for n, started in found["echo"] if started] == ["echo-00"]
    assert "brokers" not in found
    digest = hashlib.sha1(b"hunter2").hexdigest()
    assert f"password={{SHA}}{digest}" in out.read_text()
    assert "hunter2" not in out.read_text()


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "local", "--cpus", "2"],
        ["config", "worker-host", "--workers", "2", "--cpus", "2", "--broker", "tcp://a:1"],
        ["config", "worker-host", "--cpus", "2"],
        ["config", "broker-host", "--service", "echo"],
        ["config", "local", "--service", "echo=x"],
        ["config", "local", "--curve-secret", "k.key_secret"],
        ["config", "broker-host", "--curve-secret", "k.key_secret"],  # no allow-lists
        ["config", "broker-host", "--client-keys", "c", "--worker-keys", "w"],  # no own key
        ["config", "worker-host", "--cpus", "1", "--broker", "tcp://a:1",
         "--curve-secret", "k.key_secret"],  # no broker key
        ["config", "broker-host", "--broker-key", "b.key"],
    ],
)
def test_config_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith("mdpctl: ")


def test_supervisor_directory_has_the_promised_files() -> None:
    names = {path.name for path in COMMITTED}
    assert {"local.conf", "broker-host.conf"} <= names
    assert any(name.startswith("worker-host") for name in names)
    assert not (SUPERVISOR_DIR / "__init__.py").exists()  # must not shadow the package


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_file_is_what_its_command_writes(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DIPS_SUPERVISOR_PASSWORD", raising=False)
    line = next(x for x in path.read_text().splitlines() if x.startswith("; Generated by: "))
    argv = shlex.split(line.removeprefix("; Generated by: "))
    assert argv[:2] == ["mdpctl", "config"]
    out = tmp_path / path.name
    assert main([*argv[1:], "-o", str(out)]) == 0
    assert out.read_text() == path.read_text(), f"regenerate {path.name}: {shlex.join(argv)}"


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_committed_file_is_valid_for_supervisord(path: Path, tmp_path: Path) -> None:
    text = path.read_text().replace("/var/lib/dips", str(tmp_path / "run"))
    (tmp_path / "supervisor").mkdir()
    (tmp_path / "run" / "log").mkdir(parents=True)
    options = supervisord_reads(text, tmp_path / "supervisor")
    names = [g.name for g in options.process_group_configs]
    assert names, path.name
    for group in options.process_group_configs:
        for process in group.process_configs:
            assert process.directory == str(tmp_path / "supervisor" / ".." / "run") or (
                process.directory == str(tmp_path / "run")
            )


def test_curve_keys_reach_the_command_lines(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIPS_SUPERVISOR_PASSWORD", "pw")
    broker_conf, worker_conf = tmp_path / "b.conf", tmp_path / "w.conf"
    assert main(["config", "broker-host", "--curve-secret", "/k/broker.key_secret",
                 "--client-keys", "/k/clients", "--worker-keys", "/k/workers",
                 "-o", str(broker_conf)]) == 0
    assert main(["config", "worker-host", "--cpus", "1", "--broker", "tcp://10.0.0.1:5555",
                 "--service", "echo", "--curve-secret", "/k/w1.key_secret",
                 "--broker-key", "/k/broker.key", "-o", str(worker_conf)]) == 0
    broker_text, worker_text = broker_conf.read_text(), worker_conf.read_text()
    assert ("--curve-secret /k/broker.key_secret --client-keys /k/clients "
            "--worker-keys /k/workers") in broker_text
    assert "--curve-secret /k/w1.key_secret --broker-key /k/broker.key" in worker_text
    generated_by = worker_text.splitlines()[1]  # the command that writes the file again
    assert "--curve-secret /k/w1.key_secret --broker-key /k/broker.key" in generated_by


def test_under_curve_the_front_doors_sign_with_a_client_key_of_their_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Brokers refuse requests signed with a worker key: mdp-gearman and mdp-http get the
    client key pair given as --door-secret, never the host's worker key."""
    monkeypatch.setenv("DIPS_SUPERVISOR_PASSWORD", "pw")
    base = ["config", "worker-host", "--cpus", "1", "--broker", "tcp://10.0.0.1:5555",
            "--service", "echo", "--curve-secret", "/k/w1.key_secret",
            "--broker-key", "/k/broker.key", "--gearman", "127.0.0.1:4730",
            "--http", "127.0.0.1:8080"]
    assert main([*base, "-o", str(tmp_path / "no-door-key.conf")]) == 2
    assert "--door-secret" in capsys.readouterr().err
    conf = tmp_path / "w.conf"
    assert main([*base, "--door-secret", "/k/door.key_secret", "-o", str(conf)]) == 0
    commands = [line for line in conf.read_text().splitlines()
                if line.startswith("command=")]
    doors = [c for c in commands if "mdp_gearman" in c or "mdp_http" in c]
    workers = [c for c in commands if "mdp.worker" in c]
    assert len(doors) == 2 and workers
    for door in doors:
        assert "--curve-secret /k/door.key_secret --broker-key /k/broker.key" in door
        # the Gearman door's Gearman workers are workers: their links take the host's key
        assert ("--worker-secret /k/w1.key_secret" in door) == ("mdp_gearman" in door)
        assert "--curve-secret /k/w1.key_secret" not in door
    assert all("--curve-secret /k/w1.key_secret" in w for w in workers)
    broker_host = tmp_path / "b.conf"  # a broker host's door: its own broker's public key
    assert main(["config", "broker-host", "--curve-secret", "/k/broker.key_secret",
                 "--client-keys", "/k/clients", "--worker-keys", "/k/workers",
                 "--broker-key", "/k/broker.key", "--door-secret", "/k/door.key_secret",
                 "--http", "127.0.0.1:8080", "-o", str(broker_host)]) == 0
    http = next(line for line in broker_host.read_text().splitlines()
                if line.startswith("command=") and "mdp_http" in line)
    assert "--curve-secret /k/door.key_secret --broker-key /k/broker.key" in http


def test_the_link_floor_reaches_every_program_as_its_own_command_line_reads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--link-floor goes to the brokers, the workers and both doors alike, and each program's
    own parser reads it back as the rate given; left out, no program line names it."""
    from mdp.config import parse_broker_args, parse_worker_args
    from mdp_gearman.config import parse_args as gearman_args
    from mdp_http.config import parse_args as http_args

    monkeypatch.setenv("DIPS_SUPERVISOR_PASSWORD", "pw")
    doors = ["--gearman", "127.0.0.1:4730", "--http", "127.0.0.1:8080"]
    read = {
        "mdp.broker": lambda argv: parse_broker_args(argv)[0].link_floor,
        "mdp.worker": lambda argv: parse_worker_args(argv)[0].link_floor,
        "mdp_gearman": lambda argv: gearman_args(argv)[0].link_floor,
        "mdp_http": lambda argv: http_args(argv, environ={}).link_floor,
    }
    for profile in (["local", "--service", "echo"],
                    ["worker-host", "--cpus", "1", "--broker", "tcp://10.0.0.1:5555",
                     "--service", "echo"]):
        found: dict[str, int] = {}
        for floor in ([], ["--link-floor", "50Mbit/s"]):
            conf = tmp_path / "out.conf"
            assert main(["config", *profile, *doors, *floor, "-o", str(conf), "--force"]) == 0
            text = conf.read_text()
            assert ("--link-floor 6250KB/s" in text.splitlines()[1]) == bool(floor)
            for line in (x for x in text.splitlines() if x.startswith("command=")):
                argv = shlex.split(line.removeprefix("command="))
                if argv[2] in read:
                    assert ("--link-floor" in argv) == bool(floor), line
                    if floor:
                        found[argv[2]] = read[argv[2]](argv[3:])
        expected = set(read) - ({"mdp.broker"} if profile[0] == "worker-host" else set())
        assert found == dict.fromkeys(expected, 6_250_000)
