"""What the brokers say about themselves: ``mmi.status``, decoded into typed records.

The map comes off the wire, so it is checked field by field; a malformed answer makes
that broker's view an error rather than crashing mdpctl.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from mdp.errors import MDPError, ProtocolError, Timeout
from mdp.keys import CurveConfig
from mdpctl.bounded import call_bounded, check_listening
from mdpctl.errors import Unreachable, WaitTimeout

log = logging.getLogger(__name__)

SERVING_STATES = frozenset({"idle", "busy", "away"})
"""Worker states in which a broker can hand the worker requests (now or soon)."""


@dataclass(frozen=True)
class WorkerEntry:
    """One worker as one broker sees it."""

    identity: str
    state: str
    host: str
    pid: int
    version: str
    served: int
    uptime_s: float

    @property
    def serving(self) -> bool:
        return self.state in SERVING_STATES


@dataclass(frozen=True)
class ServiceEntry:
    queue: int
    workers: tuple[WorkerEntry, ...]


@dataclass(frozen=True)
class BrokerStatus:
    """One broker's ``mmi.status`` answer."""

    endpoint: str
    pid: int
    host: str
    version: str
    uptime_s: float
    services: dict[str, ServiceEntry]
    counters: dict[str, int]

    def workers(self, service: str) -> tuple[WorkerEntry, ...]:
        entry = self.services.get(service)
        return entry.workers if entry else ()

    def find(self, service: str, pid: int, host: str | None = None) -> WorkerEntry | None:
        """The worker of ``service`` with this pid (and host, when given)."""
        for worker in self.workers(service):
            if worker.pid == pid and (host is None or worker.host == host):
                return worker
        return None


@dataclass(frozen=True)
class BrokerView:
    """A broker's status, or why it could not be had."""

    endpoint: str
    status: BrokerStatus | None
    error: str | None = None


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProtocolError(f"mmi.status: {where}{key} is {value!r:.60}")
    return value


def _worker(data: Any, where: str) -> WorkerEntry:
    if not isinstance(data, dict):
        raise ProtocolError(f"mmi.status: {where} is not a map")
    return WorkerEntry(
        identity=str(_field(data, "identity", str, where)),
        state=str(_field(data, "state", str, where)),
        host=str(_field(data, "host", str, where)),
        pid=int(_field(data, "pid", int, where)),
        version=str(_field(data, "version", str, where)),
        served=int(_field(data, "served", int, where)),
        uptime_s=float(_field(data, "uptime_s", (int, float), where)),
    )


def parse_status(data: Any) -> BrokerStatus:
    """Check and decode an ``mmi.status`` map; raise ProtocolError naming what is wrong."""
    if not isinstance(data, dict):
        raise ProtocolError("mmi.status: the answer is not a map")
    broker = _field(data, "broker", dict, "")
    services_map = _field(data, "services", dict, "")
    counters_map = _field(data, "counters", dict, "")
    services: dict[str, ServiceEntry] = {}
    for name, entry in services_map.items():
        where = f"services.{name}."
        if not isinstance(name, str) or not isinstance(entry, dict):
            raise ProtocolError(f"mmi.status: {where} is not a map")
        workers = _field(entry, "workers", list, where)
        services[name] = ServiceEntry(
            queue=int(_field(entry, "queue", int, where)),
            workers=tuple(_worker(w, f"{where}workers[{i}].") for i, w in enumerate(workers)),
        )
    counters = {
        str(k): int(v) for k, v in counters_map.items() if isinstance(v, int) and v is not False
    }
    return BrokerStatus(
        endpoint=str(_field(broker, "endpoint", str, "broker.")),
        pid=int(_field(broker, "pid", int, "broker.")),
        host=str(_field(broker, "host", str, "broker.")),
        version=str(_field(broker, "version", str, "broker.")),
        uptime_s=float(_field(broker, "uptime_s", (int, float), "broker.")),
        services=services,
        counters=counters,
    )


def fetch_status(
    endpoint: str, timeout_s: float = 2.0, curve: CurveConfig | None = None
) -> BrokerView:
    """Ask one broker for ``mmi.status``; a broker that fails gives a view with an error."""
    try:
        check_listening(endpoint, timeout_s)
        data = call_bounded(
            lambda: _ask_status(endpoint, timeout_s, curve), timeout_s + 1.0, "mmi.status"
        )
        return BrokerView(endpoint, parse_status(data))
    except Unreachable as exc:
        return BrokerView(endpoint, None, f"not reachable ({exc})")
    except ProtocolError as exc:
        log.warning("broker %s sent a bad mmi.status: %s", endpoint, exc)
        return BrokerView(endpoint, None, str(exc))
    except (Timeout, WaitTimeout):
        return BrokerView(endpoint, None, f"no answer within {timeout_s:g} s")
    except MDPError as exc:
        return BrokerView(endpoint, None, f"mmi.status failed: {exc}")


def _ask_status(endpoint: str, timeout_s: float, curve: CurveConfig | None) -> Any:
    from mdp.client import MDPClient

    with MDPClient([endpoint], timeout=timeout_s, retries=0, curve=curve) as client:
        return client.status()


def fetch_all(
    endpoints: Sequence[str], timeout_s: float = 2.0, curve: CurveConfig | None = None
) -> list[BrokerView]:
    """Every broker's view, asked in parallel so that dead brokers cost one timeout."""
    if len(endpoints) == 1:
        return [fetch_status(endpoints[0], timeout_s, curve)]
    with ThreadPoolExecutor(max_workers=len(endpoints)) as pool:
        return list(pool.map(lambda e: fetch_status(e, timeout_s, curve), endpoints))
