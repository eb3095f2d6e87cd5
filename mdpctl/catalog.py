"""The services the fleet offers, with their fields, as the workers describe them.

A DIPS worker's READY carries its handler's description, and each broker reports it per
service in ``mmi.status`` (:class:`mdp.status.ServiceInfo`).  The catalog merges every
broker's answer: a service is listed when some broker has a worker ready for it, with the
workers ready at each broker and the first description found.  A standard 7/MDP worker
sends no description.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mdp import status as st
from mdp.keys import CurveConfig
from mdpctl.brokers import fetch_all
from mdpctl.errors import Unreachable


@dataclass
class Offer:
    """One service across the brokers."""

    name: str
    workers: dict[str, int] = field(default_factory=dict)  # broker -> workers ready
    info: st.ServiceInfo | None = None  # None: no worker described it

    @property
    def fields(self) -> tuple[st.FieldInfo, ...]:
        return self.info.fields if self.info else ()

    @property
    def reply(self) -> str:
        """The content type of its replies, for a person."""
        if self.info is None:
            return "-"
        return self.info.content_type or "(per request)"

    def example(self) -> str:
        """An ``mdpctl call`` line with the required fields, files for bytes."""
        parts = ["mdpctl", "call", self.name]
        for f in self.fields:
            if f.required:
                parts.append(f"--file {f.name}=FILE" if f.is_bytes else f"--set {f.name}=VALUE")
        if not self.fields:
            parts.append("--json '{...}'")
        content_type = self.info.content_type if self.info else ""
        if content_type.startswith("image/") or any(f.is_bytes for f in self.fields):
            parts.append("-o OUT")
        return " ".join(parts)


def merge(views: Sequence[st.BrokerView]) -> list[Offer]:
    """The services some broker has a ready worker for, by name."""
    found: dict[str, Offer] = {}
    for view in views:
        if view.status is None:
            continue
        for name, service in view.status.services.items():
            offer = found.setdefault(name, Offer(name))
            offer.workers[view.endpoint] = service.serving
            if offer.info is None:
                offer.info = service.info
    return sorted((o for o in found.values() if any(o.workers.values())),
                  key=lambda o: o.name)


def catalog(brokers: Sequence[str], timeout_s: float = 2.0,
            curve: CurveConfig | None = None) -> tuple[list[Offer], list[st.BrokerView]]:
    """The services on offer and the views of the brokers that did not answer."""
    views = fetch_all(brokers, timeout_s, curve)
    silent = [v for v in views if v.status is None]
    if len(silent) == len(views):
        raise Unreachable("no broker answered mmi.status: "
                          + "; ".join(f"{v.endpoint} {v.error}" for v in silent))
    return merge(views), silent
