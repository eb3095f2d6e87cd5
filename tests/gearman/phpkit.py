"""Test kit for the door's worker side: PHP GearmanWorker processes and an HTTP door."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from clusterkit import Cluster, Proc, count_workers, wait_for

HERE = Path(__file__).resolve().parent
TEST_WORKER = HERE / "php" / "test_worker.php"
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
