"""The local all-in-one cluster: one supervisord in a run directory, started and stopped here.

``start`` renders the packaged configuration into the run directory, checks that the
broker ports are free and starts supervisord (which daemonizes).  ``stop`` asks it to
shut down over its socket and waits until it and every process it ran have exited.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import site
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mdpctl import render
from mdpctl.cluster import CLUSTER_FILE_NAME, SOCKET_NAME, local_cluster_toml
from mdpctl.errors import CtlError, NotRunning, Unreachable, UsageError, WaitTimeout
from mdpctl.readiness import wait_until
from mdpctl.rpc import Supervisor, SupervisorEndpoint

log = logging.getLogger(__name__)

CONFIG_NAME = "supervisord.conf"
GEARMAN_LISTEN = "127.0.0.1:4730"  # mdp-gearman, where gearmand would listen
STARTUP_LOG_NAME = "supervisord.startup.log"


def code_dir() -> str | None:
    """The directory the ``mdp`` package is imported from, unless it is site-packages."""
    spec = importlib.util.find_spec("mdp")
    if spec is None or not spec.submodule_search_locations:
        return None
    parent = Path(next(iter(spec.submodule_search_locations))).resolve().parent
    site_dirs = {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
    return None if parent in site_dirs else str(parent)


def endpoint_for(run_dir: Path) -> SupervisorEndpoint:
    return SupervisorEndpoint(f"unix://{run_dir / SOCKET_NAME}")


@dataclass(frozen=True)
class LocalSpec:
    """What ``mdpctl up`` starts."""

    run_dir: Path
    brokers: tuple[str, ...]
    pools: tuple[render.WorkerPool, ...]
    python: str = sys.executable
    pythonpath: str | None = None
    time_limit_s: float = 30.0
    heartbeat_interval_s: float | None = None
    max_requests: int = 0
    log_level: str = "INFO"
    http_listen: str | None = None

    def host_config(self) -> render.HostConfig:
        return render.HostConfig(
            title="DIPS local cluster, written by `mdpctl up`",
            generated_by="mdpctl up (run directory " + str(self.run_dir) + ")",
            python=render.escape(self.python),
            run_dir="%(here)s",
            pythonpath=render.escape_env(self.pythonpath) if self.pythonpath else None,
            broker_binds=self.brokers,
            brokers=self.brokers,
            pools=self.pools,
            time_limit_s=self.time_limit_s,
            heartbeat_interval_s=self.heartbeat_interval_s,
            max_requests=self.max_requests,
            log_level=self.log_level,
            identifier="dips-local",
            gearman_listen=GEARMAN_LISTEN,
            http_listen=self.http_listen,
        )


def check_ports_free(endpoints: tuple[str, ...]) -> None:
    """Refuse to start when a broker endpoint's port is taken."""
    for endpoint in endpoints:
        host, _, port = endpoint[len("tcp://") :].rpartition(":")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, int(port)))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise UsageError(
                        f"{endpoint} is already in use (another cluster?); "
                        "choose other ports with --broker"
                    ) from exc
                raise UsageError(f"cannot bind {endpoint}: {exc.strerror}") from exc


def is_running(run_dir: Path) -> bool:
    try:
        Supervisor(endpoint_for(run_dir), timeout_s=2.0).state()
    except Unreachable:
        return False
    return True


def write_files(spec: LocalSpec) -> Path:
    """Render the configuration and the cluster file into the run directory."""
    (spec.run_dir / "log").mkdir(parents=True, exist_ok=True)
    os.chmod(spec.run_dir, 0o700)
    config_path = spec.run_dir / CONFIG_NAME
    config_path.write_text(render.render(spec.host_config()), encoding="utf-8")
    (spec.run_dir / CLUSTER_FILE_NAME).write_text(
        local_cluster_toml(spec.run_dir, spec.brokers), encoding="utf-8"
    )
    return config_path


def start_supervisord(run_dir: Path, timeout_s: float = 20.0) -> int:
    """Start supervisord on the run directory's configuration; return its pid once ready."""
    config_path = run_dir / CONFIG_NAME
    startup_log = run_dir / STARTUP_LOG_NAME
    argv = [sys.executable, "-m", "supervisor.supervisord", "-c", str(config_path)]
    with open(startup_log, "wb") as out:
        try:
            # supervisord daemonizes: the process we start returns once it has forked.
            result = subprocess.run(
                argv,
                cwd=run_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise WaitTimeout(f"supervisord did not start within {timeout_s:g} s") from exc
    if result.returncode != 0:
        text = startup_log.read_text(encoding="utf-8", errors="replace").strip()
        first = text.splitlines()[0] if text else f"exit status {result.returncode}"
        raise CtlError(f"supervisord did not start: {first} (see {startup_log})")
    supervisor = Supervisor(endpoint_for(run_dir), timeout_s=5.0)
    supervisor.wait_running(time.monotonic() + timeout_s)
    return supervisor.pid()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


@dataclass(frozen=True)
class StopReport:
    supervisord_pid: int
    processes: int


def stop(run_dir: Path, timeout_s: float | None = None) -> StopReport:
    """Shut the local cluster down and wait until no process of it is left."""
    supervisor = Supervisor(endpoint_for(run_dir), timeout_s=10.0)
    try:
        pid = supervisor.pid()
    except Unreachable as exc:
        raise NotRunning(f"no cluster is running in {run_dir}") from exc
    processes = supervisor.processes()
    pids = [p.pid for p in processes if p.pid]
    if timeout_s is None:
        stopwait = max((c.stopwaitsecs for c in supervisor.configs()), default=10)
        timeout_s = stopwait + 15.0
    supervisor.shutdown()

    def check() -> str | None:
        left = [p for p in [pid, *pids] if _alive(p)]
        return f"pids {', '.join(map(str, left))} still running" if left else None

    wait_until(check, timeout_s, "the cluster's processes to exit")
    return StopReport(pid, len(pids))
