"""Which services the local cluster runs workers for."""

from __future__ import annotations

import importlib.util
import logging
import re

from mdpctl.errors import UsageError

log = logging.getLogger(__name__)

BUILTIN_SERVICE = "echo"
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
    """``echo`` and every service the installed renderers offer."""
    return [BUILTIN_SERVICE, *renderer_services()]


def renderer_services() -> list[str]:
    """The names in the renderers registry, or none when there is no renderers package."""
    if importlib.util.find_spec("renderers") is None:
        return []
    try:
        import renderers

        names = [str(name) for name in renderers.names()]
    except Exception as exc:  # a broken renderers package must not break mdpctl
        log.warning("cannot list the renderers' services: %s", exc)
        return []
    return [name for name in names if name != BUILTIN_SERVICE]
