"""A client's connection to one broker ("link"): ZMTP on a plain socket, or a pyzmq DEALER.

:class:`PlainLink` drives :class:`mdp.zmtp.ZmtpConnection` on a non-blocking TCP or IPC
socket in the caller's own thread. A pyzmq socket moves every message through libzmq's I/O
thread, and the thread wake-ups on each side of that hand-off cost about half of a sync
call's CPU; a plain socket has none of them: a request is one ``send``, its reply one
``poll`` and one ``recv``. :class:`ZmqLink` is a pyzmq DEALER behind the same methods; it
carries what the plain socket cannot (CURVE, ``inproc://``), or everything with
``transport="zmq"``.

Both raise ``ConnectionError`` when the connection is gone (refused, reset, closed by the
broker, or for a DEALER: not connected) and :class:`~mdp.errors.ProtocolError` when the
peer's bytes are not ZMTP from a ROUTER; either way the link is then dead and its owner
closes it. Neither reads a clock nor decides anything: the client core does.
"""

from __future__ import annotations

import errno
import logging
import math
import select
import socket
import time
from collections.abc import Sequence
from typing import Any, Protocol

import zmq

from mdp import protocol as p
from mdp import sockio
from mdp.clientcore import COMPLAIN_EVERY_S
from mdp.errors import ProtocolError
from mdp.keys import CurveConfig
from mdp.zmtp import ZmtpConnection

log = logging.getLogger(__name__)

RECV_BYTES = 262144  # one receive reads up to this much, into the link's own buffer (a
# ``recv(262144)`` would allocate that much each time: above malloc's mmap threshold, it
# costs 18 us where a small reply costs 2)
IDLE_CHECK_S = 0.1  # a send on a link not read for this long reads it first (see send)
RECONNECT_S = 0.1  # a refused plain connection is tried again after this (libzmq's default)
REOPEN_AFTER_S = 1.0  # reopened(): a link dropped younger than this is a lost broker
_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_ZPOLLIN = int(zmq.POLLIN)
_ZPOLLOUT = int(zmq.POLLOUT)
_ZPOLLERR = int(zmq.POLLERR)
_IN_PROGRESS = {0, errno.EINPROGRESS}
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)


class Link(Protocol):
    """What the client's shell does with a connection to a broker."""

    @property
    def up(self) -> bool:
        """Connected (and for ZMTP, the handshake done): messages may flow."""

    def send(self, frames: list[bytes]) -> None: ...
    def write(self, frames: list[bytes]) -> None: ...
    def wait(self, timeout_ms: int) -> list[list[bytes]]: ...
    def take(self) -> list[list[bytes]]: ...
    def poll_target(self) -> Any: ...
    def poll_flags(self) -> int: ...
    def on_events(self, events: int) -> None: ...
    def close(self) -> None: ...


def plain_address(address: str) -> tuple[int, Any] | None:
    """(address family, socket address) for a ``tcp://`` or ``ipc://`` endpoint; None for
    one a plain socket cannot reach (``inproc://``). Resolves a host name (blocking)."""
    if address.startswith("ipc://"):
        path = address[6:]
        return socket.AF_UNIX, "\0" + path[1:] if path.startswith("@") else path
    if not address.startswith("tcp://"):
        return None
    host, _, port = address[6:].rpartition(":")
    host = host[1:-1] if host.startswith("[") else host
    family, _, _, _, sockaddr = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0]
    return family, sockaddr


def needs_lookup(address: str) -> bool:
    """Whether opening a plain link to ``address`` would resolve a host name (a blocking
    ``getaddrinfo``, which an event loop must not wait in): a tcp:// endpoint whose host
    is not an IP address."""
    if not address.startswith("tcp://"):
        return False
    host = address[6:].rpartition(":")[0].strip("[]")
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return False
        except OSError:
            pass
    return True


def open_link(address: str, max_reply_bytes: int, curve: CurveConfig | None,
              context: zmq.Context, plain: bool) -> Link:
    """A link to ``address``: a :class:`PlainLink` where ``plain`` is allowed (no CURVE, a
    tcp or ipc endpoint), a :class:`ZmqLink` otherwise. ``OSError``/``zmq.ZMQError`` when
    it cannot even be started (a name that does not resolve, say)."""
    if plain and curve is None and address.startswith(("tcp://", "ipc://")):
        return PlainLink(address, max_reply_bytes)
    return ZmqLink(open_socket(context, address, curve, max_reply_bytes))


def open_socket(context: zmq.Context, address: str, curve: CurveConfig | None,
                max_reply_bytes: int) -> zmq.Socket:
    """A client DEALER connecting to ``address``; it is up once it polls writable."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.IMMEDIATE, 1)  # with no send limit, Again means "not connected"
    sock.setsockopt(zmq.SNDHWM, 0)  # a deep window must not look like a dead broker
    sock.setsockopt(zmq.MAXMSGSIZE, max_reply_bytes)
    try:
        if curve is not None:
            curve.apply(sock, address)
        sock.connect(address)
    except BaseException:
        sock.close(linger=0)
        raise
    return sock


class ZmqLink:
    """A pyzmq DEALER (see :func:`open_socket`); up once it polls writable."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self._up = False

    @property
    def up(self) -> bool:
        return self._up

    def send(self, frames: list[bytes]) -> None:
        try:
            sockio.send(self.sock, frames)
        except zmq.Again:  # IMMEDIATE and no send limit: no connection
            raise ConnectionError("no connection to the broker") from None

    write = send  # (a DEALER has nothing to read first)

    def wait(self, timeout_ms: int) -> list[list[bytes]]:
        frames, _ = sockio.recv_wait(self.sock, timeout_ms)
        return [] if frames is None else [frames]

    def take(self) -> list[list[bytes]]:
        return sockio.recv_ready(self.sock)

    def poll_target(self) -> Any:
        return self.sock

    def poll_flags(self) -> int:
        return _ZPOLLIN if self._up else _ZPOLLOUT

    def on_events(self, events: int) -> None:
        if events & _ZPOLLOUT:
            self._up = True

    def close(self) -> None:
        self.sock.close(linger=0)


class PlainLink:
    """ZMTP 3 on a plain non-blocking socket (see the module docstring). Up once the
    handshake is done; messages sent before then wait for it. Everything received goes to
    :meth:`take` (or :meth:`wait`'s answer); the link reads only when asked to wait or when
    its owner's poll says it is readable (:meth:`on_events`), and before a send on a link
    left unread for ``IDLE_CHECK_S``, so that a connection the broker dropped while the
    caller was idle (a ZMTP heartbeat went unanswered) is found before a request is
    written into it."""

    def __init__(self, address: str, max_reply_bytes: int,
                 first: Sequence[list[bytes]] = (), limit_name: str = "max_reply_bytes") -> None:
        target = plain_address(address)
        if target is None:
            raise ValueError(f"{address!r} is not a tcp:// or ipc:// endpoint")
        family, sockaddr = target
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(sockaddr)
            if code not in _IN_PROGRESS:
                raise ConnectionRefusedError(code, f"cannot connect: {errno.errorcode.get(code)}")
        except BaseException:
            sock.close()
            raise
        self.address = address
        self.sock = sock
        self.fd = sock.fileno()
        self.conn = ZmtpConnection(max_reply_bytes, limit_name=limit_name)
        self.was_up = False  # the handshake was done once on this link
        self.opened_at = time.monotonic()
        self._pending: list[Any] = []  # chunks (memoryviews) not yet written
        self._inbox: list[list[bytes]] = []
        self._poll = select.poll()
        self._poll_flags = _POLLIN | _POLLOUT
        self._poll.register(self.fd, self._poll_flags)
        self._read_at = time.monotonic()
        self._buffer = bytearray(RECV_BYTES)
        self._view = memoryview(self._buffer)
        for frames in first:
            self.conn.send_message(frames)

    @property
    def up(self) -> bool:
        return self.conn.ready

    # --- writing ---------------------------------------------------------------------------

    def send(self, frames: list[bytes]) -> None:
        self.check_idle()
        self.conn.send_message(frames)
        self._flush()

    def write(self, frames: list[bytes]) -> None:
        """Send without first reading a link left unread (the worker reads its links
        whenever it is not in a handler, and its sentinel while it is; the sync client's
        lone call, right after it asked :meth:`check_idle`)."""
        self.conn.send_message(frames)
        self._flush()

    def pump(self) -> list[list[bytes]]:
        """Write what waits to be written, read what has come (without blocking); every
        whole message read so far."""
        if self._pending or self.conn.wants_write:
            self._flush()
        self._read()
        return self.take()

    def linger(self, timeout_s: float) -> None:
        """Block up to ``timeout_s`` while what waits to be written goes out (before a close
        that should let a last reply and DISCONNECT go, as libzmq's linger does)."""
        deadline = time.monotonic() + timeout_s
        while self._wants_write:
            left_ms = round((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                return
            try:
                self._flush()
            except ConnectionError:
                return
            if self._pending:
                self._poll.modify(self.fd, _POLLOUT)
                self._poll_flags = _POLLOUT
                self._poll.poll(left_ms)

    def check_idle(self) -> None:
        """Read the link if it was left unread for ``IDLE_CHECK_S``: a connection the
        broker dropped meanwhile raises here, before anything more is written to it (the
        shells ask before they place a call, so that a drop found is known to have come
        while the link carried nothing of theirs)."""
        if time.monotonic() - self._read_at > IDLE_CHECK_S:
            self._read(drain=True)  # (the broker's PINGs, then its close, wait there)

    def _flush(self) -> None:
        """Write what may go without blocking; keep the rest for when it is writable."""
        pending = self._pending
        sock = self.sock
        if self.conn.wants_write:
            chunks = self.conn.data_to_send()
            if not pending and len(chunks) == 1 and type(chunks[0]) is bytes:
                # the usual case, a small message alone: one send, no views made
                chunk = chunks[0]
                try:
                    sent = sock.send(chunk, _NOSIGNAL)
                except BlockingIOError:  # the kernel's buffer is full (or still connecting)
                    pending.append(memoryview(chunk))
                    return
                except OSError as exc:
                    raise ConnectionError(f"broker {self.address}: {_reason(exc)}") from None
                if sent == len(chunk):
                    return
                chunks = [memoryview(chunk)[sent:]]  # the rest goes as below
            pending += [memoryview(chunk).cast("B") for chunk in chunks]
        try:
            while pending:
                # (MSG_NOSIGNAL: a peer gone is an error here, never a SIGPIPE that would
                # kill a process that restored its default action, as libzmq also asks)
                if len(pending) == 1:
                    sent = sock.send(pending[0], _NOSIGNAL)
                else:
                    sent = sock.sendmsg(pending[:64], (), _NOSIGNAL)
                while sent and pending:
                    size = len(pending[0])
                    if sent >= size:
                        sent -= size
                        del pending[0]
                    else:
                        pending[0] = pending[0][sent:]
                        sent = 0
        except BlockingIOError:  # the kernel's buffer is full (or still connecting)
            pass
        except OSError as exc:
            raise ConnectionError(f"broker {self.address}: {_reason(exc)}") from None

    # --- reading ---------------------------------------------------------------------------

    def _read(self, drain: bool = False) -> None:
        """Read what has arrived, without blocking; whole messages go to the inbox. A short
        read usually means nothing more is there; with ``drain``, read on until the kernel
        says so, so that a close behind the bytes read is seen now."""
        recv_into = self.sock.recv_into
        buffer, view = self._buffer, self._view
        conn = self.conn
        self._read_at = time.monotonic()
        while True:
            try:
                size = recv_into(buffer)
            except BlockingIOError:
                break
            except OSError as exc:
                raise ConnectionError(f"broker {self.address}: {_reason(exc)}") from None
            if not size:
                state = "" if conn.ready else " before the ZMTP handshake was done"
                raise ConnectionError(f"broker {self.address} closed the connection{state}")
            self._inbox += conn.receive_data(bytes(view[:size]))
            if size < RECV_BYTES and not drain:
                break
        if not self.was_up and conn.ready:
            self.was_up = True
        if conn.wants_write:  # a PONG, or after READY what waited for it
            self._flush()

    def take(self) -> list[list[bytes]]:
        inbox, self._inbox = self._inbox, []
        return inbox

    def wait(self, timeout_ms: int) -> list[list[bytes]]:
        """Block up to ``timeout_ms`` for at least one whole message (writing what waits
        to be written meanwhile); every message read, [] when the time ran out."""
        inbox = self._inbox
        if inbox:
            self._inbox = []
            return inbox
        deadline = time.monotonic() + timeout_ms / 1000
        poll = self._poll
        conn = self.conn
        while True:
            flags = _POLLIN | _POLLOUT if self._pending or conn.wants_write else _POLLIN
            if flags != self._poll_flags:
                poll.modify(self.fd, flags)
                self._poll_flags = flags
            events = poll.poll(timeout_ms)
            if events:
                happened = events[0][1]
                if happened & _POLLOUT:
                    self._flush()
                if happened & ~_POLLOUT:  # readable, or an error or hang-up a read names
                    self._read()
                inbox = self._inbox
                if inbox:
                    self._inbox = []
                    return inbox
            timeout_ms = round((deadline - time.monotonic()) * 1000)
            if timeout_ms <= 0:
                return []

    @property
    def _wants_write(self) -> bool:
        return bool(self._pending) or self.conn.wants_write

    # --- polling by the owner, in a zmq.Poller (whose flags differ from select's) ----------

    def poll_target(self) -> Any:
        return self.fd

    def poll_flags(self) -> int:
        return _ZPOLLIN | _ZPOLLOUT if self._pending or self.conn.wants_write else _ZPOLLIN

    def on_events(self, events: int) -> None:
        if events & _ZPOLLOUT and (self._pending or self.conn.wants_write):
            self._flush()
        if events & (_ZPOLLIN | _ZPOLLERR):  # readable, or an error a read will name
            self._read()

    def close(self) -> None:
        self.sock.close()


class Complaints:
    """A link's failures: a WARNING per broker per ``COMPLAIN_EVERY_S`` for a peer that
    broke the protocol (the core says it failed over, rate-limited too), DEBUG otherwise."""

    def __init__(self, links: int) -> None:
        self._warned_at = [-math.inf] * links

    def note(self, index: int, address: str, exc: Exception, now: float) -> None:
        if not isinstance(exc, ProtocolError):
            log.debug("%s", exc)
            return
        warn = now - self._warned_at[index] >= COMPLAIN_EVERY_S
        if warn:
            self._warned_at[index] = now
        log.log(logging.WARNING if warn else logging.DEBUG, "broker %s: %s", address, exc)


def reopened(link: Link | None, exc: Exception, address: str, max_reply_bytes: int,
             idle: bool) -> PlainLink | None:
    """A new plain link in place of ``link`` (closed) if the broker dropped it while it
    was ``idle`` (no call on it; its ZMTP PINGs went unanswered while the caller did
    nothing): libzmq would reconnect a DEALER, and the core does not need to know. It
    carries a HELLO (without ``first``: batches and progress, as the core asks). Not for
    a link that never came up or lived less than ``REOPEN_AFTER_S`` (a broker that drops
    every connection is a lost broker, not a reconnection loop)."""
    if not (idle and isinstance(link, PlainLink) and isinstance(exc, ConnectionError)
            and link.was_up and time.monotonic() - link.opened_at >= REOPEN_AFTER_S):
        return None
    log.debug("broker %s: opening the connection again (it was dropped while idle)", address)
    try:
        return PlainLink(address, max_reply_bytes, [p.client_hello(batch=True, progress=True)])
    except (OSError, ValueError) as error:
        log.debug("cannot open a connection to broker %s: %s", address, error)
        return None


def _reason(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror or exc} ({name})" if name else str(exc)
