"""PHP's GearmanWorker behind the door: a DIPS worker like any other, for any DIPS caller.

Real processes only: two brokers, two doors, PHP workers (tests/gearman/php), MDPClient,
PHP's GearmanClient and mdp-http as callers.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from gwkit import Raw, need_php, start_gateway
from phpkit import (
    ECARD_WORKER,
    TEST_WORKER,
    gearmand_with_php_worker,
    need_gearmand,
    php_worker,
    progress_worker,
    run_php,
    start_http,
)

from clusterkit import FAST_HEARTBEAT, Cluster, Proc
from mdp.client import MDPClient
from mdp.errors import WorkerError, WorkerTimeout
from mdp_gearman import phpser
from mdp_gearman.packets import T
from mdp_gearman.workers import EXCEPTION_CODE, FAIL_CODE
from renderers.samples import seed_request
from testkit import wait_for

pytestmark = need_php


class Doors:
    php: Proc  # the PHP test worker, connected to both doors

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.brokers = [cluster.broker(), cluster.broker()]
        self.doors = [start_gateway(cluster, self.brokers, *FAST_HEARTBEAT,
                                    state_dir=cluster.tmp_path / f"state{n}") for n in range(2)]

    @property
    def ports(self) -> list[int]:
        return [int(d.endpoint.rpartition(":")[2]) for d in self.doors]

    @property
    def endpoints(self) -> list[str]:
        return [b.endpoint for b in self.brokers]

    def client(self, **options: Any) -> MDPClient:
        return MDPClient(self.endpoints, **{"timeout": 15.0, **options})


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    """Two brokers, two doors, and one PHP test worker connected to both doors."""
    cluster = Cluster(tmp_path_factory.mktemp("doors"))
    try:
        rig = Doors(cluster)
        rig.php = php_worker(cluster, TEST_WORKER, rig.ports, rig.brokers, "php_reverse")
        yield rig
    finally:
        cluster.stop_all()


def test_a_php_worker_serves_dips_callers_with_the_workload_its_code_expects(
        doors: Doors) -> None:
    request = {"pSN": "1234567890", "pData": "61, 61", "n": [1, 2.5, None, True]}
    with doors.client() as client:
        assert client.send("php_reverse", {"image": b"a\0b\xffc"}) == b"c\xffb\0a"
        seen = json.loads(client.send("php_inspect", request))
    workload = base64.b64decode(seen["workload"])
    assert phpser.loads(workload) == request  # PHP serialize() of the request map
    assert seen["function"] == "php_inspect"
    assert seen["handle"].startswith("H:") and seen["handle"].rpartition(":")[2].isdigit()


def test_a_php_client_reaches_a_php_worker_through_dips_unchanged(doors: Doors,
                                                                   tmp_path: Path) -> None:
    code = """<?php
$c = new GearmanClient();
$c->addServer('127.0.0.1', PORT);
$c->setTimeout(15000);
$w = serialize(['pSN' => '1234567890', 'pData' => "61,\\n 61", 'f' => 0.1, 'k' => [7 => 'x']]);
$seen = json_decode($c->doNormal('php_inspect', $w), true);
echo base64_decode($seen['workload']) === $w ? "same" : "changed", "\\n";
echo $c->doNormal('php_reverse', "raw \\0 bytes"), "\\n";
"""
    out = run_php(code.replace("PORT", str(doors.ports[1])), tmp_path / "client.php")
    assert out.split("\n")[:2] == ["same", "setyb \0 war"]


def test_a_gearman_worker_sees_the_unique_id_its_client_gave_through_either_door(
        doors: Doors, tmp_path: Path) -> None:
    """$job->unique() is the Gearman client's id, whichever door the client and the worker
    use (the door sends it as the request's coalescing key); a DIPS caller's key likewise;
    a request without one gets an id of the door's (a UUID)."""
    code = """<?php
$c = new GearmanClient();
$c->addServer('127.0.0.1', PORT);
$c->setTimeout(15000);
echo json_decode($c->doNormal('php_inspect', 'w', 'card-42'), true)['unique'], "\\n";
"""
    for port in doors.ports:
        out = run_php(code.replace("PORT", str(port)), tmp_path / "client.php")
        assert out.split("\n")[0] == "card-42"
    with doors.client() as client:
        assert json.loads(client.send("php_inspect", {"a": 1}, key=b"k-7"))["unique"] == "k-7"
        assert len(json.loads(client.send("php_inspect", {"a": 1}))["unique"]) == 36


def test_identical_jobs_with_one_unique_id_through_two_doors_run_once(doors: Doors) -> None:
    """As gearmand runs jobs of one function and unique id in flight at once once: here
    across doors, where the two are the same bytes (the broker compares them)."""
    worker = doors.php
    starts = worker.output().count("start ")
    workload = phpser.dumps({"sleep": 1.0, "serial": "u-1"})
    raws = [Raw(port) for port in doors.ports]
    try:
        for raw in raws:
            raw.send(T.SUBMIT_JOB, b"slow", b"job-u-1", workload)
            assert raw.recv()[0] == T.JOB_CREATED
        results = [raw.recv() for raw in raws]
    finally:
        for raw in raws:
            raw.close()
    assert [kind for kind, _ in results] == [T.WORK_COMPLETE, T.WORK_COMPLETE]
    assert results[0][1][1] == results[1][1][1]  # one run: the same pid, start and end
    assert worker.output().count("start ") == starts + 1


def test_failures_and_exceptions_reach_every_caller_with_their_reason(doors: Doors,
                                                                      tmp_path: Path) -> None:
    with doors.client() as client:
        with pytest.raises(WorkerError) as caught:
            client.send("php_exception", {"image": b"x1"})
        assert (caught.value.code, caught.value.message) == (EXCEPTION_CODE, "bad pSN: x1")
        with pytest.raises(WorkerError) as caught:
            client.send("php_fail", {})
        assert caught.value.code == FAIL_CODE
    code = """<?php
$c = new GearmanClient();
$c->addServer('127.0.0.1', PORT);
$c->setTimeout(15000);
$c->doNormal('php_fail', 'x');
echo $c->returnCode() == GEARMAN_WORK_FAIL ? "fail" : $c->returnCode(), "\\n";
$c->doNormal('php_exception', 'x2');
echo $c->returnCode() == GEARMAN_WORK_EXCEPTION ? "exception" : $c->returnCode(), "\\n";
$c->setExceptionCallback(function (GearmanTask $task) { echo "message: ", $task->data(), "\\n"; });
$c->addTask('php_exception', 'x3');
$c->runTasks();
"""
    out = run_php(code.replace("PORT", str(doors.ports[0])), tmp_path / "client.php")
    assert out.split("\n")[:3] == ["fail", "exception", "message: bad pSN: x3"]


def test_a_job_past_its_can_do_timeout_is_answered_worker_timeout(doors: Doors) -> None:
    with doors.client() as client:
        with pytest.raises(WorkerTimeout) as caught:
            client.send("php_overrun", {})
        assert "1s" in caught.value.message
        # the worker finishes its late job, asks for work again and serves as before
        assert client.send("php_reverse", {"image": b"ab"}) == b"ba"


def test_admin_workers_and_status_list_gearman_workers(doors: Doors) -> None:
    raw = Raw(doors.ports[0])
    try:
        workers = raw.line("workers")
        status = raw.line("status")
    finally:
        raw.close()
    [line] = [w for w in workers.splitlines() if "php_reverse" in w and w[0].isdigit()]
    assert line.split(" : ")[0].split()[2].startswith("php-test-")  # its SET_CLIENT_ID
    assert {"php_reverse", "slow", "php_progress"} <= set(line.split(" : ")[1].split())
    rows = {r.split("\t")[0]: r.split("\t")[1:] for r in status.splitlines() if "\t" in r}
    assert int(rows["php_reverse"][2]) >= 1


@pytest.mark.slow
def test_a_killed_php_worker_s_job_is_done_by_another(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        rig = Doors(cluster)
        first = php_worker(cluster, TEST_WORKER, rig.ports, rig.brokers, "slow")
        second = php_worker(cluster, TEST_WORKER, rig.ports, rig.brokers, "slow")
        results: list[Any] = []
        caller = threading.Thread(target=lambda: results.append(
            _send(rig, "slow", {"sleep": 1.0, "tag": "killed"})))
        caller.start()
        running = wait_for(lambda: next((w for w in (first, second)
                                         if "start" in w.output()), None), 20,
                           "a PHP worker to start the job")
        running.signal(signal.SIGKILL)
        caller.join(30)
        [result] = results
        other = second if running is first else first
        assert phpser.loads(result)["pid"] == other.pid and \
            phpser.loads(result)["tag"] == "killed"
    finally:
        cluster.stop_all()


def _send(rig: Doors, service: str, request: dict[str, Any]) -> Any:
    with rig.client(timeout=20.0) as client:
        return client.send(service, request)


@pytest.mark.slow
def test_a_php_and_a_python_worker_of_one_service_are_both_kept_busy(tmp_path: Path) -> None:
    """Two requests at once: one runs on each worker, at the same time."""
    cluster = Cluster(tmp_path)
    try:
        rig = Doors(cluster)
        php = php_worker(cluster, TEST_WORKER, rig.ports, rig.brokers, "slow")
        python = cluster.worker(rig.brokers, "slow", faulty=True)
        for _ in range(3):
            results: list[Any] = []
            callers = [threading.Thread(target=lambda n=n, out=results: out.append(
                _send(rig, "slow", {"sleep": 0.6, "n": n}))) for n in range(2)]
            for caller in callers:
                caller.start()
            for caller in callers:
                caller.join(30)
            runs = [phpser.loads(r) if isinstance(r, bytes) else r for r in results]
            assert sorted(r["pid"] for r in runs) == sorted([php.pid, python.pid])
            first, second = sorted(runs, key=lambda r: r["start"])
            assert second["start"] < first["end"]  # neither waited for the other
    finally:
        cluster.stop_all()


@pytest.mark.slow
def test_the_seed_s_php_worker_serves_every_caller_through_a_worker_kill_and_a_door_kill(
        tmp_path: Path) -> None:
    """The slides' ecard worker, twice, behind two doors; MDPClient, POST /v1/ecard and a
    PHP GearmanClient call it in a loop while one PHP worker is SIGKILLed mid-job, then one
    door; every call gets the card."""
    cluster = Cluster(tmp_path)
    try:
        rig = Doors(cluster)
        slow = {"ECARD_DELAY_MS": "30"}  # a job long enough to be killed in the middle
        workers = [php_worker(cluster, ECARD_WORKER, rig.ports, rig.brokers, "ecard", slow)
                   for _ in range(2)]
        url = start_http(cluster, rig.brokers)
        with rig.client() as client:
            card = client.send("ecard", seed_request())
        assert card.startswith(b"\x89PNG")
        stop = threading.Event()
        outcomes: dict[str, list[Any]] = {"mdp": [], "http": [], "php": []}
        threads = [threading.Thread(target=_mdp_loop, args=(rig, stop, outcomes["mdp"])),
                   threading.Thread(target=_http_loop, args=(url, stop, outcomes["http"])),
                   threading.Thread(target=_php_loop, args=(rig.ports[1], tmp_path, stop,
                                                            outcomes["php"]))]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: all(len(o) >= 5 for o in outcomes.values()), 60, "calls")
            victim = wait_for(lambda: next((w for w in workers if _drawing(w)), None), 20,
                              "a PHP worker in the middle of a card")
            victim.signal(signal.SIGKILL)
            counts = {k: len(v) for k, v in outcomes.items()}
            wait_for(lambda: all(len(outcomes[k]) >= counts[k] + 5 for k in counts), 60,
                     "calls after the worker kill")
            rig.doors[0].signal(signal.SIGKILL)  # the PHP client calls through the other
            counts = {k: len(v) for k, v in outcomes.items()}
            wait_for(lambda: all(len(outcomes[k]) >= counts[k] + 5 for k in counts), 60,
                     "calls after the door kill")
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        for kind, results in outcomes.items():
            assert results and all(r == card for r in results), (kind, [
                r for r in results if r != card][:3])
    finally:
        cluster.stop_all()


def _drawing(worker: Proc) -> bool:
    lines = worker.output().splitlines()
    return bool(lines) and lines[-1].startswith("drawing")


def _mdp_loop(rig: Doors, stop: threading.Event, out: list[Any]) -> None:
    with rig.client() as client:
        while not stop.is_set():
            try:
                out.append(client.send("ecard", seed_request()))
            except Exception as exc:  # recorded; the test fails on it
                out.append(exc)


def _http_loop(url: str, stop: threading.Event, out: list[Any]) -> None:
    body = json.dumps(seed_request()).encode()
    while not stop.is_set():
        request = urllib.request.Request(url + "/v1/ecard", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                out.append(response.read())
        except Exception as exc:  # recorded; the test fails on it
            out.append(exc)


PHP_LOOP = """<?php
$c = new GearmanClient();
$c->addServer('127.0.0.1', PORT);
$c->setTimeout(20000);
$data = ['pSN' => 'SERIAL', 'pData' => 'DATA'];
while (!file_exists('STOP')) {
    $card = $c->doNormal('ecard', serialize($data));
    echo $c->returnCode() == GEARMAN_SUCCESS ? bin2hex($card) : "error " . $c->returnCode(), "\\n";
}
"""


def _php_loop(port: int, tmp_path: Path, stop: threading.Event, out: list[Any]) -> None:
    import subprocess

    request = seed_request()
    code = (PHP_LOOP.replace("PORT", str(port)).replace("SERIAL", request["pSN"])
            .replace("DATA", request["pData"]).replace("STOP", str(tmp_path / "stop")))
    script = tmp_path / "php_loop.php"
    script.write_text(code)
    php = subprocess.Popen(["php", str(script)], stdout=subprocess.PIPE)
    try:
        assert php.stdout is not None
        for line in php.stdout:
            text = line.decode().strip()
            out.append(bytes.fromhex(text) if not text.startswith("error") else text)
            if stop.is_set():
                (tmp_path / "stop").touch()
    finally:
        (tmp_path / "stop").touch()
        php.wait(30)



PROGRESS_CLIENT = """<?php
$c = new GearmanClient();
$c->addServer('127.0.0.1', PORT);
$c->setTimeout(15000);
$c->setStatusCallback(function ($t) {
    echo "status ", $t->taskNumerator(), "/", $t->taskDenominator(), "\\n";
});
$c->setDataCallback(function ($t) { echo "data ", $t->data(), "\\n"; });
$c->setWarningCallback(function ($t) { echo "warning ", $t->data(), "\\n"; });
$c->setCompleteCallback(function ($t) { echo "complete ", $t->data(), "\\n"; });
$c->addTask('FUNCTION', 'x');
$c->runTasks();
echo "doNormal ", $c->doNormal('FUNCTION', 'x'), " ", $c->returnCode(), "\\n";
"""


@need_gearmand
def test_progress_reaches_gearman_clients_as_gearmand_forwards_it(doors: Doors,
                                                                  tmp_path: Path) -> None:
    """A PHP worker's WORK_STATUS, WORK_DATA and WORK_WARNING, and a Python handler's
    progress, reach a PHP client through DIPS exactly as gearmand forwards a PHP worker's."""
    with gearmand_with_php_worker(tmp_path) as port:
        expected = run_php(PROGRESS_CLIENT.replace("PORT", str(port))
                           .replace("FUNCTION", "php_progress"), tmp_path / "gearmand.php")
    assert "status 1/3" in expected and "doNormal chunk-1done 0" in expected
    cluster = doors.cluster
    progress_worker(cluster, doors.brokers)
    for function in ("php_progress", "py_progress"):
        seen = run_php(PROGRESS_CLIENT.replace("PORT", str(doors.ports[0]))
                       .replace("FUNCTION", function), tmp_path / f"{function}.php")
        assert seen == expected, function
    reports: list[tuple[str, int | None, int | None, bytes | None]] = []
    with doors.client() as client:
        result = client.send("php_progress", {}, on_progress=lambda *r: reports.append(r))
    assert result == b"done" and reports == [
        ("status", 0, 0, None), ("status", 1, 3, None), ("data", None, None, b"chunk-1"),
        ("warning", None, None, b"careful"), ("status", 3, 3, None)]


def test_job_status_says_running_once_a_worker_has_it_with_its_progress(
        doors: Doors, tmp_path: Path) -> None:
    code = """<?php
$c = new GearmanClient();
$c->addServer('127.0.0.1', PORT);
$handle = $c->doBackground('php_status_wait', 'x');
do { $s = $c->jobStatus($handle); usleep(10000); } while ($s[0] && $s[2] != 1);
echo json_encode($s), "\\n";
do { $s = $c->jobStatus($handle); usleep(10000); } while ($s[0]);
echo json_encode($s), "\\n";
"""
    out = run_php(code.replace("PORT", str(doors.ports[0])), tmp_path / "status.php")
    assert out.split("\n")[:2] == ["[true,true,1,2]", "[false,false,0,0]"]


def test_a_service_of_gearman_workers_only_gets_every_workload_unchanged(
        doors: Doors) -> None:
    """JSON and msgpack workloads, which the door decodes for DIPS workers, reach a function
    that only Gearman workers offer as the bytes the client sent (pecl/gearman's tests send
    JSON to PHP workers)."""
    raw = Raw(doors.ports[0])
    try:
        for workload in (b'{"workload":"test"}', msgpack.packb({"a": [1, b"\xff"]}),
                         b'a:1:{s:1:"x";d:0.1000000000000000055511151231257827;}'):
            kind, args = raw.call(b"php_inspect", workload)
            assert kind == T.WORK_COMPLETE, args
            assert base64.b64decode(json.loads(args[1])["workload"]) == workload
    finally:
        raw.close()


@pytest.mark.slow
def test_background_jobs_wait_for_a_gearman_worker_and_reach_it_unchanged(
        tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        rig = Doors(cluster)
        raw = Raw(rig.ports[0])
        workloads = [b'{"workload":"test %d"}' % n for n in range(4)]
        for workload in workloads:  # no worker offers php_inspect yet
            raw.send(T.SUBMIT_JOB_BG, b"php_inspect", b"", workload)
            assert raw.recv()[0] == T.JOB_CREATED
        raw.close()
        worker = php_worker(cluster, TEST_WORKER, rig.ports[:1], rig.brokers, "php_inspect")
        seen = wait_for(lambda: _inspected(worker) if len(_inspected(worker)) == 4 else None,
                        20, "the four background jobs at the PHP worker")
        assert sorted(seen) == sorted(workloads)
    finally:
        cluster.stop_all()


def _inspected(worker: Proc) -> list[bytes]:
    return [base64.b64decode(line.split()[1]) for line in worker.output().splitlines()
            if line.startswith("inspect ")]
