"""Cards per second through mdp-http beside the same through MDPClient, and the gateway's
CPU per request.

One broker, two ecard workers. For ``duration`` each: MDPClient ``send_many`` (window 16),
then 8 HTTP threads posting the same JSON request to ``POST /v1/ecard`` on keep-alive
connections, to a door on asyncio's loop and to one on uvloop (where it is installed) in
alternated windows. The gateway's CPU is read from /proc (utime + stime over all its
threads).
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import re
import statistics
import threading
import time
from pathlib import Path

from benchlib.cluster import start_broker, start_workers
from benchlib.plan import Plan
from benchlib.procs import Child, Children, wait_for
from benchlib.roundtrip import note
from mdp.client import MDPClient
from testkit import cpu_seconds

REQUEST = {"pSN": "1234567890", "pData": [(7 * i) % 100 for i in range(80)]}
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)/")
HTTP_THREADS = 8


def _through_client(broker: str, duration_s: float) -> float:
    done, started = 0, time.monotonic()
    with MDPClient([broker]) as client:
        while time.monotonic() - started < duration_s:
            done += len(client.send_many("ecard", [REQUEST] * 64, window=16))
    return done / (time.monotonic() - started)


def _through_http(port: int, duration_s: float) -> tuple[int, float, int]:
    body = json.dumps(REQUEST).encode()
    counts = [0] * HTTP_THREADS
    failures = [0] * HTTP_THREADS
    stop_at = time.monotonic() + duration_s

    def run(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < stop_at:
            conn.request("POST", "/v1/ecard", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                counts[i] += 1
            else:
                failures[i] += 1
        conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(HTTP_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), time.monotonic() - started, sum(failures)


def _door(kids: Children, broker: str, loop: str) -> tuple[Child, int]:
    """An mdp-http for ``broker`` on ``loop`` (``--event-loop``), once it listens; warmed."""
    gateway = kids.python(f"mdp-http-{loop}", "-m", "mdp_http", "--listen", "127.0.0.1:0",
                          "--broker", broker, "--log-level", "INFO", "--event-loop", loop)
    log = Path(gateway.log_path)
    port = int(wait_for(lambda: (m := LISTENING.search(log.read_text())) and m.group(1), 20,
                        "mdp-http to listen"))
    _through_http(port, 0.3)  # warm up: the gateway's client and connections
    return gateway, port


def run(kids: Children, plan: Plan) -> list[str]:
    """The markdown lines of the section: the door on each event loop it can run on, in
    alternated windows (``plan.reps`` of each), beside MDPClient on the same workers."""
    duration = max(1.0, plan.duration_s * 3)
    _, broker = start_broker(kids)
    start_workers(kids, [broker], 2, "ecard")
    loops = ["asyncio", "uvloop"] if importlib.util.find_spec("uvloop") else ["asyncio"]
    doors = {loop: _door(kids, broker, loop) for loop in loops}
    client_rate = _through_client(broker, duration)
    note(f"  MDPClient: {client_rate:.0f} cards/s")
    rates: dict[str, list[float]] = {loop: [] for loop in loops}
    costs: dict[str, list[float]] = {loop: [] for loop in loops}
    failed = 0
    for rep in range(plan.reps):
        for loop in loops if rep % 2 == 0 else loops[::-1]:  # each goes first in turn
            gateway, port = doors[loop]
            cpu_before = cpu_seconds(gateway.pid)
            done, elapsed, failures = _through_http(port, duration)
            cost = 1e6 * (cpu_seconds(gateway.pid) - cpu_before) / max(done, 1)
            rates[loop].append(done / elapsed)
            costs[loop].append(cost)
            failed += failures
            note(f"  mdp-http on {loop}: {done / elapsed:.0f} cards/s, {cost:.0f} µs "
                 "CPU/request")
    lines = [
        "| path | cards/s | gateway CPU per request | failed |",
        "|---|---:|---:|---:|",
        f"| `MDPClient.send_many` (window 16), 1 broker, 2 ecard workers | {client_rate:,.0f} "
        "| — | 0 |",
    ]
    cost = {loop: statistics.median(costs[loop]) for loop in loops}
    for loop in loops:
        rate = statistics.median(rates[loop])
        lines.append(f"| `POST /v1/ecard` through mdp-http on {loop}, {HTTP_THREADS} keep-alive "
                     f"HTTP clients | {rate:,.0f} ({rate / client_rate:.0%}) | "
                     f"{cost[loop]:,.0f} µs | {failed if loop == loops[-1] else ''} |")
    if len(loops) == 2:
        lower = sum(u < a for a, u in zip(costs["asyncio"], costs["uvloop"], strict=True))
        lines += ["", f"The door on uvloop against asyncio's loop, {plan.reps} alternated "
                  f"windows of {duration:g} s each (medians): CPU per request "
                  f"{cost['uvloop'] / cost['asyncio']:.2f}×, lower in {lower} of {plan.reps} "
                  "pairs."]
    return lines
