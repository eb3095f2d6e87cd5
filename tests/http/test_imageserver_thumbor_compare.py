"""The door against the real thumbor, on loopback: the same signed thumbor URL, the same
source, from both; the images must have the same size and format, and the same picture
(flips, turns and crops in the same places). thumbor is not a Debian package: this test runs
with the thumbor found on PATH or named by ``DIPS_TEST_THUMBOR=/path/to/bin/thumbor``; else,
under CI, it installs thumbor (PyPI only, no Debian package) into a virtual environment of its
own under ``~/.cache/dips-test`` (a failed install fails the test), and elsewhere it is skipped.
The translation itself is tested without thumbor (test_imageserver_thumbor.py)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from httpkit import start_gateway
from imagekit import Origin, image_workers
from PIL import Image, ImageChops, ImageStat

from clusterkit import UNDER_CI, Cluster
from mdp_http import thumborurl
from testkit import free_port, wait_for

THUMBOR_VERSION = "7.8.0"  # the bench's (scripts/benchlib/imageserver_thumbor.py)
VENV = Path.home() / ".cache" / "dips-test" / f"thumbor-{THUMBOR_VERSION}"
KEY = "a key both servers share"

pytestmark = pytest.mark.slow


def _thumbor_executable() -> str:
    """thumbor's executable: given, on PATH, in the venv made before, or (under CI) made now."""
    given = os.environ.get("DIPS_TEST_THUMBOR") or shutil.which("thumbor")
    if given:
        return given
    made = VENV / "bin" / "thumbor"
    if made.exists():
        return str(made)
    if not UNDER_CI:
        pytest.skip("no thumbor here (PyPI only: DIPS_TEST_THUMBOR names one; under CI "
                    "the test installs it)")
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q",
                    f"thumbor=={THUMBOR_VERSION}"], check=True, timeout=900)
    return str(made)

# thumbor's path before the image; every one must give thumbor's size, format and picture
CASES = [
    "", "300x200/", "500x500/", "300x0/", "0x100/", "301x0/", "0x97/", "333x111/",
    "fit-in/300x200/", "fit-in/800x800/", "fit-in/800x800/filters:upscale()/",
    "fit-in/300x300/filters:fill(red)/", "500x500/filters:no_upscale()/",
    "-300x200/", "300x-200/", "-0x-0/", "10x10:200x150/", "10x10:200x150/100x0/",
    "200x100/left/top/", "200x100/right/bottom/", "100x200/right/",
    "filters:rotate(90)/", "filters:rotate(270)/", "300x200/filters:rotate(90)/",
    "-300x200/filters:rotate(90)/", "10x20:210x170/filters:rotate(90)/",
    "10x20:210x170/-0x0/", "50x40:350x240/150x150/left/filters:rotate(270)/",
    "filters:format(webp)/", "filters:format(png)/", "filters:quality(30)/",
    "filters:blur(3)/", "300x200/filters:stretch()/", "100x100/smart/",
]
SMART = "smart/"  # thumbor without detectors centres; the door's smart crop looks: size only


def quadrants(size: tuple[int, int]) -> Image.Image:
    """A photo whose every flip and turn looks different: four coloured quarters and a
    black mark near the top-left corner."""
    width, height = size
    image = Image.new("RGB", size, (255, 255, 255))
    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (240, 240, 240)]
    for index, colour in enumerate(colours):
        x, y = index % 2, index // 2
        image.paste(colour, (x * width // 2, y * height // 2, (x + 1) * width // 2,
                             (y + 1) * height // 2))
    image.paste((0, 0, 0), (width // 10, height // 10, width // 4, height // 4))
    return image


@pytest.fixture
def thumbor(tmp_path: Path, origin: Origin) -> Iterator[str]:
    """A thumbor on a loopback port that fetches from ``origin`` and checks signatures."""
    executable = _thumbor_executable()
    port = free_port()
    conf = tmp_path / "thumbor.conf"
    conf.write_text(f"SECURITY_KEY = {KEY!r}\nALLOW_UNSAFE_URL = False\n"
                    "LOADER = 'thumbor.loaders.http_loader'\n"
                    "STORAGE = 'thumbor.storages.no_storage'\nRESULT_STORAGE = None\n")
    log = (tmp_path / "thumbor.log").open("ab")
    proc = subprocess.Popen([executable, "-p", str(port), "-i", "127.0.0.1", "-c", str(conf),
                             "-l", "warning"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is None and _answers(url + "/healthcheck"), 30,
                 "thumbor to answer its health check")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def fetch(base: str, path: str) -> tuple[int, Image.Image | None, bytes]:
    try:
        with urllib.request.urlopen(base + path, timeout=30) as response:
            body = response.read()
            return response.status, Image.open(io.BytesIO(body)), body
    except urllib.error.HTTPError as exc:
        return exc.code, None, exc.read()


def difference(one: Image.Image, other: Image.Image) -> float:
    """Mean difference of the two pictures at 16x16, 0-255 (JPEG and resampling differ by
    a few levels; a flip or a turn the wrong way by a hundred)."""
    small = [im.convert("RGB").resize((16, 16), Image.Resampling.BOX) for im in (one, other)]
    return sum(ImageStat.Stat(ImageChops.difference(*small)).mean) / 3


def test_the_door_gives_what_thumbor_gives_for_the_same_signed_url(
        cluster: Cluster, origin: Origin, thumbor: str) -> None:
    quadrants((400, 300)).save(origin.root / "q.jpg", quality=92)
    broker = cluster.broker()
    image_workers(cluster, [broker], 1, allow=origin.url)
    (origin.root.parent / "thumbor.key").write_text(KEY)
    os.environ["DIPS_HTTP_THUMBOR_KEY"] = str(origin.root.parent / "thumbor.key")
    try:
        door = start_gateway(cluster, [broker.endpoint], "--timeout", "30")
    finally:
        os.environ.pop("DIPS_HTTP_THUMBOR_KEY")
    image = origin.url.removeprefix("http://") + "/q.jpg"
    wrong = []
    for case in CASES:
        rest = f"{case}{image}"
        path = f"/{thumborurl.signature_of(KEY.encode(), rest)}/{rest}"
        (t_status, theirs, t_body), (d_status, ours, d_body) = (fetch(thumbor, path),
                                                                fetch(door.url, path))
        if t_status != 200 or d_status != 200 or theirs is None or ours is None:
            wrong.append((case, t_status, t_body[:100], d_status, d_body[:100]))
            continue
        if (ours.size, ours.format) != (theirs.size, theirs.format):
            wrong.append((case, "thumbor", theirs.size, theirs.format, "door", ours.size,
                          ours.format))
        elif SMART not in case and difference(ours, theirs) > 12:
            wrong.append((case, "pictures differ by", round(difference(ours, theirs), 1)))
    assert wrong == []
