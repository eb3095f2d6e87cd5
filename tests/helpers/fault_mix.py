"""Faults the chaos script does not combine, with every run recorded: a harness, not a test.

    python tests/helpers/fault_mix.py DIR --seconds 40 --faults stop-broker-short poison ...

Brokers and ``tests/helpers/recording_worker.py`` workers as real processes (a dead worker
started again after 0.3 s), sync and asyncio clients sending ``{"n": unique, "sleep": w}``,
and the faults asked for, each on its own thread:

* ``stop-broker-short``: a random broker SIGSTOPped for ``--short-stop`` seconds (0.3: just
  above the broker's stop threshold) every ``--short-gap`` seconds;
* ``stop-broker``: a random broker SIGSTOPped for 1-3 s every 3-6 s;
* ``stop-worker``: a random worker SIGSTOPped for 0.5-2 s every 2-5 s;
* ``kill-worker``: a random worker SIGKILLed every 2-5 s;
* ``poison``: a request that kills its worker every ``--poison-period`` seconds.

At the end: what the clients saw (ok, wrong, errors by code, timeouts, calls that took past
their timeout by more than a second), the ordinary requests that ran more than once (with
where and when), and how many workers each fatal request cost.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_chaos import chaos_module  # noqa: E402

from mdp.aio import AsyncMDPClient  # noqa: E402
from mdp.client import MDPClient  # noqa: E402
from mdp.errors import RequestError, Timeout  # noqa: E402

RECORDING_WORKER = Path(__file__).resolve().parent / "recording_worker.py"


class Seen:
    """What the clients saw."""

    def __init__(self, timeout: float) -> None:
        self.lock = threading.Lock()
        self.timeout = timeout
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.late: list[str] = []
        self.wrong: list[str] = []
        self.by_n: dict[str, str] = {}

    def record(self, n: str, began: float, outcome: str) -> None:
        took = time.monotonic() - began
        with self.lock:
            self.outcomes[outcome] += 1
            self.by_n[n] = outcome
            if took > self.timeout + 1.0:
                self.late.append(f"{n} took {took:.2f}s ({outcome})")


def call_outcome(n: str, reply: Any) -> str:
    return "ok" if isinstance(reply, dict) and reply.get("n") == n else "wrong"


def failure(exc: Exception) -> str:
    if isinstance(exc, Timeout):
        return "timeout"
    if isinstance(exc, RequestError):
        return exc.code
    return f"exception:{type(exc).__name__}"


def sync_client(endpoints: list[str], name: str, seen: Seen, stop: threading.Event,
                work: float, options: dict[str, Any]) -> None:
    with MDPClient(endpoints, **options) as client:
        i = 0
        while not stop.is_set():
            i += 1
            n = f"{name}-{i}"
            began = time.monotonic()
            try:
                outcome = call_outcome(n, client.send("echo", {"n": n, "sleep": work}))
            except Exception as exc:
                outcome = failure(exc)
            seen.record(n, began, outcome)


def async_client(endpoints: list[str], name: str, seen: Seen, stop: threading.Event,
                 work: float, concurrency: int, options: dict[str, Any]) -> None:
    async def sender(client: AsyncMDPClient, tag: str) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            n = f"{tag}-{i}"
            began = time.monotonic()
            try:
                outcome = call_outcome(n, await client.send("echo", {"n": n, "sleep": work}))
            except Exception as exc:
                outcome = failure(exc)
            seen.record(n, began, outcome)

    async def main() -> None:
        async with AsyncMDPClient(endpoints, **options) as client:
            await asyncio.gather(*(sender(client, f"{name}.{k}") for k in range(concurrency)))

    asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=Path)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--brokers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--sync", type=int, default=4)
    parser.add_argument("--aio", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--work", type=float, default=0.01)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--faults", nargs="+", default=["stop-broker-short"])
    parser.add_argument("--short-stop", type=float, default=0.3)
    parser.add_argument("--short-gap", type=float, default=0.6)
    parser.add_argument("--poison-period", type=float, default=0.5)
    parser.add_argument("--broker-arg", action="append", default=[])
    parser.add_argument("--worker-arg", action="append", default=[])
    args = parser.parse_args()
    run_dir: Path = args.dir
    run_dir.mkdir(parents=True, exist_ok=True)
    record = run_dir / "runs.txt"
    record.write_text("")
    os.environ["RECORD_FILE"] = str(record)
    logging.basicConfig(filename=run_dir / "harness.log", level=logging.INFO)
    chaos = chaos_module()
    fleet = chaos.Fleet(run_dir, args.brokers, args.workers, args.broker_arg, args.worker_arg,
                        True)
    for slot in fleet.workers:
        slot.argv[0] = str(RECORDING_WORKER)
    rng = random.Random(args.seed)
    stop = threading.Event()
    seen = Seen(args.timeout)
    fatal: list[str] = []
    lock = threading.Lock()
    log: list[str] = []

    def note(text: str) -> None:
        with lock:
            log.append(f"{time.time():.3f} {text}")

    def signal_slot(slot: Any, signum: int) -> int | None:
        proc = slot.proc
        if proc is None or proc.poll() is not None:
            return None
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            return None
        return proc.pid

    def stopper(slots: list[Any], pause: tuple[float, float], gap: tuple[float, float],
                kill: bool = False) -> None:
        r = random.Random(rng.random())
        while not stop.wait(r.uniform(*gap)):
            slot = r.choice(slots)
            if kill:
                pid = signal_slot(slot, signal.SIGKILL)
                if pid is not None:
                    slot.killed.add(pid)
                    note(f"SIGKILL {slot.name} {pid}")
                continue
            pid = signal_slot(slot, signal.SIGSTOP)
            if pid is None:
                continue
            held = r.uniform(*pause)
            note(f"SIGSTOP {slot.name} {pid} for {held:.2f}")
            stop.wait(held)  # (the fault's own duration: this thread sleeps meanwhile)
            signal_slot(slot, signal.SIGCONT)
            note(f"SIGCONT {slot.name} {pid}")

    def poisoner() -> None:
        with MDPClient(fleet.endpoints, timeout=args.timeout) as client:
            k = 0
            while not stop.wait(args.poison_period):
                k += 1
                n = f"die-{k}"
                try:
                    client.send("echo", {"die": True, "n": n})
                    fatal.append("answered")
                except RequestError as exc:
                    fatal.append(exc.code)
                except Timeout:
                    fatal.append("timeout")

    options = {"timeout": args.timeout}
    threads = [threading.Thread(target=sync_client, args=(fleet.endpoints, f"s{k}", seen, stop,
                                                          args.work, options), daemon=True)
               for k in range(args.sync)]
    threads += [threading.Thread(target=async_client,
                                 args=(fleet.endpoints, f"a{k}", seen, stop, args.work,
                                       args.concurrency, options), daemon=True)
                for k in range(args.aio)]
    faulters = []
    for fault in args.faults:
        if fault == "stop-broker-short":
            target: Any = (stopper, (fleet.brokers, (args.short_stop, args.short_stop),
                                     (args.short_gap, args.short_gap)))
        elif fault == "stop-broker":
            target = (stopper, (fleet.brokers, (1.0, 3.0), (3.0, 6.0)))
        elif fault == "stop-worker":
            target = (stopper, (fleet.workers, (0.5, 2.0), (2.0, 5.0)))
        elif fault == "kill-worker":
            target = (stopper, (fleet.workers, (0, 0), (2.0, 5.0), True))
        elif fault == "poison":
            target = (poisoner, ())
        else:
            parser.error(f"unknown fault {fault}")
        faulters.append(threading.Thread(target=target[0], args=target[1], daemon=True))
    try:
        for slot in fleet.slots:
            fleet.start(slot)
        fleet.wait_ready(30)
        for thread in threads + faulters:
            thread.start()
        chaos.supervise_while(fleet, lambda: True, args.seconds)
        stop.set()
        chaos.supervise_while(fleet, lambda: any(t.is_alive() for t in threads + faulters),
                              args.timeout + 10)
        hung = sum(t.is_alive() for t in threads + faulters)
        for slot in fleet.brokers:
            if slot.alive:
                stat = Path(f"/proc/{slot.proc.pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                print(f"{slot.name} pid {slot.proc.pid}: {cpu:.1f} s of CPU "
                      f"(up {slot.starts} start(s))")
    finally:
        fleet.stop_all()
    (run_dir / "faults.txt").write_text("\n".join(log) + "\n")
    starts: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
    for line in record.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "S":
            starts[parts[1]].append((int(parts[2]), float(parts[3])))
    twice = {n: s for n, s in starts.items() if len(s) > 1 and not n.startswith("die-")}
    cost = collections.Counter(len(s) for n, s in starts.items() if n.startswith("die-"))
    restarts = sum(slot.starts for slot in fleet.workers) - args.workers
    print(f"clients: {sum(seen.outcomes.values())} calls {dict(seen.outcomes)}; "
          f"late {len(seen.late)}; hung threads {hung}")
    for line in seen.late[:10]:
        print("  late", line)
    print(f"ran twice or more: {len(twice)} ordinary requests")
    for n, s in sorted(twice.items(), key=lambda item: item[1][0][1])[:15]:
        print(f"  {n} ({seen.by_n.get(n)}): " + ", ".join(f"pid {pid} at {t:.3f}" for pid, t in s))
    print(f"fatal: {len(fatal)} sent {dict(collections.Counter(fatal))}; workers each cost "
          f"{dict(sorted(cost.items()))}; worker restarts {restarts}")
    print("brokers say", chaos.broker_says(run_dir))
    exits = [e for slot in fleet.slots for e in slot.exits]
    if exits:
        print("exits:", exits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
