"""The front doors (mdp-http, mdp-gearman) as supervisord runs them: found, watched, restarted.

A door is a supervisord program whose command runs ``mdp_http`` or ``mdp_gearman``; its
address is its ``--listen`` argument.  The doors' Redis (``redis-server``, its address
from ``--bind`` and ``--port``) is found, shown and waited for with them, but never
restarted by ``reload``: it is a cache, and runs none of our code.  A door *serves* when
supervisord has it RUNNING and its port accepts connections.  A door that exits at start
(its port taken, a bad flag) is reported with its address, the port's holder and the end
of its log.
"""

from __future__ import annotations

import logging
import shlex
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mdp.errors import ConfigError
from mdpctl import ports
from mdpctl.cluster import Cluster, Host
from mdpctl.endpoints import split_listen
from mdpctl.errors import CtlError, ProcessFailed
from mdpctl.images import REDIS_SERVER
from mdpctl.readiness import process_failure, wait_until
from mdpctl.rpc import ProcessInfo, Supervisor

log = logging.getLogger(__name__)

DOOR_MODULES = {"mdp_http": "mdp-http", "mdp_gearman": "mdp-gearman",
                "mdp-http": "mdp-http", "mdp-gearman": "mdp-gearman"}
REDIS_KIND = "redis"  # shown and watched with the doors; no code of ours, so never reloaded
FAILED_STATES = frozenset({"FATAL", "BACKOFF", "EXITED", "UNKNOWN"})


@dataclass(frozen=True)
class Door:
    """One front door on one host."""

    host: str
    kind: str  # "mdp-http", "mdp-gearman" or "redis"
    listen: str  # HOST:PORT
    process: ProcessInfo

    @property
    def runs_our_code(self) -> bool:
        """A door restarts on `reload`; the Redis (a cache, not our code) does not."""
        return self.kind != REDIS_KIND

    @property
    def label(self) -> str:
        return f"{self.host}/{self.process.fullname}"

    @property
    def url(self) -> str:
        scheme = {"mdp-http": "http", "mdp-gearman": "gearman"}.get(self.kind, self.kind)
        return f"{scheme}://{self.listen}" + ("/" if scheme == "http" else "")


def door_kind(command: str) -> tuple[str, str] | None:
    """(kind, listen address) when ``command`` runs a door or the doors' Redis, else None."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    runs = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else (
        argv[0].rsplit("/", 1)[-1] if argv else "")
    if runs == REDIS_SERVER:
        host, port = _option(argv, "--bind") or "127.0.0.1", _option(argv, "--port") or "6379"
        return REDIS_KIND, f"{host}:{port}"
    kind = DOOR_MODULES.get(runs)
    if kind is None:
        return None
    return kind, _option(argv, "--listen") or ""


def _option(argv: list[str], flag: str) -> str | None:
    return next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag), None)


def read_host_doors(host: Host, timeout_s: float) -> list[Door]:
    """The doors one supervisord runs (none when it does not answer)."""
    sup = Supervisor(host.supervisor, timeout_s)
    try:
        kinds = {c.fullname: door_kind(c.command) for c in sup.configs()}
        processes = sup.processes()
    except CtlError as exc:
        log.info("cannot read the doors of %s: %s", host.name, exc)
        return []
    found = []
    for proc in processes:
        kind = kinds.get(proc.fullname)
        if kind is not None:
            found.append(Door(host.name, kind[0], kind[1], proc))
    return found


def read_doors(cluster: Cluster, hosts: Sequence[Host] | None = None) -> list[Door]:
    return [d for h in (hosts or cluster.hosts) for d in read_host_doors(h, cluster.rpc_timeout_s)]


def _port(listen: str) -> tuple[str, int] | None:
    try:
        return split_listen(listen)
    except ConfigError:
        return None  # a door configured without --listen (its program's default)


def accepts(listen: str, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections at ``HOST:PORT``."""
    address = _port(listen)
    if address is None:
        return False
    host, port = address
    host = "127.0.0.1" if host in ("0.0.0.0", "*", "") else host
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout_s):
            return True
    except OSError:
        return False


def failure_reason(cluster: Cluster, door: Door) -> str:
    """Why a door is not serving, in one line: state, port holder, end of its log."""
    proc = door.process
    extra = ""
    address = _port(door.listen)
    holder = ports.holder(address[1]) if address else None
    if holder is not None and holder.pid != proc.pid:
        extra = f"; port {door.listen.rpartition(':')[2]} is held by {holder.describe()}"
    sup = Supervisor(cluster.host(door.host).supervisor, cluster.rpc_timeout_s)
    label = f"{door.kind} ({door.listen}) could not start: {door.label}"
    return process_failure(label, proc, sup, extra)


def wait_serving(cluster: Cluster, timeout_s: float, expect: int | None = None) -> list[Door]:
    """Wait until every door of the cluster is RUNNING and accepts connections.

    A door that failed (FATAL, or exited at start and waiting to be retried) ends the
    wait at once with ProcessFailed naming its address and why.
    """
    latest: list[list[Door]] = [[]]

    def check() -> str | None:
        doors = read_doors(cluster)
        latest[0] = doors
        missing = []
        for door in doors:
            state = door.process.state
            if state in FAILED_STATES or (state == "STOPPED" and door.process.exitstatus):
                raise ProcessFailed(failure_reason(cluster, door))
            if state != "RUNNING":
                missing.append(f"{door.label} is {state}")
            elif not accepts(door.listen):
                missing.append(f"{door.kind} does not accept connections at {door.listen} yet")
        if expect is not None and len(doors) < expect:
            missing.append(f"{len(doors)} of {expect} doors configured")
        return "; ".join(missing) or None

    wait_until(check, timeout_s, "the front doors to serve", interval_s=0.1)
    return latest[0]


def start_failed(cluster: Cluster, say: Callable[[str], None]) -> list[Door]:
    """Start again every door that is not running (its port may be free by now)."""
    restarted = []
    for door in read_doors(cluster):
        if door.process.state in FAILED_STATES or door.process.state == "STOPPED":
            address = _port(door.listen)
            problem = ports.check_free(*address) if address else None
            if problem is not None:
                raise ProcessFailed(f"{door.kind} ({door.listen}) cannot start: {problem}")
            sup = Supervisor(cluster.host(door.host).supervisor, cluster.rpc_timeout_s)
            if door.process.state == "BACKOFF":
                sup.stop(door.process.fullname)
            sup.start(door.process.fullname)
            say(f"started {door.label} again ({door.url})")
            restarted.append(door)
    return restarted


def restart(cluster: Cluster, door: Door, timeout_s: float) -> float:
    """Stop a door, start it again and wait until it serves; return the seconds it took."""
    started = time.monotonic()
    sup = Supervisor(cluster.host(door.host).supervisor, cluster.rpc_timeout_s)
    if door.process.state in ("RUNNING", "STARTING", "BACKOFF"):
        sup.stop(door.process.fullname)

        def stopped() -> str | None:
            state = sup.process(door.process.fullname).state
            return None if state in ("STOPPED", "EXITED", "FATAL") else f"it is {state}"

        wait_until(stopped, timeout_s, f"{door.label} to stop")
    sup.start(door.process.fullname)

    def serving() -> str | None:
        proc = sup.process(door.process.fullname)
        if proc.state in FAILED_STATES:
            raise ProcessFailed(failure_reason(cluster, Door(door.host, door.kind, door.listen,
                                                             proc)))
        if proc.state != "RUNNING":
            return f"it is {proc.state}"
        return None if accepts(door.listen) else f"nothing accepts at {door.listen} yet"

    wait_until(serving, timeout_s, f"{door.label} to serve")
    return time.monotonic() - started
