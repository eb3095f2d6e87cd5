"""What ``mdpctl down`` takes for the leftovers of a cluster whose supervisord died: only
processes a supervisord started (``SUPERVISOR_ENABLED`` in their environment) in the run
directory, known by pid and start time. A broker started by hand in the same directory is
never signalled; a leftover broker is stopped. Real broker processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mdpctl import leftovers
from testkit import free_port, wait_for


def broker_in(directory: Path, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mdp.broker", "--bind", f"tcp://127.0.0.1:{free_port()}"],
        cwd=directory, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)


def test_a_broker_started_by_hand_is_no_leftover_and_a_supervised_one_is_stopped(
        tmp_path: Path) -> None:
    by_hand = broker_in(tmp_path)
    left = broker_in(tmp_path, SUPERVISOR_ENABLED="1", SUPERVISOR_PROCESS_NAME="broker-0")
    try:
        wait_for(lambda: [x.pid for x in leftovers.find(tmp_path)] == [left.pid], 10,
                 "the supervised broker to be found, and only it")
        [found] = leftovers.find(tmp_path)
        assert found.broker
        leftovers.stop([found], timeout_s=10)
        assert left.wait(timeout=10) is not None
        assert by_hand.poll() is None  # never signalled
        assert leftovers.find(tmp_path) == []
    finally:
        for proc in (by_hand, left):
            proc.kill()
            proc.wait(timeout=10)


def test_a_pid_given_to_another_process_is_not_signalled(tmp_path: Path) -> None:
    proc = broker_in(tmp_path, SUPERVISOR_ENABLED="1")
    try:
        wait_for(lambda: len(leftovers.find(tmp_path)) == 1, 10, "the broker to be found")
        [found] = leftovers.find(tmp_path)
        other = leftovers.Leftover(found.pid, found.broker, found.started + 1)  # as if reused
        leftovers.stop([other], timeout_s=0.5)
        assert proc.poll() is None  # the start time did not match: left alone
    finally:
        proc.kill()
        proc.wait(timeout=10)
