"""No double booking: every worker is attached to both brokers, yet no request waits on a
busy worker while another is idle.

2 brokers, 4 workers, requests that sleep 50 ms, from 8 clients (4 start at each broker) and
from 3 (fewer than workers: where double booking would show, a request held by a busy
worker while another worker sits idle). The evidence is the timeline of every request; the
throughput against the ideal is printed, not asserted (speed belongs to scripts/bench).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from clusterkit import Cluster
from mdp.client import MDPClient
from testkit import broker_counter

pytestmark = pytest.mark.slow

PER_CLIENT = 30
JOB_S = 0.05
IDLE_SLACK_S = 0.030  # a worker idle this long while a request waited is a violation
# (a double-booked request waits up to a whole 50 ms job; scheduling noise on a busy
# 2-core machine makes gaps of ~10 ms, and 21-22 ms on a slower one at load 2-3, where
# 20 ms failed 1 run in 5 on code that has passed it for sessions)


@pytest.mark.parametrize("clients", [8, 3])
def test_no_request_waits_while_a_worker_is_idle(cluster: Cluster, clients: int) -> None:
    a, b = cluster.broker(), cluster.broker()
    workers = [cluster.worker([a, b], "sleeper", faulty=True) for _ in range(4)]
    records: list[tuple[float, dict[str, Any]]] = []
    lock = threading.Lock()

    def client(endpoints: list[str]) -> None:
        with MDPClient(endpoints, shuffle=False) as c:
            for i in range(PER_CLIENT):
                sent = time.time()
                reply = c.send("sleeper", {"i": i, "sleep": JOB_S})
                with lock:
                    records.append((sent, reply))

    orders = ([[a.endpoint, b.endpoint], [b.endpoint, a.endpoint]] * 4)[:clients]
    threads = [threading.Thread(target=client, args=(o,)) for o in orders]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - started
    assert len(records) == clients * PER_CLIENT

    throughput = len(records) / elapsed
    ideal = min(clients, len(workers)) / JOB_S
    bounced = sum(broker_counter(x.endpoint, "bounced") for x in (a, b))
    violations = idle_while_waiting(records)
    print(f"\nthroughput {throughput:.1f}/s = {throughput / ideal:.0%} of ideal {ideal:.0f}/s; "
          f"{bounced} requests bounced back by busy workers; "
          f"{len(violations)} waits beside an idle worker")
    assert violations == [], "; ".join(violations[:5])


def idle_while_waiting(records: list[tuple[float, dict[str, Any]]]) -> list[str]:
    """Requests that waited while some worker sat idle for IDLE_SLACK_S or more."""
    jobs: dict[int, list[tuple[float, float]]] = {}
    for _, reply in records:
        jobs.setdefault(reply["pid"], []).append((reply["start"], reply["end"]))
    gaps = []  # (from, to) when a worker was idle between two of its jobs
    for spans in jobs.values():
        spans.sort()
        gaps += [(end, nxt) for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False)]
    violations = []
    for sent, reply in records:
        for gap_from, gap_to in gaps:
            overlap = min(gap_to, reply["start"]) - max(gap_from, sent)
            if overlap >= IDLE_SLACK_S:
                violations.append(f"request {reply['i']} waited {overlap * 1000:.0f} ms "
                                  f"while a worker was idle")
    return violations
