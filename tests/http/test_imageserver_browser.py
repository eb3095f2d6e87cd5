"""A page of 30 signed image URLs in real headless Chromium: every image decodes at the size
asked, and a reload renders nothing again (304s or the browser's own cache)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from cdp import CHROMIUM, Browser, Page
from httpkit import start_gateway
from imagekit import Origin, image_workers, served, signed, write_keys

from clusterkit import Cluster, needs

pytestmark = [pytest.mark.slow, needs(CHROMIUM is not None, "chromium")]

# (options, expected size) for each source; 5 sources x 6 = 30 images
SOURCES = {"a.jpg": (640, 480), "b.jpg": (800, 600), "c.jpg": (480, 640),
           "d.jpg": (1024, 768), "alpha.png": (300, 200)}
SIZES = [("rs:fill:100:100", lambda w, h: (100, 100)),
         ("rs:fill:160:90", lambda w, h: (160, 90)),
         ("rs:force:77:55", lambda w, h: (77, 55)),
         ("w:100", lambda w, h: (100, round(h * 100 / w))),
         ("h:120", lambda w, h: (round(w * 120 / h), 120)),
         ("rs:fit:50:50/dpr:2", lambda w, h: (100, round(h * 100 / w)) if w >= h
          else (round(w * 100 / h), 100))]

ALL_LOADED = ("document.images.length === 30 && "
              "Array.from(document.images).every(i => i.complete)")
SIZES_JS = "JSON.stringify(Array.from(document.images).map(i => [i.naturalWidth, i.naturalHeight]))"


def write_page(origin: Origin, gateway_url: str) -> list[tuple[int, int]]:
    tags, expected = [], []
    for name, (width, height) in SOURCES.items():
        for options, size in SIZES:
            path = signed(options.split("/"), f"{origin.url}/{name}")
            tags.append(f'<img src="{gateway_url}{path}" alt="{name} {options}">')
            expected.append(size(width, height))
    (origin.root / "page.html").write_text(
        '<!doctype html><html><head><title>DIPS images</title><link rel="icon" href="data:,">'
        "</head><body>\n"
        + "\n".join(tags) + "\n</body></html>\n")
    return expected


async def load(page: Page, url: str | None) -> list[list[int]]:
    if url is None:
        await page.evaluate("window.beforeReload = true")
        await page.send("Page.reload", ignoreCache=False)
    else:
        await page.send("Page.navigate", url=url)
    await page.wait_for(f"!window.beforeReload && {ALL_LOADED}", 60, "30 images loaded")
    return [list(size) for size in json.loads(await page.evaluate(SIZES_JS))]


def test_a_page_of_30_signed_images_loads_and_reloads_without_rendering(
        cluster: Cluster, origin: Origin, tmp_path: Path) -> None:
    broker = cluster.broker()
    image_workers(cluster, [broker], 2, allow=origin.url)
    gateway = start_gateway(cluster, [broker.endpoint], *write_keys(tmp_path),
                            "--cache-control", "public, max-age=0, must-revalidate")
    expected = [list(size) for size in write_page(origin, gateway.url)]

    async def run() -> tuple[list[list[int]], int, list[list[int]], int, list[str], str]:
        browser = Browser(tmp_path)
        try:
            page = await browser.page()
            await page.send("Network.enable")
            first = await load(page, f"{origin.url}/page.html")
            rendered = served([broker])
            second = await load(page, None)
            problems = page.problems()
            await page.send("Page.navigate", url=f"{gateway.url}/")  # the dashboard
            shown = await page.wait_for("document.getElementById('images') && "
                                        "document.getElementById('images').textContent", 30,
                                        "the image server's numbers on the dashboard")
            await page.screenshot(tmp_path / "dashboard.png")
            return first, rendered, second, served([broker]), problems, shown
        finally:
            await browser.close()

    first, rendered, second, rendered_after, problems, shown = asyncio.run(run())
    assert first == expected
    assert rendered == 30  # one render per distinct image
    assert second == expected
    assert rendered_after == rendered  # the reload rendered nothing
    assert problems == []
    assert "30 renders" in shown and "misses" in shown, shown
    _, _, body = gateway.call("GET", "/metrics")
    revalidated = [line for line in body.decode().splitlines()
                   if line.startswith("dips_http_not_modified_total")]
    assert revalidated and float(revalidated[0].split()[1]) > 0  # 304s, not renders
