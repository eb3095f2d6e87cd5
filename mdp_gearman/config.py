"""``mdp-gearman``'s settings: one dataclass with defaults and checks, and its command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mdp.errors import ConfigError
from mdp_gearman.mapping import DEFAULT_RAW_FIELD
from mdp_gearman.packets import DEFAULT_MAX_PACKET_BYTES

DESCRIPTION = ("A Gearman job server in front of DIPS: Gearman clients submit jobs, DIPS "
               "workers do them (binary and admin protocols on the same port).")


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
    max_connections: int = 1024
    max_jobs_per_connection: int = 256  # past this, the connection is not read
    max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES
    write_buffer_bytes: int = 4 * 1024 * 1024  # past this a slow reader is not read
    max_write_buffer_bytes: int = 64 * 1024 * 1024  # past this it is disconnected
    max_background_jobs: int = 1_000_000
    raw_field: str = DEFAULT_RAW_FIELD
    sync: str = "FULL"  # SQLite synchronous for the outbox: FULL or NORMAL
    curve_secret: str | None = None
    broker_key: str | None = None

    def validate(self) -> None:
        if not self.listen:
            raise ConfigError("the gateway needs at least one --listen HOST:PORT")
        if not self.brokers:
            raise ConfigError("the gateway needs at least one --broker endpoint")
        if self.timeout_s <= 0:
            raise ConfigError("--timeout must be positive")
        if min(self.concurrency, self.background_concurrency, self.max_connections,
               self.max_jobs_per_connection) < 1:
            raise ConfigError("concurrency and connection limits must be at least 1")
        if self.max_packet_bytes < 1024:
            raise ConfigError("--max-packet-bytes must be at least 1024")
        if self.sync.upper() not in ("FULL", "NORMAL"):
            raise ConfigError("--sync is FULL or NORMAL")
        if bool(self.curve_secret) != bool(self.broker_key):
            raise ConfigError("CURVE needs both --curve-secret and --broker-key")


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"--listen takes HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_args(argv: Sequence[str] | None) -> tuple[GatewayConfig, str]:
    """The config and the log level from ``mdp-gearman``'s command line."""
    d = GatewayConfig()
    parser = argparse.ArgumentParser(prog="mdp-gearman", description=DESCRIPTION)
    parser.add_argument("--listen", action="append", type=parse_listen, metavar="HOST:PORT",
                        help="where Gearman clients connect (repeatable; default "
                        "127.0.0.1:4730; port 0 picks a free one, logged at start)")
    parser.add_argument("--broker", action="append", required=True, metavar="ENDPOINT",
                        dest="brokers", help="DIPS broker endpoint (repeat for every broker)")
    parser.add_argument("--timeout", type=float, default=d.timeout_s, metavar="SECONDS",
                        dest="timeout_s", help="each job's deadline in DIPS")
    parser.add_argument("--state-dir", type=Path, metavar="DIR",
                        help="where the durable outbox of background jobs lives "
                        "(without it, background jobs are refused)")
    parser.add_argument("--concurrency", type=int, default=d.concurrency, metavar="N",
                        help="foreground jobs in DIPS at once")
    parser.add_argument("--background-concurrency", type=int,
                        default=d.background_concurrency, metavar="N")
    parser.add_argument("--max-connections", type=int, default=d.max_connections, metavar="N")
    parser.add_argument("--max-jobs-per-connection", type=int,
                        default=d.max_jobs_per_connection, metavar="N")
    parser.add_argument("--max-packet-bytes", type=int, default=d.max_packet_bytes,
                        metavar="N", help="a client declaring a larger packet is disconnected")
    parser.add_argument("--raw-field", default=d.raw_field, metavar="NAME",
                        help="request field that carries a workload which is neither PHP "
                        "serialize(), msgpack nor JSON")
    parser.add_argument("--sync", default=d.sync, choices=["FULL", "NORMAL"],
                        help="SQLite synchronous mode of the outbox (NORMAL survives a "
                        "process crash, FULL also a power cut)")
    curve = parser.add_argument_group("CURVE security (both or none)")
    curve.add_argument("--curve-secret", metavar="FILE",
                       help="this gateway's key pair (NAME.key_secret, mode 0600)")
    curve.add_argument("--broker-key", metavar="FILE", help="the brokers' public key")
    parser.add_argument("--log-level", default="INFO")
    args = vars(parser.parse_args(argv))
    level = args.pop("log_level")
    args["listen"] = args["listen"] or d.listen
    return GatewayConfig(**args), level
