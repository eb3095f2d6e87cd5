"""The broker's ROUTER on plain sockets: ZMTP in the broker's own thread (``--transport plain``).

A pyzmq ROUTER hands every message from libzmq's I/O thread to the broker's thread through a
mailbox, and every reply back: two thread wake-ups per message each way, about 40% of a
broker's CPU per request. :class:`PlainRouter` has no such thread: it binds listening
sockets itself, accepts without blocking, and drives one :class:`mdp.zmtp.ZmtpConnection`
(the ROUTER side) per connection, all under one ``select.epoll``, in the thread that runs
the broker's loop. That loop always comes back to its socket (it never runs user code), so
it can answer ZMTP PINGs and keep the heartbeat timers itself.

What it keeps of a pyzmq ROUTER's behaviour (with ROUTER_MANDATORY, SNDHWM and RCVHWM 0,
MAXMSGSIZE, HEARTBEAT_IVL and HEARTBEAT_TIMEOUT set, as the broker sets them):

* a message comes out as ``[identity, *frames]``; the identity is the peer's ``Identity``
  property when it gave one that no connection has, else a generated 5 bytes (``0x00`` and a
  counter), as libzmq makes them. Peers must be DEALER or REQ sockets; any other type is
  sent an ERROR and closed.
* messages are taken fairly, one per connection in turn: a peer that floods cannot starve the
  others (each connection keeps what it sent in its own queue; one is read again only when
  its queue is short).
* a send to an identity with no connection raises :class:`~mdp.routers.PeerGone` (libzmq's
  EHOSTUNREACH); output is queued per connection without a limit and written when the
  socket is writable, at most ``WRITE_TURN_BYTES`` to one connection per turn (a fast
  reader of a long backlog does not hold the loop); a big frame is written from the
  caller's memory, and received into memory committed only as its bytes come.
* a frame larger than ``max_message_bytes`` drops its connection (MAXMSGSIZE).
* every ``heartbeat_ms`` each connection is sent a PING, unless bytes came from it since the
  last time (it is alive: a PING would only bring a PONG back, two more system calls per
  worker a second); one from which nothing came within ``timeout_ms`` of the first
  heartbeat after its last bytes is dropped, once a PING has been out for ``timeout_ms``
  less one interval (two thirds of it at the least, the broker's timeout being three
  intervals or more): with ticks on time a frozen peer is dropped when it was before (a
  router made with a timeout of one interval or less drops it one interval later), and
  after a stall of the broker's loop every peer is sent a PING before any verdict. A live
  peer that stops answering (a plain worker whose handler holds the GIL) is allowed at
  least ``timeout_ms`` of silence, where before the phase of its last PONG added up to one
  interval; peers' PINGs are answered.
  Except a client's: a connection whose every message so far carried a Majordomo client
  header (``MDPC01``, ``DIPC02``) is neither pinged nor dropped for silence (a sync client
  on a plain socket reads nothing while its caller is idle; a worker's silence is how a
  frozen one is found, and stays so). Its kernel watches it instead: TCP keepalive probes
  after ``heartbeat_ms`` of quiet and ``TCP_USER_TIMEOUT`` at ``timeout_ms`` drop one whose
  host is gone (a dead process's connection closes by itself, on tcp:// and ipc://).
  A connection whose handshake is not done after ``HANDSHAKE_S`` is dropped (libzmq's
  HANDSHAKE_IVL).
* a connection that closes, fails or breaks ZMTP is dropped and its identity forgotten; the
  whole messages it sent before (those in the same receive as a bad frame too, as libzmq
  delivers them) are still delivered, a partial one is discarded. Hostile
  bytes are logged (rate-limited) and never stop the broker.

Writes go out when the loop asks (:meth:`PlainRouter.flush`: every ``FLUSH_EVERY``
messages of a pass and at its end, :mod:`mdp.broker`), or before the next wait: messages
sent in one go share system calls, and the peers they wake are woken in one burst.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import math
import os
import random
import select
import socket
import time
from typing import Any

from mdp import protocol as p
from mdp.errors import ProtocolError
from mdp.logs import RateLimitedLog
from mdp.routers import PeerGone
from mdp.zmtp import ROUTER_PEERS, ZmtpConnection

log = logging.getLogger(__name__)

RECV_BYTES = 262144  # one receive reads up to this much into the router's own buffer
INBOX_MAX = 256  # a connection holding this many messages not yet taken is not read
POLL_EVERY = 64  # messages taken before the sockets are looked at again, even with more read
# (one receive can bring thousands of small messages: a peer whose message comes behind
# them waits for no more than this many of them, and the timers keep their turn)
ACCEPT_MAX = 64  # connections accepted per turn of the listening socket
BACKLOG = 1024  # (the kernel caps it at net.core.somaxconn)
HANDSHAKE_S = 30.0  # libzmq's ZMQ_HANDSHAKE_IVL
ACCEPT_PAUSE_S = 0.1  # out of file descriptors: the listening socket rests this long
SENDMSG_MAX = 64  # chunks per sendmsg (IOV_MAX is 1024)
WRITE_TURN_BYTES = 1 << 20  # written to one connection per turn at most; the rest waits for
# EPOLLOUT (a fast reader of a long backlog must not hold the loop: other peers, PINGs, timers)
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_NOT_OUT = ~_OUT
_NOT_IN_OUT = ~(_IN | _OUT)
KEEP_BIG_FROM = 3  # a big frame from the 4th of a message on (a body) is received into its
# own buffer and passed on uncopied (the first frames, identity and MDP header, stay bytes,
# as mdp.sockio.HEAD keeps them for a pyzmq socket)
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
# [identity, b"", header, ...]: frames[1] before the identity goes in front
_CLIENT_HEADERS = (p.CLIENT, p.DIPS_CLIENT)
_GONE = (ConnectionError, TimeoutError)


class _Peer:
    """One accepted connection."""

    __slots__ = ("sock", "fd", "zmtp", "identity", "inbox", "pending", "dirty", "writing",
                 "heard", "ping_at", "pinged_at", "opened_at", "closed", "name", "client")

    def __init__(self, sock: socket.socket, zmtp: ZmtpConnection, now: float,
                 name: str) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.zmtp = zmtp
        self.identity: bytes | None = None  # once the handshake is done
        self.inbox: collections.deque[list[bytes]] = collections.deque()
        self.pending: collections.deque[Any] = collections.deque()  # chunks not yet written
        self.dirty = False  # in the router's list of peers with output to write
        self.writing = False  # EPOLLOUT is asked for
        self.heard = False  # bytes came since the last heartbeat tick
        self.ping_at = now  # the first heartbeat tick since it was last heard (or when it came)
        self.pinged_at: float | None = None  # the first PING sent since it was last heard
        self.opened_at = now
        self.closed = False
        self.name = name
        self.client: bool | None = None  # every message a client's (None: none came yet)


class PlainRouter:
    """A ROUTER on plain sockets (see the module docstring); bind with :meth:`bind`."""

    def __init__(self, max_message_bytes: int, heartbeat_ms: int = 0, timeout_ms: int = 0,
                 ttl_ms: int = 0) -> None:
        self.max_message_bytes = max_message_bytes
        self.heartbeat_s = heartbeat_ms / 1000
        self.timeout_s = timeout_ms / 1000
        self.ttl_ds = ttl_ms // 100
        self.endpoints: list[str] = []
        self._epoll = select.epoll()
        self._listeners: dict[int, tuple[socket.socket, str]] = {}
        self._resting: list[int] = []  # listening sockets unwatched (no file descriptors)
        self._unlink: list[str] = []  # ipc paths to remove on close
        self._peers: dict[int, _Peer] = {}
        self._by_id: dict[bytes, _Peer] = {}
        self._ready: collections.deque[_Peer] = collections.deque()  # peers with messages
        self._taken = 0  # messages taken since the sockets were last looked at
        self._dirty: list[_Peer] = []
        self._buffer = bytearray(RECV_BYTES)
        self._view = memoryview(self._buffer)
        self._next_id = random.getrandbits(32)
        now = time.monotonic()
        self._tick_s = self.heartbeat_s or 1.0
        self._next_tick = now + self._tick_s
        self._complaints = RateLimitedLog(log)

    # --- binding ---------------------------------------------------------------------------

    def bind(self, endpoint: str) -> str:
        """Listen on ``tcp://HOST:PORT`` (HOST ``*``: every interface; PORT ``*`` or 0: any
        free one) or ``ipc://PATH``; the endpoint as a peer connects to it. OSError when it
        cannot; ValueError for another kind of endpoint."""
        family, address, shown = _listen_address(endpoint)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            if family == socket.AF_UNIX:
                if isinstance(address, str) and not address.startswith("\0"):
                    if os.path.exists(address):  # (left behind; libzmq removes it too)
                        os.unlink(address)
                    self._unlink.append(address)
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        if family != socket.AF_UNIX:
            host, port = sock.getsockname()[:2]
            shown = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
        self._listeners[sock.fileno()] = (sock, shown)
        self._epoll.register(sock.fileno(), _IN)
        self.endpoints.append(shown)
        return shown

    # --- receiving -------------------------------------------------------------------------

    def recv_wait(self, timeout_ms: int,
                  with_user: bool = False) -> tuple[list[bytes] | None, str]:
        """Block up to ``timeout_ms`` for one message; (None, "") when none came."""
        if self._ready and self._taken < POLL_EVERY:
            return self._take(), ""
        now = time.monotonic()
        deadline = now + timeout_ms / 1000
        while True:
            wake = deadline if deadline < self._next_tick else self._next_tick
            # (messages may wait already, when POLL_EVERY sent us to the sockets: then only
            # look, never wait)
            self._poll(wake - now if wake > now and not self._ready else 0.0)
            if self._ready:
                return self._take(), ""
            now = time.monotonic()
            if now >= deadline:
                return None, ""

    def readable(self) -> bool:
        if self._ready:
            return True
        self._poll(0.0)
        return bool(self._ready)

    def recv(self) -> list[bytes] | None:
        if not self._ready or self._taken >= POLL_EVERY:
            self._poll(0.0)
            if not self._ready:
                return None
        return self._take()

    def recv_with_user(self) -> tuple[list[bytes] | None, str]:
        return self.recv(), ""

    def _take(self) -> list[bytes]:
        """The next message, from each connection with messages in turn."""
        self._taken += 1
        peer = self._ready.popleft()
        inbox = peer.inbox
        frames = inbox.popleft()
        if inbox:
            self._ready.append(peer)
        return frames

    def _poll(self, timeout_s: float) -> None:
        """Write what waits, then act on what epoll reports within ``timeout_s``."""
        if self._dirty:
            self.flush()
        self._taken = 0
        peers = self._peers
        for fd, events in self._epoll.poll(timeout_s):
            peer = peers.get(fd)
            if peer is None:
                self._accept(fd)
                continue
            if events & _OUT:
                self._write(peer)
            if events & _NOT_OUT and not peer.closed and (len(peer.inbox) < INBOX_MAX
                                                            or events & _NOT_IN_OUT):
                self._read(peer)
        now = time.monotonic()
        if now >= self._next_tick:
            self._tick(now)

    def _read(self, peer: _Peer) -> None:
        """One receive from ``peer``: whole messages go to its inbox. The rest of a big
        frame is received straight into its own buffer."""
        zmtp = peer.zmtp
        target = zmtp.big_target()
        try:
            size = peer.sock.recv_into(self._buffer if target is None else target)
        except BlockingIOError:
            return
        except OSError as exc:
            self._drop(peer, _reason(exc), quiet=isinstance(exc, _GONE))
            return
        if not size:
            self._drop(peer, "closed by the peer", quiet=True)
            return
        peer.heard = True
        failure: ProtocolError | None = None
        try:
            if target is None:
                messages = zmtp.receive_data(bytes(self._view[:size]))
            else:
                target.release()
                messages = zmtp.big_received(size)
        except ProtocolError as exc:  # (what came whole before the fault is delivered first)
            failure, messages = exc, zmtp.messages_before_failure
        if peer.identity is None and zmtp.peer_properties:  # (its handshake is done)
            self._identify(peer)
        if messages:
            if peer.client is not False:
                self._classify(peer, messages)
            identity = peer.identity or b""  # (set: messages come after the handshake)
            for frames in messages:
                frames.insert(0, identity)
            if not peer.inbox:
                self._ready.append(peer)
            peer.inbox.extend(messages)
        if failure is not None:
            self._drop(peer, str(failure), quiet=False)
            return
        if zmtp.wants_write and not peer.dirty:  # a PONG; after the peer's READY, what
            peer.dirty = True  # waited for it
            self._dirty.append(peer)

    def _classify(self, peer: _Peer, messages: list[list[Any]]) -> None:
        """Whether ``peer`` is a client (see the module docstring): every message so far
        came with a client header; one that does not makes it an ordinary peer for good.
        A connection first found a client has its kernel watch it (:func:`_keep_alive`)."""
        for frames in messages:
            if len(frames) < 2 or frames[1] not in _CLIENT_HEADERS:
                peer.client = False
                return
        if peer.client is None:
            peer.client = True
            if self.heartbeat_s > 0 and self.timeout_s > 0 \
                    and peer.sock.family != socket.AF_UNIX:
                _keep_alive(peer.sock, self.heartbeat_s, self.timeout_s)

    def _identify(self, peer: _Peer) -> None:
        """The routing id of a peer whose handshake is done: its own if it gave one that no
        connection has, else a generated one."""
        identity = peer.zmtp.peer_properties.get("identity", b"")
        if not identity or identity in self._by_id:
            while True:
                self._next_id = (self._next_id + 1) & 0xFFFFFFFF
                identity = b"\x00" + self._next_id.to_bytes(4, "big")
                if identity not in self._by_id:
                    break
        peer.identity = identity
        self._by_id[identity] = peer
        log.debug("peer %s is %s", peer.name, identity.hex())

    # --- sending ---------------------------------------------------------------------------

    def send(self, frames: list[Any]) -> None:
        """Queue ``[identity, *frames]``; :class:`PeerGone` if no connection has that
        identity. It is written by :meth:`flush` or before the next wait."""
        peer = self._by_id.get(frames[0])
        if peer is None:
            raise PeerGone(f"peer {bytes(frames[0]).hex()[:20]} is not connected")
        peer.zmtp.send_message(frames, 1)
        if not peer.dirty:
            peer.dirty = True
            self._dirty.append(peer)

    def flush(self) -> None:
        """Write what was sent, as far as each connection takes it without blocking."""
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, []
        for peer in dirty:
            peer.dirty = False
            if not peer.closed:
                self._write(peer)

    def _mark(self, peer: _Peer) -> None:
        if not peer.dirty:
            peer.dirty = True
            self._dirty.append(peer)

    def _write(self, peer: _Peer) -> None:
        """Write what waits for ``peer``, up to ``WRITE_TURN_BYTES``; the rest when its
        socket is writable again (EPOLLOUT), on a later turn."""
        pending = peer.pending
        sock = peer.sock
        out = peer.zmtp.data_to_send()  # (mostly something: a peer is written when sent to)
        if out:
            if not pending and len(out) == 1 and type(out[0]) is bytes:
                # (the common case: one message of short frames, nothing waiting before it)
                chunk = out[0]
                try:
                    sent = sock.send(chunk, _NOSIGNAL)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self._drop(peer, _reason(exc), quiet=isinstance(exc, _GONE))
                    return
                if sent == len(chunk):
                    if peer.writing:
                        peer.writing = False
                        self._epoll.modify(peer.fd, _IN)
                    return
                out[0] = memoryview(chunk)[sent:]
            for chunk in out:
                pending.append(chunk if type(chunk) is bytes else memoryview(chunk).cast("B"))
        budget = WRITE_TURN_BYTES
        try:
            while pending and budget > 0:
                if len(pending) == 1:
                    sent = sock.send(pending[0], _NOSIGNAL)
                else:
                    sent = sock.sendmsg(list(itertools.islice(pending, SENDMSG_MAX)), (),
                                        _NOSIGNAL)
                budget -= sent
                while sent:
                    size = len(pending[0])
                    if sent >= size:
                        sent -= size
                        pending.popleft()
                    else:
                        pending[0] = memoryview(pending[0])[sent:]
                        sent = 0
        except BlockingIOError:
            pass
        except OSError as exc:
            self._drop(peer, _reason(exc), quiet=isinstance(exc, _GONE))
            return
        if bool(pending) != peer.writing:
            peer.writing = not peer.writing
            self._epoll.modify(peer.fd, _IN | _OUT if peer.writing else _IN)

    # --- connections -----------------------------------------------------------------------

    def _accept(self, fd: int) -> None:
        listener, endpoint = self._listeners[fd]
        for _ in range(ACCEPT_MAX):
            try:
                sock, address = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:  # out of file descriptors, or the like
                self._complaints(time.monotonic(), "cannot accept on %s: %s", endpoint,
                                 _reason(exc))
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._epoll.unregister(fd)
                    self._resting.append(fd)
                    self._next_tick = min(self._next_tick, time.monotonic() + ACCEPT_PAUSE_S)
                return
            self._open(sock, address, endpoint)

    def _open(self, sock: socket.socket, address: Any, endpoint: str) -> None:
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            name = f"{address[0]}:{address[1]}"
        else:
            name = endpoint
        zmtp = ZmtpConnection(self.max_message_bytes, socket_type=b"ROUTER",
                              peer_types=ROUTER_PEERS, limit_name="max_message_bytes",
                              keep_big_from=KEEP_BIG_FROM)
        peer = _Peer(sock, zmtp, time.monotonic(), name)
        self._peers[peer.fd] = peer
        self._epoll.register(peer.fd, _IN)
        self._write(peer)  # our greeting and READY

    def _drop(self, peer: _Peer, why: str, quiet: bool) -> None:
        """Close ``peer``'s connection and forget its identity; the messages it sent
        before stay to be taken."""
        if peer.closed:
            return
        if not quiet:
            self._complaints(time.monotonic(), "dropping peer %s (%s): %s", peer.name,
                             peer.identity.hex() if peer.identity else "no handshake", why)
            if peer.zmtp.wants_write:  # an ERROR for the peer, as libzmq sends it
                try:
                    peer.sock.send(b"".join(peer.zmtp.data_to_send()), _NOSIGNAL)
                except OSError:
                    pass
        else:
            log.debug("peer %s gone: %s", peer.name, why)
        peer.closed = True
        peer.pending.clear()
        del self._peers[peer.fd]
        if peer.identity is not None and self._by_id.get(peer.identity) is peer:
            del self._by_id[peer.identity]
        try:
            self._epoll.unregister(peer.fd)
        except OSError:
            pass
        peer.sock.close()

    def _tick(self, now: float) -> None:
        """ZMTP heartbeats, handshake timeouts, rested listening sockets."""
        self._next_tick = now + self._tick_s
        for fd in self._resting:
            self._epoll.register(fd, _IN)
        self._resting.clear()
        beat, timeout_s = self.heartbeat_s > 0, self.timeout_s
        for peer in list(self._peers.values()):
            if not peer.zmtp.ready:
                if now - peer.opened_at >= HANDSHAKE_S:
                    self._drop(peer, "no ZMTP handshake", quiet=False)
                continue
            if not beat or peer.client:
                continue
            if peer.heard:  # it spoke since the last tick: alive, and a PING would only
                peer.heard = False  # bring a PONG back (a worker's heartbeats keep it from
                peer.ping_at = now  # being pinged at all)
                peer.pinged_at = None
                continue
            pinged = peer.pinged_at
            if pinged is None:  # (after a stall of this loop, a PING goes out before any
                peer.pinged_at = now  # verdict: the peer had nothing to answer before)
            elif timeout_s and now - peer.ping_at >= timeout_s and \
                    now - pinged >= timeout_s - self.heartbeat_s and not self._heard_now(peer):
                if not peer.closed:
                    self._drop(peer, f"nothing heard for {now - peer.ping_at:.1f}s after a "
                               "ZMTP PING", quiet=True)
                    log.info("dropped peer %s: its ZMTP heartbeats stopped", peer.name)
                continue
            peer.zmtp.ping(self.ttl_ds)
            self._mark(peer)
        self.flush()

    def _heard_now(self, peer: _Peer) -> bool:
        """Whether a peer about to be taken for silent has in fact sent something that
        waits unread (what this pass's epoll did not report, or a loop that was stopped
        reads only now); reads it if so."""
        if len(peer.inbox) >= INBOX_MAX:  # (unread because the broker is behind)
            return True
        self._read(peer)
        return peer.heard and not peer.closed

    # --- for tests and status --------------------------------------------------------------

    @property
    def connections(self) -> int:
        return len(self._peers)

    def identities(self) -> list[bytes]:
        return list(self._by_id)

    def backlog(self, identity: bytes) -> int:
        """Chunks queued for ``identity`` and not yet written (0: none, or no such peer)."""
        peer = self._by_id.get(identity)
        return len(peer.pending) if peer is not None else 0

    def close(self) -> None:
        for peer in list(self._peers.values()):
            self._drop(peer, "closing", quiet=True)
        for sock, _ in self._listeners.values():
            sock.close()
        self._listeners.clear()
        for path in self._unlink:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._epoll.close()


def _listen_address(endpoint: str) -> tuple[int, Any, str]:
    """(family, socket address, endpoint shown) of a bind endpoint."""
    if endpoint == "ipc://*" or endpoint.startswith("tcp://["):
        raise ValueError(f"{endpoint!r}: a plain router binds IPv4 and named ipc:// paths only")
    if endpoint.startswith("ipc://"):
        path = endpoint[6:]
        return socket.AF_UNIX, "\0" + path[1:] if path.startswith("@") else path, endpoint
    if not endpoint.startswith("tcp://"):
        raise ValueError(f"{endpoint!r}: a plain router binds tcp:// or ipc:// only")
    host, _, port = endpoint[6:].rpartition(":")
    number = 0 if port == "*" else int(port)
    if host == "*":
        return socket.AF_INET, ("0.0.0.0", number), endpoint
    # IPv4 only, as libzmq without ZMQ_IPV6 (what a name means to the broker's clients)
    family, _, _, _, sockaddr = socket.getaddrinfo(host, number, socket.AF_INET,
                                                   socket.SOCK_STREAM,
                                                   flags=socket.AI_PASSIVE)[0]
    return family, sockaddr, endpoint


def _keep_alive(sock: socket.socket, idle_s: float, timeout_s: float) -> None:
    """Have the kernel find a peer whose host is gone: a keepalive probe after ``idle_s`` of
    quiet and every ``idle_s`` after, the connection reset once nothing it sent (probe or
    data) was acknowledged for ``timeout_s``. The peer's kernel answers the probes, so an
    idle or stopped process keeps its connection; a dead one closes it itself. Where the
    system lacks an option, the rest still apply."""
    idle = max(1, round(idle_s))
    options = [(socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
               (socket.IPPROTO_TCP, "TCP_KEEPIDLE", idle),
               (socket.IPPROTO_TCP, "TCP_KEEPINTVL", idle),
               (socket.IPPROTO_TCP, "TCP_KEEPCNT", max(1, math.ceil(timeout_s / idle))),
               (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", max(1, round(timeout_s * 1000)))]
    for level, name, value in options:
        option = getattr(socket, name, None)
        if option is not None:
            try:
                sock.setsockopt(level, option, value)
            except OSError as exc:  # (a closing socket, or a system that refuses it)
                log.debug("cannot set %s: %s", name, exc)


def _reason(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0)
    return f"{exc.strerror or exc} ({name})" if name else str(exc)
