"""A sync client inherited by a forked child (``os.fork``, multiprocessing's fork, a
pre-forking web server that made its client before forking): the child starts over with
connections of its own, so that each process gets its own replies, on either transport.

Before, a plain client's child shared its parent's TCP connection and the same request ids,
and whichever process read first took the other's reply; a pyzmq client's child waited on
the parent's libzmq context, which has no I/O thread in the child, past its own timeout."""

from __future__ import annotations

import os
import signal
import time

import pytest

from clusterkit import Cluster
from mdp.client import MDPClient
from mdp.errors import ClientClosed

pytestmark = pytest.mark.slow

CALLS = 200
CHILD_WAIT_S = 60.0


def calls(client: MDPClient, who: str) -> tuple[int, list[str]]:
    """``CALLS`` echo calls; how many came back, and every reply that was not our own."""
    wrong = []
    for i in range(CALLS):
        request = {"who": who, "i": i}
        reply = client.send("echo", request, timeout=10.0)
        if reply != request:
            wrong.append(f"asked {who}/{i}, got {reply!r}")
    return CALLS, wrong


def reap(pid: int, timeout_s: float) -> int:
    """The child's exit status, waiting at most ``timeout_s`` (then it is killed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)  # polling a child's exit: there is no wait with a timeout
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the forked child did not finish in {timeout_s:.0f}s")


@pytest.mark.parametrize("transport", ["plain", "zmq"])
def test_a_forked_child_and_its_parent_each_get_their_own_replies(
        cluster: Cluster, transport: str) -> None:
    broker = cluster.broker()
    cluster.worker([broker])
    cluster.worker([broker])
    client = MDPClient([broker.endpoint], transport=transport)
    try:
        assert client.send("echo", {"warm": 1}) == {"warm": 1}  # its connection is up
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report through the pipe, leave without pytest's exit
            code = 1
            try:
                os.close(read_end)
                done, wrong = calls(client, "child")
                client.close()
                os.write(write_end, f"{done} {len(wrong)} {wrong[:3]}".encode()[:4000])
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        done, wrong = calls(client, "parent")
        status = reap(pid, CHILD_WAIT_S)
        with os.fdopen(read_end, "rb") as pipe:
            report = pipe.read().decode()
        assert status == 0, f"the child failed: {report!r}"
        assert (done, wrong) == (CALLS, [])
        child_done, child_wrong, _ = report.split(" ", 2)
        assert (int(child_done), int(child_wrong)) == (CALLS, 0), report
        assert client.send("echo", {"after": 1}) == {"after": 1}
    finally:
        client.close()


def test_an_iterator_started_before_the_fork_is_the_parents_alone(cluster: Cluster) -> None:
    """An ``iter_many`` suspended at the fork: the parent finishes it with every result its
    own; the child, resuming it, is refused at once (its calls are the parent's), and its
    own calls after that are answered."""
    broker = cluster.broker()
    cluster.worker([broker])
    client = MDPClient([broker.endpoint], transport="plain")
    try:
        requests = [{"i": i} for i in range(CALLS)]
        results = client.iter_many("echo", requests, window=16)
        first = [next(results)]
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read_end)
                try:
                    next(results)
                    verdict = "resumed"
                except ClientClosed:
                    verdict = "refused"
                done, wrong = calls(client, "child")
                os.write(write_end, f"{verdict} {done} {len(wrong)}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        rest = list(results)
        status = reap(pid, CHILD_WAIT_S)
        with os.fdopen(read_end, "rb") as pipe:
            report = pipe.read().decode()
        assert status == 0, f"the child failed: {report!r}"
        assert sorted(i for i, _ in first + rest) == list(range(CALLS))
        assert all(outcome == requests[i] for i, outcome in first + rest)
        assert report == f"refused {CALLS} 0"
        assert client.send("echo", {"after": 1}) == {"after": 1}
    finally:
        client.close()
