"""Fixtures shared by the image-server tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from imagekit import Origin, make_photos


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    """A loopback origin server serving a folder of photos, counting its requests."""
    make_photos(tmp_path / "photos")
    server = Origin(tmp_path / "photos").start()
    try:
        yield server
    finally:
        server.stop()
