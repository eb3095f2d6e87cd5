"""A worker's connection to one broker ("link"): ZMTP on a plain socket, or a pyzmq DEALER.

The worker's shell (:mod:`mdp.worker`) reads and writes its brokers through these, and its
sentinel (:mod:`mdp.sentinel`) polls them while a handler runs long.

:class:`PlainWorkerLink` speaks ZMTP itself (:class:`mdp.zmtplinks.PlainLink`, the client's)
on a non-blocking socket in whichever thread holds the worker's lock: no libzmq I/O thread,
so none of its hand-offs per message. It then also answers the broker's ZMTP PINGs only when
someone reads: the main thread between tasks and while it waits, the sentinel once a handler
has run past ``busy_after``. Like a libzmq DEALER, a connection refused before it ever came
up is tried again every ``RECONNECT_S`` with the messages sent meanwhile (READY) kept for
it, without the core hearing of it; a connection that drops once up, or a peer whose bytes
are not ZMTP from a ROUTER, raises (``ConnectionError``, :class:`~mdp.errors.ProtocolError`)
and the shell tells the core it is lost: the core registers anew, with its backoff.

:class:`ZmqWorkerLink` is the pyzmq DEALER the worker has always used (ZMTP heartbeats
answered by libzmq's I/O thread, even while a handler holds the main thread; CURVE;
``inproc://``), with a socket monitor when there are several brokers, so that a dropped
connection is seen at once.

Neither reads a clock for a decision nor decides anything: the worker core does.

``--transport auto`` (:func:`auto_choice`) is plain for a handler that declares it never
holds the GIL for long (``mdp.handlers.YIELDS_GIL``), the one thing a plain link needs of it,
and pyzmq for any other; also pyzmq when ``--busy-after`` would leave the broker's PINGs
unanswered for long (above ``AUTO_PLAIN_MAX_BUSY_AFTER_S``).
"""

from __future__ import annotations

import logging
import math
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import zmq

from mdp import sockio
from mdp.config import AUTO_PLAIN_MAX_BUSY_AFTER_S
from mdp.keys import CurveConfig
from mdp.zmtplinks import RECONNECT_S, PlainLink, needs_lookup

if TYPE_CHECKING:
    from mdp.config import WorkerConfig

log = logging.getLogger(__name__)

LOOKUP_WAIT_MAX_S = 30.0  # the longest wait between two failed lookups of a broker's name
MAX_QUEUED = 1000  # messages kept for a connection that never came up (libzmq's SNDHWM)
_ZPOLLIN = int(zmq.POLLIN)


class WorkerLink(Protocol):
    """What the worker's shell and sentinel do with a connection to a broker."""

    address: str
    retry_at: float  # when a refused connection is tried again (math.inf: none waits)

    def send(self, frames: list[bytes]) -> None: ...
    def take(self) -> list[list[bytes]]: ...
    def poll_target(self) -> Any: ...
    def poll_flags(self) -> int: ...
    def close(self, linger_ms: int) -> None: ...


@dataclass(frozen=True)
class AutoChoice:
    """What ``--transport auto`` means for one worker, and why (for its start-up line)."""

    plain: bool
    why: str


def auto_choice(yields_gil: bool, busy_after_s: float) -> AutoChoice:
    """``auto``'s link for a handler that does (or does not) declare it never holds the GIL
    for long: plain only if it does and the sentinel takes over within
    ``AUTO_PLAIN_MAX_BUSY_AFTER_S`` (a third of the shortest ZMTP timeout a broker may
    have), so that the broker's PINGs are answered in time whatever the handler runs."""
    if not yields_gil:
        return AutoChoice(False, "the handler does not declare yields_gil")
    if busy_after_s > AUTO_PLAIN_MAX_BUSY_AFTER_S:
        return AutoChoice(False, f"--busy-after {busy_after_s:g}s is above "
                                 f"{AUTO_PLAIN_MAX_BUSY_AFTER_S:g}s")
    return AutoChoice(True, "the handler declares yields_gil")


def uses_plain(transport: str, address: str, curve: CurveConfig | None,
               auto_plain: bool = False) -> bool:
    """Whether ``transport`` puts the link to ``address`` on a plain socket (``auto``: when
    ``auto_plain``, see :func:`auto_choice`, and to an address: a host name would be
    resolved in the worker's own thread, where a slow or failing lookup would hold it, so
    libzmq, which resolves it in its own, connects to it): not for CURVE nor ``inproc://``,
    which only libzmq speaks."""
    plain = transport == "plain" or (transport == "auto" and auto_plain
                                      and not needs_lookup(address))
    return plain and curve is None and address.startswith(("tcp://", "ipc://"))


class ZmqWorkerLink:
    """A worker's pyzmq DEALER to one broker, and its socket monitor if it has one."""

    retry_at = math.inf

    def __init__(self, context: zmq.Context, address: str, max_message_bytes: int,
                 curve: CurveConfig | None, monitored: bool) -> None:
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        # No ZMTP heartbeats of our own: the broker's (``--zmtp-heartbeat``) are answered by
        # libzmq's I/O thread even while a handler runs, and are what finds a frozen worker;
        # a dead or hung broker is found by the socket monitor and by MDP silence. Pings both
        # ways would double what 1,000 idle workers cost the broker.
        self.monitor: zmq.Socket | None = None
        try:
            if curve is not None:
                curve.apply(sock, address)
            if monitored:
                self.monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
                self._drain_monitor()  # from now on its descriptor signals each event
            sock.connect(address)
        except BaseException:
            self.close(0, sock)
            raise
        self.address = address
        self.sock = sock

    def send(self, frames: list[bytes]) -> None:
        try:
            sockio.send(self.sock, frames)
        except zmq.Again:
            log.debug("send queue to %s is full; message dropped", self.address)

    def take(self) -> list[list[bytes]]:
        return sockio.recv_ready(self.sock)

    def poll_target(self) -> Any:
        return self.sock

    def poll_flags(self) -> int:
        return _ZPOLLIN

    def monitor_fd(self) -> int | None:
        """The monitor's descriptor (polled by the main thread only), if it has one."""
        return None if self.monitor is None else int(self.monitor.fileno())

    def on_monitor(self) -> None:
        """The monitor's descriptor signalled: ConnectionError if the connection dropped."""
        if self._drain_monitor():
            raise ConnectionError(f"the connection to broker {self.address} dropped")

    def _drain_monitor(self) -> bool:
        """Read every event the monitor holds (so that its descriptor, which signals only
        when events arrive at an emptied queue, signals the next); True if one was a
        dropped connection."""
        monitor = self.monitor
        dropped = False
        while monitor is not None:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            dropped = dropped or sockio.monitor_event(frames) == zmq.EVENT_DISCONNECTED
        return dropped

    def close(self, linger_ms: int, sock: zmq.Socket | None = None) -> None:
        sock = sock if sock is not None else self.sock
        if self.monitor is not None:
            sock.disable_monitor()
            self.monitor.close(linger=0)
            self.monitor = None
        sock.close(linger=linger_ms)


class PlainWorkerLink:
    """ZMTP on a plain socket to one broker (see the module docstring)."""

    def __init__(self, address: str, max_message_bytes: int) -> None:
        if not address.startswith(("tcp://", "ipc://")):  # (a name is resolved in _open)
            raise ValueError(f"{address!r} is not a tcp:// or ipc:// endpoint")
        self.address = address
        self.max_message_bytes = max_message_bytes
        self.retry_at = math.inf
        self.was_up = False  # its handshake was done once: a drop now is a lost broker
        self.link: PlainLink | None = None
        self._queued: list[list[bytes]] = []  # sent before the first handshake was done
        self._lookup_wait = 0.0  # after a failed name lookup: the wait before the next one
        self._open()

    def _open(self) -> None:
        self.retry_at = math.inf
        try:
            self.link = PlainLink(self.address, self.max_message_bytes, self._queued,
                                  limit_name="max_message_bytes")
        except socket.gaierror as exc:  # a name that does not resolve (now)
            self._unresolved(exc)
        except OSError as exc:  # refused, no ipc socket file
            self._refused(exc)
        else:
            self._lookup_wait = 0.0

    def _unresolved(self, exc: socket.gaierror) -> None:
        """The broker's name did not resolve: try again later, waiting twice as long each
        time (from ``RECONNECT_S * 10`` up to ``LOOKUP_WAIT_MAX_S``), since every lookup
        holds this worker's thread (or the sentinel's) while the resolver answers."""
        self._lookup_wait = min(LOOKUP_WAIT_MAX_S, max(RECONNECT_S * 10, 2 * self._lookup_wait))
        log.warning("broker %s: cannot resolve its name (%s); trying again in %.0fs",
                    self.address, exc, self._lookup_wait)
        self.retry_at = time.monotonic() + self._lookup_wait

    def _refused(self, exc: Exception) -> None:
        """Nothing listens there yet: try again soon, as libzmq does for a DEALER."""
        log.debug("broker %s: %s; trying again in %.1fs", self.address, exc, RECONNECT_S)
        if self.link is not None:
            self.link.close()
            self.link = None
        self.retry_at = time.monotonic() + RECONNECT_S

    def _came_up(self) -> None:
        self.was_up = True
        self._queued = []

    def send(self, frames: list[bytes]) -> None:
        if not self.was_up:
            if len(self._queued) >= MAX_QUEUED:
                log.debug("send queue to %s is full; message dropped", self.address)
                return
            self._queued.append(frames)
        link = self.link
        if link is None:
            return
        try:
            link.write(frames)
        except ConnectionError as exc:
            if self.was_up or link.was_up:
                raise
            self._refused(exc)

    def take(self) -> list[list[bytes]]:
        link = self.link
        if link is None:
            if time.monotonic() >= self.retry_at:
                self._open()
            return []
        try:
            messages = link.pump()
        except ConnectionError as exc:
            if self.was_up or link.was_up:
                raise
            self._refused(exc)
            return []
        if link.was_up and not self.was_up:
            self._came_up()
        return messages

    def taken(self) -> list[list[bytes]]:
        """The whole messages read before the link broke (libzmq delivers them before it
        reports the connection gone)."""
        return [] if self.link is None else self.link.take()

    def poll_target(self) -> Any:
        """Its descriptor; None while a refused connection waits for ``retry_at``."""
        return None if self.link is None else self.link.fd

    def poll_flags(self) -> int:
        """zmq_poll's flags: POLLIN, and POLLOUT while bytes wait to be written."""
        return _ZPOLLIN if self.link is None else self.link.poll_flags()

    def close(self, linger_ms: int) -> None:
        link, self.link = self.link, None
        if link is not None:
            if linger_ms > 0:
                link.linger(linger_ms / 1000)
            link.close()


def describe_transport(config: WorkerConfig, auto: AutoChoice) -> str:
    """What the worker's links are, for its start-up line: "plain", "zmq" or "plain (zmq
    for ...)", and under ``auto`` why ("zmq (auto: the handler does not declare ...)")."""
    kinds = {address: uses_plain(config.transport, address, config.curve, auto.plain)
             for address in config.brokers}
    others = [address for address, plain in kinds.items() if not plain]
    if not any(kinds.values()):
        text = "zmq"
    else:
        text = f"plain (zmq for {' '.join(others)})" if others else "plain"
    if config.transport != "auto":
        return text
    if auto.plain and others:
        why = f"{auto.why}; CURVE, inproc:// and host names go through libzmq"
    else:
        why = auto.why
    return f"{text} (auto: {why})"


def open_worker_link(context: zmq.Context, address: str, max_message_bytes: int,
                     curve: CurveConfig | None, transport: str, monitored: bool,
                     auto_plain: bool = False) -> ZmqWorkerLink | PlainWorkerLink:
    """The link to ``address`` that ``transport`` asks for (see :func:`uses_plain`)."""
    if uses_plain(transport, address, curve, auto_plain):
        return PlainWorkerLink(address, max_message_bytes)
    return ZmqWorkerLink(context, address, max_message_bytes, curve, monitored)
