"""The worker's decisions, without sockets (the way h11 and h2 keep a protocol apart from I/O).

:class:`WorkerCore` is a plain object. The shell (``mdp.worker``) feeds it events with the
time they happened: the link events of :mod:`mdp.actions` through ``handle``
(:class:`~mdp.actions.Opened`, :class:`~mdp.actions.Received`, :class:`~mdp.actions.Lost`,
:class:`~mdp.actions.Tick`), and the handler's own (``begin``, ``task_done``,
``task_long``, ``progress``, ``stop``); it carries out the actions ``take_actions`` gives
(:class:`~mdp.actions.Send`, :class:`~mdp.actions.Close`, and :class:`~mdp.actions.Open`,
which the shell answers with ``Opened`` once the socket is connecting). ``begin`` hands out
the next task to run; ``next_deadline`` says when a ``Tick`` is due. Every rule of
``docs/PROTOCOL.md`` section 2 is decided here or by a part the core owns, and the core is
the one place that sequences them: registration, WELCOME, BUSY/FREE only for tasks running
past ``busy_after``, BOUNCE, RECALL, the hold queue, PROGRESS for the running task, drain,
the time limit, backoff and re-registration, and plain 7/MDP with a local queue for
standard brokers, here; each link's heartbeat, silence and reconnect timers in
:class:`~mdp.linktimers.LinkTimers`; checked starts (a task its broker ASKed about starts
after a CHECK and its GO, and nothing starts after it before the GO of a second CHECK;
section 6) in :class:`~mdp.checkedstarts.CheckedStarts`; and catch-up after a stop (a shell
that comes back late reads what came meanwhile before it starts anything) in
:class:`~mdp.workercatchup.CatchUp`. On the path of an ordinary task the core reads those
parts' plain attributes rather than calling them: a task makes the calls it made before.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import compress, count
from operator import attrgetter
from typing import Any

from mdp import protocol as p
from mdp.actions import Action, Close, Event, Lost, Open, Opened, Received, Send, Tick
from mdp.checkedstarts import CHECK_WAIT_S, Check, CheckedStarts
from mdp.clock import Backoff
from mdp.errors import Expired, Overloaded, ProtocolError, WorkerTimeout
from mdp.linktimers import LinkTimers
from mdp.logs import RateLimitedLog
from mdp.workercatchup import IDLE_WAKE_S, STOPPED_GAP_S, CatchUp
from mdp.workerstate import Link, LinkMode, Phase, Task, Timing

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_STUCK = 3  # a handler ran past the time limit; the process must be replaced
EXIT_OUT_OF_MEMORY = 4  # a handler hit the address-space limit; start afresh

MAX_REFUSAL_CHARS = 300  # of a broker's reason for refusing us
_NO_META = b"\x80"  # an empty msgpack map: a TASK without a deadline
_HOLD = attrgetter("hold")  # of a Task
_CLOSED = LinkMode.CLOSED
_BIG_BODY = p.BIG_BODY
_MAX_BATCH = p.MAX_BATCH


def ready_meta(meta: dict[str, Any], prefetch: int, checks: bool = False) -> dict[str, Any]:
    """A DIPS worker's READY meta: who it is (``meta``), how many tasks it may hold beyond
    the one it runs, and the extensions it takes (TASKS, announced big tasks, a refusal
    told in a WELCOME, and with ``checks`` checked starts: mdp.protocol.checks)."""
    ready = {**meta, "prefetch": prefetch, "batch": True, "announce": True, "refusals": True}
    if checks:
        ready["checks"] = True
    return ready


@dataclass
class WorkerCore:
    """One worker's state and every decision it takes."""

    endpoints: Sequence[str]
    service: bytes
    meta: dict[str, Any]  # host, pid, version; READY adds prefetch
    timing: Timing = field(default_factory=Timing)
    max_requests: int = 0
    prefetch: int = 1
    max_message_bytes: int = p.MAX_MESSAGE_BYTES  # none larger can come: caps an announcement

    def __post_init__(self) -> None:
        t = self.timing
        self.links = [Link(ep, Backoff(t.reconnect_initial_s, t.reconnect_max_s))
                      for ep in self.endpoints]
        self.actions: list[Action] = []
        self.phase = Phase.SERVING
        self.exit_code = EXIT_OK
        self.current: Task | None = None
        self.long = False  # the current task has run past busy_after
        self.waiting: deque[Task] = deque()  # received, not started: in arrival order,
        # except that a task sent as to an idle worker goes before those held (_on_task)
        self.served = 0
        # the links some of whose state is looked at per task, kept apart so that a task
        # costs the same at 128 links (a Gearman worker of 64 functions) as at 2: those
        # with replies gathered, those told BUSY (owed a FREE), and each link's next
        # deadline, in a heap (LinkTimers)
        self._gathered: dict[int, None] = {}
        self._told_busy: dict[int, None] = {}
        self.timers = LinkTimers(self.links, t)
        # links whose broker refused our READY, and why (on_refused), till it welcomes us
        self.refused: dict[int, str] = {}
        self._warn = RateLimitedLog(log)
        self._ready = p.ready(self.service, ready_meta(self.meta, self.prefetch, checks=True))
        self.checks = CheckedStarts()  # the ASKs read and the CHECK waiting for its GO
        self.catchup = CatchUp()  # when the shell is late, and until when it catches up
        # tasks of one broker held at once (running and waiting) before one more is handed
        # back unrun (_on_task): a broker keeps to 1 + prefetch, but one that took our
        # tasks back while we were silent may give as many again when we speak
        self.hold_limit = 2 * (1 + self.prefetch)
        # the meta frame of the last lone task taken, with its ttl_ms and ck: the next one
        # with the same bytes is not decoded again (lone_task)
        self._lone_meta: tuple[bytes | None, int, bytes | None] = (None, 0, None)
        self._count_from = self.hold_limit - 1  # waiting tasks (any broker's) worth a count

    # --- output ----------------------------------------------------------------------

    def take_actions(self) -> list[Action]:
        """What the shell must do now, in order."""
        actions, self.actions = self.actions, []
        return actions

    def _send(self, i: int, frames: list[bytes], now: float) -> None:
        link = self.links[i]
        if link.gathered_keys:  # wire order: the replies gathered so far go first
            self._send_gathered(link, i, now)
        self.actions.append(Send(i, frames))
        link.sent_at = now

    def _send_gathered(self, link: Link, i: int, now: float) -> None:
        keys, bodies = link.take_gathered()
        self._gathered.pop(i, None)
        frames = (p.reply(keys[0], bodies) if len(keys) == 1 else p.replies(keys, bodies))
        self.actions.append(Send(i, frames))
        link.sent_at = now

    def flush_replies(self, now: float) -> None:
        """Send every gathered reply (the worker goes idle, or a task runs long)."""
        if self._gathered:
            for i in list(self._gathered):
                self._send_gathered(self.links[i], i, now)

    def _close(self, i: int, linger_ms: int) -> None:
        link = self.links[i]
        if link.mode is LinkMode.CLOSED:
            return
        if link.gathered_keys:
            self._send_gathered(link, i, 0.0)  # before the socket goes; lost if it is gone
        self._set_mode(i, LinkMode.CLOSED)
        self.actions.append(Close(i, linger_ms))
        self.waiting = deque(t for t in self.waiting if t.link != i)  # the broker requeues
        if self.checks.active:
            self.checks.forget_link(i)

    def _set_mode(self, i: int, mode: LinkMode) -> None:
        """The one place a link changes mode."""
        link = self.links[i]
        link.mode = mode
        self._set_told_busy(i, link, False)
        if mode is not LinkMode.DIPS:
            link.batch = link.progress = link.announce = False
            link.take_gathered()  # of a connection gone (_close sent them if it could)
            self._gathered.pop(i, None)
        if mode is LinkMode.CLOSED:
            link.task_until = 0.0  # what was on its way went with the connection
        self._schedule(i)  # its deadline may come earlier (the silence allowed differs)

    def _set_told_busy(self, i: int, link: Link, told: bool) -> None:
        """The one place a link's ``told_busy`` changes (BUSY sent and a FREE owed)."""
        link.told_busy = told
        if told:
            self._told_busy[i] = None
        else:
            self._told_busy.pop(i, None)

    def _set_phase(self, phase: Phase) -> None:
        """The one place the worker changes phase."""
        self.phase = phase
        self.timers.retrying = phase is Phase.SERVING  # (closed links are left closed)
        if phase is Phase.DRAINING:
            log.info("draining")
        elif phase is Phase.DONE:
            log.info("worker stopped after %d requests", self.served)

    def _bounce(self, task: Task, now: float, recalled: bool = False) -> None:
        """Hand a task back; an unasked bounce is sent after BUSY, and owes a FREE.

        ``recalled``: the broker asked for it (or knows we are leaving), so no BUSY."""
        link = self.links[task.link]
        if self.checks.active:
            self.checks.forget(task.link, task.key)
        if not recalled and not link.told_busy:
            self._send(task.link, p.busy(), now)
            self._set_told_busy(task.link, link, True)
        self._send(task.link, p.bounce(task.key), now)

    def _reply(self, task: Task, body: bytes, now: float) -> None:
        i = task.link
        link = self.links[i]
        if link.mode is _CLOSED or link.epoch != task.epoch:
            log.warning("broker %s went away; dropping a reply", link.endpoint)
            return
        size = len(body)
        if size >= _BIG_BODY:  # never gathered; announced where the broker takes it:
            if link.announce:  # the answer to a probe it sends meanwhile comes behind it
                self._send(i, p.sending(size), now)
        elif link.batch and task.dips and (self.waiting or link.gathered_keys) \
                and now - task.started_at < self.timing.reply_gather_s \
                and not (self.checks.active and self.checks.asked(i, task.key)):
            # with a backlog, a short task's reply is gathered: sent in one REPLIES when the
            # worker has nothing left to run, when a task runs past busy_after, before
            # anything else to that broker, or reply_gather_s on (a longer task's reply goes
            # at once: the next task may be as long, and gathering would hold this reply
            # until busy_after). A lone task's reply goes at once: batching is for
            # backlogs and costs a lone request nothing.
            keys = link.gathered_keys
            if not keys:
                link.gathered_since = now
                self._gathered[i] = None
            keys.append(task.key)
            link.gathered_bodies.append(body)
            link.gathered_bytes += size
            if (not self.waiting or len(keys) >= _MAX_BATCH
                    or link.gathered_bytes >= _BIG_BODY  # (else it should be announced)
                    or now - link.gathered_since >= self.timing.reply_gather_s):
                self._send_gathered(link, i, now)
            return
        self._send(i, p.reply(task.key, [body]), now)

    # --- events ----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Connect to every broker."""
        for i in range(len(self.links)):
            self.actions.append(Open(i))

    def connected(self, i: int, now: float) -> None:
        """The shell opened a new socket for link ``i``: register."""
        link = self.links[i]
        link.epoch += 1
        self._set_mode(i, LinkMode.STANDARD)
        link.heard_at = now
        self._send(i, self._ready, now)

    def lost(self, i: int, now: float) -> None:
        """The connection of link ``i`` dropped (the broker died or restarted): the shell
        saw it at once, so reconnect and register anew now, not after silence."""
        link = self.links[i]
        if link.mode is LinkMode.CLOSED:
            return
        log.info("connection to broker %s dropped; registering again", link.endpoint)
        self._close(i, 0)
        link.retry_at = now + link.backoff.next()
        self._schedule(i)

    def handle(self, event: Event, now: float) -> None:
        """Feed one link event (:mod:`mdp.actions`) that happened at ``now``."""
        if now > self.catchup.late_after:
            self._woke(now)
        match event:
            case Received(link, frames):
                self.receive(link, frames, now)
            case Opened(link):
                self.connected(link, now)
            case Lost(link):
                self.lost(link, now)
            case Tick():
                self.tick(now)

    def receive(self, i: int, frames: list[bytes], now: float) -> None:
        """A message arrived on link ``i``."""
        link = self.links[i]
        if link.mode is LinkMode.CLOSED:
            return
        link.heard_at = now
        try:
            message = p.parse_worker_inbound(frames)
        except ProtocolError as exc:
            self._warn(now, "dropped message from broker %s: %s", link.endpoint, exc)
            return
        match message:
            case p.BrokerTask():
                link.backoff.reset()
                if link.task_until:  # the task announced (if any) is this one: it came
                    link.task_until = 0.0
                    self._schedule(i)
                self._on_task(i, link, message, now)
            case p.BrokerTasks(tasks):
                link.backoff.reset()
                if link.task_until:
                    link.task_until = 0.0
                    self._schedule(i)
                if link.mode is not LinkMode.DIPS:
                    self._warn(now, "dropped TASKS from %s before its WELCOME", link.endpoint)
                    return
                for task in tasks:
                    self._on_task(i, link, task, now)
            case p.BrokerSignal(p.DISCONNECT):
                self._on_disconnect(i, link, now)
            case p.BrokerSignal(_, sending) if sending and link.mode is LinkMode.DIPS:
                # a big task follows (an announcement before WELCOME is a heartbeat: no
                # announced time is owed to a link that has not agreed to announcements)
                size = min(sending, self.max_message_bytes)
                link.task_until = p.sent_until(link.task_until, size, now,
                                               self.timing.link_floor)
            case p.BrokerSignal():
                link.backoff.reset()
                if link.mode is LinkMode.DIPS and (
                        now - link.sent_at >= self.timing.heartbeat_interval_s / 2
                        or self._holds(i)):
                    # answer the broker's heartbeat burst rather than waking it on our timer;
                    # and every probe of a broker whose task we hold (it is asking whether
                    # we froze: an answer at once lets it use a short --frozen-after)
                    self._send(i, p.signal(p.HEARTBEAT), now)
            case p.BrokerRecall(key):
                self._on_recall(i, key, now)
            case p.BrokerAsk(key) if link.mode is LinkMode.DIPS:
                self.checks.ask(i, key)
            case p.BrokerGo(key):
                self.checks.go(i, key)
            case p.BrokerWelcome():
                self._on_welcome(i, link, message, now)

    def _holds(self, i: int) -> bool:
        """Whether a task of link ``i`` runs or waits here."""
        current = self.current
        return (current is not None and current.link == i) or any(
            task.link == i for task in self.waiting)

    def _on_task(self, i: int, link: Link, msg: p.BrokerTask, now: float) -> None:
        deadline = None if msg.ttl_ms is None else now + msg.ttl_ms / 1000
        dips = link.mode is LinkMode.DIPS
        task = Task(i, link.epoch, msg.key, msg.body, deadline, msg.hold, dips, ck=msg.ck)
        if len(self.waiting) >= self._count_from and self._holding(i) >= self.hold_limit:
            self._refuse(task, now)  # (the count only once the backlog could be so long)
        elif dips and self.phase is not Phase.SERVING:
            self._bounce(task, now, recalled=True)  # it knows we are leaving: no BUSY
        elif dips and self.long and not msg.hold:
            self._bounce(task, now)
        elif dips and not msg.hold:
            # sent because that broker believes us idle: it runs before the tasks other
            # brokers asked us to hold, so it waits behind the current task only
            waiting = self.waiting
            if not waiting:
                waiting.append(task)  # the usual case: nothing else waits
            else:  # (the first held task's place, found in C: a TASKS adds many)
                waiting.insert(next(compress(count(), map(_HOLD, waiting)), len(waiting)),
                               task)
        else:
            self.waiting.append(task)

    def _holding(self, i: int) -> int:
        """Tasks of link ``i`` that run or wait here."""
        current = self.current
        return (current is not None and current.link == i) + sum(
            1 for task in self.waiting if task.link == i)

    def _refuse(self, task: Task, now: float) -> None:
        """A task past ``hold_limit`` from its broker: a DIPS broker gets it back unrun
        (BOUNCE, after BUSY: it gives it to another worker and sends this one nothing
        until FREE); a standard broker, which cannot take a task back, an ``overloaded``
        error for its client. Either way nothing of it is kept."""
        endpoint = self.links[task.link].endpoint
        self._warn(now, "broker %s sent a task past the %d this worker holds for a broker "
                   "(prefetch %d); %s", endpoint, self.hold_limit, self.prefetch,
                   "handed back" if task.dips else "answered overloaded")
        if task.dips:
            self._bounce(task, now)
        else:
            self._reply(task, p.error_body(Overloaded(
                f"the worker holds {self.hold_limit} requests of this broker already "
                f"(prefetch {self.prefetch}); it takes no more until it answers them")), now)

    def _on_disconnect(self, i: int, link: Link, now: float) -> None:
        # after a broker restart the first retry comes quickly; a broker that keeps
        # refusing us (full, or our service is invalid) is retried ever more slowly
        delay = link.backoff.next()
        log.info("broker %s said DISCONNECT; reconnecting in %.1fs", link.endpoint, delay)
        self._close(i, 0)
        link.retry_at = now + delay
        self._schedule(i)
        self._maybe_done(now)

    def _on_welcome(self, i: int, link: Link, welcome: p.BrokerWelcome, now: float) -> None:
        refused = welcome.meta.get("refused")
        if refused is not None:  # its DISCONNECT follows: the link stays as it is till then
            self.on_refused(i, str(refused)[:MAX_REFUSAL_CHARS], now)
            return  # (and the backoff goes on growing: no flood of READYs it refuses)
        link.backoff.reset()
        if link.mode is LinkMode.DIPS:
            return
        if self.refused:
            self.refused.pop(i, None)
        self._set_mode(i, LinkMode.DIPS)
        link.batch = welcome.meta.get("batch") is True
        link.progress = welcome.meta.get("progress") is True
        link.announce = welcome.meta.get("announce") is True
        log.debug("broker %s speaks DIPS%s", link.endpoint, " with batches" if link.batch else "")
        # tasks it sent before WELCOME came as standard REQUESTs and stay standard
        if self.phase is Phase.DRAINING:
            self._send(i, p.busy(draining=True), now)
        elif self.long and (self.current is None or self.current.link != i):
            self._send(i, p.busy(), now)
            self._set_told_busy(i, link, True)

    def on_refused(self, i: int, reason: str, now: float) -> None:
        """Broker ``i`` refused our READY and said why (a WELCOME whose meta says
        ``refused``, before its DISCONNECT; docs/PROTOCOL.md): kept in ``refused`` until
        that broker welcomes us, and logged. The link tries again as after any DISCONNECT,
        ever more slowly (the broker's limit may free up)."""
        self.refused[i] = reason
        self._warn(now, "broker %s refused this worker: %s; trying again",
                   self.links[i].endpoint, reason)

    def _on_recall(self, i: int, key: bytes, now: float) -> None:
        for task in self.waiting:
            if task.link == i and task.key == key:
                self.waiting.remove(task)
                self._bounce(task, now, recalled=True)
                return
        # started (its REPLY follows) or unknown: nothing to do

    def begin(self, now: float) -> Task | None:
        """The next task to run, or None when there is none (then the worker is idle, unless
        a CHECK waits for its GO: then the task it is about starts when the GO comes).

        Tasks whose client has stopped waiting are answered ``expired`` unworked.
        """
        if self.current is not None:
            return self.current
        catchup = self.catchup
        if now > catchup.late_after:
            self._woke(now)
        if now < catchup.until:
            return None  # woken from a stop: what came meanwhile is read first
        checks = self.checks
        active = checks.active  # (only ever false from here on, if false now)
        if active and checks.checking is not None:
            return None  # a CHECK waits for its GO: nothing starts meanwhile
        while self.waiting:
            task = self._next_waiting(now)
            if active and checks.must_check(task.link, task.key, task.deadline, now):
                self.waiting.appendleft(task)  # it starts when its GO comes (CheckedStarts.go)
                self.flush_replies(now)
                self._check(task, now)
                return None
            if self._start(task, now):
                catchup.late_after = math.inf  # (the handler may run for as long as it takes)
                if active:
                    checks.started()
                return task
        self.flush_replies(now)
        self._tell_free(now)
        self._maybe_done(now)
        return None

    def _start(self, task: Task, now: float) -> bool:
        """Make ``task`` (taken from ``waiting``) the current one; False, with it answered
        ``expired`` unworked, when its client has stopped waiting."""
        if task.deadline is not None and now >= task.deadline:
            if self.checks.active:
                self.checks.forget(task.link, task.key)
            self._reply(task, p.error_body(Expired("the client's deadline passed")), now)
            self._count(now)
            return False
        gathered = self._gathered
        if gathered and (len(gathered) > 1 or task.link not in gathered):
            # replies gathered for other brokers go before this task starts: should the
            # process die in it, no broker blames a task it had finished (exact losses)
            for i in [i for i in gathered if i != task.link]:
                self._send_gathered(self.links[i], i, now)
        task.started_at = now
        self.current = task
        self.long = False
        return True

    def _woke(self, now: float) -> None:
        """The shell came back long after the deadline it was given (see STOPPED_GAP_S)."""
        log.info("came back late (stopped, or starved of the CPU); reading what came "
                 "meanwhile before starting anything")
        self.catchup.woke(now)

    # --- checked starts (mdp.checkedstarts) ------------------------------------------------

    def _check(self, task: Task, now: float) -> None:
        """CHECK ``task`` with its broker; nothing starts before its GO (or CHECK_WAIT_S)."""
        self._send(task.link, p.check(task.key), now)
        self.checks.checked(task.link, task.key, now)

    def _checked(self, task: Task, now: float) -> None:
        """``task`` was ASKed and has been answered: CHECK again, so that nothing else
        starts before its broker has read the reply (on a pyzmq link a reply handed to
        libzmq's thread just before the next task starts could die with the process,
        and a suspect task started and never answered costs its request a loss)."""
        link = self.links[task.link]
        if link.mode is LinkMode.DIPS and link.epoch == task.epoch:
            self._check(task, now)

    def _check_late(self, checking: Check, now: float) -> None:
        """No GO within CHECK_WAIT_S for ``checking``: the broker is frozen or overloaded.
        A task not yet started goes back to it unrun (BOUNCE after BUSY); after an answered
        one, the worker goes on."""
        i, key, _ = checking
        self._warn(now, "broker %s did not answer a CHECK within %gs; going on without it",
                   self.links[i].endpoint, CHECK_WAIT_S)
        if not self.checks.asked(i, key):
            return
        for task in self.waiting:
            if task.link == i and task.key == key:
                self.waiting.remove(task)
                self._bounce(task, now)
                return
        self.checks.drop(i, key)

    def _next_waiting(self, now: float) -> Task:
        """Take the next task to start: the first waiting, unless replies are gathered for
        a broker and one of its tasks waits among those like the first (held or not): then
        that one, so that its reply joins them in one REPLIES rather than the gathered ones
        going out alone before a task of another broker starts. The first waiting task is
        passed over for ``reply_gather_s`` at most (and the task then in hand), whichever
        brokers' tasks pass it."""
        waiting = self.waiting
        first = waiting[0]
        links = self.links
        if len(links) > 1 and not links[first.link].gathered_keys \
                and now < first.passed_over + self.timing.reply_gather_s:
            for n, task in enumerate(waiting):
                if task.hold is not first.hold:
                    break
                if links[task.link].gathered_keys:
                    if first.passed_over == math.inf:
                        first.passed_over = now
                    del waiting[n]
                    return task
        return waiting.popleft()

    def lone_task(self, i: int, key: bytes, meta: bytes, body: list[bytes],
                  now: float) -> Task | None:
        """A TASK (``key``, its meta frame, ``body``) that came alone on link ``i`` while
        the worker is idle: the task, started now (what ``receive`` then ``begin`` would
        do, without their bookkeeping); None when it is anything but that plain case (a
        held task, an expired one, a link not yet DIPS, a worker with work in hand or
        draining): then the shell feeds the message to ``receive`` as usual."""
        catchup = self.catchup
        if self.current is not None or self.waiting or self.phase is not Phase.SERVING \
                or (self.checks.active and self.checks.holds_back(i, key)) \
                or now > catchup.late_after or now < catchup.until:
            return None
        link = self.links[i]
        if link.mode is not LinkMode.DIPS:
            return None
        ck = None
        if meta == _NO_META:
            deadline = None
        else:
            known = self._lone_meta
            if meta == known[0]:  # (a client's tasks of one timeout come with one meta)
                ttl, ck = known[1], known[2]
            else:
                try:
                    fields = p.unpack_meta(meta, "TASK")
                except ProtocolError:
                    return None
                got, ck = fields.get("ttl_ms"), fields.get("ck")
                if fields.get("hold") is not None or len(fields) > (1 if ck is None else 2) \
                        or type(got) is not int or not 0 < got < 2**63 or not (
                            ck is None or (type(ck) is bytes and 0 < len(ck) <= p.MAX_CK_BYTES)):
                    return None
                ttl = got
                self._lone_meta = (meta, ttl, ck)
            deadline = now + ttl / 1000
        link.heard_at = now
        link.backoff.reset()
        task = Task(i, link.epoch, key, body, deadline, False, True, now, ck=ck)
        self.current = task
        self.long = False
        catchup.late_after = math.inf
        return task

    def task_long(self, now: float) -> None:
        """The current task has run past busy_after: tell the other brokers, bounce."""
        if self.current is None or self.long:
            return
        if self.catchup.late_in_task(self.current.started_at, self.timing.busy_after_s, now):
            self._woke(now)  # (the sentinel takes over at busy_after unless stopped)
        self.long = True
        self.flush_replies(now)  # replies gathered behind this task wait no longer
        current = self.current.link
        for i, link in enumerate(self.links):
            if i != current and link.mode is LinkMode.DIPS and not link.told_busy:
                self._send(i, p.busy(), now)
                self._set_told_busy(i, link, True)
        kept: deque[Task] = deque()
        for task in self.waiting:
            if task.dips and not task.hold:
                self._bounce(task, now)
            else:
                kept.append(task)
        self.waiting = kept

    def task_done(self, body: bytes, now: float) -> None:
        """The current task finished with this reply body."""
        task = self.current
        if task is None:
            return  # abandoned after the time limit
        if now > self.catchup.late_after:
            self._woke(now)  # (stopped while the sentinel watched this task)
        self.current = None
        self.long = False
        self._reply(task, body, now)
        if self.checks.active and self.checks.answered(task.link, task.key):
            self._checked(task, now)
        self._count(now)

    def progress(self, task: Task, kind: str, num: int | None, den: int | None,
                 data: bytes | None, now: float) -> None:
        """The handler of ``task`` reports progress: PROGRESS to its broker, if the task
        is still the one running (never after its reply) and that broker's WELCOME offered
        to relay it; dropped otherwise."""
        if task is not self.current:
            return
        link = self.links[task.link]
        if (task.dips and link.progress and link.mode is LinkMode.DIPS
                and link.epoch == task.epoch):
            self._send(task.link, p.progress(task.key, kind, num, den, data), now)

    def _count(self, now: float) -> None:
        self.served += 1
        if self.max_requests and self.served >= self.max_requests and \
                self.phase is Phase.SERVING:
            log.info("served %d requests; recycling", self.served)
            self.stop(now)

    def _tell_free(self, now: float) -> None:
        if self.phase is not Phase.SERVING or not self._told_busy:
            return
        for i in list(self._told_busy):
            self._send(i, p.signal(p.FREE), now)
            self._set_told_busy(i, self.links[i], False)

    def stop(self, now: float, exit_code: int = EXIT_OK) -> None:
        """Drain: take nothing new, bounce what has not started, finish what runs."""
        if exit_code:
            self.exit_code = exit_code
        if self.phase is not Phase.SERVING:
            return
        self._set_phase(Phase.DRAINING)
        self.checks.clear()  # (what waited for its GO goes back too)
        kept: deque[Task] = deque()
        for task in self.waiting:
            if task.dips:
                self._send(task.link, p.bounce(task.key), now)
            else:
                kept.append(task)  # a standard broker cannot take it back: serve it
        self.waiting = kept
        holding = {t.link for t in (self.current, *self.waiting) if t is not None}
        for i, link in enumerate(self.links):
            if link.mode is LinkMode.CLOSED:
                continue
            if i not in holding:
                self._send(i, p.signal(p.DISCONNECT), now)
                self._close(i, self.timing.drain_linger_ms)
            elif link.mode is LinkMode.DIPS:  # it shows us as draining, sends nothing more
                self._send(i, p.busy(draining=True), now)
        self._maybe_done(now)

    def _maybe_done(self, now: float) -> None:
        if self.phase is not Phase.DRAINING or self.current is not None or self.waiting:
            return
        for i, link in enumerate(self.links):
            if link.mode is not LinkMode.CLOSED:
                self._send(i, p.signal(p.DISCONNECT), now)
                self._close(i, self.timing.drain_linger_ms)
        self._set_phase(Phase.DONE)

    # --- timers ----------------------------------------------------------------------

    def _schedule(self, i: int) -> None:
        """Link ``i``'s deadline may have come earlier (LinkTimers.schedule)."""
        self.timers.schedule(i, self.catchup.until)

    def next_deadline(self, now: float) -> float:
        """When ``tick`` is next due (the shell asks once or twice per task)."""
        catchup = self.catchup
        if now > catchup.late_after:
            self._woke(now)
        t = self.timing
        until = catchup.until
        deadline = min(now + t.heartbeat_interval_s, self.timers.earliest(until))
        if now < until < deadline:
            deadline = until
        if self.checks.active:
            go_by = self.checks.go_by()
            if go_by < deadline:
                deadline = go_by
        task = self.current
        if task is not None:
            limit = task.started_at + (t.time_limit_s if self.long else
                                       min(t.time_limit_s, t.busy_after_s))
            if limit < deadline:
                deadline = limit
        if task is None:
            wake = now + IDLE_WAKE_S
            if wake < deadline:
                deadline = wake
            # the shell waits no longer than this, unless stopped (CatchUp.late_after)
            catchup.late_after = deadline + STOPPED_GAP_S
        elif self.long:  # (past busy_after the sentinel watches: it asks)
            catchup.late_after = deadline + STOPPED_GAP_S
        return deadline

    def tick(self, now: float) -> None:
        """Run every timer that is due."""
        if self.phase is Phase.DONE:
            return
        t, timers = self.timing, self.timers
        for i in timers.due(now):
            link = self.links[i]
            if link.mode is LinkMode.CLOSED:
                if now >= link.retry_at and self.phase is Phase.SERVING:
                    self.actions.append(Open(i))
            elif now >= max(link.heard_at, link.task_until) + timers.expiry_s(link) \
                    and not self.catchup.catching_up(now):
                log.warning("broker %s silent for %.1fs; reconnecting", link.endpoint,
                            timers.expiry_s(link))
                self._close(i, 0)
                link.retry_at = now + link.backoff.next()
            elif now >= timers.heartbeat_due(link):
                self._send(i, p.signal(p.HEARTBEAT), now)
            self._schedule(i)
        if self.checks.active:
            checking = self.checks.overdue(now)
            if checking is not None:
                self._check_late(checking, now)
        task = self.current
        if task is None:
            return
        if now >= task.started_at + t.time_limit_s:
            self._abandon(task, now)
        elif not self.long and now >= task.started_at + t.busy_after_s:
            self.task_long(now)

    def _abandon(self, task: Task, now: float) -> None:
        """The time limit passed: answer with an error, give everything back, leave."""
        log.error("request ran past the %gs time limit; answering with an error and "
                  "recycling this process", self.timing.time_limit_s)
        self.current = None
        self._reply(task, p.error_body(WorkerTimeout(
            f"the request ran past the worker's {self.timing.time_limit_s:g}s time limit")), now)
        self.exit_code = EXIT_STUCK
        for waiting in self.waiting:
            if waiting.dips:
                self._send(waiting.link, p.bounce(waiting.key), now)
        self.waiting.clear()
        self._set_phase(Phase.DRAINING)
        self._maybe_done(now)
