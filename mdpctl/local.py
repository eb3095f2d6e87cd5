"""The local all-in-one cluster: one supervisord in a run directory, started and stopped here.

``up`` checks that every port the cluster will listen on is free, renders the packaged
configuration into the run directory (with ``up.json``, the options it was started with)
and starts supervisord (which daemonizes).  :func:`stop` stops the workers, doors and
helpers all at once, then the brokers, then supervisord, and waits until every process
it ran has exited.  (supervisord's own shutdown stops one group per turn of its loop,
about a second each: 7 services took 7-12 s.)
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import site
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdp.errors import ConfigError
from mdpctl import daemon, hostconf, leftovers, ports, procfs
from mdpctl.cluster import CLUSTER_FILE_NAME, SOCKET_NAME, local_cluster_toml
from mdpctl.daemon import endpoint_for
from mdpctl.endpoints import split_listen, tcp_host_port
from mdpctl.errors import (
    CtlError,
    NotRunning,
    Unreachable,
    Unresponsive,
    UsageError,
    WaitTimeout,
)
from mdpctl.fleet import parse_command
from mdpctl.images import DOOR_REDIS_ENV, REDIS_MAX_MEMORY, REDIS_PASSWORD_ENV, ImageServing
from mdpctl.readiness import wait_until
from mdpctl.rpc import Supervisor

log = logging.getLogger(__name__)

CONFIG_NAME = "supervisord.conf"
OPTIONS_NAME = "up.json"
# Settings of the programs (renderers' limits and sources, the doors' ...) come from DIPS_*
# variables; these are mdpctl's own and stay out of the cluster's environment.
MDPCTL_ENV = frozenset({"DIPS_RUN_DIR", "DIPS_CLUSTER", "DIPS_SUPERVISOR_PASSWORD",
                        REDIS_PASSWORD_ENV})
STARTUP_LOG_NAME = "supervisord.startup.log"


def code_dir() -> str | None:
    """The directory the ``mdp`` package is imported from, unless it is site-packages."""
    spec = importlib.util.find_spec("mdp")
    if spec is None or not spec.submodule_search_locations:
        return None
    parent = Path(next(iter(spec.submodule_search_locations))).resolve().parent
    site_dirs = {Path(p).resolve() for p in site.getsitepackages() + [site.getusersitepackages()]}
    return None if parent in site_dirs else str(parent)


@dataclass(frozen=True)
class LocalSpec:
    """What ``mdpctl up`` starts."""

    run_dir: Path
    brokers: tuple[str, ...]
    pools: tuple[hostconf.WorkerPool, ...]
    python: str = sys.executable
    pythonpath: str | None = None
    time_limit_s: float = hostconf.DEFAULT_TIME_LIMIT_S
    heartbeat_interval_s: float | None = None
    link_floor: int | None = None
    max_requests: int = 0
    log_level: str = hostconf.DEFAULT_LOG_LEVEL
    start_retries: int | None = None  # None: hostconf's defaults
    http_listen: str | None = hostconf.HTTP_LISTEN
    gearman_listen: str | None = hostconf.GEARMAN_LISTEN
    settings: tuple[tuple[str, str], ...] = ()  # DIPS_* variables the programs get
    images: ImageServing = ImageServing()

    def options(self) -> dict[str, Any]:
        """What ``up`` was asked for, as recorded in ``up.json`` and compared by a later
        ``up`` on the running cluster."""
        return {
            "brokers": list(self.brokers),
            "services": {p.service: [p.workers, p.spare] for p in self.pools},
            "pythonpath": self.pythonpath,
            "time_limit_s": self.time_limit_s,
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "link_floor": self.link_floor,
            "max_requests": self.max_requests,
            "log_level": self.log_level,
            "start_retries": self.start_retries,
            "http": self.http_listen or "off",
            "gearman": self.gearman_listen or "off",
            **image_options(self.images),
        }

    def settings_record(self) -> dict[str, str]:
        return dict(self.settings)

    def listens(self) -> list[tuple[str, str, int]]:
        """(what, host, port) for every port the cluster will listen on."""
        found = [(f"broker {e}", *tcp_host_port(e)) for e in self.brokers]
        if self.http_listen:
            found.append((f"mdp-http ({self.http_listen})", *split_listen(self.http_listen)))
        if self.gearman_listen:
            found.append(
                (f"mdp-gearman ({self.gearman_listen})", *split_listen(self.gearman_listen)))
        if self.images.redis is not None:
            listen = self.images.redis.listen
            found.append((f"redis ({listen})", *split_listen(listen)))
        return found

    def host_config(self) -> hostconf.HostConfig:
        return hostconf.HostConfig(
            title="DIPS local cluster, written by `mdpctl up`",
            generated_by="mdpctl up (run directory " + str(self.run_dir) + ")",
            python=hostconf.escape(self.python),
            run_dir="%(here)s",
            pythonpath=hostconf.escape_env(self.pythonpath) if self.pythonpath else None,
            broker_binds=self.brokers,
            brokers=self.brokers,
            pools=self.pools,
            time_limit_s=self.time_limit_s,
            heartbeat_interval_s=self.heartbeat_interval_s,
            link_floor=self.link_floor,
            max_requests=self.max_requests,
            log_level=self.log_level,
            start_retries=self.start_retries,
            identifier="dips-local",
            gearman_listen=self.gearman_listen,
            http_listen=self.http_listen,
            extra_environment={k: hostconf.escape_env(v) for k, v in self.settings},
            images=self.images,
        )


def image_options(images: ImageServing) -> dict[str, Any]:
    """The image server's part of ``up.json``: what a later ``up`` compares."""
    redis = images.redis
    return {
        "redis": redis.listen if redis is not None else "off",
        "redis_max_memory": redis.max_memory if redis is not None else REDIS_MAX_MEMORY,
        "redis_url": images.redis_url,
        "sign_keys": list(images.sign_keys),
        "sign_salts": list(images.sign_salts),
        "sources_roots": list(images.sources_roots),
        "sources_allow": list(images.sources_allow),
    }


def settings_from(environ: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The DIPS_* settings in ``environ`` that the cluster's programs are to get."""
    found = []
    for key, value in sorted(environ.items()):
        if key.startswith("DIPS_") and key not in MDPCTL_ENV:
            if '"' in value or "\n" in value:
                raise UsageError(f"${key} holds a quote or a newline, which supervisord's "
                                 "environment= cannot carry")
            found.append((key, value))
    return tuple(found)


def settings_changed(run_dir: Path, settings: tuple[tuple[str, str], ...]) -> list[str]:
    """The DIPS_* settings that differ from those the running cluster was started with."""
    recorded = recorded_options(run_dir)
    if recorded is None:
        return []
    before, now = recorded.get("settings", {}), dict(settings)
    return sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))


_MOVE_HINT = {
    "broker": "choose other ports with --broker",
    "mdp-http": "move it with --http HOST:PORT, or --http off for none",
    "mdp-gearman": "move it with --gearman HOST:PORT, or --gearman off for none",
    "redis": "move it with --redis HOST:PORT, or --redis off for none",
}


def check_ports_free(spec: LocalSpec) -> None:
    """Refuse to start, in one line naming the port and its holder, when one is taken."""
    seen: dict[int, str] = {}
    for what, host, port in spec.listens():
        if port in seen:
            raise UsageError(f"port {port} is asked for twice: by {seen[port]} and by {what}")
        seen[port] = what
        problem = ports.check_free(host, port)
        if problem is None:
            continue
        raise UsageError(f"{what} cannot start: {problem}; {_port_hint(what, port)}")


def _port_hint(what: str, port: int) -> str:
    """What to do about the holder of ``port``: a program of a cluster (a supervisord
    started it in that cluster's run directory) is stopped with that cluster; anything
    else, a program of ours is moved."""
    holder = ports.holder(port)
    if holder is None or holder.pid is None or not holder.cwd:
        return _MOVE_HINT[what.split()[0]]
    run_dir = Path(holder.cwd)
    if leftovers.cluster_program(holder.pid) is None:
        return _MOVE_HINT[what.split()[0]]
    if daemon.find(run_dir) is not None:
        return f"it is the DIPS cluster in {run_dir}: `mdpctl --run-dir {run_dir} down` stops it"
    return (f"it is a program of the cluster in {run_dir}, whose supervisord is gone: "
            f"`mdpctl --run-dir {run_dir} down` stops it")


# sun_path holds 108 bytes with its NUL; supervisord binds "SOCKET.PID" first, then renames.
MAX_SOCKET_PATH = 107 - len(".4194304")


def check_run_dir(run_dir: Path) -> None:
    """supervisord's control socket must fit in a unix socket address."""
    path = str(run_dir / SOCKET_NAME)
    if len(path.encode()) > MAX_SOCKET_PATH:
        raise UsageError(
            f"the run directory {run_dir} is too deep for supervisord's control socket "
            f"({len(path.encode())} bytes, at most {MAX_SOCKET_PATH}); name a shorter one "
            "with --run-dir or $DIPS_RUN_DIR"
        )


_DOOR_NEEDS = {"mdp-http": ("mdp_http", "aiohttp", "prometheus_client"),
               "mdp-gearman": ("mdp_gearman",)}


def check_door_modules(spec: LocalSpec) -> None:
    """A door whose package or dependency is not installed cannot start: say so first."""
    for door, listen in (("mdp-http", spec.http_listen), ("mdp-gearman", spec.gearman_listen)):
        if listen is None:
            continue
        missing = [m for m in _DOOR_NEEDS[door] if importlib.util.find_spec(m) is None]
        if missing:
            flag = "--http" if door == "mdp-http" else "--gearman"
            extra = "http" if door == "mdp-http" else "gearman"
            raise UsageError(f"{door} cannot start: no module named {missing[0]} (pip install "
                             f"'dips[{extra}]'), or {flag} off for no {door}")


def check_door_settings(spec: LocalSpec) -> None:
    """Read each door's settings now as the door will when it starts, with its own parser
    (mdp-http's flags and ``$DIPS_HTTP_*``, mdp-gearman's flags), so that a wrong one stops
    up before anything starts, not leave the door in BACKOFF beside a running cluster."""
    config = spec.host_config()
    if spec.http_listen:
        from mdp_http.config import ENV_PREFIX
        from mdp_http.config import from_command_line as http_settings

        environ = dict(spec.settings)
        redis = spec.images.door_redis()
        if redis:
            environ[DOOR_REDIS_ENV] = redis.replace("%%", "%")
        _check_door("mdp-http", lambda: http_settings(hostconf.http_command(config)[3:],
                                                      environ),
                    sorted(key for key in environ if key.startswith(ENV_PREFIX)))
    if spec.gearman_listen:
        from mdp_gearman.config import from_command_line as gearman_settings

        _check_door("mdp-gearman",
                    lambda: gearman_settings(hostconf.gearman_command(config)[3:]), [])


def _check_door(door: str, read: Callable[[], object], from_env: list[str]) -> None:
    """UsageError naming the door and what it would refuse (and, when that names a flag,
    the variables of the environment that set some)."""
    try:
        read()
    except ConfigError as exc:
        message = str(exc)
        if from_env and "DIPS_" not in message:
            message += f" (its settings from the environment: {', '.join(from_env)})"
        raise UsageError(f"{door} cannot start: {message}") from None


def recorded_options(run_dir: Path) -> dict[str, Any] | None:
    """The options ``up`` recorded for the cluster in ``run_dir`` (None: not by up)."""
    try:
        value = json.loads((run_dir / OPTIONS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_files(spec: LocalSpec) -> Path:
    """Render the configuration and the cluster file into the run directory."""
    (spec.run_dir / "log").mkdir(parents=True, exist_ok=True)
    os.chmod(spec.run_dir, 0o700)
    config_path = spec.run_dir / CONFIG_NAME
    config_path.write_text(hostconf.render(spec.host_config()), encoding="utf-8")
    (spec.run_dir / CLUSTER_FILE_NAME).write_text(
        local_cluster_toml(spec.run_dir, spec.brokers), encoding="utf-8"
    )
    record = {**spec.options(), "settings": spec.settings_record()}
    (spec.run_dir / OPTIONS_NAME).write_text(
        json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8"
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
        raise CtlError(_start_failure(run_dir, result.returncode))
    return wait_answers(run_dir, timeout_s)


def _start_failure(run_dir: Path, status: int) -> str:
    """Why supervisord did not start: the lines of its startup log that say what went wrong
    (``Error:`` and CRIT; the first line is often only "Unlinking stale socket"), and the
    supervisord that already runs in the run directory, when one does."""
    startup_log = run_dir / STARTUP_LOG_NAME
    try:
        lines = startup_log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    lines = [line.strip() for line in lines if line.strip()]
    said = [line for line in lines if line.startswith("Error:") or " CRIT " in line]
    why = " ".join((said or lines)[-2:]) or f"exit status {status}"
    running = daemon.find(run_dir)
    if running is not None:
        return (f"supervisord did not start: another supervisord (pid {running.pid}) already "
                f"runs in {run_dir}; `mdpctl --run-dir {run_dir} status` shows it ({why})")
    return f"supervisord did not start: {why} (see {startup_log})"


def wait_answers(run_dir: Path, timeout_s: float) -> int:
    """The pid of the supervisord just started, once it answers and runs; Unresponsive
    when it runs but has not answered by then (its programs may still be starting)."""
    supervisor = Supervisor(endpoint_for(run_dir), timeout_s=daemon.ANSWER_TIMEOUT_S)
    try:
        supervisor.wait_running(time.monotonic() + timeout_s)
        return supervisor.pid()
    except Unreachable as exc:
        running = daemon.find(run_dir)
        if running is None:
            raise CtlError(f"{exc}, and it has exited: see {run_dir / 'supervisord.log'}") from exc
        raise Unresponsive(
            f"{exc}; it runs (pid {running.pid}) but did not answer within {timeout_s:g} s, "
            "and its programs may still be starting: `mdpctl down` stops them once it "
            "answers, `mdpctl down --force` kills it and stops them now",
            running.pid, run_dir) from exc


@dataclass(frozen=True)
class StopReport:
    supervisord_pid: int
    processes: int


def _stop_all(supervisor: Supervisor, names: list[str]) -> None:
    """Send every named process its stop signal at once (supervisord does not wait)."""
    for name in names:
        supervisor.stop(name)


def _wait_exited(pids: list[int], timeout_s: float, what: str) -> None:
    def check() -> str | None:
        left = [p for p in pids if procfs.alive(p)]
        return f"pids {', '.join(map(str, left))} still running" if left else None

    wait_until(check, timeout_s, what, interval_s=0.05)


def stop(run_dir: Path, timeout_s: float | None = None) -> StopReport:
    """Shut the local cluster down and wait until no process of it is left.

    Workers, doors and helpers first, all at once (each worker finishes the request in
    hand and leaves the brokers), then the brokers, then supervisord itself.
    """
    supervisor = Supervisor(endpoint_for(run_dir), timeout_s=daemon.ANSWER_TIMEOUT_S)
    try:
        pid = supervisor.pid()
    except Unreachable as exc:
        daemon.check_answers(run_dir)  # one that runs but does not answer is not gone
        raise NotRunning(f"no cluster is running in {run_dir}") from exc
    supervisor = Supervisor(endpoint_for(run_dir), timeout_s=10.0)
    processes = supervisor.processes()
    configs = supervisor.configs()
    if timeout_s is None:
        timeout_s = max((c.stopwaitsecs for c in configs), default=10) + 15.0
    deadline = time.monotonic() + timeout_s
    brokers = {c.fullname for c in configs if parse_command(c.command).kind == "broker"}
    running = [p for p in processes if p.pid]
    for phase in (False, True):
        chosen = [p for p in running if (p.fullname in brokers) == phase]
        _stop_all(supervisor, [p.fullname for p in chosen])
        what = "the brokers to exit" if phase else "the workers and doors to exit"
        _wait_exited([p.pid for p in chosen], max(0.1, deadline - time.monotonic()), what)
    supervisor.shutdown()
    _wait_exited([pid], max(0.1, deadline - time.monotonic()), "supervisord to exit")
    return StopReport(pid, len(running))
