"""The XML-RPC plumbing against a real supervisord running dummy programs."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mdpctl import local
from mdpctl.errors import AuthError, SupervisorFault, Unreachable, UsageError
from mdpctl.rpc import Supervisor, SupervisorEndpoint
from testkit import free_ports, kill_all_under, processes_under, wait_for

DUMMY = "import sys, time; print('dummy up', sys.argv[1], flush=True); time.sleep(3600)"


def dummy(tag: str) -> str:
    return shlex.join([sys.executable, "-c", DUMMY, tag])


CONFIG = """
[unix_http_server]
file=%(here)s/supervisor.sock
chmod=0700

[inet_http_server]
port=127.0.0.1:{port}
username=ops
password={{SHA}}{sha}

[supervisord]
logfile=%(here)s/supervisord.log
pidfile=%(here)s/supervisord.pid
childlogdir=%(here)s
directory=%(here)s

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:long]
command={long}
process_name=long-%(process_num)02d
numprocs=2
startsecs=0
stopwaitsecs=5
directory=%(here)s
redirect_stderr=true
stdout_logfile=%(here)s/%(process_num)02d.log

[program:later]
command={later}
autostart=false
startsecs=0
stopwaitsecs=2
directory=%(here)s
"""

PASSWORD_SHA1 = "4f57181dcaade980555f2ce6755ca425f00658be"  # sha1("swordfish")


@pytest.fixture(scope="module")
def supervisord(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    run_dir = tmp_path_factory.mktemp("sv")
    (port,) = free_ports(1)
    conf = run_dir / "supervisord.conf"
    conf.write_text(
        CONFIG.format(port=port, sha=PASSWORD_SHA1, long=dummy("long"), later=dummy("later"))
    )
    try:
        subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
            cwd=run_dir,
            check=True,
            timeout=30,
        )
        Supervisor(local.endpoint_for(run_dir)).wait_running(time.monotonic() + 15)
        yield run_dir, port
    finally:
        try:
            Supervisor(local.endpoint_for(run_dir)).shutdown()
            wait_for(lambda: not processes_under(run_dir), 20, "supervisord to exit")
        finally:
            kill_all_under(run_dir)


def test_unix_socket_calls(supervisord: tuple[Path, int]) -> None:
    run_dir, _ = supervisord
    sup = Supervisor(local.endpoint_for(run_dir), timeout_s=5)
    assert sup.state() == "RUNNING"
    assert sup.pid() == int((run_dir / "supervisord.pid").read_text())
    names = sorted(p.fullname for p in sup.processes())
    assert names == ["later:later", "long:long-00", "long:long-01"]
    configs = {c.fullname: c for c in sup.configs()}
    assert configs["later:later"].autostart is False and configs["long:long-00"].stopwaitsecs == 5
    wait_for(lambda: "dummy up long" in sup.log_tail("long:long-01"), 10, "the dummy's output")
    sup.clear_log("long:long-01")
    assert sup.log_tail("long:long-01") == ""


def test_start_and_stop_are_idempotent(supervisord: tuple[Path, int]) -> None:
    run_dir, _ = supervisord
    sup = Supervisor(local.endpoint_for(run_dir), timeout_s=5)
    sup.start("later:later")
    sup.start("later:later")  # already started: not an error
    wait_for(lambda: sup.process("later:later").state == "RUNNING", 10, "later to run")
    pid = sup.process("later:later").pid
    assert pid > 0
    sup.stop("later:later")
    # SIGTERM ends the dummy at once; should it not (once seen in a loaded full run),
    # supervisord sends SIGKILL after stopwaitsecs: what is tested here is idempotence
    wait_for(lambda: sup.process("later:later").state == "STOPPED", 20, "later to stop")
    sup.stop("later:later")  # not running: not an error
    with pytest.raises(SupervisorFault, match="BAD_NAME"):
        sup.start("nosuch:nosuch")


def test_http_with_credentials(supervisord: tuple[Path, int]) -> None:
    _, port = supervisord
    good = Supervisor(SupervisorEndpoint(f"http://127.0.0.1:{port}", "ops", "swordfish"))
    assert good.state() == "RUNNING"
    with pytest.raises(AuthError, match="refused the credentials"):
        Supervisor(SupervisorEndpoint(f"http://127.0.0.1:{port}", "ops", "wrong")).state()
    with pytest.raises(AuthError):
        Supervisor(SupervisorEndpoint(f"http://127.0.0.1:{port}")).state()


def test_unreachable_supervisord_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Unreachable, match="is not reachable"):
        Supervisor(local.endpoint_for(tmp_path)).state()
    (port,) = free_ports(1)
    with pytest.raises(Unreachable, match="Connection refused"):
        Supervisor(SupervisorEndpoint(f"http://127.0.0.1:{port}"), timeout_s=2).state()
    with socket.socket() as listener:  # accepts, never answers: the timeout applies
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(Unreachable, match="timed out"):
            Supervisor(SupervisorEndpoint(f"http://127.0.0.1:{port}"), timeout_s=0.5).state()


def test_waiting_for_a_supervisord_that_never_answers_keeps_to_the_deadline(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each call waits at most the time left (a stopped supervisord made `up`'s 20 s
    wait take 25, and a 1 s wait 5: each call had its own 5 s timeout)."""
    from mdpctl import rpc

    given: list[tuple[float, float]] = []  # (time left at the call, the call's timeout)
    real = rpc.make_proxy

    def recording(endpoint: SupervisorEndpoint, timeout_s: float) -> object:
        given.append((deadline - time.monotonic(), timeout_s))
        return real(endpoint, timeout_s)

    monkeypatch.setattr(rpc, "make_proxy", recording)
    with socket.socket() as listener:  # accepts, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        supervisor = Supervisor(SupervisorEndpoint(
            f"http://127.0.0.1:{listener.getsockname()[1]}"), timeout_s=10)
        deadline = time.monotonic() + 0.6
        with pytest.raises(Unreachable, match="timed out"):
            supervisor.wait_running(deadline)
    assert given and all(timeout <= max(left, rpc.MIN_CALL_S) + 0.01 for left, timeout in given)
    assert supervisor.timeout_s == 10  # its other calls keep their own timeout


def spec_on(broker_port: int, http: str | None = None, gearman: str | None = None
            ) -> local.LocalSpec:
    return local.LocalSpec(Path("/nonexistent"), (f"tcp://127.0.0.1:{broker_port}",), (),
                           http_listen=http, gearman_listen=gearman)


def test_ports_in_use_are_refused_before_starting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"broker tcp://127.0.0.1:{port} cannot start: "
                           f"port {port} on 127.0.0.1 is in use by pid {os.getpid()} "):
            local.check_ports_free(spec_on(port))
        (free,) = free_ports(1)
        with pytest.raises(UsageError, match=rf"mdp-http \(127.0.0.1:{port}\) cannot start: .*"
                           r"move it with --http HOST:PORT, or --http off for none"):
            local.check_ports_free(spec_on(free, http=f"127.0.0.1:{port}"))
        with pytest.raises(UsageError, match=rf"mdp-gearman \(127.0.0.1:{port}\) cannot start"):
            local.check_ports_free(spec_on(free, gearman=f"127.0.0.1:{port}"))
    (port,) = free_ports(1)
    local.check_ports_free(spec_on(port))


def test_a_port_in_time_wait_is_free_for_the_cluster() -> None:
    """After `down`, the brokers' old connections sit in TIME-WAIT for a minute; the
    programs bind with SO_REUSEADDR, and so does the check."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        accepted, _ = listener.accept()
        accepted.close()  # the listening side closes first: its end goes to TIME-WAIT
        client.close()
    states = subprocess.run(["ss", "-tan", f"sport = :{port}"], capture_output=True,
                            text=True, timeout=10).stdout if shutil.which("ss") else ""
    assert "LISTEN" not in states and ("TIME-WAIT" in states or not shutil.which("ss"))
    local.check_ports_free(spec_on(port))


def test_code_dir_is_the_checkout() -> None:
    found = local.code_dir()
    assert found is None or (Path(found) / "mdp").is_dir()


def test_the_programs_get_the_dips_settings_of_ups_environment(tmp_path: Path) -> None:
    environ = {"DIPS_SOURCES_ALLOW": "https://img.example.com", "DIPS_MAX_SIDE": "4000",
               "DIPS_RUN_DIR": "/x", "DIPS_SUPERVISOR_PASSWORD": "s3cr3t-pw", "HOME": "/root"}
    settings = local.settings_from(environ)
    assert settings == (("DIPS_MAX_SIDE", "4000"),
                        ("DIPS_SOURCES_ALLOW", "https://img.example.com"))
    spec = local.LocalSpec(tmp_path, ("tcp://127.0.0.1:7001",), (), settings=settings)
    local.write_files(spec)
    text = (tmp_path / "supervisord.conf").read_text()
    assert 'DIPS_SOURCES_ALLOW="https://img.example.com"' in text and "s3cr3t" not in text
    assert local.settings_changed(tmp_path, settings) == []
    assert local.settings_changed(tmp_path, settings[:1]) == ["DIPS_SOURCES_ALLOW"]
    with pytest.raises(UsageError, match="quote or a newline"):
        local.settings_from({"DIPS_WATERMARK_TEXT": 'say "hi"'})
