"""A small stand-in for the renderers' ``imgproxy`` and ``info`` services, for the door's
tests: ``python tests/http/imgworker.py --broker ... --service imgproxy|info``.

It honours the contract's request map (``source`` fetched through the renderers' guarded
sources, or ``image``; ``ops.resize`` fit/fill/force with ``dpr``; ``format``/``accept``/
``quality``) and answers the contract's result map, so that the door is tested end to end
whatever the state of the real renderer. ``DIPS_TEST_RENDER_DELAY`` (seconds) holds each
render, so that identical requests overlap.
"""

from __future__ import annotations

import io
import os
import sys
import time
from typing import Any

from PIL import Image

from mdp import handlers
from mdp.errors import BadRequest
from mdp.worker import prepare, serve
from renderers import settings, sources

FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "AVIF": "avif"}


def _size(ops: dict[str, Any], width: int, height: int) -> tuple[int, int]:
    resize = ops.get("resize") or {}
    dpr = float(ops.get("dpr", 1))
    want_w = int(round(int(resize.get("width", 0)) * dpr))
    want_h = int(round(int(resize.get("height", 0)) * dpr))
    kind = resize.get("type", "fit")
    if not want_w and not want_h:
        return width, height
    if kind in ("force", "fill") and want_w and want_h:
        return want_w, want_h
    scale = min(want_w / width if want_w else 1e9, want_h / height if want_h else 1e9)
    if not resize.get("enlarge"):
        scale = min(scale, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def render(request: dict[str, Any]) -> dict[str, Any]:
    delay = float(os.environ.get("DIPS_TEST_RENDER_DELAY", "0"))
    if delay:
        time.sleep(delay)
    with sources.from_request(request, settings.current()) as source:
        data = source.data
    image = Image.open(io.BytesIO(data))
    source_format = FORMATS.get(image.format or "", "jpeg")
    ops = request.get("ops") if isinstance(request.get("ops"), dict) else {}
    size = _size(ops, *image.size)
    if image.format == "JPEG":
        image.draft("RGB", size)
    image = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
    resize = ops.get("resize") or {}
    if resize.get("type") == "fill":
        scale = max(size[0] / image.width, size[1] / image.height)
        image = image.resize((max(size[0], round(image.width * scale)),
                              max(size[1], round(image.height * scale))))
        left, top = (image.width - size[0]) // 2, (image.height - size[1]) // 2
        image = image.crop((left, top, left + size[0], top + size[1]))
    else:
        image = image.resize(size)
    fmt = request.get("format") or ""
    if not fmt:
        accept = request.get("accept") or []
        fmt = next((f for f in ("avif", "webp") if f in accept), source_format)
    if fmt not in ("jpeg", "png", "webp", "gif", "avif"):
        raise BadRequest(f"format {fmt!r} is not supported", "format")
    if fmt == "jpeg":
        image = image.convert("RGB")
    out = io.BytesIO()
    quality = request.get("quality") or 80
    image.save(out, format=fmt.upper(), quality=quality)
    return {"image": out.getvalue(), "content_type": f"image/{fmt}", "width": image.width,
            "height": image.height, "source": source.describe()}


def info(request: dict[str, Any]) -> dict[str, Any]:
    with sources.from_request(request, settings.current()) as source:
        data = source.data
    image = Image.open(io.BytesIO(data))
    return {"width": image.width, "height": image.height,
            "format": FORMATS.get(image.format or "", "unknown"),
            "size": len(data)}


def main() -> int:
    settings.configure(settings.from_environment())
    config = prepare(sys.argv[1:])
    handle = render if config.service == "imgproxy" else info
    return serve(config, handlers.Handler(config.service, handle))


if __name__ == "__main__":
    raise SystemExit(main())
