"""The code version a worker reports: package version plus a hash of the source files."""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata
from pathlib import Path

PACKAGE_VERSION_FALLBACK = "0.1.0"
_SOURCE_PACKAGES = ("mdp", "renderers")


def package_version() -> str:
    try:
        return metadata.version("dips")
    except metadata.PackageNotFoundError:
        return PACKAGE_VERSION_FALLBACK


def source_hash(root: Path) -> str:
    """A short hash of every .py file of mdp/ and renderers/ under ``root``."""
    digest = hashlib.sha256()
    for package in _SOURCE_PACKAGES:
        base = root / package
        for path in sorted(base.rglob("*.py")) if base.is_dir() else ():
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:8]


@functools.cache
def code_version() -> str:
    """e.g. ``0.1.0+3fa9c2d1`` for the tree this module was imported from."""
    root = Path(__file__).resolve().parent.parent
    return f"{package_version()}+{source_hash(root)}"
