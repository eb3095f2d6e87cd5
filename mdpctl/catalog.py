"""The services the fleet offers, with their fields, as the workers describe them.

A DIPS worker's READY carries its handler's description, and each broker reports it per
service in ``mmi.status`` (:class:`mdp.status.ServiceInfo`).  The catalog merges every
broker's answer: a service is listed when some broker has a worker ready for it, with the
workers ready at each broker and the first description found.  A standard 7/MDP worker
sends no description.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
        """An ``mdpctl call`` line: the workers' example request (its bytes as files), else
        the required fields with placeholders."""
        parts = ["mdpctl", "call", self.name]
        request = self.info.example if self.info else None
        if request:
            bytes_fields = self.info.bytes_fields if self.info else frozenset()
            parts.extend(_argument(name, value, name in bytes_fields)
                         for name, value in request.items())
        else:
            parts.extend(f"--file {f.name}=FILE" if f.is_bytes else f"--set {f.name}=VALUE"
                         for f in self.fields if f.required)
        if not request and not self.fields:
            parts.append("--json '{...}'")
        content_type = self.info.content_type if self.info else ""
        if content_type.startswith("image/") or any(f.is_bytes for f in self.fields):
            parts.append("-o OUT")
        return " ".join(parts)


FILE = "FILE"  # where an example's image goes: the user's own file


def _argument(name: str, value: Any, is_bytes: bool) -> str:
    """``--file NAME=FILE`` for bytes, else ``--set NAME=VALUE`` as ``mdpctl call`` reads it
    back (:func:`mdpctl.fields.parse_set`: JSON, else text; ``@`` starts a file)."""
    if is_bytes or isinstance(value, bytes | bytearray):
        return f"--file {shlex.quote(name)}={FILE}"
    value = _with_files(value)
    text = value if isinstance(value, str) and not _is_json(value) else json.dumps(
        value, separators=(",", ":"), ensure_ascii=False)
    return "--set " + shlex.quote(f"{name}={text}")


def _with_files(value: Any) -> Any:
    """Nested bytes as ``@FILE``; a text that starts with ``@`` escaped as ``@@``."""
    if isinstance(value, bytes | bytearray):
        return "@" + FILE
    if isinstance(value, str):
        return "@" + value if value.startswith("@") else value
    if isinstance(value, Mapping):
        return {str(k): _with_files(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_with_files(v) for v in value]
    return value


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


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
