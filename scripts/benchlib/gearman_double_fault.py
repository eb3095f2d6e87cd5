"""The double fault of issue 18, again and again: PHP clients through a door while one broker
is killed and the other hangs.

One run: two DIPS brokers, two ecard workers and two doors (mdp-gearman, both brokers
each); four PHP clients, the slides' code with ``setTimeout(10000)``, each calling
``doNormal('ecard', serialize($data))`` ``--calls`` times at ``--rate`` calls a second,
through one door (one ``addServer`` line, as docs/GEARMAN.md advises) or, with
``--two-servers``, with the slides' two ``addServer`` lines (libgearman then sends every job
to the last one, and its bug with two servers can wedge a client: docs/GEARMAN.md).
1.5 s in, broker A is SIGKILLed; 1.5 s later broker B is SIGSTOPped and A restarted on its
address; 3 s later B is continued. Every call must come back with the card: a call that
timed out (GEARMAN_TIMEOUT after 10 s) or failed is counted and fails the run.
``scripts/gearman_double_fault`` runs it ``--runs`` times in a row; the suite runs it once
(tests/gearman/test_gearman_faults.py).
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchlib.procs import BenchError, Child, Children, wait_for
from testkit import LOOPBACK, count_workers, free_port

GEARMAN_TIMEOUT = 47  # libgearman's return code for a call past setTimeout
CALL_TIMEOUT_MS = 10_000

# The slides' client (seeds/), addresses and a loop added; one line per call:
# "i returnCode seconds firstbytes".
PHP_CLIENT = """<?php
$dips = new GearmanClient();
ADD_SERVERS
$dips->setTimeout(TIMEOUT_MS);

$data['pSN'] = "1234567890";
$data['pData'] =
"61, 61, 58, 00, 25, 08, 73, 03, 52, 53, 34, 84, 03, 81, 52, 17, 96, 30, 57, 23, 5
5, 08, 03, 84, 08, 47, 27, 02, 68, 17, 77, 68, 96, 86, 88, 21, 08, 14, 64, 39, 55,
80, 71, 00, 40, 51, 22, 89, 51, 77, 34, 59, 51, 77, 86, 86, 96, 42, 71, 11, 62, 89
, 63, 35, 07, 55, 71, 94, 03, 80, 74, 68, 93, 11, 67, 67, 44, 42, 87, 68";

$start = microtime(true);
for ($i = 0; $i < CALLS; $i++) {
    $wait = $start + $i / RATE - microtime(true);
    if ($wait > 0) usleep((int)($wait * 1e6));
    $t = microtime(true);
    $image = @$dips->doNormal('ecard', serialize($data));
    printf("%d %d %.3f %s\\n", $i, $dips->returnCode(), microtime(true) - $t,
           bin2hex(substr((string)$image, 0, 4)));
}
"""


@dataclass
class Outcome:
    calls: int = 0
    ok: int = 0
    timed_out: int = 0
    failed: int = 0
    worst_s: float = 0.0
    elapsed_s: float = 0.0

    @property
    def clean(self) -> bool:
        return self.timed_out == 0 and self.failed == 0

    def add(self, line: str) -> None:
        _, code, took, head = (line.split() + [""])[:4]
        self.calls += 1
        self.worst_s = max(self.worst_s, float(took))
        if int(code) == GEARMAN_TIMEOUT or float(took) >= CALL_TIMEOUT_MS / 1000:
            self.timed_out += 1
        elif int(code) != 0 or head != "89504e47":  # a PNG
            self.failed += 1
        else:
            self.ok += 1


class Cluster:
    """The brokers, workers and doors of one run."""

    def __init__(self, kids: Children) -> None:
        self.kids = kids
        self.endpoints = [f"tcp://{LOOPBACK}:{free_port()}" for _ in range(2)]
        self.brokers = [self._broker(endpoint) for endpoint in self.endpoints]
        for _ in range(2):
            kids.python("ecard-worker", "-m", "mdp.worker", "--service", "ecard",
                        *self._brokers_args())
        for endpoint in self.endpoints:
            wait_for(lambda e=endpoint: count_workers(e, "ecard") >= 2, 60,
                     f"workers at {endpoint}")
        self.ports = [free_port() for _ in range(2)]
        self.doors = [kids.python("door", "-m", "mdp_gearman", "--listen",
                                  f"{LOOPBACK}:{port}", *self._brokers_args())
                      for port in self.ports]
        for door in self.doors:
            wait_for(lambda d=door: "listening" in d.log_path.read_text(), 30, "a door")

    def _brokers_args(self) -> list[str]:
        return [arg for endpoint in self.endpoints for arg in ("--broker", endpoint)]

    def _broker(self, endpoint: str) -> Child:
        return self.kids.python("broker", "-m", "mdp.broker", "--bind", endpoint)

    def fault(self) -> None:
        """The sequence of issue 18, from 1.5 s after the clients' first calls."""
        time.sleep(1.5)
        self.brokers[0].kill()
        time.sleep(1.5)
        self.brokers[1].send_signal(signal.SIGSTOP)
        self.brokers[0] = self._broker(self.endpoints[0])
        time.sleep(3.0)
        self.brokers[1].send_signal(signal.SIGCONT)


def one_run(workdir: Path, calls: int, rate: float, clients: int, servers: int) -> Outcome:
    kids = Children(workdir)
    try:
        cluster = Cluster(kids)
        script = workdir / "client.php"
        lines = [f"$dips->addServer('127.0.0.1', {port});" for port in cluster.ports]
        script.write_text(PHP_CLIENT.replace("ADD_SERVERS", "\n".join(lines[-servers:]))
                          .replace("TIMEOUT_MS", str(CALL_TIMEOUT_MS))
                          .replace("CALLS", str(calls)).replace("RATE", str(rate)))
        php = [kids.spawn("php-client", ["php", str(script)]) for _ in range(clients)]
        started = time.monotonic()
        wait_for(lambda: all(p.log_path.read_text() for p in php), 30, "the clients' first calls")
        cluster.fault()
        limit_s = calls / rate + 6 * CALL_TIMEOUT_MS / 1000 + 60
        try:
            wait_for(lambda: not any(p.alive() for p in php), limit_s, "the clients to finish")
        except BenchError:  # a client whose every call times out: count what it did
            kids.kill(*php)
        outcome = Outcome(elapsed_s=time.monotonic() - started)
        for client in php:
            for line in client.log_path.read_text().splitlines():
                if line[:1].isdigit():
                    outcome.add(line)
        return outcome
    finally:
        kids.kill_all()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/gearman_double_fault", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs in a row (default: 20)")
    parser.add_argument("--calls", type=int, default=400,
                        help="doNormal calls per PHP client and run (default: 400)")
    parser.add_argument("--rate", type=float, default=40.0,
                        help="calls a second per client, so that the calls span the faults "
                        "(default: 40)")
    parser.add_argument("--clients", type=int, default=4, help="PHP clients (default: 4)")
    parser.add_argument("--two-servers", action="store_true",
                        help="the slides' two addServer lines (both doors) in each client")
    parser.add_argument("--json", type=Path, help="write the outcomes here too")
    parser.add_argument("--keep", type=Path, help="keep the runs' logs in this directory")
    args = parser.parse_args(argv)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="gearman-double-fault-") as tmp:
        base = args.keep or Path(tmp)
        for run in range(1, args.runs + 1):
            workdir = base / f"run{run:02d}"
            workdir.mkdir(parents=True, exist_ok=True)
            outcome = one_run(workdir, args.calls, args.rate, args.clients,
                              2 if args.two_servers else 1)
            outcomes.append(outcome)
            print(f"run {run:2d}: {outcome.calls} calls, {outcome.ok} cards, "
                  f"{outcome.timed_out} timed out, {outcome.failed} failed, worst "
                  f"{outcome.worst_s:.2f} s, {outcome.elapsed_s:.1f} s in all", flush=True)
    bad = [n for n, o in enumerate(outcomes, 1) if not o.clean]
    print(f"{len(outcomes)} runs: " + ("every call got its card" if not bad else
                                      f"runs with timed-out or failed calls: {bad}"))
    if args.json:
        args.json.write_text(json.dumps([o.__dict__ for o in outcomes], indent=1))
    return 1 if bad else 0
