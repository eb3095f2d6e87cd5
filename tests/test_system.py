"""Broker, workers and clients as real processes: the everyday behaviour and its errors."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from clusterkit import Cluster
from mdp.client import MDPClient
from mdp.errors import BadRequest, Overloaded, Timeout, UnknownService, WorkerError, WorkerTimeout
from mdp.status import BrokerStatus
from testkit import broker_status, count_workers, free_port, status_of, wait_for


def test_echo_through_two_brokers(cluster: Cluster) -> None:
    a, b = cluster.broker(), cluster.broker()
    cluster.worker([a, b])
    for endpoints in ([a.endpoint, b.endpoint], [b.endpoint, a.endpoint]):
        with MDPClient(endpoints, shuffle=False) as client:
            request = {"card": "x", "n": 1, "blob": b"\x00\xff" * 100}
            assert client.send("echo", request) == request
            requests = [{"i": i} for i in range(300)]
            assert client.send_many("echo", requests) == requests
    replies = []
    for broker in (a, b):
        status = broker_status(broker.endpoint)
        assert status is not None
        replies.append(status.counters.replies)
    assert sum(replies) == 602
    assert min(replies) >= 100, f"one client's requests are spread over both brokers: {replies}"



def test_a_broker_and_a_worker_on_a_slow_link_floor_serve_a_big_request(
        cluster: Cluster) -> None:
    """--link-floor as real programs take it: both say it at start, and a 2 MB request (a
    big body: its hold is reckoned at the floor on every side) goes through."""
    broker = cluster.broker(None, "--link-floor", "50Mbit/s")
    worker = cluster.worker([broker], "echo", "--link-floor", "50Mbit/s")
    assert "link floor 6250KB/s" in broker.output()
    wait_for(lambda: "link floor 6250KB/s" in worker.output(), 10, "the worker's start line")
    request = {"image": b"\x5a" * 2_000_000}
    with MDPClient([broker.endpoint], link_floor=6_250_000) as client:
        assert client.send("echo", request) == request

def test_mmi_service_and_status(cluster: Cluster) -> None:
    broker = cluster.broker()
    worker = cluster.worker([broker])
    with MDPClient([broker.endpoint]) as client:
        assert client.mmi_service("echo") == "200"
        assert client.mmi_service("nothing") == "404"
        assert client.request_raw("mmi.other", b"")[0] == b"501"
        status = client.status()
    [entry] = BrokerStatus.from_wire(status).workers("echo")
    assert entry.pid == worker.pid and entry.state == "idle"
    assert entry.version.startswith("0.1.0+")
    assert set(status["counters"]) >= {"requests", "replies", "errors", "expired", "requeued"}
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    with MDPClient([broker.endpoint]) as client:
        wait_for(lambda: client.mmi_service("echo") == "404", 5, "echo to be gone")


def test_unknown_service_after_grace(cluster: Cluster) -> None:
    a = cluster.broker(None, "--unknown-grace", "0.3")
    b = cluster.broker(None, "--unknown-grace", "0.3")
    with MDPClient([a.endpoint, b.endpoint]) as client, pytest.raises(UnknownService) as info:
        client.send("no-such-service", {})
    assert "no-such-service" in str(info.value)
    for broker in (a, b):  # each broker was asked before the client gave up
        status = broker_status(broker.endpoint)
        assert status is not None and status.counters.errors == 1


def test_request_waits_for_a_worker_that_starts_within_the_grace(cluster: Cluster) -> None:
    broker = cluster.broker(None, "--unknown-grace", "10")
    cluster.worker([broker], wait=False)  # it registers while the request waits
    with MDPClient([broker.endpoint], timeout=20) as client:
        assert client.send("echo", {"late": True}) == {"late": True}


def test_bad_requests_name_what_is_wrong(cluster: Cluster) -> None:
    broker = cluster.broker()
    cluster.worker([broker], "tester", faulty=True)
    with MDPClient([broker.endpoint]) as client:
        with pytest.raises(BadRequest) as info:
            client.send("tester", {"bad_field": "pData"})
        assert info.value.field == "pData"
        with pytest.raises(BadRequest, match="map"):
            client.send("tester", [1, 2])  # type: ignore[arg-type]
        with pytest.raises(BadRequest, match="service"):
            client.send("bad name!", {})
        raw = client.request_raw("tester", b"\xc1 not msgpack")
    assert b"bad_request" in raw[0] and b"msgpack" in raw[0]


def test_handler_exception_becomes_an_error_and_the_worker_lives(cluster: Cluster) -> None:
    broker = cluster.broker()
    worker = cluster.worker([broker], "tester", faulty=True)
    with MDPClient([broker.endpoint]) as client:
        with pytest.raises(WorkerError) as info:
            client.send("tester", {"fail": True})
        assert info.value.code == "internal" and "failing on purpose" in info.value.message
        assert client.send("tester", {"ok": 1})["pid"] == worker.pid


def test_time_limit_answers_and_recycles(cluster: Cluster) -> None:
    broker = cluster.broker()
    worker = cluster.worker([broker], "tester", "--time-limit", "0.5", faulty=True)
    with MDPClient([broker.endpoint], timeout=10) as client:
        started = time.monotonic()
        with pytest.raises(WorkerTimeout, match="time limit"):
            client.send("tester", {"sleep": 30})
        assert time.monotonic() - started < 10
    assert worker.wait(10) == 3  # EXIT_STUCK: supervisord starts a fresh process


def test_max_requests_recycles(cluster: Cluster) -> None:
    broker = cluster.broker()
    worker = cluster.worker([broker], "echo", "--max-requests", "3")
    with MDPClient([broker.endpoint]) as client:
        for i in range(3):
            assert client.send("echo", {"i": i}) == {"i": i}
    assert worker.wait(10) == 0


def test_overload_is_refused_at_once(cluster: Cluster) -> None:
    broker = cluster.broker(None, "--max-queue", "2", "--max-prefetch", "1")
    cluster.worker([broker], "tester", faulty=True)
    with MDPClient([broker.endpoint], timeout=20) as client:
        outcomes = client.send_many("tester", [{"sleep": 0.5}] * 6, return_exceptions=True)
    overloaded = [o for o in outcomes if isinstance(o, Overloaded)]
    served = [o for o in outcomes if isinstance(o, dict)]
    # 1 in hand, 1 held by the worker behind it (--max-prefetch 1; no other worker), 2 queued
    assert len(overloaded) == 2 and len(served) == 4
    assert "queued" in overloaded[0].message


def test_expired_request_is_dropped_unworked(cluster: Cluster) -> None:
    broker = cluster.broker()
    worker = cluster.worker([broker], "tester", faulty=True)
    worked = cluster.tmp_path / "worked"  # the handler would create it
    with MDPClient([broker.endpoint], timeout=0.5, retries=0) as impatient:
        with pytest.raises(Timeout, match="within 0.5s"):
            impatient.send_many("tester", [{"sleep": 1.5},
                                           {"tag": "expires", "started_file": str(worked)}],
                                window=2)
    # the second request waited behind the first (at the broker, or held by the worker),
    # its deadline passed, and it was dropped there, or answered `expired`, unworked

    def expired() -> int:
        status = broker_status(broker.endpoint)
        if status is None:
            return 0
        tester = status.services.get("tester")
        counters = tester.counters if tester is not None else None
        return status.counters.expired + (counters.errors.get("expired", 0) if counters else 0)

    wait_for(lambda: expired() >= 1, 5, "the expired request to be dropped")
    with MDPClient([broker.endpoint], timeout=30) as client:
        assert client.send("tester", {"after": 1})["pid"] == worker.pid
    assert not worked.exists()  # never worked


def test_sigterm_drains_the_request_in_hand(cluster: Cluster) -> None:
    broker, other = cluster.broker(), cluster.broker()
    worker = cluster.worker([broker, other], "tester", faulty=True)
    with MDPClient([broker.endpoint], timeout=10, shuffle=False) as client:
        results: list[object] = []
        started = cluster.tmp_path / "started"  # the handler runs: the worker holds it
        thread = threading.Thread(target=lambda: results.append(
            client.send("tester", {"sleep": 1.0, "started_file": str(started)})))
        thread.start()
        wait_for(started.exists, 5, "the handler to start")
        worker.signal(signal.SIGTERM)
        wait_for(lambda: count_workers(broker.endpoint, "tester", "draining") == 1, 5,
                 "the broker to show the worker draining")
        thread.join(15)
        assert worker.wait(10) == 0
    assert results and isinstance(results[0], dict) and results[0]["sleep"] == 1.0
    assert "draining" in worker.output()
    # both were told it left, and neither waited for it to go silent; on a loaded machine a
    # broker may send to the worker after it closed and before reading its DISCONNECT, and
    # then forgets it as gone (at once, as well)
    outputs = [b.output() for b in (broker, other)]
    assert all(("left" in out or "is gone" in out) and "silent" not in out for out in outputs)
    assert any("left" in out for out in outputs), outputs


def test_a_long_request_is_not_resent_because_it_is_long(cluster: Cluster) -> None:
    a, b = cluster.broker(), cluster.broker()
    worker = cluster.worker([a, b], "tester", faulty=True)
    with MDPClient([a.endpoint, b.endpoint], shuffle=False) as client:  # default settings
        reply = client.send("tester", {"sleep": 3.0})
    assert reply["pid"] == worker.pid
    served = [w.served for x in (a, b) for w in status_of(x.endpoint).workers("tester")]
    assert sum(served) == 1  # worked on once, by one broker's request


def test_a_dead_broker_costs_at_most_the_connect_timeout(cluster: Cluster) -> None:
    live = cluster.broker()
    cluster.worker([live])
    dead = f"tcp://127.0.0.1:{free_port()}"
    with MDPClient([dead, live.endpoint], shuffle=False) as client:  # default settings
        started = time.monotonic()
        assert client.send("echo", {"x": 1}) == {"x": 1}
        elapsed = time.monotonic() - started
    print(f"\nfirst request with the first broker down: {elapsed * 1000:.0f} ms")
    assert elapsed < 3.0


def test_a_late_reply_is_never_taken_for_the_next_request(cluster: Cluster) -> None:
    broker = cluster.broker()
    cluster.worker([broker], "tester", faulty=True)
    with MDPClient([broker.endpoint], timeout=0.5, retries=0) as client:
        with pytest.raises(Timeout):
            client.send("tester", {"n": 1, "sleep": 1.0})
        client.timeout = 10.0
        # the first reply arrives on this same connection while the second request waits
        reply = client.send("tester", {"n": 2})
    assert reply["n"] == 2
