"""The worker side without sockets: Gearman packets in, Gearman packets and MDP frames out.

A :class:`GearmanWorker` is fed packets and the time; its :class:`ProxyCore` is fed the
brokers' frames by hand (the fake driver below only records what the door would do).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from mdp import protocol as p
from mdp.actions import Open, Opened, Received, Send, Tick
from mdp.errors import RequestError
from mdp_gearman import mapping, phpser
from mdp_gearman import packets as g
from mdp_gearman.packets import T
from mdp_gearman.proxycore import ProxyCore
from mdp_gearman.workers import (
    EXCEPTION_CODE,
    FAIL_CODE,
    GRAB_GRACE_S,
    GearmanWorker,
    LinkBudget,
    WorkerSettings,
)

BROKERS = ("tcp://a:1", "tcp://b:2")


class FakeDriver:
    """Records what a LinkDriver would do with the core's actions."""

    def __init__(self, core: ProxyCore) -> None:
        self.core = core
        self.sent: list[tuple[int, list[bytes]]] = []
        self.closed: bool | None = None  # abrupt?
        self.drained = False

    def start(self) -> None:
        self.core.start(0.0)
        for action in self.core.take_actions():
            if isinstance(action, Open):  # the socket is up at once here
                self.core.handle(Opened(action.link), 0.0)
        self.pump()

    def pump(self) -> None:
        self.sent += [(a.link, a.frames) for a in self.core.take_actions()
                      if isinstance(a, Send)]

    def drain(self) -> None:
        self.drained = True

    def close(self, abrupt: bool) -> None:
        self.closed = abrupt

    def take(self) -> list[tuple[int, list[bytes]]]:
        self.pump()
        sent, self.sent = self.sent, []
        return sent


class Rig:
    """One Gearman worker connection, its packets and its drivers."""

    def __init__(self, **settings: Any) -> None:
        self.out: list[tuple[int, list[bytes]]] = []
        self.drivers: list[FakeDriver] = []
        self.numbers = iter(range(1, 1000, 2))
        settings = {"allowed": ("*",), **settings}  # the door's --worker-functions '*'
        self.worker = GearmanWorker(WorkerSettings(BROKERS, **settings), "10.0.0.9:5000",
                                    self._send, lambda: b"H:t:%d" % next(self.numbers),
                                    self._driver)

    def _send(self, data: bytes) -> None:
        kind, size = int.from_bytes(data[4:8], "big"), int.from_bytes(data[8:12], "big")
        assert data[:4] == g.RES and len(data) == 12 + size  # the door's own bytes
        counts: dict[int, int] = {T.JOB_ASSIGN: 3, T.JOB_ASSIGN_UNIQ: 4, T.ERROR: 2}
        count = counts.get(kind, 0)
        self.out.append((kind, data[12:].split(b"\0", count - 1) if count else []))

    def _driver(self, core: ProxyCore, owner: GearmanWorker) -> FakeDriver:
        driver = FakeDriver(core)
        self.drivers.append(driver)
        return driver

    @property
    def driver(self) -> FakeDriver:
        return self.drivers[-1]

    @property
    def core(self) -> ProxyCore:
        assert self.worker.core is not None
        return self.worker.core

    def packet(self, kind: int, *args: bytes, now: float = 0.0) -> list[tuple[int, list[bytes]]]:
        self.worker.on_packet(g.Packet(kind, args), now)
        out, self.out = self.out, []
        return out

    def broker(self, link: int, frames: list[bytes], now: float = 0.0) -> None:
        """A message from the broker of ``link`` (its identity frame dropped)."""
        self.core.handle(Received(link, frames[1:]), now)
        self.worker.on_input(now)

    def welcome(self, progress: bool = True) -> None:
        for link in range(len(self.core.links)):
            self.broker(link, p.worker_welcome(b"id", {"broker": "t", "instance": "i",
                                                       "batch": True, "progress": progress}))
        self.driver.take()

    def task(self, link: int, key: bytes, request: dict[str, Any], now: float = 0.0,
             hold: bool = False) -> None:
        self.broker(link, p.to_worker(b"id", key, [p.pack(request)], True, 10_000, hold), now)


def _commands(sent: list[tuple[int, list[bytes]]]) -> list[tuple[int, bytes]]:
    """What the core sent where, without the PROGRESS that says a worker took a task."""
    return [(link, frames[2]) for link, frames in sent if frames[2] != p.PROGRESS]


def test_functions_register_at_every_broker_when_the_worker_asks_for_work() -> None:
    rig = Rig()
    assert rig.packet(T.CAN_DO, b"ecard") == [] and rig.drivers == []
    rig.packet(T.CAN_DO_TIMEOUT, b"thumb", b"7")
    assert rig.packet(T.GRAB_JOB_ALL) == [(T.NO_JOB, [])]
    readies = rig.driver.take()
    assert [(link, frames[2], frames[3]) for link, frames in readies] == [
        (0, p.READY, b"ecard"), (1, p.READY, b"ecard"), (2, p.READY, b"thumb"),
        (3, p.READY, b"thumb")]
    assert [link.endpoint for link in rig.core.links] == [*BROKERS, *BROKERS]
    assert rig.worker.abilities == {"ecard": 0.0, "thumb": 7.0}
    meta = p.unpack_meta(readies[0][1][4], "READY")  # a DIPS worker's, big tasks announced
    assert meta["dips"] == p.DIPS_VERSION and meta["batch"] is True and meta["announce"] is True


def test_a_sleeping_worker_is_woken_the_moment_a_task_arrives() -> None:
    rig = Rig()
    rig.packet(T.CAN_DO, b"echo")
    assert rig.packet(T.PRE_SLEEP) == []  # registered now, nothing to do yet
    rig.welcome()
    rig.task(1, b"k1", {"image": b"raw \0 bytes"})
    assert rig.out == [(T.NOOP, [])]  # at once: no poll interval
    rig.out.clear()
    kind, (handle, function, unique, workload) = rig.packet(T.GRAB_JOB_UNIQ)[0]
    assert (kind, function, workload) == (T.JOB_ASSIGN_UNIQ, b"echo", b"raw \0 bytes")
    assert handle == b"H:t:1" and unique.count(b"-") == 4  # a UUID of the door's
    assert rig.packet(T.WORK_COMPLETE, handle, b"out") == []
    [(link, reply)] = [s for s in rig.driver.take() if s[1][2] != p.PROGRESS]
    assert link == 1 and reply[2] == p.REPLY and reply[3] == b"k1"
    assert p.decode_reply(reply[5:]) == b"out"


def test_a_task_waiting_when_the_worker_goes_to_sleep_wakes_it_at_once() -> None:
    rig = Rig()
    rig.packet(T.CAN_DO, b"echo")
    rig.packet(T.GRAB_JOB)
    rig.welcome()
    rig.task(0, b"k1", {"a": 1})
    assert rig.out == []  # not asleep: it will ask
    assert rig.packet(T.PRE_SLEEP) == [(T.NOOP, [])]
    kind, args = rig.packet(T.GRAB_JOB)[0]
    assert kind == T.JOB_ASSIGN and args[1:] == [b"echo", b'a:1:{s:1:"a";i:1;}']


def test_workloads_gearman_workers_see() -> None:
    seed = b'a:2:{s:3:"pSN";s:10:"1234567890";s:5:"pData";s:6:"61, 61";}'
    assert mapping.gearman_workload(phpser.loads(seed)) == seed  # PHP's own bytes again
    assert mapping.gearman_workload({"image": b"\x89PNG"}) == b"\x89PNG"
    assert mapping.gearman_workload({"image": b"x", "format": "png"}).startswith(b"a:2:{")
    blob = b'a:3:{i:0;d:1.0E+25;i:7;s:1:"x";s:1:"k";a:1:{i:0;b:1;}}'
    assert phpser.dumps(phpser.loads(blob)) == blob


def test_progress_reaches_the_broker_that_offered_it_and_errors_carry_their_message() -> None:
    rig = Rig()
    rig.packet(T.CAN_DO, b"echo")
    rig.packet(T.GRAB_JOB_ALL)
    rig.welcome(progress=True)
    rig.task(0, b"k1", {"x": 1})
    handle = rig.packet(T.GRAB_JOB_ALL)[0][1][0]
    assert [p.parse_broker_inbound(frames) for _, frames in rig.driver.take()] == [
        p.WorkerProgress(b"k1", "status", 0, 0, None)]  # a worker has it: it is running
    rig.packet(T.WORK_STATUS, handle, b"1", b"3")
    rig.packet(T.WORK_DATA, handle, b"chunk")
    rig.packet(T.WORK_WARNING, handle, b"careful")
    rig.packet(T.WORK_STATUS, b"H:other:9", b"1", b"3")  # not its job: dropped
    rig.packet(T.WORK_STATUS, handle, b"x", b"3")  # not a number: dropped
    sent = rig.driver.take()
    assert [p.parse_broker_inbound(frames) for _, frames in sent] == [
        p.WorkerProgress(b"k1", "status", 1, 3, None),
        p.WorkerProgress(b"k1", "data", None, None, b"chunk"),
        p.WorkerProgress(b"k1", "warning", None, None, b"careful")]
    rig.packet(T.WORK_EXCEPTION, handle, b"bad pSN \xff")
    [(_, reply)] = rig.driver.take()
    with pytest.raises(RequestError) as caught:
        p.decode_reply(reply[5:])
    assert (caught.value.code, caught.value.message) == (EXCEPTION_CODE, "bad pSN \ufffd")
    rig.task(0, b"k2", {"x": 2})
    handle = rig.packet(T.GRAB_JOB_ALL)[0][1][0]
    rig.packet(T.WORK_FAIL, handle)
    [_, (_, reply)] = rig.driver.take()  # (after the notice that a worker took it)
    with pytest.raises(RequestError) as caught:
        p.decode_reply(reply[5:])
    assert caught.value.code == FAIL_CODE


def test_no_progress_goes_to_a_broker_that_did_not_offer_it() -> None:
    rig = Rig()
    rig.packet(T.CAN_DO, b"echo")
    rig.packet(T.GRAB_JOB_ALL)
    rig.welcome(progress=False)
    rig.task(0, b"k1", {"x": 1})
    handle = rig.packet(T.GRAB_JOB_ALL)[0][1][0]
    rig.packet(T.WORK_STATUS, handle, b"1", b"3")
    assert rig.driver.take() == []  # not even the notice that a worker took it


def test_one_job_at_a_time_over_every_function_and_broker() -> None:
    rig = Rig()
    rig.packet(T.CAN_DO, b"a")
    rig.packet(T.CAN_DO, b"b")
    rig.packet(T.GRAB_JOB_ALL)
    rig.welcome()
    rig.task(0, b"ka", {"n": 1})  # function a at broker A
    rig.packet(T.GRAB_JOB_ALL)
    rig.task(3, b"kb", {"n": 2})  # function b at broker B, sent as to an idle worker
    assert rig.packet(T.GRAB_JOB_ALL) == [(T.NO_JOB, [])]  # it holds a job already
    rig.core.handle(Tick(), 0.01)  # the job runs past busy_after
    sent = _commands(rig.driver.take())
    assert sorted(sent) == [(1, p.BUSY), (2, p.BUSY), (3, p.BUSY), (3, p.BOUNCE)]


def test_a_job_past_its_can_do_timeout_is_given_up_and_the_worker_kept_busy(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mdp_gearman.workers")
    rig = Rig(time_limit_s=30.0)
    rig.packet(T.CAN_DO_TIMEOUT, b"slow", b"2")
    rig.packet(T.GRAB_JOB_ALL)
    rig.welcome()
    rig.task(0, b"k1", {"n": 1})
    handle = rig.packet(T.GRAB_JOB_ALL, now=1.0)[0][1][0]
    assert rig.worker.next_deadline(1.0) == 3.0
    rig.worker.on_input(3.0)
    sent = rig.driver.take()
    [reply] = [f for _, f in sent if f[2] == p.REPLY]
    with pytest.raises(RequestError) as caught:
        p.decode_reply(reply[5:])
    assert caught.value.code == "worker_timeout" and "2s" in caught.value.message
    # it still runs the job: busy for every broker until it comes back
    assert _commands(sent) == [(0, p.REPLY), (0, p.BUSY), (1, p.BUSY)]
    assert rig.packet(T.WORK_COMPLETE, handle, b"late", now=5.0) == []  # ignored
    assert rig.driver.take() == []
    # ... but counted, and logged once with its handle
    assert rig.worker.late_answers == 1 and rig.worker.settings.counts["late_answers"] == 1
    late = [r.getMessage() for r in caplog.records if "after the door gave up" in r.getMessage()]
    assert len(late) == 1 and handle.decode() in late[0]
    assert rig.packet(T.GRAB_JOB_ALL, now=5.0) == [(T.NO_JOB, [])]
    assert _commands(rig.driver.take()) == [(0, p.FREE), (1, p.FREE)]  # free again


def test_a_woken_worker_that_does_not_come_is_busy_elsewhere() -> None:
    rig = Rig()
    rig.packet(T.CAN_DO, b"echo")
    rig.packet(T.PRE_SLEEP)
    rig.welcome()
    rig.task(1, b"k1", {"n": 1}, now=1.0)
    assert rig.out == [(T.NOOP, [])]
    rig.worker.on_input(1.0 + GRAB_GRACE_S / 2)
    assert rig.driver.take() == []
    rig.worker.on_input(1.0 + GRAB_GRACE_S)  # a job from another door keeps it
    assert _commands(rig.driver.take()) == [(0, p.BUSY), (1, p.BUSY), (1, p.BOUNCE)]
    rig.out.clear()
    assert rig.packet(T.GRAB_JOB_ALL, now=2.0) == [(T.NO_JOB, [])]
    assert sorted(_commands(rig.driver.take())) == [(0, p.FREE), (1, p.FREE)]
    # awake, not asleep (it asked here, then took another door's job): the same
    rig.task(0, b"k2", {"n": 2}, now=3.0)
    assert rig.out == []
    rig.worker.on_input(3.0 + GRAB_GRACE_S)
    assert _commands(rig.driver.take()) == [(0, p.BUSY), (1, p.BUSY), (0, p.BOUNCE)]
    # that door died under the job; the worker only goes to sleep here: free again, or
    # no broker would send the task whose NOOP makes it ask
    assert rig.packet(T.PRE_SLEEP, now=4.0) == []
    assert _commands(rig.driver.take()) == [(0, p.FREE), (1, p.FREE)]


def test_changed_functions_register_anew_and_a_dropped_connection_is_a_lost_worker() -> None:
    rig = Rig()
    rig.packet(T.CAN_DO, b"a")
    rig.packet(T.GRAB_JOB_ALL)
    first = rig.driver
    rig.packet(T.CAN_DO, b"b")
    rig.packet(T.CANT_DO, b"a")
    rig.packet(T.PRE_SLEEP)
    assert first.closed is False and rig.core.functions == ("b",)  # drained
    rig.welcome()
    rig.task(0, b"k", {"n": 1})
    rig.packet(T.GRAB_JOB_ALL)
    rig.worker.close()
    assert rig.driver.closed is True  # at once: the brokers see a lost worker
    rig.packet(T.CAN_DO, b"a")
    rig.packet(T.GRAB_JOB_ALL)
    rig.worker.close()
    assert rig.driver.closed is False  # it held no job: it leaves, costing nobody a loss
    rig.packet(T.RESET_ABILITIES)
    assert rig.packet(T.GRAB_JOB_ALL) == [(T.NO_JOB, [])] and rig.worker.core is None


def test_a_bad_function_name_is_refused() -> None:
    rig = Rig()
    [(kind, args)] = rig.packet(T.CAN_DO, b"bad name!")
    assert kind == T.ERROR and args[0] == b"bad_function"
    assert rig.worker.abilities == {}


def test_the_door_s_broker_links_are_bounded() -> None:
    budget = LinkBudget(5)
    rig, other = Rig(budget=budget), Rig(budget=budget)
    rig.packet(T.CAN_DO, b"a")
    rig.packet(T.CAN_DO, b"b")
    rig.packet(T.PRE_SLEEP)
    assert budget.used == 4  # two functions at two brokers
    other.packet(T.CAN_DO, b"c")
    [(kind, args)] = other.packet(T.PRE_SLEEP)
    assert kind == T.ERROR and args[0] == b"too_many_workers" and other.worker.core is None
    rig.worker.close()
    assert budget.used == 0
    assert other.packet(T.GRAB_JOB) == [(T.NO_JOB, [])] and other.worker.core is not None


def test_the_job_a_worker_holds_is_found_by_its_unique_id() -> None:
    """GET_STATUS_UNIQUE for a job submitted elsewhere (another door, a DIPS client) that a
    Gearman worker here holds: the door finds it by the unique id its request carries."""
    rig = Rig()
    rig.packet(T.CAN_DO, b"echo")
    rig.packet(T.GRAB_JOB_UNIQ)
    rig.welcome()
    assert rig.worker.settings.held_unique(b"u-1") is None
    rig.broker(0, p.to_worker(b"id", b"k1", [p.pack({"n": 1})], True, 10_000, ck=b"u-1"))
    [(kind, args)] = rig.packet(T.GRAB_JOB_UNIQ, now=0.5)
    assert kind == T.JOB_ASSIGN_UNIQ and args[2] == b"u-1"
    rig.packet(T.WORK_STATUS, args[0], b"2", b"5", now=0.6)
    held = rig.worker.settings.held_unique(b"u-1")
    assert held is not None and (held.handle, held.numerator, held.denominator) == (
        args[0], 2, 5)
    assert rig.worker.settings.held_unique(b"u-2") is None
    rig.packet(T.WORK_COMPLETE, args[0], b"done", now=0.7)
    assert rig.worker.settings.held_unique(b"u-1") is None
