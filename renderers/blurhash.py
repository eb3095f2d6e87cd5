"""BlurHash: a few dozen characters that a page draws as a blurred placeholder.

Written from the public description of the format (woltapp/blurhash): the image's colours
in linear light are projected onto ``x`` by ``y`` cosine components; the average colour
(DC) is stored as sRGB in 4 base-83 digits, the others (AC) quantised against their largest
magnitude in 2 digits each, after one digit for the component counts and one for that
magnitude. The projection is separable (rows first), and it runs on a thumbnail of at most
``SAMPLE`` px a side, so a hash costs about a millisecond or two.
"""

from __future__ import annotations

import math

from PIL import Image

from renderers.decode import pixels

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"
SAMPLE = 32
_LINEAR = [
    (v / 255) / 12.92 if v / 255 <= 0.04045 else ((v / 255 + 0.055) / 1.055) ** 2.4
    for v in range(256)
]


def base83(value: int, length: int) -> str:
    return "".join(ALPHABET[(value // 83 ** (length - i)) % 83] for i in range(1, length + 1))


def to_srgb(value: float) -> int:
    v = max(0.0, min(1.0, value))
    if v <= 0.0031308:
        return int(v * 12.92 * 255 + 0.5)
    return int((1.055 * v ** (1 / 2.4) - 0.055) * 255 + 0.5)


def _sign_pow(value: float, exp: float) -> float:
    return math.copysign(abs(value) ** exp, value)


def components(image: Image.Image, x: int, y: int) -> list[tuple[float, float, float]]:
    """The ``x`` by ``y`` cosine factors of an RGB image, in linear light (row-major j, i)."""
    width, height = image.size
    values = pixels(image)
    cos_x = [[math.cos(math.pi * i * px / width) for px in range(width)] for i in range(x)]
    cos_y = [[math.cos(math.pi * j * py / height) for py in range(height)] for j in range(y)]
    rows: list[list[tuple[float, float, float]]] = []  # rows[py][i]
    for py in range(height):
        line = values[py * width : (py + 1) * width]
        linear = [(_LINEAR[r], _LINEAR[g], _LINEAR[b]) for r, g, b in line]
        sums = []
        for i in range(x):
            weights = cos_x[i]
            sums.append(
                (
                    sum(w * p[0] for w, p in zip(weights, linear, strict=True)),
                    sum(w * p[1] for w, p in zip(weights, linear, strict=True)),
                    sum(w * p[2] for w, p in zip(weights, linear, strict=True)),
                )
            )
        rows.append(sums)
    factors = []
    for j in range(y):
        for i in range(x):
            scale = (1 if i == 0 and j == 0 else 2) / (width * height)
            r = g = b = 0.0
            for py in range(height):
                weight = cos_y[j][py]
                cell = rows[py][i]
                r += weight * cell[0]
                g += weight * cell[1]
                b += weight * cell[2]
            factors.append((r * scale, g * scale, b * scale))
    return factors


def encode(image: Image.Image, x: int = 4, y: int = 3) -> str:
    """The BlurHash of ``image`` with ``x`` by ``y`` components (1-9 each)."""
    if not (1 <= x <= 9 and 1 <= y <= 9):
        raise ValueError("BlurHash components must be 1-9")
    small = image.convert("RGB")
    if max(small.size) > SAMPLE:
        small = small.copy()
        small.thumbnail((SAMPLE, SAMPLE), Image.Resampling.BOX)
    factors = components(small, x, y)
    dc, ac = factors[0], factors[1:]
    text = base83((x - 1) + (y - 1) * 9, 1)
    if ac:
        largest = max(abs(value) for factor in ac for value in factor)
        quantised = max(0, min(82, math.floor(largest * 166 - 0.5)))
        maximum = (quantised + 1) / 166
        text += base83(quantised, 1)
    else:
        maximum = 1.0
        text += base83(0, 1)
    text += base83((to_srgb(dc[0]) << 16) + (to_srgb(dc[1]) << 8) + to_srgb(dc[2]), 4)
    for factor in ac:
        q = [max(0, min(18, math.floor(_sign_pow(v / maximum, 0.5) * 9 + 9.5))) for v in factor]
        text += base83(q[0] * 19 * 19 + q[1] * 19 + q[2], 2)
    return text
