"""Fixtures of the renderer tests: settings that are restored, images made on demand.

Not a conftest.py: the core's tests import helpers with ``from conftest import ...``, and a
second conftest module here would stand in for theirs. Each test module star-imports the
fixtures (pytest's default "prepend" import mode puts this directory on sys.path), before it
imports ``renderers``, so that the fix below comes first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

# With pytest's default "prepend" import mode and no __init__.py in tests/, the directory
# tests/ lands on sys.path and this directory, tests/renderers, then passes for a namespace
# package "renderers" that hides the real one whenever the project root is not on sys.path
# (a bare `pytest`, as opposed to `python -m pytest`). Put the root first and forget any
# namespace stand-in imported before this file.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
if getattr(sys.modules.get("renderers"), "__file__", "") is None:
    for _name in [name for name in sys.modules if name.split(".")[0] == "renderers"]:
        del sys.modules[_name]

import renderers  # noqa: E402
from renderers import samples  # noqa: E402

__all__ = ["big_jpeg_path", "configure", "photo_jpeg", "quadrants"]


@pytest.fixture
def configure() -> Iterator[Callable[..., None]]:
    """``configure(**settings)`` for one test; the previous settings come back afterwards."""
    saved = renderers.current()

    def apply(**changes: Any) -> None:
        renderers.configure(**changes)

    yield apply
    renderers.configure(saved)


@pytest.fixture(scope="session")
def photo_jpeg() -> bytes:
    """A 600 x 400 photo-like JPEG."""
    return samples.photo_jpeg(600, 400)


@pytest.fixture(scope="session")
def quadrants() -> Image.Image:
    """600 x 400, four flat colours: red top-left, green top-right, blue bottom-left, white."""
    image = Image.new("RGB", (600, 400), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 300, 200))
    image.paste((0, 255, 0), (300, 0, 600, 200))
    image.paste((0, 0, 255), (0, 200, 300, 400))
    return image


@pytest.fixture(scope="session")
def big_jpeg_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6000 x 4000 photo-like JPEG (about 10 MB), made once per test session."""
    path = tmp_path_factory.mktemp("big") / "6000x4000.jpg"
    path.write_bytes(samples.photo_jpeg(6000, 4000))
    return path
