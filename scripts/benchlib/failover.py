"""Failover cost: the extra latency clients see when a broker dies or hangs, or a worker dies.

Two brokers; worker processes attached to both (each a real Worker that sleeps a little per
request); client processes sending sync requests with ``MDPClient``'s default settings, except
that every client starts at broker A (no shuffle), the one the fault strikes. A
fault strikes once the load has run for a while. Extra latency is the slowest request that
was in flight at the fault or started after it, minus the median request before it.
"""

from __future__ import annotations

import json
import signal
import statistics
import time
from dataclasses import dataclass

from benchlib.cluster import start_broker, start_thread_workers, wait_workers
from benchlib.plan import Plan
from benchlib.procs import BenchError, Child, Children, wait_for
from benchlib.roundtrip import note
from testkit import busy_worker

SERVICE = "sleep"
DESCRIPTIONS = {
    "broker-kill": "broker SIGKILLed",
    "broker-stop": "broker SIGSTOPped (hung)",  # inject() adds for how long
    "worker-kill": "worker SIGKILLed mid-request",
    "worker-stop": "worker SIGSTOPped (hung) mid-request",  # inject() adds for how long
}


@dataclass
class FaultResult:
    fault: str
    requests: int
    lost: int
    wrong: int
    median_ms: float
    worst_ms: float
    detail: str = ""

    @property
    def extra_ms(self) -> float:
        return self.worst_ms - self.median_ms


def run(kids: Children, plan: Plan) -> list[FaultResult]:
    results = []
    for fault in plan.faults:
        result = one(kids, plan, fault)
        note(f"  {DESCRIPTIONS[fault]}: {result.requests} requests, {result.lost} lost, "
             f"{result.wrong} wrong, extra latency {result.extra_ms:.0f} ms "
             f"(median {result.median_ms:.1f} ms) {result.detail}")
        results.append(result)
    return results


def one(kids: Children, plan: Plan, fault: str) -> FaultResult:
    a, address_a = start_broker(kids)
    b, address_b = start_broker(kids)
    brokers = [address_a, address_b]
    workers: list[Child] = []
    for _ in range(plan.fault_workers):
        workers += start_thread_workers(kids, brokers, 1, SERVICE,
                                        "--sleep-s", str(plan.fault_sleep_s))
    for address in brokers:
        wait_workers(address, SERVICE, plan.fault_workers, 30)
    args: list[str] = []
    for address in brokers:
        args += ["--broker", address]
    clients = [kids.role("fault-client", "fault-client", *args, "--service", SERVICE,
                         "--sleep-s", str(plan.fault_sleep_s))
               for _ in range(plan.fault_clients)]
    for client in clients:
        client.expect("READY", 60)
    duration = plan.fault_before_s + plan.fault_after_s
    duration += plan.hang_s if fault.endswith("-stop") else 0.0
    start = time.time() + 0.2
    for client in clients:
        client.tell(f"GO {start:.6f} {start + duration:.6f}")
    time.sleep(max(0.0, start + plan.fault_before_s - time.time()))
    fault_at = time.time() - start
    detail = inject(fault, a, workers, brokers, plan)
    records = []
    for client in clients:
        text = client.expect("RESULT", duration + 120)
        records += json.loads(text)["records"]
    kids.kill(*clients, *workers, a, b)
    return analyse(fault, records, fault_at, detail)


def inject(fault: str, a: Child, workers: list[Child], brokers: list[str], plan: Plan) -> str:
    if fault == "broker-kill":
        a.send_signal(signal.SIGKILL)
        return ""
    if fault == "broker-stop":
        a.send_signal(signal.SIGSTOP)
        time.sleep(plan.hang_s)
        a.send_signal(signal.SIGCONT)
        return f"for {plan.hang_s:g} s"
    pid = wait_for(lambda: busy_worker(brokers, SERVICE), 5, "a worker holding a request")
    victims = [w for w in workers if w.pid == pid]
    if not victims:
        raise BenchError(f"found no busy worker to {fault} (status said pid {pid})")
    if fault == "worker-kill":
        victims[0].send_signal(signal.SIGKILL)
        return ""
    victims[0].send_signal(signal.SIGSTOP)
    time.sleep(plan.hang_s)
    victims[0].send_signal(signal.SIGCONT)
    return f"for {plan.hang_s:g} s"


def analyse(fault: str, records: list[list[float]], fault_at: float, detail: str
            ) -> FaultResult:
    before = [lat for started, lat, ok in records if started + lat < fault_at and ok == 1]
    touched = [lat for started, lat, _ in records if started + lat >= fault_at]
    if not before or not touched:
        raise BenchError(f"{fault}: no requests before or after the fault")
    lost = sum(1 for _, _, ok in records if ok == -1)
    wrong = sum(1 for _, _, ok in records if ok == 0)
    return FaultResult(fault, len(records), lost, wrong, 1000 * statistics.median(before),
                       1000 * max(touched), detail)
