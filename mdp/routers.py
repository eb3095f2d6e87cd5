"""The broker's ROUTER socket, behind the few operations its loop uses.

:class:`RouterSocket` is what :class:`mdp.broker.Broker` asks of its socket: wait for a
message, ask whether one waits, take one without waiting, send one by identity, write
out what was sent, close. :class:`ZmqRouter` is a pyzmq ROUTER (CURVE and ``inproc://``
need it); :class:`mdp.plainrouter.PlainRouter` speaks ZMTP on plain sockets in the
broker's own thread (``--transport plain``). Both give a message as ``[identity, *frames]``
and raise :class:`PeerGone` for a send to an identity with no connection (any more).
"""

from __future__ import annotations

from typing import Any, Protocol

import zmq

from mdp import sockio
from mdp.config import BrokerConfig

_UNREACHABLE = (zmq.EHOSTUNREACH, zmq.EAGAIN)  # the peer is not connected (any more)


class PeerGone(ConnectionError):
    """A message was sent to an identity that has no connection (any more)."""


class RouterSocket(Protocol):
    """The broker loop's socket (see the module docstring)."""

    endpoints: list[str]  # what was bound, as a peer connects to it (ports chosen)

    def recv_wait(self, timeout_ms: int,
                  with_user: bool = False) -> tuple[list[bytes] | None, str]:
        """Block up to ``timeout_ms`` for one message; (None, "") when none came. With
        ``with_user``, the ZAP User-Id of its connection too (CURVE)."""

    def readable(self) -> bool:
        """Whether a message waits (without waiting)."""

    def recv(self) -> list[bytes] | None:
        """One message, without waiting; None when none waits."""

    def recv_with_user(self) -> tuple[list[bytes] | None, str]:
        """Like :meth:`recv`, with the ZAP User-Id of its connection."""

    def send(self, frames: list[Any]) -> None:
        """Send ``[identity, *frames]``; :class:`PeerGone` when that peer is gone."""

    def flush(self) -> None:
        """Write out what was sent (a pyzmq socket's I/O thread does so by itself)."""

    def close(self) -> None: ...


class ZmqRouter:
    """A pyzmq ROUTER: libzmq's I/O thread carries the connections."""

    def __init__(self, config: BrokerConfig, context: zmq.Context) -> None:
        sock = context.socket(zmq.ROUTER)
        self.sock = sock
        self.endpoints: list[str] = []
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a gone peer fails
        sock.setsockopt(zmq.MAXMSGSIZE, config.max_message_bytes)
        sock.setsockopt(zmq.SNDHWM, 0)  # replies are never dropped for a slow reader
        sock.setsockopt(zmq.RCVHWM, 0)
        # ZMTP heartbeats on every connection: libzmq's I/O thread answers them even while a
        # peer's own thread is busy in a long handler (or holds the GIL), and stops when the
        # process is frozen (SIGSTOP) or gone; then libzmq drops the connection and the next
        # send fails. They are slow (1 s): they cost every connection alike, and a frozen
        # worker's task is taken back sooner, by MDP probes (--frozen-after).
        if config.zmtp_heartbeat_ms:
            sock.setsockopt(zmq.HEARTBEAT_IVL, config.zmtp_heartbeat_ms)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, config.zmtp_timeout_ms)

    def bind(self, endpoint: str) -> str:
        self.sock.bind(endpoint)
        bound = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.endpoints.append(bound)
        return bound

    def recv_wait(self, timeout_ms: int,
                  with_user: bool = False) -> tuple[list[bytes] | None, str]:
        return sockio.recv_wait(self.sock, timeout_ms, with_user, True)

    def readable(self) -> bool:
        return sockio.readable(self.sock)

    def recv(self) -> list[bytes] | None:
        return sockio.recv(self.sock, True)

    def recv_with_user(self) -> tuple[list[bytes] | None, str]:
        return sockio.recv_with_user(self.sock, True)

    def send(self, frames: list[Any]) -> None:
        try:
            sockio.send(self.sock, frames)
        except zmq.ZMQError as exc:
            if exc.errno not in _UNREACHABLE:
                raise
            raise PeerGone(f"peer {bytes(frames[0]).hex()[:20]} is not connected") from None

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.sock.close(linger=0)
