"""Real network namespaces and a veth link: a broker whose host drops off the network (the
link pulled while clients are mid-request), and a worker behind a slow link (``tc``).
Needs root and iproute2 (skipped without).

Addresses are on a veth pair that exists only between this machine and a namespace the
test creates, so nothing leaves the machine.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from clusterkit import FAULTY_WORKER, Cluster, Proc, needs, skip_or_fail
from mdp.client import MDPClient
from testkit import broker_counter, broker_status, free_port, has_worker, wait_for

pytestmark = [
    pytest.mark.slow,
    needs(os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("tc") is not None,
          "root and iproute2 (ip, tc) for a network namespace"),
]



def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Netns:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name, self.host_if, self.ns_if = f"dips-{tag}", f"dh{tag}", f"dn{tag}"
        # a /30 of its own in 10.254.0.0/16, so that two runs on one host never share one
        # (a shared /30 on two veths would route one run's traffic into the other's link)
        base = 4 * random.randrange(1, 16383)
        self.host_addr = f"10.254.{base >> 8}.{(base & 255) + 1}"
        self.ns_addr = f"10.254.{base >> 8}.{(base & 255) + 2}"

    def create(self) -> None:
        ip("netns", "add", self.name)
        ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        ip("link", "set", self.ns_if, "netns", self.name)
        ip("addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        ip("-n", self.name, "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if)
        ip("-n", self.name, "link", "set", self.ns_if, "up")
        ip("-n", self.name, "link", "set", "lo", "up")

    def cut(self) -> None:
        ip("link", "set", self.host_if, "down")

    def slow(self, rate: str, outbound: bool = False) -> None:
        """Everything sent into the namespace (``outbound``: out of it) goes at ``rate``
        (e.g. "100mbit")."""
        where = ["ip", "netns", "exec", self.name] if outbound else []
        device = self.ns_if if outbound else self.host_if
        subprocess.run([*where, "tc", "qdisc", "add", "dev", device, "root", "tbf", "rate",
                        rate, "burst", "64kb", "latency", "2s"],
                       check=True, capture_output=True, timeout=10)

    def overlimits(self, outbound: bool = False) -> int:
        """How often the shaper held a packet back (0: the link was never slow)."""
        where = ["ip", "netns", "exec", self.name] if outbound else []
        device = self.ns_if if outbound else self.host_if
        stats = subprocess.run([*where, "tc", "-s", "qdisc", "show", "dev", device],
                               check=True, capture_output=True, text=True, timeout=10).stdout
        words = stats.split()
        return int(words[words.index("overlimits") + 1]) if "overlimits" in words else 0

    def spawn(self, cluster: Cluster, name: str, argv: list[str], endpoint: str = "") -> Proc:
        """A Python process inside the namespace, cleaned up with the cluster's."""
        log = cluster.tmp_path / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(["ip", "netns", "exec", self.name, sys.executable, *argv],
                                     stdout=out, stderr=out)
        proc = Proc(popen, log, endpoint)
        cluster.procs.append(proc)
        return proc

    def destroy(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)


@contextmanager
def made_netns() -> Iterator[Netns]:
    """A namespace for one test, removed after it (the test is skipped, or fails under CI,
    where none can be made)."""
    ns = Netns()
    try:
        ns.create()
    except (subprocess.CalledProcessError, OSError) as exc:
        ns.destroy()
        skip_or_fail(f"cannot create a network namespace here: {exc}")
    try:
        yield ns
    finally:
        ns.destroy()


@pytest.fixture
def netns() -> Iterator[Netns]:
    with made_netns() as ns:
        yield ns


def test_broker_host_drops_off_the_network(cluster: Cluster, netns: Netns) -> None:
    near = cluster.broker(fast=False)
    far_endpoint = f"tcp://{netns.ns_addr}:{free_port()}"
    far = netns.spawn(cluster, "far-broker", ["-m", "mdp.broker", "--bind", far_endpoint],
                      far_endpoint)
    wait_for(lambda: broker_status(far_endpoint) is not None, 10, "broker in the namespace")
    workers = [cluster.worker([far, near], "echo", faulty=True, fast=False)
               for _ in range(2)]
    assert len(workers) == 2

    results: list[tuple[int, float, object]] = []
    def client(offset: int) -> None:
        with MDPClient([far_endpoint, near.endpoint], shuffle=False) as c:  # defaults
            for i in range(offset, offset + 150):
                started = time.monotonic()
                try:
                    reply: object = c.send("echo", {"i": i, "sleep": 0.01})
                except Exception as exc:
                    reply = exc
                results.append((i, time.monotonic() - started, reply))

    threads = [threading.Thread(target=client, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: len(results) >= 100, 30, "requests through the far broker")
    netns.cut()  # the far broker's host is gone: no FIN, no RST, just silence
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    wrong = [(i, r) for i, _, r in results if not (isinstance(r, dict) and r.get("i") == i)]
    assert wrong == []
    assert len(results) == 600
    worst = max(elapsed for _, elapsed, _ in results)
    print(f"\nbroker host cut off: 600 requests, 0 lost, 0 wrong; slowest {worst * 1000:.0f} ms")
    assert worst < 3.0


def host_broker(cluster: Cluster, netns: Netns) -> Proc:
    """A broker with default settings on the host's end of the link."""
    endpoint = f"tcp://{netns.host_addr}:{free_port()}"
    log = cluster.tmp_path / "broker.log"
    with log.open("wb") as out:
        popen = subprocess.Popen([sys.executable, "-m", "mdp.broker", "--bind", endpoint],
                                 stdout=out, stderr=out)
    broker = Proc(popen, log, endpoint)
    cluster.procs.append(broker)
    wait_for(lambda: broker_status(endpoint) is not None, 10, "broker")
    return broker


def test_a_worker_taking_a_big_upload_over_a_slow_link_is_not_taken_for_frozen(
        cluster: Cluster, netns: Netns) -> None:
    """A 30 MB request to a worker behind a 100 Mbit/s link takes about 2.6 s to arrive, and
    the messages of each side wait behind it: the broker's probes (the worker cannot answer
    them sooner; it is not frozen, the broker's --frozen-after is 0.8 s, and its task must
    not be taken back) and the broker's heartbeats (the broker is not silent, the worker's
    expiry is 1.5 s here, and the worker must not drop it: that would cost the request a
    loss, and two losses make it a poisoned one)."""
    netns.slow("100mbit")
    broker = host_broker(cluster, netns)
    endpoint = broker.endpoint
    # a worker that takes its broker for silent after 1.5 s: less than the upload takes,
    # whenever it starts between the broker's heartbeats
    worker = netns.spawn(cluster, "far-worker", ["-m", "mdp.worker", "--broker", endpoint,
                                                 "--service", "echo",
                                                 "--heartbeat-interval", "0.5"])
    wait_for(lambda: has_worker(endpoint, worker.pid), 10, "the worker in the namespace")
    big = b"\x5a" * 30_000_000
    with MDPClient([endpoint]) as client:
        reply = client.send("echo", {"d": big}, timeout=30)
    assert isinstance(reply, dict) and reply.get("d") == big
    assert netns.overlimits() > 0, "the link was not slow: the test shows nothing"
    assert "silent" not in broker.output(), broker.output()[-2000:]
    assert "silent" not in worker.output(), worker.output()[-2000:]
    assert broker_counter(endpoint, "requeued") == 0


CLIENT_IN_NAMESPACE = '''
import asyncio, json, logging, sys
from mdp.aio import AsyncMDPClient
from mdp.client import MDPClient
logging.basicConfig(level=logging.WARNING)  # a failover is logged on stderr
endpoint, size = sys.argv[1], int(sys.argv[2])
request = {"reply_bytes": size}
with MDPClient([endpoint], timeout=20) as client:
    sync = len(client.send("echo", request)["blob"])
async def main():
    async with AsyncMDPClient([endpoint], timeout=20) as client:
        return len((await client.send("echo", request))["blob"])
print(json.dumps({"sync": sync, "aio": asyncio.run(main())}))
'''


def test_a_client_behind_a_slow_link_gets_a_big_reply(cluster: Cluster, netns: Netns) -> None:
    """A 20 MB reply to a 30-byte request takes about 1.7 s to reach a client behind a
    100 Mbit/s link, and a PONG to the client's ping would wait behind it: the broker
    announces the reply, and the client (sync and asyncio) neither fails over nor resends."""
    netns.slow("100mbit")
    broker = host_broker(cluster, netns)
    cluster.worker([broker.endpoint], "echo", faulty=True, fast=False)
    done = subprocess.run(["ip", "netns", "exec", netns.name, sys.executable, "-c",
                           CLIENT_IN_NAMESPACE, broker.endpoint, "20000000"],
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"sync": 20_000_000, "aio": 20_000_000}
    assert "failing over" not in done.stderr, done.stderr[-3000:]
    assert netns.overlimits() > 0, "the link was not slow: the test shows nothing"
    assert broker_counter(broker.endpoint, "requests") == 2  # each sent once


def test_a_worker_sending_a_big_reply_over_a_slow_link_is_not_taken_for_frozen(
        cluster: Cluster, netns: Netns) -> None:
    """A worker behind a 100 Mbit/s link answers a 30-byte request with 20 MB, about 1.7 s
    on the way, and the answers to the broker's probes wait behind it: it announces the
    reply, so the broker neither takes it for frozen nor gives the task to another."""
    netns.slow("100mbit", outbound=True)
    broker = host_broker(cluster, netns)
    worker = netns.spawn(cluster, "far-worker", [str(FAULTY_WORKER), "--broker",
                                                 broker.endpoint, "--service", "echo"])
    wait_for(lambda: has_worker(broker.endpoint, worker.pid), 10, "the worker in the namespace")
    with MDPClient([broker.endpoint]) as client:
        reply = client.send("echo", {"reply_bytes": 20_000_000}, timeout=30)
    assert isinstance(reply, dict) and len(reply["blob"]) == 20_000_000
    assert netns.overlimits(outbound=True) > 0, "the link was not slow: the test shows nothing"
    assert "silent" not in broker.output(), broker.output()[-2000:]
    assert broker_counter(broker.endpoint, "requeued") == 0


def test_a_big_upload_over_a_slow_link_is_not_cut_by_zmtp_heartbeats(
        cluster: Cluster, netns: Netns, caplog: pytest.LogCaptureFixture) -> None:
    """libzmq takes a message for a sign of life only once all of it has come: a 55 MB
    request over a 100 Mbit/s link (about 4.6 s) outlasts the at most 4 s between a ZMTP
    PING and the 3 s timeout after it that used to drop the client's connection mid-upload
    (the request was then sent again, and again). The broker's ZMTP timeout covers its
    --max-message-bytes at 10 MB/s; the link is faster than that, so the client's own
    ping (held for 5.5 s) goes after the upload."""
    netns.slow("100mbit")
    endpoint = f"tcp://{netns.ns_addr}:{free_port()}"
    limit = ["--max-message-bytes", "60000000"]
    netns.spawn(cluster, "far-broker", ["-m", "mdp.broker", "--bind", endpoint, *limit],
                endpoint)
    wait_for(lambda: broker_status(endpoint) is not None, 10, "broker in the namespace")
    worker = netns.spawn(cluster, "far-worker", ["-m", "mdp.worker", "--broker", endpoint,
                                                 "--service", "echo", *limit])
    wait_for(lambda: has_worker(endpoint, worker.pid), 10, "the worker in the namespace")
    big = b"\x5a" * 55_000_000
    caplog.set_level(logging.INFO, logger="mdp")
    with MDPClient([endpoint], max_request_bytes=60_000_000) as client:
        reply = client.send("echo", {"d": big}, timeout=60)
    assert isinstance(reply, dict) and reply.get("d") == big
    assert netns.overlimits() > 0, "the link was not slow: the test shows nothing"
    resent = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert resent == [], resent
