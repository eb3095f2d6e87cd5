"""mdp-gearman beside gearmand: the same Gearman clients, the same ecard renderer.

Two uses:

* ``scripts/gearman_faults``: 4 ``gear`` clients send 2,000 PHP-serialized ecard jobs while
  one scheduler is SIGKILLed (and restarted, as supervisord would) and then the other is
  SIGSTOPped for 5 s; once through mdp-gearman -> two DIPS brokers -> ecard workers, once
  through two gearmands -> ``gear`` workers running DIPS's ecard renderer. Prints what each
  loses (failed or wrong cards).
* ``scripts/bench`` section ``gateway``: cards/s from 4 clients through each, no fault, and
  the gateway's own CPU per job.

The roles (client, gear worker) run as ``python -m benchlib.gateway_gearman ROLE ...``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib.procs import Child, Children, wait_for
from testkit import (
    LOOPBACK,
    count_workers,
    cpu_seconds,
    free_port,
    gear_call,
    gear_client,
    gear_result,
    gear_worker,
)

DIRECT = "MDPClient -> DIPS (no Gearman)"
DISTINCT = 20  # different cards per client, rendered beforehand to check every reply


# --- the two systems ------------------------------------------------------------------------


class Dips:
    """Two brokers, ecard workers on both, one mdp-gearman in front."""

    name = "mdp-gearman -> DIPS"

    def __init__(self, procs: Children, workers: int, count: int = 2) -> None:
        self.procs = procs
        self.endpoints = [f"tcp://{LOOPBACK}:{free_port()}" for _ in range(count)]
        self.brokers = [self._broker(ep) for ep in self.endpoints]
        for _ in range(workers):
            args = ["-m", "mdp.worker", "--service", "ecard", "--heartbeat-interval", "0.5"]
            for ep in self.endpoints:
                args += ["--broker", ep]
            procs.python("ecard-worker", *args)
        for ep in self.endpoints:
            wait_for(functools.partial(_workers_at_least, ep, workers), 60, f"workers at {ep}")
        argv = ["-m", "mdp_gearman", "--listen", f"{LOOPBACK}:0"]
        for ep in self.endpoints:
            argv += ["--broker", ep]
        self.gateway = procs.python("mdp-gearman", *argv)
        self.port = _listening_port(self.gateway)
        self.ports = [self.port]

    def _broker(self, endpoint: str) -> Child:
        return self.procs.python("broker", "-m", "mdp.broker", "--bind", endpoint,
                                 "--heartbeat-interval", "0.5")

    def kill_and_restart_first(self) -> None:
        self.brokers[0].kill()
        time.sleep(1.0)  # supervisord's restart delay, roughly; part of the fault
        self.brokers[0] = self._broker(self.endpoints[0])

    def stoppable(self) -> Child:
        return self.brokers[1]


def _workers_at_least(endpoint: str, count: int) -> bool:
    return count_workers(endpoint, "ecard") >= count


def _gear_workers_at_least(port: int, count: int) -> bool:
    return _gearmand_workers(port) >= count


def _listening_port(proc: Child) -> int:
    log = proc.log_path
    pattern = re.compile(r"listening on [0-9.]+:(\d+)")

    def found() -> int:
        if not proc.alive():
            raise RuntimeError(f"mdp-gearman exited: {log.read_text()[-2000:]}")
        match = pattern.search(log.read_text())
        return int(match.group(1)) if match else 0

    return int(wait_for(found, 30, "mdp-gearman to listen"))


class Gearmand:
    """``count`` gearmands, ``gear`` workers running the ecard renderer attached to all."""

    name = "gearmand -> gear worker"

    def __init__(self, procs: Children, workers: int, count: int = 2) -> None:
        self.procs = procs
        self.ports = [free_port() for _ in range(count)]
        self.servers = [self._server(port) for port in self.ports]
        argv = ["-m", "benchlib.gateway_gearman", "gear-worker"]
        for port in self.ports:
            argv += ["--port", str(port)]
        self.workers = [procs.python("gear-worker", *argv) for _ in range(workers)]
        for port in self.ports:
            wait_for(functools.partial(_gear_workers_at_least, port, workers), 60,
                     f"gear workers {port}")

    def _server(self, port: int) -> Child:
        proc = self.procs.spawn("gearmand", ["gearmand", "-L", LOOPBACK, "-p", str(port),
                                             "--log-file", "none"])
        wait_for(lambda: _gearmand_workers(port) >= 0, 30, f"gearmand on {port}")
        return proc

    def kill_and_restart_first(self) -> None:
        self.servers[0].kill()
        time.sleep(1.0)
        self.servers[0] = self._server(self.ports[0])

    def stoppable(self) -> Child:
        return self.servers[1]


def _gearmand_workers(port: int) -> int:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
            sock.sendall(b"status\n")
            text = b""
            while not text.endswith(b".\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                text += chunk
    except OSError:
        return -1
    for line in text.decode().splitlines():
        parts = line.split("\t")
        if parts[0] == "ecard" and len(parts) == 4:
            return int(parts[3])
    return 0


# --- a run ----------------------------------------------------------------------------------


def run_clients(procs: Children, ports: Sequence[int], clients: int, jobs: int, rate: float,
                timeout_s: float, direct: Sequence[str] = ()) -> list[Child]:
    argv = ["-m", "benchlib.gateway_gearman", "client", "--jobs", str(jobs),
            "--rate", str(rate), "--timeout", str(timeout_s)]
    for port in ports:
        argv += ["--port", str(port)]
    for endpoint in direct:
        argv += ["--direct", endpoint]
    return [procs.python("client", *argv, "--seed", str(k)) for k in range(clients)]


def collect(clients: list[Child], limit_s: float) -> dict[str, float]:
    total = {"ok": 0.0, "failed": 0.0, "wrong": 0.0, "over_1s": 0.0, "elapsed_s": 0.0,
             "worst_s": 0.0}
    for proc in clients:
        proc.popen.wait(limit_s)
        log = proc.log_path
        lines = [ln for ln in log.read_text().splitlines() if ln.startswith("{")]
        if not lines:
            raise RuntimeError(f"a client printed no result: {log.read_text()[-1500:]}")
        result = json.loads(lines[-1])
        for key in ("ok", "failed", "wrong", "over_1s"):
            total[key] += result[key]
        for key in ("elapsed_s", "worst_s"):
            total[key] = max(total[key], result[key])
    return total


def faults_run(system: Dips | Gearmand, procs: Children, jobs: int, clients: int,
               rate: float) -> dict[str, float]:
    started = run_clients(procs, system.ports, clients, jobs // clients, rate, 10.0)
    time.sleep(2.0)  # the clients are sending at their pace; now the faults
    system.kill_and_restart_first()
    time.sleep(2.0)
    stopped = system.stoppable()
    stopped.send_signal(signal.SIGSTOP)
    time.sleep(5.0)
    stopped.send_signal(signal.SIGCONT)
    return collect(started, 300)


def speed_run(system: Dips | Gearmand, procs: Children, jobs: int, clients: int,
              direct: bool = False) -> dict[str, float]:
    gateway = system.gateway if isinstance(system, Dips) and not direct else None
    before = cpu_seconds(gateway.pid) if gateway else 0.0
    endpoints = system.endpoints if isinstance(system, Dips) and direct else ()
    started = run_clients(procs, [] if direct else system.ports[:1], clients, jobs // clients,
                          0, 10.0, endpoints)
    result = collect(started, 300)
    if gateway is not None:
        result["gateway_cpu_us_per_job"] = (cpu_seconds(gateway.pid) - before) / max(
            1, result["ok"]) * 1e6
    result["cards_per_s"] = result["ok"] / max(result["elapsed_s"], 1e-9)
    return result


# --- roles ----------------------------------------------------------------------------------


def _requests(seed: int) -> list[dict[str, Any]]:
    from renderers.samples import SEED_DATA

    return [{"pSN": str(1_000_000_000 + seed * 1000 + i), "pData": SEED_DATA}
            for i in range(DISTINCT)]


def direct_role(args: argparse.Namespace) -> int:
    """The same cards straight from DIPS with MDPClient: what the gateway adds."""
    import renderers
    from mdp.client import MDPClient

    renderer = renderers.get("ecard")
    requests = _requests(args.seed)
    expected = [renderer.render(r) for r in requests]
    counts = {"ok": 0, "failed": 0, "wrong": 0, "over_1s": 0}
    start = time.monotonic()
    with MDPClient(args.direct, timeout=args.timeout) as client:
        for i in range(args.jobs):
            try:
                card = client.send("ecard", requests[i % DISTINCT])
            except Exception:  # counted as failed
                counts["failed"] += 1
                continue
            counts["ok" if card == expected[i % DISTINCT] else "wrong"] += 1
    elapsed = time.monotonic() - start
    print(json.dumps({**counts, "elapsed_s": elapsed, "worst_s": 0.0}), flush=True)
    return 0


def client_role(args: argparse.Namespace) -> int:
    if args.direct:
        return direct_role(args)
    import renderers
    from mdp_gearman import phpser

    renderer = renderers.get("ecard")
    requests = _requests(args.seed)
    expected = [renderer.render(r) for r in requests]
    workloads = [phpser.dumps(r) for r in requests]
    client = gear_client(args.port, f"cards-{os.getpid()}", wait_s=20)
    counts = {"ok": 0, "failed": 0, "wrong": 0, "over_1s": 0}
    worst = 0.0
    start = time.monotonic()
    for i in range(args.jobs):
        if args.rate:
            delay = start + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        k = i % DISTINCT
        sent = time.monotonic()
        try:  # a job lost with its server counts as failed, not as an empty (wrong) card
            card = gear_result(gear_call(client, "ecard", workloads[k], args.timeout))
        except Exception:  # gear raises when no server takes the job; or no answer in time
            card = None
        took = time.monotonic() - sent
        worst = max(worst, took)
        counts["over_1s"] += took > 1.0
        if card is None:
            counts["failed"] += 1
        elif card != expected[k]:
            counts["wrong"] += 1
        else:
            counts["ok"] += 1
    elapsed = time.monotonic() - start
    print(json.dumps({**counts, "elapsed_s": elapsed, "worst_s": worst}), flush=True)
    client.shutdown()
    return 0


def gear_worker_role(args: argparse.Namespace) -> int:
    import renderers
    from mdp_gearman.mapping import decode_workload

    renderer = renderers.get("ecard")
    renderers.warm_up()
    worker = gear_worker(args.port, ["ecard"], f"ecard-{os.getpid()}")
    while True:
        job = worker.getJob()
        try:
            request, _ = decode_workload(job.arguments)
            job.sendWorkComplete(renderer.render(request))
        except Exception as exc:  # the renderer's errors go back to the caller
            job.sendWorkException(str(exc).encode())


# --- entry points ---------------------------------------------------------------------------


def _gearmand_missing() -> str | None:
    from shutil import which

    try:
        import gear  # noqa: F401
    except ImportError:
        return "the Python package 'gear' is missing (pip install gear)"
    return None if which("gearmand") else "gearmand is missing (apt-get install gearman-job-server)"


def faults_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gearman_faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0, metavar="JOBS_PER_S",
                        help="per client; default: spread the jobs over ~14 s")
    parser.add_argument("--dips-only", action="store_true", help="leave gearmand out")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    rate = args.rate or max(1.0, args.jobs / args.clients / 14.0)
    missing = None if args.dips_only else _gearmand_missing()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="gearman-faults-") as tmp:
        makers: list[Any] = [Dips] + ([] if args.dips_only or missing else [Gearmand])
        for make in makers:
            procs = Children(Path(tmp))
            try:
                system = make(procs, args.workers)
                results[make.name] = faults_run(system, procs, args.jobs, args.clients, rate)
            finally:
                procs.kill_all()
    print(f"{args.jobs} ecard jobs from {args.clients} gear clients; first scheduler "
          "SIGKILLed and restarted, then the other SIGSTOPped for 5 s:")
    for name, r in results.items():
        print(f"  {name:26} ok {r['ok']:5.0f}  failed {r['failed']:4.0f}  wrong "
              f"{r['wrong']:3.0f}  slower than 1 s {r['over_1s']:4.0f}  worst "
              f"{r['worst_s']:.2f} s  ({r['elapsed_s']:.1f} s in all)")
    if missing:
        print(f"  gearmand not run: {missing}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    dips = results[Dips.name]
    return 0 if dips["failed"] == 0 and dips["wrong"] == 0 else 1


def bench(jobs: int = 2000, clients: int = 4, workers: int = 2,
          with_gearmand: bool = True) -> list[str]:
    """The ``gateway`` section of scripts/bench: Markdown lines."""
    lines = ["## Gearman front door (mdp-gearman)", ""]
    missing = _gearmand_missing() if with_gearmand else "left out (--no-gearman)"
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        makers: list[Any] = [Dips] + ([] if missing else [Gearmand])
        for make in makers:
            procs = Children(Path(tmp))
            try:
                system = make(procs, workers, 1)  # one scheduler each
                speed_run(system, procs, max(clients * 20, jobs // 10), clients)  # warm up
                figures[make.name] = speed_run(system, procs, jobs, clients)
                if isinstance(system, Dips):
                    figures[DIRECT] = speed_run(system, procs, jobs, clients, direct=True)
            finally:
                procs.kill_all()
    lines += [f"{clients} clients (`gear`; `MDPClient` for the DIPS-only row), sync ecard "
              f"jobs (PHP serialize() workloads), {workers} workers with DIPS's renderer on "
              "each side; one scheduler each (one DIPS broker, one gearmand).",
              "", "| path | cards/s | failed | gateway CPU per job |", "|---|---|---|---|"]
    for name, r in figures.items():
        cpu = r.get("gateway_cpu_us_per_job")
        lines.append(f"| {name} | {r['cards_per_s']:,.0f} | {r['failed']:.0f} | "
                     f"{f'{cpu:,.0f} µs' if cpu is not None else '-'} |")
    if Gearmand.name in figures:
        ratio = figures[Dips.name]["cards_per_s"] / max(figures[Gearmand.name]["cards_per_s"], 1)
        direct = figures[DIRECT]["cards_per_s"] / max(figures[Gearmand.name]["cards_per_s"], 1)
        lines += ["", f"mdp-gearman -> DIPS: **{ratio:.2f}×** gearmand (target ≥ 1.0×); "
                  f"DIPS's own client on the same cluster: {direct:.2f}× gearmand."]
    else:
        lines += ["", f"gearmand not measured: {missing}"]
    return lines + [""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchlib.gateway_gearman")
    roles = parser.add_subparsers(dest="role", required=True)
    c = roles.add_parser("client")
    c.add_argument("--port", type=int, action="append", default=[])
    c.add_argument("--direct", action="append", metavar="ENDPOINT",
                   help="skip Gearman: MDPClient straight to these brokers")
    c.add_argument("--jobs", type=int, default=500)
    c.add_argument("--rate", type=float, default=0)
    c.add_argument("--timeout", type=float, default=10.0)
    c.add_argument("--seed", type=int, default=0)
    w = roles.add_parser("gear-worker")
    w.add_argument("--port", type=int, action="append", required=True)
    roles.add_parser("bench")
    args = parser.parse_args(argv)
    if args.role == "client":
        return client_role(args)
    if args.role == "gear-worker":
        return gear_worker_role(args)
    print("\n".join(bench()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
