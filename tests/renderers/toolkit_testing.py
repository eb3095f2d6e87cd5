"""Helpers of the toolkit's tests: call a service, decode a reply, compare colours."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

import renderers
from renderers import samples

ORIENTATION = 0x0112


def call(service: str, **request: Any) -> bytes:
    return renderers.get(service).render(request)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png(image: Image.Image, **options: Any) -> bytes:
    return samples.encode(image, "PNG", **options)


def close(colour: Any, expected: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))
