"""The door's last word on a call into DIPS: past its deadline and a grace, it ends as a
Timeout whatever the client does; a cancel from elsewhere stays a cancel. The same for a
call placed with a callback (``Dips.start``, each job's path)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mdp.errors import Timeout
from mdp_gearman import dips as dips_module
from mdp_gearman.dips import Dips


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dips_module, "GRACE_S", 0.1)
    monkeypatch.setattr(dips_module, "SWEEP_S", 0.02)


def _stuck_dips(monkeypatch: pytest.MonkeyPatch, started: asyncio.Event) -> Dips:
    dips = Dips(["tcp://127.0.0.1:1"], timeout_s=0.1)

    async def never(*args: Any, **kwargs: Any) -> Any:  # a client that never answers
        started.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(dips._client, "send", never)
    return dips


@pytest.mark.usefixtures("quick")
def test_a_call_the_client_never_ends_is_a_timeout_after_the_grace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        dips = _stuck_dips(monkeypatch, asyncio.Event())
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(Timeout, match="no reply for 'svc' within 0.1s"):
            await asyncio.wait_for(dips.call("svc", {}), 5.0)
        # never before the deadline and the grace (wait_for's 5 s bounds how late: past
        # it, wait_for's own TimeoutError, not the door's Timeout)
        assert loop.time() - began >= 0.2
        assert not dips._watchdog.watched
        await dips.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("quick")
def test_a_cancel_from_elsewhere_stays_a_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        started = asyncio.Event()
        dips = _stuck_dips(monkeypatch, started)
        task = asyncio.get_running_loop().create_task(dips.call("svc", {}))
        await asyncio.wait_for(started.wait(), 5.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5.0)
        assert not dips._watchdog.watched
        await dips.close()

    asyncio.run(scenario())


def test_a_call_answered_in_time_is_its_answer_and_leaves_nothing_watched(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        dips = Dips(["tcp://127.0.0.1:1"], timeout_s=5.0)

        async def answer(*args: Any, **kwargs: Any) -> Any:
            return b"card"

        monkeypatch.setattr(dips._client, "send", answer)
        assert await dips.call("svc", {}) == b"card"
        assert not dips._watchdog.watched
        await dips.close()

    asyncio.run(scenario())


class _Placed:
    """What the client's start() returns (only ``done`` is read)."""

    done = False


def _silent_start(monkeypatch: pytest.MonkeyPatch, dips: Dips,
                  cancelled: list[Any]) -> list[Any]:
    """A client whose start() places the call and never calls it back."""
    callbacks: list[Any] = []

    def start(service: str, request: Any, on_done: Any, **kwargs: Any) -> Any:
        callbacks.append(on_done)
        return _Placed()

    monkeypatch.setattr(dips._client, "start", start)
    monkeypatch.setattr(dips._client, "cancel", cancelled.append)
    return callbacks


@pytest.mark.usefixtures("quick")
def test_a_started_call_the_client_never_ends_is_a_timeout_after_the_grace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        dips = Dips(["tcp://127.0.0.1:1"], timeout_s=0.1)
        cancelled: list[Any] = []
        _silent_start(monkeypatch, dips, cancelled)
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[Any] = loop.create_future()
        began = loop.time()
        call = dips.start("svc", {}, ended.set_result)
        outcome = await asyncio.wait_for(ended, 5.0)
        assert isinstance(outcome, Timeout) and "no reply for 'svc' within 0.1s" in str(outcome)
        assert loop.time() - began >= 0.2  # never before the deadline and the grace
        assert len(cancelled) == 1  # the client was told to drop it
        assert call.over and not dips._watchdog.watched
        call.finish(b"late")  # a late answer after the Timeout changes nothing
        await dips.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("quick")
def test_a_started_call_cancelled_or_answered_is_never_called_back_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        dips = Dips(["tcp://127.0.0.1:1"], timeout_s=0.1)
        cancelled: list[Any] = []
        callbacks = _silent_start(monkeypatch, dips, cancelled)
        outcomes: list[Any] = []
        gone = dips.start("svc", {}, outcomes.append)
        gone.cancel()
        answered = dips.start("svc", {}, outcomes.append)
        callbacks[1](b"card")  # the client's answer
        assert outcomes == [b"card"] and len(cancelled) == 1
        assert not dips._watchdog.watched  # neither is watched any more
        await asyncio.sleep(0.5)  # past both deadlines and the grace: no Timeout comes
        assert outcomes == [b"card"] and gone.over and answered.over
        await dips.close()

    asyncio.run(scenario())


@pytest.mark.usefixtures("quick")
def test_a_started_call_ends_as_a_timeout_even_when_the_clients_cancel_fails(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog tells the job it is over before anything else can go wrong: a client
    whose cancel raises (a bug in it) must not leave the job unanswered, holding its slot."""
    async def scenario() -> None:
        dips = Dips(["tcp://127.0.0.1:1"], timeout_s=0.1)
        _silent_start(monkeypatch, dips, [])

        def failing_cancel(call: Any) -> None:
            raise RuntimeError("the client's cancel failed")

        monkeypatch.setattr(dips._client, "cancel", failing_cancel)
        ended: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        dips.start("svc", {}, ended.set_result)
        outcome = await asyncio.wait_for(ended, 5.0)
        assert isinstance(outcome, Timeout)
        await dips.close()

    asyncio.run(scenario())


def test_a_call_whose_start_raised_is_never_called_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that placed the call and then raised (the door answers the job `internal`
    at once): the call's later answer must not end the job a second time."""
    async def scenario() -> None:
        dips = Dips(["tcp://127.0.0.1:1"], timeout_s=0.1)
        callbacks: list[Any] = []

        def placed_then_failed(service: str, request: Any, on_done: Any, **kwargs: Any) -> Any:
            callbacks.append(on_done)
            raise RuntimeError("failed after placing the call")

        monkeypatch.setattr(dips._client, "start", placed_then_failed)
        outcomes: list[Any] = []
        with pytest.raises(RuntimeError):
            dips.start("svc", {}, outcomes.append)
        callbacks[0](b"card")  # the placed call's answer comes after all
        assert outcomes == [] and not dips._watchdog.watched
        await dips.close()

    asyncio.run(scenario())
