"""Catch-up after a stop, on its own (an explicit clock, no core, no sockets). The core's use
of it is in tests/test_workercore.py and, with real SIGSTOPs, tests/test_frozen_worker_recall.py."""

from __future__ import annotations

import math

from mdp.workercatchup import CATCH_UP_S, IDLE_WAKE_S, STOPPED_GAP_S, CatchUp


def test_a_fresh_worker_is_neither_late_nor_catching_up() -> None:
    catchup = CatchUp()
    assert catchup.late_after == math.inf
    assert not catchup.catching_up(0.0)


def test_a_shell_late_by_more_than_the_gap_catches_up_for_catch_up_s() -> None:
    catchup = CatchUp()
    deadline = 1.0
    catchup.late_after = deadline + STOPPED_GAP_S  # (what next_deadline sets)
    assert not 1.0 + STOPPED_GAP_S > catchup.late_after  # on time, or a little late
    now = 3.0
    assert now > catchup.late_after
    catchup.woke(now)
    assert catchup.late_after == math.inf  # (once: the next deadline is a new promise)
    assert catchup.catching_up(now) and catchup.catching_up(now + CATCH_UP_S - 0.001)
    assert not catchup.catching_up(now + CATCH_UP_S)


def test_the_sentinels_turn_is_late_only_past_busy_after_and_the_gap() -> None:
    catchup = CatchUp()
    assert not catchup.late_in_task(1.0, 0.005, 1.0 + 0.005 + STOPPED_GAP_S)
    assert catchup.late_in_task(1.0, 0.005, 1.0 + 0.005 + STOPPED_GAP_S + 0.001)


def test_an_idle_worker_is_woken_often_enough_to_find_any_stop_a_broker_would_notice() -> None:
    # a broker takes a worker for silent after --frozen-after (0.8 s by default): a stop that
    # long is always later than the idle deadline plus the gap, so it is found
    assert IDLE_WAKE_S + STOPPED_GAP_S < 0.8
