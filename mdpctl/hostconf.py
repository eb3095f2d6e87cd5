"""supervisord configuration for DIPS, rendered from the templates in ``mdpctl/data``.

One :class:`HostConfig` describes what one supervisord runs: brokers, worker pools and
the version probe, and on worker hosts the scale keeper (:mod:`mdpctl.keeper`).  Three
profiles build it: the local all-in-one cluster, a broker host,
and a worker host that gives a chosen number of CPUs to image work.

Worker processes of a service form one supervisord group named after the service, made
of two programs: ``SERVICE`` (``workers`` processes, autostart) and ``SERVICE-spare``
(``spare`` processes, not started).  Process names run on, ``ecard-00`` ... ``ecard-07``,
so a service has a fixed set of numbered *slots*; ``mdpctl scale`` starts and stops
individual slots and never changes ``numprocs`` (supervisord would restart the group).
"""

from __future__ import annotations

import math
import re
import shlex
import string
from dataclasses import dataclass, field
from importlib import resources

from mdp.errors import ConfigError
from mdp.rates import check_link_floor, format_rate
from mdpctl.errors import UsageError
from mdpctl.images import DOOR_REDIS_ENV, REDIS_PROGRAM, ImageServing

DRAIN_MARGIN_S = 10.0
"""Added to a worker's time limit for its stop timeout: leaving every broker, exiting."""
DEFAULT_TIME_LIMIT_S = 30.0
DEFAULT_LOG_LEVEL = "INFO"
START_RETRIES = 3
"""supervisord's startretries: starts again of a program that exits within its first second
(startsecs=1), each a second later than the one before, until it is FATAL."""
BROKER_START_RETRIES = 10  # brokers are tried longer: every other program needs them
HTTP_LISTEN = "127.0.0.1:8080"  # mdp-http of the local cluster
GEARMAN_LISTEN = "127.0.0.1:4730"  # mdp-gearman of the local cluster, where gearmand would be

VERSION_PROBE_PROGRAM = "mdp-version"
KEEPER_PROGRAM = "mdp-scale"  # mdpctl.keeper; the same name as mdpctl.scalestate's
BROKER_GROUP = "brokers"
HTTP_PROGRAM = "mdp-http"
GEARMAN_PROGRAM = "mdp-gearman"
RESERVED_NAMES = frozenset({BROKER_GROUP, VERSION_PROBE_PROGRAM, KEEPER_PROGRAM, HTTP_PROGRAM,
                            GEARMAN_PROGRAM, REDIS_PROGRAM})
# A group's priority orders supervisord's own start (low first) and shutdown (high first):
# brokers before workers before the doors, and the other way round.
BROKER_PRIORITY = 100
WORKER_PRIORITY = 200

_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ENDPOINT = re.compile(r"^tcp://(?P<host>[^:/\s]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class WorkerPool:
    """The worker slots of one service on one host."""

    service: str
    workers: int
    spare: int = 0

    def __post_init__(self) -> None:
        if not _SERVICE_NAME.match(self.service) or self.service in RESERVED_NAMES:
            raise UsageError(f"{self.service!r} is not a usable service name")
        if self.workers < 0 or self.spare < 0 or self.workers + self.spare == 0:
            raise UsageError(f"service {self.service}: needs at least one worker slot")


@dataclass(frozen=True)
class RpcListen:
    """supervisord's HTTP control server, for mdpctl on another host."""

    listen: str
    username: str
    password: str
    """As supervisord's ``password=`` takes it, e.g. ``{SHA}`` and a hex digest."""


@dataclass(frozen=True)
class CurveFiles:
    """Key files the host's programs are started with (docs/SECURITY.md)."""

    secret: str  # this host's key pair (.key_secret)
    client_keys: str | None = None  # brokers: allowed client public keys
    worker_keys: str | None = None  # brokers: allowed worker public keys
    broker_key: str | None = None  # workers and doors: the brokers' public key
    door_secret: str | None = None  # mdp-gearman and mdp-http: a client key pair

    def broker_args(self) -> list[str]:
        if not (self.client_keys and self.worker_keys):
            raise UsageError("a CURVE broker needs --client-keys and --worker-keys")
        return ["--curve-secret", self.secret, "--client-keys", self.client_keys,
                "--worker-keys", self.worker_keys]

    def worker_args(self) -> list[str]:
        if not self.broker_key:
            raise UsageError("CURVE workers need --broker-key, the brokers' public key")
        return ["--curve-secret", self.secret, "--broker-key", self.broker_key]

    def door_args(self) -> list[str]:
        """The front doors are clients: brokers refuse requests signed with a worker's (or
        a broker's) key, so they get a client key pair of their own."""
        if not (self.door_secret and self.broker_key):
            raise UsageError("under CURVE, --gearman and --http need --door-secret (a client "
                             "key pair) and --broker-key (the brokers' public key)")
        return ["--curve-secret", self.door_secret, "--broker-key", self.broker_key]

    def gearman_worker_args(self) -> list[str]:
        """The Gearman door's workers' broker links are workers: this host's worker key."""
        return ["--worker-secret", self.secret]


@dataclass(frozen=True)
class HostConfig:
    """Everything one supervisord configuration file says."""

    title: str
    generated_by: str
    python: str
    run_dir: str
    pythonpath: str | None = None
    broker_binds: tuple[str, ...] = ()
    brokers: tuple[str, ...] = ()
    pools: tuple[WorkerPool, ...] = ()
    time_limit_s: float = DEFAULT_TIME_LIMIT_S
    heartbeat_interval_s: float | None = None
    link_floor: int | None = None  # bytes per second; None: the programs' own (10 MB/s)
    max_requests: int = 0
    log_level: str = DEFAULT_LOG_LEVEL
    start_retries: int | None = None  # None: START_RETRIES, BROKER_START_RETRIES for brokers
    identifier: str = "dips"
    rpc: RpcListen | None = None
    extra_environment: dict[str, str] = field(default_factory=dict)
    curve: CurveFiles | None = None
    gearman_listen: str | None = None  # HOST:PORT of an mdp-gearman front door, if any
    http_listen: str | None = None  # mdp-http's HOST:PORT, None: no gateway on this host
    images: ImageServing = field(default_factory=ImageServing)

    def __post_init__(self) -> None:
        for endpoint in self.broker_binds + self.brokers:
            if not _ENDPOINT.match(endpoint):
                raise UsageError(f"{endpoint!r} is not an endpoint like tcp://HOST:PORT")
        if self.pools and not self.brokers:
            raise UsageError("workers need at least one broker to connect to")
        if not self.pools and not self.broker_binds:
            raise UsageError("a host runs at least one broker or one worker pool")
        services = [pool.service for pool in self.pools]
        if len(set(services)) != len(services):
            raise UsageError("a service is listed twice")
        ports = [broker_program(e) for e in self.broker_binds]
        if len(set(ports)) != len(ports):
            raise UsageError("two brokers on one host need different ports")
        if self.time_limit_s <= 0:
            raise UsageError("--time-limit must be positive")
        if self.heartbeat_interval_s is not None and self.heartbeat_interval_s <= 0:
            raise UsageError("--heartbeat-interval must be positive")
        if self.max_requests < 0:
            raise UsageError("--max-requests must be 0 (no limit) or positive")
        if self.start_retries is not None and self.start_retries < 0:
            raise UsageError("--start-retries must be 0 or more")
        if self.link_floor is not None:
            try:
                check_link_floor(self.link_floor, "--link-floor")
            except ConfigError as exc:
                raise UsageError(str(exc)) from None

    @property
    def stopwaitsecs(self) -> int:
        return math.ceil(self.time_limit_s + DRAIN_MARGIN_S)

    def startretries(self, default: int = START_RETRIES) -> str:
        """supervisord's startretries for a program whose own default is ``default``."""
        return str(default if self.start_retries is None else self.start_retries)


def broker_program(endpoint: str) -> str:
    """The supervisord program name of the broker bound at ``endpoint``."""
    match = _ENDPOINT.match(endpoint)
    if match is None:
        raise UsageError(f"{endpoint!r} is not an endpoint like tcp://HOST:PORT")
    return f"broker-{match['port']}"


def escape(text: str) -> str:
    """Protect a literal value (a path) from supervisord's %-expansion."""
    return text.replace("%", "%%")


def escape_env(text: str) -> str:
    """Protect a literal value in ``[supervisord] environment=``, which is expanded twice."""
    return text.replace("%", "%%%%")


def _template(name: str) -> string.Template:
    text = resources.files("mdpctl").joinpath("data", name).read_text(encoding="utf-8")
    return string.Template(text)


def _fmt_seconds(value: float) -> str:
    return f"{value:g}"


def _link_floor(config: HostConfig) -> list[str]:
    """Every broker, worker and door of a host gets the same --link-floor (when given)."""
    if config.link_floor is None:
        return []
    return ["--link-floor", format_rate(config.link_floor)]


def broker_command(config: HostConfig, endpoint: str) -> list[str]:
    argv = [config.python, "-m", "mdp.broker", "--bind", endpoint]
    if config.heartbeat_interval_s is not None:
        argv += ["--heartbeat-interval", _fmt_seconds(config.heartbeat_interval_s)]
    argv += _link_floor(config)
    if config.curve is not None:
        argv += config.curve.broker_args()
    return argv + ["--log-level", config.log_level]


def worker_command(config: HostConfig, service: str) -> list[str]:
    argv = [config.python, "-m", "mdp.worker"]
    for broker in config.brokers:
        argv += ["--broker", broker]
    argv += ["--service", service, "--time-limit", _fmt_seconds(config.time_limit_s)]
    if config.heartbeat_interval_s is not None:
        argv += ["--heartbeat-interval", _fmt_seconds(config.heartbeat_interval_s)]
    if config.max_requests:
        argv += ["--max-requests", str(config.max_requests)]
    argv += _link_floor(config)
    if config.curve is not None:
        argv += config.curve.worker_args()
    return argv + ["--log-level", config.log_level]


def gearman_command(config: HostConfig) -> list[str]:
    argv = [config.python, "-m", "mdp_gearman", "--listen", str(config.gearman_listen),
            "--state-dir", f"{config.run_dir}/gearman-state"]
    for broker in config.brokers or config.broker_binds:
        argv += ["--broker", broker]
    argv += _link_floor(config)
    # Gearman workers (PHP's GearmanWorker, ...) may offer any function here: the door serves
    # the fleet's own hosts, who may run workers anyway (docs/SECURITY.md)
    argv += ["--worker-functions", "*"]
    if config.curve is not None:
        argv += config.curve.door_args() + config.curve.gearman_worker_args()
    return argv + ["--log-level", config.log_level]


def http_command(config: HostConfig) -> list[str]:
    """mdp-http for every broker of the fleet (a broker host's own when it knows no other)."""
    argv = [config.python, "-m", "mdp_http", "--listen", str(config.http_listen)]
    own = [b.replace("0.0.0.0", "127.0.0.1") for b in config.broker_binds]
    for broker in config.brokers or own:
        argv += ["--broker", broker]
    argv += config.images.door_args()
    argv += _link_floor(config)
    if config.curve is not None:
        argv += config.curve.door_args()
    return argv + ["--log-level", config.log_level]


def probe_command(config: HostConfig) -> list[str]:
    return [config.python, "-m", "mdpctl.probe"]


def keeper_command(config: HostConfig) -> list[str]:
    return [config.python, "-m", "mdpctl.keeper", "--state", f"{config.run_dir}/scale.json",
            "--supervisor", f"unix://{config.run_dir}/supervisor.sock"]


def _environment(config: HostConfig) -> str:
    env: dict[str, str] = {"PYTHONUNBUFFERED": "1"}
    if config.pythonpath:
        env["PYTHONPATH"] = config.pythonpath
    env.update(config.extra_environment)
    env.update(config.images.worker_environment())
    return ",".join(f'{key}="{value}"' for key, value in env.items())


def render(config: HostConfig) -> str:
    """The supervisord configuration file for ``config``."""
    parts = [
        _template("supervisord.conf").substitute(
            title=config.title,
            generated_by=config.generated_by,
            run_dir=config.run_dir,
            identifier=config.identifier,
            environment=_environment(config),
        )
    ]
    if config.rpc is not None:
        parts.append(
            _template("inet_http_server.conf").substitute(
                listen=config.rpc.listen,
                username=config.rpc.username,
                password=config.rpc.password,
            )
        )
    parts.extend(_brokers(config))
    for pool in config.pools:
        parts.extend(_pool(config, pool))
    if config.images.redis is not None:
        parts.append(_template("redis.conf").substitute(
            command=_command(config.images.redis.command(config.run_dir)),
            run_dir=config.run_dir, start_retries=config.startretries()))
    if config.http_listen:
        redis = config.images.door_redis()
        parts.append(_template("http.conf").substitute(
            command=_command(http_command(config)), run_dir=config.run_dir,
            start_retries=config.startretries(),
            environment=f'environment={DOOR_REDIS_ENV}="{redis}"\n' if redis else ""))
    if config.pools:
        parts.append(
            _template("scale-keeper.conf").substitute(
                command=_command(keeper_command(config)), run_dir=config.run_dir,
                start_retries=config.startretries(),
            )
        )
    parts.append(
        _template("version-probe.conf").substitute(
            command=_command(probe_command(config)), run_dir=config.run_dir
        )
    )
    if config.gearman_listen:
        parts.append(_template("gearman.conf").substitute(
            command=_command(gearman_command(config)), run_dir=config.run_dir,
            start_retries=config.startretries()))
    return "".join(parts)


def _command(argv: list[str]) -> str:
    return shlex.join(argv)


def _brokers(config: HostConfig) -> list[str]:
    if not config.broker_binds:
        return []
    template = _template("broker.conf")
    programs = [broker_program(e) for e in config.broker_binds]
    parts = [
        template.substitute(
            program=program,
            command=_command(broker_command(config, endpoint)),
            run_dir=config.run_dir,
            start_retries=config.startretries(BROKER_START_RETRIES),
        )
        for program, endpoint in zip(programs, config.broker_binds, strict=True)
    ]
    parts.append(f"\n[group:{BROKER_GROUP}]\nprograms={','.join(programs)}\n"
                 f"priority={BROKER_PRIORITY}\n")
    return parts


def _pool(config: HostConfig, pool: WorkerPool) -> list[str]:
    template = _template("worker.conf")
    common = {
        "service": pool.service,
        "command": _command(worker_command(config, pool.service)),
        "run_dir": config.run_dir,
        "time_limit": f"{_fmt_seconds(config.time_limit_s)} s",
        "stopwaitsecs": str(config.stopwaitsecs),
        "start_retries": config.startretries(),
    }
    parts: list[str] = []
    programs: list[str] = []
    if pool.workers:
        programs.append(pool.service)
        parts.append(
            template.substitute(
                common,
                program=pool.service,
                comment=f"{pool.workers} {pool.service} workers, started with supervisord.",
                numprocs=pool.workers,
                numprocs_start=0,
                autostart="true",
            )
        )
    if pool.spare:
        programs.append(f"{pool.service}-spare")
        parts.append(
            template.substitute(
                common,
                program=f"{pool.service}-spare",
                comment=f"{pool.spare} spare slots that `mdpctl scale` starts and stops.",
                numprocs=pool.spare,
                numprocs_start=pool.workers,
                autostart="false",
            )
        )
    parts.append(f"\n[group:{pool.service}]\nprograms={','.join(programs)}\n"
                 f"priority={WORKER_PRIORITY}\n")
    return parts
