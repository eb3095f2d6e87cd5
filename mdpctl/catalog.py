"""The services the fleet offers, with their fields, as the workers describe them.

A DIPS worker's READY carries its handler's ``info`` (``content_type``, ``fields`` as
``[name, kind, required, doc]`` lists, ``doc``); each broker reports it per service in
``mmi.status`` (``services.NAME.info``).  The catalog merges every broker's answer: a
service is listed when any broker has workers for it, with the workers per broker and
the first description found.  A standard 7/MDP worker sends no description.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mdp.errors import MDPError
from mdp.keys import CurveConfig
from mdpctl.bounded import call_bounded, check_listening
from mdpctl.errors import Unreachable

log = logging.getLogger(__name__)

SERVING = frozenset({"idle", "busy", "away"})


@dataclass(frozen=True)
class FieldInfo:
    name: str
    kind: str
    required: bool
    doc: str

    @property
    def is_bytes(self) -> bool:
        return self.kind.split(":", 1)[0].strip().lower() == "bytes"


@dataclass
class ServiceInfo:
    """One service across the brokers."""

    name: str
    workers: dict[str, int] = field(default_factory=dict)  # broker -> serving workers
    content_type: str | None = None  # None: not described; "": chosen per request
    doc: str = ""
    fields: tuple[FieldInfo, ...] = ()

    @property
    def described(self) -> bool:
        return self.content_type is not None

    def field(self, name: str) -> FieldInfo | None:
        return next((f for f in self.fields if f.name == name), None)

    def example(self) -> str:
        """An ``mdpctl call`` line with the required fields, files for bytes."""
        parts = ["mdpctl", "call", self.name]
        for f in self.fields:
            if f.required:
                parts.append(f"--file {f.name}=FILE" if f.is_bytes else f"--set {f.name}=VALUE")
        if not self.fields:
            parts.append("--json '{...}'")
        if (self.content_type or "").startswith("image/") or any(f.is_bytes for f in self.fields):
            parts.append("-o OUT")
        return " ".join(parts)


def parse_info(raw: Any) -> tuple[str, str, tuple[FieldInfo, ...]] | None:
    """(content_type, doc, fields) from a status ``info`` map; None when absent or bad."""
    if not isinstance(raw, dict):
        return None
    content_type, doc, fields = raw.get("content_type"), raw.get("doc", ""), raw.get("fields")
    if not isinstance(content_type, str) or not isinstance(doc, str):
        return None
    parsed = []
    for item in fields if isinstance(fields, list) else []:
        if (isinstance(item, list | tuple) and len(item) == 4 and isinstance(item[0], str)
                and isinstance(item[1], str) and isinstance(item[3], str)):
            parsed.append(FieldInfo(item[0], item[1], bool(item[2]), item[3]))
    return content_type, doc, tuple(parsed)


def merge(statuses: dict[str, dict[str, Any] | None]) -> list[ServiceInfo]:
    """Services of every broker's status map (None: that broker did not answer)."""
    found: dict[str, ServiceInfo] = {}
    for endpoint, status in statuses.items():
        services = status.get("services") if isinstance(status, dict) else None
        if not isinstance(services, dict):
            continue
        for name, entry in services.items():
            if not isinstance(name, str) or not isinstance(entry, dict):
                continue
            service = found.setdefault(name, ServiceInfo(name))
            workers = entry.get("workers")
            service.workers[endpoint] = sum(
                1 for w in workers if isinstance(w, dict) and w.get("state") in SERVING
            ) if isinstance(workers, list) else 0
            info = parse_info(entry.get("info"))
            if info is not None and not service.described:
                service.content_type, service.doc, service.fields = info
    offered = [s for s in found.values() if any(s.workers.values())]
    return sorted(offered, key=lambda s: s.name)


def _status(endpoint: str, timeout_s: float, curve: CurveConfig | None) -> dict[str, Any] | None:
    from mdp.client import MDPClient

    def ask() -> dict[str, Any]:
        with MDPClient([endpoint], timeout=timeout_s, retries=0, curve=curve) as client:
            return client.status()

    try:
        check_listening(endpoint, timeout_s)
        return call_bounded(ask, timeout_s + 1.0, f"mmi.status of {endpoint}")
    except (MDPError, Unreachable) as exc:
        log.info("broker %s: %s", endpoint, exc)
        return None


def fetch(brokers: Sequence[str], timeout_s: float = 2.0,
          curve: CurveConfig | None = None) -> dict[str, dict[str, Any] | None]:
    """Every broker's ``mmi.status`` map (None where it did not answer), in parallel."""
    with ThreadPoolExecutor(max_workers=max(1, len(brokers))) as pool:
        answers = list(pool.map(lambda e: _status(e, timeout_s, curve), brokers))
    return dict(zip(brokers, answers, strict=True))


def catalog(brokers: Sequence[str], timeout_s: float = 2.0,
            curve: CurveConfig | None = None) -> tuple[list[ServiceInfo], list[str]]:
    """The services on offer and the brokers that did not answer."""
    statuses = fetch(brokers, timeout_s, curve)
    silent = [e for e, s in statuses.items() if s is None]
    if len(silent) == len(brokers):
        raise Unreachable("no broker answered mmi.status: " + ", ".join(brokers))
    return merge(statuses), silent
