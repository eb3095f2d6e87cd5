"""Addresses given on mdpctl's command line, checked at once with one clear line.

A broker endpoint goes through :func:`mdp.options.check_endpoint`, the one check every
DIPS program and client makes; mdpctl itself talks to brokers over tcp:// or ipc:// only.
A door's listen address is ``HOST:PORT`` or ``off``.  Each check is an argparse
``type=``, so a mistake is a usage error (exit 2) before anything is started or sent.
"""

from __future__ import annotations

import argparse
import re

from mdp.errors import ConfigError
from mdp.options import check_endpoint as core_check

_TCP = re.compile(r"^tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\s\[\]]+):(?P<port>\d{1,5})$")
_LISTEN = re.compile(r"^(?P<host>[^:/\s]+):(?P<port>\d{1,5})$")
OFF = "off"


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` if it is a broker endpoint mdpctl can use; else ConfigError saying what
    was probably meant (``127.0.0.1:5555`` -> ``tcp://127.0.0.1:5555``)."""
    core_check(endpoint)
    if not endpoint.startswith(("tcp://", "ipc://")):
        raise ConfigError(f"broker endpoint {endpoint!r}: mdpctl reaches brokers over "
                          "tcp://HOST:PORT or ipc://PATH")
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
