"""DIPS brokers and workers as real processes, and the broker's ``mmi.status``."""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys

from benchlib.procs import REPO_ROOT, Child, Children, child_env, wait_for
from testkit import broker_status, count_workers, free_port, tcp_endpoint

THREADS_PER_PROCESS = 250  # workers hosted per thread-workers process (one zmq context)
# (an experiment's override: fewer threads per host process, more processes, less of the
# GIL contention that keeps a 250-thread host from keeping the broker busy)
THREADS_ENV = "DIPS_BENCH_THREADS_PER_HOST"


@functools.cache
def broker_options() -> str:
    """The broker's ``--help`` text, to pass options only to brokers that have them."""
    done = subprocess.run([sys.executable, "-m", "mdp.broker", "--help"], capture_output=True,
                          text=True, timeout=60, cwd=REPO_ROOT, env=child_env())
    return done.stdout


def queue_limits(total: int) -> list[str]:
    """Broker options that let ``total`` requests queue in one service."""
    args = ["--max-queue", str(total)]
    if "--max-total-queue" in broker_options():
        args += ["--max-total-queue", str(total)]
    return args


def start_broker(kids: Children, *extra: str, port: int | None = None) -> tuple[Child, str]:
    """A broker on loopback, once it answers mmi.status."""
    address = tcp_endpoint(port or free_port())
    broker = kids.python("broker", "-m", "mdp.broker", "--bind", address,
                         "--log-level", "WARNING", *extra)
    wait_for(lambda: broker_status(address, 0.5) is not None, 20, f"broker {address}")
    return broker, address


def wait_workers(address: str, service: str, count: int, timeout_s: float,
                 state: str | None = "idle") -> None:
    wait_for(lambda: count_workers(address, service, state, 5.0) == count, timeout_s,
             f"{count} {state or ''} {service} workers on {address}")


def start_workers(kids: Children, brokers: list[str], count: int,
                  service: str = "echo") -> list[Child]:
    """``count`` worker processes (``python -m mdp.worker``) attached to every broker."""
    args: list[str] = []
    for address in brokers:
        args += ["--broker", address]
    workers = [kids.python("worker", "-m", "mdp.worker", *args, "--service", service,
                           "--log-level", "WARNING") for _ in range(count)]
    for address in brokers:
        wait_workers(address, service, count, 30)
    return workers


def start_thread_workers(kids: Children, brokers: list[str], count: int, service: str,
                         *extra: str) -> list[Child]:
    """``count`` real workers hosted as threads, at most 250 per process (or
    ``$DIPS_BENCH_THREADS_PER_HOST``)."""
    args: list[str] = []
    for address in brokers:
        args += ["--broker", address]
    hosts = []
    most = int(os.environ.get(THREADS_ENV, "0") or 0) or THREADS_PER_PROCESS
    per_host = math.ceil(count / max(1, math.ceil(count / most)))
    left = count
    while left > 0:
        n = min(per_host, left)
        hosts.append(kids.role("thread-workers", "thread-workers", *args, "--service", service,
                               "--count", str(n), *extra))
        left -= n
    for host in hosts:
        host.expect("READY", 60)
    return hosts
