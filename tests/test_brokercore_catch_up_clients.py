"""A broker that caught up after a stop asks, before it gives anything out, whether the
clients whose requests it queued meanwhile are still there: an unasked PONG to each, and a
client a send fails for (it closed the connection: it failed over while the broker was
stopped, and its CANCEL was thrown away with its socket) has its requests dropped
unworked. With an explicit clock and no sockets; the ``big`` case of
``tests/test_frozen_broker_resume.py`` is the same with real processes."""

from __future__ import annotations

from test_brokercore import BODY, C1, C2, W1, lost, make, out, ready, submit, tasks_in

from mdp import protocol as p


def test_requests_of_a_client_gone_while_dispatch_was_held_never_reach_a_worker() -> None:
    core = make()
    ready(core, W1, batch=True, prefetch=4)
    core.hold()  # the shell found it had been stopped
    assert submit(core, C1, 1, 1.0) == []  # queued, not given out
    assert submit(core, C1, 2, 1.0) == []
    assert submit(core, C2, 7, 1.0) == []
    core.check_clients(1.1)
    sent = out(core)
    pongs = {who: m for who, m in sent if isinstance(m, p.Pong)}
    assert set(pongs) == {C1, C2} and len(sent) == 2  # one each, and nothing else
    assert pongs[C1].lost == [] and pongs[C1].instance == "one"
    lost(core, C1, 1.1)  # C1's connection is gone: the send to it failed
    core.release(1.1)
    tasks = tasks_in([m for who, m in out(core) if who == W1])
    assert [t.body for t in tasks] == [[BODY]]  # only C2's
    assert core.dispatcher.counters.undeliverable == 1


def test_a_catch_up_with_nothing_queued_asks_nobody() -> None:
    core = make()
    ready(core, W1)
    core.hold()
    core.check_clients(1.0)
    assert out(core) == []
    core.release(1.0)
    submit(core, C1, 1, 1.1)  # dispatch is back
    assert core.dispatcher.busy
