"""Test kit for the door's worker side: PHP GearmanWorker processes and an HTTP door."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from clusterkit import FAST_HEARTBEAT, Cluster, Proc, needs
from testkit import count_workers, free_port, has_worker, wait_for

HERE = Path(__file__).resolve().parent
TEST_WORKER = HERE / "php" / "test_worker.php"
PROGRESS_WORKER = HERE / "progress_worker.py"
ECARD_WORKER = HERE / "php" / "ecard_worker.php"
_HTTP_LISTENING = re.compile(r"mdp-http listening on (http://127\.0\.0\.1:\d+)/")


def spawn(cluster: Cluster, argv: Sequence[str], name: str,
          env: dict[str, str] | None = None) -> Proc:
    """Any program as a process the cluster cleans up (its output in a log file)."""
    cluster._n += 1
    log = cluster.tmp_path / f"{cluster._n:02d}-{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(list(argv), stdout=out, stderr=out,
                                 env={**os.environ, **(env or {})})
    proc = Proc(popen, log)
    cluster.procs.append(proc)
    return proc


def php_worker(cluster: Cluster, script: Path, ports: Sequence[int], brokers: Sequence[Proc],
               function: str, env: dict[str, str] | None = None) -> Proc:
    """``php script PORT...``; waits until every broker lists it for ``function`` once
    more than before (once per door it connects to)."""
    before = [max(0, count_workers(b.endpoint, function)) for b in brokers]
    proc = spawn(cluster, ["php", str(script), *map(str, ports)], "php-worker", env)
    for broker, count in zip(brokers, before, strict=True):
        wait_for(lambda b=broker, c=count: proc.popen.poll() is not None
                 or count_workers(b.endpoint, function) >= c + len(set(ports)), 20,
                 f"the PHP worker registered for {function} at {broker.endpoint}")
    if proc.popen.poll() is not None:
        raise AssertionError(f"the PHP worker exited:\n{proc.output()}")
    return proc


def start_http(cluster: Cluster, brokers: Sequence[Proc]) -> str:
    """mdp-http on a free port; its base URL."""
    args = ["-m", "mdp_http", "--listen", "127.0.0.1:0"]
    for broker in brokers:
        args += ["--broker", broker.endpoint]
    proc = cluster._spawn(args, "http")

    def listening() -> str | None:
        if proc.popen.poll() is not None:
            raise AssertionError(f"mdp-http exited:\n{proc.output()}")
        match = _HTTP_LISTENING.search(proc.output())
        return match.group(1) if match else None

    return str(wait_for(listening, 20, "mdp-http to listen"))


def run_php(code: str, path: Path, timeout: float = 60.0) -> str:
    """Run a PHP script; its output (it must exit 0)."""
    path.write_text(code)
    done = subprocess.run(["php", str(path)], capture_output=True, timeout=timeout)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode(errors="replace")


PYTHON = sys.executable

need_gearmand = needs(shutil.which("gearmand") is not None, "gearmand (gearman-job-server)")


def progress_worker(cluster: Cluster, brokers: Sequence[Proc]) -> Proc:
    """The Python worker of ``py_progress`` (tests/gearman/progress_worker.py)."""
    args = [str(PROGRESS_WORKER), "--service", "py_progress", *FAST_HEARTBEAT]
    for broker in brokers:
        args += ["--broker", broker.endpoint]
    proc = cluster._spawn(args, "progress-worker")
    for broker in brokers:
        wait_for(lambda e=broker.endpoint: has_worker(e, proc.pid), 15,
                 "the progress worker registered")
    return proc


def _gearmand_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"getpid\n")
            return sock.recv(64).startswith(b"OK")
    except OSError:
        return False


@contextmanager
def gearmand_with_php_worker(tmp_path: Path) -> Iterator[int]:
    """A gearmand with the PHP test worker attached: the behaviour to match. Its port."""
    with gearmand_server(tmp_path) as port:
        with (tmp_path / "gearmand-worker.log").open("wb") as log:
            worker = subprocess.Popen(["php", str(TEST_WORKER), str(port)], stdout=log,
                                      stderr=log)
        try:
            wait_for(lambda: b"ready" in (tmp_path / "gearmand-worker.log").read_bytes(), 20,
                     "the PHP worker on gearmand")
            yield port
        finally:
            worker.kill()
            worker.wait()


@contextmanager
def gearmand_server(tmp_path: Path) -> Iterator[int]:
    """A bare gearmand (the behaviour to compare with) on a free port; its port."""
    port = free_port()
    with (tmp_path / "gearmand.log").open("wb") as log:
        server = subprocess.Popen(["gearmand", "-L", "127.0.0.1", "-p", str(port),
                                   "--log-file", "none"], stdout=log, stderr=log)
    try:
        wait_for(lambda: server.poll() is not None or _gearmand_answers(port), 20,
                 "gearmand to listen")
        assert server.poll() is None, (tmp_path / "gearmand.log").read_text()
        yield port
    finally:
        server.kill()
        server.wait()
