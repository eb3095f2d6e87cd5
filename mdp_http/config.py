"""``mdp-http`` settings: one dataclass whose fields declare their own command-line flags."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mdp.errors import ConfigError

_CONVERTERS: dict[str, Any] = {"float": float, "int": int}
DESCRIPTION = ("The DIPS HTTP gateway: POST /v1/{service}, Prometheus /metrics, and a live "
               "dashboard at /.")


def _opt(default: Any, flag: str, help: str, metavar: str | None = None) -> Any:
    meta = {"flag": flag, "help": help, "metavar": metavar}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class HttpConfig:
    """Gateway settings; each field's metadata is its command-line flag."""

    brokers: list[str] = _opt([], "--broker", "broker endpoint (repeat for every broker)",
                              "ENDPOINT")
    listen: str = _opt("127.0.0.1:8080", "--listen", "HOST:PORT to serve HTTP on (port 0: any)",
                       "HOST:PORT")
    timeout_s: float = _opt(10.0, "--timeout", "seconds a request may take through the brokers",
                            "SECONDS")
    max_body_bytes: int = _opt(16 * 1024 * 1024, "--max-body-bytes",
                               "larger request bodies get 413", "N")
    max_concurrency: int = _opt(64, "--max-concurrency",
                                "API requests in flight at once; more get 429", "N")
    body_timeout_s: float = _opt(30.0, "--body-timeout",
                                 "a client must send its whole body within this time", "SECONDS")
    poll_interval_s: float = _opt(1.0, "--poll-interval",
                                  "mmi.status is asked at most this often per broker", "SECONDS")
    sign_keys: list[str] = _opt([], "--sign-key", "hex key file for signed GET URLs (repeat "
                                "for rotation; one --sign-salt each)", "FILE")
    sign_salts: list[str] = _opt([], "--sign-salt", "hex salt file, paired with --sign-key",
                                 "FILE")
    curve_secret: str | None = _opt(None, "--curve-secret",
                                    "this gateway's CURVE key pair (with --broker-key)", "FILE")
    broker_key: str | None = _opt(None, "--broker-key", "the brokers' CURVE public key", "FILE")
    log_level: str = _opt("INFO", "--log-level", "logging level")

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def validate(self) -> None:
        if not self.brokers:
            raise ConfigError("mdp-http needs at least one --broker endpoint")
        if len(set(self.brokers)) != len(self.brokers):
            raise ConfigError("a --broker endpoint is given twice")
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"--listen {self.listen!r} is not HOST:PORT")
        if min(self.timeout_s, self.body_timeout_s, self.poll_interval_s) <= 0:
            raise ConfigError("--timeout, --body-timeout and --poll-interval must be positive")
        if min(self.max_body_bytes, self.max_concurrency) < 1:
            raise ConfigError("--max-body-bytes and --max-concurrency must be >= 1")
        if bool(self.curve_secret) != bool(self.broker_key):
            raise ConfigError("CURVE needs both --curve-secret and --broker-key")


def parse_args(argv: Sequence[str] | None) -> HttpConfig:
    """The config the command line describes (defaults from the dataclass)."""
    parser = argparse.ArgumentParser(prog="mdp-http", description=DESCRIPTION)
    for f in dataclasses.fields(HttpConfig):
        meta = f.metadata
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"],
                                  "metavar": meta["metavar"]}
        if f.default_factory is not dataclasses.MISSING:  # a list: the flag repeats
            kwargs.update(action="append", default=None)
        else:
            kwargs.update(default=f.default, type=_CONVERTERS.get(str(f.type), str))
        parser.add_argument(meta["flag"], **kwargs)
    args = vars(parser.parse_args(argv))
    config = HttpConfig(**{k: v for k, v in args.items() if v is not None})
    try:
        config.validate()
    except ConfigError as exc:
        parser.error(str(exc))
    return config
