"""The real job: matrix cards through DIPS as deployed, beside the same cores rendering alone.

DIPS as a new user deploys it: two brokers (``python -m mdp.broker``), ecard workers
(``python -m mdp.worker --service ecard``) each attached to both, and as many client
processes pipelining with ``MDPClient(both brokers).send_many("ecard", ..., window=64)``.
Beside it, the same number of processes render the same kind of requests in-process
(``renderers.get("ecard").render``), with no platform at all. Repetitions alternate
(in-process, DIPS, in-process, DIPS, ...), and every process's CPU is read from ``/proc``
over each window, so the report can say where each card's CPU goes.
"""

from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

from benchlib.cluster import start_broker, start_workers
from benchlib.markdown import met, num, table
from benchlib.plan import Plan
from benchlib.procs import Child, Children
from benchlib.roundtrip import note
from benchlib.stats import CpuTally, cpu_window
from testkit import broker_status

SERVICE = "ecard"
TARGET = 0.85
WORKERS_NET_TARGET_US = 100.0  # issue 15: the workers' CPU per card beside the render
IDLE_TARGET = 0.05
RENDER = "render"


@dataclass
class RealJobResult:
    processes: int
    batch: int
    window: int
    local: CpuTally = field(default_factory=CpuTally)  # roles: "render 1", "render 2", ...
    dips: CpuTally = field(default_factory=CpuTally)  # "client N", "broker N", "worker N"
    carried: dict[str, int] = field(default_factory=dict)  # broker role -> requests
    served_known: bool = True  # per-worker counts came from mmi.status

    @property
    def ratio(self) -> float:
        """DIPS over in-process: the median of each repetition's pair (they ran back to
        back, so drifting load on a shared machine hits both figures of a pair alike)."""
        pairs = [dips / local for dips, local in zip(self.dips.rates, self.local.rates,
                                                     strict=False) if local]
        return statistics.median(pairs) if pairs else float("nan")

    @property
    def cpu_ratio(self) -> float:
        """The render's share of all the CPU a card costs through DIPS: the same ratio by
        CPU, which other load on a shared machine moves far less than throughput."""
        total = self.dips.us()
        return self.render_us / total if total else float("nan")

    @property
    def render_us(self) -> float:
        """CPU per card of rendering alone (the in-process processes together)."""
        return self.local.us()

    def brokers_by_load(self) -> list[str]:
        """Broker roles, the one that carried more requests first."""
        return sorted(self.roles("broker"), key=lambda role: -self.carried.get(role, 0))

    def roles(self, prefix: str) -> list[str]:
        return sorted(role for role in self.dips.cpu_s if role.startswith(prefix))

    @property
    def workers_net_us(self) -> float:
        """What the workers spend per card beyond the render itself."""
        return self.dips.us(*self.roles("worker")) - self.render_us


Snapshot = tuple[list[int], dict[int, int]]  # requests per broker, cards served per worker pid


def carried(addresses: list[str]) -> Snapshot | None:
    """Requests each broker has taken so far, and cards served per worker pid (all brokers)."""
    requests: list[int] = []
    served: dict[int, int] = {}
    for address in addresses:
        status = broker_status(address, timeout_s=5.0)
        if status is None:
            return None
        requests.append(status.counters.requests)
        for worker in status.workers(SERVICE):
            served[worker.pid] = served.get(worker.pid, 0) + worker.served
    return requests, served


def card_role(kids: Children, role: str, seed: int, plan: Plan, *extra: str) -> Child:
    args = ["--seed", str(seed), "--distinct", str(plan.realjob_distinct),
            "--batch", str(plan.realjob_batch), "--warmup", str(plan.warmup_s), *extra]
    return kids.spawn(f"card-{role}", [sys.executable, "-m", "benchlib.cards", role, *args],
                      talk=True)


def run(kids: Children, plan: Plan) -> RealJobResult:
    n = plan.realjob_processes
    result = RealJobResult(n, plan.realjob_batch, plan.window)
    brokers = [start_broker(kids) for _ in range(2)]
    addresses = [address for _, address in brokers]
    workers = start_workers(kids, addresses, n, service=SERVICE)
    target: list[str] = []
    for address in addresses:
        target += ["--broker", address]
    local = [card_role(kids, "local", i + 1, plan) for i in range(n)]
    clients = [card_role(kids, "client", 101 + i, plan, *target, "--window", str(plan.window))
               for i in range(n)]
    for child in local + clients:
        child.expect("READY", 120)
    local_roles = {f"{RENDER} {i + 1}": [c.pid] for i, c in enumerate(local)}
    dips_roles = ({f"client {i + 1}": [c.pid] for i, c in enumerate(clients)}
                  | {f"broker {i + 1}": [b.pid] for i, (b, _) in enumerate(brokers)}
                  | {f"worker {i + 1}": [w.pid] for i, w in enumerate(workers)})
    for _ in range(plan.realjob_reps):
        run_local = result.local.add(*cpu_window(local, local_roles, plan.realjob_duration_s))
        before = carried(addresses)
        results, cpu = cpu_window(clients, dips_roles, plan.realjob_duration_s)
        run_dips = result.dips.add(results, cpu)
        for i, one in enumerate(results):
            result.dips.count_for(f"client {i + 1}", int(one["count"]))
        account(result, before, carried(addresses), [w.pid for w in workers],
                sum(int(r["count"]) for r in results))
        note(f"  in-process {run_local.rate:,.0f} cards/s, DIPS {run_dips.rate:,.0f} cards/s"
             + (f" ({run_dips.errors} ERRORS)" if run_dips.errors else ""))
    kids.kill(*local, *clients, *workers, *(b for b, _ in brokers))
    note(f"  DIPS / in-process: {result.ratio:.2f}, by CPU {result.cpu_ratio:.2f} (render "
         f"{result.render_us:,.0f} us/card, workers net of it {result.workers_net_us:,.0f})")
    return result


def account(result: RealJobResult, before: Snapshot | None, after: Snapshot | None,
            worker_pids: list[int], cards: int) -> None:
    """Requests per broker and cards per worker over one window (even split if unknown)."""
    if before is not None and after is not None:
        for i, (old, new) in enumerate(zip(before[0], after[0], strict=True)):
            role = f"broker {i + 1}"
            result.carried[role] = result.carried.get(role, 0) + new - old
    for i, pid in enumerate(worker_pids):
        if before is not None and after is not None and pid in after[1]:
            served = after[1][pid] - before[1].get(pid, 0)
        else:
            result.served_known = False
            served = cards // len(worker_pids)
        result.dips.count_for(f"worker {i + 1}", served)


# --- the report ---------------------------------------------------------------------------


def tables(result: RealJobResult) -> list[str]:
    runs = "/".join(f"{r:,.0f}" for r in result.local.rates)
    dips_runs = "/".join(f"{r:,.0f}" for r in result.dips.rates)
    errors = f" ({result.dips.errors} errors)" if result.dips.errors else ""
    n = result.processes
    lines = table(["", "cards/s", "runs"], [
        [f"{n} processes rendering in-process", num(result.local.rate), runs],
        [f"DIPS: 2 brokers, {n} workers attached to both, {n} pipelining clients",
         num(result.dips.rate) + errors, dips_runs],
        ["DIPS / in-process", f"{result.ratio:.2f}", "median of the repetitions' ratios"],
        ["by CPU: the render alone / every DIPS process, per card", f"{result.cpu_ratio:.2f}",
         "the render's share of what a card costs through DIPS"],
    ])
    return lines + [""] + table(["process", "CPU µs per card", ""], cost_rows(result))


def cost_rows(result: RealJobResult) -> list[list[str]]:
    dips = result.dips
    total = sum(result.carried.values())
    rows = [[f"render alone (in-process, {result.processes} processes)",
             num(result.render_us), "per card rendered in-process"]]
    rows += [[role, num(dips.us(role)), f"{dips.counts.get(role, 0):,} cards"]
             for role in result.roles("client")]
    for rank, role in enumerate(result.brokers_by_load()):
        share = f"{100 * result.carried.get(role, 0) / total:.0f}%" if total else "—"
        label = "the broker that carried more" if rank == 0 else "the other broker"
        rows.append([f"{role} ({label})", num(dips.us(role)),
                     f"carried {share} of requests; per card of all"])
    served = "card it served" if result.served_known else "card of an even share (guessed)"
    rows += [[role, num(dips.us(role)), f"per {served}; {dips.counts.get(role, 0):,} cards"]
             for role in result.roles("worker")]
    rows.append(["workers net of the handler", num(result.workers_net_us),
                 "all workers per card, minus the render alone"])
    overhead = dips.us() - result.render_us
    rows.append(["the platform (every DIPS process, minus the render)", num(overhead),
                 f"{overhead / result.render_us:.2f}× the render" if result.render_us else ""])
    return rows


def target_rows(result: RealJobResult) -> list[list[str]]:
    ratio = result.ratio
    net = result.workers_net_us
    return [[f"cards through 2 brokers ≥ {TARGET:.2f} of in-process",
             f"{ratio:.2f} ({result.dips.rate:,.0f} vs {result.local.rate:,.0f} cards/s; "
             f"by CPU {result.cpu_ratio:.2f})",
             met(ratio >= TARGET) if math.isfinite(ratio) else "—"],
            [f"the workers' CPU net of the handler ≤ {WORKERS_NET_TARGET_US:g} µs per card",
             f"{net:,.0f} µs (beside a {result.render_us:,.0f} µs render)",
             met(net <= WORKERS_NET_TARGET_US) if math.isfinite(net) else "—"],
            idle_broker_row(result)]


def idle_broker_row(result: RealJobResult) -> list[str]:
    """The other broker's cost per card, when no client used it (as it happens today: two
    clients that shuffle the broker list often land on the same broker)."""
    label = (f"a broker no client uses ≤ {100 * IDLE_TARGET:g}% of the client-facing "
             "broker's CPU/request (the real job)")
    ranked = result.brokers_by_load()
    total = sum(result.carried.values())
    if len(ranked) < 2 or not total:
        return [label, "not measured (no request counts from mmi.status)", "—"]
    busy, idle = ranked[0], ranked[-1]
    if result.carried[idle] > 0.01 * total:
        shares = " / ".join(f"{100 * result.carried[r] / total:.0f}%" for r in ranked)
        return [label, f"not measured: every broker carried requests ({shares})", "—"]
    share = result.dips.us(idle) / result.dips.us(busy)
    return [label, f"{100 * share:.0f}% ({result.dips.us(idle):,.0f} vs "
            f"{result.dips.us(busy):,.0f} µs per card)", met(share <= IDLE_TARGET)]


def as_json(result: RealJobResult) -> dict[str, Any]:
    return {"processes": result.processes, "ratio": result.ratio,
            "cpu_ratio": result.cpu_ratio,
            "local_rates": result.local.rates, "dips_rates": result.dips.rates,
            "render_us": result.render_us, "workers_net_us": result.workers_net_us,
            "us_per_card": {role: result.dips.us(role) for role in result.dips.cpu_s},
            "carried": result.carried, "errors": result.dips.errors}


INTRO = (
    "Matrix cards (`ecard`), each request with its own serial and its own 80 numbers (half "
    "as the original's comma-separated string with line wraps, half as a list). *In-process*: "
    "{n} processes calling `renderers.get('ecard').render(request)` in a loop after "
    "`renderers.warm_up()`, no platform. *DIPS* as deployed: 2 brokers (`python -m "
    "mdp.broker`), {n} `python -m mdp.worker --service ecard` processes each attached to "
    "both, and {n} client processes each pipelining batches of {batch} with "
    "`MDPClient(both brokers).send_many('ecard', batch, window={window})`. Repetitions "
    "alternate in-process and DIPS windows; the ratio is the median of each pair's. CPU "
    "per card is read from `/proc/PID/stat` (utime+stime, all threads) over the same "
    "windows, summed over them; brokers are per card of all cards, clients and workers per "
    "card of their own.")


def intro(result: RealJobResult) -> str:
    return INTRO.format(n=result.processes, batch=result.batch, window=result.window)
