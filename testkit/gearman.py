"""The ``gear`` package's Gearman client and worker, as the tests and benchmarks use them.

Two things every user of ``gear`` here needs: TCP_NODELAY on each connection (without it a
job waits ~40 ms for a delayed ACK), and a job that says when it is over. A job made by
:func:`gear_job` carries ``done`` (an event) set on WORK_COMPLETE, WORK_FAIL or
WORK_EXCEPTION, or when its server goes away with it (then ``lost`` is True: gear ends such
a job with neither failure nor data, which would read as an empty result). ``gear`` is
imported only when one of these is called.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Iterable
from typing import Any

LOOPBACK = "127.0.0.1"


class _NoDelay:
    """Mixed into gear's connection owners: TCP_NODELAY on each new connection."""

    def _onConnect(self, conn: Any) -> None:
        conn.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super()._onConnect(conn)  # type: ignore[misc]


@functools.cache
def _client_class() -> type:
    import gear

    class Client(_NoDelay, gear.Client):  # type: ignore[misc]
        def handleWorkComplete(self, packet: Any) -> Any:
            return _over(super().handleWorkComplete(packet))

        def handleWorkFail(self, packet: Any) -> Any:
            return _over(super().handleWorkFail(packet))

        def handleWorkException(self, packet: Any) -> Any:
            return _over(super().handleWorkException(packet))

        def handleDisconnect(self, job: Any) -> Any:
            job = super().handleDisconnect(job)
            job.lost = True
            return _over(job)

    return Client


@functools.cache
def _worker_class() -> type:
    import gear

    class Worker(_NoDelay, gear.Worker):  # type: ignore[misc]
        pass

    return Worker


def _over(job: Any) -> Any:
    done = getattr(job, "done", None)
    if done is not None:
        done.set()
    return job


def gear_client(ports: Iterable[int], client_id: str = "", host: str = LOOPBACK,
                wait_s: float = 10.0) -> Any:
    """A connected ``gear.Client`` for the Gearman servers on ``ports``."""
    client = _client_class()(client_id=client_id or f"kit-client-{os.getpid()}")
    for port in ports:
        client.addServer(host, port)
    try:
        client.waitForServer(timeout=wait_s)
    except BaseException:
        client.shutdown()  # (its thread would try to connect for as long as the process runs)
        raise
    return client


def gear_worker(ports: Iterable[int], functions: Iterable[str], client_id: str = "",
                host: str = LOOPBACK, wait_s: float = 20.0) -> Any:
    """A connected ``gear.Worker`` for ``functions`` (call its ``getJob()`` to work)."""
    worker = _worker_class()(client_id=client_id or f"kit-worker-{os.getpid()}")
    for port in ports:
        worker.addServer(host, port)
    worker.waitForServer(timeout=wait_s)
    for name in functions:
        worker.registerFunction(name)
    return worker


def gear_job(function: str | bytes, workload: bytes, unique: bytes | None = None) -> Any:
    """A ``gear.Job`` with ``done`` (set when it is over) and ``lost`` (False)."""
    import gear

    name = function.encode() if isinstance(function, str) else function
    job = gear.Job(name, workload, unique)
    job.done = threading.Event()
    job.lost = False
    return job


def gear_call(client: Any, function: str | bytes, workload: bytes, timeout_s: float = 20.0,
              **submit: Any) -> Any:
    """Submit one foreground job and wait until it is over (TimeoutError if it is not)."""
    job = gear_job(function, workload)
    client.submitJob(job, timeout=timeout_s, **submit)
    if not job.done.wait(timeout_s):
        raise TimeoutError(f"{function!r} job did not complete in {timeout_s:g} s")
    return job


def gear_result(job: Any) -> bytes | None:
    """The data of a job that completed, or None (failed, raised, or lost with its server)."""
    if job.failure or job.lost or not job.complete:
        return None
    return b"".join(job.data)
