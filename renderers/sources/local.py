"""``local:///path`` sources: files under the configured roots, never outside them.

The path is percent-decoded, then refused if it holds ``..``, a NUL or a backslash. It is
looked up under each root in turn; the candidate's real path (every symlink resolved) must
lie inside the root's real path, so a symlink that leads out of the root is refused, not
followed. The file is opened without following a final symlink and without waiting (a
FIFO put in its place after the check does not hold the worker), must be a regular file,
and is read up to ``source_max_bytes``.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import unquote, urlsplit

from mdp.errors import BadRequest
from renderers.settings import Settings
from renderers.sources.errors import (
    FIELD,
    SourceError,
    SourceForbidden,
    SourceNotFound,
    SourceTooLarge,
)

SCHEME = "local"


@dataclass(frozen=True)
class LocalFile:
    """A file found under a root: its real path and its stat stamp."""

    path: str
    stamp: tuple[int, int, int]  # mtime_ns, size, inode
    size: int
    mtime: float

    @property
    def etag(self) -> str:
        mtime_ns, size, _ = self.stamp
        return f'"{mtime_ns:x}-{size:x}"'

    @property
    def last_modified(self) -> str:
        return formatdate(self.mtime, usegmt=True)


def relative_path(url: str) -> str:
    """The checked relative path of a ``local:///path`` URL."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME or parts.netloc or parts.query or parts.fragment:
        raise BadRequest("source: a local source is written local:///path/to/file", FIELD)
    path = unquote(parts.path)
    segments = [segment for segment in path.split("/") if segment not in ("", ".")]
    if not segments or any(segment == ".." for segment in segments):
        raise SourceForbidden("source: a local path may not be empty or hold '..'")
    if "\x00" in path or "\\" in path:
        raise SourceForbidden("source: a local path may not hold NUL or backslash characters")
    return "/".join(segments)


def find(url: str, limits: Settings) -> LocalFile:
    """The file a ``local:///`` URL names, under the first root that holds it."""
    if not limits.sources_roots:
        raise SourceForbidden(
            "source: local sources are not enabled on this worker (DIPS_SOURCES_ROOTS)"
        )
    relative = relative_path(url)
    for root in limits.sources_roots:
        real_root = os.path.realpath(root)
        real = os.path.realpath(os.path.join(real_root, relative))
        if os.path.commonpath([real_root, real]) != real_root:
            raise SourceForbidden("source: the local path leads outside its root")
        try:
            info = os.stat(real, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise SourceError(f"source: cannot read the local file: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise SourceNotFound("source: the local path is not a regular file")
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        return LocalFile(real, stamp, info.st_size, info.st_mtime)
    raise SourceNotFound("source: no such local file")


def read(found: LocalFile, limits: Settings) -> bytes:
    """The file's bytes, bounded by ``source_max_bytes``."""
    limit = limits.source_max_bytes
    if found.size > limit:
        raise SourceTooLarge(f"source: {found.size} bytes is over the limit of {limit}")
    # O_NONBLOCK: a file swapped for a FIFO after the check opens at once (and is refused
    # below as not regular) rather than waiting for a writer; regular files ignore it.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(found.path, flags)
    except FileNotFoundError:
        raise SourceNotFound("source: no such local file") from None
    except OSError as exc:
        raise SourceForbidden(f"source: cannot open the local file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise SourceNotFound("source: the local path is not a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise SourceTooLarge(f"source: more than {limit} bytes (the limit)")
    return data
