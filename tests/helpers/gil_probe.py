"""How long a handler holds the GIL at a stretch: the evidence a ``yields_gil`` declaration
(``mdp.handlers.YIELDS_GIL``) needs.

A probe thread sleeps 1 ms in a loop and records how late it wakes; while the handler runs
in the calling thread, the probe's worst lateness is the longest time it could not get the
GIL back, which is the longest time a plain worker link's sentinel (a Python thread too)
could not answer the broker's ZMTP PINGs. Plain Python code gives the GIL up every
``sys.getswitchinterval()`` (5 ms), so that is the floor of any Python handler.

``python tests/helpers/gil_probe.py`` runs every renderer service on the heaviest inputs the
renderers' limits (``renderers.settings``) allow and prints each case's time and worst hold,
then the worst per service (``--only SERVICE`` for one service; ``--quick`` for small inputs,
to try the cases out).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

TICK_S = 0.001
ECARD_TITLES = 10  # each drawn at both scales, then used again

log = logging.getLogger("gil_probe")


class Probe:
    """A thread that sleeps ``TICK_S`` in a loop and keeps its worst lateness."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gil-probe", daemon=True)

    def _run(self) -> None:
        perf, sleep = time.perf_counter, time.sleep
        self._started.set()
        while not self._stop.is_set():
            start = perf()
            sleep(TICK_S)
            late = perf() - start - TICK_S
            if late > self.worst:
                self.worst = late

    def __enter__(self) -> Probe:
        self._thread.start()
        self._started.wait(5)
        time.sleep(0.01)  # a few ticks before the handler starts
        self.worst = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def worst_hold(call: Callable[[Any], Any], request: Any) -> tuple[float, float]:
    """Run ``call(request)`` under a probe: (seconds it took, longest GIL hold seen)."""
    with Probe() as probe:
        start = time.perf_counter()
        call(request)
        took = time.perf_counter() - start
    return took, probe.worst


# --- the renderers' heaviest inputs --------------------------------------------------------


def _photo(size: tuple[int, int]) -> Any:
    """A photo-like RGB image: gradients and a little noise (so codecs have work to do, and
    the encoded file stays under the input limit)."""
    from PIL import Image

    w, h = size
    small = Image.effect_noise((max(1, w // 8), max(1, h // 8)), 64).convert("RGB")
    noise = small.resize(size, Image.Resampling.BILINEAR)
    gx = Image.linear_gradient("L").resize(size)
    gy = Image.linear_gradient("L").rotate(90).resize(size)
    return Image.merge("RGB", (gx, gy, noise.getchannel(0)))


def _encoded(image: Any, fmt: str, **params: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _gif(size: tuple[int, int], frames: int) -> bytes:
    base = _photo(size).quantize(64)
    images = [base.rotate(5 * i) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=40, loop=0)
    return out.getvalue()


def cases(quick: bool) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """(service, what, request) from light to the limits' heaviest."""
    from renderers import current, samples

    limits = current()
    side = limits.max_side
    if quick:
        big, wide = (800, 600), (1600, 300)
    else:  # max_pixels in a 4:3 photo, and the longest side the limits allow
        big = (8000, 6000) if 8000 * 6000 <= limits.max_pixels else (800, 600)
        wide = (side, min(side, limits.max_pixels // side))
    photo = _photo(big)
    jpeg = _encoded(photo, "JPEG", quality=90)
    png = _encoded(photo, "PNG", compress_level=9)  # (under max_input_bytes)
    webp_wide = _encoded(_photo(wide), "WEBP", quality=80)
    gif = _gif((600, 400) if quick else (1600, 1200), 10 if quick else 30)
    log.info("inputs: JPEG %dx%d %.1f MB, PNG %.1f MB, WebP %dx%d %.1f MB, GIF %.1f MB",
             *big, len(jpeg) / 1e6, len(png) / 1e6, *wide, len(webp_wide) / 1e6,
             len(gif) / 1e6)
    w, h = big
    for scale in (1, 2):  # a new title draws a new template; then the cached one is used
        for i in range(ECARD_TITLES):
            title = f"密码保护卡 {i:04d} ©"
            yield "ecard", f"scale {scale}, new title", samples.seed_request(
                scale=scale, title=title, pSN=f"{i:024d}")
            yield "ecard", f"scale {scale}, cached title", samples.seed_request(
                scale=scale, title=title, pData=list(range(80)))
    yield "thumbnail", "JPEG -> 256 px JPEG", {"image": jpeg, "width": 256}
    yield "thumbnail", "JPEG -> full size - 1 PNG", {"image": jpeg, "width": w - 1,
                                                     "format": "png"}
    yield "thumbnail", "PNG -> fill WebP", {"image": png, "width": w // 2, "height": h // 2,
                                            "mode": "fill", "format": "webp"}
    yield "thumbnail", "wide WebP -> JPEG", {"image": webp_wide, "width": wide[0] - 1,
                                             "format": "jpeg"}
    yield "convert", "JPEG -> PNG", {"image": jpeg, "format": "png"}
    yield "convert", "JPEG -> WebP", {"image": jpeg, "format": "webp", "quality": 100}
    yield "convert", "PNG -> JPEG", {"image": png, "format": "jpeg", "quality": 100}
    yield "convert", "GIF -> PNG", {"image": gif, "format": "png"}
    yield "crop", "PNG -> JPEG", {"image": png, "width": w - 10, "height": h - 10, "x": 5,
                                  "y": 5, "format": "jpeg"}
    yield "watermark", "text 2048 px, outline, angle", {
        "image": jpeg, "text": "DIPS ©", "font_size": 2048, "outline": 64,
        "angle": 33, "opacity": 0.7}
    yield "watermark", "text tiled", {"image": jpeg, "text": "© DIPS", "tiled": True,
                                      "margin": 0, "font_size": 10}
    yield "watermark", "mark tiled, scaled", {"image": jpeg, "mark": png, "mark_width": 200,
                                              "tiled": True, "margin": 0, "angle": 10}
    yield "watermark", "200 chars at 72 px", {"image": jpeg, "text": "DIPS " * 40,
                                              "font_size": 72, "outline": 8}
    yield "image", "16 ops", {"image": jpeg, "format": "webp", "ops": [
        {"op": "thumbnail", "width": w - 1 - i} if i % 2 == 0 else
        {"op": "watermark", "text": "DIPS", "font_size": 512} for i in range(16)]}
    for fmt in ("jpeg", "png", "webp", "avif", "gif"):
        yield "imgproxy", f"JPEG -> {fmt} 2000 px", {
            "image": jpeg, "format": fmt,
            "ops": {"resize": {"type": "fit", "width": 2000, "height": 2000,
                               "enlarge": False, "extend": False}}}
    yield "imgproxy", "JPEG -> full-size webp", {"image": jpeg, "format": "webp"}
    yield "imgproxy", "JPEG -> full-size png", {"image": jpeg, "format": "png"}
    yield "imgproxy", "JPEG -> full-size gif", {"image": jpeg, "format": "gif"}
    yield "imgproxy", "JPEG -> full-size avif", {"image": jpeg, "format": "avif"}
    yield "imgproxy", "blur 100, sharpen 20", {"image": jpeg, "format": "jpeg",
                                               "ops": {"blur": 100.0, "sharpen": 20.0}}
    yield "imgproxy", "pixelate, rotate, flip", {"image": jpeg, "format": "jpeg",
                                                 "ops": {"pixelate": 64, "rotate": 90,
                                                         "flip": [True, True]}}
    yield "imgproxy", "smart gravity fill", {"image": jpeg, "format": "jpeg", "ops": {
        "resize": {"type": "fill", "width": 1000, "height": 3000, "enlarge": False,
                   "extend": False}, "gravity": {"type": "sm"}}}
    yield "imgproxy", "padding, background", {"image": png, "format": "jpeg", "ops": {
        "padding": [100, 100, 100, 100], "background": [10, 20, 30]}}
    yield "imgproxy", "watermark tiled", {"image": jpeg, "format": "jpeg", "ops": {
        "watermark": {"opacity": 0.5, "position": "re", "x": 0.0, "y": 0.0, "scale": 0.1}}}
    yield "imgproxy", "GIF -> gif", {"image": gif, "format": "gif"}
    yield "imgproxy", "GIF -> webp", {"image": gif, "format": "webp"}
    yield "info", "JPEG, blurhash 9x9", {"image": jpeg, "blurhash": [9, 9]}
    yield "info", "PNG", {"image": png}
    yield "info", "wide WebP", {"image": webp_wide}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", metavar="SERVICE")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(message)s")
    os.environ.setdefault("DIPS_WATERMARK_TEXT", "© DIPS")  # for imgproxy's watermark
    import renderers

    print(f"switch interval {sys.getswitchinterval() * 1000:g} ms; tick {TICK_S * 1000:g} ms")
    worst: dict[str, tuple[float, str]] = {}
    for service, what, request in cases(args.quick):
        if args.only and service not in args.only:
            continue
        handler = renderers.services()[service]
        try:
            took, held = worst_hold(handler, dict(request))
            outcome = "ok"
        except Exception as exc:  # a case the limits refuse is reported, not fatal
            took, held, outcome = 0.0, 0.0, f"{type(exc).__name__}: {exc}"[:100]
        print(f"{service:10} {what:34} {took * 1000:9.1f} ms  worst hold "
              f"{held * 1000:7.1f} ms  {outcome}", flush=True)
        if held >= worst.get(service, (-1.0, ""))[0]:
            worst[service] = (held, what)
    print("worst hold per service:")
    for service, (held, what) in sorted(worst.items()):
        print(f"  {service:10} {held * 1000:7.1f} ms  ({what})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
