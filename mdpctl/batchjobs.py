"""The work of ``mdpctl batch``: one job per input, its request and where its output goes.

Inputs are image files (given one by one, as directories walked recursively, or listed in
a file) or the lines of a JSONL file (one request per line).  Each job has an output
*key*: the path under the output directory without the extension, which comes from the
reply (``.png``, ``.webp``, ... sniffed from the bytes; ``.json`` for a result that is not
bytes).  A job is done when a file with its key exists and is not older than its input
file; outputs are written to a hidden temporary file and renamed, so a file under its
final name is always complete.  A directory's files that are not images by their name
(or are hidden) are counted by reason, so that the run can say what it left out.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdp.errors import RequestError
from mdpctl.errors import UsageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp"})
TMP_MARK = ".tmp-"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_SNIFF = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
)


class InputError(RequestError):
    """An input cannot be turned into a request (unreadable file, a line that is not JSON)."""

    code = "bad_input"


@dataclass(frozen=True)
class Job:
    """One request to make and the output it gives."""

    key: str  # output path relative to the output directory, without extension
    source: str  # what to name in messages: a file path, or FILE:LINE
    path: Path | None = None  # an image file, read when the request is built
    line: str | None = None  # a JSONL line


def request_for(job: Job, fields: dict[str, Any]) -> dict[str, Any]:
    """The request of ``job``: the image or the line, with ``fields`` set on it."""
    if job.path is not None:
        try:
            data = job.path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {job.source}: {exc.strerror}") from exc
        return {**fields, "image": data}
    try:
        value = json.loads(job.line or "")
    except ValueError as exc:
        raise InputError(f"{job.source} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InputError(f"{job.source} is not a JSON object (a request is a map)")
    return {**value, **fields}


@dataclass
class Walk:
    """The image jobs of some inputs, and the files of their directories left out."""

    jobs: list[Job] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> files

    def skipped_line(self) -> str | None:
        """``skipped 5 file(s) that are not images by their name: 3 .txt, 2 hidden``."""
        if not self.skipped:
            return None
        ordered = sorted(self.skipped.items(), key=lambda item: (-item[1], item[0]))
        reasons = ", ".join(f"{n} {why}" for why, n in ordered)
        total = sum(self.skipped.values())
        return (f"skipped {total} file(s) of the input directories, not images by their "
                f"name: {reasons}")


def _skip_reason(rel: Path) -> str | None:
    """Why a file found in a directory is not an input (None: it is one)."""
    if any(part.startswith(".") for part in rel.parts):
        return "hidden"
    suffix = rel.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return None
    return suffix or "without extension"


def image_jobs(inputs: Iterable[Path]) -> Walk:
    """Jobs for image files and directories; a directory keeps its tree under the output."""
    walk = Walk()
    for given in inputs:
        if given.is_dir():
            for path in sorted(given.rglob("*")):
                if not path.is_file():
                    continue
                rel = path.relative_to(given)
                reason = _skip_reason(rel)
                if reason is not None:
                    walk.skipped[reason] += 1
                    continue
                walk.jobs.append(Job(rel.with_suffix("").as_posix(), str(path), path=path))
        elif given.is_file():
            walk.jobs.append(Job(given.stem, str(given), path=given))
        else:
            raise UsageError(f"input {given} is neither a file nor a directory")
    _unique(walk.jobs)
    return walk


def listed_paths(list_file: Path) -> list[Path]:
    """The paths in a file, one a line (blank lines and # comments skipped)."""
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {list_file}: {exc.strerror}") from exc
    return [Path(s) for s in (line.strip() for line in lines) if s and not s.startswith("#")]


def jsonl_jobs(jsonl: Path, name_field: str | None) -> list[Job]:
    """One job a non-blank line; named by line number, or by a field of the line."""
    try:
        lines = jsonl.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {jsonl}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{jsonl} is not UTF-8 text: {exc}") from exc
    width = max(6, len(str(len(lines))))
    jobs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        key = f"{number:0{width}d}"
        if name_field is not None:
            key = _name_from(line, name_field) or key
        jobs.append(Job(key, f"{jsonl}:{number}", line=line))
    return _unique(jobs)


def _name_from(line: str, name_field: str) -> str | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    name = value.get(name_field) if isinstance(value, dict) else None
    if isinstance(name, str | int) and not isinstance(name, bool):
        safe = _SAFE_NAME.sub("_", str(name)).strip("._")
        return safe[:200] or None
    return None


def _unique(jobs: list[Job]) -> list[Job]:
    seen: dict[str, Job] = {}
    for job in jobs:
        other = seen.get(job.key)
        if other is not None:
            raise UsageError(
                f"{other.source} and {job.source} would both be written to {job.key}.*; "
                "rename one, or give them in separate runs"
            )
        seen[job.key] = job
    return jobs


def done_keys(out_dir: Path) -> dict[str, int]:
    """Keys of the outputs already written under ``out_dir`` (one scan of the tree), each
    with its output's modification time (ns)."""
    done: dict[str, int] = {}
    if not out_dir.is_dir():
        return done
    for root, _dirs, files in os.walk(out_dir):
        rel = Path(root).relative_to(out_dir)
        for name in files:
            if name.startswith("."):
                continue
            stem = name.rsplit(".", 1)[0] if "." in name else name
            key = (rel / stem).as_posix()
            try:
                mtime = os.stat(os.path.join(root, name)).st_mtime_ns
            except OSError:
                continue
            done[key] = max(mtime, done.get(key, 0))
    return done


def is_done(job: Job, done: dict[str, int]) -> bool:
    """An output exists for ``job`` and its input file has not changed since."""
    written = done.get(job.key)
    if written is None:
        return False
    if job.path is None:
        return True
    try:
        return job.path.stat().st_mtime_ns <= written
    except OSError:
        return True  # the job itself reports an unreadable input


def remove_partial(out_dir: Path) -> int:
    """Delete temporary files an interrupted run left behind; return how many."""
    removed = 0
    if not out_dir.is_dir():
        return removed
    for root, _dirs, files in os.walk(out_dir):
        for name in files:
            if name.startswith(".") and TMP_MARK in name:
                os.unlink(os.path.join(root, name))
                removed += 1
    return removed


def encode_output(result: Any) -> tuple[bytes, str]:
    """The bytes to write for a result and their file extension."""
    if isinstance(result, bytes | bytearray | memoryview):
        data = bytes(result)
        for magic, suffix in _SNIFF:
            if data.startswith(magic):
                return data, suffix
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return data, ".webp"
        if data[4:12] in (b"ftypavif", b"ftypavis"):
            return data, ".avif"
        return data, ".bin"
    text = json.dumps(result, sort_keys=True, default=_json_default)
    return (text + "\n").encode(), ".json"


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"bytes": len(value)}
    raise TypeError(f"{type(value).__name__} is not JSON")


def write_atomically(out_dir: Path, key: str, data: bytes, suffix: str) -> Path:
    """Write ``data`` to ``out_dir/key+suffix`` through a hidden temporary file, and remove
    an older output of the same key under another extension (``b.webp`` for a new
    ``b.png``), so that one input never has two outputs."""
    final = out_dir / (key + suffix)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}{TMP_MARK}{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, final)
    stem = final.name[: -len(suffix)] if suffix else final.name
    for other in final.parent.glob(f"{_glob_escape(stem)}.*"):
        if other != final and other.name.rsplit(".", 1)[0] == stem and other.is_file():
            other.unlink(missing_ok=True)
    return final


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def pending(jobs: list[Job], done: dict[str, int]) -> Iterator[Job]:
    return (job for job in jobs if not is_done(job, done))
