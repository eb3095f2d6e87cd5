"""The Majordomo client: ``MDPClient(brokers).send(service, request)``.

Lazy Pirate with failover, sped up by the DIPS extensions when the broker speaks them:

* Every new connection starts with a PING. A DIPS broker answers at once; a standard
  broker says nothing, and that connection then gets plain 7/MDP, one request at a time,
  with the classic Lazy Pirate timeout (``attempt_timeout``).
* With a DIPS broker each request carries an id and the time the client will still wait.
  While replies are outstanding and the broker is quiet, the client pings it every
  ``ping_interval``; the broker answers with the ids it does not hold. A broker that does
  not answer within ``broker_timeout`` is dropped and its requests go to the next broker;
  ids it says it lost (it restarted) are sent again. A long request on a live broker is
  never resent, and a reply is matched by id, so a stale or duplicate reply is dropped.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from mdp import protocol as p
from mdp import sockio
from mdp.clock import poll_timeout_ms
from mdp.errors import BadRequest, ConfigError, ProtocolError, RequestError, Timeout, UnknownService
from mdp.keys import CurveConfig

log = logging.getLogger(__name__)

_PENDING = object()


@dataclass(eq=False, slots=True)
class _Call:
    index: int
    service: bytes
    body: list[bytes]
    rid: int
    raw: bool = False  # hand back the body frames undecoded (MMI)
    deadline: float = math.inf  # set when first sent
    sends: int = 0
    refused_by: set[int] = field(default_factory=set)  # endpoints that said unknown service
    sent_at: float = 0.0
    outcome: Any = _PENDING

    @property
    def done(self) -> bool:
        return self.outcome is not _PENDING


class _Endpoint:
    def __init__(self, index: int, address: str) -> None:
        self.index = index
        self.address = address
        self.socket: zmq.Socket | None = None
        self.dips = False
        self.heard_at = 0.0
        self.ping_at: float | None = None
        self.down_until = 0.0
        self.calls: dict[int, _Call] = {}


class MDPClient:
    """Send requests to a service through any of several brokers."""

    def __init__(
        self,
        brokers: Sequence[str],
        *,
        timeout: float = 10.0,
        retries: int = 3,
        attempt_timeout: float = 2.5,
        ping_interval: float = 0.25,
        broker_timeout: float = 0.5,
        connect_timeout: float = 0.5,
        down_for: float = 1.0,
        shuffle: bool = True,
        curve: CurveConfig | None = None,
        max_request_bytes: int = 32 * 1024 * 1024,
        max_reply_bytes: int = 64 * 1024 * 1024,
        context: zmq.Context | None = None,
    ) -> None:
        """
        :param brokers: broker endpoints, e.g. ``["tcp://10.0.0.1:5555", ...]``.
        :param timeout: seconds ``send`` waits for a reply in all; the request's deadline,
            after which brokers drop it unworked.
        :param retries: how many times a request may be sent again after its broker failed.
        :param attempt_timeout: for standard brokers only: seconds before a resend.
        :param ping_interval: a quiet DIPS broker is pinged after this many seconds.
        :param broker_timeout: a DIPS broker that does not answer a ping in this time is
            taken for dead or hung.
        :param connect_timeout: seconds to wait for a new connection to come up.
        :param down_for: seconds a failed broker is left alone before it is tried again.
        :param shuffle: start at a random broker, so that clients spread over all of them.
        :param curve: keys for brokers that require CURVE (see :mod:`mdp.keys`).
        :param max_request_bytes: larger requests are refused here with BadRequest (brokers
            disconnect a peer whose message passes their ``--max-message-bytes``).
        :param max_reply_bytes: a broker sending a larger reply is disconnected.
        """
        if not brokers:
            raise ConfigError("MDPClient needs at least one broker endpoint")
        if timeout <= 0 or retries < 0:
            raise ConfigError("timeout must be positive and retries not negative")
        self.brokers = tuple(brokers)
        self.timeout = timeout
        self.retries = retries
        self.attempt_timeout = attempt_timeout
        self.ping_interval = ping_interval
        self.broker_timeout = broker_timeout
        self.connect_timeout = connect_timeout
        self.down_for = down_for
        self.curve = curve
        self.max_request_bytes = max_request_bytes
        self.max_reply_bytes = max_reply_bytes
        self.context = context or zmq.Context.instance()
        self._endpoints = [_Endpoint(i, address) for i, address in enumerate(self.brokers)]
        self._current = random.randrange(len(self._endpoints)) if shuffle else 0
        self._rids = itertools.count(1)
        self._poller: zmq.Poller | None = None
        self._deadlines: list[tuple[float, int, _Call]] = []  # heap of the running calls

    # --- public API ------------------------------------------------------------------

    def send(self, service: str, request: dict[str, Any]) -> Any:
        """Send one request and return the result of its reply.

        Raises a :class:`~mdp.errors.RequestError` subclass for an error reply, and
        :class:`~mdp.errors.Timeout` when no broker answered in time.
        """
        call = _Call(0, _service_name(service), [_encode(request, self.max_request_bytes)],
                     next(self._rids))
        self._run([call], 1, quick=True)
        if isinstance(call.outcome, Exception):
            raise call.outcome
        return call.outcome

    def send_many(
        self,
        service: str,
        requests: Iterable[dict[str, Any]],
        *,
        window: int = 64,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Send many requests with up to ``window`` in flight; results in request order.

        With ``return_exceptions`` an error takes the place of its result; otherwise the
        first error (in request order) is raised once every request has finished.
        """
        name = _service_name(service)
        calls = [_Call(i, name, [_encode(request, self.max_request_bytes)], next(self._rids))
                 for i, request in enumerate(requests)]
        self._run(calls, window)
        outcomes = [call.outcome for call in calls]
        if not return_exceptions:
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    raise outcome
        return outcomes

    def request_raw(self, service: str, body: bytes) -> list[bytes]:
        """Send one frame as it is and return the reply's frames undecoded (e.g. MMI)."""
        call = _Call(0, service.encode(), [body], next(self._rids), raw=True)
        self._run([call], 1)
        if isinstance(call.outcome, Exception):
            raise call.outcome
        return call.outcome

    def mmi_service(self, name: str) -> str:
        """8/MMI: "200" if a worker offers ``name``, "404" if none, "501" if unsupported."""
        return self.request_raw("mmi.service", name.encode())[0].decode("ascii", "replace")

    def status(self) -> dict[str, Any]:
        """The broker's ``mmi.status`` map (send it with a single-broker client)."""
        reply = self.request_raw("mmi.status", b"")
        status = p.unpack(reply[0]) if reply else None
        if not isinstance(status, dict):
            raise ProtocolError("mmi.status reply is not a map (not a DIPS broker?)")
        return status

    def close(self) -> None:
        for endpoint in self._endpoints:
            self._close(endpoint)

    def __enter__(self) -> MDPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- engine ----------------------------------------------------------------------

    def _run(self, calls: list[_Call], window: int, quick: bool = False) -> None:
        """Drive ``calls`` to their outcomes, at most ``window`` in flight at a time."""
        waiting: deque[_Call] = deque(calls)
        self._deadlines = []
        try:
            if quick and self._quick(waiting):
                return
            while True:
                now = time.monotonic()
                self._expire(waiting, now)
                self._fill(waiting, max(1, window), now)
                if not waiting and not any(ep.calls for ep in self._endpoints):
                    return
                self._wait(waiting, time.monotonic())
        finally:  # normally empty; not so when an exception (e.g. KeyboardInterrupt) escaped
            for endpoint in self._endpoints:
                if endpoint.calls:
                    endpoint.calls = {}
                    if not endpoint.dips:
                        self._close(endpoint)

    def _quick(self, waiting: deque[_Call]) -> bool:
        """The common case of one request on a live DIPS connection, without the engine.

        Sends, waits up to one ping interval for the matching reply, and returns True when
        it came. Otherwise the general loop takes over with the request in flight.
        """
        endpoint = self._endpoints[self._current]
        now = time.monotonic()
        if endpoint.socket is None or not endpoint.dips or endpoint.calls:
            return False
        call = waiting.popleft()
        if not self._transmit(call, endpoint, now):
            waiting.appendleft(call)
            return False
        if endpoint.socket.poll(int(self.ping_interval * 1000)):
            self._read(endpoint, waiting)
        return call.done

    def _fill(self, waiting: deque[_Call], window: int, now: float) -> None:
        inflight = sum(len(ep.calls) for ep in self._endpoints)
        while waiting and inflight < window:
            call = waiting[0]
            endpoint = self._choose(call, now)
            if endpoint is None or (not endpoint.dips and endpoint.calls):
                if endpoint is None:  # no broker reachable: the clock starts all the same
                    self._start_clock(call, now)
                return
            waiting.popleft()
            if self._transmit(call, endpoint, now):
                inflight += 1
            else:
                waiting.appendleft(call)
                self._fail(endpoint, waiting, now)

    def _choose(self, call: _Call, now: float) -> _Endpoint | None:
        count = len(self._endpoints)
        for step in range(count):
            endpoint = self._endpoints[(self._current + step) % count]
            if endpoint.down_until > now or endpoint.index in call.refused_by:
                continue
            if endpoint.socket is None and not self._open(endpoint):
                endpoint.down_until = time.monotonic() + self.down_for
                continue
            return endpoint
        return None

    def _transmit(self, call: _Call, endpoint: _Endpoint, now: float) -> bool:
        if endpoint.dips:
            remaining = self.timeout if call.deadline == math.inf else call.deadline - now
            ttl_ms = max(1, int(remaining * 1000))
            frames = p.client_xrequest(call.service, call.rid, ttl_ms, call.body)
        else:
            frames = p.client_request(call.service, call.body)
        self._start_clock(call, now)
        try:
            sockio.send(endpoint.socket, frames)  # type: ignore[arg-type]
        except zmq.Again:  # no connection: the broker is gone
            return False
        if not endpoint.calls:
            endpoint.heard_at = now
        call.sends += 1
        call.sent_at = now
        endpoint.calls[call.rid] = call
        return True

    def _start_clock(self, call: _Call, now: float) -> None:
        """A call's deadline runs from its first attempt, not from when it was queued."""
        if call.deadline == math.inf:
            call.deadline = now + self.timeout
            heapq.heappush(self._deadlines, (call.deadline, call.rid, call))

    def _wait(self, waiting: deque[_Call], now: float) -> None:
        poller = self._get_poller()
        events = dict(poller.poll(poll_timeout_ms(self._next_deadline(waiting, now), now)))
        for endpoint in self._endpoints:
            if endpoint.socket is not None and endpoint.socket in events:
                self._read(endpoint, waiting)
        now = time.monotonic()
        for endpoint in self._endpoints:
            if endpoint.calls:
                self._check(endpoint, waiting, now)

    def _next_deadline(self, waiting: deque[_Call], now: float) -> float:
        deadline = now + 1.0
        heap = self._deadlines
        while heap and heap[0][2].done:
            heapq.heappop(heap)
        if heap:
            deadline = min(deadline, heap[0][0])
        if waiting and all(ep.down_until > now for ep in self._endpoints):
            deadline = min(deadline, min(ep.down_until for ep in self._endpoints))
        for endpoint in self._endpoints:
            if not endpoint.calls:
                continue
            if not endpoint.dips:
                call = next(iter(endpoint.calls.values()))
                deadline = min(deadline, call.sent_at + self.attempt_timeout)
            elif endpoint.ping_at is None:
                deadline = min(deadline, endpoint.heard_at + self.ping_interval)
            else:
                deadline = min(deadline, endpoint.ping_at + self.broker_timeout)
        return deadline

    def _read(self, endpoint: _Endpoint, waiting: deque[_Call]) -> None:
        sock = endpoint.socket
        while sock is not None and endpoint.socket is sock:
            frames = sockio.recv(sock)
            if frames is None:
                return
            endpoint.heard_at = time.monotonic()
            endpoint.ping_at = None
            try:
                message = p.parse_client_inbound(frames)
            except ProtocolError as exc:
                log.warning("dropped a message from broker %s: %s", endpoint.address, exc)
                continue
            if isinstance(message, p.Pong):
                self._resend_lost(endpoint, message.unknown, waiting)
            else:
                self._on_reply(endpoint, message, waiting)

    def _on_reply(self, endpoint: _Endpoint, reply: p.Reply, waiting: deque[_Call]) -> None:
        if endpoint.dips:
            call = endpoint.calls.pop(reply.rid, None) if reply.rid is not None else None
        else:
            call = endpoint.calls.pop(next(iter(endpoint.calls)), None) if endpoint.calls else None
        if call is None:
            log.debug("dropped a stale reply from %s", endpoint.address)
            return
        if call.raw:
            call.outcome = reply.body
            return
        try:
            call.outcome = p.decode_reply(reply.body)
        except UnknownService as exc:
            call.refused_by.add(endpoint.index)
            if len(call.refused_by) < len(self._endpoints):
                waiting.appendleft(call)  # another broker may have workers for it
            else:
                call.outcome = exc
        except (RequestError, ProtocolError) as exc:
            call.outcome = exc

    def _resend_lost(self, endpoint: _Endpoint, unknown: list[int], waiting: deque[_Call]) -> None:
        for rid in unknown:
            call = endpoint.calls.pop(rid, None)
            if call is not None:
                log.info("broker %s lost request %d; sending it again", endpoint.address, rid)
                self._retry(call, waiting)

    def _check(self, endpoint: _Endpoint, waiting: deque[_Call], now: float) -> None:
        """Liveness: ping a quiet DIPS broker, fail a silent one or a slow standard one."""
        if not endpoint.dips:
            call = next(iter(endpoint.calls.values()))
            if now >= call.sent_at + self.attempt_timeout:
                log.warning("no reply from %s in %.1fs", endpoint.address, self.attempt_timeout)
                self._fail(endpoint, waiting, now)
        elif endpoint.ping_at is not None:
            if now >= endpoint.ping_at + self.broker_timeout:
                log.warning("broker %s did not answer a ping in %.2fs; failing over",
                            endpoint.address, self.broker_timeout)
                self._fail(endpoint, waiting, now)
        elif now >= endpoint.heard_at + self.ping_interval and endpoint.socket is not None:
            try:
                sockio.send(endpoint.socket, p.client_ping(list(endpoint.calls)))
                endpoint.ping_at = now
            except zmq.Again:
                self._fail(endpoint, waiting, now)

    def _expire(self, waiting: deque[_Call], now: float) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            call = heapq.heappop(heap)[2]
            if call.done:
                continue
            call.outcome = self._timeout(call)
            if call in waiting:  # sent before, waiting to be sent again
                waiting.remove(call)
            for endpoint in self._endpoints:
                if endpoint.calls.pop(call.rid, None) is not None and not endpoint.dips:
                    self._close(endpoint)  # Lazy Pirate: a late reply must not meet a new request

    def _fail(self, endpoint: _Endpoint, waiting: deque[_Call], now: float) -> None:
        """Drop a broker's connection; its requests go to the next broker."""
        self._close(endpoint)
        endpoint.down_until = now + self.down_for
        if endpoint.index == self._current:
            self._current = (self._current + 1) % len(self._endpoints)
        calls = sorted(endpoint.calls.values(), key=lambda c: c.index, reverse=True)
        endpoint.calls = {}
        for call in calls:
            self._retry(call, waiting)

    def _retry(self, call: _Call, waiting: deque[_Call]) -> None:
        if call.sends > self.retries:
            call.outcome = self._timeout(call)
        else:
            waiting.appendleft(call)

    def _timeout(self, call: _Call) -> Timeout:
        service = call.service.decode("ascii", "replace")
        brokers = ", ".join(self.brokers)
        if call.sends == 0:
            return Timeout(f"no broker could be reached within {self.timeout:g}s for "
                           f"{service!r}; brokers tried: {brokers}", self.brokers)
        return Timeout(f"no reply for {service!r} within {self.timeout:g}s after "
                       f"{call.sends} send(s); brokers tried: {brokers}", self.brokers)

    # --- connections -----------------------------------------------------------------

    def _open(self, endpoint: _Endpoint) -> bool:
        """Connect; True once the broker is up. Learns whether it speaks DIPS."""
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # with no send limit, Again means "not connected"
        sock.setsockopt(zmq.SNDHWM, 0)  # a deep window must not look like a dead broker
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_reply_bytes)
        if self.curve is not None:
            self.curve.apply(sock)
        sock.connect(endpoint.address)
        timeout_ms = int(self.connect_timeout * 1000)
        if not sock.poll(timeout_ms, zmq.POLLOUT):
            log.warning("cannot connect to broker %s", endpoint.address)
            sock.close(linger=0)
            return False
        sock.send_multipart(p.client_ping([]))
        endpoint.dips = False
        if sock.poll(timeout_ms, zmq.POLLIN):
            try:
                endpoint.dips = isinstance(p.parse_client_inbound(sock.recv_multipart()), p.Pong)
            except ProtocolError:
                pass
        if not endpoint.dips:
            log.info("broker %s does not speak DIPS; using plain 7/MDP", endpoint.address)
        endpoint.socket = sock
        endpoint.ping_at = None
        endpoint.heard_at = time.monotonic()
        self._poller = None
        return True

    def _close(self, endpoint: _Endpoint) -> None:
        if endpoint.socket is not None:
            endpoint.socket.close(linger=0)
            endpoint.socket = None
            self._poller = None

    def _get_poller(self) -> zmq.Poller:
        if self._poller is None:
            self._poller = zmq.Poller()
            for endpoint in self._endpoints:
                if endpoint.socket is not None:
                    self._poller.register(endpoint.socket, zmq.POLLIN)
        return self._poller


def _service_name(service: str) -> bytes:
    name = service.encode()
    if not p.valid_service(name):
        raise BadRequest(f"invalid service name {service!r}", "service")
    return name


def _encode(request: dict[str, Any], max_bytes: int) -> bytes:
    if not isinstance(request, dict):
        raise BadRequest(f"a request is a map, got {type(request).__name__}")
    try:
        body = p.pack(request)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequest(f"request cannot be encoded as msgpack: {exc}") from exc
    if len(body) > max_bytes:
        raise BadRequest(f"request is {len(body)} bytes; the limit is {max_bytes}")
    return body
