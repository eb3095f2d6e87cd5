"""BrokerCore driven through its ordering rules and fault paths with an explicit clock.

No sockets: the test plays every peer, feeding the core the frames a ROUTER would see and
reading its Send actions with the peers' own parsers.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from mdp import protocol as p
from mdp.actions import Lost, Received, Send, Tick
from mdp.brokercore import BrokerCore
from mdp.config import BrokerConfig
from mdp.records import WorkerState
from mdp.status import BrokerStatus

SVC = b"echo"
W1, W2, W3 = b"\x00w1", b"\x00w2", b"\x00w3"
C1, C2, C3 = b"\x00c1", b"\x00c2", b"\x00c3"
BODY = msgpack.packb({"x": 1})


def make(role_of: Any = None, **config: Any) -> BrokerCore:
    config.setdefault("unknown_grace_s", 2.0)
    return BrokerCore(BrokerConfig(bind=["inproc://core"], **config), 0.0, role_of=role_of,
                      instance="one")


def out(core: BrokerCore) -> list[tuple[bytes, Any]]:
    """The core's Send actions as (peer, message parsed as that peer parses it)."""
    found = []
    for action in core.take_actions():
        assert isinstance(action, Send) and action.link == 0
        peer, frames = action.frames[0], action.frames[1:]
        if frames[1] == p.WORKER:
            found.append((peer, p.parse_worker_inbound(frames)))
        else:
            found.append((peer, p.parse_client_inbound(frames)))
    return found


def to(peer: bytes, messages: list[tuple[bytes, Any]]) -> list[Any]:
    return [m for who, m in messages if who == peer]


def feed(core: BrokerCore, peer: bytes, frames: list[bytes], now: float,
         user: str = "") -> list[tuple[bytes, Any]]:
    """A message that came alone."""
    core.handle(Received(0, [peer, *frames], user), now)
    return out(core)


def feed_more(core: BrokerCore, peer: bytes, frames: list[bytes],
              now: float) -> list[tuple[bytes, Any]]:
    """A message read in a pass with others (the pass ends with :func:`tick`)."""
    core.receive([peer, *frames], "", now, more=True)
    return out(core)


def ready(core: BrokerCore, worker: bytes, now: float = 0.0, *, dips: bool = True,
          batch: bool = False, prefetch: int = 0, refusals: bool = False,
          service: bytes = SVC) -> list[tuple[bytes, Any]]:
    """A worker registers; what the core sent (WELCOME, and tasks for it or others)."""
    meta: dict[str, Any] | None = None
    if dips:
        meta = {"pid": 1, "prefetch": prefetch}
        if batch:
            meta["batch"] = True
        if refusals:
            meta["refusals"] = True
    return feed(core, worker, p.ready(service, meta), now)


def submit(core: BrokerCore, client: bytes, rid: int, now: float, *, body: bytes = BODY,
           ttl_ms: int = 10_000, ck: bytes | None = None,
           service: bytes = SVC) -> list[tuple[bytes, Any]]:
    return feed(core, client, p.client_submit(service, rid, ttl_ms, [body], ck=ck), now)


def tick(core: BrokerCore, now: float) -> list[tuple[bytes, Any]]:
    core.handle(Tick(), now)
    return out(core)


def lost(core: BrokerCore, peer: bytes, now: float) -> list[tuple[bytes, Any]]:
    """A later send to ``peer`` (a probe, say) failed: it has gone since it got its task."""
    core.take_actions()  # the shell carries out a batch; a send in it fails
    core.handle(Lost(0, peer), now)
    return out(core)


def tasks_in(messages: list[Any]) -> list[p.BrokerTask]:
    found: list[p.BrokerTask] = []
    for m in messages:
        if isinstance(m, p.BrokerTasks):
            found += m.tasks
        elif isinstance(m, p.BrokerTask):
            found.append(m)
    return found


def result_of(messages: list[Any]) -> dict[int, Any]:
    """Request id -> decoded reply, over every RESULT in ``messages``."""
    found: dict[int, Any] = {}
    for m in messages:
        if isinstance(m, p.Results):
            found.update({rid: p.unpack(b) for rid, b in zip(m.rids, m.bodies, strict=True)})
        elif isinstance(m, p.Result) and m.rid is not None:
            found[m.rid] = p.unpack(m.body[0])
    return found


def error_of(messages: list[Any], rid: int) -> str:
    return str(result_of(messages)[rid]["error"]["code"])


# --- the lone request, handshakes ------------------------------------------------------------


def test_a_lone_request_goes_to_an_idle_worker_at_once_and_its_reply_back() -> None:
    core = make()
    ready(core, W1)
    [(_, task)] = submit(core, C1, 5, 0.1)  # no tick needed: nothing is gathered
    assert isinstance(task, p.BrokerTask) and task.body == [BODY] and task.ttl_ms == 10_000
    [(peer, reply)] = feed(core, W1, p.reply(task.key, [b"answer"]), 0.2)
    assert peer == C1 and reply == p.Result(SVC, [b"answer"], 5)
    assert core.next_deadline() == 1.0  # the heartbeat; no probe, nothing gathered


def test_dips_workers_are_welcomed_with_batches_and_progress() -> None:
    core = make()
    [(_, welcome)] = feed(core, W1, p.ready(SVC, {"pid": 1}), 0.0)
    assert isinstance(welcome, p.BrokerWelcome)
    assert welcome.meta["batch"] is True and welcome.meta["progress"] is True
    assert welcome.meta["announce"] is True
    assert welcome.meta["instance"] == "one"
    assert feed(core, W2, p.ready(SVC, None), 0.0) == []  # a standard worker: no answer


def test_hello_gives_the_next_standard_request_an_id_deadline_and_key() -> None:
    core = make()
    ready(core, W1)
    [(_, welcome)] = feed(core, C1, p.client_hello(p.First(41, 3000, 1, b"k")), 0.0)
    assert isinstance(welcome, p.Welcome)
    [(_, task)] = feed(core, C1, p.client_request(SVC, [BODY]), 0.5)
    assert isinstance(task, p.BrokerTask) and task.ttl_ms == 3000
    [(_, reply)] = feed(core, W1, p.reply(task.key, [b"r"]), 0.6)
    assert reply == p.Result(SVC, [b"r"], 41)
    [(_, plain)] = feed(core, C1, p.client_request(SVC, [BODY]), 0.7)  # "first" is used once
    [(_, reply)] = feed(core, W1, p.reply(plain.key, [b"r"]), 0.8)  # type: ignore[union-attr]
    assert reply == p.Result(SVC, [b"r"], None)


def test_a_standard_worker_gets_a_request_and_never_a_second_task() -> None:
    core = make()
    ready(core, W1, dips=False)
    [(_, first)] = submit(core, C1, 1, 0.0)
    assert isinstance(first, p.BrokerTask) and not first.dips
    assert submit(core, C1, 2, 0.0) == [] and tick(core, 0.0) == []
    [(_, answer), (_, second)] = feed(core, W1, p.reply(first.key, [b"a"]), 0.1)
    assert answer == p.Result(SVC, [b"a"], 1) and isinstance(second, p.BrokerTask)


def test_a_worker_the_broker_does_not_know_is_told_to_register_again() -> None:
    core = make()
    assert feed(core, W1, p.signal(p.HEARTBEAT), 0.0) == [
        (W1, p.BrokerSignal(p.DISCONNECT))]
    assert feed(core, W1, p.reply(b"k", [b"a"]), 0.0) == [(W1, p.BrokerSignal(p.DISCONNECT))]
    assert feed(core, W1, p.signal(p.DISCONNECT), 0.0) == []


@pytest.mark.parametrize("limit", ["max_services", "max_workers"])
def test_a_refused_dips_worker_is_told_why_a_standard_one_only_disconnect(limit: str) -> None:
    """A READY past --max-services or --max-workers: a DIPS worker that reads refusals
    hears why (WELCOME with "refused"), then DISCONNECT, so that a worker that proxies
    others (a Gearman door's) can tell them; a standard 7/MDP worker, and a DIPS worker
    that does not say it reads refusals (an older one, which would take the WELCOME for a
    handshake and reset its reconnect backoff), get DISCONNECT alone, as before."""
    core = make(**{limit: 1})
    ready(core, W1)
    other = b"other" if limit == "max_services" else SVC
    welcome, disconnect = to(W2, ready(core, W2, service=other, refusals=True))
    assert isinstance(welcome, p.BrokerWelcome)
    assert f"--{limit.replace('_', '-')}" in welcome.meta["refused"]
    assert disconnect == p.BrokerSignal(p.DISCONNECT)
    assert to(W3, ready(core, W3, service=other, dips=False)) == [p.BrokerSignal(p.DISCONNECT)]
    assert to(W3, ready(core, W3, service=other)) == [p.BrokerSignal(p.DISCONNECT)]
    assert list(core.dispatcher.workers) == [W1]


def test_a_malformed_request_is_answered_bad_request_and_other_garbage_dropped() -> None:
    core = make(max_frames=8)
    [(_, reply)] = feed(core, C1, p.client_request(SVC, [b"x"] * 9), 0.0)
    assert isinstance(reply, p.Result) and "--max-frames" in p.unpack(reply.body[0])[
        "error"]["message"]
    [(_, reply)] = feed(core, C1, p.client_request(b"no such!", [BODY]), 0.0)
    assert p.unpack(reply.body[0])["error"]["field"] == "service"  # type: ignore[union-attr]
    assert feed(core, C1, [b"", p.DIPS_CLIENT, p.SUBMIT, SVC, b"\xc1", BODY], 0.0) == []
    assert feed(core, C1, [b"nonsense"], 0.0) == []
    assert feed(core, W1, [b"", p.WORKER, b"\x7f"], 0.0) == []
    assert core.dispatcher.counters.dropped == 4


# --- wire order ------------------------------------------------------------------------------


def test_tasks_for_a_batch_worker_are_gathered_until_the_pass_ends() -> None:
    core = make()
    ready(core, W1, batch=True, prefetch=8)
    feed(core, C1, p.client_submit_batch(SVC, [1, 2, 3], 10_000, [b"a", b"b", b"c"]), 0.0)
    assert core.gathered  # the shell flushes when its pass ends
    [(_, tasks)] = tick(core, 0.0)
    assert isinstance(tasks, p.BrokerTasks)  # one message: the running task and one held
    assert [t.hold for t in tasks.tasks] == [False, True]


def test_tasks_gathered_for_a_worker_go_before_a_recall_to_it() -> None:
    core = make()
    ready(core, W1, batch=True, prefetch=8)
    ready(core, W2, dips=False)
    sent = feed(core, C1, p.client_submit_batch(SVC, [1, 2, 3], 10_000, [b"a", b"b", b"c"]),
                0.0)
    [w2_task] = tasks_in(to(W2, sent))  # a standard worker's task goes at once
    sent = tick(core, 0.0)
    w1_tasks = tasks_in(to(W1, sent))
    assert [t.hold for t in w1_tasks] == [False, True]
    # W2 answers: it is idle while W1 holds a task behind its own; W1 is asked for it back,
    # and a task for W1 gathered in the same pass must reach it before that RECALL
    sent = feed(core, W2, p.reply(w2_task.key, [b"r"]), 0.1)
    assert sent == [(C1, p.Result(SVC, [b"r"], 2)), (W1, p.BrokerRecall(w1_tasks[1].key))]


def test_a_task_gathered_in_the_pass_that_recalls_it_goes_before_the_recall() -> None:
    core = make()
    ready(core, W1, batch=True, prefetch=8)
    ready(core, W2, dips=False)
    sent = feed(core, C1, p.client_submit_batch(SVC, [1, 2, 3], 10_000, [b"a", b"b", b"c"]),
                0.0)
    [w2_task] = tasks_in(to(W2, sent))
    [first, _] = tasks_in(to(W1, tick(core, 0.0)))
    assert submit(core, C1, 4, 0.0) == []  # queued: W1 holds as much as it may
    tick(core, 0.0)
    # one pass: W1 answers its first (and is given request 4 to hold, gathered), then W2
    # answers and is idle with nothing queued, so request 4 is recalled from W1
    feed_more(core, W1, p.reply(first.key, [b"r1"]), 0.1)
    sent = feed_more(core, W2, p.reply(w2_task.key, [b"r2"]), 0.1)
    w1 = to(W1, sent)
    [fourth] = tasks_in(w1[:-1])
    assert fourth.body == [BODY] and w1[-1] == p.BrokerRecall(fourth.key)


def test_a_probe_to_a_worker_goes_after_the_tasks_gathered_for_it() -> None:
    core = make()
    ready(core, W1, batch=True, prefetch=8)
    [(_, task)] = submit(core, C1, 1, 0.0)  # came alone: sent at once
    assert isinstance(task, p.BrokerTask)
    feed_more(core, C1, p.client_submit(SVC, 2, 10_000, [BODY]), 0.3)  # held; gathered
    sent = tick(core, 0.3)  # the probe is due: the first task is 0.3 s old
    assert [type(m) for _, m in sent] == [p.BrokerTask, p.BrokerSignal]
    assert sent[1][1] == p.BrokerSignal(p.HEARTBEAT)


def test_a_reply_gathered_for_a_batch_goes_before_a_pong() -> None:
    """A PONG says which requests the broker no longer holds: a reply gathered but not yet
    sent must go first, or the client takes that request for lost."""
    core = make()
    ready(core, W1)
    feed(core, C1, p.client_hello(batch=True), 0.0)
    [(_, task)] = submit(core, C1, 7, 0.0)
    assert feed_more(core, W1, p.reply(task.key, [b"r"]), 0.1) == []  # gathered
    sent = feed_more(core, C1, p.client_ping([7]), 0.1)
    assert sent == [(C1, p.Result(SVC, [b"r"], 7)), (C1, p.Pong([7], "one"))]
    assert tick(core, 0.1) == []  # nothing left to send twice


def test_replies_for_a_batch_client_go_together_at_the_end_of_the_pass() -> None:
    core = make()
    ready(core, W1)
    ready(core, W2)
    feed(core, C1, p.client_hello(batch=True), 0.0)
    sent = feed(core, C1, p.client_submit_batch(SVC, [1, 2], 10_000, [b"a", b"b"]), 0.0)
    keys = {peer: tasks_in([m])[0].key for peer, m in sent}
    assert feed_more(core, W1, p.reply(keys[W1], [b"ra"]), 0.1) == []
    assert feed_more(core, W2, p.reply(keys[W2], [b"rb"]), 0.1) == []
    [(_, replies)] = tick(core, 0.1)
    assert replies == p.Results(SVC, [1, 2], [b"ra", b"rb"])


def test_pings_tell_which_requests_the_broker_holds() -> None:
    core = make()
    submit(core, C1, 5, 0.0)  # nobody offers echo yet: it waits (start-up grace)
    assert feed(core, C1, p.client_ping([5, 6]), 0.0) == [(C1, p.Pong([6], "one"))]


# --- faults: lost workers, poisoned requests --------------------------------------------------


def running_at(core: BrokerCore, worker: bytes, rid: int, now: float,
               body: bytes = BODY, client: bytes = C1) -> p.BrokerTask:
    """Request ``rid`` running at ``worker`` (the only idle one)."""
    [(peer, task)] = submit(core, client, rid, now, body=body)
    assert peer == worker and isinstance(task, p.BrokerTask)
    return task


def test_a_lost_workers_request_goes_to_another_worker() -> None:
    core = make()
    ready(core, W1)
    running_at(core, W1, 1, 0.0)
    ready(core, W2, 0.1)
    assert lost(core, W1, 0.5) == []  # a send to W1 failed: it is gone; its request waits
    assert 0.55 <= core.next_deadline() <= 0.75  # a short random pause, then goes out again
    [(peer, task)] = tick(core, 0.75)
    assert peer == W2 and isinstance(task, p.BrokerTask)
    [(_, reply)] = feed(core, W2, p.reply(task.key, [b"done"]), 0.6)
    assert reply == p.Result(SVC, [b"done"], 1)
    assert core.dispatcher.counters.requeued == 1 and core.dispatcher.counters.poisoned == 0


def test_a_poisoned_request_costs_two_workers_then_worker_lost_and_is_remembered() -> None:
    core = make()
    for worker in (W1, W2, W3):
        ready(core, worker)
    poison = msgpack.packb({"die": True})
    task = running_at(core, W1, 1, 0.0, poison)
    assert lost(core, W1, 0.3) == []
    [(peer, again)] = tick(core, 0.55)
    assert peer != W1 and tasks_in([again])[0].body == [poison]
    sent = lost(core, peer, 0.6)  # the second loss: given up at once
    assert sent == [(C1, sent[0][1])] and error_of([sent[0][1]], 1) == "worker_lost"
    message = result_of([sent[0][1]])[1]["error"]["message"]
    assert "'echo'" in message and "2 workers" in message
    assert core.dispatcher.counters.poisoned == 1
    status = core.status(0.7)
    assert status["counters"]["poisoned"] == 1
    assert status["services"]["echo"]["counters"]["poisoned"] == 1
    # a resend is refused at once: the same id, or the same body from anyone
    assert error_of([m for _, m in submit(core, C1, 1, 1.0)], 1) == "worker_lost"
    assert error_of([m for _, m in submit(core, C2, 9, 1.0, body=poison)], 9) == "worker_lost"
    # an ordinary request still goes to the last worker; the memory fades
    assert tasks_in([m for _, m in submit(core, C2, 10, 1.0)])
    assert submit(core, C3, 11, 61.0, body=poison) == []  # queued behind request 10
    assert core.dispatcher.holds(C3, 11) and task.body == [poison]


def test_every_task_a_lost_worker_held_costs_a_loss_and_then_waits_for_an_idle_worker() -> None:
    """A worker that gathers replies may have finished its first task and started the one
    held behind it when it died: both are charged, and neither is ever held again."""
    core = make(max_worker_losses=2)
    ready(core, W1, prefetch=4)
    ready(core, W2, prefetch=4)
    running_at(core, W1, 1, 0.0)
    [(_, other)] = submit(core, C1, 2, 0.0)  # W2 runs it
    [(_, held)] = submit(core, C1, 3, 0.0)  # no worker idle: held behind request 1
    assert isinstance(held, p.BrokerTask) and held.hold and held.body == [BODY]
    assert lost(core, W1, 0.5) == []
    requests = {r.rid: r for r in core.dispatcher.held.values()}
    assert requests[1].losses == 1 and requests[3].losses == 1 and requests[2].losses == 0
    # back in the queue, but W2 is busy: not held behind it (W2, quiet since 0.0, goes
    # silent here: its task is taken back and RECALLed, and waits for it to speak)
    assert tasks_in(to(W2, tick(core, 0.8))) == []
    sent = feed(core, W2, p.reply(other.key, [b"r"]), 0.9)  # type: ignore[union-attr]
    assert [t.hold for t in tasks_in(to(W2, sent))] == [False]  # one, run as its own


def test_a_task_whose_send_failed_never_reached_the_worker_and_costs_nothing() -> None:
    core = make(max_worker_losses=1)
    ready(core, W1)
    [(_, task)] = submit(core, C1, 1, 0.0)  # the shell takes this batch...
    assert isinstance(task, p.BrokerTask)
    core.handle(Lost(0, W1), 0.0)  # ...and the send of that very task fails: no loss
    assert out(core) == []
    assert core.dispatcher.counters.poisoned == 0 and len(core.dispatcher.services[SVC].queue) == 1


def test_a_worker_leaving_with_disconnect_costs_its_request_nothing() -> None:
    core = make(max_worker_losses=1)
    ready(core, W1)
    running_at(core, W1, 1, 0.0)
    ready(core, W2, 0.1)
    [(peer, task)] = feed(core, W1, p.signal(p.DISCONNECT), 0.2)
    assert peer == W2 and isinstance(task, p.BrokerTask)


def test_a_silent_standard_worker_holding_a_task_is_a_loss_a_dips_one_is_not_expired() -> None:
    core = make(max_worker_losses=1)
    ready(core, W1, dips=False)
    running_at(core, W1, 1, 0.0)
    ready(core, W2, 0.0)
    running_at(core, W2, 2, 0.0)
    for now in (1.0, 2.0):
        tick(core, now)
        feed(core, W2, p.signal(p.HEARTBEAT), now)  # W2 lives (its handler runs long)
    sent = tick(core, 3.0)  # W1 was silent for 3 heartbeats; W2 holds a task: exempt
    assert (W1, p.BrokerSignal(p.DISCONNECT)) in sent
    assert error_of([m for _, m in sent], 1) == "worker_lost"
    assert W2 in core.dispatcher.workers and W1 not in core.dispatcher.workers


def test_workers_holding_a_task_are_probed_idle_ones_get_the_heartbeat_burst() -> None:
    core = make()
    ready(core, W1)
    ready(core, W2)
    running_at(core, W1, 1, 0.0)
    assert core.next_deadline() == pytest.approx(0.2)
    assert tick(core, 0.1) == []
    assert tick(core, 0.25) == [(W1, p.BrokerSignal(p.HEARTBEAT))]
    feed(core, W1, p.signal(p.HEARTBEAT), 0.3)  # its sentinel answers while the task runs
    burst = tick(core, 1.0)
    assert sorted(peer for peer, _ in burst) == [W1, W2]


# --- coalescing -----------------------------------------------------------------------------


def test_identical_requests_are_worked_once_and_everyone_gets_the_reply() -> None:
    core = make()
    ready(core, W1)
    ready(core, W2)
    [(_, task)] = submit(core, C1, 1, 0.0, ck=b"key")
    assert task.ck == b"key"  # (a Gearman worker behind the door sees it as the unique id)
    assert submit(core, C2, 7, 0.1, ck=b"key", ttl_ms=20_000) == []  # attached
    assert submit(core, C1, 2, 0.1, ck=b"other") != []  # another key: its own task
    assert feed(core, C2, p.client_ping([7]), 0.2) == [(C2, p.Pong([], "one"))]
    sent = feed(core, W1, p.reply(task.key, [b"shared"]), 0.3)  # type: ignore[union-attr]
    assert sorted(sent) == [(C1, p.Result(SVC, [b"shared"], 1)),
                            (C2, p.Result(SVC, [b"shared"], 7))]
    assert core.dispatcher.counters.coalesced == 1
    assert core.status(0.3)["services"]["echo"]["counters"]["coalesced"] == 1
    [(_, fresh)] = submit(core, C3, 3, 0.4, ck=b"key")  # the first is answered: a new task
    assert isinstance(fresh, p.BrokerTask)


def test_requests_gathered_into_one_tasks_carry_their_coalescing_keys() -> None:
    core = make()
    ready(core, W1, batch=True, prefetch=4)
    feed_more(core, C1, p.client_submit(SVC, 1, 10_000, [b"a"], ck=b"k1"), 0.0)
    feed_more(core, C1, p.client_submit(SVC, 2, 10_000, [b"b"]), 0.0)
    [(peer, tasks)] = tick(core, 0.0)
    assert peer == W1 and isinstance(tasks, p.BrokerTasks)
    assert [task.ck for task in tasks.tasks] == [b"k1", None]


def test_a_shared_request_lives_until_its_latest_caller_gives_up() -> None:
    core = make()
    submit(core, C1, 1, 0.0, ck=b"key", ttl_ms=1_500)  # queued: no worker yet
    submit(core, C2, 2, 0.5, ck=b"key", ttl_ms=5_000)
    sent = tick(core, 1.6)  # C1's deadline passed: it is told, the request goes on for C2
    assert error_of(to(C1, sent), 1) == "expired"
    [task] = tasks_in(to(W1, ready(core, W1, 2.0)))
    assert task.ttl_ms == 3500  # the latest caller's deadline
    sent = feed(core, W1, p.reply(task.key, [b"r"]), 2.1)
    assert sent == [(C2, p.Result(SVC, [b"r"], 2))]


def test_a_task_found_expired_by_its_worker_runs_again_for_a_caller_that_came_later() -> None:
    core = make()
    ready(core, W1)
    [(_, task)] = submit(core, C1, 1, 0.0, ck=b"key", ttl_ms=1_000)
    submit(core, C2, 2, 0.9, ck=b"key", ttl_ms=5_000)
    expired = [p.error_body(p_errors_expired())]
    sent = feed(core, W1, p.reply(task.key, expired), 1.1)  # type: ignore[union-attr]
    [again] = tasks_in(to(W1, sent))
    assert again.body == [BODY] and again.ttl_ms == 4800


def p_errors_expired() -> Any:
    from mdp.errors import Expired

    return Expired("too late")


def test_a_poisoned_shared_request_answers_every_caller_worker_lost() -> None:
    core = make(max_worker_losses=1)
    ready(core, W1)
    running_at(core, W1, 1, 0.0)
    feed(core, C2, p.client_submit(SVC, 2, 10_000, [BODY], ck=None), 0.0)  # queued, no ck
    core2 = make(max_worker_losses=1)
    ready(core2, W1)
    submit(core2, C1, 1, 0.0, ck=b"k")
    submit(core2, C2, 2, 0.0, ck=b"k")
    sent = lost(core2, W1, 0.5)
    assert error_of(to(C1, sent), 1) == "worker_lost"
    assert error_of(to(C2, sent), 2) == "worker_lost"


# --- progress ------------------------------------------------------------------------------


def test_progress_goes_to_callers_that_asked_and_never_after_the_reply() -> None:
    core = make()
    ready(core, W1)
    feed(core, C1, p.client_hello(progress=True, batch=True), 0.0)
    feed(core, C2, p.client_hello(), 0.0)
    [(_, task)] = submit(core, C1, 1, 0.0, ck=b"k")
    submit(core, C2, 2, 0.0, ck=b"k")
    key = task.key  # type: ignore[union-attr]
    sent = feed(core, W1, p.progress(key, "status", 3, 10), 0.1)
    assert sent == [(C1, p.RequestProgress(SVC, 1, "status", 3, 10))]  # C2 did not ask
    sent = feed(core, W1, p.progress(key, "data", data=b"chunk"), 0.1)
    assert sent == [(C1, p.RequestProgress(SVC, 1, "data", data=b"chunk"))]
    sent = feed_more(core, W1, p.reply(key, [b"r"]), 0.2)  # C1's is gathered: it batches
    assert sent == [(C2, p.Result(SVC, [b"r"], 2))]
    assert feed_more(core, W1, p.progress(key, "status", 10, 10), 0.2) == []  # too late
    assert tick(core, 0.2) == [(C1, p.Result(SVC, [b"r"], 1))]


def test_progress_keeps_its_place_behind_a_reply_gathered_for_the_same_client() -> None:
    core = make()
    ready(core, W1)
    ready(core, W2)
    feed(core, C1, p.client_hello(progress=True, batch=True), 0.0)
    [(_, first)] = submit(core, C1, 1, 0.0)
    [(_, second)] = submit(core, C1, 2, 0.0)
    feed_more(core, W1, p.reply(first.key, [b"r1"]), 0.1)  # type: ignore[union-attr]
    sent = feed_more(core, W2, p.progress(second.key, "status", 1, 2), 0.1)  # type: ignore[union-attr]
    assert sent == [(C1, p.Result(SVC, [b"r1"], 1)),
                    (C1, p.RequestProgress(SVC, 2, "status", 1, 2))]


# --- unknown services ------------------------------------------------------------------------


def test_an_unknown_service_is_answered_at_once_after_the_start_up_grace() -> None:
    core = make(unknown_grace_s=2.0)
    ready(core, W1, service=b"ecard")
    assert submit(core, C1, 1, 0.5, service=b"nosuch") == []  # workers may still register
    sent = submit(core, C1, 2, 2.5, service=b"nosuch")
    message = result_of(to(C1, sent))[2]["error"]
    assert message["code"] == "unknown_service" and "ecard" in message["message"]
    assert error_of(to(C1, tick(core, 2.6)), 1) == "unknown_service"  # its grace is over


def test_a_service_that_had_workers_keeps_its_grace() -> None:
    core = make(unknown_grace_s=2.0)
    ready(core, W1, 0.0)
    feed(core, W1, p.signal(p.DISCONNECT), 5.0)  # restarting
    assert submit(core, C1, 1, 5.5) == []
    assert tasks_in(to(W2, ready(core, W2, 6.0)))  # back: the request is served


# --- CURVE roles -----------------------------------------------------------------------------


def test_under_curve_only_client_keys_request_and_only_worker_keys_serve() -> None:
    roles = {"C": "client", "W": "worker"}
    core = make(role_of=lambda user: roles.get(user, ""))
    feed(core, W1, p.ready(SVC, {"pid": 1}), 0.0, user="C")
    assert not core.dispatcher.workers
    sent = feed(core, W2, p.client_submit(SVC, 1, 1000, [BODY]), 0.0, user="W")
    assert error_of(to(W2, sent), 1) == "bad_request"
    feed(core, W1, p.ready(SVC, {"pid": 1}), 0.0, user="W")
    [(peer, task)] = feed(core, C1, p.client_submit(SVC, 2, 1000, [BODY]), 0.0, user="C")
    assert peer == W1
    del roles["C"]  # revoked while its request runs: no reply
    assert feed(core, W1, p.reply(task.key, [b"r"]), 0.1) == []  # type: ignore[union-attr]
    del roles["W"]
    core.purge_revoked(0.2)
    assert out(core) == [(W1, p.BrokerSignal(p.DISCONNECT))] and not core.dispatcher.workers


def test_a_send_to_a_gone_client_counts_as_undeliverable() -> None:
    core = make()
    lost(core, C1, 0.0)
    assert core.dispatcher.counters.undeliverable == 1


# --- silent workers: frozen, or stuck without the GIL -----------------------------------------


def silent_at(core: BrokerCore, now: float) -> list[tuple[bytes, Any]]:
    """The probes run at ``now`` (W1 has answered none)."""
    return tick(core, now)


def test_a_worker_silent_while_it_runs_a_task_has_it_taken_to_another() -> None:
    core = make()
    ready(core, W1)
    first = running_at(core, W1, 1, 0.0)
    ready(core, W2, 0.1)
    assert tick(core, 0.5) == [(W1, p.BrokerSignal(p.HEARTBEAT))]  # probed, not yet silent
    sent = silent_at(core, 0.85)
    [again] = tasks_in(to(W2, sent))
    assert again.body == first.body
    assert core.status(0.9)["services"]["echo"]["workers"][0]["state"] == "silent"
    [(_, reply)] = feed(core, W2, p.reply(again.key, [b"from W2"]), 1.0)
    assert reply == p.Result(SVC, [b"from W2"], 1)
    # W1 wakes up: its late reply is dropped quietly, and it gets tasks again
    assert feed(core, W1, p.reply(first.key, [b"late"]), 1.1) == []
    assert core.dispatcher.counters.dropped == 0
    assert core.dispatcher.workers[W1].state is WorkerState.IDLE


def test_the_verdict_of_silence_comes_on_time_not_at_the_next_probe() -> None:
    """Given its task at 0.05 s and silent since, a worker is frozen at 0.85 s
    (--frozen-after 0.8 s), not at the probe after that (1.0 s)."""
    core = make()
    ready(core, W1)
    running_at(core, W1, 1, 0.05)
    ready(core, W2, 0.1)
    for now in (0.2, 0.4, 0.6, 0.8):
        assert core.next_deadline() <= now + 1e-9
        assert tasks_in(to(W2, tick(core, now))) == []
    assert 0.85 <= core.next_deadline() < 0.86
    sent = tick(core, core.next_deadline())
    assert core.dispatcher.workers[W1].silent and len(tasks_in(to(W2, sent))) == 1


def test_a_late_reply_of_a_silent_worker_answers_when_it_comes_first() -> None:
    core = make()
    ready(core, W1)
    first = running_at(core, W1, 1, 0.0)
    ready(core, W2, 0.1)
    [again] = tasks_in(to(W2, silent_at(core, 0.85)))
    [(_, reply)] = feed(core, W1, p.reply(first.key, [b"late"]), 0.9)
    assert reply == p.Result(SVC, [b"late"], 1)
    assert feed(core, W2, p.reply(again.key, [b"second"]), 1.0) == []  # not twice
    assert core.dispatcher.counters.dropped == 0 and core.dispatcher.counters.replies == 1


def test_a_request_is_taken_back_for_silence_once_then_waits() -> None:
    core = make()
    for worker in (W1, W2, W3):
        ready(core, worker)
    running_at(core, W1, 1, 0.0)
    [again] = tasks_in([m for _, m in silent_at(core, 0.85)])
    holder = next(w for w in (W2, W3) if w in core.dispatcher.busy)
    sent = silent_at(core, 1.9)  # its second worker is silent too: it stays there
    assert tasks_in([m for _, m in sent]) == [] and holder in core.dispatcher.busy
    assert core.dispatcher.workers[holder].silent and again.key in core.dispatcher.workers[
        holder].tasks


def test_a_silent_worker_lost_costs_its_request_a_loss_wherever_it_is_now() -> None:
    core = make(max_worker_losses=2)
    ready(core, W1)
    running_at(core, W1, 1, 0.0)
    ready(core, W2, 0.1)
    [again] = tasks_in(to(W2, silent_at(core, 0.85)))
    assert lost(core, W2, 1.0) == []  # W2 died running it: one loss; back in the queue
    sent = lost(core, W1, 3.5)  # the silent W1's connection dropped (ZMTP): the second
    assert error_of(to(C1, sent), 1) == "worker_lost"
    ready(core, W3, 3.6)
    assert tasks_in(to(W3, out(core))) == []  # the void copy in the queue is never run
    assert again.body == [BODY]


def test_a_silent_worker_is_not_forgotten_for_silence_and_speaks_again() -> None:
    core = make()
    ready(core, W1)
    running_at(core, W1, 1, 0.0)
    silent_at(core, 0.85)
    for now in (1.0, 2.0, 3.0, 4.0):
        tick(core, now)
    assert W1 in core.dispatcher.workers  # its handler may just hold the GIL
    sent = feed(core, W1, p.signal(p.HEARTBEAT), 4.1)
    assert not core.dispatcher.workers[W1].silent
    assert tasks_in(to(W1, sent))  # its request, back in the queue, goes to it again


def test_a_worker_that_answers_probes_is_never_taken_for_silent() -> None:
    core = make()
    ready(core, W1)
    running_at(core, W1, 1, 0.0)
    ready(core, W2)
    now = 0.0
    while now < 5.0:
        now += 0.2
        sent = tick(core, now)
        assert tasks_in(to(W2, sent)) == []
        if round(now / 0.2) % 3 == 0:  # it answers every third probe (0.6 s apart)
            feed(core, W1, p.signal(p.HEARTBEAT), now)


def test_a_big_task_is_announced_to_a_worker_that_takes_it_and_sent_alone() -> None:
    """The broker's heartbeats wait behind the task's bytes: a worker whose READY says
    "announce" is told their count first (else it would take the broker for silent)."""
    core = make()
    feed(core, W1, p.ready(SVC, {"pid": 1, "batch": True, "announce": True}), 0.0)
    ready(core, W2, 0.0, batch=True)  # an older DIPS worker: no announcement
    big = msgpack.packb({"image": b"x" * 2_000_000})
    for rid, worker in ((1, W1), (2, W2)):
        sent = to(worker, feed_more(core, C1, p.client_submit(SVC, rid, 10_000, [big]), 0.1))
        sent += to(worker, tick(core, 0.1))
        announce = [p.BrokerSignal(p.HEARTBEAT, len(big))] if worker == W1 else []
        assert [m if isinstance(m, p.BrokerSignal) else type(m) for m in sent] == [
            *announce, p.BrokerTask]


def test_big_tasks_answered_end_their_hold_so_a_frozen_worker_is_still_found_at_once() -> None:
    """The hold for big tasks ends when the worker answers the last of them: sixty 5 MB
    tasks answered in 40 ms each leave nothing that would shield a later freeze."""
    core = make()
    ready(core, W1)
    big = msgpack.packb({"image": b"x" * 5_000_000})
    now = 0.0
    for rid in range(1, 61):
        task = running_at(core, W1, rid, now, body=big)
        now += 0.04
        feed(core, W1, p.reply(task.key, [b"ok"]), now)
    running_at(core, W1, 99, now)  # a small one; then it freezes
    ready(core, W2, now)
    sent = tick(core, now + 0.85)
    assert core.dispatcher.workers[W1].silent and len(tasks_in(to(W2, sent))) == 1


def test_a_reply_to_a_task_sent_before_a_big_one_does_not_end_its_hold() -> None:
    core = make()
    ready(core, W1, prefetch=1)
    small = running_at(core, W1, 1, 0.0)
    ready(core, W2, 0.0)
    running_at(core, W2, 2, 0.0)  # W2 busy: the big task is held at W1
    big = msgpack.packb({"image": b"x" * 5_000_000})
    assert [peer for peer, _ in submit(core, C1, 3, 0.0, body=big)] == [W1]
    feed(core, W1, p.reply(small.key, [b"ok"]), 0.1)  # the big one may still be on its way
    for now in (0.3, 0.5, 0.7, 0.9):
        feed(core, W2, p.signal(p.HEARTBEAT), now)
        tick(core, now)
    tick(core, 0.95)
    assert not core.dispatcher.workers[W1].silent


def test_a_bounce_ends_the_hold_of_the_big_task_it_hands_back() -> None:
    core = make()
    ready(core, W1)
    big = msgpack.packb({"image": b"x" * 5_000_000})
    task = running_at(core, W1, 1, 0.0, body=big)
    feed(core, W1, p.busy(), 0.05)
    feed(core, W1, p.bounce(task.key), 0.05)  # it had it all: back, unworked
    assert core.dispatcher.workers[W1].tasks_until == 0.0


def test_an_announced_reply_ends_its_hold_when_it_comes() -> None:
    core = make()
    ready(core, W1)
    for rid in range(1, 31):  # thirty announced 20 MB replies, each there at once
        task = running_at(core, W1, rid, rid * 0.01)
        feed(core, W1, p.sending(20_000_000), rid * 0.01)
        feed(core, W1, p.reply(task.key, [b"x"]), rid * 0.01 + 0.002)
    running_at(core, W1, 99, 0.4)
    ready(core, W2, 0.4)
    sent = tick(core, 0.4 + 0.85)
    assert core.dispatcher.workers[W1].silent and len(tasks_in(to(W2, sent))) == 1


def test_an_announced_reply_is_held_for_at_most_the_largest_message() -> None:
    core = make(max_message_bytes=2_000_000)
    ready(core, W1)
    running_at(core, W1, 1, 0.0)
    ready(core, W2, 0.0)
    feed(core, W1, p.sending(p.MAX_ANNOUNCED), 0.1)  # nothing that big can come
    sent = tick(core, 0.1 + 0.2 + 0.85)  # 2 MB at the floor, then silent as any other
    assert core.dispatcher.workers[W1].silent and len(tasks_in(to(W2, sent))) == 1


def test_a_queued_big_task_given_when_its_worker_frees_holds_the_probes_too() -> None:
    core = make()
    ready(core, W1)
    first = running_at(core, W1, 1, 0.0)
    big = msgpack.packb({"image": b"x" * 5_000_000})
    assert submit(core, C1, 2, 0.0, body=big) == []  # waits: no idle worker
    [(peer, _)] = feed(core, W1, p.reply(first.key, [b"ok"]), 0.1)[1:]  # given to W1 now
    assert peer == W1
    tick(core, 0.95)  # past --frozen-after, not past its bytes at the floor
    assert not core.dispatcher.workers[W1].silent
    tick(core, 0.1 + len(big) / p.DEFAULT_LINK_FLOOR + 0.85)
    assert core.dispatcher.workers[W1].silent


def test_a_big_task_to_a_batch_worker_that_takes_no_announcement_goes_alone() -> None:
    core = make()
    ready(core, W1, batch=True, prefetch=8)  # an older DIPS worker: TASKS, no "announce"
    big = msgpack.packb({"image": b"x" * 2_000_000})
    sent = feed(core, C1, p.client_submit_batch(SVC, [1, 2], 10_000, [big, big]), 0.0)
    sent += tick(core, 0.0)
    assert [type(m) for _, m in sent] == [p.BrokerTask, p.BrokerTask]


def test_batches_go_once_they_hold_a_mebibyte_and_big_bodies_alone() -> None:
    """No unannounced message is big: gathered TASKS and RESULTs go out as soon as they
    hold BIG_BODY bytes, and a big body is never gathered."""
    core = make()
    for worker in (W1, W2, W3, b"\x00w4"):
        ready(core, worker, batch=True, prefetch=8)
    feed(core, C1, p.client_hello(batch=True), 0.0)
    bodies = [b"t" * 700_000] * 8
    sent = feed(core, C1, p.client_submit_batch(SVC, list(range(1, 9)), 10_000, bodies), 0.0)
    sent += tick(core, 0.0)
    assert all(sum(len(t.body[0]) for t in tasks_in([m])) < 2 * p.BIG_BODY for _, m in sent)
    keys = {t.key: peer for peer, m in sent for t in tasks_in([m])}
    out_: list[tuple[bytes, Any]] = []
    for n, (key, peer) in enumerate(keys.items()):
        reply = b"r" * (2_000_000 if n == 0 else 400_000)
        out_ += feed_more(core, peer, p.reply(key, [reply]), 0.1)
    out_ += tick(core, 0.1)
    results = [m for peer, m in out_ if peer == C1 and isinstance(m, p.Result | p.Results)]
    rids = [rid for m in results for rid in (m.rids if isinstance(m, p.Results) else [m.rid])]
    sizes = [sum(map(len, m.bodies)) if isinstance(m, p.Results) else len(m.body[0])
             for m in results]
    assert sorted(rids) == list(range(1, 9)) and len(results) >= 3  # (not one of 4.8 MB)
    assert sorted(sizes)[-1] == 2_000_000 and sorted(sizes)[-2] < 2 * p.BIG_BODY
    assert [m for peer, m in out_ if isinstance(m, p.Pong)] == [
        p.Pong([], core.instance, 2_000_000)]  # the big one, announced


@pytest.mark.parametrize("floor", [p.DEFAULT_LINK_FLOOR, 2_000_000, 1_000_000])
def test_a_worker_is_not_silent_while_its_big_task_may_still_be_on_the_way(floor: int) -> None:
    """A probe goes behind the task's bytes: a worker taking a 5 MB upload over a slow link
    cannot answer before they may have gone at the link floor (0.5 s at the default 10 MB/s,
    5 s at 1 MB/s, within the request's 10 s); then it is taken for frozen as ever."""
    core = make(link_floor=floor)
    ready(core, W1)
    big = msgpack.packb({"image": b"x" * 5_000_000})
    running_at(core, W1, 1, 0.0, body=big)
    due = len(big) / floor
    ready(core, W2, due)  # (an idle worker that came lately: it has not expired)
    assert tasks_in(to(W2, tick(core, due + 0.5))) == []  # under --frozen-after past it
    assert not core.dispatcher.workers[W1].silent
    sent = tick(core, due + 0.85)  # then silent as any other
    assert core.dispatcher.workers[W1].silent and len(tasks_in(to(W2, sent))) == 1



@pytest.mark.parametrize("floor", [p.DEFAULT_LINK_FLOOR, 2_000_000, 500_000])
def test_a_lower_link_floor_holds_an_announced_replys_probes_longer_in_proportion(
        floor: int) -> None:
    core = make(link_floor=floor)
    ready(core, W1)
    running_at(core, W1, 1, 0.0)
    feed(core, W1, p.sending(2_000_000), 0.1)
    due = 0.1 + 2_000_000 / floor  # 0.3 s at the default, 4.1 s at 500 KB/s
    ready(core, W2, due)
    assert tasks_in(to(W2, tick(core, due + 0.5))) == []
    assert not core.dispatcher.workers[W1].silent
    sent = tick(core, due + 0.85)
    assert core.dispatcher.workers[W1].silent and len(tasks_in(to(W2, sent))) == 1

# --- big bodies pass through as they came --------------------------------------------------


def test_a_big_body_is_passed_on_as_the_frame_it_came_as() -> None:
    import zmq

    core = make()
    ready(core, W1)
    big = zmq.Frame(b"x" * 200_000)
    core.receive([C1, b"", p.CLIENT, SVC, big], "", 0.0)  # as sockio.recv(keep_big) gives it
    [task] = core.take_actions()
    assert isinstance(task, Send) and task.frames[-1] is big  # not copied
    reply = zmq.Frame(b"y" * 300_000)
    core.receive([W1, b"", p.WORKER, p.REPLY, task.frames[4], b"", reply], "", 0.1)
    [answer] = core.take_actions()
    assert isinstance(answer, Send) and answer.frames[-1] is reply


def test_a_worker_announcing_a_big_reply_is_not_silent_while_it_may_be_on_the_way() -> None:
    core = make()
    ready(core, W1)
    running_at(core, W1, 1, 0.0)
    ready(core, W2, 0.1)
    feed(core, W1, p.sending(5_000_000), 0.5)  # its reply follows, for 0.5 s at the floor
    assert tasks_in(to(W2, tick(core, 1.35))) == []  # would be silent without it
    assert not core.dispatcher.workers[W1].silent
    sent = tick(core, 0.5 + 0.5 + 0.85)  # then silent as any other
    assert core.dispatcher.workers[W1].silent and len(tasks_in(to(W2, sent))) == 1


def test_a_big_reply_to_a_dips_client_is_announced_by_a_pong_just_before_it() -> None:
    """The client's next PONG would wait behind the reply's bytes: it is told their count
    first, so that it does not take a broker still sending for a dead one."""
    core = make()
    ready(core, W1)
    small = running_at(core, W1, 1, 0.0)
    assert to(C1, feed(core, W1, p.reply(small.key, [BODY]), 0.1)) == [p.Result(SVC, [BODY], 1)]
    task = running_at(core, W1, 2, 0.2)
    big = p.pack({"image": b"x" * 3_000_000})
    sent = to(C1, feed(core, W1, p.reply(task.key, [big]), 0.3))
    assert sent == [p.Pong([], core.instance, len(big)), p.Result(SVC, [big], 2)]


def test_a_big_frame_where_a_name_or_key_belongs_is_refused_not_fatal() -> None:
    import zmq

    core = make()
    ready(core, W1)
    huge_name = zmq.Frame(b"s" * 100_000)
    core.receive([C1, b"", p.DIPS_CLIENT, p.SUBMIT, huge_name,
                  p.pack_meta({"id": 1, "ttl_ms": 1000}), BODY], "", 0.0)
    assert error_of([m for _, m in out(core)], 1) == "bad_request"
    core.receive([W1, b"", p.WORKER, p.REPLY, zmq.Frame(b"k" * 100_000), b"", BODY], "", 0.1)
    assert out(core) == [] and core.dispatcher.counters.dropped == 1


def test_a_whole_fleet_gone_quiet_is_overloaded_not_frozen() -> None:
    """Half the workers or more quiet together: the host (or this broker) was stalled or
    overloaded; taking their tasks back would only pile copies on the same load."""
    core = make()
    for worker in (W1, W2, W3):
        ready(core, worker)
    for rid, worker in ((1, W1), (2, W2), (3, W3)):
        running_at(core, worker, rid, 0.0)
    tick(core, 0.85)
    assert not any(w.silent for w in core.dispatcher.workers.values())
    for worker in (W2, W3):  # two of three answer now: the quiet one is frozen
        feed(core, worker, p.signal(p.HEARTBEAT), 0.9)
    tick(core, 1.05)
    assert core.dispatcher.workers[W1].silent


def test_a_worker_whose_process_speaks_is_slow_not_frozen() -> None:
    """Workers hosted as threads of one process: while one of them answers, the process
    runs, and a quiet one waits for its turn at the GIL."""
    core = make()
    for worker in (W1, W2, W3, b"\x00w4"):
        feed(core, worker, p.ready(SVC, {"pid": 7, "host": "h"}), 0.0)
    ready(core, b"\x00w5")
    running_at(core, W1, 1, 0.0)
    feed(core, W2, p.signal(p.HEARTBEAT), 0.7)  # its sibling speaks
    tick(core, 0.85)
    assert not core.dispatcher.workers[W1].silent
    tick(core, 1.6)  # nobody in that process has spoken for 0.9 s
    assert core.dispatcher.workers[W1].silent


# --- the bytes of queued requests ----------------------------------------------------------


def test_a_request_past_the_queued_bytes_bound_is_answered_overloaded_naming_it() -> None:
    """Requests of 3,000 bytes for a busy service, 8 KiB allowed queued over all services:
    the third is refused at once (the broker holds no copy of it), the bytes held are in
    mmi.status, and a request given to a worker frees its place."""
    core = make(max_queue_bytes=8192, max_message_bytes=8192)
    ready(core, W1)
    big = b"\x00" * 3000
    [(_, running)] = submit(core, C1, 1, 0.0, body=big)  # the worker is busy with it now
    assert submit(core, C1, 2, 0.0, body=big) == []
    assert submit(core, C2, 3, 0.0, body=big) == []
    sent = submit(core, C2, 4, 0.0, body=big)
    assert error_of(to(C2, sent), 4) == "overloaded"
    message = result_of(to(C2, sent))[4]["error"]["message"]
    assert "--max-queue-bytes" in message and "8192" in message
    status = BrokerStatus.from_wire(core.status(0.1))
    assert status.services["echo"].queue_bytes == 6000 == core.dispatcher.queued_bytes
    sent = feed(core, W1, p.reply(running.key, [b"done"]), 0.2)
    assert len(tasks_in(to(W1, sent))) == 1 and core.dispatcher.queued_bytes == 3000
    assert submit(core, C2, 5, 0.3, body=big) == []  # room again
    core.goodbye()  # stopping: the requests it held unworked are let go
    assert core.dispatcher.queued_bytes == 0 and core.dispatcher.queued == 0


# --- lines about workers coming and going --------------------------------------------------


def coming_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "mdp.broker" and r.levelname == "INFO"]


def test_a_fleet_restarting_logs_each_worker_joining_and_leaving(
        caplog: pytest.LogCaptureFixture) -> None:
    core = make()
    caplog.set_level("INFO", logger="mdp.broker")
    workers = [b"\x00w%03d" % n for n in range(50)]
    for worker in workers:
        ready(core, worker, 0.5)
    for worker in workers:
        feed(core, worker, p.worker_command(b"", p.DISCONNECT)[1:], 0.6)
    lines = coming_lines(caplog)
    assert sum(" ready for 'echo'" in line for line in lines) == 50
    assert sum(line.endswith(" left") for line in lines) == 50


def test_one_peer_churning_ready_and_disconnect_logs_a_bounded_number_of_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    """1,500 READY/DISCONNECT pairs from one peer over 10 s (3,000 lines before): the first
    hundred lines, then two a second, and a line a second saying how many were not logged."""
    core = make()
    caplog.set_level("INFO", logger="mdp.broker")
    for n in range(1500):
        now = n / 150
        ready(core, W1, now)
        feed(core, W1, p.worker_command(b"", p.DISCONNECT)[1:], now)
    tick(core, 11.0)  # the heartbeat says what the last second left unsaid
    lines = coming_lines(caplog)
    assert 100 + 2 * 10 <= len(lines) <= 100 + 2 * 11 + 12
    summaries = [line for line in lines if "not logged" in line]
    assert summaries and all(" left" in s and " ready" in s for s in summaries)
    said = sum(" ready for " in line or line.endswith(" left") for line in lines)
    unsaid = sum(int(s.split()[0]) for s in summaries)
    assert said + unsaid == 3000  # every event is a line or counted in one


# --- a malformed SUBMIT whose ids can be read --------------------------------------------


def raw_submit(meta: dict[str, Any], bodies: list[bytes]) -> list[bytes]:
    return [b"", p.DIPS_CLIENT, p.SUBMIT, SVC, p.pack_meta(meta), *bodies]


@pytest.mark.parametrize("meta, bodies, says", [
    ({"id": 7, "ttl_ms": 1000, "ck": b"k" * 65}, [BODY], "'ck' must be 1-64 bytes"),
    ({"id": 7}, [BODY], "needs 'ttl_ms'"),
    ({"id": 7, "ttl_ms": "soon"}, [BODY], "'ttl_ms' is not an integer"),
    ({"ids": [7, 8, 9], "ttl_ms": 1000}, [BODY, BODY], "3 ids for 2 bodies"),
    ({"ids": [7, 8], "ttl_ms": 1000, "ck": b"k"}, [BODY, BODY], "cannot carry one 'ck'"),
])
def test_a_malformed_submit_is_answered_bad_request_for_each_id_it_names(
        meta: dict[str, Any], bodies: list[bytes], says: str) -> None:
    core = make()
    ready(core, W1)
    sent = feed(core, C1, raw_submit(meta, bodies), 0.1)
    ids = meta.get("ids", [meta.get("id")])
    answers = result_of(to(C1, sent))
    assert sorted(answers) == ids and not to(W1, sent)  # nothing reached the worker
    for answer in answers.values():
        assert answer["error"]["code"] == "bad_request" and says in answer["error"]["message"]
    assert core.dispatcher.counters.dropped == 1


def test_a_malformed_submit_answers_no_id_it_cannot_read_nor_one_held() -> None:
    core = make(max_frames=8)
    ready(core, W1)
    submit(core, C1, 5, 0.0)  # held: the worker runs it
    for meta in ({"id": 5, "ttl_ms": "x"},  # held already: a resend is ignored, as ever
                 {"ids": list(range(9)), "ttl_ms": "x"},  # more ids than --max-frames
                 {"id": -1, "ttl_ms": 1000, "ck": b""}, {"ttl_ms": 1000, "ck": b""}):
        assert feed(core, C1, raw_submit(meta, [BODY]), 0.1) == []
    assert feed(core, C1, [b"", p.DIPS_CLIENT, p.SUBMIT, SVC, b"\xc1", BODY], 0.1) == []
    assert core.dispatcher.counters.dropped == 5


def test_workers_lost_while_the_whole_service_was_quiet_cost_their_requests_nothing() -> None:
    """Every worker of a service frozen together (a stalled host, a fleet stopped): their
    connections drop one after the other (ZMTP), and a request that went from one to the
    next is not taken for one that kills workers; it waits for a worker, and runs."""
    core = make(max_worker_losses=2)
    ready(core, W1, prefetch=4)
    ready(core, W2, prefetch=4)
    running_at(core, W1, 1, 0.0)
    [(_, other)] = submit(core, C1, 2, 0.0)  # W2 runs it
    [(_, held)] = submit(core, C1, 3, 0.0)  # held behind request 1 or 2
    assert isinstance(held, p.BrokerTask) and held.hold
    for now in (1.0, 2.0, 3.0, 4.0):  # both frozen: nothing from either
        tick(core, now)
    lost(core, W1, 4.4)
    lost(core, W2, 4.45)
    assert core.dispatcher.counters.poisoned == 0
    # (the last of them cannot be told from a lone worker's death: at most that one counts)
    assert max(r.losses for r in core.dispatcher.held.values()) <= 1
    sent = ready(core, W3, 5.0)  # a worker again: every request goes to it
    assert sorted(t.body == [BODY] for t in tasks_in(to(W3, sent))) == [True]
    assert len(core.dispatcher.held) == 3 and core.dispatcher.counters.errors == 0
