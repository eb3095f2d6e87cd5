"""A worker's per-link timers on their own (an explicit clock, no core, no sockets). The
heap against a look at every link, driven through the core, is in tests/test_workercore.py."""

from __future__ import annotations

import math

from mdp.clock import Backoff
from mdp.linktimers import STANDARD_EXPIRY_S, LinkTimers
from mdp.workerstate import Link, LinkMode, Timing


def links(n: int) -> list[Link]:
    return [Link(f"tcp://b{i}", Backoff(0.1, 5.0)) for i in range(n)]


def test_a_closed_link_is_retried_at_its_retry_time_while_the_worker_serves() -> None:
    ls = links(2)
    timers = LinkTimers(ls, Timing())
    assert timers.earliest(0.0) == 0.0  # (never opened: retried at once)
    assert timers.due(0.0) == [0, 1]
    ls[0].retry_at, ls[1].retry_at = 0.3, 0.2
    timers.schedule(0, 0.0)
    timers.schedule(1, 0.0)
    assert timers.earliest(0.0) == 0.2
    timers.retrying = False  # draining: closed links stay closed
    assert timers.earliest(0.0) == math.inf


def test_a_dips_link_heartbeats_later_and_is_silent_after_the_expiry() -> None:
    t = Timing(heartbeat_interval_s=1.0, heartbeat_liveness=3)
    [link] = ls = links(1)
    timers = LinkTimers(ls, t)
    link.mode, link.sent_at, link.heard_at = LinkMode.DIPS, 10.0, 9.0
    assert timers.heartbeat_due(link) == 11.5  # the broker's burst comes first
    assert timers.expiry_s(link) == 3.0
    assert timers.deadline(link, 0.0) == 11.5
    link.sent_at = 20.0
    assert timers.deadline(link, 0.0) == 12.0  # its broker is silent by then
    link.task_until = 14.0  # a big task announced may still be on its way
    assert timers.deadline(link, 0.0) == 17.0


def test_a_standard_broker_gets_the_reference_expiry_at_least() -> None:
    [link] = ls = links(1)
    timers = LinkTimers(ls, Timing(heartbeat_interval_s=0.5))
    link.mode, link.sent_at, link.heard_at = LinkMode.STANDARD, 10.0, 10.0
    assert timers.heartbeat_due(link) == 10.5
    assert timers.expiry_s(link) == STANDARD_EXPIRY_S
    link.task_until = 99.0  # (announcements are for DIPS links only)
    link.sent_at = 100.0
    assert timers.deadline(link, 0.0) == 10.0 + STANDARD_EXPIRY_S


def test_no_broker_is_judged_silent_before_the_catch_up_ends() -> None:
    [link] = ls = links(1)
    timers = LinkTimers(ls, Timing(heartbeat_interval_s=1.0))
    link.mode, link.sent_at, link.heard_at = LinkMode.DIPS, 50.0, 0.0
    assert timers.deadline(link, 0.0) == 3.0
    assert timers.deadline(link, 7.05) == 7.05


def test_the_heap_moves_entries_whose_deadline_moved_and_drops_superseded_ones() -> None:
    ls = links(3)
    timers = LinkTimers(ls, Timing(heartbeat_interval_s=1.0))
    timers.due(0.0)
    for i, link in enumerate(ls):
        link.mode, link.sent_at, link.heard_at = LinkMode.DIPS, 0.0, 0.0
        timers.schedule(i, 0.0)
    assert timers.earliest(0.0) == 1.5
    ls[0].sent_at = ls[1].sent_at = 1.0  # (sends only move deadlines later: no schedule)
    assert timers.earliest(0.0) == 1.5  # link 2's
    ls[2].sent_at = 1.2
    assert timers.earliest(0.0) == 2.5  # links 0 and 1, moved when they reached the top
    assert timers.due(2.5) == [0, 1]
    assert timers.entry_of[0] == timers.entry_of[1] == math.inf
    timers.schedule(0, 0.0)
    timers.schedule(1, 0.0)
    assert timers.earliest(0.0) == 2.5
    assert len(timers.heap) <= 2 * len(ls)
