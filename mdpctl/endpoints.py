"""Addresses given on mdpctl's command line, checked at once with one clear line.

A broker endpoint goes through :func:`mdp.options.check_endpoint` (the one check every
DIPS program makes) when the core has it; until then a check of the same shape runs
here.  A door's listen address is ``HOST:PORT`` or ``off``.  Each check is an argparse
``type=``, so a mistake is a usage error (exit 2) before anything is started or sent.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from mdp.errors import ConfigError

_TCP = re.compile(r"^tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\s\[\]]+):(?P<port>\d{1,5})$")
_BARE = re.compile(r"^(?P<host>[^:/\s]*):?(?P<port>\d{1,5})$")
_LISTEN = re.compile(r"^(?P<host>[^:/\s]+):(?P<port>\d{1,5})$")
OFF = "off"


def _suggestion(text: str) -> str:
    """What the user probably meant by an endpoint without its scheme."""
    match = _BARE.match(text.strip())
    if match is None:
        return "tcp://HOST:PORT, e.g. tcp://127.0.0.1:5555"
    return f"tcp://{match['host'] or '127.0.0.1'}:{match['port']}"


def _local_check(endpoint: str) -> None:
    if endpoint.startswith("ipc://") and len(endpoint) > len("ipc://"):
        return
    match = _TCP.match(endpoint)
    if match is None:
        raise ConfigError(
            f"{endpoint!r} is not a broker endpoint; did you mean {_suggestion(endpoint)}?"
        )
    if not 0 < int(match["port"]) < 65536:
        raise ConfigError(f"{endpoint!r}: port {match['port']} is out of range (1-65535)")


def _core_check() -> Callable[[str], object] | None:
    try:
        from mdp.options import check_endpoint  # type: ignore[attr-defined]
    except ImportError:
        return None
    return check_endpoint  # type: ignore[no-any-return]


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` if it is a usable broker endpoint; else ConfigError with a suggestion."""
    core = _core_check()
    if core is not None:
        try:
            core(endpoint)
        except ConfigError as exc:
            message = str(exc)
            if "tcp://" not in message:
                message += f"; did you mean {_suggestion(endpoint)}?"
            raise ConfigError(message) from exc
    _local_check(endpoint)  # mdpctl's own needs (tcp or ipc), whatever the core allows
    return endpoint


def endpoint_arg(text: str) -> str:
    """argparse ``type=`` for a broker endpoint."""
    try:
        return check_endpoint(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def tcp_endpoint_arg(text: str) -> str:
    """argparse ``type=`` for a broker that mdpctl runs or configures: tcp://HOST:PORT."""
    endpoint = endpoint_arg(text)
    if not endpoint.startswith("tcp://"):
        raise argparse.ArgumentTypeError(f"{text!r}: brokers listen on tcp://HOST:PORT here")
    return endpoint


def split_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ConfigError naming the value otherwise."""
    match = _LISTEN.match(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        hint = f"; did you mean {text.split('://', 1)[1]}?" if "://" in text else ""
        raise ConfigError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080){hint}")
    return match["host"], int(match["port"])


def listen_arg(text: str) -> str:
    """argparse ``type=`` for a door's address: HOST:PORT."""
    try:
        split_listen(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def listen_or_off_arg(text: str) -> str:
    """argparse ``type=`` for a door's address: HOST:PORT, or ``off`` for no door."""
    return OFF if text.strip().lower() == OFF else listen_arg(text)


def tcp_host_port(endpoint: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host without brackets, port)."""
    match = _TCP.match(endpoint)
    if match is None:
        raise ConfigError(f"{endpoint!r} is not an endpoint like tcp://HOST:PORT")
    return match["host"].strip("[]"), int(match["port"])
