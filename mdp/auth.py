"""CURVE authentication for the broker, with separate allow-lists for clients and workers.

pyzmq's ``zmq.auth`` runs the ZAP handshake; a peer whose public key is on neither list
is refused during the handshake. The connection's ZAP User-Id is the peer's public key
(z85); the broker reads it on every message and looks up its role ("client" or
"worker") in the allow-lists as they are now. So a client key cannot register a worker,
a worker key cannot send requests, and a key removed from the lists (``reload``) is
refused at once, on open connections too.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from mdp.errors import ConfigError
from mdp.keys import CLIENT_ROLE, WORKER_ROLE, fingerprint, load_allowlist
from mdp.logs import RateLimitedLog

log = logging.getLogger(__name__)


class RoleAuthenticator(ThreadAuthenticator):
    """Allow the keys of two directories; tag each connection with its role."""

    def __init__(self, context: zmq.Context, client_keys: Path, worker_keys: Path) -> None:
        super().__init__(context, log=logging.getLogger("mdp.auth.zap"))
        self.client_keys = client_keys
        self.worker_keys = worker_keys
        self._roles: dict[str, str] = {}  # z85 public key -> role
        self._address = ""
        self._warn = RateLimitedLog(log)
        self.reload()

    def start(self) -> None:
        super().start()
        self.configure_curve_callback("*", self)

    def reload(self) -> None:
        """Read both allow-lists again (e.g. on SIGHUP); keys in both are refused."""
        clients = load_allowlist(self.client_keys)
        workers = load_allowlist(self.worker_keys)
        both = clients & workers
        if both:
            names = ", ".join(sorted(fingerprint(k) for k in both))
            raise ConfigError(f"keys on both the client and the worker allow-list: {names}")
        roles = {key.decode("ascii"): CLIENT_ROLE for key in clients}
        roles.update({key.decode("ascii"): WORKER_ROLE for key in workers})
        self._roles = roles  # one assignment: the ZAP thread sees the old or the new map
        log.info("allow-lists loaded: %d client keys, %d worker keys", len(clients), len(workers))

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        if len(msg) > 3:
            self._address = msg[3].decode("ascii", "replace")
        await super().handle_zap_message(msg)

    def callback(self, domain: str, client_key: bytes) -> bool:
        """zmq.auth's credentials provider: is this z85 public key allowed at all?"""
        allowed = client_key.decode("ascii", "replace") in self._roles
        if not allowed:
            self._warn(time.monotonic(), "refused CURVE key %s from %s: on no allow-list",
                       fingerprint(client_key), self._address or "?")
        return allowed

    def curve_user_id(self, client_public_key: bytes) -> str:
        """The User-Id of every message on the connection: the peer's z85 public key."""
        return z85.encode(client_public_key).decode("ascii")

    def role_of(self, user: str) -> str:
        """The role of a connection's key now: "client", "worker", or "" (not allowed)."""
        return self._roles.get(user, "")


def log_handshake_failures(monitor: zmq.Socket, warn: RateLimitedLog, now: float) -> None:
    """Log the handshake failures a socket monitor reported (plaintext or bad peers), through
    ``warn``: a peer that fails handshakes at will must not flood the log."""
    from zmq.utils.monitor import recv_monitor_message

    while monitor.poll(0):
        event = recv_monitor_message(monitor)
        name = zmq.Event(event["event"]).name
        raw: Any = event.get("endpoint", b"")
        address = raw.decode("ascii", "replace") if isinstance(raw, bytes) else str(raw)
        warn(now, "handshake refused on %s: %s (value %s)", address, name, event["value"])


HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
