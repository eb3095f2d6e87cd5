"""The tests' harness: real broker and worker processes on loopback ports, and real peers.

What the benchmarks share with the tests (waiting, ports, broker status, load, the gear
client) is in the ``testkit`` package.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from testkit import broker_status, free_port, has_worker, tcp_endpoint, wait_for

HERE = Path(__file__).resolve().parent
FAULTY_WORKER = HERE / "helpers" / "faulty_worker.py"  # a worker with deliberate faults
RECORDER = HERE / "helpers" / "recording_worker.py"  # writes down each run's start, end
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

    def _spawn(self, args: list[str], name: str, endpoint: str = "",
               env_extra: dict[str, str] | None = None) -> Proc:
        self._n += 1
        log = self.tmp_path / f"{self._n:02d}-{name}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
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
            endpoint = tcp_endpoint(port or free_port())
            proc = self._spawn(["-m", "mdp.broker", "--bind", endpoint, *heartbeat, *extra],
                               "broker", endpoint)
            if not wait:
                return proc
            with _quiet_probe():
                wait_for(lambda p=proc: p.popen.poll() is not None
                         or broker_status(p.endpoint) is not None, 10, f"broker {endpoint}")
            if proc.popen.poll() is None:
                return proc
            if port is not None or "cannot bind" not in proc.output():
                break
        raise AssertionError(f"broker did not start:\n{proc.output()}")

    def worker(self, brokers: Sequence[Proc | str], service: str = "echo", *extra: str,
               faulty: bool = False, wait: bool = True, fast: bool = True) -> Proc:
        """A worker attached to every broker (``faulty``: helpers/faulty_worker.py, whose
        requests can ask it to sleep, fail or allocate); waits until each broker lists it."""
        endpoints = [b if isinstance(b, str) else b.endpoint for b in brokers]
        args = ["-m", "mdp.worker"] if not faulty else [str(FAULTY_WORKER)]
        for endpoint in endpoints:
            args += ["--broker", endpoint]
        heartbeat = FAST_HEARTBEAT if fast else []
        proc = self._spawn([*args, "--service", service, *heartbeat, *extra], "worker")
        if wait:
            for endpoint in endpoints:
                wait_for(lambda e=endpoint: has_worker(e, proc.pid), 10,
                         f"worker {proc.pid} on {endpoint}")
        return proc

    def recorder(self, brokers: Sequence[Proc], record_file: Path, *extra: str) -> Proc:
        """A worker of service ``record`` (helpers/recording_worker.py) on every broker, which
        writes down each request it runs in ``record_file`` (read it with
        :func:`recorded`); waits until each broker lists it."""
        args = [str(RECORDER)]
        for broker in brokers:
            args += ["--broker", broker.endpoint]
        proc = self._spawn([*args, "--service", "record", *FAST_HEARTBEAT, *extra],
                           "recorder", env_extra={"RECORD_FILE": str(record_file)})
        for broker in brokers:
            wait_for(lambda e=broker.endpoint: has_worker(e, proc.pid), 15,
                     f"recorder {proc.pid} on {broker.endpoint}")
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


def recorded(record_file: Path) -> list[int]:
    """The ``n`` of each run a :meth:`Cluster.recorder` finished, in the order they ended
    (its ``E`` lines; ``S`` lines are its starts)."""
    if not record_file.exists():
        return []
    return [int(fields[1]) for fields in map(str.split, record_file.read_text().splitlines())
            if fields and fields[0] == "E"]


class _ProbeThread(logging.Filter):
    """Drops the records of one thread (a readiness probe's client)."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread


@contextlib.contextmanager
def _quiet_probe() -> Iterator[None]:
    """While this thread asks a starting broker for its status, its client's "cannot
    connect" (a loaded machine started the broker later than the probe's connect timeout)
    stays out of the test's log, where tests assert that no WARNING came; other threads'
    records, the test's own clients among them, are kept."""
    quiet = _ProbeThread()
    logger = logging.getLogger("mdp.clientcore")
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


class Respawner(threading.Thread):
    """Keeps ``count`` faulty-worker processes (``FAULTY_WORKER``, service ``echo``, attached
    to every broker of ``brokers``) running, the way supervisord does: one that dies is
    started again after ``respawn_s``, and counted (``deaths``). Start it; set ``stop``."""

    def __init__(self, cluster: Cluster, brokers: list[str], tmp_path: Path, count: int,
                 respawn_s: float) -> None:
        super().__init__(daemon=True)
        self.cluster, self.brokers, self.tmp_path = cluster, brokers, tmp_path
        self.respawn_s = respawn_s
        self.stop = threading.Event()
        self.deaths = 0
        self.spawned = 0
        self.lock = threading.Lock()
        self.dead_at: dict[int, float] = {}  # (dead, not yet started again)
        self.procs = [self._start() for _ in range(count)]

    def _start(self) -> Proc:
        self.spawned += 1
        log = self.tmp_path / f"worker-{self.spawned:02d}.log"
        args = [sys.executable, str(FAULTY_WORKER), "--service", "echo"]
        for endpoint in self.brokers:
            args += ["--broker", endpoint]
        with log.open("wb") as out:
            popen = subprocess.Popen(args, stdout=out, stderr=out,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        proc = Proc(popen, log)
        self.cluster.procs.append(proc)  # the cluster fixture kills it in the end
        return proc

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                now = time.monotonic()
                for i, proc in enumerate(self.procs):
                    if i in self.dead_at:
                        if now - self.dead_at[i] >= self.respawn_s:
                            self.procs[i] = self._start()
                            del self.dead_at[i]
                    elif proc.popen.poll() is not None:
                        self.deaths += 1
                        self.dead_at[i] = now
            self.stop.wait(0.01)

    def counted(self) -> int | None:
        """The deaths, once every worker that has died is counted (None until then)."""
        with self.lock:
            if any(proc.popen.poll() is not None and i not in self.dead_at
                   for i, proc in enumerate(self.procs)):
                return None
            return self.deaths
