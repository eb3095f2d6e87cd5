"""``mdp-gearman``'s settings: one dataclass with defaults and checks, and its command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mdp.config import VersionAction
from mdp.errors import ConfigError
from mdp.eventloop import EVENT_LOOP_HELP, EVENT_LOOPS, check_event_loop
from mdp.options import check_endpoints
from mdp.rates import (
    DEFAULT_LINK_FLOOR,
    check_link_floor,
    format_size,
    link_floor_flag,
    size_arg,
)
from mdp_gearman.inflight import DEFAULT_MAX_INFLIGHT_BYTES, GRACE_S
from mdp_gearman.mapping import DEFAULT_RAW_FIELD
from mdp_gearman.packets import DEFAULT_MAX_PACKET_BYTES
from mdp_gearman.workers import DEFAULT_MAX_MESSAGE_BYTES

DESCRIPTION = ("A Gearman job server in front of DIPS (binary and admin protocols on one "
               "port): Gearman clients submit jobs that any DIPS worker does, and Gearman "
               "workers (PHP's GearmanWorker, ...) become DIPS workers of their functions at "
               "every broker. docs/GEARMAN.md has the details.")


@dataclass
class GatewayConfig:
    """Gateway settings; the command line overrides the defaults."""

    listen: list[tuple[str, int]] = field(default_factory=lambda: [("127.0.0.1", 4730)])
    brokers: list[str] = field(default_factory=list)
    timeout_s: float = 10.0  # each job's deadline in DIPS
    state_dir: Path | None = None  # the background outbox; None: background jobs refused
    concurrency: int = 64  # foreground jobs in DIPS at once
    background_concurrency: int = 16
    worker_time_limit_s: float = 30.0  # a Gearman worker's job without CAN_DO_TIMEOUT
    worker_prefetch: int = 1  # tasks a Gearman worker may be given beyond the one it runs
    heartbeat_interval_s: float = 1.0  # the brokers' --heartbeat-interval
    link_floor: int = DEFAULT_LINK_FLOOR  # the brokers' --link-floor (bytes per second)
    max_connections: int = 1024
    max_jobs_per_connection: int = 256  # past this, the connection is not read
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES
    max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES  # incomplete packets, all together
    write_buffer_bytes: int = 4 * 1024 * 1024  # past this a slow reader is not read
    max_write_buffer_bytes: int = 64 * 1024 * 1024  # past this it is disconnected
    max_background_jobs: int = 1_000_000
    raw_field: str = DEFAULT_RAW_FIELD
    sync: str = "FULL"  # SQLite synchronous for the outbox: FULL or NORMAL
    curve_secret: str | None = None
    broker_key: str | None = None
    # functions Gearman workers may offer (fnmatch patterns); none: the worker side is off
    worker_functions: list[str] = field(default_factory=list)
    worker_secret: str | None = None  # under CURVE: the Gearman workers' links' key pair
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # the brokers' --max-message-bytes
    event_loop: str = "auto"  # auto (uvloop if installed), uvloop or asyncio
    packet_grace_s: float = GRACE_S  # a packet may take this long beyond its size at the floor

    def validate(self) -> None:
        if not self.listen:
            raise ConfigError("the gateway needs at least one --listen HOST:PORT")
        if not self.packet_grace_s > 0:
            raise ConfigError(f"--packet-grace must be more than 0, not {self.packet_grace_s}")
        check_event_loop(self.event_loop)
        if not self.brokers:
            raise ConfigError("the gateway needs at least one --broker endpoint")
        check_endpoints(self.brokers)
        if min(self.timeout_s, self.worker_time_limit_s, self.heartbeat_interval_s) <= 0:
            raise ConfigError("--timeout, --worker-time-limit and --heartbeat-interval must "
                              "be positive")
        if not 0 <= self.worker_prefetch <= 16:
            raise ConfigError("--worker-prefetch must be between 0 and 16")
        if min(self.concurrency, self.background_concurrency, self.max_connections,
               self.max_jobs_per_connection) < 1:
            raise ConfigError("concurrency and connection limits must be at least 1")
        if self.max_packet_bytes < 1024:
            raise ConfigError("--max-packet-bytes must be at least 1024")
        if self.max_inflight_bytes < self.max_packet_bytes:
            raise ConfigError(f"--max-inflight-bytes ({self.max_inflight_bytes}) must be at "
                              f"least --max-packet-bytes ({self.max_packet_bytes}), or a "
                              "packet of the largest size could never be read")
        if self.sync.upper() not in ("FULL", "NORMAL"):
            raise ConfigError("--sync is FULL or NORMAL")
        if bool(self.curve_secret) != bool(self.broker_key):
            raise ConfigError("CURVE needs both --curve-secret and --broker-key")
        check_link_floor(self.link_floor, "--link-floor")
        if self.worker_functions and self.curve_secret and not self.worker_secret:
            raise ConfigError("under CURVE, --worker-functions needs --worker-secret: a "
                              "worker key pair the brokers list (the door's own key is a "
                              "client's, and brokers refuse a client's key as a worker)")
        if self.worker_secret and not self.curve_secret:
            raise ConfigError("--worker-secret is for CURVE: give --curve-secret and "
                              "--broker-key too")
        for pattern in self.worker_functions:
            if not pattern or len(pattern) > 100:
                raise ConfigError(f"--worker-functions {pattern!r}: a function name or "
                                  "pattern of 1-100 characters ('ecard', 'img.*', '*')")
        if self.max_message_bytes < 1024 * 1024:
            raise ConfigError("--max-message-bytes must be at least 1MiB")


def _patterns(text: str) -> list[str]:
    patterns = [part.strip() for part in text.split(",") if part.strip()]
    if not patterns:
        raise argparse.ArgumentTypeError(f"{text!r} names no function ('ecard', 'img.*', '*')")
    return patterns


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"--listen takes HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help, with its default where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.required or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action) or ""


def parse_args(argv: Sequence[str] | None) -> tuple[GatewayConfig, str]:
    """The config and the log level from ``mdp-gearman``'s command line; a wrong setting
    ends the program with one line naming it."""
    try:
        return from_command_line(argv)
    except ConfigError as exc:
        sys.stderr.write(f"mdp-gearman: {exc}\n")
        raise SystemExit(2) from None


def from_command_line(argv: Sequence[str] | None) -> tuple[GatewayConfig, str]:
    """What :func:`parse_args` reads, with ConfigError naming a wrong setting (``mdpctl up``
    checks the door's command line so, before it starts anything)."""
    d = GatewayConfig()
    parser = argparse.ArgumentParser(prog="mdp-gearman", description=DESCRIPTION,
                                     formatter_class=_Help)
    add = parser.add_argument
    add("--version", action=VersionAction)
    add("--listen", action="append", type=parse_listen, metavar="HOST:PORT",
        help="where Gearman clients and workers connect; repeatable; port 0 picks a free "
        "one, logged at start (default: 127.0.0.1:4730)")
    add("--broker", action="append", required=True, metavar="ENDPOINT", dest="brokers",
        help="a DIPS broker, e.g. tcp://10.0.0.1:5555; give every broker")
    add("--timeout", type=float, default=d.timeout_s, metavar="SECONDS", dest="timeout_s",
        help="each job's deadline in DIPS")
    add("--state-dir", type=Path, metavar="DIR",
        help="where the durable outbox of background jobs lives (default: none, and "
        "background jobs are refused)")
    add("--concurrency", type=int, default=d.concurrency, metavar="N",
        help="foreground jobs in DIPS at once; more wait here, by priority")
    add("--background-concurrency", type=int, default=d.background_concurrency, metavar="N",
        help="background jobs of one service in DIPS at once; a service with no worker "
        "holds none")
    add("--worker-time-limit", type=float, default=d.worker_time_limit_s, metavar="SECONDS",
        dest="worker_time_limit_s", help="the longest a Gearman worker may run a job whose "
        "function has no CAN_DO_TIMEOUT; past it the caller gets worker_timeout")
    add("--worker-prefetch", type=int, default=d.worker_prefetch, metavar="N",
        help="tasks the brokers may give a busy Gearman worker to hold (0-16)")
    add("--heartbeat-interval", type=float, default=d.heartbeat_interval_s,
        metavar="SECONDS", dest="heartbeat_interval_s",
        help="heartbeat of the Gearman workers' broker links; the brokers' value")
    add("--link-floor", **link_floor_flag(
        d.link_floor, "the door's client and its Gearman workers' broker links take no broker "
        "for dead while a big job or result may still be on its way at this rate (the "
        "brokers' value), and a Gearman packet must arrive at it (see --max-inflight-bytes)"))
    add("--max-connections", type=int, default=d.max_connections, metavar="N",
        help="connections at once; one more gets ERROR and is closed")
    add("--max-jobs-per-connection", type=int, default=d.max_jobs_per_connection,
        metavar="N", help="jobs one client may have in flight; past this it is not read")
    add("--max-packet-bytes", type=int, default=d.max_packet_bytes, metavar="N",
        help="a peer declaring a larger packet gets ERROR and is disconnected")
    add("--max-inflight-bytes", type=int, default=d.max_inflight_bytes, metavar="N",
        help="bytes that packets still arriving may hold, every connection together; a "
        "packet that does not fit waits (its connection unread) until others arrive. Each "
        "packet must arrive within --packet-grace plus its size at --link-floor, or its "
        "connection gets ERROR and is closed")
    add("--packet-grace", dest="packet_grace_s", type=float, default=d.packet_grace_s,
        metavar="SECONDS", help="how long a packet may take beyond its size at --link-floor "
        "(a peer that starts one and stalls holds its share of the budget this long)")
    add("--worker-functions", action="append", type=_patterns, default=[],
        metavar="PATTERNS", help="functions Gearman workers may offer here, as names or "
        "fnmatch patterns, comma-separated or repeated ('ecard', 'img.*', '*'). A Gearman "
        "worker serves, and reads, every request for its functions, so without this flag "
        "the door takes none (default: none)")
    add("--max-message-bytes", type=size_arg, default=format_size(d.max_message_bytes),
        metavar="SIZE", help="the brokers' --max-message-bytes: a Gearman worker's result "
        "or progress past it is answered as its error, not sent")
    add("--raw-field", default=d.raw_field, metavar="NAME",
        help="the request field that carries a workload which is neither PHP serialize(), "
        "msgpack nor JSON (and what a Gearman worker gets as its bytes)")
    add("--sync", default=d.sync, choices=["FULL", "NORMAL"],
        help="SQLite synchronous mode of the outbox (NORMAL survives a process crash, FULL "
        "also a power cut)")
    add("--event-loop", default=d.event_loop, choices=EVENT_LOOPS, help=EVENT_LOOP_HELP)
    curve = parser.add_argument_group("CURVE security (both or none)")
    curve.add_argument("--curve-secret", metavar="FILE",
                       help="this door's key pair (NAME.key_secret, mode 0600)")
    curve.add_argument("--broker-key", metavar="FILE", help="the brokers' public key")
    curve.add_argument("--worker-secret", metavar="FILE",
                       help="the key pair of the Gearman workers' broker links: a worker key "
                       "the brokers list (needed for --worker-functions under CURVE)")
    add("--log-level", default="INFO", type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], help="what to log")
    args = vars(parser.parse_args(argv))
    level = args.pop("log_level")
    args["listen"] = args["listen"] or d.listen
    args["worker_functions"] = [p for group in args["worker_functions"] for p in group]
    config = GatewayConfig(**args)
    config.validate()
    return config, level
