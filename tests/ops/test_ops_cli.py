"""The command line without a cluster: help, usage errors, and failures as one clear line."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from mdp.version import code_version, package_version
from mdpctl import commands, probe
from mdpctl.cli import build_parser, main, split_doc
from mdpctl.lock import exclusive, lock_path
from testkit import free_ports, processes_under, taken_port


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", commands.COMMANDS)
def test_every_command_has_help_with_its_usage(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, name, "--help")
    summary, usage, _ = split_doc(commands.load(name).__doc__ or "")
    assert code == 0
    assert usage is not None and out.startswith(f"usage: mdpctl {name}")
    assert summary in out


def test_top_level_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in commands.COMMANDS:
        assert name in out
    assert "exit status" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "required: COMMAND"),
        (["scale", "echo", "x"], "'x' is not a whole number"),
        (["scale", "echo", "-1"], "see mdpctl scale --help"),
        (["frobnicate"], "invalid choice"),
        (["call", "echo", "--json", "[1, 2]"], "must be a JSON object"),
        (["call", "echo", "--json", "{nope"], "not valid JSON"),
        (["reload", "--batch", "0"], "--batch: '0': must be at least 1"),
        (["up", "--timeout", "0"], "--timeout: '0': a number of seconds must be more than 0"),
        (["up", "--workers", "0"], "--workers: '0': must be at least 1"),
        (["up", "--max-requests", "-1"], "--max-requests: '-1': cannot be negative"),
        (["call", "echo", "--timeout", "inf"], "--timeout: 'inf': a number of seconds"),
        (["call", "echo", "--retries", "-1"], "--retries: '-1': cannot be negative"),
        (["down", "--timeout", "-1"], "--timeout: '-1': a number of seconds"),
        (["status", "--timeout", "nan"], "--timeout: 'nan': a number of seconds"),
        (["services", "--timeout", "0"], "--timeout: '0': a number of seconds"),
        (["batch", "echo", "x", "-o", "out", "--window", "0"], "--window: '0': must be"),
        (["config", "local", "--time-limit", "-5"], "--time-limit: '-5': a number of seconds"),
        (["--cluster", "/nonexistent/cluster.toml", "status"], "does not exist"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--run-dir", str(tmp_path), *argv)
    assert code == 2
    assert err.count("\n") == 1 and message in err, err


def test_a_service_no_worker_could_offer_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (port,) = free_ports(1)
    code, out, err = run(
        capsys, "--run-dir", str(tmp_path), "up", "--broker", f"tcp://127.0.0.1:{port}",
        "--http", "off", "--gearman", "off", "--service", "echo", "--service", "nosuch",
    )
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "--service nosuch: unknown service 'nosuch'; known: " in err and "echo" in err
    assert processes_under(tmp_path) == [] and not (tmp_path / "supervisord.conf").exists()


def test_a_file_that_cannot_be_written_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, out, err = run(capsys, "--run-dir", str(tmp_path), "samples", str(blocker / "sub"))
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("mdpctl: ") and str(blocker / "sub") in err and "Traceback" not in err


def test_a_file_field_that_cannot_be_read_is_named_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (port,) = free_ports(1)
    base = ["--run-dir", str(tmp_path), "call", "thumbnail", "--broker", f"tcp://127.0.0.1:{port}"]
    code, _, err = run(capsys, *base, "--file", f"image={tmp_path}/none.jpg")
    assert code == 2 and one_line(err) == (
        f"mdpctl: field image: cannot read {tmp_path}/none.jpg: No such file or directory\n")
    code, _, err = run(capsys, *base, "--json", f'{{"image": "@{tmp_path}/none.jpg"}}')
    assert code == 2 and "No such file or directory (a value that starts with @" in one_line(err)
    code, _, err = run(capsys, *base, "-o", f"{tmp_path}/no-dir/out.jpg")
    assert code == 2 and one_line(err) == (
        f"mdpctl: -o {tmp_path}/no-dir/out.jpg: the directory {tmp_path}/no-dir does not exist\n")


@pytest.mark.timeout(60)  # each refusal is at once; waiting out a client's timeout is a bug
def test_nothing_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--run-dir", str(tmp_path), "status")
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and f"no cluster is running in {tmp_path}" in err, err
    (port,) = free_ports(1)
    nowhere = ["call", "echo", "--broker", f"tcp://127.0.0.1:{port}"]
    for argv in (["reload"], ["scale", "echo", "2"]):
        code, _, err = run(capsys, "--run-dir", str(tmp_path), *argv)
        assert code == 3, argv
        assert err.count("\n") == 1 and f"no cluster is running in {tmp_path}" in err, err
    code, _, err = run(capsys, "--run-dir", str(tmp_path), *nowhere)
    assert code == 3 and err.count("\n") == 1 and "no broker is reachable" in err, err
    code, out, _ = run(capsys, "--run-dir", str(tmp_path), "down")
    assert code == 0 and "no cluster is running" in out


def test_up_refuses_a_taken_port_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (free,) = free_ports(1)
    with taken_port(avoid=[free]) as taken:
        busy = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        argv = ["--run-dir", str(tmp_path), "up", "--broker", busy]
        code, _, err = run(capsys, *argv, "--broker", f"tcp://127.0.0.1:{free}")
    port = busy.rpartition(":")[2]
    assert code == 2 and err.count("\n") == 1, err
    assert f"broker {busy} cannot start: port {port} on 127.0.0.1 is in use by pid " \
        f"{os.getpid()} (" in err, err
    assert processes_under(tmp_path) == []


def test_up_and_down_are_for_the_local_cluster_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = tmp_path / "c.toml"
    cluster.write_text('brokers = ["tcp://127.0.0.1:1"]\n[hosts.a]\nsupervisor = "http://h:1"\n')
    for command in ("up", "down"):
        code, _, err = run(capsys, "--cluster", str(cluster), command)
        assert code == 2 and "local cluster only" in err


def test_one_fleet_change_at_a_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with exclusive(lock_path(tmp_path, None), "test"):
        for argv in (["reload"], ["scale", "echo", "1"]):
            code, _, err = run(capsys, "--run-dir", str(tmp_path), *argv)
            assert code == 1
            assert f"another `mdpctl test` is changing this cluster (pid {os.getpid()})" in err
    code, _, err = run(capsys, "--run-dir", str(tmp_path), "reload")
    assert code == 3  # the lock is free again; nothing runs here


def test_version_probe_prints_the_code_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mdpctl.probe"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result = probe.parse("supervisord noise\n" + out.stdout)
    assert result is not None and result["version"] == code_version()
    assert probe.parse("mdp-version failed: ImportError: no\n") is None
    assert probe.parse("mdp-version: [1]\n") is None


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                for inner, subsub in _subparsers(sub):
                    yield f"{name} {inner}", subsub


def test_every_flag_has_help_and_says_its_default() -> None:
    parser = build_parser()
    missing = []
    for name, sub in [("mdpctl", parser), *_subparsers(parser)]:
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{where}: no help")
            elif (action.option_strings and action.nargs != 0 and not action.required
                  and "default" not in action.help):
                missing.append(f"{where}: no default in {action.help!r}")
    assert missing == []


@pytest.mark.parametrize("name", ["up", "config"])
def test_usage_of_up_and_config_lists_the_door_and_log_options(name: str) -> None:
    _summary, usage, _ = split_doc(commands.load(name).__doc__ or "")
    assert usage is not None
    for flag in ("--http", "--gearman", "--log-level") + (("--door-secret",) if name == "config"
                                                          else ()):
        assert flag in usage, flag


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"mdpctl {package_version()} (code version {code_version()})\n"


@pytest.mark.parametrize("argv", [
    ["call", "echo", "--broker", "127.0.0.1:5555"],
    ["services", "--broker", "127.0.0.1:5555"],
    ["up", "--broker", "127.0.0.1:5555"],
    ["config", "local", "--broker", "127.0.0.1:5555"],
])
def test_a_broker_without_its_scheme_is_refused_at_once(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_connection(*args: object) -> None:
        pytest.fail(f"a connection was tried: {args[1:]}")

    monkeypatch.setattr(zmq.Socket, "connect", no_connection)
    monkeypatch.setattr(socket.socket, "connect", no_connection)
    code, out, err = run(capsys, "--run-dir", str(tmp_path), *argv)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "did you mean 'tcp://127.0.0.1:5555'?" in err
    assert processes_under(tmp_path) == []


@pytest.mark.parametrize("flag", ["--http", "--gearman"])
def test_a_door_address_is_host_and_port_or_off(
    flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "--run-dir", str(tmp_path), "up", flag, "http://127.0.0.1:80")
    assert code == 2 and "is not HOST:PORT" in err and err.count("\n") == 1


def test_a_port_asked_for_twice_names_both_users(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [port] = free_ports(1)
    code, out, err = run(capsys, "--run-dir", str(tmp_path), "up", "--broker",
                         f"tcp://127.0.0.1:{port}", "--http", f"127.0.0.1:{port}",
                         "--gearman", "off")
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert (f"port {port} is asked for twice: by broker tcp://127.0.0.1:{port} and by "
            f"mdp-http (127.0.0.1:{port})") in err
    assert processes_under(tmp_path) == []


def test_a_run_directory_too_deep_for_a_unix_socket_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deep = tmp_path / ("d" * 100)
    code, _, err = run(capsys, "--run-dir", str(deep), "up", "--http", "off", "--gearman", "off")
    assert code == 2 and err.count("\n") == 1
    assert f"the run directory {deep} is too deep for supervisord's control socket" in err
    assert processes_under(tmp_path) == []


def test_a_door_is_known_by_its_command() -> None:
    from mdpctl.doors import door_kind

    assert door_kind("/usr/bin/python3 -m mdp_http --listen 127.0.0.1:8080 --broker x") == (
        "mdp-http", "127.0.0.1:8080")
    assert door_kind("/opt/dips/bin/mdp-gearman --broker x --listen 0.0.0.0:4730") == (
        "mdp-gearman", "0.0.0.0:4730")
    assert door_kind("python -m mdp.worker --service echo") is None
    assert door_kind("python -m 'unbalanced") is None


def test_the_holder_of_a_port_is_found_in_proc() -> None:
    from mdpctl import ports

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        found = ports.holder(port)
        assert found is not None and found.pid == os.getpid() and found.cwd == os.getcwd()
        assert "pytest" in found.command or "python" in found.command
        problem = ports.check_free("127.0.0.1", port)
        assert problem is not None and f"in use by pid {os.getpid()} (" in problem
    assert ports.holder(port) is None and ports.check_free("127.0.0.1", port) is None


HOLD_A_PORT = """
import socket, sys
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
print(listener.getsockname()[1], flush=True)
sys.stdin.read()
"""


def test_a_holder_whose_command_spans_lines_is_named_on_one_line() -> None:
    from mdpctl import ports

    holder = subprocess.Popen([sys.executable, "-c", HOLD_A_PORT], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())  # the child exits (EOF) if it cannot bind
        problem = ports.check_free("127.0.0.1", port)
        assert problem is not None and f"in use by pid {holder.pid} (python -c import" in problem
        assert "\n" not in problem, problem
    finally:
        holder.communicate(timeout=10)  # stdin closed: it exits


def test_no_cluster_anywhere_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mdpctl import locate

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    nowhere = tuple(f"tcp://127.0.0.1:{p}" for p in free_ports(2))
    monkeypatch.setattr(locate, "DEFAULT_BROKERS", nowhere)  # the default ports may be busy
    locate.note_last(tmp_path / "elsewhere")
    found = locate.find_cluster()
    assert found.run_dir is None
    assert found.looked_in == [tmp_path / "state" / "dips" / "run", tmp_path / "elsewhere"]
    message = found.not_found()
    assert message.startswith(f"no cluster is running in {tmp_path}/state/dips/run, "
                              f"{tmp_path}/elsewhere (")
    assert f"nothing listens on {nowhere[0]}; nothing listens on {nowhere[1]}" in message
    assert "`mdpctl up` starts one" in message


FOREIGN_BROKER = """
import os, socket, sys, time
tcp = socket.socket(); tcp.bind(("127.0.0.1", int(sys.argv[1]))); tcp.listen()
unix = socket.socket(socket.AF_UNIX); unix.bind("supervisor.sock"); unix.listen()
print("listening", flush=True)
time.sleep(120)
"""


def test_a_cluster_elsewhere_on_a_default_port_is_named_never_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone else's cluster whose broker holds a default port (another user's, another
    test's): without --run-dir, mdpctl says where it is and never acts on it (a `down`
    from a fresh HOME once stopped another session's cluster this way)."""
    from mdpctl import locate

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    port, other = free_ports(2)
    # A stand-in with a broker's command line, port and run directory (its supervisor.sock).
    with subprocess.Popen([sys.executable, "-c", FOREIGN_BROKER, str(port), "mdp.broker"],
                          cwd=theirs, stdout=subprocess.PIPE, text=True) as broker:
        try:
            assert broker.stdout is not None and broker.stdout.readline() == "listening\n"
            monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
            monkeypatch.delenv("DIPS_RUN_DIR", raising=False)
            monkeypatch.setattr(locate, "DEFAULT_BROKERS",
                                (f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{other}"))
            named = (f"tcp://127.0.0.1:{port}: a DIPS broker of the cluster in {theirs}, "
                     f"which `mdpctl --run-dir {theirs}` reaches")
            code, out, _ = run(capsys, "down")
            assert code == 0 and one_line(out).startswith("no cluster is running in ")
            assert named in out
            for argv in (["status"], ["reload"], ["scale", "echo", "1"]):
                code, out, err = run(capsys, *argv)
                assert code == 3 and out == "" and named in one_line(err), argv
            assert broker.poll() is None
        finally:
            broker.kill()
            broker.wait(10)


def one_line(text: str) -> str:
    assert text.count("\n") == 1, text
    return text


# Every program a newcomer starts: the name its --version prints, arguments that give it a
# broker endpoint without its scheme, and flags whose --help entry must say their default.
PROGRAMS = {
    "mdp.broker": ("mdp-broker", ["--bind", "127.0.0.1:5555"], ["--heartbeat-interval",
                                                                "--max-services"]),
    "mdp.worker": ("mdp-worker", ["--broker", "127.0.0.1:5555", "--service", "echo"],
                   ["--heartbeat-interval"]),
    "mdp_http": ("mdp-http", ["--broker", "127.0.0.1:5555", "--listen", "127.0.0.1:0"],
                 ["--listen", "--timeout"]),
    "mdp_gearman": ("mdp-gearman", ["--broker", "127.0.0.1:5555", "--listen", "127.0.0.1:0"],
                    ["--heartbeat-interval", "--background-concurrency"]),
    "mdpctl": ("mdpctl", ["call", "echo", "--broker", "127.0.0.1:5555"], ["--run-dir"]),
}


@pytest.mark.parametrize("module", list(PROGRAMS))
def test_every_program_has_a_version_defaults_in_its_help_and_refuses_a_bad_endpoint(
    module: str, tmp_path: Path
) -> None:
    name, bad_endpoint, flags = PROGRAMS[module]

    def run_it(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", module, *argv], cwd=tmp_path,
                              env={**os.environ, "HOME": str(tmp_path)},
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60, check=False)

    version = run_it("--version")
    assert version.returncode == 0 and version.stdout.startswith(f"{name} "), version
    helped = run_it("--help")
    assert helped.returncode == 0, helped.stderr
    for flag in flags:
        entry = helped.stdout.split(f"\n  {flag}", 1)[1].split("\n  -", 1)[0]
        assert "default" in entry, f"{name} {flag}: {entry!r}"
    refused = run_it(*bad_endpoint)  # refused before anything is bound or connected
    assert refused.returncode == 2, refused
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "did you mean 'tcp://127.0.0.1:5555'?" in refused.stderr
    assert processes_under(tmp_path) == []
