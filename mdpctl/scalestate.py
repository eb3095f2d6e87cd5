"""The chosen scale of a host: how many workers of each service run there, and its file.

``mdpctl scale`` records each choice with the host's ``mdp-scale`` program (the keeper,
:mod:`mdpctl.keeper`), which keeps it in a JSON file in the host's run directory and applies
it whenever supervisord starts.  Everything here is data: the file, the command line the
keeper reads on its stdin, and the state line it prints (which mdpctl reads back from its
log over XML-RPC).  No sockets.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdpctl.hostconf import KEEPER_PROGRAM

KEEPER_NAME = f"{KEEPER_PROGRAM}:{KEEPER_PROGRAM}"
STATE_FILE_NAME = "scale.json"
LINE_PREFIX = "mdp-scale: "
MAX_COUNT = 10_000
_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ScaleStateError(ValueError):
    """A choice, a state file or a state line is not what it must be."""


@dataclass(frozen=True)
class KeeperState:
    """What the keeper last said: the choices, and whether it applied them at its start."""

    chosen: dict[str, int]
    pid: int
    applied: bool
    error: str | None = None
    seq: int = 0  # counts the keeper's lines, so that a new one can be told from the last


def check_choice(service: Any, count: Any) -> tuple[str, int | None]:
    """A valid (service, count); a count of None forgets the choice."""
    if not isinstance(service, str) or not _SERVICE.match(service):
        raise ScaleStateError(f"service {service!r:.80} is not a service name")
    if count is not None and (
        not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_COUNT
    ):
        raise ScaleStateError(f"count {count!r:.40} is not a number of workers 0-{MAX_COUNT}")
    return service, count


def choice_line(service: str, count: int | None) -> str:
    """What ``mdpctl scale`` sends to the keeper's stdin."""
    check_choice(service, count)
    return json.dumps({"service": service, "count": count}) + "\n"


def parse_choice(line: str) -> tuple[str, int | None]:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise ScaleStateError(f"not JSON: {line[:80]!r}") from exc
    if not isinstance(data, dict):
        raise ScaleStateError("a choice is a JSON object with service and count")
    return check_choice(data.get("service"), data.get("count"))


def apply_choice(chosen: dict[str, int], service: str, count: int | None) -> dict[str, int]:
    new = dict(chosen)
    if count is None:
        new.pop(service, None)
    else:
        new[service] = count
    return dict(sorted(new.items()))


def parse_state(text: str) -> dict[str, int]:
    """The state file's choices; raises ScaleStateError naming what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ScaleStateError(f"not JSON: {exc}") from exc
    chosen = data.get("chosen") if isinstance(data, dict) else None
    if not isinstance(chosen, dict):
        raise ScaleStateError("no 'chosen' map")
    result: dict[str, int] = {}
    for service, count in chosen.items():
        name, value = check_choice(service, count)
        if value is not None:
            result[name] = value
    return dict(sorted(result.items()))


def dump_state(chosen: dict[str, int]) -> str:
    return json.dumps({"chosen": chosen}, indent=2, sort_keys=True) + "\n"


def read_state(path: Path) -> dict[str, int]:
    """The choices in ``path``; none when it does not exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return parse_state(text)


def write_state(path: Path, chosen: dict[str, int]) -> None:
    """Write the file atomically and durably: temporary file, fsync, rename, fsync dir."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(dump_state(chosen))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def state_line(
    chosen: dict[str, int], pid: int, applied: bool, error: str | None = None, seq: int = 0
) -> str:
    """What the keeper prints after each change (one line, read back by mdpctl)."""
    body: dict[str, Any] = {"chosen": chosen, "pid": pid, "applied": applied, "seq": seq}
    if error:
        body["error"] = error
    return LINE_PREFIX + json.dumps(body, sort_keys=True) + "\n"


def last_state(log_tail: str) -> KeeperState | None:
    """The last well-formed state line in a log tail, or None."""
    for line in reversed(log_tail.splitlines()):
        if not line.startswith(LINE_PREFIX + "{"):
            continue
        try:
            data = json.loads(line[len(LINE_PREFIX) :])
            chosen = parse_state(json.dumps({"chosen": data.get("chosen")}))
        except (ValueError, AttributeError):
            continue
        pid, applied, error = data.get("pid"), data.get("applied"), data.get("error")
        seq = data.get("seq", 0)
        if isinstance(pid, int) and isinstance(applied, bool) and isinstance(seq, int):
            return KeeperState(
                chosen, pid, applied, error if isinstance(error, str) else None, seq
            )
    return None
