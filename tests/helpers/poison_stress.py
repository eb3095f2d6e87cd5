"""Ordinary load beside requests that kill their worker, across several brokers: counts the
ordinary requests answered ``worker_lost`` (none should be) and the workers each fatal
request cost (two at most). Not a test (it runs for minutes); a harness for before/after
figures (docs/PROTOCOL.md, "Checked starts")::

    python tests/helpers/poison_stress.py DIR SECONDS BROKERS WORKERS PERIOD WORK

``PERIOD``: seconds between fatal requests (one at a time, from one client); ``WORK``:
seconds each ordinary request sleeps in its handler. The fleet is ``scripts/chaos``'s
(brokers and workers as processes, a dead worker started again after 0.3 s; workers are
``tests/helpers/faulty_worker.py``), its load 4 sync and 2 async clients (16 in flight
each). Logs go to DIR. The figures in PROTOCOL.md: ``DIR 60 3 3 0.35 0.01``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_chaos import chaos_module  # noqa: E402

from mdp.client import MDPClient  # noqa: E402
from mdp.errors import RequestError, Timeout, WorkerLost  # noqa: E402


def main() -> int:
    run_dir = Path(sys.argv[1])
    duration, brokers, workers = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    period, work_s = float(sys.argv[5]), float(sys.argv[6])
    run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=run_dir / "stress.log", level=logging.INFO)
    chaos = chaos_module()
    fleet = chaos.Fleet(run_dir, brokers, workers, [], [], True)
    outcomes: list[str] = []
    stop = threading.Event()

    def poisoner() -> None:
        with MDPClient(fleet.endpoints, timeout=10.0) as client:
            n = 0
            while not stop.wait(period):
                n += 1
                try:
                    client.send("echo", {"die": True, "n": n})
                    outcomes.append("answered")
                except WorkerLost:
                    outcomes.append("worker_lost")
                except (RequestError, Timeout) as exc:
                    outcomes.append(type(exc).__name__)

    try:
        for slot in fleet.slots:
            fleet.start(slot)
        fleet.wait_ready(30)
        tally = chaos.Tally(time.monotonic(), 1.5)
        load = chaos.Load(fleet.endpoints, tally, 4, 2, 16, {"timeout": 10.0}, work_s)
        load.start()
        thread = threading.Thread(target=poisoner, daemon=True)
        thread.start()
        chaos.supervise_while(fleet, lambda: True, duration)
        stop.set()
        load.stopping.set()
        chaos.supervise_while(fleet, lambda: load.running > 0 or thread.is_alive(), 20)
    finally:
        fleet.stop_all()
    restarts = sum(slot.starts for slot in fleet.workers) - workers
    print(f"ordinary: {tally.requests} requests, ok {tally.ok}, wrong {tally.wrong}, "
          f"lost {tally.lost}, errors {dict(tally.errors)}")
    print(f"fatal: {len(outcomes)} sent, {outcomes.count('worker_lost')} worker_lost; "
          f"worker restarts {restarts} (at most {2 * len(outcomes)} expected)")
    print("brokers say", chaos.broker_says(run_dir))
    return 0 if not tally.errors and restarts <= 2 * len(outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
