"""The code version a process reports: package version plus a hash of its source files.

The hash covers ``mdp`` and every package that provides services to workers (the
``dips.services`` entry points, ``renderers`` among them), so that every worker and broker
built from one tree reports one version, and a change to a handler's package changes it.

A worker also reports its *output version*: what its service's results depend on (see
:attr:`mdp.handlers.Handler.output`), so that caches of results (the HTTP door's image cache)
outlive an upgrade that changes nothing the service draws with.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from importlib import metadata
from pathlib import Path

PACKAGE_VERSION_FALLBACK = "0.1.0"
CORE_PACKAGE = "mdp"


def package_version() -> str:
    try:
        return metadata.version("dips")
    except metadata.PackageNotFoundError:
        return PACKAGE_VERSION_FALLBACK


def package_root(name: str) -> Path | None:
    """The directory of a top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def handler_packages() -> list[str]:
    """The top-level packages that provide services (see :mod:`mdp.handlers`)."""
    from mdp.handlers import provider_modules

    return sorted({module.partition(".")[0] for module in provider_modules()})


def source_hash(roots: dict[str, Path]) -> str:
    """A short hash of every .py file of each package (name -> directory)."""
    digest = hashlib.sha256()
    for name in sorted(roots):
        base = roots[name]
        for path in sorted(base.rglob("*.py")) if base.is_dir() else ():
            digest.update(f"{name}/{path.relative_to(base).as_posix()}".encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()[:8]


def package_hash(name: str) -> str | None:
    """A short hash of the .py files of one top-level package, None if it is not found."""
    root = package_root(name)
    return None if root is None else source_hash({name: root})


@functools.cache
def code_version(*extra_packages: str) -> str:
    """e.g. ``0.1.0+3fa9c2d1``: mdp, the service packages and ``extra_packages``."""
    roots = {CORE_PACKAGE: Path(__file__).resolve().parent}
    for name in (*handler_packages(), *extra_packages):
        root = package_root(name)
        if root is not None:
            roots[name] = root
    return f"{package_version()}+{source_hash(roots)}"
