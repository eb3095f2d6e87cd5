"""What a batch's outputs were made with: the service and the fields set on every request.

``mdpctl batch`` writes it to ``DIR/.mdpctl-batch.json`` before it sends anything.  A
later run into the same directory with other parameters (``--width 128`` after 256)
would otherwise take the old outputs for done ones and keep them: it compares the
records first and refuses, naming what changed, unless told ``--redo``.  A bytes field
(``--set mark=@logo.png``) is recorded by its SHA-256, so another logo counts as a change.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

RECORD_NAME = ".mdpctl-batch.json"


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"sha256": hashlib.sha256(value).hexdigest(), "bytes": len(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def make(service: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The record of a run: JSON-able, bytes replaced by their digest."""
    return {"service": service, "fields": _plain(fields)}


def read(out_dir: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((out_dir / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write(out_dir: Path, record: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f"{RECORD_NAME}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(out_dir / RECORD_NAME)


def _show(value: Any) -> str:
    if value is None:
        return "not set"
    if isinstance(value, dict) and set(value) == {"sha256", "bytes"}:
        return f"{value['bytes']} bytes ({value['sha256'][:12]})"
    return json.dumps(value, sort_keys=True)


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``width: 256 then, 128 now`` for every parameter that differs."""
    found = []
    if old.get("service") != new["service"]:
        found.append(f"service: {old.get('service')} then, {new['service']} now")
    recorded = old.get("fields")
    before: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    after: dict[str, Any] = new["fields"]
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            found.append(f"{key}: {_show(before.get(key))} then, {_show(after.get(key))} now")
    return found
