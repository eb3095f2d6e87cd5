"""Scale: one broker with 1 to 1,000 workers, idle cost, memory, and dispatch cost.

Workers are real ``mdp.worker.Worker`` instances hosted as threads, 250 per process: 1,000
worker processes would not fit in this machine's memory and cores, and the broker cannot
tell the difference (each is its own DEALER socket and TCP connection). They sleep a fixed
time per request, so throughput is limited by the broker (and the two cores it shares with
clients and workers), not by the work.
"""

from __future__ import annotations

import inspect
import itertools
import math
import statistics
import time
from collections import deque
from dataclasses import dataclass, field

from benchlib.cluster import (
    queue_limits,
    start_broker,
    start_thread_workers,
    wait_workers,
)
from benchlib.plan import Plan
from benchlib.procs import Child, Children, CpuWindow, wait_for
from benchlib.roundtrip import note
from benchlib.stats import combine, timed_window
from mdp.config import BrokerConfig
from mdp.dispatch import Dispatcher, Request, Worker
from mdp.standing import expired_workers
from mdp.sweeps import drop_expired
from testkit import queue_depth, rss_bytes

SERVICE = "sleep"
PARKED = "parked"
CLIENT_WINDOW = 500  # requests in flight per load client


@dataclass
class ScalePoint:
    workers: int
    ideal: float
    rates: list[float] = field(default_factory=list)
    idle_share: float = 0.0  # broker, fraction of a core, workers idle
    busy_share: float = 0.0  # broker under load
    us_per_request: float = 0.0  # broker CPU per request, net of its idle cost
    client_share: float = 0.0  # the load client, fraction of a core
    workers_share: float = 0.0  # all worker-hosting processes together
    errors: int = 0  # requests of the load that failed (timeouts)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates) if self.rates else float("nan")


@dataclass
class DispatchCell:
    workers: int
    queued: int
    us_per_request: float
    tick_ms: float


@dataclass
class ScaleResult:
    sleep_s: float
    points: list[ScalePoint] = field(default_factory=list)
    idle_workers: int = 0
    idle_share: float = float("nan")
    idle_wakeups_per_s: float = float("nan")
    idle_window_s: float = 0.0
    flood: int = 0
    rss_before: int = 0
    rss_after: int = 0
    flooded_idle_share: float = float("nan")
    flooded_us_per_request: float = float("nan")
    flooded_rate: float = float("nan")
    dispatch: list[DispatchCell] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# With one broker there is nobody to tell BUSY; a busy_after above the sleep keeps the one
# sentinel thread of each 250-worker process from taking over every socket of it at once
# (a fleet runs one worker per process, where the sentinel watches one worker).
SCALE_BUSY_AFTER_S = 0.05


def run(kids: Children, plan: Plan) -> ScaleResult:
    result = ScaleResult(plan.scale_sleep_s)
    broker, address = start_broker(kids, *queue_limits(plan.flood + 10_000))
    hosts: list[Child] = []
    for count in plan.scale_workers:
        hosts += start_thread_workers(kids, [address], count - sum_workers(result), SERVICE,
                                      "--sleep-s", str(plan.scale_sleep_s),
                                      "--busy-after", str(SCALE_BUSY_AFTER_S))
        host_pids = [host.pid for host in hosts]
        wait_workers(address, SERVICE, count, 60 + count / 10)
        point = ScalePoint(count, count / plan.scale_sleep_s)
        last = count == plan.scale_workers[-1]
        window = plan.idle_window_s if last else min(1.0, plan.idle_window_s)
        idle = idle_window(broker, window)
        point.idle_share = idle.share
        if last:
            result.idle_workers, result.idle_share = count, point.idle_share
            result.idle_wakeups_per_s = idle.wakeups / idle.wall_s
            result.idle_window_s = window
        loaded(kids, plan, broker, address, point, plan.scale_reps, host_pids)
        note(f"  {count:>5} workers: {point.rate:,.0f}/s (ideal {point.ideal:,.0f}), broker "
             f"{100 * point.busy_share:.0f}% busy, {100 * point.idle_share:.1f}% idle, "
             f"{point.us_per_request:.0f} us/request, {point.errors} errors; clients "
             f"{100 * point.client_share:.0f}%, workers {100 * point.workers_share:.0f}%")
        result.points.append(point)
    flooded(kids, plan, broker, address, result)
    kids.kill(broker, *hosts)
    result.dispatch = dispatch_costs(plan)
    return result


def sum_workers(result: ScaleResult) -> int:
    return result.points[-1].workers if result.points else 0


def idle_window(broker: Child, window_s: float) -> CpuWindow:
    cpu = CpuWindow(broker.pid)
    time.sleep(window_s)
    return cpu.stop()


def loaded(kids: Children, plan: Plan, broker: Child, address: str, point: ScalePoint,
           reps: int, host_pids: list[int]) -> None:
    """Pipelined load with twice as many requests in flight as there are workers.

    At most ``CLIENT_WINDOW`` in flight per client process: a deeper window overflows the
    client socket's send queue (SNDHWM 1000), which ``MDPClient`` takes for a dead broker.
    """
    in_flight = min(2 * point.workers, 2000)
    clients_needed = math.ceil(in_flight / CLIENT_WINDOW)
    window = math.ceil(in_flight / clients_needed)
    batch = max(2 * window, min(int(point.ideal * 0.25 / clients_needed), 2048))
    clients = [kids.role("scale-client", "client", "--kind", "dips", "--mode", "pipe",
                         "--size", "5", "--service", SERVICE, "--window", str(window),
                         "--batch", str(batch), "--warmup", "0.2", "--endpoint", address)
               for _ in range(clients_needed)]
    for client in clients:
        client.expect("READY", 60)
    shares: list[float] = []
    costs: list[float] = []
    client_shares: list[float] = []
    workers_shares: list[float] = []
    errors = 0
    for _ in range(reps):
        cpu = CpuWindow(broker.pid)
        others = [CpuWindow(pid) for pid in [*(c.pid for c in clients), *host_pids]]
        results = timed_window(clients, plan.scale_duration_s)
        cpu.stop()
        for other in others:
            other.stop()
        client_shares.append(sum(other.share for other in others[:len(clients)]))
        workers_shares.append(sum(other.share for other in others[len(clients):]))
        count = sum(int(r["count"]) for r in results)
        run = combine(results)
        errors += run.errors
        point.rates.append(run.rate)
        shares.append(cpu.share)
        net = cpu.cpu_s - point.idle_share * cpu.wall_s
        costs.append(1e6 * max(0.0, net) / count if count else float("nan"))
    kids.kill(*clients)
    point.errors = errors
    point.busy_share = statistics.median(shares)
    point.client_share = statistics.median(client_shares)
    point.workers_share = statistics.median(workers_shares)
    point.us_per_request = statistics.median(costs)


def flooded(kids: Children, plan: Plan, broker: Child, address: str,
            result: ScaleResult) -> None:
    """``plan.flood`` requests queued behind a worker that never answers."""
    parked = start_thread_workers(kids, [address], 1, PARKED, "--block")
    wait_workers(address, PARKED, 1, 30)
    result.rss_before = rss_bytes(broker.pid)
    flood = kids.role("flood", "flood", "--broker", address, "--service", PARKED,
                      "--count", str(plan.flood))
    flood.expect("READY", 120)
    # the parked worker runs one and, with no other worker idle, holds up to max_prefetch
    queued = plan.flood - 1 - BrokerConfig.max_prefetch
    wait_for(lambda: queue_depth(address, PARKED, 5.0) >= queued, 120,
             f"{plan.flood} queued requests")
    result.flood = plan.flood
    result.rss_after = rss_bytes(broker.pid)
    result.flooded_idle_share = idle_window(broker, plan.idle_window_s).share
    point = ScalePoint(plan.scale_workers[-1], plan.scale_workers[-1] / plan.scale_sleep_s,
                       idle_share=result.flooded_idle_share)
    loaded(kids, plan, broker, address, point, 1, [])
    result.flooded_rate = point.rate
    result.flooded_us_per_request = point.us_per_request
    note(f"  {plan.flood:,} queued: broker RSS {result.rss_before / 2**20:.1f} -> "
         f"{result.rss_after / 2**20:.1f} MiB, idle {100 * result.flooded_idle_share:.1f}%, "
         f"{point.rate:,.0f}/s at {point.us_per_request:.0f} us/request")
    kids.kill(flood, *parked)


# --- dispatch cost in isolation: mdp.dispatch.Dispatcher, no sockets ----------------------


def dispatch_costs(plan: Plan, trials: int = 3) -> list[DispatchCell]:
    """Every cell ``trials`` times, round robin (drifting load hits all cells alike); the
    best trial of each cell counts, since noise on a shared machine only ever adds."""
    best: dict[tuple[int, int], DispatchCell] = {}
    for _ in range(trials):
        for workers in plan.dispatch_workers:
            for queued in plan.dispatch_queues:
                cell = dispatch_cost(workers, queued, plan.dispatch_iterations)
                known = best.get((workers, queued))
                if known is None or cell.us_per_request < known.us_per_request:
                    best[(workers, queued)] = cell
    cells = list(best.values())
    note("  dispatch: " + ", ".join(f"{c.workers}w/{c.queued}q {c.us_per_request:.1f} us"
                                    for c in cells))
    return cells


def dispatch_cost(workers: int, queued: int, iterations: int) -> DispatchCell:
    """Steady state with every worker busy and ``queued`` waiting: a worker replies, a new
    request arrives, and the dispatcher pairs the head of the queue with that worker."""
    limits: dict[str, int] = {"max_queue": queued + workers + 10}
    if "max_total_queue" in inspect.signature(Dispatcher).parameters:
        limits["max_total_queue"] = queued + workers + 10
    dispatcher = Dispatcher(max_services=10, unknown_grace_s=60.0, worker_expiry_s=3600.0,
                            **limits)
    now = 1000.0
    rids = itertools.count(1)

    def request() -> Request:
        return Request(b"client", SERVICE.encode(), [b"x"], now, next(rids), now + 3600.0)

    for i in range(workers):
        dispatcher.add_worker(b"w%07d" % i, SERVICE.encode(), True, {}, now)
    service = dispatcher.services[SERVICE.encode()]
    busy: deque[Worker] = deque()
    for _ in range(workers + queued):
        if dispatcher.enqueue(request(), now) is not None:
            raise AssertionError("the dispatcher refused a request")
        if len(service.queue) == 1 and service.idle:
            busy.extend(w for w, _, _ in dispatcher.assignments(service, now))
    started = time.perf_counter()
    for _ in range(iterations):
        worker = busy.popleft()
        dispatcher.complete(worker, next(iter(worker.tasks)), now)  # its one task
        dispatcher.enqueue(request(), now)
        busy.extend(w for w, _, _ in dispatcher.assignments(service, now))
    per_request = (time.perf_counter() - started) / iterations
    started = time.perf_counter()
    expired_workers(dispatcher.workers.values(), now)
    drop_expired(dispatcher, now)
    tick = time.perf_counter() - started
    if len(busy) != workers or len(service.queue) != queued:
        raise AssertionError("dispatch benchmark lost track of its workers")
    return DispatchCell(workers, queued, per_request * 1e6, tick * 1e3)


def flat(values: list[float]) -> float:
    """Largest over smallest (1.0 is perfectly flat)."""
    finite = [v for v in values if math.isfinite(v) and v > 0]
    return max(finite) / min(finite) if finite else float("nan")
