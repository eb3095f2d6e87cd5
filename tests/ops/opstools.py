"""Helpers for the operations tests: mdpctl runs, code trees, load and a serving monitor."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdp.client import MDPClient
from mdp.status import BrokerStatus, try_fetch

REPO = Path(__file__).resolve().parents[2]
CODE_PACKAGES = ("mdp", "renderers", "mdpctl")
FAST = ["--heartbeat-interval", "0.2", "--time-limit", "5"]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)  # poll interval; the predicate decides


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so that they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def copy_code(dest: Path) -> Path:
    """A private copy of the code tree, so that a test can change the workers' code."""
    dest.mkdir(parents=True, exist_ok=True)
    for package in CODE_PACKAGES:
        source = REPO / package
        if source.is_dir():
            shutil.copytree(source, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def change_code(code: Path, marker: str) -> None:
    """Change the workers' code (and so its version) without changing what it does."""
    with open(code / "mdp" / "worker.py", "a", encoding="utf-8") as f:
        f.write(f"\n# {marker}\n")


def break_code(code: Path) -> None:
    """A new version whose worker exits at start (status 3)."""
    path = code / "mdp" / "worker.py"
    text = path.read_text(encoding="utf-8")
    assert "\ndef main(" in text
    path.write_text(text.replace("\ndef main(", "\nraise SystemExit(3)\n\n\ndef main(", 1))


def code_version(code: Path) -> str:
    """What code_version() computes for a tree, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", "from mdp.version import code_version; print(code_version())"],
        env={**os.environ, "PYTHONPATH": str(code)},
        cwd=code,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip()


def mdpctl(
    *args: str,
    code: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run the mdpctl command line as a separate process with the given code tree."""
    full_env = {**os.environ, "PYTHONPATH": str(code), **(env or {})}
    full_env.pop("DIPS_CLUSTER", None)
    return subprocess.run(
        [sys.executable, "-m", "mdpctl", *args],
        env=full_env,
        cwd=code,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def processes_under(path: Path) -> list[int]:
    """Pids of live processes whose working directory is inside ``path``."""
    root = str(path.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and (cwd == root or cwd.startswith(root + "/")):
            found.append(int(entry.name))
    return found


def kill_all_under(path: Path) -> list[int]:
    """SIGKILL whatever still runs inside ``path`` (test clean-up); return the pids."""
    pids = processes_under(path)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def broker_status(endpoint: str, timeout: float = 1.0) -> BrokerStatus | None:
    return try_fetch(endpoint, timeout_s=timeout)


def serving(endpoint: str, service: str) -> int:
    """Workers of ``service`` that ``endpoint`` can hand requests to (-1: no answer)."""
    status = broker_status(endpoint)
    if status is None:
        return -1
    return sum(1 for w in status.workers(service) if w.serving)


ECARD_REQUEST = {"pSN": "0123456789", "pData": ",".join(f"{i % 100:02d}" for i in range(80))}


@dataclass
class Load:
    """Threads that keep ``in_flight`` requests in flight against one service."""

    brokers: list[str]
    service: str
    in_flight: int = 8
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for n in range(self.in_flight):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _request(self, thread: int, i: int) -> dict[str, Any]:
        if self.service == "ecard":
            return dict(ECARD_REQUEST, pSN=f"{thread:02d}{i:08d}")
        return {"thread": thread, "i": i, "pad": "x" * 64}

    def _check(self, request: dict[str, Any], reply: Any) -> str | None:
        if self.service == "ecard":
            ok = isinstance(reply, bytes) and reply.startswith(b"\x89PNG")
            return None if ok else f"not a PNG: {reply!r:.60}"
        return None if reply == request else f"wrong reply {reply!r:.80} for {request!r:.80}"

    def _run(self, thread: int) -> None:
        with MDPClient(self.brokers, timeout=10.0, retries=3) as client:
            i = 0
            while not self._stop.is_set():
                request = self._request(thread, i)
                try:
                    problem = self._check(request, client.send(self.service, request))
                except Exception as exc:  # every failure is recorded, none is fatal
                    problem = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    if problem:
                        self.failures.append(problem)
                    else:
                        self.ok += 1
                i += 1

    def wait_ok(self, count: int, timeout: float = 30.0) -> None:
        start = self.ok
        wait_for(lambda: self.ok >= start + count, timeout, f"{count} {self.service} replies")

    def stop(self) -> None:
        """Stop sending; idempotent."""
        self._stop.set()
        for thread in self._threads:
            thread.join(30.0)
        assert not any(t.is_alive() for t in self._threads), "a load thread did not stop"


class ServingMonitor:
    """Samples how many workers of a service each broker can serve with, until stopped."""

    def __init__(self, brokers: list[str], service: str) -> None:
        self.brokers = brokers
        self.service = service
        self.minimum: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ServingMonitor:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for endpoint in self.brokers:
                count = serving(endpoint, self.service)
                if count >= 0:
                    self.minimum[endpoint] = min(self.minimum.get(endpoint, count), count)
            self.samples += 1
            self._stop.wait(0.05)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(10.0)
        return self.minimum


@dataclass
class LocalCluster:
    """A cluster started with `mdpctl up` in its own run directory and code tree."""

    root: Path
    code: Path
    run_dir: Path
    brokers: list[str]
    up_args: list[str] = field(default_factory=list)
    loads: list[Load] = field(default_factory=list)
    monitors: list[ServingMonitor] = field(default_factory=list)

    def ctl(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return mdpctl("--run-dir", str(self.run_dir), *args, code=self.code, timeout=timeout)

    def up(self, *extra: str) -> subprocess.CompletedProcess[str]:
        brokers = [arg for b in self.brokers for arg in ("--broker", b)]
        return self.ctl("up", *brokers, *FAST, *self.up_args, *extra)

    def load(self, service: str, in_flight: int = 8) -> Load:
        """Start a load that the fixture stops in the end, whatever happens."""
        load = Load(self.brokers, service, in_flight=in_flight).start()
        self.loads.append(load)
        return load

    def monitor(self, service: str) -> ServingMonitor:
        monitor = ServingMonitor(self.brokers, service).start()
        self.monitors.append(monitor)
        return monitor

    def status(self) -> dict[str, Any]:
        result = self.ctl("status", "--json")
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data
