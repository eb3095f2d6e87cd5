"""What the door says to a Gearman worker whose packets it cannot take, compared with what
gearmand 1.1 says to the same packets (raw packets, real door, real broker, real gearmand):

- an answer (WORK_COMPLETE, WORK_FAIL, WORK_EXCEPTION, WORK_DATA, WORK_WARNING,
  WORK_STATUS) for a job the worker does not hold is ERROR ``JOB_NOT_FOUND`` naming the
  handle, as gearmand answers it; the job's real worker and its client see nothing of it
  (before, the door dropped it without a word);
- a CAN_DO_TIMEOUT whose timeout is not a whole number of seconds (``abc``, ``-5``,
  ``1.5``, 20 digits) is ERROR ``bad_timeout`` naming it (before, it silently became the
  door's limit; gearmand takes it without a word, and dies of the 20 digits).
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gwkit import Raw, start_gateway
from phpkit import gearmand_server, need_gearmand

from clusterkit import Cluster, Proc
from mdp_gearman.admin import printable
from mdp_gearman.packets import T
from testkit import count_workers, wait_for

ANSWERS = [(T.WORK_COMPLETE, (b"result",)), (T.WORK_FAIL, ()), (T.WORK_EXCEPTION, (b"exc",)),
           (T.WORK_DATA, (b"data",)), (T.WORK_WARNING, (b"warn",)),
           (T.WORK_STATUS, (b"1", b"2"))]


@dataclass
class Rig:
    cluster: Cluster
    broker: Proc
    door: Proc
    small: Proc  # --max-jobs-per-connection 3

    @property
    def port(self) -> int:
        return int(self.door.endpoint.rpartition(":")[2])


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    cluster = Cluster(tmp_path_factory.mktemp("worker-answers"))
    try:
        broker = cluster.broker()
        yield Rig(cluster, broker, start_gateway(cluster, [broker], "--timeout", "20"),
                  start_gateway(cluster, [broker], "--timeout", "20",
                                "--max-jobs-per-connection", "3"))
    finally:
        cluster.stop_all()


def _worker(rig: Rig, function: str) -> Raw:
    """A raw Gearman worker of ``function``, registered at the broker and asleep."""
    raw = Raw(rig.port)
    raw.send(T.CAN_DO, function.encode())
    raw.send(T.PRE_SLEEP)
    wait_for(lambda: count_workers(rig.broker.endpoint, function) >= 1, 15,
             f"the Gearman worker of {function} at the broker")
    return raw


def _take(worker: Raw) -> bytes:
    """Wait for NOOP, GRAB_JOB: the assigned job's handle."""
    assert worker.recv()[0] == T.NOOP
    worker.send(T.GRAB_JOB)
    kind, args = worker.recv()
    assert kind == T.JOB_ASSIGN, (kind, args)
    return args[0].split(b"\0", 1)[0]


def _stray_answers(port: int, handle: bytes) -> list[tuple[int, bytes, bytes]]:
    """Every kind of answer for ``handle`` from a connection that does not hold it: the
    (packet type, code, text) each gets back."""
    raw = Raw(port, timeout=10)
    try:
        got = []
        for kind, rest in ANSWERS:
            raw.send(kind, handle, *rest)
            answer, args = raw.recv()
            got.append((answer, args[0], args[1] if len(args) > 1 else b""))
        raw.send(T.ECHO_REQ, b"still here")  # the connection goes on
        assert raw.recv() == (T.ECHO_RES, [b"still here"])
        return got
    finally:
        raw.close()


def test_an_answer_for_a_job_the_worker_does_not_hold_is_job_not_found(rig: Rig) -> None:
    worker = _worker(rig, "ans.held")
    client = Raw(rig.port)
    client.send(T.SUBMIT_JOB, b"ans.held", b"", b"x")
    created, [client_handle] = client.recv()
    assert created == T.JOB_CREATED
    handle = _take(worker)
    for forged in (handle, b"H:nowhere:42"):  # another worker's job, a job nobody has
        got = _stray_answers(rig.port, forged)
        assert [(kind, code) for kind, code, _ in got] == [(T.ERROR, b"JOB_NOT_FOUND")] * 6
        assert all(forged in text for _, _, text in got), got
    worker.send(T.WORK_STATUS, b"H:nowhere:43", b"1", b"2")  # the holder's own stray
    kind, args = worker.recv()
    assert (kind, args[0]) == (T.ERROR, b"JOB_NOT_FOUND") and b"H:nowhere:43" in args[1]
    worker.send(T.WORK_COMPLETE, handle, b"real")  # its job was never disturbed
    assert client.recv() == (T.WORK_COMPLETE, [client_handle, b"real"])
    worker.send(T.WORK_COMPLETE, handle, b"again")  # answered already: no longer held
    assert worker.recv()[:1] == (T.ERROR,)
    worker.send(T.ECHO_REQ, b"on")
    assert worker.recv() == (T.ECHO_RES, [b"on"])
    for raw in (worker, client):
        raw.close()


def test_strays_are_logged_rate_limited(rig: Rig) -> None:
    raw = Raw(rig.port)
    started = time.monotonic()
    for n in range(300):
        raw.send(T.WORK_DATA, b"H:flood:%d" % n, b"d")
    for _ in range(300):
        assert raw.recv()[0] == T.ERROR
    seconds = time.monotonic() - started

    def reported() -> bool:  # the count comes with the first line of a later second
        raw.send(T.WORK_DATA, b"H:after", b"d")
        assert raw.recv()[0] == T.ERROR
        return "similar lines suppressed" in rig.door.output()

    wait_for(reported, 10, "the count of suppressed lines")
    raw.close()
    lines = [line for line in rig.door.output().splitlines() if "H:flood:" in line]
    assert len(lines) <= 10 * (math.ceil(seconds) + 1), (seconds, lines)
    assert "which it does not hold; answered JOB_NOT_FOUND" in rig.door.output()


@need_gearmand
def test_the_door_answers_strays_as_gearmand_does(rig: Rig, tmp_path: Path) -> None:
    with gearmand_server(tmp_path) as port:
        gearmand = [(kind, code) for kind, code, _ in _stray_answers(port, b"H:x:1")]
    door = [(kind, code) for kind, code, _ in _stray_answers(rig.port, b"H:x:1")]
    assert door == gearmand == [(T.ERROR, b"JOB_NOT_FOUND")] * 6


@pytest.mark.parametrize("timeout", [b"abc", b"-5", b"1.5", b"", b"1e3", b"0x10",
                                     b"99999999999999999999", b"4294967296"])
def test_an_odd_can_do_timeout_is_refused_naming_it(rig: Rig, timeout: bytes) -> None:
    raw = Raw(rig.port)
    try:
        raw.send(T.CAN_DO_TIMEOUT, b"ans.odd", timeout)
        kind, args = raw.recv()
        assert (kind, args[0]) == (T.ERROR, b"bad_timeout")
        assert b"ans.odd" in args[1] and printable(timeout, 24).encode() in args[1]
        raw.send(T.CAN_DO_TIMEOUT, b"ans.fine", b"4294967295")  # the largest: taken
        raw.send(T.ECHO_REQ, b"next")
        assert raw.recv() == (T.ECHO_RES, [b"next"])
        workers = raw.line("workers")
        [mine] = [line for line in workers.splitlines() if "ans.fine" in line]
        assert "ans.odd" not in mine
    finally:
        raw.close()


def test_a_bad_timeout_leaves_the_function_as_it_was(rig: Rig) -> None:
    raw = Raw(rig.port)
    try:
        raw.send(T.CAN_DO_TIMEOUT, b"ans.kept", b"7")
        raw.send(T.CAN_DO_TIMEOUT, b"ans.kept", b"-1")
        assert raw.recv()[1][0] == b"bad_timeout"
        line = raw.line("workers")
        assert re.search(r": .*ans\.kept", line), line
    finally:
        raw.close()


def test_a_worker_the_broker_refuses_is_told_why(cluster: Cluster) -> None:
    """A broker's --max-services refuses the READY of a service past its limit: before,
    the Gearman worker was never told, and its function never got a job. A worker that would
    get no job at all is told (ERROR); one whose other function is served is not (its
    work() would end), and the door logs each refusal."""
    broker = cluster.broker(None, "--max-services", "1")
    cluster.worker([broker], "echo")
    door = start_gateway(cluster, [broker])
    port = int(door.endpoint.rpartition(":")[2])
    refused = Raw(port, timeout=10)
    refused.send(T.CAN_DO, b"ms.refused")
    refused.send(T.PRE_SLEEP)
    kind, args = refused.recv()
    assert (kind, args[0]) == (T.ERROR, b"registration_refused"), (kind, args)
    assert b"'ms.refused'" in args[1] and b"--max-services" in args[1], args
    assert broker.endpoint.encode() in args[1]
    taken = Raw(port, timeout=10)  # a service the broker knows: taken, and told nothing
    taken.send(T.CAN_DO, b"echo")
    taken.send(T.CAN_DO, b"ms.partly")  # refused, but its echo is served
    taken.send(T.PRE_SLEEP)
    wait_for(lambda: count_workers(broker.endpoint, "echo") == 2, 15, "the door's echo worker")
    wait_for(lambda: "refused to register it for 'ms.partly'" in door.output(), 15,
             "the door to log the refusal of ms.partly")
    taken.send(T.ECHO_REQ, b"quiet")
    assert taken.recv() == (T.ECHO_RES, [b"quiet"])  # no ERROR before it
    log = door.output()
    assert "refused to register it for 'ms.refused'" in log and "--max-services" in log
    refused.send(T.ECHO_REQ, b"once")  # told once, not at each of the door's tries
    wait_for(lambda: "--max-services" in broker.output().split("refused worker", 3)[-1]
             and broker.output().count("refused worker") >= 3, 15, "two more tries")
    assert refused.recv() == (T.ECHO_RES, [b"once"])
    for raw in (refused, taken):
        raw.close()


def _status_of_a_workers_handle(port: int, function: bytes) -> list[list[bytes]]:
    """A worker takes a job and reports 3/7; a third connection asks GET_STATUS on the
    handle JOB_ASSIGN gave the worker, then again once the job is done."""
    worker, client, asker = Raw(port, timeout=10), Raw(port, timeout=10), Raw(port, timeout=10)
    try:
        worker.send(T.CAN_DO, function)
        worker.send(T.PRE_SLEEP)
        handle = b""
        while not handle:  # (through a door, the job waits for the worker's registration)
            client.send(T.SUBMIT_JOB, function, b"", b"w")
            assert client.recv()[0] == T.JOB_CREATED
            assert worker.recv()[0] == T.NOOP
            worker.send(T.GRAB_JOB)
            kind, args = worker.recv()
            handle = args[0].split(b"\0", 1)[0] if kind == T.JOB_ASSIGN else b""
        worker.send(T.WORK_STATUS, handle, b"3", b"7")
        assert client.recv()[0] == T.WORK_STATUS
        asked = []
        asker.send(T.GET_STATUS, handle)
        asked.append(asker.recv()[1][1:])
        worker.send(T.WORK_COMPLETE, handle, b"done")
        assert client.recv()[0] == T.WORK_COMPLETE
        asker.send(T.GET_STATUS, handle)
        asked.append(asker.recv()[1][1:])
        return asked
    finally:
        for raw in (worker, client, asker):
            raw.close()


def test_get_status_on_a_workers_handle_answers_as_gearmand(rig: Rig, tmp_path: Path) -> None:
    """Before, the handle the door gave its worker was unknown to GET_STATUS (the client's
    handle is its own door's): now the door answers for the jobs its workers hold."""
    door = _status_of_a_workers_handle(rig.port, b"ans.status")
    assert door == [[b"1", b"1", b"3", b"7"], [b"0", b"0", b"0", b"0"]]
    if shutil.which("gearmand") is not None:
        with gearmand_server(tmp_path) as port:
            assert _status_of_a_workers_handle(port, b"ans.status") == door


def _next(raw: Raw, *kinds: int) -> list[bytes]:
    """The next packet of one of ``kinds`` (NOOPs on the way are skipped)."""
    while True:
        kind, args = raw.recv()
        if kind in kinds:
            return [bytes([kind]), *args]
        assert kind == T.NOOP, (kind, args)


def test_a_connection_that_is_client_and_worker_of_its_function_does_not_stall(
        rig: Rig) -> None:
    """At its job limit a connection was no longer read, so one that is also the worker of
    its jobs could not take them: it stalled until they timed out. Now a worker's
    connection is read on, and its submissions past the limit are refused, named."""
    port = int(rig.small.endpoint.rpartition(":")[2])
    raw = Raw(port, timeout=10)
    raw.send(T.CAN_DO, b"ans.self")
    raw.send(T.PRE_SLEEP)
    wait_for(lambda: count_workers(rig.broker.endpoint, "ans.self") >= 1, 15, "registered")
    mine = []
    for n in range(3):
        raw.send(T.SUBMIT_JOB, b"ans.self", b"", b"job%d" % n)
        mine.append(_next(raw, T.JOB_CREATED)[1])
    raw.send(T.SUBMIT_JOB, b"ans.self", b"", b"job3")  # past the limit: refused
    refused = _next(raw, T.ERROR)
    assert refused[1] == b"too_many_jobs" and b"--max-jobs-per-connection" in refused[2]
    done: dict[bytes, bytes] = {}
    raw.send(T.GRAB_JOB)
    while len(done) < 3:  # its own jobs, taken and answered on the same connection
        kind, args = raw.recv()
        if kind == T.JOB_ASSIGN:
            handle, _, workload = args[0].split(b"\0", 2)
            raw.send(T.WORK_COMPLETE, handle, workload.upper())
            raw.send(T.GRAB_JOB)
        elif kind == T.WORK_COMPLETE:
            done[args[0]] = args[1]
        elif kind == T.NO_JOB:
            raw.send(T.PRE_SLEEP)
        else:
            assert kind == T.NOOP, (kind, args)
            raw.send(T.GRAB_JOB)
    assert done == {mine[n]: b"JOB%d" % n for n in range(3)}
    raw.send(T.SUBMIT_JOB, b"ans.self", b"", b"job4")  # under the limit again: taken
    assert _next(raw, T.JOB_CREATED, T.ERROR)[0][0] == T.JOB_CREATED
    raw.close()
