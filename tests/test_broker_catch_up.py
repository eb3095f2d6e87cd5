"""The broker's loop reads what waits in its socket before it handles any of it, so that a
client's CANCEL keeps the requests it names, waiting in front of it, from every worker;
and a loop that was stopped holds dispatch while it catches up (``mdp.broker``). Driven
in-process (``tests/inprockit.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgpack
import pytest
import zmq
from inprockit import dealer, inproc_broker

from mdp import protocol as p
from mdp.broker import CATCH_UP_S, STOPPED_GAP_S, WAITED_S, Broker, _came_alone

BODY = msgpack.packb({"x": 1})


@pytest.fixture
def broker(zctx: zmq.Context) -> Iterator[Broker]:
    with inproc_broker(zctx) as b:
        yield b


def tasks(worker: zmq.Socket) -> list[bytes]:
    """The bodies of the tasks waiting at ``worker`` (inproc: all there already)."""
    found = []
    while worker.poll(0):
        frames = worker.recv_multipart()
        if frames[2] == p.TASK:
            found.append(frames[-1])
    return found


def given(broker: Broker, worker: zmq.Socket, wait_s: float = 10.0) -> list[bytes]:
    """Run the broker's loop until it has given ``worker`` a task (TimeoutError after
    ``wait_s``); the tasks given by then. (A loop starved on a loaded machine for longer
    than STOPPED_GAP_S takes itself for stopped and holds dispatch for a while: passes are
    run until something comes, not a fixed number of them.)"""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        broker.run_once(0)  # (a receive told not to wait never takes a message for a lone one)
        found = tasks(worker)
        if found:
            return found
    raise TimeoutError(f"the broker gave the worker nothing in {wait_s:g} s")


def attached(broker: Broker, zctx: zmq.Context) -> tuple[zmq.Socket, zmq.Socket]:
    """A DIPS worker and a DIPS client, each welcomed."""
    worker, client = dealer(zctx), dealer(zctx)
    worker.send_multipart(p.ready(b"echo", {"pid": 1}))
    client.send_multipart(p.client_hello())
    for _ in range(10):
        broker.run_once(0)
    assert worker.poll(1000) and worker.recv_multipart()[2] == p.WELCOME
    assert client.poll(1000) and client.recv_multipart()[2] == p.CWELCOME
    return worker, client


def test_a_cancel_waiting_behind_its_requests_keeps_them_from_the_worker(
        broker: Broker, zctx: zmq.Context) -> None:
    worker, client = attached(broker, zctx)
    # what waited in the socket: requests the client then gave up, and one more
    for rid in (1, 2):
        client.send_multipart(p.client_submit(b"echo", rid, 60_000, [b"gone%d" % rid]))
    client.send_multipart(p.client_cancel([1, 2]))
    client.send_multipart(p.client_submit(b"echo", 3, 60_000, [BODY]))
    assert given(broker, worker) == [BODY]
    worker.close()
    client.close()


def test_a_loop_that_was_stopped_gives_nothing_out_until_it_caught_up(
        broker: Broker, zctx: zmq.Context) -> None:
    worker, client = attached(broker, zctx)
    assert broker._awake_at is not None
    broker._awake_at -= 2 * STOPPED_GAP_S  # as if it had been stopped since its last pass
    client.send_multipart(p.client_submit(b"echo", 1, 60_000, [BODY]))  # it came alone...
    assert broker.run_once(0) == 1
    assert tasks(worker) == []  # ...yet waits: a CANCEL of it may still be on its way
    assert given(broker, worker) == [BODY]  # once it has caught up (CATCH_UP_S)
    worker.close()
    client.close()


def test_a_loop_that_was_stopped_reads_the_workers_heartbeats_before_judging_them(
        broker: Broker, zctx: zmq.Context) -> None:
    """Woken from a stop longer than a worker's expiry, the broker's heartbeat timer is
    due at once: it used to run before the socket was read, and forgot every worker whose
    HEARTBEATs waited there ("expired"), to have them register again."""
    worker, client = attached(broker, zctx)
    [record] = broker.core.dispatcher.workers.values()
    broker._awake_at -= 10.0  # as if stopped for 10 s since its last pass, during which
    record.expires_at -= 10.0  # the worker's expiry passed, and its heartbeat came
    broker.core._next_heartbeat = 0.0
    worker.send_multipart([b"", p.WORKER, p.HEARTBEAT])
    broker.run_once(0)
    broker.run_once(round(CATCH_UP_S * 2000))  # caught up
    broker.run_once(0)  # the timers' turn
    assert list(broker.core.dispatcher.workers.values()) == [record]
    worker.close()
    client.close()


def test_a_broker_made_long_before_its_loop_first_runs_is_not_taken_for_stopped(
        zctx: zmq.Context) -> None:
    with inproc_broker(zctx, "inproc://catch-up-late") as broker:
        broker._looked(broker.core.started + 10.0)  # its first look, long after it was made
        assert broker._catch_up_until is None


def test_a_message_the_receive_waited_for_came_alone_unless_it_waited_past_its_timeout(
) -> None:
    assert not _came_alone(WAITED_S / 2, 100)  # it was there: others may be behind it
    assert _came_alone(0.05, 100)  # it came while the receive waited
    assert not _came_alone(0.001, 0)  # a receive told not to wait was slow (load)
    assert not _came_alone(0.1 + STOPPED_GAP_S, 100)  # the process was stopped meanwhile
