"""Settings of the broker and the worker: one dataclass each, with defaults and the
cross-field checks, and the command lines that override them."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from mdp import protocol as p
from mdp.errors import ConfigError
from mdp.keys import CurveConfig
from mdp.options import TRANSPORTS, check_endpoint
from mdp.rates import check_link_floor, format_size, link_floor_flag, size_arg
from mdp.workerstate import Timing

BROKER_DESCRIPTION = "The Majordomo broker of DIPS."
WORKER_DESCRIPTION = "A DIPS worker: one service, one request at a time, every broker."
WORKER_TRANSPORT_ENV = "DIPS_WORKER_TRANSPORT"  # the default of mdp-worker's --transport
BROKER_TRANSPORT_ENV = "DIPS_BROKER_TRANSPORT"  # the default of mdp-broker's --transport
# on a plain link nobody answers the broker's ZMTP PINGs while a handler runs until the
# sentinel takes the worker over at --busy-after: this keeps that well under the broker's
# ZMTP timeout (BrokerConfig.zmtp_timeout_ms: 4.4 s by default, 0.3 s at the least)
PLAIN_MAX_BUSY_AFTER_S = 1.0
# --transport auto picks a plain link only when the sentinel's turn comes within a third of
# the shortest ZMTP timeout any broker may have (0.3 s), whatever the brokers' settings
AUTO_PLAIN_MAX_BUSY_AFTER_S = 0.1
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_BIND_ANY = re.compile(r"tcp://(?P<host>[^:]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\*|[0-9]{1,5})")


def check_bind(endpoint: str) -> str:
    """``endpoint`` if the broker can bind it: what a client can connect to, and also
    ``*`` for the host (every interface) or the port (any free one)."""
    match = _BIND_ANY.fullmatch(endpoint) if isinstance(endpoint, str) else None
    if match is not None and "*" in (match["host"], match["port"]):
        host = "127.0.0.1" if match["host"] == "*" else match["host"]
        port = "1" if match["port"] == "*" else match["port"]
        candidate = f"tcp://{host}:{port}"
    else:
        candidate = endpoint
    try:
        check_endpoint(candidate)
    except ConfigError as exc:
        why = str(exc).replace(f"broker endpoint {candidate!r}", "", 1).lstrip(": ")
        raise ConfigError(f"--bind {endpoint!r}: {why}") from None
    return endpoint


@dataclass
class BrokerConfig:
    """Broker settings; the command line overrides the defaults."""

    bind: list[str] = field(default_factory=lambda: ["tcp://127.0.0.1:5555"])
    heartbeat_interval_s: float = 1.0
    heartbeat_liveness: int = 3
    probe_interval_s: float = 0.2  # how often busy workers are checked for a dropped link
    frozen_after_s: float = 0.8  # a worker holding a task and silent this long: taken back
    max_queue: int = 10_000  # per service
    max_services: int = 1_000
    unknown_grace_s: float = 2.0
    max_message_bytes: int = p.MAX_MESSAGE_BYTES  # larger messages: libzmq drops the peer
    max_frames: int = 300  # per message (a batched SUBMIT or RESULT takes one per request)
    max_total_queue: int = 100_000
    # bytes of request bodies queued over all services (not yet given to a worker): 32
    # requests of the largest size, thousands of ordinary images; what the count limits
    # allow (100,000 x 32 MiB) no broker host has
    max_queue_bytes: int = 1 << 30
    max_workers: int = 10_000
    max_prefetch: int = 16  # tasks a worker may hold beyond the one it runs (for short
    # tasks only: the hold budget, about 5 ms of work, caps it for longer ones)
    zmtp_heartbeat_ms: int = 1000  # ZMTP PING interval; a peer silent 3x this is dropped
    link_floor: int = p.DEFAULT_LINK_FLOOR  # bytes per second: the slowest link allowed
    max_worker_losses: int = 2  # workers lost running one request before it is given up
    poison_memory_s: float = 60.0  # how long a given-up request is refused
    curve_secret: str | None = None  # the broker's own key pair (.key_secret file)
    client_keys: str | None = None  # directory of allowed client public keys
    worker_keys: str | None = None  # directory of allowed worker public keys
    # the ROUTER: "plain" (ZMTP on plain sockets in the broker's thread, mdp.plainrouter),
    # "zmq" (a pyzmq socket), "auto" (plain where it can be: zmq with CURVE or inproc://)
    transport: str = "auto"

    @property
    def curve(self) -> bool:
        return bool(self.curve_secret or self.client_keys or self.worker_keys)

    @property
    def plain(self) -> bool:
        """Whether the ROUTER is the plain one (see ``transport``): ``auto`` takes it where
        it binds exactly what pyzmq would (tcp:// on ``*`` or an IPv4 address, ipc://)."""
        return self.transport == "plain" or (
            self.transport == "auto" and self.plain_refusal() is None
            and all(_binds_as_libzmq(endpoint) for endpoint in self.bind))

    @property
    def zmtp_timeout_ms(self) -> int:
        """How long a peer's libzmq may stay silent after a ZMTP PING before it is dropped:
        3 intervals, and never less than the largest message takes at the slowest link a big
        body is allowed for (``link_floor``), plus one interval: libzmq counts a message
        as a sign of life only once all of it has come, so a shorter timeout would drop a
        client or worker in the middle of a big upload or result (32 MiB at 10 MB/s:
        4.4 s)."""
        ivl = self.zmtp_heartbeat_ms
        transfer_ms = -(-self.max_message_bytes * 1000 // self.link_floor)
        return max(3 * ivl, transfer_ms + ivl)

    def validate(self) -> None:
        if not self.bind:
            raise ConfigError("the broker needs at least one --bind endpoint")
        for endpoint in self.bind:
            check_bind(endpoint)
        if self.heartbeat_interval_s <= 0 or self.probe_interval_s <= 0:
            raise ConfigError("heartbeat and probe intervals must be positive")
        if self.heartbeat_liveness < 1:
            raise ConfigError("--heartbeat-liveness must be at least 1")
        if self.max_queue < 1 or self.max_services < 1:
            raise ConfigError("--max-queue and --max-services must be at least 1")
        if self.unknown_grace_s < 0:
            raise ConfigError("--unknown-grace must not be negative")
        if min(self.max_total_queue, self.max_workers) < 1:
            raise ConfigError("--max-total-queue and --max-workers must be at least 1")
        if not isinstance(self.max_queue_bytes, int) or \
                self.max_queue_bytes < self.max_message_bytes:
            raise ConfigError(f"--max-queue-bytes ({self.max_queue_bytes!r}) must be at least "
                              f"--max-message-bytes ({self.max_message_bytes}): a request of "
                              "the largest size must be able to wait for a worker")
        if self.zmtp_heartbeat_ms < 100 and self.zmtp_heartbeat_ms != 0:
            raise ConfigError("--zmtp-heartbeat must be at least 100 ms (or 0: none)")
        if self.frozen_after_s < self.probe_interval_s:
            raise ConfigError("--frozen-after must be at least the probe interval "
                              f"({self.probe_interval_s}s)")
        if not 0 <= self.max_prefetch <= 16:
            raise ConfigError("--max-prefetch must be between 0 and 16")
        if self.max_frames < 8:
            raise ConfigError("--max-frames must be at least 8 (a DIPS request takes 6)")
        if self.max_message_bytes < 1024:
            raise ConfigError("--max-message-bytes must be at least 1024")
        if self.max_worker_losses < 0 or self.poison_memory_s < 0:
            raise ConfigError("--max-worker-losses and --poison-memory must not be negative")
        if self.max_worker_losses > p.MAX_LOSSES:  # the most a count may say (LOSSES)
            raise ConfigError(f"--max-worker-losses must be at most {p.MAX_LOSSES} (the most "
                              "workers a request's count may say it cost), or 0: no limit")
        check_link_floor(self.link_floor, "--link-floor")
        keys = (self.curve_secret, self.client_keys, self.worker_keys)
        if any(keys) and not all(keys):
            raise ConfigError("CURVE needs all of --curve-secret, --client-keys and --worker-keys")
        self._check_transport()

    def _check_transport(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"--transport must be one of {', '.join(TRANSPORTS)}, got "
                              f"{self.transport!r}")
        if self.transport == "plain" and (why := self.plain_refusal()):
            raise ConfigError(f"--transport plain {why}: use --transport zmq or auto")

    def plain_refusal(self) -> str | None:
        """Why the plain ROUTER cannot serve this broker; None when it can."""
        if self.curve:
            return "cannot do CURVE (the plain ROUTER speaks the NULL mechanism only)"
        for endpoint in self.bind:
            if not endpoint.startswith(("tcp://", "ipc://")):
                return f"cannot bind {endpoint!r} (plain sockets are tcp:// or ipc://)"
            if endpoint == "ipc://*":
                return "cannot bind 'ipc://*' (give the socket file a path)"
            if endpoint.startswith("tcp://["):
                return (f"cannot bind {endpoint!r}: it binds IPv4 only, as the pyzmq "
                        "socket does")
        return None


def _binds_as_libzmq(endpoint: str) -> bool:
    """Whether a plain socket binds ``endpoint`` as libzmq would: ipc://, or tcp:// on
    ``*`` or an IPv4 address. A name may be an interface (libzmq binds ``tcp://eth0:5555``
    to its address) or a host name whose first address is IPv6 (libzmq, without IPv6,
    takes its IPv4 one): ``auto`` leaves such a bind to pyzmq."""
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[6:].rpartition(":")[0]
    if host == "*":
        return True
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


@dataclass
class WorkerConfig:
    """Worker settings; the command line overrides the defaults."""

    brokers: list[str] = field(default_factory=list)
    service: str = "echo"
    heartbeat_interval_s: float = 1.0
    heartbeat_liveness: int = 3
    reconnect_initial_s: float = 0.1
    reconnect_max_s: float = 5.0
    time_limit_s: float = 30.0
    max_requests: int = 0  # 0: no limit
    drain_linger_ms: int = 2000
    max_memory_mb: int = 0  # address-space limit of the process; 0: none
    limits: p.BodyLimits = p.DEFAULT_LIMITS
    max_message_bytes: int = p.MAX_MESSAGE_BYTES
    busy_after_s: float = Timing.busy_after_s  # a task running longer: BUSY elsewhere
    prefetch: int = 16  # tasks it is willing to hold beyond the one it runs (READY meta)
    reply_gather_s: float = Timing.reply_gather_s  # back-to-back replies wait to go together
    link_floor: int = Timing.link_floor  # bytes per second: the slowest link allowed
    # "plain": ZMTP on a plain socket where it can (tcp:// and ipc:// without CURVE), read
    # by the main thread and, while a handler runs long, by the sentinel; "zmq": a pyzmq
    # DEALER (libzmq's I/O thread); "auto": plain for a handler that declares it never holds
    # the GIL for long (mdp.handlers), zmq for any other (docs/PROTOCOL.md, "The worker's
    # transport")
    transport: str = "auto"
    curve: CurveConfig | None = None

    def validate(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"--transport must be one of {', '.join(TRANSPORTS)}, got "
                              f"{self.transport!r}")
        if not self.brokers:
            raise ConfigError("the worker needs at least one --broker endpoint")
        for endpoint in self.brokers:
            check_endpoint(endpoint)
        if len(set(self.brokers)) != len(self.brokers):
            raise ConfigError("a --broker endpoint is given twice")
        if not p.valid_service(self.service.encode()) or self.service.startswith("mmi."):
            raise ConfigError(f"invalid service name {self.service!r}")
        if self.heartbeat_interval_s <= 0 or self.time_limit_s <= 0:
            raise ConfigError("heartbeat interval and time limit must be positive")
        if self.heartbeat_liveness < 1 or self.max_requests < 0 or self.max_memory_mb < 0:
            raise ConfigError("--heartbeat-liveness must be >= 1, --max-requests and "
                              "--max-memory-mb >= 0")
        if self.limits.max_depth < 1 or self.limits.max_items < 1:
            raise ConfigError("--max-depth and --max-items must be at least 1")
        if not 0 <= self.busy_after_s < self.time_limit_s:
            raise ConfigError("--busy-after must be at least 0 and below --time-limit")
        if self.transport == "plain" and self.busy_after_s > PLAIN_MAX_BUSY_AFTER_S:
            raise ConfigError(f"--busy-after must be at most {PLAIN_MAX_BUSY_AFTER_S:g}s with "
                              "--transport plain: the broker's ZMTP heartbeats go unanswered "
                              "while a handler runs until then (its ZMTP timeout is 4.4 s by "
                              "default)")
        if not 0 <= self.prefetch <= 16:
            raise ConfigError("--prefetch must be between 0 and 16")
        if not 0 <= self.reply_gather_s <= self.busy_after_s:
            raise ConfigError("--reply-gather must be at least 0 and at most --busy-after")
        check_link_floor(self.link_floor, "--link-floor")


class VersionAction(argparse.Action):
    """``--version``: the code version on stdout (computed only when asked for); every
    program's."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show the code version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from mdp.version import code_version

        sys.stdout.write(f"{parser.prog} {code_version()}\n")
        parser.exit(0)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help with its default, where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.required:
            return action.help or ""
        return super()._get_help_string(action) or ""


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=_Help)
    parser.add_argument("--version", action=VersionAction)
    return parser


def _checked(parser: argparse.ArgumentParser, config: BrokerConfig | WorkerConfig) -> None:
    """Refuse a wrong setting at once, with one line naming it."""
    try:
        config.validate()
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")


def parse_broker_args(argv: Sequence[str] | None) -> tuple[BrokerConfig, str]:
    """``mdp-broker``'s command line: its config and log level."""
    d = BrokerConfig()
    parser = _parser("mdp-broker", BROKER_DESCRIPTION)
    add = parser.add_argument
    add("--bind", action="append", required=True, metavar="ENDPOINT",
        help="endpoint to bind, e.g. tcp://127.0.0.1:5555 or tcp://*:5555 (repeatable)")
    add("--heartbeat-interval", type=float, default=d.heartbeat_interval_s,
        metavar="SECONDS", help="how often every worker is sent a heartbeat; workers must "
        "use the same value")
    add("--heartbeat-liveness", type=int, default=d.heartbeat_liveness, metavar="N",
        help="heartbeats missed before a worker is forgotten")
    add("--max-queue", type=int, default=d.max_queue, metavar="N",
        help="requests queued per service before clients get 'overloaded'")
    add("--max-total-queue", type=int, default=d.max_total_queue, metavar="N",
        help="requests queued over all services before clients get 'overloaded'")
    add("--max-queue-bytes", type=size_arg, default=format_size(d.max_queue_bytes),
        metavar="SIZE", help="bytes of request bodies queued over all services (not yet "
        "given to a worker) before clients get 'overloaded', e.g. 1GiB, 512MB (at least "
        "--max-message-bytes)")
    add("--max-services", type=int, default=d.max_services, metavar="N",
        help="services known at once; a request for one more gets 'unknown_service'")
    add("--max-workers", type=int, default=d.max_workers, metavar="N",
        help="workers attached at once; one more is told to disconnect")
    add("--unknown-grace", type=float, default=d.unknown_grace_s, metavar="SECONDS",
        help="how long a request waits for a worker of a service that has none: after the "
        "broker starts, and for a service whose workers left; a service no worker has "
        "offered since then is answered 'unknown_service' at once")
    add("--max-worker-losses", type=int, default=d.max_worker_losses, metavar="N",
        help="workers that may die or freeze running one request before its caller gets "
        f"'worker_lost', at most {p.MAX_LOSSES} (0: no limit)")
    add("--poison-memory", type=float, default=d.poison_memory_s, metavar="SECONDS",
        help="how long a request given up as poisoned is refused at once when sent again")
    add("--max-message-bytes", type=size_arg, default=format_size(d.max_message_bytes),
        metavar="SIZE", help="a peer sending a larger message is disconnected, e.g. 32MiB")
    add("--max-frames", type=int, default=d.max_frames, metavar="N",
        help="frames per message (a batched request or reply takes one per request)")
    add("--max-prefetch", type=int, default=d.max_prefetch, metavar="N",
        help="tasks a DIPS worker may hold beyond the one it runs, given only when no "
        "worker is idle (0: none)")
    add("--frozen-after", type=float, default=d.frozen_after_s, metavar="SECONDS",
        help="a DIPS worker that holds a task and answers no probe for this long is taken "
        "for frozen: its tasks go to other workers (its late reply still counts)")
    add("--zmtp-heartbeat", type=int, default=d.zmtp_heartbeat_ms, metavar="MS",
        help="ZMTP heartbeat interval (0: none); a peer whose libzmq stays silent for 3x "
        "this (and at least as long as --max-message-bytes takes at --link-floor, plus this) "
        "is dropped, and a worker dropped so while running a request costs it a loss")
    add("--link-floor", **link_floor_flag(
        d.link_floor, "a worker is not probed nor taken for frozen, nor a peer's ZMTP link for "
        "dead, before the bytes on their way to or from it may have gone at this rate; give "
        "every broker, worker and door the same"))
    add("--transport", metavar="|".join(TRANSPORTS),
        help="plain: the ROUTER speaks ZMTP on plain sockets in the broker's own thread "
        "(tcp:// and ipc:// without CURVE; no libzmq I/O thread: less CPU per request); "
        "zmq: a pyzmq socket; auto: plain where it can be, else zmq. The default is auto, or "
        f"${BROKER_TRANSPORT_ENV} when it is set (plain from there means plain where it "
        "can be: a CURVE or inproc:// broker takes zmq)")
    curve = parser.add_argument_group("CURVE security (all three or none)")
    curve.add_argument("--curve-secret", metavar="FILE",
                       help="the broker's key pair (NAME.key_secret, mode 0600)")
    curve.add_argument("--client-keys", metavar="DIR", help="allowed client public keys")
    curve.add_argument("--worker-keys", metavar="DIR", help="allowed worker public keys")
    add("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
        help="log messages of this level and above")
    args = parser.parse_args(argv)
    config = BrokerConfig(
        bind=args.bind,
        heartbeat_interval_s=args.heartbeat_interval,
        heartbeat_liveness=args.heartbeat_liveness,
        max_queue=args.max_queue,
        max_services=args.max_services,
        unknown_grace_s=args.unknown_grace,
        max_total_queue=args.max_total_queue,
        max_queue_bytes=args.max_queue_bytes,
        max_workers=args.max_workers,
        max_message_bytes=args.max_message_bytes,
        max_frames=args.max_frames,
        max_prefetch=args.max_prefetch,
        zmtp_heartbeat_ms=args.zmtp_heartbeat,
        link_floor=args.link_floor,
        frozen_after_s=args.frozen_after,
        max_worker_losses=args.max_worker_losses,
        poison_memory_s=args.poison_memory,
        curve_secret=args.curve_secret,
        client_keys=args.client_keys,
        worker_keys=args.worker_keys,
        transport=args.transport or _env_transport(parser, BROKER_TRANSPORT_ENV) or d.transport,
    )
    if args.transport is None and config.transport == "plain" and config.plain_refusal():
        config.transport = "auto"  # (a fleet's or a suite's default, not this broker's ask)
    _checked(parser, config)
    return config, args.log_level


def _env_transport(parser: argparse.ArgumentParser, name: str) -> str | None:
    """The transport ``$name`` gives as a program's default (None: unset); exits naming
    the variable when it is not one of TRANSPORTS (it is not on the command line)."""
    value = os.environ.get(name)
    if value and value not in TRANSPORTS:
        parser.exit(2, f"{parser.prog}: ${name} must be one of {', '.join(TRANSPORTS)}, "
                    f"got {value!r}\n")
    return value or None


def parse_worker_args(
    argv: Sequence[str] | None,
) -> tuple[WorkerConfig, argparse.Namespace, str]:
    """``mdp-worker``'s command line: its config, the parsed flags and the log level."""
    d = WorkerConfig()
    parser = _parser("mdp-worker", WORKER_DESCRIPTION)
    add = parser.add_argument
    add("--broker", action="append", required=True, metavar="ENDPOINT",
        help="broker endpoint, e.g. tcp://127.0.0.1:5555 (repeat for every broker)")
    add("--service", required=True, help="service to offer, e.g. echo, ecard")
    add("--heartbeat-interval", type=float, default=d.heartbeat_interval_s, metavar="SECONDS",
        help="heartbeat interval; the brokers must use the same value")
    add("--heartbeat-liveness", type=int, default=d.heartbeat_liveness, metavar="N",
        help="heartbeats missed before a broker is taken for hung and reconnected")
    add("--time-limit", type=float, default=d.time_limit_s, metavar="SECONDS",
        help="longest a request may run; past it the client gets an error and the process "
        "recycles")
    add("--max-requests", type=int, default=d.max_requests, metavar="N",
        help="exit 0 after N requests (0: never), for supervisord to restart")
    add("--max-memory-mb", type=int, default=d.max_memory_mb, metavar="MB",
        help="address-space limit of this process (0: none)")
    add("--max-depth", type=int, default=d.limits.max_depth, metavar="N",
        help="deepest nesting of arrays and maps a request may have")
    add("--max-items", type=int, default=d.limits.max_items, metavar="N",
        help="most entries an array or map of a request may have")
    add("--max-message-bytes", type=size_arg, default=format_size(d.max_message_bytes),
        metavar="SIZE", help="a broker sending a larger message is disconnected, e.g. 32MiB")
    add("--busy-after", type=float, default=d.busy_after_s, metavar="SECONDS",
        help="a request running longer makes this worker BUSY at the other brokers and "
        "hands back requests they sent meanwhile")
    add("--prefetch", type=int, default=d.prefetch, metavar="N",
        help="requests it may hold behind the one it runs (0: none)")
    add("--reply-gather", type=float, default=d.reply_gather_s, metavar="SECONDS",
        help="replies of requests run back to back wait up to this long to go out together "
        "(0: each at once)")
    add("--link-floor", **link_floor_flag(
        d.link_floor, "a broker that announced a big task is not taken for silent before the "
        "task may have come at this rate; the brokers' value"))
    add("--transport", metavar="|".join(TRANSPORTS),
        help="plain: speak ZMTP on a plain socket (tcp:// and ipc:// without CURVE; less "
        "CPU per request, and the sentinel answers the broker's ZMTP heartbeats while a "
        "handler runs); zmq: a pyzmq socket; auto: plain where it can be for a handler that "
        "declares it never holds the GIL for long and --busy-after is at most "
        f"{AUTO_PLAIN_MAX_BUSY_AFTER_S:g}s, else zmq. The default comes from "
        f"${WORKER_TRANSPORT_ENV} when it is set")
    curve = parser.add_argument_group("CURVE security (both or none)")
    curve.add_argument("--curve-secret", metavar="FILE",
                       help="this worker's key pair (NAME.key_secret, mode 0600)")
    curve.add_argument("--broker-key", action="append", metavar="[ENDPOINT=]FILE",
                       help="the brokers' public key, or one broker's (repeatable)")
    add("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS,
        help="log messages of this level and above")
    args = parser.parse_args(argv)
    if bool(args.curve_secret) != bool(args.broker_key):
        parser.exit(2, f"{parser.prog}: CURVE needs both --curve-secret and --broker-key\n")
    config = WorkerConfig(
        brokers=args.broker,
        service=args.service,
        heartbeat_interval_s=args.heartbeat_interval,
        heartbeat_liveness=args.heartbeat_liveness,
        time_limit_s=args.time_limit,
        max_requests=args.max_requests,
        max_memory_mb=args.max_memory_mb,
        limits=p.BodyLimits(args.max_depth, args.max_items),
        max_message_bytes=args.max_message_bytes,
        busy_after_s=args.busy_after,
        prefetch=args.prefetch,
        reply_gather_s=args.reply_gather,
        link_floor=args.link_floor,
        transport=args.transport or _env_transport(parser, WORKER_TRANSPORT_ENV) or d.transport,
    )
    _checked(parser, config)
    return config, args, args.log_level
