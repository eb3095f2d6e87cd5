"""Request fields from the command line: JSON, ``KEY=VALUE``, and bytes from files.

A request is a map; images travel in it as bytes (msgpack bin).  JSON has no bytes, so
on mdpctl's command line a string that starts with ``@`` names a file whose bytes
become the value: ``{"image": "@photo.jpg"}`` or ``--set mark=@logo.png``, anywhere in
the map (nested maps and lists too).  ``@@`` at the start stands for a literal ``@``
(``"@@home"`` is the text ``@home``).  ``--file FIELD=PATH`` says the same without
quoting (``-`` reads standard input).  A file that cannot be read is a usage error
naming the field, before anything is sent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mdpctl.errors import UsageError

MAX_FILE_BYTES = 256 * 1024 * 1024  # above any service limit; stops a /dev/zero typo


AT_HINT = " (a value that starts with @ names a file; write @@ for a text that starts with @)"


def read_bytes(path: str, field: str, hint: str = "") -> bytes:
    """The bytes of ``path`` (``-``: standard input) for ``field``; ``hint`` ends the
    message when it cannot be read (how the path was given)."""
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        with open(Path(path).expanduser(), "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f"field {field}: cannot read {path}: {reason}{hint}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(f"field {field}: {path} is larger than {MAX_FILE_BYTES >> 20} MiB")
    return data


def expand_files(value: Any, where: str = "") -> Any:
    """``value`` with every ``"@PATH"`` string replaced by that file's bytes."""
    if isinstance(value, str):
        if value.startswith("@@"):
            return value[1:]
        if value.startswith("@") and len(value) > 1:
            return read_bytes(value[1:], where or "request", AT_HINT)
        return value
    if isinstance(value, dict):
        return {k: expand_files(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_files(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def split_assignment(item: str, option: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise UsageError(f"{option} {item!r}: expected KEY=VALUE")
    return key, value


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE``: VALUE is JSON (a number, true, a list...), else a string;
    ``@PATH`` is a file's bytes.  (``--set title='"007"'`` keeps a number-like string.)"""
    fields: dict[str, Any] = {}
    for item in items:
        key, text = split_assignment(item, "--set")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        fields[key] = expand_files(value, key)
    return fields


def parse_files(items: list[str]) -> dict[str, bytes]:
    """``--file FIELD=PATH``: the field gets the file's bytes."""
    fields: dict[str, bytes] = {}
    for item in items:
        key, path = split_assignment(item, "--file")
        fields[key] = read_bytes(path, key)
    return fields


def describe_bytes(data: bytes) -> str:
    """``"1234 bytes of PNG image"``, by the magic bytes."""
    return f"{len(data)} bytes of {sniff_kind(data)}"


def sniff_kind(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG image"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG image"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF image"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP image"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "AVIF image"
    return "binary data"
