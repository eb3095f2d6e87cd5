"""Checked starts, the worker's side, on their own: what may start, and when (an explicit
clock, no core, no sockets). The core's use of them is in tests/test_workercore.py."""

from __future__ import annotations

import math
import random

from mdp.checkedstarts import CHECK_WAIT_S, MAX_ASKS, Check, CheckedStarts


def test_nothing_asked_is_inactive_and_holds_nothing_back() -> None:
    checks = CheckedStarts()
    assert not checks.active
    assert not checks.holds_back(0, b"t")
    assert not checks.must_check(0, b"t", None, 0.0)
    assert checks.go_by() == math.inf
    assert checks.overdue(10.0) is None


def test_an_asked_task_is_checked_then_cleared_by_its_go_and_the_go_is_spent_at_its_start() -> None:
    checks = CheckedStarts()
    checks.ask(0, b"s")
    assert checks.active and checks.asked(0, b"s")
    assert checks.holds_back(0, b"s") and not checks.holds_back(0, b"other")
    assert checks.must_check(0, b"s", None, 0.0)
    checks.checked(0, b"s", 1.0)
    assert checks.checking == Check(0, b"s", 1.0)
    assert checks.holds_back(0, b"other")  # nothing starts while a CHECK waits
    assert checks.go_by() == 1.0 + CHECK_WAIT_S
    checks.go(1, b"s")  # another broker's GO is nobody's
    checks.go(0, b"x")  # nor is one of another task
    assert checks.checking is not None
    checks.go(0, b"s")
    assert checks.checking is None and checks.cleared == (0, b"s")
    assert not checks.must_check(0, b"s", None, 1.1)  # its GO came: it starts
    checks.started()
    assert checks.cleared is None and checks.asked(0, b"s")  # (its answer CHECKs again)


def test_an_answered_task_is_forgotten_and_checked_again_and_its_go_clears_nothing() -> None:
    checks = CheckedStarts()
    checks.ask(0, b"s")
    assert checks.answered(0, b"s")
    assert not checks.answered(0, b"s")  # once
    assert not checks.active
    checks.checked(0, b"s", 2.0)  # the CHECK after its reply
    assert checks.active
    checks.go(0, b"s")
    assert checks.cleared is None and not checks.active


def test_an_expired_task_is_answered_without_a_check() -> None:
    checks = CheckedStarts()
    checks.ask(0, b"s")
    assert checks.must_check(0, b"s", 5.0, 4.9)
    assert not checks.must_check(0, b"s", 5.0, 5.0)


def test_a_check_without_a_go_is_given_up_after_check_wait_s() -> None:
    checks = CheckedStarts()
    checks.ask(0, b"s")
    checks.checked(0, b"s", 1.0)
    assert checks.overdue(1.0 + CHECK_WAIT_S - 0.001) is None
    assert checks.overdue(1.0 + CHECK_WAIT_S) == Check(0, b"s", 1.0)
    assert checks.checking is None and checks.asked(0, b"s")  # (the core hands it back)
    assert checks.overdue(9.0) is None
    checks.drop(0, b"s")
    assert not checks.active


def test_a_task_handed_back_or_a_closed_link_takes_its_asks_check_and_go_along() -> None:
    checks = CheckedStarts()
    checks.ask(0, b"s")
    checks.ask(1, b"u")
    checks.checked(0, b"s", 0.0)
    checks.forget(0, b"s")
    assert checks.checking is None and not checks.asked(0, b"s") and checks.asked(1, b"u")
    checks.checked(1, b"u", 0.0)
    checks.go(1, b"u")
    checks.ask(0, b"t")
    checks.forget_link(1)
    assert checks.cleared is None and list(checks.asks) == [(0, b"t")]
    checks.checked(0, b"t", 0.0)
    checks.clear()
    assert not checks.active and not checks.asks and checks.checking is None


def test_the_oldest_ask_is_forgotten_past_max_asks() -> None:
    checks = CheckedStarts()
    for n in range(MAX_ASKS + 1):
        checks.ask(0, b"%d" % n)
    assert len(checks.asks) == MAX_ASKS
    assert not checks.asked(0, b"0") and checks.asked(0, b"%d" % MAX_ASKS)


def test_active_says_whether_anything_is_kept_after_any_sequence_of_changes() -> None:
    """``active`` is the one thing the worker core reads per task: it must be true whenever
    an ASK, a CHECK or a GO is kept, and false otherwise."""
    rng = random.Random(3)
    checks = CheckedStarts()
    for _ in range(5000):
        i, key, now = rng.randrange(2), b"%d" % rng.randrange(4), rng.random() * 2
        move = rng.randrange(9)
        if move == 0:
            checks.ask(i, key)
        elif move == 1:
            checks.checked(i, key, now)
        elif move == 2:
            checks.go(i, key)
        elif move == 3:
            checks.started()
        elif move == 4:
            checks.answered(i, key)
        elif move == 5:
            checks.overdue(now)
        elif move == 6:
            checks.forget(i, key)
        elif move == 7:
            checks.forget_link(i)
        elif rng.random() < 0.1:
            checks.clear()
        kept = bool(checks.asks) or checks.checking is not None or checks.cleared is not None
        assert checks.active is kept
