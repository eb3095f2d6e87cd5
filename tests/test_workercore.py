"""The worker's decisions, driven through every path with an explicit clock and no sockets."""

from __future__ import annotations

from typing import Any

import pytest

from mdp import protocol as p
from mdp.actions import Close, Lost, Open, Opened, Received, Send, Tick
from mdp.workercatchup import IDLE_WAKE_S
from mdp.workercore import EXIT_OUT_OF_MEMORY, EXIT_STUCK, WorkerCore
from mdp.workerstate import LinkMode, Phase, Timing

NAMES = {p.READY: "READY", p.REPLY: "REPLY", p.HEARTBEAT: "HEARTBEAT",
         p.DISCONNECT: "DISCONNECT", p.BUSY: "BUSY", p.FREE: "FREE", p.BOUNCE: "BOUNCE",
         p.PROGRESS: "PROGRESS", p.CHECK: "CHECK"}
BODY = [p.pack({"x": 1})]


def make(links: int = 2, prefetch: int = 1, **timing: Any) -> WorkerCore:
    core = WorkerCore([f"tcp://b{i}" for i in range(links)], b"echo",
                      {"host": "h", "pid": 1, "version": "v"},
                      Timing(**timing), prefetch=prefetch)
    core.start(0.0)
    for action in take(core, raw=True):
        assert isinstance(action, Open)
        core.handle(Opened(action.link), 0.0)
    take(core)
    return core


def take(core: WorkerCore, raw: bool = False) -> list[Any]:
    """What the core asked for since last time, as (link, NAME, detail) or raw actions."""
    out = core.take_actions()
    if raw:
        return out
    described = []
    for action in out:
        match action:
            case Send(i, frames):
                name = NAMES[frames[2]]
                detail: Any = None
                if name in ("REPLY", "BOUNCE", "PROGRESS", "CHECK"):
                    detail = frames[3]
                if name == "REPLY":
                    detail = (frames[3], p.unpack(frames[5]))
                if name == "BUSY":
                    detail = p.unpack_meta(frames[3], "BUSY")
                described.append((i, name, detail))
            case Close(i, linger_ms):
                described.append((i, "CLOSE", linger_ms))
            case Open(i):
                described.append((i, "CONNECT", None))
    return described


def welcome(core: WorkerCore, i: int, now: float = 0.0, **offers: bool | str) -> None:
    meta = {"broker": "v", "instance": "x", **offers}
    core.handle(Received(i, p.worker_welcome(b"id", meta)[1:]), now)


def task(core: WorkerCore, i: int, key: bytes, now: float = 0.0, ttl_ms: int | None = 10_000,
         hold: bool = False, dips: bool = True) -> None:
    core.handle(Received(i, p.to_worker(b"id", key, BODY, dips, ttl_ms, hold)[1:]), now)


def signal(core: WorkerCore, i: int, command: bytes, now: float = 0.0) -> None:
    core.handle(Received(i, p.worker_command(b"id", command)[1:]), now)


def dips_core(links: int = 2, **timing: Any) -> WorkerCore:
    core = make(links, **timing)
    for i in range(links):
        welcome(core, i)
    take(core)
    return core


# --- registration -------------------------------------------------------------------------


def test_start_connects_every_link_and_registers_with_prefetch() -> None:
    core = WorkerCore(["tcp://a", "tcp://b"], b"echo", {"pid": 7}, Timing())
    core.start(0.0)
    assert take(core, raw=True) == [Open(0), Open(1)]
    core.handle(Opened(0), 0.0)
    [ready] = take(core, raw=True)
    assert isinstance(ready, Send) and ready.link == 0
    frames = ready.frames
    assert frames[:4] == [b"", p.WORKER, p.READY, b"echo"]
    meta = p.unpack_meta(frames[4], "READY")
    assert meta == {"dips": 2, "pid": 7, "prefetch": 1, "batch": True, "announce": True,
                    "refusals": True, "checks": True}
    assert core.links[0].mode is LinkMode.STANDARD


def test_welcome_turns_on_the_extensions() -> None:
    core = make()
    welcome(core, 0)
    assert core.links[0].mode is LinkMode.DIPS
    assert core.links[1].mode is LinkMode.STANDARD


def test_malformed_input_is_dropped_and_counts_as_life() -> None:
    core = make(1)
    core.handle(Received(0, [b"", p.WORKER, b"\x7f"]), 2.5)
    core.handle(Received(0, [b"junk"]), 2.5)
    assert take(core) == [] and core.links[0].heard_at == 2.5


def test_a_big_reply_is_announced_to_a_broker_that_takes_it() -> None:
    """The answer to a probe sent while a big reply travels comes behind it: a broker whose
    WELCOME offered "announce" gets a HEARTBEAT with the reply's size just before it; the
    others (an older DIPS broker) get the reply alone."""
    core = make()
    welcome(core, 0, announce=True)
    welcome(core, 1)
    take(core)
    big = p.raw_result_body(p.pack({"image": b"x" * 2_000_000}))
    for link, key in ((0, b"k1"), (1, b"k2")):
        task(core, link, key)
        assert core.begin(0.0) is not None
        core.task_done(big, 0.1)
        frames = [a.frames for a in take(core, raw=True) if isinstance(a, Send)]
        announce = [p.sending(len(big))] if link == 0 else []
        assert frames == [*announce, p.reply(key, [big])]


# --- short tasks: no BUSY/FREE at all -----------------------------------------------------


def test_a_short_task_costs_one_reply_and_nothing_else() -> None:
    core = dips_core()
    task(core, 0, b"k1")
    t = core.begin(0.0)
    assert t is not None and t.key == b"k1" and t.body == BODY
    assert take(core) == []
    core.task_done(p.raw_result_body(BODY[0]), 0.001)
    assert core.begin(0.001) is None
    assert take(core) == [(0, "REPLY", (b"k1", {"result": {"x": 1}}))]


def test_tasks_run_one_at_a_time_in_arrival_order_over_all_brokers() -> None:
    core = dips_core()
    task(core, 1, b"b1")
    task(core, 0, b"a1", hold=True)
    first = core.begin(0.0)
    assert first is not None and first.key == b"b1"
    assert core.begin(0.0) is first  # still running
    core.task_done(b"r", 0.001)
    second = core.begin(0.001)
    assert second is not None and second.key == b"a1" and second.link == 0


def test_an_expired_task_is_answered_expired_unworked() -> None:
    core = dips_core(1)
    task(core, 0, b"old", now=0.0, ttl_ms=100)
    task(core, 0, b"new", now=0.0, ttl_ms=10_000, hold=True)
    t = core.begin(0.2)
    assert t is not None and t.key == b"new"
    [(link, name, (key, reply))] = take(core)
    assert (link, name, key, reply["error"]["code"]) == (0, "REPLY", b"old", "expired")


# --- long tasks: BUSY elsewhere, BOUNCE, FREE ---------------------------------------------


def test_a_long_task_tells_the_other_brokers_busy_and_free_afterwards() -> None:
    core = dips_core(3)
    task(core, 0, b"k")
    core.begin(0.0)
    assert core.next_deadline(0.0) == 0.005  # busy_after
    core.handle(Tick(), 0.005)
    assert take(core) == [(1, "BUSY", {}), (2, "BUSY", {})]
    core.task_done(p.result_body("r"), 1.0)
    assert core.begin(1.0) is None
    assert take(core) == [(0, "REPLY", (b"k", {"result": "r"})), (1, "FREE", None),
                          (2, "FREE", None)]


def test_free_follows_busy_once_idle_and_not_between_back_to_back_tasks() -> None:
    core = dips_core(2)
    task(core, 0, b"k1")
    task(core, 0, b"k2", hold=True)
    core.begin(0.0)
    core.task_long(0.01)
    assert take(core) == [(1, "BUSY", {})]
    core.task_done(p.raw_result_body(BODY[0]), 0.02)
    t = core.begin(0.02)
    assert t is not None and t.key == b"k2"
    assert [name for _, name, _ in take(core)] == ["REPLY"]  # no FREE/BUSY churn
    core.task_done(p.raw_result_body(BODY[0]), 0.03)
    assert core.begin(0.03) is None
    assert [(i, name) for i, name, _ in take(core)] == [(0, "REPLY"), (1, "FREE")]


def test_crossed_tasks_bounce_while_a_long_task_runs_and_holds_stay() -> None:
    core = dips_core(2)
    task(core, 0, b"a1")
    task(core, 1, b"b1")  # came before our BUSY reached broker 1
    core.begin(0.0)
    core.task_long(0.006)
    assert take(core) == [(1, "BUSY", {}), (1, "BOUNCE", b"b1")]
    task(core, 1, b"b2", now=0.01)  # crossed again: bounced at once
    task(core, 0, b"a2", now=0.01, hold=True)  # prefetched on purpose: kept
    assert take(core) == [(1, "BOUNCE", b"b2")]
    assert [t.key for t in core.waiting] == [b"a2"]


def test_an_unasked_bounce_is_preceded_by_busy_even_to_the_tasks_own_broker() -> None:
    core = dips_core(1)
    task(core, 0, b"a1")
    task(core, 0, b"a2")  # without hold: the broker thought us idle
    core.begin(0.0)
    core.task_long(0.006)
    assert take(core) == [(0, "BUSY", {}), (0, "BOUNCE", b"a2")]
    core.task_done(b"r", 0.1)
    core.begin(0.1)
    assert [(i, name) for i, name, _ in take(core)] == [(0, "REPLY"), (0, "FREE")]


def test_a_broker_welcoming_during_a_long_task_is_told_busy() -> None:
    core = make(2)
    welcome(core, 0)
    task(core, 0, b"a1")
    core.begin(0.0)
    core.task_long(0.006)
    assert take(core) == []  # link 1 is standard so far
    welcome(core, 1, 0.1)
    assert take(core) == [(1, "BUSY", {})]


# --- RECALL -------------------------------------------------------------------------------


def test_recall_of_a_held_task_bounces_it_and_of_a_started_one_is_ignored() -> None:
    core = dips_core(1)
    task(core, 0, b"k1")
    task(core, 0, b"k2", hold=True)
    core.begin(0.0)
    core.handle(Received(0, p.recall(b"id", b"k1")[1:]), 0.001)  # started: its reply follows
    core.handle(Received(0, p.recall(b"id", b"k2")[1:]), 0.001)
    core.handle(Received(0, p.recall(b"id", b"zz")[1:]), 0.001)  # unknown
    assert take(core) == [(0, "BOUNCE", b"k2")]  # no BUSY: it was asked for
    assert not core.waiting and not core.links[0].told_busy


# --- standard brokers ---------------------------------------------------------------------


def test_a_standard_broker_gets_plain_mdp_and_its_requests_wait_locally() -> None:
    core = make(2)
    welcome(core, 0)
    task(core, 0, b"a1")
    task(core, 1, b"s1", dips=False)
    core.begin(0.0)
    core.task_long(0.01)
    assert take(core) == []  # no BUSY to a standard broker, no BOUNCE of its request
    core.task_done(b"r", 0.02)
    t = core.begin(0.02)
    assert t is not None and t.key == b"s1" and not t.dips
    core.task_done(b"r", 0.03)
    core.begin(0.03)
    out = take(core)
    assert [(i, name) for i, name, _ in out] == [(0, "REPLY"), (1, "REPLY")]


def test_standard_links_heartbeat_on_their_own_timer() -> None:
    core = make(1, heartbeat_interval_s=1.0)
    assert core.next_deadline(0.0) == IDLE_WAKE_S  # (an idle worker looks at the clock)
    assert core.timers.earliest(core.catchup.until) == 1.0
    core.handle(Tick(), 1.0)
    assert take(core) == [(0, "HEARTBEAT", None)]


# --- heartbeats, expiry, DISCONNECT, backoff ----------------------------------------------


def test_dips_links_answer_the_broker_heartbeat_burst_at_most_every_half_interval() -> None:
    core = dips_core(1, heartbeat_interval_s=1.0)
    signal(core, 0, p.HEARTBEAT, 0.2)
    assert take(core) == []  # we sent READY at 0.0: too recent
    signal(core, 0, p.HEARTBEAT, 0.6)
    assert take(core) == [(0, "HEARTBEAT", None)]
    assert core.next_deadline(0.6) <= 0.6 + 1.5


def test_a_silent_broker_is_given_up_and_reconnected_after_backoff() -> None:
    core = dips_core(1, heartbeat_interval_s=1.0, heartbeat_liveness=3)
    signal(core, 0, p.HEARTBEAT, 1.0)
    take(core)
    core.handle(Tick(), 4.0)
    assert take(core) == [(0, "CLOSE", 0)]
    assert core.links[0].mode is LinkMode.CLOSED
    assert core.next_deadline(4.0) == 4.1
    core.handle(Tick(), 4.1)
    assert take(core) == [(0, "CONNECT", None)]
    core.handle(Opened(0), 4.1)
    assert [name for _, name, _ in take(core)] == ["READY"]
    assert core.links[0].epoch == 2


@pytest.mark.parametrize("floor", [p.DEFAULT_LINK_FLOOR, 3_000_000, 500_000])
def test_a_broker_is_not_silent_while_the_big_task_it_announced_may_be_on_the_way(
        floor: int) -> None:
    """The broker's heartbeats wait behind a task's bytes: after it announces 30 MB (3 s at
    the default link floor, 10 MB/s; 60 s at 500 KB/s), the expiry runs from when they may
    have arrived."""
    core = dips_core(1, heartbeat_interval_s=1.0, heartbeat_liveness=3, link_floor=floor)
    core.handle(Received(0, p.sending_to_worker(b"id", 30_000_000)[1:]), 1.0)
    take(core)
    due = 1.0 + 30_000_000 / floor
    core.handle(Tick(), 5.5)  # 4.5 s since it was heard: still taking the task
    assert [name for _, name, _ in take(core)] in ([], ["HEARTBEAT"])
    core.handle(Tick(), due + 2.9)
    assert (0, "CLOSE", 0) not in take(core) and core.links[0].mode is LinkMode.DIPS
    core.handle(Tick(), due + 3.0)  # nothing came: silent after all
    assert take(core) == [(0, "CLOSE", 0)]



def test_a_standard_broker_may_heartbeat_as_slowly_as_the_reference_brokers() -> None:
    """The ZeroMQ guide's brokers heartbeat every 2.5-5 s; 7/MDP's 2.5 s x 3 is allowed."""
    core = make(1, heartbeat_interval_s=1.0, heartbeat_liveness=3)
    assert core.links[0].mode is LinkMode.STANDARD
    core.handle(Tick(), 5.0)
    assert [name for _, name, _ in take(core)] == ["HEARTBEAT"]  # ours, not a reconnect
    assert core.links[0].mode is LinkMode.STANDARD
    core.handle(Tick(), 7.5)
    assert (0, "CLOSE", 0) in take(core)


def test_a_dropped_connection_registers_anew_after_the_first_backoff() -> None:
    core = dips_core(2)
    core.handle(Lost(0), 1.0)
    assert take(core) == [(0, "CLOSE", 0)]
    core.handle(Tick(), 1.1)
    assert take(core) == [(0, "CONNECT", None)]
    core.handle(Lost(0), 1.2)  # a closed link: nothing to do
    assert take(core) == []


def disconnected_and_back(core: WorkerCore, now: float) -> tuple[float, float]:
    """Link 0 told DISCONNECT at ``now``: closed, then opened again when its retry is due.
    (The delay it waited, the time it is open again.)"""
    signal(core, 0, p.DISCONNECT, now)
    assert take(core) == [(0, "CLOSE", 0)]
    again = core.links[0].retry_at
    core.handle(Tick(), again)
    take(core)
    core.handle(Opened(0), again)
    take(core)
    return round(again - now, 3), again


def test_disconnect_backs_off_doubling_and_an_answer_resets_it() -> None:
    core = dips_core(1, reconnect_initial_s=0.1, reconnect_max_s=0.3)
    delays = []
    now = 0.0
    for _ in range(4):
        delay, now = disconnected_and_back(core, now)
        delays.append(delay)
    assert delays == [0.1, 0.2, 0.3, 0.3]
    welcome(core, 0, now)
    signal(core, 0, p.DISCONNECT, now)
    assert round(core.links[0].retry_at - now, 3) == 0.1


def test_a_refusal_is_kept_with_its_reason_and_backs_off_until_a_welcome() -> None:
    """A broker that refuses our READY says why in a WELCOME whose meta says "refused",
    then DISCONNECT: the reason is kept (a Gearman door tells its worker), the link is not
    taken for a DIPS one, and the retries slow down as after any DISCONNECT."""
    core = make(2, reconnect_initial_s=0.1, reconnect_max_s=0.3)
    delays, now = [], 0.0
    for _ in range(3):
        welcome(core, 0, now, refused="service 'echo': --max-services")
        assert core.links[0].mode is LinkMode.STANDARD and take(core) == []
        delay, now = disconnected_and_back(core, now)
        delays.append(delay)
    assert delays == [0.1, 0.2, 0.3]
    assert core.refused == {0: "service 'echo': --max-services"}
    welcome(core, 1, now)
    assert core.refused == {0: "service 'echo': --max-services"}  # the other broker's
    welcome(core, 0, now)
    assert core.refused == {} and core.links[0].mode is LinkMode.DIPS


def test_tasks_of_a_closed_link_are_dropped_and_a_reply_to_it_too() -> None:
    core = dips_core(2)
    task(core, 0, b"a1")
    task(core, 0, b"a2", hold=True)
    task(core, 1, b"b1", hold=True)
    core.begin(0.0)
    signal(core, 0, p.DISCONNECT, 0.001)  # the broker requeues what it gave us
    core.handle(Tick(), 0.2)
    core.handle(Opened(0), 0.2)
    take(core)
    assert [t.key for t in core.waiting] == [b"b1"]
    core.task_done(b"r", 0.3)  # a1's broker connection is gone: nothing sent for it
    assert take(core) == []


# --- drain, max_requests, time limit ------------------------------------------------------


def test_stop_drains_bounces_unstarted_finishes_the_task_and_leaves() -> None:
    core = make(3)
    welcome(core, 0)
    welcome(core, 1)  # broker 2 is a standard one
    task(core, 0, b"a1")
    task(core, 0, b"a2", hold=True)
    task(core, 2, b"s1", dips=False)
    core.begin(0.0)
    core.stop(0.001)
    out = take(core)
    assert (0, "BOUNCE", b"a2") in out
    assert (0, "BUSY", {"draining": True}) in out
    assert (1, "DISCONNECT", None) in out and (1, "CLOSE", 2000) in out
    assert not any(i == 2 for i, _, _ in out)  # we still hold its request
    task(core, 0, b"a3", now=0.002)
    assert take(core) == [(0, "BOUNCE", b"a3")]
    core.task_done(b"r", 0.01)
    t = core.begin(0.01)
    assert t is not None and t.key == b"s1"
    core.task_done(b"r", 0.02)
    assert core.begin(0.02) is None
    out = take(core)
    assert [(i, name) for i, name, _ in out] == [
        (0, "REPLY"), (2, "REPLY"), (0, "DISCONNECT"), (0, "CLOSE"), (2, "DISCONNECT"),
        (2, "CLOSE")]
    assert core.phase is Phase.DONE and core.exit_code == 0


def test_stop_when_idle_leaves_at_once_with_its_exit_code() -> None:
    core = dips_core(1)
    core.stop(0.0, EXIT_OUT_OF_MEMORY)
    assert [(i, name) for i, name, _ in take(core)] == [(0, "DISCONNECT"), (0, "CLOSE")]
    assert core.phase is Phase.DONE and core.exit_code == EXIT_OUT_OF_MEMORY
    core.handle(Tick(), 10.0)
    assert take(core) == []  # no reconnect once leaving


def test_max_requests_drains_after_the_last_one() -> None:
    core = WorkerCore(["tcp://a"], b"echo", {}, Timing(), max_requests=2)
    core.start(0.0)
    take(core)
    core.handle(Opened(0), 0.0)
    welcome(core, 0)
    for key in (b"k1", b"k2"):
        task(core, 0, key)
        core.begin(0.0)
        core.task_done(b"r", 0.0)
    assert core.begin(0.0) is None
    assert core.phase is Phase.DONE


def test_the_time_limit_answers_worker_timeout_bounces_held_and_exits_stuck() -> None:
    core = dips_core(2, time_limit_s=2.0)
    task(core, 0, b"a1")
    task(core, 1, b"b1", hold=True)
    core.begin(0.0)
    core.handle(Tick(), 0.005)
    take(core)
    assert core.next_deadline(0.5) == 1.5  # heartbeat fallback first (1.5 s on DIPS)
    core.handle(Tick(), 2.0)
    out = take(core)
    [(_, _, (key, reply))] = [o for o in out if o[1] == "REPLY"]
    assert key == b"a1" and reply["error"]["code"] == "worker_timeout"
    assert (1, "BOUNCE", b"b1") in out
    assert [(i, n) for i, n, _ in out if n == "DISCONNECT"] == [(0, "DISCONNECT"),
                                                                 (1, "DISCONNECT")]
    assert core.phase is Phase.DONE and core.exit_code == EXIT_STUCK
    core.task_done(b"late", 3.0)  # the handler came back after all: nothing more
    assert take(core) == []


# --- TASKS and REPLIES (brokers whose WELCOME offers batches) ------------------------------


def batch_core(links: int = 1, prefetch: int = 1, **timing: Any) -> WorkerCore:
    core = make(links, prefetch, **timing)
    for i in range(links):
        meta = {"broker": "v", "instance": "x", "batch": True}
        core.handle(Received(i, p.worker_welcome(b"id", meta)[1:]), 0.0)
    take(core)
    return core


def tasks(core: WorkerCore, i: int, keys: list[bytes], now: float = 0.0,
          holds: list[bool] | None = None) -> None:
    frames = p.to_worker_batch(b"id", keys, [BODY[0]] * len(keys), [10_000] * len(keys),
                               holds if holds is not None else [False] + [True] * (len(keys) - 1))
    core.handle(Received(i, frames[1:]), now)


def replies_sent(core: WorkerCore) -> list[tuple[int, list[bytes]]]:
    """(link, keys) of every REPLY or REPLIES asked for since last time; nothing else."""
    sent = []
    for action in take(core, raw=True):
        assert isinstance(action, Send)
        i, frames = action.link, action.frames
        if frames[2] == p.REPLIES:
            sent.append((i, list(p.unpack_meta(frames[3], "REPLIES")["keys"])))
        else:
            assert frames[2] == p.REPLY, frames[:3]
            sent.append((i, [frames[3]]))
    return sent


def run_all(core: WorkerCore, now: float, step: float) -> float:
    while (t := core.begin(now)) is not None:
        now += step
        core.task_done(p.raw_result_body(t.body[0]), now)
    return now


def test_tasks_are_run_in_order_and_answered_in_one_replies_when_idle() -> None:
    core = batch_core()
    tasks(core, 0, [b"k1", b"k2", b"k3"])
    assert [t.key for t in core.waiting] == [b"k1", b"k2", b"k3"]
    run_all(core, 0.0, 0.0001)
    assert replies_sent(core) == [(0, [b"k1", b"k2", b"k3"])]
    assert core.served == 3


def test_gathered_replies_go_once_they_hold_a_mebibyte_and_a_big_one_alone() -> None:
    """A REPLIES is never big enough to hold back the answer to a probe for long (a big
    reply is announced, and goes alone)."""
    core = batch_core(prefetch=16)  # (a worker's default: six tasks are its to hold)
    keys = [b"k%d" % n for n in range(6)]
    tasks(core, 0, keys)
    now, sizes = 0.0, [400_000, 400_000, 400_000, 400_000, 2_000_000, 10]
    for size in sizes:
        t = core.begin(now)
        assert t is not None
        now += 0.0001
        core.task_done(p.raw_result_body(b"x" * size), now)
    assert replies_sent(core) == [(0, keys[:3]), (0, [keys[3]]), (0, [keys[4]]), (0, [keys[5]])]


def test_a_broker_s_announced_task_ends_its_hold_when_it_comes() -> None:
    for batched in (False, True):
        core = dips_core(1, heartbeat_interval_s=1.0, heartbeat_liveness=3)
        core.handle(Received(0, p.sending_to_worker(b"id", 30_000_000)[1:]), 1.0)
        if batched:
            core.handle(Received(0, p.to_worker_batch(b"id", [b"k1"], BODY, [10_000],
                                                      [False])[1:]), 1.02)
        else:
            task(core, 0, b"k1", 1.02)  # it came at once: a fast link
        assert core.links[0].task_until == 0.0
        core.handle(Tick(), 4.1)  # silent for 3 s since it came: given up as ever
        assert (0, "CLOSE", 0) in take(core)


def test_a_broker_silent_after_its_announced_task_came_is_found_on_time() -> None:
    """With a short expiry (liveness 1) the task's arrival brings its link's deadline
    earlier than its next heartbeat; another link's deadline lies between the two: the
    next deadline is still the first link's (the deadline heap is told when a task ends
    the hold of its announcement, not only when the link's entry comes to the top)."""
    core = dips_core(2, heartbeat_interval_s=1.0, heartbeat_liveness=1)
    for i in (0, 1):
        signal(core, i, p.HEARTBEAT, 0.9)  # answered: each link's last send is at 0.9
    core.handle(Received(0, p.sending_to_worker(b"id", 30_000_000)[1:]), 1.0)
    # link 1's silence; link 0 waits for its task
    assert core.timers.earliest(core.catchup.until) == 1.9
    task(core, 0, b"k1", 1.2)  # it came: link 0 is silent from 1.2 on, due at 2.2
    signal(core, 1, p.HEARTBEAT, 1.3)  # link 1 heard: silent at 2.3, heartbeat at 2.4
    take(core)
    assert core.timers.earliest(core.catchup.until) == 2.2
    core.handle(Tick(), 2.2)
    assert take(core) == [(0, "CLOSE", 0)]


def test_an_announced_task_counts_as_at_most_the_largest_message() -> None:
    core = dips_core(1, heartbeat_interval_s=1.0, heartbeat_liveness=3)
    core.max_message_bytes = 2_000_000
    core.handle(Received(0, p.sending_to_worker(b"id", p.MAX_ANNOUNCED)[1:]), 1.0)
    core.handle(Tick(), 1.0 + 0.2 + 3.05)  # 2 MB at the floor, then the expiry
    assert (0, "CLOSE", 0) in take(core)


def test_gathered_replies_go_out_after_reply_gather_s_while_tasks_keep_coming() -> None:
    core = batch_core(reply_gather_s=0.002)
    tasks(core, 0, [b"k1", b"k2", b"k3", b"k4"])
    run_all(core, 0.0, 0.0011)  # replies at 1.1, 2.2, 3.3 (3.3 - 1.1 >= 2: sent), 4.4 ms
    assert replies_sent(core) == [(0, [b"k1", b"k2", b"k3"]), (0, [b"k4"])]


def test_a_task_running_long_sends_the_replies_gathered_before_it() -> None:
    core = batch_core(2)
    tasks(core, 0, [b"k1", b"k2"])
    t = core.begin(0.0)
    assert t is not None
    core.task_done(b"r1", 0.0001)
    assert core.begin(0.0001) is not None and take(core) == []  # k1's reply waits
    core.task_long(0.006)
    sent = take(core, raw=True)
    assert [(a.link, a.frames[2]) for a in sent] == [(0, p.REPLY), (1, p.BUSY)]
    assert sent[0].frames[3] == b"k1"


def test_any_other_message_to_a_broker_sends_its_gathered_replies_first() -> None:
    core = batch_core(1)
    tasks(core, 0, [b"k1", b"k2"])
    core.begin(0.0)
    core.task_done(b"r1", 0.0001)
    core.begin(0.0001)
    core.stop(0.0002)  # drain: BUSY(draining) follows the reply on the wire
    frames = [a.frames for a in take(core, raw=True)]
    assert [f[2] for f in frames] == [p.REPLY, p.BUSY]
    core.task_done(b"r2", 0.0003)
    assert core.begin(0.0003) is None
    frames = [a.frames for a in take(core, raw=True) if isinstance(a, Send)]
    assert [f[2] for f in frames] == [p.REPLY, p.DISCONNECT]
    assert frames[0][3] == b"k2" and core.phase is Phase.DONE


def test_a_task_keeps_its_request_s_coalescing_key() -> None:
    """(The Gearman door gives it to a Gearman worker as the job's unique id.)"""
    core = dips_core(1)
    core.handle(Received(0, p.to_worker(b"id", b"k", BODY, True, 10_000, ck=b"job-42")[1:]), 0.0)
    started = core.begin(0.0)
    assert started is not None and started.ck == b"job-42"


def test_a_broker_without_batch_in_its_welcome_gets_one_reply_per_task() -> None:
    core = dips_core(1)  # its WELCOME says nothing of batches
    task(core, 0, b"k1")
    task(core, 0, b"k2", hold=True)
    run_all(core, 0.0, 0.0001)
    assert replies_sent(core) == [(0, [b"k1"]), (0, [b"k2"])]


def test_tasks_before_welcome_are_dropped_and_a_recall_finds_a_batched_task() -> None:
    core = make(1)
    tasks(core, 0, [b"k1", b"k2"])  # a standard link: TASKS is not a 7/MDP command
    assert not core.waiting
    core = batch_core(1)
    tasks(core, 0, [b"k1", b"k2", b"k3"])
    core.begin(0.0)
    core.handle(Received(0, p.recall(b"id", b"k3")[1:]), 0.001)
    assert take(core) == [(0, "BOUNCE", b"k3")]
    assert [t.key for t in core.waiting] == [b"k2"]


def test_a_task_sent_as_to_an_idle_worker_runs_before_tasks_held_for_others() -> None:
    core = batch_core(2)
    tasks(core, 0, [b"a1", b"a2", b"a3"])  # a1 runs, a2 and a3 are held for broker 0
    core.begin(0.0)
    task(core, 1, b"b1")  # broker 1 believes us idle
    assert [t.key for t in core.waiting] == [b"b1", b"a2", b"a3"]


def test_a_task_longer_than_reply_gather_s_is_answered_at_once() -> None:
    core = batch_core(reply_gather_s=0.002)
    tasks(core, 0, [b"k1", b"k2"])
    core.begin(0.0)
    core.task_done(b"r1", 0.003)  # longer than the gather time: the next may be as long
    assert replies_sent(core) == [(0, [b"k1"])]
    assert core.begin(0.003) is not None


# --- progress ---------------------------------------------------------------------------------


def progress_core(offered: bool) -> WorkerCore:
    core = make(1)
    meta = {"broker": "v", "instance": "x", "batch": True, "progress": offered}
    core.handle(Received(0, p.worker_welcome(b"id", meta)[1:]), 0.0)
    take(core)
    return core


def test_progress_of_the_running_task_goes_to_its_broker_and_never_after_its_reply() -> None:
    core = progress_core(True)
    task(core, 0, b"k1")
    running = core.begin(0.0)
    assert running is not None
    core.progress(running, "status", 1, 2, None, 0.001)
    core.progress(running, "data", None, None, b"chunk", 0.001)
    [status, data] = take(core, raw=True)
    assert p.parse_broker_inbound([b"", *status.frames[1:]]) == \
        p.WorkerProgress(b"k1", "status", 1, 2, None)
    assert p.parse_broker_inbound([b"", *data.frames[1:]]) == \
        p.WorkerProgress(b"k1", "data", None, None, b"chunk")
    core.task_done(b"r", 0.01)
    core.progress(running, "warning", None, None, b"late", 0.01)  # after the reply: dropped
    assert [name for _, name, _ in take(core)] == ["REPLY"]


def test_progress_is_not_sent_to_a_broker_that_did_not_offer_to_relay_it() -> None:
    core = progress_core(False)
    task(core, 0, b"k1")
    running = core.begin(0.0)
    assert running is not None
    core.progress(running, "status", 1, 2, None, 0.001)
    assert take(core) == []


def test_progress_goes_after_the_replies_gathered_before_it() -> None:
    core = progress_core(True)
    task(core, 0, b"k1")
    task(core, 0, b"k2")
    first = core.begin(0.0)
    assert first is not None
    core.task_done(p.pack("r1"), 0.0001)  # a short task: its reply is gathered
    second = core.begin(0.0001)
    assert second is not None and take(core) == []
    core.progress(second, "status", 0, 1, None, 0.0002)
    assert [(name, detail) for _, name, detail in take(core)] == \
        [("REPLY", (b"k1", "r1")), ("PROGRESS", b"k2")]


def test_replies_gathered_for_one_broker_go_before_a_task_of_another_starts() -> None:
    # should the process die in the other broker's task, no broker takes a task it had
    # answered for the one that killed the worker (exact loss attribution)
    core = batch_core(2)
    tasks(core, 0, [b"a1", b"a2"])
    task(core, 1, b"b1", hold=True)
    t = core.begin(0.0)
    assert t is not None and t.key == b"a1"
    core.task_done(b"r1", 0.0001)
    t = core.begin(0.0001)
    assert t is not None and t.key == b"a2"
    assert take(core) == []  # same broker: a1's reply still gathers
    core.task_done(b"r2", 0.0002)
    t = core.begin(0.0002)
    assert t is not None and t.key == b"b1"
    assert replies_sent(core) == [(0, [b"a1", b"a2"])]


def test_a_task_of_the_broker_with_gathered_replies_goes_first_for_reply_gather_s() -> None:
    # held tasks of two brokers interleave; a task of the broker whose replies are gathered
    # is taken before one of another, so the replies travel in one REPLIES, not alone
    core = batch_core(2, reply_gather_s=0.002)
    tasks(core, 0, [b"a1"], holds=[False])
    tasks(core, 1, [b"b1", b"b2"], holds=[True, True])
    tasks(core, 0, [b"a2", b"a3", b"a4"], holds=[True, True, True])
    order = []
    now = 0.0
    while (t := core.begin(now)) is not None:
        order.append(t.key)
        now += 0.0007
        core.task_done(b"r", now)
    # a1 (first), then a2-a4 ahead of b1, until a1's gathered reply is reply_gather_s old
    # (at a4's reply, 2.1 ms after it): they go, and b1 and b2 run
    assert order == [b"a1", b"a2", b"a3", b"a4", b"b1", b"b2"]
    assert replies_sent(core) == [(0, [b"a1", b"a2", b"a3", b"a4"]), (1, [b"b1", b"b2"])]


def test_the_first_waiting_task_is_passed_over_for_reply_gather_s_whoever_passes_it() -> None:
    # three brokers take turns sending a task as to an idle worker with held ones behind it;
    # each one's replies gather, so its tasks would go before b1 in turn, without end
    core = batch_core(3, reply_gather_s=0.002)
    now = 1000.0
    tasks(core, 1, [b"b0", b"b1"], now=now, holds=[False, True])
    started = [core.begin(now)]
    for link, name in ((0, b"a"), (2, b"c"), (0, b"d"), (2, b"e")):
        # x1 goes before b1 as sent to an idle worker (as before); x2 and x3 are held
        tasks(core, link, [name + b"1", name + b"2", name + b"3"], now=now,
              holds=[False, True, True])
        for _ in range(3):
            now += 0.0005
            core.task_done(b"r", now)
            task = core.begin(now)
            assert task is not None
            started.append(task)
            if task.key == b"b1":
                break
        if started[-1].key == b"b1":
            break
    keys = [t.key for t in started]
    assert keys[-1] == b"b1", keys
    # the first held task to pass b1 started when the wait began; b1 started reply_gather_s
    # and one task's time after it at most
    passed_from = next(t.started_at for t in started if t.key[1:] in (b"2", b"3"))
    assert started[-1].started_at - passed_from <= 0.002 + 0.0005 + 1e-9, keys


def test_a_held_task_never_goes_before_one_sent_to_an_idle_worker() -> None:
    core = batch_core(2)
    tasks(core, 0, [b"a1", b"a2"], holds=[False, True])
    t = core.begin(0.0)
    assert t is not None and t.key == b"a1"
    task(core, 1, b"b1")  # sent as to an idle worker: it runs after the task in hand
    core.task_done(b"r", 0.0001)
    t = core.begin(0.0001)
    assert t is not None and t.key == b"b1"


def test_every_probe_of_a_broker_whose_task_runs_is_answered() -> None:
    core = dips_core(2, heartbeat_interval_s=1.0)
    task(core, 0, b"k1", 0.0)
    t = core.begin(0.0)
    assert t is not None
    signal(core, 0, p.HEARTBEAT, 0.1)  # its broker asks whether we froze: answered at once
    signal(core, 1, p.HEARTBEAT, 0.1)  # the other: within half an interval, not
    assert take(core) == [(0, "HEARTBEAT", None)]
    core.task_done(b"r", 0.15)
    take(core)
    signal(core, 0, p.HEARTBEAT, 0.2)  # nothing held now: the usual half interval
    assert take(core) == []


def test_a_lone_task_to_an_idle_worker_starts_at_once_and_is_answered() -> None:
    core = dips_core(2)
    frames = p.to_worker(b"id", b"k1", BODY, True, 5_000)[1:]
    t = core.lone_task(0, frames[3], frames[5], frames[6:], 1.0)
    assert t is not None and t.key == b"k1" and t.deadline == 1.0 + 5.0 and core.current is t
    core.task_done(b"r", 1.001)
    assert take(core) == [(0, "REPLY", (b"k1", p.unpack(b"r")))]
    assert core.served == 1
    held = p.to_worker(b"id", b"k2", BODY, True, 5_000, hold=True)[1:]
    assert core.lone_task(0, held[3], held[5], held[6:], 2.0) is None  # a held one: as usual
    task(core, 1, b"k3", 2.0)
    assert core.lone_task(0, frames[3], frames[5], frames[6:], 2.0) is None  # work waits


def test_a_lone_task_with_a_coalescing_key_starts_at_once_with_it() -> None:
    core = dips_core(1)
    keyed = p.to_worker(b"id", b"k1", BODY, True, 5_000, ck=b"job-42")[1:]
    t = core.lone_task(0, keyed[3], keyed[5], keyed[6:], 1.0)
    assert t is not None and t.ck == b"job-42" and t.deadline == 1.0 + 5.0
    core.task_done(b"r", 1.001)
    take(core)
    bad = p.pack_meta({"ttl_ms": 5_000, "ck": b"x" * 65})  # the general path drops it, saying why
    assert core.lone_task(0, b"k2", bad, BODY, 2.0) is None


def test_a_lone_task_with_an_empty_meta_frame_is_refused_by_a_fresh_core() -> None:
    """The remembered meta frame starts as nothing: an empty frame (not msgpack) is
    refused, as before there was a memory, not taken for a 0 ms deadline."""
    core = dips_core(1)
    assert core.lone_task(0, b"k1", b"", BODY, 1.0) is None
    assert core.current is None and take(core) == []


def test_a_lone_task_whose_meta_repeats_the_last_ones_reads_the_same_from_it() -> None:
    """lone_task keeps the last meta frame it decoded: the same bytes give the same ttl and
    ck, other bytes are decoded (and judged) afresh."""
    core = dips_core(1)
    deadlines = []
    for n, (ttl, ck) in enumerate([(5_000, None), (5_000, None), (7_000, None),
                                   (7_000, b"job"), (7_000, b"job"), (5_000, None)]):
        frames = p.to_worker(b"id", b"k%d" % n, BODY, True, ttl, ck=ck)[1:]
        t = core.lone_task(0, frames[3], frames[5], frames[6:], float(n))
        assert t is not None and t.ck == ck
        deadlines.append(t.deadline)
        core.task_done(b"r", n + 0.001)
    assert deadlines == [0 + 5.0, 1 + 5.0, 2 + 7.0, 3 + 7.0, 4 + 7.0, 5 + 5.0]
    take(core)
    held = p.pack_meta({"ttl_ms": 5_000, "hold": True})  # after a good one: still judged
    assert core.lone_task(0, b"k9", held, BODY, 9.0) is None


def test_a_task_sent_as_to_an_idle_worker_waits_before_the_held_ones_only() -> None:
    core = dips_core(2)
    task(core, 1, b"run")
    assert core.begin(0.0) is not None
    task(core, 0, b"a")
    task(core, 1, b"h1", hold=True)
    task(core, 0, b"b")
    task(core, 1, b"h2", hold=True)
    task(core, 0, b"c")
    assert [t.key for t in core.waiting] == [b"a", b"b", b"c", b"h1", b"h2"]


# --- a broker that sends more than this worker may hold -----------------------------------
# prefetch 1 (the core's default): a broker keeps to 2 tasks (one runs, one waits); one that
# took our tasks back while we were silent may give 2 more; a third pair is refused.


def sent_names(core: WorkerCore) -> list[tuple[int, str, Any]]:
    return [(i, name, detail) for i, name, detail in take(core)]


def test_tasks_past_what_a_worker_holds_for_a_broker_are_handed_back_unrun() -> None:
    core = dips_core(1)
    assert core.hold_limit == 4
    task(core, 0, b"k0")
    assert core.begin(0.0) is not None
    for n in range(1, 11):  # a broker that ignores prefetch: ten held tasks behind it
        task(core, 0, b"k%d" % n, hold=True)
    assert take(core) == [(0, "BUSY", {}), *((0, "BOUNCE", b"k%d" % n) for n in range(4, 11))]
    assert [t.key for t in core.waiting] == [b"k1", b"k2", b"k3"]
    core.task_done(p.pack({"ok": 1}), 0.1)
    while core.begin(0.1) is not None:  # the ones kept are run; then FREE, as owed
        core.task_done(p.pack({"ok": 1}), 0.1)
    sent = take(core)
    assert [d for _, name, d in sent if name == "REPLY"] == [
        (b"k%d" % n, {"ok": 1}) for n in range(4)]
    assert sent[-1] == (0, "FREE", None)


def test_a_broker_that_took_tasks_back_from_a_silent_worker_is_not_refused() -> None:
    """Silent while it ran k0 and held k1, the worker had both taken back; when it speaks
    again the broker sends it a task to run and one to hold, as to an idle worker: all
    four are kept."""
    core = dips_core(1)
    task(core, 0, b"k0")
    core.begin(0.0)
    task(core, 0, b"k1", hold=True)
    task(core, 0, b"k2", now=1.0)  # (it believes us idle)
    task(core, 0, b"k3", now=1.0, hold=True)
    assert take(core) == [] and len(core.waiting) == 3


def test_the_limit_is_per_broker_and_counts_a_batch_task_by_task() -> None:
    core = make(2)
    for i in range(2):
        core.handle(Received(i, p.worker_welcome(b"id", {"batch": True})[1:]), 0.0)
    take(core)
    tasks(core, 0, [b"a%d" % n for n in range(6)])  # one TASKS of six from broker 0
    assert core.begin(0.0) is not None
    assert take(core) == [(0, "BUSY", {}), (0, "BOUNCE", b"a4"), (0, "BOUNCE", b"a5")]
    tasks(core, 1, [b"b%d" % n for n in range(4)])  # broker 1 may still fill its own share
    assert take(core) == [] and len(core.waiting) == 7


def test_a_recalled_task_gives_its_place_back_at_once() -> None:
    core = dips_core(1)
    task(core, 0, b"k0")
    core.begin(0.0)
    for n in range(1, 4):
        task(core, 0, b"k%d" % n, hold=True)
    signal_recall = p.recall(b"id", b"k3")[1:]
    core.handle(Received(0, signal_recall), 0.1)
    task(core, 0, b"k4", now=0.1, hold=True)
    assert take(core) == [(0, "BOUNCE", b"k3")]  # asked for: no BUSY, and k4 is kept
    assert [t.key for t in core.waiting] == [b"k1", b"k2", b"k4"]


def test_a_standard_broker_past_the_limit_gets_overloaded_for_its_client() -> None:
    """7/MDP has no BOUNCE: a request a standard broker sends past the limit is answered
    with an error that says why, and nothing of it is kept."""
    core = make(1)
    task(core, 0, b"r0", dips=False)
    core.begin(0.0)
    for n in range(1, 6):
        task(core, 0, b"r%d" % n, dips=False)
    [(_, name, (key, body)), (_, _, (key2, _))] = take(core)
    assert (name, key, key2) == ("REPLY", b"r4", b"r5")
    assert body["error"]["code"] == "overloaded" and "prefetch 1" in body["error"]["message"]
    assert len(core.waiting) == 3


# --- the deadline heap ----------------------------------------------------------------------


def _flat_deadline(core: WorkerCore, now: float) -> float:
    """next_deadline as it was, a look at every link: what the heap must agree with."""
    t = core.timing
    deadline = now + t.heartbeat_interval_s
    for link in core.links:
        if link.mode is LinkMode.CLOSED:
            if core.phase is Phase.SERVING:
                deadline = min(deadline, link.retry_at)
            continue
        if link.mode is LinkMode.DIPS:
            due = link.sent_at + t.heartbeat_interval_s * 1.5
            silent = max(link.heard_at, link.task_until) + t.expiry_s
        else:
            due = link.sent_at + t.heartbeat_interval_s
            silent = link.heard_at + max(t.expiry_s, 7.5)
        deadline = min(deadline, due, max(silent, core.catchup.until))
    if now < core.catchup.until < deadline:  # (a shell that came back late: catching up)
        deadline = core.catchup.until
    task = core.current
    if task is not None:
        deadline = min(deadline, task.started_at + (
            t.time_limit_s if core.long else min(t.time_limit_s, t.busy_after_s)))
    else:
        deadline = min(deadline, now + IDLE_WAKE_S)  # (an idle worker looks at the clock)
    return deadline


@pytest.mark.parametrize("liveness", [3, 1])
def test_the_deadline_heap_agrees_with_a_look_at_every_link(liveness: int) -> None:
    """Links change in every way a broker can make them (tasks, big-task announcements,
    welcomes, refusals, DISCONNECT, drops, silence, heartbeats) while the worker runs,
    finishes and bounces tasks: the heap's next deadline is always what a look at every
    link says, and no link's entry is later than its deadline, so tick runs the same
    timers."""
    import random
    rng = random.Random(7)
    core = make(5, heartbeat_interval_s=0.5, heartbeat_liveness=liveness,
                reconnect_initial_s=0.05, reconnect_max_s=0.4)
    now, keys = 0.0, 0
    for step in range(4000):
        now += rng.choice([0.0, 0.001, 0.01, 0.1, 0.3, 0.7])
        i = rng.randrange(5)
        open_ = core.links[i].mode is not LinkMode.CLOSED
        move = rng.randrange(12)
        if move == 0 and open_:
            keys += 1
            task(core, i, b"k%d" % keys, now)
        elif move == 1 and open_:
            welcome(core, i, now)
        elif move == 2 and open_:
            signal(core, i, p.DISCONNECT, now)
        elif move == 3 and open_:
            core.handle(Received(i, p.sending_to_worker(b"id", 5_000_000)[1:]), now)
        elif move == 4:
            core.handle(Lost(i), now)
        elif move == 5 and open_:
            signal(core, i, p.HEARTBEAT, now)
        elif move == 6:
            core.begin(now)
        elif move == 7 and core.current is not None:
            core.task_done(BODY, now)
        elif move == 8 and open_ and rng.random() < 0.3:
            welcome(core, i, now, refused="full")
        elif move == 9:
            core.task_long(now)
        else:
            core.handle(Tick(), now)
        for action in take(core, raw=True):
            if isinstance(action, Open):
                core.handle(Opened(action.link), now)
        take(core)
        assert core.next_deadline(now) == _flat_deadline(core, now), step
        # and no link's entry is later than its deadline (tick runs what is due by its entry)
        assert all(core.timers.entry_of[n] <= core.timers.deadline(link, core.catchup.until)
                   for n, link in enumerate(core.links)), step
    assert len(core.timers.heap) < 100  # superseded entries do not pile up


def test_an_announcement_before_welcome_is_only_a_heartbeat() -> None:
    """A HEARTBEAT announcing a task on a link not yet welcomed (a hostile or broken broker)
    made the link's deadline due while a tick had nothing to do: the worker's loop spun
    until the announced task's time had passed (3.4 s at the default floor for 32 MiB)."""
    core = WorkerCore(["tcp://b"], b"echo", {"host": "h"}, Timing())
    core.start(0.0)
    core.take_actions()
    core.handle(Opened(0), 0.0)
    core.take_actions()
    core.handle(Received(0, p.sending_to_worker(b"id", 32 * 2**20)[1:]), 0.0)
    assert core.links[0].task_until == 0.0
    now = core.next_deadline(0.0)
    assert now > 0.0
    for _ in range(20):  # a due deadline is acted on: never due again with nothing done
        core.handle(Tick(), now)
        actions = core.take_actions()
        for action in actions:
            if isinstance(action, Open):  # (as the shell does at once)
                core.handle(Opened(action.link), now)
        later = core.next_deadline(now)
        assert actions or later > now, f"due at {now} and nothing done"
        now = max(now, later)



# --- checked starts (mdp.protocol.checks) -------------------------------------------------


def ask(core: WorkerCore, i: int, key: bytes, now: float = 0.0) -> None:
    core.handle(Received(i, p.ask(b"id", key)[1:]), now)


def go(core: WorkerCore, i: int, key: bytes, now: float = 0.0) -> None:
    core.handle(Received(i, p.go(b"id", key)[1:]), now)


def test_an_asked_task_starts_after_its_go_and_nothing_starts_before_the_go_of_its_reply() -> None:
    core = dips_core()
    ask(core, 0, b"s")
    task(core, 0, b"s")
    task(core, 1, b"o")  # another broker's, sent as to an idle worker
    assert core.begin(0.0) is None  # it waits for its GO
    assert take(core) == [(0, "CHECK", b"s")]
    assert core.begin(0.001) is None and take(core) == []  # still waiting
    go(core, 1, b"s", 0.001)  # (a GO from another broker is nobody's)
    assert core.begin(0.001) is None
    go(core, 0, b"s", 0.002)
    started = core.begin(0.002)
    assert started is not None and started.key == b"s"
    core.task_done(p.result_body(1), 0.003)  # never gathered, though a task waits
    assert take(core) == [(0, "REPLY", (b"s", {"result": 1})), (0, "CHECK", b"s")]
    assert core.begin(0.003) is None  # not before B has the reply
    go(core, 0, b"s", 0.004)
    nxt = core.begin(0.004)
    assert nxt is not None and nxt.key == b"o"


def test_a_task_that_came_alone_after_an_ask_takes_the_long_way() -> None:
    core = dips_core()
    ask(core, 0, b"s")
    frames = p.to_worker(b"id", b"s", BODY, True, 10_000)[1:]
    assert core.lone_task(0, frames[3], frames[5], frames[6:], 0.0) is None
    frames = p.to_worker(b"id", b"t", BODY, True, 10_000)[1:]
    assert core.lone_task(0, frames[3], frames[5], frames[6:], 0.0) is not None


def test_a_check_unanswered_hands_the_task_back_and_one_after_a_reply_lets_go() -> None:
    from mdp.checkedstarts import CHECK_WAIT_S

    core = dips_core()
    ask(core, 0, b"s")
    task(core, 0, b"s")
    task(core, 1, b"o")
    assert core.begin(0.0) is None
    take(core)
    assert core.next_deadline(0.1) <= CHECK_WAIT_S
    core.handle(Tick(), CHECK_WAIT_S)  # the broker is frozen: it gets its task back
    assert take(core) == [(0, "BUSY", {}), (0, "BOUNCE", b"s")]
    nxt = core.begin(CHECK_WAIT_S)
    assert nxt is not None and nxt.key == b"o"
    go(core, 0, b"s", 1.0)  # late: nothing happens
    assert core.current is nxt

    core = dips_core()
    ask(core, 0, b"s")
    task(core, 0, b"s")
    core.begin(0.0)
    go(core, 0, b"s", 0.0)
    core.begin(0.0)
    task(core, 1, b"o")
    core.task_done(p.result_body(1), 0.01)
    assert core.begin(0.01) is None
    take(core)
    core.handle(Tick(), 0.01 + CHECK_WAIT_S)
    nxt = core.begin(0.01 + CHECK_WAIT_S)
    assert nxt is not None and nxt.key == b"o"


def test_a_recall_or_a_lost_link_ends_the_wait_for_a_go() -> None:
    core = dips_core()
    ask(core, 0, b"s")
    task(core, 0, b"s")
    task(core, 1, b"o")
    core.begin(0.0)
    take(core)
    core.handle(Received(0, p.recall(b"id", b"s")[1:]), 0.01)
    assert take(core) == [(0, "BOUNCE", b"s")]
    nxt = core.begin(0.01)
    assert nxt is not None and nxt.key == b"o"

    core = dips_core()
    ask(core, 0, b"s")
    task(core, 0, b"s")
    task(core, 1, b"o")
    core.begin(0.0)
    core.handle(Lost(0), 0.01)
    nxt = core.begin(0.01)
    assert nxt is not None and nxt.key == b"o"


def test_an_ask_before_the_welcome_is_ignored() -> None:
    core = make()
    ask(core, 0, b"s")
    task(core, 0, b"s", dips=False)
    started = core.begin(0.0)
    assert started is not None and started.key == b"s"


def test_a_go_read_with_the_recall_of_its_task_hands_the_task_back_unrun() -> None:
    # frozen while it waited for the GO: its broker took it for silent, gave the task to
    # another worker and recalled it here; woken, the worker reads both at once
    core = dips_core()
    ask(core, 0, b"s")
    task(core, 0, b"s")
    task(core, 1, b"o")
    assert core.begin(0.0) is None
    assert take(core) == [(0, "CHECK", b"s")]
    go(core, 0, b"s", 2.0)
    core.handle(Received(0, p.recall(b"id", b"s")[1:]), 2.0)
    assert take(core) == [(0, "BOUNCE", b"s")]
    nxt = core.begin(2.0)
    assert nxt is not None and nxt.key == b"o"
    core.task_done(p.result_body(1), 2.01)
    assert core.begin(2.01) is None and core.current is None


def test_a_worker_woken_from_a_stop_reads_what_came_before_it_starts_anything() -> None:
    # stopped (SIGSTOP) while idle: its shell comes back long after the deadline it was
    # given, and libzmq hands it the TASK a broker sent meanwhile before the RECALL behind
    # it (the broker took the frozen worker for silent and gave the task to another)
    from mdp.workercatchup import CATCH_UP_S

    core = dips_core()
    deadline = core.next_deadline(0.0)
    now = deadline + 2.0
    task(core, 0, b"t", now)
    frames = p.to_worker(b"id", b"u", BODY, True, 10_000)[1:]
    assert core.lone_task(1, frames[3], frames[5], frames[6:], now) is None  # not at once
    assert core.begin(now) is None
    assert core.next_deadline(now) <= now + CATCH_UP_S
    core.handle(Tick(), now)  # (heartbeats are due)
    assert not any(name == "CLOSE" for _, name, _ in take(core))  # no broker judged silent
    core.handle(Received(0, p.recall(b"id", b"t")[1:]), now + 0.001)
    assert take(core) == [(0, "BOUNCE", b"t")]
    assert core.begin(now + 0.01) is None  # still catching up
    started = core.begin(now + CATCH_UP_S)
    assert started is None and core.current is None  # (the lone task went to receive's way)
    task(core, 1, b"v", now + CATCH_UP_S)
    started = core.begin(now + CATCH_UP_S)
    assert started is not None and started.key == b"v"


def test_a_long_task_is_not_taken_for_a_stop() -> None:
    core = dips_core()
    core.next_deadline(0.0)
    task(core, 0, b"t", 0.0)
    started = core.begin(0.0)
    assert started is not None
    core.task_done(p.result_body(1), 5.0)  # ran 5 s
    task(core, 0, b"u", 5.0)
    nxt = core.begin(5.0)
    assert nxt is not None and nxt.key == b"u"


def test_a_worker_stopped_in_a_handler_reads_what_came_before_it_starts_the_next() -> None:
    from mdp.workercatchup import CATCH_UP_S

    core = dips_core()
    task(core, 0, b"t", 0.0)
    task(core, 1, b"u", 0.0, hold=True)  # another broker's, held behind it
    assert core.begin(0.0) is not None
    core.task_long(2.0)  # the sentinel's turn at busy_after came only now: stopped
    core.task_done(p.result_body(1), 2.0)
    assert core.begin(2.0) is None  # the RECALL of u may be right behind
    core.handle(Received(1, p.recall(b"id", b"u")[1:]), 2.001)
    assert take(core)[-1] == (1, "BOUNCE", b"u")
    assert core.begin(2.0 + CATCH_UP_S) is None and core.current is None

    core = dips_core()  # stopped once the sentinel watched it (past busy_after)
    task(core, 0, b"t", 0.0)
    task(core, 1, b"u", 0.0, hold=True)
    assert core.begin(0.0) is not None
    core.task_long(0.006)
    core.next_deadline(0.006)  # (the sentinel asks)
    core.task_done(p.result_body(1), 3.0)
    assert core.begin(3.0) is None
    nxt = core.begin(3.0 + CATCH_UP_S)
    assert nxt is not None and nxt.key == b"u"
