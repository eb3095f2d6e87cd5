"""Write a few inputs to try the services on: photos, a logo, cards.

usage: mdpctl samples [DIR] [--force]

Writes into DIR (default: the current directory), and never over an existing file
unless --force:

  photo.jpg     a 1600x1200 photograph-like JPEG
  photo.png     an 800x600 PNG with transparency
  logo.png      a 200x80 PNG mark for watermark (--set mark=@logo.png)
  photos/       six small JPEGs, one in photos/more/, and a notes.txt that batch skips
  card.json     the seed's ecard request (mdpctl call ecard --json @card.json -o card.png)
  cards.jsonl   twenty ecard requests, one a line (mdpctl batch ecard --jsonl cards.jsonl)

The documents' examples use these names.  Needs Pillow (pip install 'dips[renderers]').

examples:
  mdpctl samples
  mdpctl samples /tmp/try
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

from mdpctl.context import Context
from mdpctl.errors import UsageError

CARDS = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", nargs="?", default=".", metavar="DIR",
                        help="where to write them (default: the current directory)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite files that exist (default: keep them)")


def _files() -> dict[str, Callable[[], bytes]]:
    try:
        from PIL import Image, ImageDraw

        from renderers import samples
    except ImportError as exc:
        raise UsageError(f"mdpctl samples needs Pillow and renderers: {exc} (pip install "
                         "'dips[renderers]')") from exc

    def png_with_alpha() -> bytes:
        image = samples.photo(800, 600).convert("RGBA")
        mask = Image.new("L", image.size, 0)
        ImageDraw.Draw(mask).ellipse((40, 30, 760, 570), fill=255)
        image.putalpha(mask)
        return samples.encode(image, "PNG")

    def logo() -> bytes:
        image = Image.new("RGBA", (200, 80), (0, 0, 0, 0))
        draw = ImageDraw.Draw(image)
        draw.rounded_rectangle((2, 2, 197, 77), radius=16, fill=(20, 60, 160, 200))
        draw.text((62, 30), "DIPS", fill=(255, 255, 255, 255))
        return samples.encode(image, "PNG")

    def card(n: int) -> dict[str, object]:
        return {"pSN": f"{1000000000 + n}", "pData": [(n * 7 + i * 13) % 100 for i in range(80)]}

    files: dict[str, Callable[[], bytes]] = {
        "photo.jpg": lambda: samples.photo_jpeg(1600, 1200, quality=85),
        "photo.png": png_with_alpha,
        "logo.png": logo,
        "photos/notes.txt": lambda: b"batch skips files that are not images by their name\n",
        "card.json": lambda: (json.dumps(samples.seed_request()) + "\n").encode(),
        "cards.jsonl": lambda: "".join(json.dumps(card(n)) + "\n"
                                       for n in range(CARDS)).encode(),
    }
    sizes = [(640, 480), (480, 640), (800, 450), (300, 300), (1024, 768), (500, 375)]
    for n, size in enumerate(sizes, 1):
        name = f"photos/p{n}.jpg" if n < len(sizes) else f"photos/more/p{n}.jpg"
        files[name] = partial(samples.photo_jpeg, *size, quality=80)
    return files


def run(args: argparse.Namespace, ctx: Context) -> int:
    root = Path(args.dir)
    written, kept = [], []
    for name, make in _files().items():
        path = root / name
        if path.exists() and not args.force:
            kept.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make())
        written.append(name)
    where = "" if args.dir == "." else f" in {root}"
    if written:
        ctx.say(f"wrote {len(written)} file(s){where}: {', '.join(written)}")
    if kept:
        ctx.say(f"kept {len(kept)} that exist (--force overwrites): {', '.join(kept)}")
    return 0
