"""A worker taken for silent (frozen) whose first word when it wakes is its late reply: the
reply answers the request, and the request, queued again meanwhile (no other worker was
free), is not given back to that worker as a new task before the reply is read (it ran the
request twice: seen in ``tests/helpers/fault_mix.py`` with ``stop-worker``). With an
explicit clock and no sockets."""

from __future__ import annotations

from test_brokercore import C1, SVC, W1, feed, make, out, ready, running_at, tasks_in, tick, to

from mdp import protocol as p
from mdp.dispatch import WorkerState


def test_a_late_reply_that_wakes_a_silent_worker_is_taken_before_anything_goes_to_it() -> None:
    core = make()
    ready(core, W1)
    first = running_at(core, W1, 1, 0.0)
    assert tasks_in([m for _, m in tick(core, 0.85)]) == []  # silent; its request waits
    assert core.dispatcher.workers[W1].silent
    sent = feed(core, W1, p.reply(first.key, [b"late"]), 0.9)
    assert to(C1, sent) == [p.Result(SVC, [b"late"], 1)]
    assert tasks_in(to(W1, sent)) == []  # not the request it has just answered
    assert core.dispatcher.workers[W1].state is WorkerState.IDLE
    assert out(core) == [] and core.dispatcher.queued == 0


def test_late_replies_in_one_replies_are_taken_before_anything_goes_to_it() -> None:
    core = make()
    ready(core, W1, batch=True, prefetch=1)
    first = running_at(core, W1, 1, 0.0)
    tick(core, 0.85)
    assert core.dispatcher.workers[W1].silent
    sent = feed(core, W1, p.replies([first.key], [b"late"]), 0.9)
    assert p.Result(SVC, [b"late"], 1) in to(C1, sent)
    assert tasks_in(to(W1, sent)) == []
