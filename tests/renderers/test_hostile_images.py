"""Hostile uploads: each gets a clear bad request, quickly, and memory stays bounded."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageFile
from renderer_testing import *  # noqa: F403  (the fixtures; first: see there)

import renderers
from mdp.errors import BadRequest
from renderers import containers, samples, settings

HOSTILE = samples.hostile_inputs()
# Refused from their first bytes or headers: not one pixel of these may be decoded (the
# others are damaged files that only their decoding shows to be damaged).
BEFORE_DECODING = {
    "jpeg header claiming 64250x64250",
    "jpeg header claiming 16000x16000",
    "png 13000x13000",
    "gif with 5000 frames",
    "gif frame larger than its canvas",
    "progressive jpeg with 300 scans",
    "postscript",
    "tiff",
    "bmp",
    "svg",
    "one byte",
}


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if Pillow is asked to decode pixels (``ImageFile.load``)."""

    def refuse(self: Any) -> None:
        pytest.fail(f"decoded the pixels of a {self.format} image that its header refuses")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("service", ["thumbnail", "convert", "image"])
def test_each_hostile_image_is_refused(name: str, service: str) -> None:
    request: dict[str, Any] = {"image": HOSTILE[name], "format": "png"}
    request.update({"thumbnail": {"width": 64}, "image": {"ops": []}}.get(service, {}))
    with pytest.raises(BadRequest) as caught:
        renderers.get(service).render(request)
    assert caught.value.field == "image"
    assert caught.value.message.startswith("image: ")


@pytest.mark.parametrize("name", sorted(BEFORE_DECODING))
def test_a_header_bomb_is_refused_before_any_pixel_is_decoded(
    name: str, no_decoding: None
) -> None:
    with pytest.raises(BadRequest) as caught:
        renderers.get("thumbnail").render({"image": HOSTILE[name], "width": 64})
    assert caught.value.field == "image"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_watermark_mark_is_refused_too(name: str, photo_jpeg: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        renderers.get("image").render(
            {"image": photo_jpeg, "ops": [{"op": "watermark", "mark": HOSTILE[name]}]}
        )
    assert caught.value.field == "ops[0].mark"


def test_an_enormous_byte_string_is_refused_before_anything_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    huge = b"\xff\xd8\xff" + bytes(renderers.current().max_input_bytes)
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("opened an oversized input"))
    with pytest.raises(BadRequest, match="over the limit"):
        renderers.get("thumbnail").render({"image": huge, "width": 10})


@pytest.mark.parametrize("tiled", [False, True])
def test_a_mark_that_turning_would_make_too_large_is_refused(
    configure: Any, photo_jpeg: bytes, tiled: bool
) -> None:
    # 3,000 x ~70 px of text is within the limit; turned 45 degrees with expand, its box is
    # ~2,200 px square, 4.8 MP (at the default limits a long text at font_size 2048 turned
    # this way is ~13,000 px square: 176 MP, 0.7 GB, past every limit).
    configure(max_pixels=400_000, max_side=4000)
    request = {"image": photo_jpeg, "text": "W" * 50, "font_size": 64, "angle": 45}
    with pytest.raises(BadRequest) as caught:
        renderers.get("watermark").render({**request, "tiled": tiled})
    assert caught.value.field == "angle" and "limit" in caught.value.message
    renderers.get("watermark").render({**request, "angle": 0})  # the mark itself is fine


def test_limits_are_configurable(configure: Any, photo_jpeg: bytes) -> None:
    configure(max_input_bytes=1000)
    with pytest.raises(BadRequest, match="limit of 1000"):
        renderers.get("convert").render({"image": photo_jpeg, "format": "png"})
    configure(max_input_bytes=10**8, max_pixels=100 * 100)
    with pytest.raises(BadRequest, match=r"0\.2 MP; the limit is 65535 px per side and 0\.01 MP"):
        renderers.get("convert").render({"image": photo_jpeg, "format": "png"})
    configure(max_pixels=10**7, max_side=500)
    with pytest.raises(BadRequest, match="500 px per side"):
        renderers.get("convert").render({"image": photo_jpeg, "format": "png"})


def test_frame_limit(configure: Any) -> None:
    configure(max_frames=3)
    renderers.get("convert").render({"image": samples.gif_frames(3), "format": "png"})
    with pytest.raises(BadRequest, match="more than 3 frames"):
        renderers.get("convert").render({"image": samples.gif_frames(4), "format": "png"})
    frames = [Image.new("RGB", (8, 8), (i * 60, 0, 0)) for i in range(4)]
    apng = samples.encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(BadRequest, match="4 frames"):
        renderers.get("convert").render({"image": apng, "format": "png"})


def test_the_png_pillow_only_warns_about_is_refused_by_our_own_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With Pillow's stock threshold (89.5 MP) and no warning filter, 169 MP only warns."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(BadRequest, match=r"13000x13000 \(169.0 MP\); the limit is"):
            renderers.get("convert").render({"image": samples.png_bomb(), "format": "png"})


def test_pillows_bomb_warning_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import renderers`` installs the filter (pytest resets filters around each test)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    with warnings.catch_warnings():
        settings.install_bomb_guard()
        with pytest.raises(Image.DecompressionBombWarning):
            Image.open(io.BytesIO(samples.png_bomb()))
        with pytest.raises(BadRequest, match="169.0 MP; the limit is"):
            renderers.get("convert").render({"image": samples.png_bomb(), "format": "png"})


def test_gif_frame_count_stops_early() -> None:
    assert not containers.gif_frames_exceed(samples.gif_frames(3), 3)
    assert containers.gif_frames_exceed(samples.gif_frames(4), 3)
    many = samples.gif_frames(20_000)
    assert containers.gif_frames_exceed(many, 10)
    assert containers.gif_frame_count(many, 10) == 11  # it stopped one past the limit
    assert not containers.gif_frames_exceed(many[:100], 10)  # cut short: counts what is there


MEMORY_PROBE = """
import json, sys, time, warnings
from PIL import Image
import renderers
from mdp.errors import BadRequest
from renderers import samples
assert ("error", None, Image.DecompressionBombWarning) == warnings.filters[0][:3]

def status_mb(key):  # VmRSS: now; VmHWM: the peak since the last reset
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")

hostile = samples.hostile_inputs()
renderers.get("ecard").render(samples.seed_request())
renderers.get("thumbnail").render({"image": samples.photo_jpeg(64, 48), "width": 16})
photo = open(sys.argv[1], "rb").read()
result = {"input_mb": len(photo) / 2**20}
reset_peak()
result["baseline"] = status_mb("VmRSS")
for name, data in hostile.items():
    try:
        renderers.get("thumbnail").render({"image": data, "width": 256})
    except BadRequest:
        pass
    else:
        raise SystemExit(name + " was accepted")
result["hostile"] = status_mb("VmHWM")
reset_peak()
started = time.perf_counter()
renderers.get("thumbnail").render({"image": photo, "width": 256, "height": 256})
result["thumbnail_ms"] = (time.perf_counter() - started) * 1000
result["thumbnail"] = status_mb("VmHWM")
print(json.dumps(result))
"""

# Peak resident memory above the process's own (Python, Pillow, renderers, the input bytes:
# about 30 MB), in MB. Decoding the 6000x4000 photo in full would take 69 MB on its own.
HOSTILE_BOUND_MB = 8
THUMBNAIL_BOUND_MB = 16


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_memory_stays_bounded(big_jpeg_path: Path) -> None:
    """In a fresh process: every hostile file, then a 24-megapixel JPEG thumbnail."""
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(big_jpeg_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    peaks = json.loads(result.stdout)
    print(peaks)
    assert peaks["hostile"] - peaks["baseline"] < HOSTILE_BOUND_MB, peaks
    assert peaks["thumbnail"] - peaks["baseline"] < THUMBNAIL_BOUND_MB, peaks
