"""The code blocks of the documents, and the markers that say how a test runs them.

Every fenced block whose language is ``sh``, ``bash``, ``shell`` or ``python`` is a
block a reader would paste, and ``tests/test_docs.py`` runs it.  An HTML comment right
before a block (blank lines between are fine; it does not show on a rendered page)
changes that:

``<!-- docs-test: skip (REASON) -->``
    the block is not run; REASON says why and is required (``needs several hosts``).

``<!-- docs-test: setup ... -->``
    the lines after ``setup`` up to ``-->`` are shell commands run before the block,
    in the same directory (files the block needs that a reader would have).

``<!-- docs-test: setup-python ... -->``
    the lines are Python run before the block's own code, in the same process (names
    the snippet takes as given).

A marker that is not followed by a block, or a skip without a reason, is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

RUN_LANGUAGES = {"sh": "shell", "bash": "shell", "shell": "shell", "python": "python",
                 "py": "python"}
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>[\w-]+)(?P<rest>.*)$")
_REASON = re.compile(r"^\s*\((?P<reason>[^)]+)\)\s*-->\s*$")


class MarkerError(ValueError):
    """A docs-test marker is malformed or stands where no block follows."""


@dataclass
class Block:
    """One fenced code block of a document."""

    doc: str  # the path, relative to the repository
    line: int  # of the opening fence, from 1
    lang: str  # "shell", "python", or the fence's own word for blocks not run
    code: str
    skip: str | None = None  # why it is not run
    setup_shell: str = ""
    setup_python: str = ""

    @property
    def runs(self) -> bool:
        return self.lang in ("shell", "python") and self.skip is None

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass
class _Pending:
    line: int
    skip: str | None = None
    setup_shell: list[str] = field(default_factory=list)
    setup_python: list[str] = field(default_factory=list)


def _read_marker(lines: list[str], start: int, pending: _Pending, doc: str) -> int:
    """Parse the marker at ``lines[start]`` into ``pending``; return the next line index."""
    match = _MARKER.match(lines[start])
    assert match is not None
    kind, rest = match["kind"], match["rest"]
    where = f"{doc}:{start + 1}"
    if kind == "skip":
        reason = _REASON.match(rest)
        if reason is None:
            raise MarkerError(f"{where}: write <!-- docs-test: skip (why it cannot run) -->")
        pending.skip = reason["reason"].strip()
        return start + 1
    if kind not in ("setup", "setup-python"):
        raise MarkerError(f"{where}: unknown docs-test marker {kind!r} (skip, setup, "
                          "setup-python)")
    body = []
    if rest.strip().endswith("-->"):
        body.append(rest.strip()[:-3].strip())
        end = start
    else:
        body.append(rest)
        end = start + 1
        while end < len(lines) and "-->" not in lines[end]:
            body.append(lines[end])
            end += 1
        if end == len(lines):
            raise MarkerError(f"{where}: the setup marker is never closed with -->")
        body.append(lines[end].split("-->", 1)[0])
    code = [b for b in body if b.strip()]
    (pending.setup_shell if kind == "setup" else pending.setup_python).extend(code)
    return end + 1


def parse(text: str, doc: str) -> list[Block]:
    """Every fenced block of a Markdown text, with its markers applied."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: _Pending | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if _MARKER.match(line):
            pending = pending or _Pending(i + 1)
            i = _read_marker(lines, i, pending, doc)
            continue
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip() and pending is not None:
                raise MarkerError(f"{doc}:{pending.line}: a docs-test marker must stand right "
                                  "before a code block")
            i += 1
            continue
        indent = len(fence["indent"])
        end = i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        code = "\n".join(x[indent:] if x[:indent].isspace() else x for x in lines[i + 1:end])
        lang = RUN_LANGUAGES.get(fence["lang"].lower(), fence["lang"].lower() or "text")
        block = Block(doc, i + 1, lang, code + "\n")
        if pending is not None:
            block.skip = pending.skip
            block.setup_shell = "\n".join(pending.setup_shell)
            block.setup_python = "\n".join(pending.setup_python)
            pending = None
        blocks.append(block)
        i = end + 1
    if pending is not None:
        raise MarkerError(f"{doc}:{pending.line}: a docs-test marker with no block after it")
    return blocks


def documents(repo: Path) -> list[Path]:
    """README.md and every docs/*.md."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def collect(repo: Path) -> list[Block]:
    found: list[Block] = []
    for path in documents(repo):
        found.extend(parse(path.read_text(encoding="utf-8"), str(path.relative_to(repo))))
    return found
