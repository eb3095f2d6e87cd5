"""Which services the local cluster runs workers for."""

from __future__ import annotations

import re

from mdp import handlers
from mdpctl.errors import UsageError

_SERVICE_COUNT = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(=(?P<count>\d+))?$")


def parse_service_counts(specs: list[str]) -> dict[str, int | None]:
    """``["echo=1", "ecard"]`` -> ``{"echo": 1, "ecard": None}`` (None: the default count)."""
    counts: dict[str, int | None] = {}
    for spec in specs:
        match = _SERVICE_COUNT.match(spec)
        if match is None:
            raise UsageError(f"--service {spec!r}: expected NAME or NAME=COUNT")
        name = match["name"]
        if name in counts:
            raise UsageError(f"--service {name} is given twice")
        counts[name] = int(match["count"]) if match["count"] is not None else None
    return counts


def default_services() -> list[str]:
    """``echo`` and every service the ``dips.services`` entry points offer: what a worker
    started here finds (:func:`mdp.handlers.service_names`; ConfigError naming a provider
    that cannot be loaded)."""
    return handlers.service_names()
