"""The Majordomo broker: ``python -m mdp.broker --bind tcp://HOST:PORT``.

It queues requests per service and gives each to an idle worker of that service, least
recently used first. Workers that die or fall silent are forgotten and the request they
held goes back to the head of its queue. See ``docs/PROTOCOL.md`` for the wire.

This module is the I/O shell: one ROUTER socket (:mod:`mdp.routers`: a pyzmq ROUTER, or
with ``--transport plain`` a :class:`mdp.plainrouter.PlainRouter` that speaks ZMTP on plain
sockets in this thread), CURVE and ZAP, signals and the command line. Every decision is
taken by :class:`mdp.brokercore.BrokerCore`; the loop reads what
has arrived, feeds it to the core message by message, sends what the core asks for, and
tells the core when a pass over the socket is over (so that gathered output goes out) or
a send failed (the peer is gone).
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from mdp.brokercore import BrokerCore
from mdp.brokerstatus import clean_info as _clean_info  # noqa: F401  (tests/test_service_info)
from mdp.clock import poll_timeout_ms
from mdp.config import BrokerConfig, parse_broker_args
from mdp.dispatch import Dispatcher
from mdp.errors import ConfigError
from mdp.keys import fingerprint, load_secret
from mdp.logs import LOG_FORMAT, RateLimitedLog
from mdp.rates import format_rate
from mdp.routers import PeerGone, RouterSocket, ZmqRouter

if TYPE_CHECKING:
    from mdp.auth import RoleAuthenticator

log = logging.getLogger(__name__)

PASS = 256  # messages read in one pass before the core's timers get a turn
FLUSH_EVERY = 32  # messages read before gathered output goes out, even mid-pass
WAITED_S = 50e-6  # a first message the receive waited this long for came alone: what came
# behind it meanwhile starts a pass of its own (asking the socket costs system calls; a
# sync peer's message always comes alone, and a backlog is read without waiting)
WAIT_SLACK_S = 0.02  # a receive that waited this much longer than its timeout was stopped
# A loop that went this long between two looks at the clock was stopped (SIGSTOP) or starved
# (it never blocks for more than _MAX_BLOCK_MS): it reads what came meanwhile, and gives
# nothing to a worker until at least CATCH_UP_S later and until a read finds nothing more
# waiting (BrokerCore.hold; libzmq's I/O thread, stopped too, hands the backlog over piece
# by piece as it catches up, and a CANCEL behind requests must come before they go out);
# its timers wait as long, so that no worker is taken for quiet or gone before what it
# sent meanwhile is read.
STOPPED_GAP_S = 0.25
CATCH_UP_S = 0.05
CATCH_UP_MAX_S = 0.5  # under a load that never lets the socket empty, dispatch resumes then
_MAX_BLOCK_MS = 100  # longest the loop blocks: a stop or reload flag is seen this soon


class Broker:
    """One ROUTER socket around one :class:`BrokerCore`."""

    def __init__(self, config: BrokerConfig, context: zmq.Context | None = None) -> None:
        config.validate()
        self.config = config
        self.auth: RoleAuthenticator | None = None
        self.monitor: zmq.Socket | None = None
        self.router: RouterSocket
        if config.plain:
            from mdp.plainrouter import PlainRouter  # (no libzmq socket, no I/O thread)

            plain = PlainRouter(config.max_message_bytes, config.zmtp_heartbeat_ms,
                                config.zmtp_timeout_ms)
            self.router, bind = plain, plain.bind
        else:
            self.context = context or zmq.Context.instance()
            pyzmq = ZmqRouter(config, self.context)
            self.router, bind = pyzmq, pyzmq.bind
            if config.curve_secret and config.client_keys and config.worker_keys:
                self._setup_curve(pyzmq.sock, config.curve_secret, config.client_keys,
                                  config.worker_keys)
        try:
            for endpoint in config.bind:
                bind(endpoint)
        except BaseException:
            self.close()
            raise
        self.endpoints = self.router.endpoints
        self._writes_later = config.plain  # (the router writes when asked: flush)
        about = {"endpoint": " ".join(self.endpoints), "pid": os.getpid(),
                 "host": socket.gethostname()}
        self.core = BrokerCore(config, time.monotonic(), about=about,
                               role_of=None if self.auth is None else self.auth.role_of)
        # messages read but not yet handled (run_once reads what waits before it handles
        # any of it), with their CURVE keys
        self._ahead: collections.deque[tuple[list[bytes], str]] = collections.deque()
        self._awake_at: float | None = None  # the loop's last look at the clock (none yet)
        self._catch_up_until: float | None = None  # dispatch is held until then (and quiet)
        self._woke_at = 0.0
        self._stopping = False
        self._reload_requested = False
        self._next_monitor_check = 0.0
        self._handshake_warnings: RateLimitedLog | None = None  # (made with CURVE)

    def _setup_curve(self, sock: zmq.Socket, secret_file: str, client_keys: str,
                     worker_keys: str) -> None:
        # only with CURVE: zmq.auth's ZAP thread runs asyncio, which a broker without it
        # need not load (about 4 MB of every broker process)
        from mdp.auth import HANDSHAKE_FAILURES, RoleAuthenticator

        own = load_secret(secret_file)
        self.auth = RoleAuthenticator(self.context, Path(client_keys), Path(worker_keys))
        self.auth.start()
        sock.curve_server = True
        sock.curve_publickey = own.public
        sock.curve_secretkey = own.secret
        self.monitor = sock.get_monitor_socket(HANDSHAKE_FAILURES)
        log.info("CURVE on; broker key %s", fingerprint(own.public))

    @property
    def dispatcher(self) -> Dispatcher:
        return self.core.dispatcher

    @property
    def instance(self) -> str:
        return self.core.instance

    def status(self, now: float) -> dict[str, Any]:
        return self.core.status(now)

    # --- loop ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to end (safe from a signal handler)."""
        self._stopping = True

    def reload_keys(self) -> None:
        """Ask the loop to read the allow-lists again (safe from a signal handler)."""
        self._reload_requested = True

    def run(self) -> None:
        """Serve until :meth:`stop`."""
        log.info("broker ready on %s, link floor %s, %s transport", " ".join(self.endpoints),
                 format_rate(self.config.link_floor), "plain" if self.config.plain else "zmq")
        try:
            while not self._stopping:
                self.run_once(_MAX_BLOCK_MS)
                if self._reload_requested:
                    self._reload()
                if self.monitor is not None:
                    self._check_handshakes()
        finally:
            self.core.goodbye()
            self._carry_out()
            self.close()
            log.info("broker stopped")

    def run_once(self, max_block_ms: int) -> int:
        """One pass: wait for a message (up to ``max_block_ms``, less when the core has a
        deadline), then feed the core it and every message that came with it, carrying
        out what it asks; the number of messages handled.

        The wait is in the socket's own receive (fewer system calls per message than a
        poll). Unless the receive had to wait for it (a sync peer's: it came alone), the
        socket is asked whether more wait (cheaper than a receive that finds nothing);
        if none does, the core answers the message at once, gathering nothing. If some
        do, they are read before any is handled (:meth:`_read_ahead`, up to ``PASS``),
        so that a client's CANCEL among them is in force before the requests it names,
        read before it, can reach a worker (they sat in the socket while this broker was
        frozen, say, and their client has sent them elsewhere). Messages handled after
        the first may gather batched output, sent every ``FLUSH_EVERY`` messages and
        when a read finds the socket empty; messages read and not yet handled when the
        timers get a turn open the next pass.
        """
        core, router, ahead = self.core, self.router, self._ahead
        now = time.monotonic()
        self._looked(now)  # (stopped between two passes?)
        if self._catch_up_until is not None:
            # the timers wait too: what came meanwhile (the workers' heartbeats among it)
            # is read before they judge anyone quiet for the time this loop was stopped
            deadline = self._catch_up_until
        else:
            deadline = core.next_deadline()
            if deadline <= now:
                core.tick(now)
                self._carry_out()
                deadline = core.next_deadline()
        frames: list[bytes] | None
        # the clock when the loop last looked, if the message in hand came alone and nothing
        # ran since (None: the loop looks again before it handles the message)
        looked: float | None = None
        if ahead:
            frames, user = ahead.popleft()
        else:
            timeout_ms = min(poll_timeout_ms(deadline, now), max_block_ms)
            frames, user = router.recv_wait(timeout_ms, self.auth is not None)
            looked = time.monotonic()
            waited = looked - now
            self._looked(looked, timeout_ms / 1000)  # (stopped while it waited?)
            if frames is not None and not _came_alone(waited, timeout_ms):
                looked = None  # (the socket is asked again: the clock is read after it)
                if router.readable():
                    self._read_ahead(PASS - 1)
        handled = 0
        while frames is not None:
            if looked is None:
                at = time.monotonic()
                self._looked(at)  # (stopped while it handled the last one?)
            else:  # (the receive that brought it has just returned: the same moment)
                at, looked = looked, None
            try:  # the barrier: one bad message never stops the broker
                core.receive(frames, user, at, handled > 0)
                self._carry_out(write=False)  # (written with the pass's others, below)
            except Exception:
                core.dispatcher.counters.dropped += 1
                log.exception("error handling a message from %s", frames[0].hex()[:20])
            handled += 1
            if handled % FLUSH_EVERY == 0:
                now = time.monotonic()
                core.flush(now)
                self._carry_out()
                if handled >= PASS or core.next_deadline() <= now:
                    break  # the timers get a turn; the rest waits (read, or in the socket)
            if not ahead and handled > 1:  # (one that came alone is alone)
                self._read_ahead(PASS - handled)  # what came meanwhile
            if not ahead:
                break
            frames, user = ahead.popleft()
        if core.gathered:
            core.flush(time.monotonic())
        self._carry_out()  # (and what the pass sent is written)
        end = time.monotonic()
        self._looked(end)
        if self._catch_up_until is not None and end >= self._catch_up_until and not ahead \
                and (end >= self._woke_at + CATCH_UP_MAX_S or not router.readable()):
            self._catch_up_until = None  # caught up: what was in the socket is handled
            core.check_clients(end)  # (clients that left meanwhile: a send to them fails)
            self._carry_out()
            core.release(end)
            self._carry_out()
        return handled

    def _looked(self, now: float, waiting_s: float = 0.0) -> None:
        """The loop looked at the clock, after a wait of up to ``waiting_s`` since its last
        look: one much later than that was stopped (SIGSTOP) or starved meanwhile, and
        holds dispatch while it catches up (see STOPPED_GAP_S)."""
        last, self._awake_at = self._awake_at, now
        gap = 0.0 if last is None else now - last
        if gap > waiting_s + STOPPED_GAP_S:
            log.info("woke after %.2fs without a turn; reading what came meanwhile before "
                     "giving any of it to a worker", gap)
            self._catch_up_until = now + CATCH_UP_S
            self._woke_at = now
            self.core.hold()

    def _read_ahead(self, room: int) -> None:
        """Read up to ``room`` messages that wait in the socket, without waiting, and show
        each to the core (:attr:`BrokerCore.ahead`) before any is handled."""
        core, router, ahead = self.core, self.router, self._ahead
        curve = self.auth is not None
        user = ""
        for _ in range(room):
            if curve:
                frames, user = router.recv_with_user()
            else:
                frames = router.recv()
            if frames is None:
                return
            try:  # (the barrier: receive handles it, or says what was wrong)
                core.ahead(frames)
            except Exception:
                log.exception("error reading ahead a message from %s", frames[0].hex()[:20])
            ahead.append((frames, user))

    def _carry_out(self, write: bool = True) -> None:
        """Send what the core asks, in order; a send to a peer that is gone is reported
        to the core (which may ask for more). Unless ``write`` is False (a message of a
        pass: its sends go out with the pass's others, every FLUSH_EVERY messages and at
        its end, or before the router next waits), a router that writes when asked
        (plain) writes out what was sent."""
        core = self.core
        actions = core.take_actions()
        send = self.router.send
        while actions:
            lost = False
            for action in actions:  # a broker core asks for nothing but Send
                frames = action.frames
                try:
                    send(frames)
                except PeerGone:
                    core.lost(frames[0], time.monotonic())
                    lost = True
            actions = core.take_actions() if lost else []
        if write and self._writes_later:
            self.router.flush()

    def close(self) -> None:
        if self.monitor is not None and isinstance(self.router, ZmqRouter):
            self.router.sock.disable_monitor()
            self.monitor.close(linger=0)
        self.router.close()
        if self.auth is not None:
            self.auth.stop()

    def _reload(self) -> None:
        self._reload_requested = False
        if self.auth is None:
            log.warning("reload asked for, but CURVE is off: there are no allow-lists")
            return
        try:
            self.auth.reload()
        except ConfigError as exc:
            log.error("allow-lists not reloaded, the old ones stay: %s", exc)
            return
        self.core.purge_revoked(time.monotonic())
        self._carry_out()

    def _check_handshakes(self) -> None:
        now = time.monotonic()
        if self.monitor is not None and now >= self._next_monitor_check:
            self._next_monitor_check = now + self.config.heartbeat_interval_s
            from mdp.auth import log_handshake_failures  # (loaded with CURVE)

            if self._handshake_warnings is None:
                self._handshake_warnings = RateLimitedLog(logging.getLogger("mdp.auth"))
            log_handshake_failures(self.monitor, self._handshake_warnings, now)


def _came_alone(waited_s: float, timeout_ms: int) -> bool:
    """Whether a message the receive waited ``waited_s`` for came alone: the receive had
    to wait for it (a sync peer's message), but not for longer than it may (a process
    woken from SIGSTOP, or starved, finds its socket full: what came while it was stopped
    is read before any of it is handled). A receive told not to wait (``timeout_ms`` 0)
    waited for nothing, however long a loaded machine took to run it."""
    return timeout_ms > 0 and WAITED_S < waited_s <= timeout_ms / 1000 + WAIT_SLACK_S


# --- command line -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    config, level = parse_broker_args(argv)
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    try:
        broker = Broker(config)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    except (zmq.ZMQError, OSError) as exc:
        log.error("cannot bind %s: %s", " ".join(config.bind), exc)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: broker.stop())
    signal.signal(signal.SIGHUP, lambda *_: broker.reload_keys())
    broker.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
