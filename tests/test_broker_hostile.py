"""Real processes against a peer that does what no DIPS peer would: a client that queues
more bytes than a broker should hold, a worker that churns READY and DISCONNECT, a
client whose DIPS messages are malformed, and a broker that ignores the prefetch its
worker advertised. The process at risk must stay up, bounded in memory and in log lines,
and answer what it can with an error that names what was wrong.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import zmq

from clusterkit import Cluster, Proc
from mdp import protocol as p
from testkit import rss_bytes, status_of, wait_for

pytestmark = pytest.mark.slow

MIB = 1 << 20


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


def dealer(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


def results(sock: zmq.Socket, count: int, timeout_s: float = 10.0) -> dict[int, dict]:
    """The next ``count`` RESULTs on a DIPS client socket, by request id (each receive
    waits at most ``timeout_s``)."""
    found: dict[int, dict] = {}
    while len(found) < count:
        if not sock.poll(int(timeout_s * 1000)):
            raise AssertionError(f"{len(found)} of {count} answers came: {sorted(found)}")
        message = p.parse_client_inbound(sock.recv_multipart())
        if isinstance(message, p.Result) and message.rid is not None:
            found[message.rid] = msgpack.unpackb(message.body[0])
    return found


# --- a client that queues more bytes than the broker should hold ----------------------------


def test_a_broker_refuses_requests_past_its_queued_bytes_and_stays_small(
        cluster: Cluster, ctx: zmq.Context, tmp_path: Path) -> None:
    """One worker busy with a long request; a client sends 48 requests of 1 MiB. With
    8 MiB allowed queued, most are answered ``overloaded`` naming the limit, the broker
    holds at most 8 MiB of them (it held all 48 before the bound), and the ones queued
    are served once the worker is free."""
    broker = cluster.broker(None, "--max-message-bytes", str(2 * MIB),
                            "--max-queue-bytes", "8MiB")
    cluster.worker([broker], "echo", "--prefetch", "0", faulty=True)
    gate = tmp_path / "gate"
    client = dealer(ctx, broker.endpoint)
    client.send_multipart(p.client_submit(b"echo", 0, 60_000, [msgpack.packb(
        {"gate_file": str(gate)})]))
    wait_for(lambda: status_of(broker.endpoint).workers("echo")[0].state == "busy", 10,
             "the worker busy with the gated request")
    rss_before = rss_bytes(broker.pid)
    blob = msgpack.packb({"blob": b"\x00" * MIB})
    for rid in range(1, 49):
        client.send_multipart(p.client_submit(b"echo", rid, 60_000, [blob]))
    fit = 8 * MIB // len(blob)  # 7: a body is a little over 1 MiB
    refused = results(client, 48 - fit)
    assert all(r["error"]["code"] == "overloaded" for r in refused.values())
    assert "--max-queue-bytes" in next(iter(refused.values()))["error"]["message"]
    queued = status_of(broker.endpoint).services["echo"]
    assert (queued.queue, queued.queue_bytes) == (fit, fit * len(blob))
    assert rss_bytes(broker.pid) - rss_before < 24 * MIB  # 48 MiB held without the bound
    gate.touch()
    served = results(client, fit + 1, timeout_s=20.0)
    assert set(served) == {0, *(set(range(1, 49)) - set(refused))}
    assert all("error" not in r for r in served.values())
    assert status_of(broker.endpoint).services["echo"].queue_bytes == 0


def broker_log_lines(proc: Proc) -> int:
    return len(proc.output().splitlines())
