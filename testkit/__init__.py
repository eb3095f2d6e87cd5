"""The test kit of DIPS, shared by ``tests/`` and ``scripts/`` (not installed).

Waiting for a condition (:func:`wait_for`), free loopback ports (:func:`free_port`), what a
broker says of itself on the :mod:`mdp.status` schema (:func:`broker_status` and friends),
a load generator (:class:`Load`, :class:`BrokerLoad`), ``gear``'s Gearman client and worker
with what they need here (:func:`gear_client`, :func:`gear_call` ...), and ``/proc``
readings (:func:`cpu_seconds`, :func:`rss_bytes`, :func:`processes_under`). Nothing here
imports pytest: the tests' process harness stays in ``tests/clusterkit.py``.
"""

from testkit.brokers import (
    broker_counter,
    broker_status,
    busy_worker,
    count_workers,
    has_worker,
    queue_depth,
    serving_workers,
    status_of,
    worker_pids,
)
from testkit.gearman import gear_call, gear_client, gear_job, gear_result, gear_worker
from testkit.load import BrokerLoad, Load, echo_request, echoed
from testkit.ports import LOOPBACK, free_port, free_ports, taken_port, tcp_endpoint
from testkit.procfs import cpu_seconds, kill_all_under, processes_under, rss_bytes, wakeups
from testkit.waiting import WaitTimeout, wait_for

__all__ = [
    "LOOPBACK", "BrokerLoad", "Load", "WaitTimeout", "broker_counter", "broker_status",
    "busy_worker", "count_workers", "cpu_seconds", "echo_request", "free_port", "free_ports",
    "gear_call", "gear_client", "gear_job", "gear_result", "gear_worker", "has_worker",
    "kill_all_under", "processes_under", "queue_depth", "rss_bytes", "echoed", "serving_workers",
    "status_of", "taken_port", "tcp_endpoint",
    "wait_for", "wakeups", "worker_pids",
]
