"""What a broker reports of itself (``mmi.status``, in the one schema of :mod:`mdp.status`),
and what it keeps of a worker's READY metadata to report; its answers to the other
``mmi.*`` requests, and the services it names to a request for one that no worker offers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mdp import protocol as p
from mdp.dispatch import Dispatcher
from mdp.errors import UnknownService
from mdp.records import Request, Service, Worker
from mdp.status import (
    BrokerInfo,
    BrokerStatus,
    Counters,
    Histogram,
    ServiceCounters,
    ServiceInfo,
    ServiceStatus,
    WorkerStatus,
)
from mdp.tally import LatencyTally

MAX_INFO_BYTES = 8192  # a service description larger than this (msgpack) is dropped
LISTED_SERVICES = 20  # services named in an unknown_service answer


def broker_status(dispatcher: Dispatcher, about: dict[str, Any], version: str,
                  instance: str, uptime_s: float, now: float) -> BrokerStatus:
    """The ``mmi.status`` answer: ``about`` gives the endpoint, pid and host."""
    broker = BrokerInfo(endpoint=about.get("endpoint", ""), pid=about.get("pid", 0),
                        host=about.get("host", ""), version=version,
                        uptime_s=round(uptime_s, 3), instance=instance)
    services = {name.decode("ascii", "replace"): _service(name, service, now)
                for name, service in dispatcher.services.items()}
    tally = dispatcher.counters
    counters = Counters(**{name: getattr(tally, name) for name in Counters.__dataclass_fields__})
    return BrokerStatus(broker, services, counters)


def mmi_answer(request: Request, services: Mapping[bytes, Service],
               status: Callable[[float], dict[str, Any]], now: float) -> bytes:
    """The body that answers an ``mmi.*`` request: ``mmi.service``, 200 if a worker offers
    the service its body names, else 404; ``mmi.status``, the map ``status(now)`` gives;
    501 for any other."""
    if request.service == p.MMI_SERVICE:
        name = request.body[0] if request.body else b""
        service = services.get(bytes(name))
        body = b"200" if service is not None and service.workers else b"404"
    elif request.service == p.MMI_STATUS:
        body = p.pack(status(now))
    else:
        body = b"501"
    return body


def unknown_service(services: Mapping[bytes, Service], name: bytes) -> UnknownService:
    """The error for a request to ``name``, which no worker offers: it names the services
    that are offered here (the first ``LISTED_SERVICES`` of them)."""
    offered = sorted(s.name.decode("ascii", "replace")
                     for s in services.values() if s.workers)
    if not offered:
        return UnknownService(f"no worker offers {name.decode('ascii', 'replace')!r}; "
                              "no service is offered here")
    listed = ", ".join(offered[:LISTED_SERVICES])
    if len(offered) > LISTED_SERVICES:
        listed += f" and {len(offered) - LISTED_SERVICES} more"
    return UnknownService(f"no worker offers {name.decode('ascii', 'replace')!r}; "
                          f"the services offered here are {listed}")


def _service(name: bytes, service: Service, now: float) -> ServiceStatus:
    tally = service.counters
    counters = ServiceCounters(
        requests=tally.requests, replies=tally.replies, expired=tally.expired,
        requeued=tally.requeued, bounced=tally.bounced, poisoned=tally.poisoned,
        coalesced=tally.coalesced, errors=dict(tally.errors))
    info = next((w.meta["info"] for w in reversed(service.workers.values())
                 if "info" in w.meta), None)  # what the newest worker says the service is
    return ServiceStatus(
        name=name.decode("ascii", "replace"),
        queue=len(service.queue),
        queue_bytes=sum(request.size for request in service.queue),  # (asked for seldom)
        workers=tuple(_worker(w, now) for w in service.workers.values()),
        counters=counters,
        queue_seconds=_histogram(tally.queue_time),
        work_seconds=_histogram(tally.work_time),
        info=None if info is None else ServiceInfo.from_wire(info))


def _histogram(tally: LatencyTally) -> Histogram:
    wire = tally.to_wire()
    return Histogram(tuple(wire["le"]), tuple(wire["counts"]), wire["sum"], wire["count"])


def _worker(worker: Worker, now: float) -> WorkerStatus:
    meta = worker.meta
    return WorkerStatus(
        identity=worker.identity.hex(), state=worker.state.value, host=meta.get("host", ""),
        pid=meta.get("pid", 0), version=meta.get("version", ""), output=meta.get("output", ""),
        served=worker.served,
        uptime_s=round(now - worker.registered_at, 3), failures=worker.failures,
        queued=len(worker.tasks))


def clean_meta(meta: dict[str, Any] | None) -> dict[str, Any]:
    """Keep only well-typed, short metadata fields from a worker's READY."""
    meta = meta or {}
    clean: dict[str, Any] = {}
    for key in ("host", "version", "output"):
        value = meta.get(key)
        if isinstance(value, str):
            clean[key] = value[:100]
    pid = meta.get("pid")
    if isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < 2**31:
        clean["pid"] = pid
    prefetch = meta.get("prefetch")
    if isinstance(prefetch, int) and not isinstance(prefetch, bool) and prefetch > 0:
        clean["prefetch"] = min(prefetch, 16)
    if meta.get("batch") is True:
        clean["batch"] = True
    if meta.get("announce") is True:
        clean["announce"] = True
    info = clean_info(meta.get("info"))
    if info is not None:
        clean["info"] = info
    return clean


def clean_info(info: Any) -> dict[str, Any] | None:
    """A worker's description of its service (``mdp.handlers.service_info``), if it is
    well-formed and small; anything else is dropped (the worker still serves)."""
    if not isinstance(info, dict):
        return None
    content_type, fields, doc = info.get("content_type", ""), info.get("fields", []), \
        info.get("doc", "")
    if not (isinstance(content_type, str) and isinstance(doc, str) and isinstance(fields, list)):
        return None
    if not all(isinstance(f, list) and len(f) == 4 and isinstance(f[0], str)
               and isinstance(f[1], str) and isinstance(f[2], bool) and isinstance(f[3], str)
               for f in fields):
        return None
    clean: dict[str, Any] = {"content_type": content_type, "fields": fields, "doc": doc}
    example = info.get("example")  # a request that works (mdp.handlers.service_info)
    if isinstance(example, dict) and all(isinstance(k, str) for k in example):
        clean["example"] = example
    return clean if len(p.pack(clean)) <= MAX_INFO_BYTES else None
