"""gearmand, the system DIPS replaces, driven the same way: sync foreground echo jobs.

gearmand comes from Debian's ``gearman-job-server`` (installed with apt-get when missing and
the suite runs as root), the Python client and worker from the ``gear`` package (pip-installed
when missing; the worker sets TCP_NODELAY, without which every job waits for a delayed ACK),
and where ``libgearman-dev`` is there a C client and worker built with gcc.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchlib import gearman_c
from benchlib.plan import Plan
from benchlib.procs import BenchError, Child, Children, wait_for
from benchlib.roundtrip import note, start_clients
from benchlib.stats import SYNC, Shape
from testkit import LOOPBACK, free_port

GEAR_PY = "gearmand (gear)"
GEAR_C = "gearmand (C)"


@dataclass
class Setup:
    """What this machine offers for the gearmand comparison, and what the suite did."""

    gearmand: str | None = None
    version: str = ""
    gear_version: str = ""
    c_binary: Path | None = None
    notes: list[str] = field(default_factory=list)


def _say(setup: Setup, message: str) -> None:
    setup.notes.append(message)
    note(f"gearman: {message}")


def _apt_install(package: str, log: Path) -> bool:
    """``apt-get install -y PACKAGE`` (after ``apt-get update`` if the first try fails)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with log.open("ab") as out:
        for attempt in (["install", "-y", package], ["update"], ["install", "-y", package]):
            try:
                done = subprocess.run(["apt-get", *attempt], stdout=out, stderr=out, env=env,
                                      timeout=600)
            except (subprocess.TimeoutExpired, OSError):
                return False
            if attempt[0] == "install" and done.returncode == 0:
                return True
    return False


def _find_gearmand() -> str | None:
    found = shutil.which("gearmand")
    if found is None and os.access("/usr/sbin/gearmand", os.X_OK):
        found = "/usr/sbin/gearmand"
    return found


def _gearmand_version(gearmand: str) -> str:
    try:
        done = subprocess.run([gearmand, "--version"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "?"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].split(" - ")[0].strip() if lines else "?"  # drop the bug-report URL


def _gear_version() -> str:
    try:
        from importlib.metadata import version

        import gear  # noqa: F401
        return version("gear")
    except ImportError:
        return ""


def prepare(tmp: Path, want_c: bool) -> Setup:
    """Find or install gearmand, gear and (for ``want_c``) libgearman-dev + the C program."""
    setup = Setup(gearmand=_find_gearmand())
    apt_log = tmp / "apt-get.log"
    if setup.gearmand is None and _apt_install("gearman-job-server", apt_log):
        setup.gearmand = _find_gearmand()
        _say(setup, "installed gearman-job-server with apt-get")
    if setup.gearmand is None:
        _say(setup, "gearmand is missing and could not be installed (needs root and "
             "apt-get: apt-get install -y gearman-job-server); gearmand skipped")
        return setup
    setup.version = _gearmand_version(setup.gearmand)
    setup.gear_version = _gear_version()
    if not setup.gear_version:
        _say(setup, "the Python package 'gear' is missing; installing it with pip")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "gear"],
                       capture_output=True, timeout=300)
        setup.gear_version = _gear_version()
        if not setup.gear_version:
            _say(setup, "could not pip-install 'gear'; the Python gearmand client is skipped")
    if want_c:
        _prepare_c(setup, tmp, apt_log)
    return setup


def _prepare_c(setup: Setup, tmp: Path, apt_log: Path) -> None:
    if not gearman_c.HEADER.exists():
        if not _apt_install("libgearman-dev", apt_log):
            _say(setup, "libgearman-dev is not installed and could not be; C client skipped")
            return
        _say(setup, "installed libgearman-dev with apt-get")
    if shutil.which("gcc") is None:
        _say(setup, "gcc is missing; C client skipped")
        return
    try:
        setup.c_binary = gearman_c.build(tmp)
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        _say(setup, f"building the C client failed: {exc} {detail.decode(errors='replace')}")


# --- a running gearmand --------------------------------------------------------------------


def admin(port: int, command: str, timeout_s: float = 2.0) -> str:
    """A gearmand administrative command (``status``, ``version``) and its answer."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout_s) as sock:
        sock.sendall(command.encode() + b"\n")
        answer = b""
        while not (answer.endswith(b"\n.\n") or answer == b".\n"
                   or (command == "version" and answer.endswith(b"\n"))):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.decode(errors="replace")


def available_workers(port: int, function: str = "echo") -> int:
    try:
        text = admin(port, "status")
    except OSError:
        return -1
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[0] == function:
            return int(fields[3])
    return 0


def start_gearmand(kids: Children, setup: Setup) -> tuple[Child, int]:
    """``gearmand -L 127.0.0.1 -p PORT`` in the foreground, log and pid file in the temp dir."""
    assert setup.gearmand is not None
    port = free_port()
    logs = kids.log_dir
    child = kids.spawn("gearmand", [
        setup.gearmand, "-L", LOOPBACK, "-p", str(port),
        "--log-file", str(logs / f"gearmand-{port}.log"),
        "--pid-file", str(logs / f"gearmand-{port}.pid")])

    def answers() -> bool:
        if not child.alive():
            raise BenchError(f"gearmand exited{child.log_tail()}")
        try:
            return admin(port, "version").startswith("OK")
        except OSError:
            return False

    wait_for(answers, 20, f"gearmand on port {port}")
    return child, port


class Gearmand:
    """A gearmand of its own with echo workers, and sync clients: ``gear`` or C."""

    modes: tuple[str, ...] = (SYNC,)

    def __init__(self, kids: Children, plan: Plan, setup: Setup, flavour: str) -> None:
        self.kids, self.plan, self.setup = kids, plan, setup
        self.name = flavour
        self.server: Child | None = None
        self.port = 0
        self.workers: list[Child] = []

    def start(self, shape: Shape) -> None:
        self.server, self.port = start_gearmand(self.kids, self.setup)
        port = str(self.port)
        if self.name == GEAR_PY:
            self.workers = [self.kids.role("gear-worker", "gear-worker", "--port", port)
                            for _ in range(shape.workers)]
        else:
            assert self.setup.c_binary is not None
            argv = [str(self.setup.c_binary), "worker", port]
            self.workers = [self.kids.spawn("gearman-c-worker", argv, talk=True)
                            for _ in range(shape.workers)]
        for worker in self.workers:
            worker.expect("READY", 30)
        wait_for(lambda: available_workers(self.port) == shape.workers, 30,
                 f"{shape.workers} gearman workers")

    def clients(self, mode: str, size: int, shape: Shape) -> list[Child]:
        if self.name == GEAR_PY:
            return start_clients(self.kids, shape, "gear", SYNC, size, self.plan,
                                 "--port", str(self.port))
        assert self.setup.c_binary is not None
        argv = [str(self.setup.c_binary), "client", str(self.port), str(size),
                str(self.plan.warmup_s)]
        return [self.kids.spawn("gearman-c-client", argv, talk=True)
                for _ in range(shape.clients)]

    def stop(self) -> None:
        if self.server is not None:
            self.kids.kill(*self.workers, self.server)
            self.server = None


def systems(kids: Children, plan: Plan, setup: Setup) -> list[Gearmand]:
    """The gearmand contenders this machine can run."""
    if setup.gearmand is None:
        return []
    found = [GEAR_PY] if setup.gear_version else []
    found += [GEAR_C] if setup.c_binary is not None else []
    return [Gearmand(kids, plan, setup, flavour) for flavour in found]
