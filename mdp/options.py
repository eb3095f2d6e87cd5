"""A client's options, in one frozen object shared by the client core and both shells.

``ClientOptions`` is what :class:`mdp.clientcore.ClientCore`, :class:`mdp.client.MDPClient`
and :class:`mdp.aio.AsyncMDPClient` take; every check of a client's configuration lives in
:meth:`ClientOptions.check`, and every broker endpoint is checked by :func:`check_endpoint`
before anything is opened, so a typo is refused at once with one line rather than found by
ten seconds of failed connections.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mdp.errors import ConfigError
from mdp.rates import DEFAULT_LINK_FLOOR, check_link_floor

# tcp://HOST:PORT (HOST a name, an IPv4 address, [IPv6] or *), ipc://PATH, inproc://NAME
_TCP = re.compile(r"tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.*-]+):(?P<port>[0-9]{1,5})")
_OTHER = re.compile(r"(ipc|inproc)://.+")
_TRANSPORTS = ("tcp://", "ipc://", "inproc://")
TRANSPORTS = ("auto", "plain", "zmq")  # ClientOptions.transport


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` if it is a ZeroMQ endpoint a client can connect to; ConfigError naming
    what is wrong (and what was probably meant) otherwise."""
    if not isinstance(endpoint, str) or not endpoint:
        raise ConfigError(f"broker endpoint {endpoint!r} is empty or not a string")
    if _OTHER.fullmatch(endpoint):
        return endpoint
    match = _TCP.fullmatch(endpoint)
    if match is not None:
        port = int(match["port"])
        if not 0 < port < 65536:
            raise ConfigError(f"broker endpoint {endpoint!r}: port {port} is out of range")
        if match["host"] == "*":
            raise ConfigError(f"broker endpoint {endpoint!r}: '*' is for binding; name the "
                              "broker's host")
        return endpoint
    if not endpoint.startswith(_TRANSPORTS):
        hint = f"; did you mean 'tcp://{endpoint}'?" if ":" in endpoint else ""
        raise ConfigError(f"broker endpoint {endpoint!r} names no transport (tcp://HOST:PORT, "
                          f"ipc://PATH or inproc://NAME){hint}")
    raise ConfigError(f"broker endpoint {endpoint!r} is malformed: expected tcp://HOST:PORT, "
                      "ipc://PATH or inproc://NAME")


def check_endpoints(endpoints: Sequence[str]) -> tuple[str, ...]:
    """Every endpoint checked; at least one; none twice."""
    if isinstance(endpoints, str):
        raise ConfigError(f"brokers must be a list of endpoints, not the string {endpoints!r}")
    if not endpoints:
        raise ConfigError("a client needs at least one broker endpoint")
    checked = tuple(check_endpoint(endpoint) for endpoint in endpoints)
    if len(set(checked)) != len(checked):
        raise ConfigError(f"a broker endpoint is listed twice: {', '.join(checked)}")
    return checked


@dataclass(frozen=True)
class ClientOptions:
    """How a client talks to its brokers. Times are in seconds.

    :param timeout: how long a request waits for its reply in all (``send`` may give its
        own); the request's deadline, after which brokers drop it unworked.
    :param retries: how many times a request may be sent again after its broker failed.
    :param attempt_timeout: for standard (non-DIPS) brokers only: seconds before a resend.
    :param ping_interval: a quiet DIPS broker holding requests is pinged after this long.
    :param broker_timeout: a DIPS broker that does not answer a ping in this time is taken
        for dead or hung, and its requests go to the others.
    :param connect_timeout: how long a new connection may take to come up.
    :param down_for: how long a failed broker is left alone before it is tried again.
    :param shuffle: start at a random broker (requests then go round-robin over all).
    :param max_request_bytes: larger requests are refused before sending (BadRequest).
    :param max_reply_bytes: a broker sending a larger reply is disconnected.
    :param link_floor: the slowest link a big body is allowed, in bytes per second (at
        least :data:`mdp.rates.MIN_LINK_FLOOR`): a broker is not pinged, nor taken for
        dead, before the bytes sent to it (or announced by it) may have gone at this rate.
        The brokers and workers should be given the same (docs/OPERATIONS.md, "Slow links").
    :param transport: ``"plain"``: speak ZMTP on a plain socket in the caller's thread
        (or event loop) where it can (``tcp://`` and ``ipc://`` brokers without CURVE; about
        30 % less client CPU per sync call), a pyzmq socket elsewhere; ``"zmq"``: a pyzmq
        socket for every broker; ``"auto"`` (the default): ``"plain"`` to an address
        and pyzmq to a host name (resolving it would block the caller's thread or event
        loop), for both clients; ``$DIPS_CLIENT_TRANSPORT`` changes what it means for the
        sync client. See docs/PROTOCOL.md, "The client's transport".
    """

    timeout: float = 10.0
    retries: int = 3
    attempt_timeout: float = 2.5
    ping_interval: float = 0.25
    broker_timeout: float = 0.5
    connect_timeout: float = 0.5
    down_for: float = 1.0
    shuffle: bool = True
    max_request_bytes: int = 32 * 1024 * 1024
    max_reply_bytes: int = 64 * 1024 * 1024
    link_floor: int = DEFAULT_LINK_FLOOR
    transport: str = "auto"

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """ConfigError naming the first option that is wrong."""
        for name in ("timeout", "attempt_timeout", "ping_interval", "broker_timeout",
                     "connect_timeout"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(self.down_for, int | float) or self.down_for < 0:
            raise ConfigError(f"down_for must not be negative, got {self.down_for!r}")
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) \
                or self.retries < 0:
            raise ConfigError(f"retries must be a non-negative integer, got {self.retries!r}")
        for name in ("max_request_bytes", "max_reply_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        check_link_floor(self.link_floor, "link_floor")
        if self.transport not in TRANSPORTS:
            raise ConfigError(f"transport must be one of {', '.join(TRANSPORTS)}, got "
                              f"{self.transport!r}")

    def but(self, **changes: Any) -> ClientOptions:
        """A copy with ``changes``; ConfigError for a name that is not an option."""
        unknown = sorted(set(changes) - OPTION_NAMES)
        if unknown:
            raise ConfigError(f"unknown client option(s) {', '.join(unknown)}; the options "
                              f"are {', '.join(sorted(OPTION_NAMES))}")
        return dataclasses.replace(self, **changes) if changes else self


OPTION_NAMES = frozenset(field.name for field in dataclasses.fields(ClientOptions))
DEFAULT = ClientOptions()


def resolve(options: ClientOptions | None, overrides: dict[str, Any]) -> ClientOptions:
    """``options`` (or the defaults) with keyword overrides applied and checked."""
    return (options or DEFAULT).but(**overrides)
