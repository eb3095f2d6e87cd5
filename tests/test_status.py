"""The mmi.status schema: round trips, brokers of other versions, malformed answers, fetch."""

from __future__ import annotations

import asyncio
import copy
import math
from typing import Any

import msgpack
import pytest

from clusterkit import Cluster
from mdp.brokerstatus import clean_meta
from mdp.client import MDPClient
from mdp.errors import ProtocolError, Timeout
from mdp.status import (
    BrokerStatus,
    BrokerView,
    Counters,
    FieldInfo,
    Histogram,
    ServiceCounters,
    ServiceInfo,
    ServiceStatus,
)
from mdp.statusfetch import StatusClients, afetch, fetch, try_fetch
from testkit import free_port

INF = math.inf
LE = [0.001, 0.01, 0.1, 1.0, INF]


def hist(counts: list[int], total: float = 0.5) -> dict[str, Any]:
    return {"le": LE, "counts": counts, "sum": total, "count": sum(counts)}


def worker(pid: int, state: str = "idle", **extra: Any) -> dict[str, Any]:
    """A worker as the first brokers listed it; ``extra`` adds later fields."""
    return {"identity": f"{pid:08x}", "state": state, "host": "h1", "pid": pid,
            "version": "1.0+a", "served": 7, "uptime_s": 3.5, **extra}


def full_status() -> dict[str, Any]:
    """A status with every field, as a broker of this version (plus info) sends it."""
    return {
        "broker": {"endpoint": "tcp://x:1", "pid": 100, "host": "b", "version": "1.0+a",
                   "uptime_s": 5.25, "instance": "i1"},
        "services": {"thumbnail": {
            "queue": 2,
            "workers": [worker(7, "busy", failures=1, queued=2, output="r1"),
                        worker(8, failures=0, queued=0, output="")],
            "counters": {"requests": 10, "replies": 9, "errors": {"bad_request": 1},
                         "expired": 0, "requeued": 1, "bounced": 0, "poisoned": 1,
                         "coalesced": 3},
            "histograms": {"queue_seconds": hist([10, 0, 0, 0, 0], 0.0),
                           "work_seconds": hist([0, 9, 1, 0, 0])},
            "info": {"content_type": "", "doc": "a smaller image",
                     "fields": [["image", "bytes: an image", True, ""],
                                ["format", "jpeg | png | webp", False, "default jpeg"]]},
        }},
        "counters": {"requests": 10, "replies": 9, "errors": 1, "expired": 0, "requeued": 1,
                     "bounced": 0, "dropped": 2, "undeliverable": 0, "refused": 0,
                     "poisoned": 1, "coalesced": 3},
    }


def oldest_status() -> dict[str, Any]:
    """What the first brokers sent: no instance, per-service counts, histograms or info."""
    return {
        "broker": {"endpoint": "tcp://x:1", "pid": 100, "host": "b", "version": "0.9",
                   "uptime_s": 5},
        "services": {"echo": {"queue": 0, "workers": [worker(9)]}},
        "counters": {"requests": 3, "replies": 3, "errors": 0, "expired": 0, "requeued": 0},
    }


# --- round trips -------------------------------------------------------------------------------

def test_a_full_status_round_trips_through_msgpack() -> None:
    status = BrokerStatus.from_wire(full_status())
    wire = msgpack.unpackb(msgpack.packb(status.to_wire(), use_bin_type=True), raw=False)
    assert BrokerStatus.from_wire(wire) == status
    assert status.to_wire() == full_status()


def test_the_decoded_records_read_as_the_consumers_need() -> None:
    status = BrokerStatus.from_wire(full_status())
    thumbnail = status.services["thumbnail"]
    assert status.broker.pid == 100 and status.broker.instance == "i1"
    assert status.counters.poisoned == 1 and status.counters.coalesced == 3
    assert thumbnail.counters == ServiceCounters(10, 9, 0, 1, 0, 1, 3, {"bad_request": 1})
    assert thumbnail.counters.failed == 1 and thumbnail.serving == 2
    assert thumbnail.workers_in("busy") == 1 and thumbnail.workers[0].queued == 2
    assert [w.output for w in thumbnail.workers] == ["r1", ""]
    assert status.find("thumbnail", 8) is thumbnail.workers[1]
    assert status.find("thumbnail", 8, host="elsewhere") is None
    assert status.workers("nosuch") == () and len(status.all_workers()) == 2
    assert thumbnail.info == ServiceInfo("", (FieldInfo("image", "bytes: an image", True),
                                              FieldInfo("format", "jpeg | png | webp", False,
                                                        "default jpeg")), "a smaller image")
    assert thumbnail.info.bytes_fields == {"image"}


def test_an_old_broker_reads_with_defaults_and_round_trips() -> None:
    status = BrokerStatus.from_wire(oldest_status())
    echo = status.services["echo"]
    assert status.broker.instance == "" and status.broker.uptime_s == 5.0
    assert echo.counters is None and echo.work_seconds is None and echo.info is None
    assert echo.workers[0].failures == 0 and echo.workers[0].output == ""
    assert status.counters == Counters(requests=3, replies=3)
    assert BrokerStatus.from_wire(status.to_wire()) == status


def test_a_newer_broker_s_unknown_keys_are_ignored() -> None:
    data = full_status()
    data["future"] = {"x": 1}
    data["broker"]["region"] = "eu"
    data["counters"]["teleported"] = 4
    entry = data["services"]["thumbnail"]
    entry["priority_queues"] = [1, 2]
    entry["workers"][0]["gpu"] = True
    entry["histograms"]["render_seconds"] = hist([1, 0, 0, 0, 0])
    entry["info"]["examples"] = []
    entry["info"]["fields"][0].append("a fifth element")
    assert BrokerStatus.from_wire(data) == BrokerStatus.from_wire(full_status())


def test_info_may_leave_out_what_it_does_not_know() -> None:
    assert ServiceInfo.from_wire({}) == ServiceInfo()
    assert ServiceInfo.from_wire({"fields": [["pSN", "digits"]]}).fields == (
        FieldInfo("pSN", "digits", False, ""),)
    assert ServiceInfo().to_wire() == {"content_type": "", "fields": [], "doc": ""}


# --- malformed answers -------------------------------------------------------------------------

def broken(change: Any) -> dict[str, Any]:
    data = copy.deepcopy(full_status())
    change(data)
    return data


def _service(data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = data["services"]["thumbnail"]
    return result


@pytest.mark.parametrize("data, where", [
    ([], "the answer is not a map"),
    ({"services": {}}, "broker is missing"),
    (broken(lambda d: d["broker"].pop("endpoint")), "broker.endpoint is missing"),
    (broken(lambda d: d["broker"].update(pid="100")), "broker.pid is not a count"),
    (broken(lambda d: d["broker"].update(uptime_s=float("nan"))), "broker.uptime_s"),
    (broken(lambda d: d.update(services=[1])), "services is not a map"),
    (broken(lambda d: d["services"].update({7: {}})), "services key"),
    (broken(lambda d: _service(d).update(queue=-3)), "services.thumbnail.queue"),
    (broken(lambda d: _service(d).update(workers="x")), "services.thumbnail.workers"),
    (broken(lambda d: _service(d)["workers"][1].update(pid=True)),
     r"services.thumbnail.workers\[1\].pid"),
    (broken(lambda d: _service(d)["counters"].update(requests=1.5)),
     "services.thumbnail.counters.requests"),
    (broken(lambda d: _service(d)["counters"]["errors"].update(bad_request="1")),
     "services.thumbnail.counters.errors.bad_request"),
    (broken(lambda d: _service(d)["histograms"]["work_seconds"].update(le=[2, 1, 3, 4, INF])),
     r"services.thumbnail.histograms.work_seconds.le\[1\]"),
    (broken(lambda d: _service(d)["histograms"]["work_seconds"].update(le=[1, 2, 3, 4, 5])),
     "services.thumbnail.histograms.work_seconds.le is not a list of bounds ending with"),
    (broken(lambda d: _service(d)["histograms"]["work_seconds"].update(counts=[1])),
     "services.thumbnail.histograms.work_seconds.counts is not one count per bound"),
    (broken(lambda d: _service(d)["histograms"]["work_seconds"].update(count=99)),
     "services.thumbnail.histograms.work_seconds.count is not the sum of the counts"),
    (broken(lambda d: _service(d)["info"].update(content_type=5)),
     "services.thumbnail.info.content_type"),
    (broken(lambda d: _service(d)["info"]["fields"][0].__setitem__(2, "yes")),
     r"services.thumbnail.info.fields\[0\]\[2\] is not a boolean"),
    (broken(lambda d: _service(d)["info"]["fields"].append(["lonely"])),
     r"services.thumbnail.info.fields\[2\] is not \[name, kind"),
    (broken(lambda d: d["counters"].update(dropped=None)), "counters.dropped"),
])
def test_a_malformed_status_is_refused_naming_the_field(data: Any, where: str) -> None:
    with pytest.raises(ProtocolError, match=f"^mmi.status: {where}"):
        BrokerStatus.from_wire(data)


# --- histograms --------------------------------------------------------------------------------

def test_histogram_quantile_like_prometheus() -> None:
    assert Histogram.from_wire(hist([0, 100, 0, 0, 0])).quantile(0.5) == pytest.approx(0.0055)
    assert Histogram.from_wire(hist([0, 0, 0, 0, 5])).quantile(0.99) == 1.0  # +inf: lower
    assert Histogram.from_wire(hist([0] * 5, 0)).quantile(0.5) is None
    assert Histogram.from_wire(hist([1, 2, 0, 0, 0])).cumulative() == [1, 3, 3, 3, 3]


def test_histogram_window_sum_and_reset() -> None:
    a = Histogram.from_wire(hist([1, 2, 0, 0, 0], 1))
    b = Histogram.from_wire(hist([1, 5, 1, 0, 0], 2))
    assert b.minus(a).counts == (0, 3, 1, 0, 0) and b.minus(a).count == 4
    assert a.minus(b) is a  # the broker restarted: counts since then
    assert a.plus(b).counts == (2, 7, 1, 0, 0) and a.plus(b).sum == 3
    other = Histogram((1.0, INF), (1, 0), 0.1, 1)
    assert a.plus(other) is a and a.minus(other) is a


def test_views_say_whether_the_broker_answered() -> None:
    status = BrokerStatus.from_wire(full_status())
    assert BrokerView("tcp://x:1", status).up
    down = BrokerView("tcp://y:2", None, "no answer within 1 s", taken_at=3.0)
    assert not down.up and down.error.startswith("no answer")
    assert ServiceStatus("echo", 0).to_wire() == {"queue": 0, "workers": []}


# --- fetching from a real broker ---------------------------------------------------------------

def test_fetch_and_afetch_read_a_live_broker(cluster: Cluster) -> None:
    broker = cluster.broker()
    worker = cluster.worker([broker])
    with MDPClient([broker.endpoint], timeout=5) as client:
        assert client.send("echo", {"n": 1}) == {"n": 1}
    status = fetch(broker.endpoint, timeout_s=2)
    assert status.find("echo", worker.pid) is not None
    assert status.counters.replies >= 1 and status.services["echo"].counters is not None
    assert BrokerStatus.from_wire(status.to_wire()) == status
    again = asyncio.run(afetch(broker.endpoint, timeout_s=2))
    assert (again.broker.pid, again.broker.instance) == (status.broker.pid,
                                                         status.broker.instance)

    async def twice() -> list[BrokerStatus]:
        clients = StatusClients(timeout_s=2)
        try:
            return [await clients.fetch(broker.endpoint) for _ in range(2)]
        finally:
            await clients.close()

    assert [s.broker.instance for s in asyncio.run(twice())] == [status.broker.instance] * 2


def test_fetch_from_nobody_times_out() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(Timeout):
        fetch(endpoint, timeout_s=0.3)
    assert try_fetch(endpoint, timeout_s=0.3) is None


def test_a_worker_s_output_version_is_kept_short_and_only_as_a_string() -> None:
    """READY's "output" reaches mmi.status cut to 100 characters; any other type is dropped
    (the door then keys that worker's results by its code version)."""
    assert clean_meta({"output": "r" * 150})["output"] == "r" * 100
    for hostile in (7, None, b"bytes", ["r1"], {"a": 1}):
        assert "output" not in clean_meta({"output": hostile, "version": "1.0"})

