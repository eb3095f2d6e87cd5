"""The sources the imgproxy fixture cases render from, made in memory."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from PIL import Image

from renderers import samples

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "imgproxy_cases.json"


@functools.cache
def fixture() -> dict[str, Any]:
    return json.loads(FIXTURES.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def alpha_png(width: int, height: int) -> bytes:
    image = samples.photo(width, height).convert("RGBA")
    alpha = Image.linear_gradient("L").resize((width, height))
    image.putalpha(alpha)
    return samples.encode(image, "PNG", compress_level=1)


def animated_gif(width: int, height: int, frames: int) -> bytes:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    images = []
    for index in range(frames):
        frame = Image.new("RGB", (width, height), colours[index % len(colours)])
        frame.paste((255, 255, 255), (index * 10, 10, index * 10 + 20, 30))
        images.append(frame)
    return samples.encode(
        images[0], "GIF", save_all=True, append_images=images[1:], duration=80, loop=0
    )


@functools.cache
def source(name: str) -> bytes:
    spec = fixture()["sources"][name]
    if name == "photo.jpg":
        return samples.photo_jpeg(spec["width"], spec["height"])
    if name == "alpha.png":
        return alpha_png(spec["width"], spec["height"])
    if name == "anim.gif":
        return animated_gif(spec["width"], spec["height"], spec["frames"])
    raise KeyError(name)
