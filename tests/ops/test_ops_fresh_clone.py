"""What a newcomer met on a fresh clone, end to end with real processes and real signals.

A supervisord stopped with SIGSTOP is named as such (not taken for a dead one) and `down`
leaves its programs alone unless forced; the holder of a port is called a program of a
cluster only when it is one; more workers than the cores can take, a door setting the door
would refuse and a run directory that cannot be made stop `up` before anything starts; two
`up` at once start one cluster; the demo leaves a running cluster alone; `config -o`,
`call`, a missing key file and `scale` say what fits. Every wait has a timeout; no fixed
sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mdp.options import ClientOptions
from mdpctl import capacity, daemon, local, lock, ports, procfs
from mdpctl.cli import main
from mdpctl.errors import EXIT_UNRESPONSIVE, CtlError, Unresponsive, UsageError
from mdpctl.hostconf import WorkerPool
from testkit import free_ports, processes_under, wait_for

from .conftest import NO_DOORS
from .opstools import FAST, REPO, LocalCluster, mdpctl

pytestmark = pytest.mark.slow

ECHO_ONLY = ("--service", "echo=1", "--spare", "0")


def one_line(text: str) -> str:
    assert text.count("\n") == 1, text
    return text


def supervisord_pid(run_dir: Path) -> int:
    return int((run_dir / daemon.PID_FILE_NAME).read_text())


def stop_process(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: (procfs.stat(pid) or procfs.Stat("?", 0)).stopped, 10,
             f"pid {pid} to be stopped")


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                            cwd=tmp_path)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_supervisord_is_recognised_however_it_was_started() -> None:
    for argv in (["supervisord", "-c", "x.conf"], ["/usr/bin/supervisord", "-n"],
                 ["/usr/bin/python3", "-m", "supervisor.supervisord", "-c", "x.conf"],
                 ["python3.11", "-u", "/venv/bin/supervisord", "-c", "x.conf"]):
        assert daemon.is_supervisord(argv), argv
    for argv in ([], ["python3", "-m", "mdp.broker"], ["python3", "-m", "http.server"],
                 ["python3", "/x/supervisorctl", "status"], ["bash", "supervisord"]):
        assert not daemon.is_supervisord(argv), argv


def test_a_pid_file_whose_pid_is_no_supervisord_names_none(
        tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    (tmp_path / daemon.PID_FILE_NAME).write_text(f"{sleeper.pid}\n")  # as if the pid was reused
    assert daemon.find(tmp_path) is None
    (tmp_path / daemon.PID_FILE_NAME).write_text("not a pid\n")
    assert daemon.find(tmp_path) is None


def test_a_stopped_supervisord_is_named_and_down_stops_nothing_until_forced(
    local_cluster: LocalCluster,
) -> None:
    assert local_cluster.up(*ECHO_ONLY).returncode == 0
    run_dir = local_cluster.run_dir
    pid = supervisord_pid(run_dir)
    programs = sorted(set(processes_under(run_dir)) - {pid})
    assert len(programs) >= 3  # two brokers and a worker (and the keeper)
    stop_process(pid)
    try:
        status = local_cluster.ctl("status", timeout=60)
        assert status.returncode == EXIT_UNRESPONSIVE, status.stdout + status.stderr
        assert one_line(status.stderr) == (
            f"mdpctl: supervisord (pid {pid}) of the cluster in {run_dir} is stopped (SIGSTOP, "
            f"or Ctrl-Z in its terminal) and answers nothing: `kill -CONT {pid}` resumes it; "
            "or `mdpctl down --force` kills it and stops its programs\n")

        down = local_cluster.ctl("down", timeout=60)
        assert down.returncode == EXIT_UNRESPONSIVE, down.stdout + down.stderr
        assert one_line(down.stderr).startswith("mdpctl: down stopped nothing: supervisord "
                                                f"(pid {pid}) of the cluster in {run_dir}")
        assert all(procfs.alive(p) for p in programs)  # none was signalled behind its back
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: local_cluster.ctl("status").returncode == 0, 60, "supervisord to answer")
    assert sorted(set(processes_under(run_dir)) - {pid}) == programs  # nothing restarted

    stop_process(pid)
    with pytest.raises(Unresponsive) as silent:  # as `up` says it when this happens at start
        local.wait_answers(run_dir, timeout_s=1)
    assert str(silent.value).endswith(
        f"; it runs (pid {pid}) but did not answer within 1 s, and its programs may still be "
        "starting: `mdpctl down` stops them once it answers, `mdpctl down --force` kills it "
        "and stops them now")
    forced = local_cluster.ctl("down", "--force", timeout=120)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert re.fullmatch(f"supervisord \\(pid {pid}\\) of the cluster in {re.escape(str(run_dir))}"
                        r" did not answer and was killed \(SIGKILL\); its \d+ processes have "
                        r"exited \(\d+\.\d s\)\n", one_line(forced.stdout)), forced.stdout
    assert processes_under(local_cluster.root) == []
    again = local_cluster.up(*ECHO_ONLY)  # the stale socket and pid file are no obstacle
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_port_holder_in_a_directory_with_a_supervisord_conf_is_not_called_a_cluster(
    local_cluster: LocalCluster,
) -> None:
    work = local_cluster.root / "work"  # where `mdpctl config ... -o supervisord.conf` wrote
    work.mkdir()
    (work / "supervisord.conf").write_text("; written by mdpctl config\n")
    (work / "supervisor.sock").write_text("")  # even a stale socket does not make it one
    [port] = free_ports(1)
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1"], cwd=work, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: ports.holder(port), 10, "http.server to listen")
        held = local_cluster.up(*ECHO_ONLY, "--http", f"127.0.0.1:{port}")
    finally:
        server.kill()
        server.wait(timeout=10)
    assert held.returncode == 2, held.stdout + held.stderr
    assert one_line(held.stderr).startswith(
        f"mdpctl: mdp-http (127.0.0.1:{port}) cannot start: port {port} on 127.0.0.1 is in use "
        f"by pid {server.pid} (")
    assert held.stderr.endswith("; move it with --http HOST:PORT, or --http off for none\n")
    assert "cluster" not in held.stderr


def test_more_workers_than_the_cores_can_take_are_refused_before_anything_starts(
    local_cluster: LocalCluster,
) -> None:
    cores = capacity.usable_cores()
    limit = max(capacity.PER_CORE * cores, capacity.AT_LEAST)
    many = local_cluster.up("--workers", "500")
    assert many.returncode == 2, many.stdout + many.stderr
    services = many.stderr.split(" services x 500")[0].rpartition("(")[2]
    total = int(services) * 500
    assert one_line(many.stderr) == (
        f"mdpctl: {total} worker processes asked for ({services} services x 500) on {cores} "
        f"core(s), more than the limit of {limit} ({capacity.PER_CORE} per core, "
        f"{capacity.AT_LEAST} at least): ask for "
        f"fewer (--workers N, --service NAME=N), or give --max-workers {total} if you mean "
        "it\n")
    assert "starting" not in many.stdout and processes_under(local_cluster.root) == []

    mine = local_cluster.up("--service", "echo=2", "--spare", "0", "--max-workers", "1")
    assert mine.returncode == 2 and "more than --max-workers 1:" in one_line(mine.stderr)
    over = [WorkerPool("echo", limit + 1, 0)]  # past the default limit, and meant
    capacity.check_workers(over, max_workers=limit + 1)
    with pytest.raises(UsageError, match=f"give --max-workers {limit + 1} if you mean it"):
        capacity.check_workers(over, max_workers=None)


def test_two_ups_at_once_one_starts_the_cluster_and_the_other_says_why_not(
    local_cluster: LocalCluster,
) -> None:
    brokers = [arg for b in local_cluster.brokers for arg in ("--broker", b)]
    argv = [sys.executable, "-m", "mdpctl", "--run-dir", str(local_cluster.run_dir), "up",
            *brokers, *FAST, *NO_DOORS, *ECHO_ONLY]
    env = {**os.environ, "PYTHONPATH": str(local_cluster.code)}
    ups = [subprocess.Popen(argv, cwd=local_cluster.code, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(up.pid, *up.communicate(timeout=120), up.returncode) for up in ups]
    started = [r for r in results if "starting" in r[1]]
    assert len(started) == 1, results  # one supervisord, started by one of them
    starter, other = started[0], next(r for r in results if r is not started[0])
    assert starter[3] == 0 and "cluster up in" in starter[1], results
    if other[3] == 0:  # it came once the cluster ran: it waited for it to serve
        assert "cluster already running" in other[1], results
    else:  # it came while the other started it
        assert one_line(other[2]) == (
            f"mdpctl: cannot up: another `mdpctl up` is starting the cluster in "
            f"{local_cluster.run_dir} (pid {starter[0]}); try again when it is done (lock "
            f"file {local_cluster.run_dir / 'mdpctl.lock'})\n")
    assert local_cluster.ctl("status").returncode == 0


def test_up_beside_a_reload_on_a_running_cluster_waits_for_it_to_serve(
    local_cluster: LocalCluster,
) -> None:
    """`up` on a running cluster changes nothing: it neither needs nor waits for the run
    dir's lock, which a `reload` or `scale` may hold."""
    assert local_cluster.up(*ECHO_ONLY).returncode == 0
    with lock.exclusive(lock.lock_path(local_cluster.run_dir, None), "reload",
                        "`mdpctl reload` is changing this cluster"):
        again = local_cluster.up(*ECHO_ONLY)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "cluster already running" in again.stdout


def test_down_beside_a_reload_stops_nothing_and_names_it(
    local_cluster: LocalCluster,
) -> None:
    """`down` under a `reload` would stop the workers the rollout waits for (it then failed
    naming a stopped worker): it takes the run dir's lock as they do, refused at once."""
    assert local_cluster.up(*ECHO_ONLY).returncode == 0
    lock_file = lock.lock_path(local_cluster.run_dir, None)
    with lock.exclusive(lock_file, "reload", "`mdpctl reload` is changing this cluster"):
        refused = local_cluster.ctl("down")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert one_line(refused.stderr) == (
        f"mdpctl: cannot down: another `mdpctl reload` is changing this cluster (pid "
        f"{os.getpid()}); try again when it is done (lock file {lock_file})\n")
    assert local_cluster.ctl("status").returncode == 0  # nothing was stopped
    stopped = local_cluster.ctl("down")
    assert stopped.returncode == 0 and "stopped in" in stopped.stdout, stopped.stderr


def test_a_second_supervisord_on_a_run_directory_names_the_one_that_runs(
    local_cluster: LocalCluster,
) -> None:
    assert local_cluster.up(*ECHO_ONLY).returncode == 0
    run_dir = local_cluster.run_dir
    with pytest.raises(CtlError) as refused:
        local.start_supervisord(run_dir)
    assert str(refused.value).startswith(
        f"supervisord did not start: another supervisord (pid {supervisord_pid(run_dir)}) "
        f"already runs in {run_dir}; `mdpctl --run-dir {run_dir} status` shows it (Error: "
        "Another program is already listening")
    assert local_cluster.ctl("status").returncode == 0  # the running one is untouched


def test_a_run_directory_that_cannot_be_made_is_a_usage_error_naming_it(
    local_cluster: LocalCluster,
) -> None:
    for named, env in ((["--run-dir", "/proc/nope"], {}), ([], {"DIPS_RUN_DIR": "/proc/nope"})):
        result = mdpctl(*named, "up", *ECHO_ONLY, code=local_cluster.code, env=env)
        where = "--run-dir" if named else "$DIPS_RUN_DIR"
        assert result.returncode == 2, result.stdout + result.stderr
        assert one_line(result.stderr) == (
            f"mdpctl: {where} /proc/nope: cannot create the run directory: No such file or "
            "directory\n")


def test_the_demo_refuses_to_use_and_stop_a_cluster_already_running(
    local_cluster: LocalCluster,
) -> None:
    assert local_cluster.up(*ECHO_ONLY).returncode == 0
    pid = supervisord_pid(local_cluster.run_dir)
    bin_dir = local_cluster.root / "bin"  # `mdpctl` on PATH, running the code under test
    bin_dir.mkdir()
    shim = bin_dir / "mdpctl"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m mdpctl "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(local_cluster.code),
           "DIPS_RUN_DIR": str(local_cluster.run_dir),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("DIPS_CLUSTER", None)
    demo = subprocess.run([str(REPO / "scripts" / "demo"), "card.png"], cwd=local_cluster.root,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert demo.returncode == 2, demo.stdout + demo.stderr
    assert one_line(demo.stderr) == (
        f"mdpctl: a cluster is already running in {local_cluster.run_dir} and --new starts none "
        "beside it: `mdpctl down` stops it, or --run-dir DIR (with other ports) starts one "
        "elsewhere\n")
    assert demo.stdout == "" and not (local_cluster.root / "card.png").exists()
    status = local_cluster.status()  # still running, the same supervisord: not stopped
    assert status["hosts"][0]["pid"] == pid


@pytest.mark.parametrize("variable, value, message", [
    ("DIPS_HTTP_TIMEOUT", "abc", "DIPS_HTTP_TIMEOUT='abc': could not convert string to float"),
    ("DIPS_HTTP_TIMEOUT", "-1", "--timeout, --body-timeout, --header-timeout, --send-timeout "
     "and --poll-interval must be positive (its settings from the environment: "
     "DIPS_HTTP_TIMEOUT)"),
    ("DIPS_HTTP_AUTO_WEBP", "maybe", "DIPS_HTTP_AUTO_WEBP='maybe': not a boolean"),
])
def test_a_door_setting_the_door_would_refuse_stops_up_before_anything_starts(
    variable: str, value: str, message: str, local_cluster: LocalCluster,
) -> None:
    http = f"127.0.0.1:{free_ports(1)[0]}"
    brokers = [arg for b in local_cluster.brokers for arg in ("--broker", b)]
    result = mdpctl("--run-dir", str(local_cluster.run_dir), "up", *brokers, *ECHO_ONLY,
                    "--http", http, "--gearman", "off", code=local_cluster.code,
                    env={variable: value})
    assert result.returncode == 2, result.stdout + result.stderr
    assert one_line(result.stderr).startswith(f"mdpctl: mdp-http cannot start: {message}")
    assert result.stdout == "" and processes_under(local_cluster.root) == []


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_config_keeps_a_file_that_exists_unless_forced_and_hides_a_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DIPS_REDIS_PASSWORD", raising=False)
    out = tmp_path / "supervisord.conf"
    out.write_text("mine\n")
    out.chmod(0o644)
    code, _, err = run_main(capsys, "config", "local", "-o", str(out))
    assert code == 2 and one_line(err) == (
        f"mdpctl: -o {out}: the file exists; --force overwrites it\n")
    assert out.read_text() == "mine\n"
    code, said, _ = run_main(capsys, "config", "local", "-o", str(out), "--force")
    assert code == 0 and said == f"wrote {out}\n" and out.read_text().startswith("; DIPS")

    url = "redis://dips:s3cret@10.0.0.9:6379/0"
    for path, force in ((tmp_path / "new.conf", []), (out, ["--force"])):
        code, said, err = run_main(capsys, "config", "worker-host", "--cpus", "1", "--broker",
                                   "tcp://10.0.0.1:5555", "--http", "0.0.0.0:8080",
                                   "--redis-url", url, "-o", str(path), *force)
        assert code == 0, err
        assert said == f"wrote {path} (mode 0600: it holds a password)\n"
        assert url in path.read_text() and path.stat().st_mode & 0o777 == 0o600


def test_call_refuses_a_request_past_the_clients_limit_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    limit = ClientOptions().max_request_bytes
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (limit + 1))
    [port] = free_ports(1)
    code, out, err = run_main(capsys, "--run-dir", str(tmp_path), "call", "thumbnail",
                              "--file", f"image={big}", "--broker", f"tcp://127.0.0.1:{port}")
    assert code == 2 and out == ""
    assert re.fullmatch(r"mdpctl: the request was not sent: it is \d+ bytes, more than the "
                        f"client's limit of {limit} bytes \\(32 MiB, max_request_bytes\\)\n",
                        one_line(err)), err


def test_a_key_file_that_does_not_exist_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "keys" / "images.key.hex"
    code, _, err = run_main(capsys, "imgproxy", "sign", "--key", str(missing), "--salt",
                            str(missing), "--options", "rs:fit:300:200", "--source",
                            "local:///p.jpg")
    assert code == 2
    assert one_line(err) == f"mdpctl: {missing}: the key or salt file does not exist\n"


def test_scale_past_the_slots_of_the_local_cluster_says_how_it_gets_more(
    local_cluster: LocalCluster,
) -> None:
    assert local_cluster.up(*ECHO_ONLY).returncode == 0
    scale = local_cluster.ctl("scale", "echo", "5")
    assert scale.returncode == 2, scale.stdout + scale.stderr
    assert one_line(scale.stderr) == (
        "mdpctl: local has 1 slots for echo, fewer than 5; the local cluster gets more with "
        "`mdpctl down`, then `mdpctl up` with its options and --spare 4\n")
