"""Helpers for the operations tests: mdpctl runs, code trees, load and a serving monitor.

Waiting, ports, broker status, the load generator and the processes under a directory are
the shared ``testkit``'s."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.options import ServerOptions

from testkit import BrokerLoad, serving_workers

REPO = Path(__file__).resolve().parents[2]
CODE_PACKAGES = ("mdp", "mdp_http", "mdp_gearman", "renderers", "mdpctl")
FAST = ["--heartbeat-interval", "0.2", "--time-limit", "5"]


def copy_code(dest: Path) -> Path:
    """A private copy of the code tree, so that a test can change the workers' code.

    The compiled modules come along (copied with their sources' times, so Python still
    checks each against its source): the cluster's processes need not compile it all again.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for package in CODE_PACKAGES:
        source = REPO / package
        if source.is_dir():
            shutil.copytree(source, dest / package)  # with its compiled modules, if any
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


def supervisord_reads(text: str, where: Path) -> ServerOptions:
    """Let supervisord itself read a configuration, as `supervisord -c` would (``%(here)s``
    is ``where``; ``%(ENV_...)s`` comes from this process's environment)."""
    path = where / "supervisord.conf"
    path.write_text(text)
    options = ServerOptions()
    options.configfile = str(path)
    options.process_config(do_usage=False)
    return options


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



ECARD_REQUEST = {"pSN": "0123456789", "pData": ",".join(f"{i % 100:02d}" for i in range(80))}


def ecard_request(thread: int, i: int) -> dict[str, Any]:
    return dict(ECARD_REQUEST, pSN=f"{thread:02d}{i:08d}")


def is_png(request: Any, reply: Any) -> str | None:
    ok = isinstance(reply, bytes) and reply.startswith(b"\x89PNG")
    return None if ok else f"not a PNG: {reply!r:.60}"


def service_load(brokers: list[str], service: str, in_flight: int = 8) -> BrokerLoad:
    """``in_flight`` threads sending to ``service`` (echo, or ecard checked to be PNGs)."""
    client = {"timeout": 10.0, "retries": 3}
    if service == "ecard":
        return BrokerLoad(brokers, service, threads=in_flight, request=ecard_request,
                          check=is_png, client=client)
    return BrokerLoad(brokers, service, threads=in_flight, client=client)


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
                count = serving_workers(endpoint, self.service)
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
    loads: list[BrokerLoad] = field(default_factory=list)
    monitors: list[ServingMonitor] = field(default_factory=list)

    def ctl(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return mdpctl("--run-dir", str(self.run_dir), *args, code=self.code, timeout=timeout)

    def up(self, *extra: str) -> subprocess.CompletedProcess[str]:
        brokers = [arg for b in self.brokers for arg in ("--broker", b)]
        return self.ctl("up", *brokers, *FAST, *self.up_args, *extra)

    def load(self, service: str, in_flight: int = 8) -> BrokerLoad:
        """Start a load that the fixture stops in the end, whatever happens."""
        load = service_load(self.brokers, service, in_flight).start()
        self.loads.append(load)
        return load

    def monitor(self, service: str) -> ServingMonitor:
        monitor = ServingMonitor(self.brokers, service).start()
        self.monitors.append(monitor)
        return monitor

    def status(self) -> dict[str, Any]:
        # a broker busy under the machine's load may take more than status's default 2 s
        result = self.ctl("status", "--json", "--timeout", "10")
        assert result.returncode == 0, (result.returncode, result.stderr, result.stdout[-2000:])
        data: dict[str, Any] = json.loads(result.stdout)
        return data
