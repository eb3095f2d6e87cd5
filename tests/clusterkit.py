"""Test kit: real broker and worker processes on loopback ports, and waiting helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from mdp.client import MDPClient
from mdp.keys import CurveConfig
from mdp.status import BrokerStatus, fetch, try_fetch

HERE = Path(__file__).resolve().parent
TEST_WORKER = HERE / "helpers" / "test_worker.py"
FAST_HEARTBEAT = ["--heartbeat-interval", "0.2"]


UNDER_CI = os.environ.get("CI") == "true"


def needs(available: bool, what: str) -> pytest.MarkDecorator:
    """Mark a test that needs a real peer (``what``: its Debian package or tool).

    On a developer's machine a missing peer skips the test. Under CI (``CI=true``) it fails
    it: a missing peer there is an install step missing from ``.ci/run``, not a reason to
    stop checking what the test checks.
    """
    if available or not UNDER_CI:
        return pytest.mark.skipif(not available, reason=f"needs {what} (.ci/run installs it)")
    return pytest.mark.missing_peer(what)


def skip_or_fail(why: str) -> None:
    """A skip found at run time (no network namespace, say): a failure under CI."""
    if UNDER_CI:
        pytest.fail(f"{why} (under CI every real peer must be there)")
    pytest.skip(why)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)  # polling interval, not synchronisation: the predicate decides
        delay = min(delay * 2, 0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_status(endpoint: str, timeout: float = 1.0,
                  curve: CurveConfig | None = None) -> BrokerStatus | None:
    """The broker's mmi.status, or None when it does not answer in ``timeout``."""
    return try_fetch(endpoint, timeout_s=timeout, curve=curve)


def status_of(endpoint: str, timeout: float = 2.0) -> BrokerStatus:
    """The broker's mmi.status; raises (failing the test) when it does not answer."""
    return fetch(endpoint, timeout_s=timeout)


def broker_counter(endpoint: str, name: str) -> int:
    """One of the broker's totals (``Counters`` field ``name``); 0 when it does not answer."""
    status = broker_status(endpoint)
    return int(getattr(status.counters, name)) if status is not None else 0


def worker_pids(endpoint: str, service: str | None = None,
                curve: CurveConfig | None = None) -> list[int]:
    """Pids of the workers the broker lists (of ``service``, or all); [] when it is down."""
    status = broker_status(endpoint, curve=curve)
    if status is None:
        return []
    workers = status.all_workers() if service is None else status.workers(service)
    return [w.pid for w in workers]


def count_workers(endpoint: str, service: str, state: str | None = None) -> int:
    status = broker_status(endpoint)
    if status is None:
        return -1
    return sum(1 for w in status.workers(service) if state is None or w.state == state)


class Proc:
    def __init__(self, popen: subprocess.Popen[bytes], log: Path, endpoint: str = "") -> None:
        self.popen = popen
        self.log = log
        self.endpoint = endpoint

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = 10.0) -> int:
        return self.popen.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Cluster:
    """Starts brokers and workers as real processes and cleans them all up."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[Proc] = []
        self._n = 0

    def _spawn(self, args: list[str], name: str, endpoint: str = "") -> Proc:
        self._n += 1
        log = self.tmp_path / f"{self._n:02d}-{name}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with log.open("wb") as out:
            popen = subprocess.Popen([sys.executable, *args], stdout=out, stderr=out, env=env)
        proc = Proc(popen, log, endpoint)
        self.procs.append(proc)
        return proc

    def broker(self, port: int | None = None, *extra: str, wait: bool = True,
               fast: bool = True) -> Proc:
        """A broker on ``port`` (a free one by default); ``fast`` shortens heartbeats.

        A free port can be taken by another process before the broker binds it; then the
        broker exits at once and another port is tried.
        """
        heartbeat = FAST_HEARTBEAT if fast else []
        for _ in range(3):
            endpoint = f"tcp://127.0.0.1:{port or free_port()}"
            proc = self._spawn(["-m", "mdp.broker", "--bind", endpoint, *heartbeat, *extra],
                               "broker", endpoint)
            if not wait:
                return proc
            wait_for(lambda p=proc: p.popen.poll() is not None
                     or broker_status(p.endpoint) is not None, 10, f"broker {endpoint}")
            if proc.popen.poll() is None:
                return proc
            if port is not None or "cannot bind" not in proc.output():
                break
        raise AssertionError(f"broker did not start:\n{proc.output()}")

    def worker(self, brokers: Sequence[Proc | str], service: str = "echo", *extra: str,
               test_worker: bool = False, wait: bool = True, fast: bool = True) -> Proc:
        """A worker attached to every broker; waits until each broker lists it."""
        endpoints = [b if isinstance(b, str) else b.endpoint for b in brokers]
        args = ["-m", "mdp.worker"] if not test_worker else [str(TEST_WORKER)]
        for endpoint in endpoints:
            args += ["--broker", endpoint]
        heartbeat = FAST_HEARTBEAT if fast else []
        proc = self._spawn([*args, "--service", service, *heartbeat, *extra], "worker")
        if wait:
            for endpoint in endpoints:
                wait_for(lambda e=endpoint: _has_worker(e, proc.pid), 10,
                         f"worker {proc.pid} on {endpoint}")
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                try:
                    proc.popen.send_signal(signal.SIGCONT)
                    proc.popen.kill()
                except ProcessLookupError:
                    pass
        for proc in self.procs:
            try:
                proc.popen.wait(10)
            except subprocess.TimeoutExpired:
                pass


def _has_worker(endpoint: str, pid: int) -> bool:
    status = broker_status(endpoint)
    if status is None:
        return False
    return any(w.pid == pid for w in status.all_workers())


class GoodClient(threading.Thread):
    """A well-behaved client that keeps sending echo requests and checks every reply."""

    def __init__(self, endpoint: str, timeout: float = 15.0) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.timeout = timeout
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[object] = []

    def run(self) -> None:
        with MDPClient([self.endpoint], timeout=self.timeout) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                try:
                    reply = client.send("echo", {"i": i})
                except Exception as exc:  # recorded; the test fails on it
                    self.failures.append(exc)
                    continue
                if reply == {"i": i}:
                    self.ok += 1
                else:
                    self.failures.append(reply)
