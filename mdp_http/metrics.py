"""Prometheus metrics of the fleet, built from the brokers' ``mmi.status`` at each scrape.

:class:`FleetCollector` is a custom ``prometheus_client`` collector: it turns the latest
:class:`~mdp.status.BrokerView` of every broker into metric families (the exposition
itself is prometheus_client's). Every series carries the ``broker`` it was read from, so
Prometheus sums over brokers (``sum by (service) (rate(dips_requests_total[1m]))``).
The gateway's own request counter and latency histogram live in :class:`GatewayMetrics`.
Names and labels are listed in docs/HTTP.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from mdp import status as st

SB = ["service", "broker"]
WORKER = ["service", "broker", "host", "pid"]
WORKER_STATES = ("idle", "busy", "away", "draining")
MAX_LABELLED = 1024  # (service, status) pairs whose labelled children are kept at hand
GATEWAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)


def histogram_buckets(hist: st.Histogram) -> list[tuple[str, float]]:
    """Cumulative buckets as Prometheus wants them."""
    return [(_le(b), float(c)) for b, c in zip(hist.le, hist.cumulative(), strict=True)]


class FleetCollector(Collector):
    """Metric families from the latest view of each broker (``source()``)."""

    def __init__(self, source: Callable[[], Sequence[st.BrokerView]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        views = list(self.source())
        yield from _broker_families(views)
        yield from _service_families(views)
        yield from _worker_families(views)


def _broker_families(views: list[st.BrokerView]) -> Iterator[Metric]:
    up = GaugeMetricFamily("dips_broker_up", "1 if the broker answered mmi.status",
                           labels=["broker"])
    uptime = GaugeMetricFamily("dips_broker_uptime_seconds", "Seconds since the broker started",
                               labels=["broker"])
    info = InfoMetricFamily("dips_broker", "The broker's code version, host and process",
                            labels=["broker", "version", "host", "pid", "instance"])
    totals: dict[str, CounterMetricFamily] = {}
    for view in views:
        up.add_metric([view.endpoint], 1.0 if view.up else 0.0)
        if view.status is None:
            continue
        broker = view.status.broker
        uptime.add_metric([view.endpoint], broker.uptime_s)
        info.add_metric([view.endpoint, broker.version, broker.host, str(broker.pid),
                         broker.instance], {})
        for name, value in view.status.counters.to_wire().items():
            family = totals.get(name)
            if family is None:
                family = totals[name] = CounterMetricFamily(
                    f"dips_broker_{name}", f"Broker-wide count of {name} since it started",
                    labels=["broker"])
            family.add_metric([view.endpoint], float(value))
    yield up
    yield uptime
    yield info
    yield from totals.values()


_SERVICE_COUNTERS = (
    ("requests", "dips_requests", "Requests the broker accepted for the service"),
    ("replies", "dips_replies", "Replies the broker passed back to clients"),
    ("expired", "dips_expired", "Requests dropped unworked because their deadline passed"),
    ("requeued", "dips_requeued", "Requests queued again after their worker was lost"),
    ("bounced", "dips_bounced", "Requests a worker handed back (it was busy elsewhere)"),
    ("poisoned", "dips_poisoned", "Requests given up after workers were lost running them"),
    ("coalesced", "dips_coalesced", "Requests that shared the task of an earlier one"),
)


def _service_families(views: list[st.BrokerView]) -> Iterator[Metric]:
    counters = {key: CounterMetricFamily(name, doc, labels=SB)
                for key, name, doc in _SERVICE_COUNTERS}
    errors = CounterMetricFamily("dips_errors", "Error replies by code", labels=[*SB, "code"])
    queue = GaugeMetricFamily("dips_queue_depth", "Requests waiting for a worker", labels=SB)
    queue_bytes = GaugeMetricFamily("dips_queue_bytes", "Bytes of the request bodies waiting "
                                    "for a worker (bounded by the broker's --max-queue-bytes)",
                                    labels=SB)
    workers = GaugeMetricFamily("dips_workers", "Workers registered, by state",
                                labels=[*SB, "state"])
    queue_h = HistogramMetricFamily("dips_queue_seconds", "Time from arrival at the broker to "
                                    "dispatch to a worker (broker clock)", labels=SB)
    work_h = HistogramMetricFamily("dips_work_seconds", "Time from dispatch to the worker's "
                                   "reply (broker clock)", labels=SB)
    for view in views:
        for service in view.status.services.values() if view.status else ():
            labels = [service.name, view.endpoint]
            if service.counters is not None:
                for key, _, _ in _SERVICE_COUNTERS:
                    counters[key].add_metric(labels, float(getattr(service.counters, key)))
                for code, count in sorted(service.counters.errors.items()):
                    errors.add_metric([*labels, code], float(count))
            queue.add_metric(labels, float(service.queue))
            if service.queue_bytes is not None:  # (a broker from before it was reported)
                queue_bytes.add_metric(labels, float(service.queue_bytes))
            for state in WORKER_STATES:
                workers.add_metric([*labels, state], float(service.workers_in(state)))
            for family, hist in ((queue_h, service.queue_seconds),
                                 (work_h, service.work_seconds)):
                if hist is not None:
                    family.add_metric(labels, histogram_buckets(hist), hist.sum)
    yield from counters.values()
    yield errors
    yield queue
    yield queue_bytes
    yield workers
    yield queue_h
    yield work_h


def _worker_families(views: list[st.BrokerView]) -> Iterator[Metric]:
    served = CounterMetricFamily("dips_worker_served", "Requests of this broker the worker "
                                 "served", labels=WORKER)
    failures = CounterMetricFamily("dips_worker_failures", "Error replies the worker sent",
                                   labels=WORKER)
    busy = GaugeMetricFamily("dips_worker_busy", "1 while the worker holds this broker's request",
                             labels=WORKER)
    info = InfoMetricFamily("dips_worker", "The worker's code version and state",
                            labels=[*WORKER, "version", "state"])
    for view in views:
        for service in view.status.services.values() if view.status else ():
            for worker in service.workers:
                labels = [service.name, view.endpoint, worker.host, str(worker.pid)]
                served.add_metric(labels, float(worker.served))
                failures.add_metric(labels, float(worker.failures))
                busy.add_metric(labels, 1.0 if worker.state == "busy" else 0.0)
                info.add_metric([*labels, worker.version, worker.state], {})
    yield served
    yield failures
    yield busy
    yield info


class GatewayMetrics:
    """The gateway's own view: HTTP requests by service and status, and their latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("dips_http_requests", "HTTP API requests answered",
                                ["service", "status"], registry=registry)
        self.latency = Histogram("dips_http_request_seconds", "HTTP API request latency, "
                                 "body read to response", ["service"], registry=registry,
                                 buckets=GATEWAY_BUCKETS)
        self.in_flight = 0
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}  # labelled, looked up once

    def observe(self, service: str, status: int, seconds: float) -> None:
        children = self._children.get((service, status))
        if children is None:
            children = (self.requests.labels(service, str(status)), self.latency.labels(service))
            if len(self._children) < MAX_LABELLED:
                self._children[(service, status)] = children
        children[0].inc()
        children[1].observe(seconds)


class ConnectionCollector(Collector):
    """The door's HTTP connections (``--max-connections``): open now, and since it started
    those closed while idle to make room and those refused with every one busy."""

    def __init__(self, source: Callable[[], Any]) -> None:
        self.source = source  # the ConnectionGuard, once the door listens

    def collect(self) -> Iterator[Metric]:
        guard = self.source()
        if guard is None:
            return
        yield GaugeMetricFamily("dips_http_connections", "HTTP connections open",
                                value=guard.open_connections())
        yield GaugeMetricFamily("dips_http_connections_max", "--max-connections, as fitted "
                                "to the file-descriptor limit", value=guard.limit)
        yield CounterMetricFamily("dips_http_connections_evicted", "Idle HTTP connections "
                                  "closed to make room for a new one", value=guard.evicted)
        yield CounterMetricFamily("dips_http_connections_refused", "HTTP connections refused "
                                  "with 503, every one having a request in hand",
                                  value=guard.refused)
        yield CounterMetricFamily("dips_http_send_timeouts", "HTTP connections aborted: the "
                                  "peer took no byte of its reply for --send-timeout",
                                  value=guard.stalled)
        yield CounterMetricFamily("dips_http_send_too_slow", "HTTP connections aborted: the "
                                  "peer took its reply below --min-send-rate over "
                                  "--send-timeout", value=guard.too_slow)
