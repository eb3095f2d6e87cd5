"""What the renderers' results depend on, as one short hash: the output version.

A worker announces it in READY (``mdp.handlers``), and the HTTP door keys its image cache by
it, so that an upgrade that leaves the drawing alone (the core, a door, ``mdpctl``) keeps
every cached image, while anything that can change a result's bytes renders anew. It covers,
for the services asked about (a worker's one service):

* the code that draws them: the modules of this package each service's module imports,
  followed from import to import (read from the files, so a new import is followed at
  once), with the packages they sit in (their ``__init__`` runs on import), and the data
  files those modules read (the fonts); the source fetching (:mod:`renderers.sources`)
  counts too, since what it asks an origin for (its ``Accept`` header) can change which
  bytes arrive; not the modules that make example images (:mod:`renderers.samples`), and
  not the other services' code: a change to the card (``ecard``) keeps every cached
  ``imgproxy`` image;
* Pillow and the codec and text libraries it was built with;
* the settings that draw: the card's title (``ecard``), the text font, the watermark, the
  animation limits (a longer animation is cut, not refused), the formats a request's
  ``accept`` may choose (``auto_webp``, ``auto_avif``) and whether a damaged source is drawn
  as far as it decodes (``render_damaged``: turned off, no such result stays cached).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

import PIL
from PIL import features

from renderers import registry, settings

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT.name
# the libraries whose versions change encoded or drawn bytes
LIBRARIES = ("jpg", "webp", "avif", "zlib", "libtiff", "freetype2", "raqm", "harfbuzz",
             "fribidi", "littlecms2", "libimagequant")
# modules that draw nothing: what they change is not a result's bytes
NOT_DRAWING = (f"{PACKAGE}.samples",)
# imports that draw nothing: the settings read the fetching's origin rules only to check a
# setting's shape, so a service that never fetches does not take the fetching's code
NOT_FOLLOWED = frozenset({(f"{PACKAGE}.settings", f"{PACKAGE}.sources.origins")})
# the data files of the package, by the module that reads them (every file that is not
# Python must be named here; tests/renderers/test_outputs.py checks it)
DATA = {f"{PACKAGE}.fonts": ("fonts",)}
NOT_DATA = ("py.typed",)
TITLED = "ecard"  # the service that draws the card's title


def output_version(services: Iterable[str]) -> str:
    """A 16-hex-digit hash of what the results of ``services`` depend on, as configured now."""
    wanted = frozenset(services)
    current = settings.current()
    modules = frozenset(type(registry.get(name)).__module__ for name in wanted)
    digest = hashlib.sha256(_code_hash(modules).encode())
    digest.update(f"\0Pillow {PIL.__version__}".encode())
    for name in LIBRARIES:
        if features.check(name):
            digest.update(f"\0{name} {features.version(name)}".encode())
    title = current.ecard_title if TITLED in wanted else ""
    digest.update(f"\0title {title}\0mark {current.watermark_text}\0frames "
                  f"{current.max_animation_frames} {current.max_animation_pixels}\0auto "
                  f"{current.auto_webp} {current.auto_avif}\0damaged "
                  f"{current.render_damaged}".encode())
    for path in (current.text_font, current.watermark_image):
        digest.update(b"\0")
        if path is not None:
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def _code_hash(modules: frozenset[str]) -> str:
    """The files of ``modules`` and of every module of the package they import, by path and
    content, with the data files they read."""
    digest = hashlib.sha256()
    for path in sorted(files_of(modules)):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def files_of(modules: Iterable[str]) -> set[Path]:
    """The source files of ``modules`` and of the package's modules they import, directly
    or not (less :data:`NOT_DRAWING`), and the data files those read (:data:`DATA`)."""
    seen: set[str] = set()
    pending = [m for m in modules if _path(m) is not None]
    while pending:
        module = pending.pop()
        if module in seen or _not_drawing(module):
            continue
        seen.add(module)
        pending.extend(m for m in _imports(module) if (module, m) not in NOT_FOLLOWED)
        parent = module.rpartition(".")[0]
        if parent.count("."):  # a subpackage's __init__ runs when its modules are imported
            pending.append(parent)
    found = {path for module in seen if (path := _path(module)) is not None}
    for module in seen:
        for folder in DATA.get(module, ()):
            found.update(p for p in (ROOT / folder).rglob("*") if p.is_file())
    return found


def _not_drawing(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in NOT_DRAWING)


def _path(module: str) -> Path | None:
    """The file of a module of this package (its ``__init__.py`` for a subpackage; not the
    package's own ``__init__``, which only gathers the services)."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) == 1:
        return None
    base = ROOT.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@functools.cache
def _imports(module: str) -> tuple[str, ...]:
    """The package's modules that ``module`` imports anywhere in its file (a function's
    imports too): ``import renderers.x``, ``from renderers.x import y`` (``y`` when it is
    a module itself, else ``renderers.x``), relative imports alike."""
    path = _path(module)
    if path is None:
        return ()
    tree = ast.parse(path.read_bytes(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.append(child if _path(child) is not None else base)
    return tuple(name for name in found if name.split(".")[0] == PACKAGE)
