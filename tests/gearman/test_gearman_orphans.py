"""A client that joins a job (same function and unique id) just as the job's only other
client leaves is still answered: the Gateway on its own, with a fake DIPS, no sockets.

The job's task was cancelled when its last client left; a SUBMIT_JOB with the same unique id
read in the same pass of the loop (before the task ran its cancellation) joined the job,
and the cancelled task then forgot the job with its new client in it: that client got
JOB_CREATED and never an answer (it waited for ever, or to its own timeout)."""

from __future__ import annotations

import asyncio
from typing import Any

from mdp_gearman import packets as g
from mdp_gearman.config import parse_args
from mdp_gearman.packets import T
from mdp_gearman.server import Gateway


class FakeDips:
    """DIPS as the gateway sees it: each call waits for the test to answer it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], asyncio.Future[Any]]] = []

    async def call(self, service: str, request: dict[str, Any], **_: Any) -> Any:
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.calls.append((service, request, answer))
        return await answer

    def start(self, service: str, request: dict[str, Any], on_done: Any, **_: Any) -> Any:
        """The same with no task (Dips.start): the answer goes to ``on_done``."""
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.calls.append((service, request, answer))
        return FakeCall(answer, on_done)

    async def broker_status(self) -> list[Any]:
        return []


class FakeCall:
    """A call placed by FakeDips.start (what the gateway uses of a DipsCall)."""

    def __init__(self, answer: asyncio.Future[Any], on_done: Any) -> None:
        self.over = False
        self._answer = answer
        self._on_done = on_done
        answer.add_done_callback(self._answered)

    def _answered(self, answer: asyncio.Future[Any]) -> None:
        if not self.over and not answer.cancelled():
            self.over = True
            self._on_done(answer.exception() or answer.result())

    def cancel(self) -> None:
        self.over = True
        self._answer.cancel()


class FakeConn:
    """What the gateway uses of a client connection."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.waiting: set[Any] = set()
        self.jobs = 0
        self.exceptions = False
        self.jobs_full = False
        self.peer = "test"

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def job_added(self) -> None:
        self.jobs += 1

    def job_done(self, job: Any) -> None:
        self.waiting.discard(job)
        self.jobs -= 1

    def types(self) -> list[int]:
        out, data = [], b"".join(self.sent)
        while len(data) >= g.HEADER_BYTES:
            _, kind, size = g.HEADER.unpack_from(data)
            out.append(kind)
            data = data[g.HEADER_BYTES + size:]
        return out


async def _until(predicate: Any, rounds: int = 50) -> None:
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the gateway did not get there")


def test_a_client_joining_as_the_last_one_leaves_is_answered() -> None:
    async def scenario() -> None:
        config, _ = parse_args(["--broker", "tcp://127.0.0.1:1"])
        dips = FakeDips()
        gateway = Gateway(config, dips, None)  # type: ignore[arg-type]
        submit = g.Packet(T.SUBMIT_JOB, (b"svc", b"same-unique", b"raw bytes"))
        first, second = FakeConn(), FakeConn()
        try:
            gateway.submit(first, submit)  # type: ignore[arg-type]
            await _until(lambda: len(dips.calls) == 1)
            # in one pass of the loop: the first client's connection drops, and the second
            # client's SUBMIT_JOB with the same unique id is read
            gateway.forget(first)  # type: ignore[arg-type]
            gateway.submit(second, submit)  # type: ignore[arg-type]
            assert second.types() == [T.JOB_CREATED]
            # the job runs for the second client (again, or still) and it hears the end
            await _until(lambda: any(not f.done() for _, _, f in dips.calls))
            for _, _, answer in dips.calls:
                if not answer.done():
                    answer.set_result({"image": b"done"})
            await _until(lambda: T.WORK_COMPLETE in second.types())
            assert second.jobs == 0
            assert gateway.table.by_handle == {} and gateway.table.by_unique == {}
        finally:
            await gateway.close()

    asyncio.run(scenario())


def test_a_stopping_door_refuses_what_it_could_not_answer(tmp_path: Any) -> None:
    """Draining (SIGTERM), the door refuses a new foreground job, and one that would join a
    background job (which may wait in the door, never to start), ERROR ``shutting_down``; a
    foreground job in flight may still be joined: it is answered before the door closes."""
    from mdp_gearman.outbox import Outbox

    async def scenario() -> None:
        config, _ = parse_args(["--broker", "tcp://127.0.0.1:1"])
        dips = FakeDips()
        outbox = Outbox(tmp_path / "state")
        gateway = Gateway(config, dips, outbox)  # type: ignore[arg-type]
        client = FakeConn()
        try:
            gateway.submit(client, g.Packet(T.SUBMIT_JOB_BG, (b"svc", b"bg", b"raw")))  # type: ignore[arg-type]
            gateway.submit(client, g.Packet(T.SUBMIT_JOB, (b"svc", b"fg", b"raw")))  # type: ignore[arg-type]
            assert client.types() == [T.JOB_CREATED, T.JOB_CREATED]
            gateway.stopping = True
            for unique in (b"bg", b"new"):  # joins the background job; a new job
                late = FakeConn()
                gateway.submit(late, g.Packet(T.SUBMIT_JOB, (b"svc", unique, b"raw")))  # type: ignore[arg-type]
                assert late.types() == [T.ERROR] and b"shutting_down" in late.sent[0]
            joiner = FakeConn()
            gateway.submit(joiner, g.Packet(T.SUBMIT_JOB, (b"svc", b"fg", b"raw")))  # type: ignore[arg-type]
            assert joiner.types() == [T.JOB_CREATED]  # the job in flight: it is waited for
            await _until(lambda: len(dips.calls) == 1)  # the foreground job, in DIPS
            dips.calls[0][2].set_result({"image": b"done"})
        finally:
            await gateway.close()
            outbox.close()
        assert T.WORK_COMPLETE in joiner.types()

    asyncio.run(scenario())
