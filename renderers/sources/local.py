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
from typing import IO
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


Stamp = tuple[int, int, int, int]  # mtime_ns, size, inode, ctime_ns: a file's version


def _stamp(info: os.stat_result) -> Stamp:
    return (info.st_mtime_ns, info.st_size, info.st_ino, info.st_ctime_ns)


class _Versioned:
    """A local file's validators, from its stat stamp and modification time."""

    stamp: Stamp
    mtime: float

    @property
    def etag(self) -> str:
        return _etag(self.stamp)

    @property
    def last_modified(self) -> str:
        return formatdate(self.mtime, usegmt=True)


@dataclass(frozen=True)
class LocalFile(_Versioned):
    """A file found under a root: its real path and its stat stamp."""

    path: str
    stamp: Stamp
    size: int
    mtime: float


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
            "source: local sources are not enabled on this worker: set DIPS_SOURCES_ROOTS "
            "in its environment (on a local cluster: mdpctl up --sources-root DIR)"
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
        return LocalFile(real, _stamp(info), info.st_size, info.st_mtime)
    raise SourceNotFound("source: no such local file")


class LocalBlob(_Versioned):
    """An opened local file as a :class:`renderers.decode.Blob`; :meth:`close` it."""

    def __init__(self, fd: int, info: os.stat_result, limit: int) -> None:
        self.fd = fd
        self.limit = limit
        self.stamp = _stamp(info)
        self.mtime = info.st_mtime
        self._size = info.st_size

    @property
    def size(self) -> int:
        return self._size

    def head(self, count: int) -> bytes:
        return os.pread(self.fd, count, 0)

    def stream(self) -> IO[bytes]:
        os.lseek(self.fd, 0, os.SEEK_SET)
        return open(self.fd, "rb", buffering=64 * 1024, closefd=False)

    def read(self) -> bytes:
        """The whole file, bounded by the limit even if it grew since it was opened."""
        data = os.pread(self.fd, min(self._size, self.limit) + 1, 0)
        while len(data) <= self.limit:  # it may have grown since its stat: read on
            more = os.pread(self.fd, min(1 << 20, self.limit + 1 - len(data)), len(data))
            if not more:
                break
            data += more
        if len(data) > self.limit:
            raise SourceTooLarge(f"source: more than {self.limit} bytes (the limit)")
        return data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


def _etag(stamp: Stamp) -> str:
    """The file's version: a file replaced by another (a new inode) or rewritten in place
    with its size and time set back (``rsync --inplace -t``, ``cp -p``: the change time,
    which nobody can set back, moves) is a new version."""
    mtime_ns, size, inode, ctime_ns = stamp
    return f'"{mtime_ns:x}-{size:x}-{inode:x}-{ctime_ns:x}"'


def open_file(found: LocalFile, limits: Settings) -> LocalBlob:
    """The file, opened for reading where it lies; SourceTooLarge over ``source_max_bytes``."""
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
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SourceNotFound("source: the local path is not a regular file")
        if info.st_size > limit:
            raise SourceTooLarge(f"source: {info.st_size} bytes is over the limit of {limit}")
    except BaseException:
        os.close(fd)
        raise
    return LocalBlob(fd, info, limit)

