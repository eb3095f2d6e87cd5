"""thumbor's URLs, translated into imgproxy's options (no I/O).

    /{unsafe|HMAC}/[trim/][AxB:CxD/][fit-in/][-]WxH/[halign/][valign/][smart/][filters:...]/IMAGE

(thumbor's own grammar: libthumbor's ``Url.regex``). The door serves them unchanged beside
imgproxy's, told apart by the first segment after the signature (:func:`is_thumbor`), and
turns each into the imgproxy options that give the same image (:func:`parse`), so the same
renderers, caches, negotiation and coalescing serve both. thumbor's own order (crop, resize,
flip, then filters such as rotate) differs from imgproxy's (rotate and flip first, then crop
and resize): sizes, crop areas and alignments are mapped through the flips and the rotation
so that the result is thumbor's. docs/HTTP.md ("thumbor URLs") lists what is supported.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from mdp.errors import BadRequest
from mdp_http import imgops
from mdp_http.imgurl import check_source

FIELD = "thumbor"
MAX_BLUR_RADIUS = 150  # thumbor's MAX_RADIUS

_THUMBOR = re.compile(
    r"(?:(?P<debug>debug)/)?(?:(?P<meta>meta)/)?"
    r"(?:(?P<trim>trim(?::(?:top-left|bottom-right))?(?::\d+)?)/)?"
    r"(?:(?P<crop_left>\d+)x(?P<crop_top>\d+):(?P<crop_right>\d+)x(?P<crop_bottom>\d+)/)?"
    r"(?:(?P<adaptive>adaptive-)?(?P<full>full-)?(?P<fit_in>fit-in)/)?"
    r"(?:(?P<hflip>-)?(?P<width>\d+|orig)?x(?P<vflip>-)?(?P<height>\d+|orig)?/)?"
    r"(?:(?P<halign>left|right|center)/)?(?:(?P<valign>top|bottom|middle)/)?"
    r"(?:(?P<smart>smart)/)?(?:filters:(?P<filters>.+?\))/)?(?P<image>.+)", re.DOTALL)
# a first segment that only thumbor's grammar has
_THUMBOR_FIRST = re.compile(
    r"debug|meta|trim(?::(?:top-left|bottom-right))?(?::\d+)?|\d+x\d+:\d+x\d+"
    r"|(?:adaptive-)?(?:full-)?fit-in|-?(?:\d+|orig)?x-?(?:\d+|orig)?"
    r"|left|right|center|top|bottom|middle|smart|filters:.*")
# an image named by itself: a scheme, or a host (a dotted name or name:port) and a path
_IMAGE_ALONE = re.compile(r"(?:https?(?::|%3A))|[\w-]+(?:\.[\w-]+)+(?::\d+)?/|[\w.-]+:\d+/",
                          re.IGNORECASE)
_BASE64_SOURCE = ("aHR0c", "bG9jYWw6")  # "http", "local:" in URL-safe base64: imgproxy's
IMGPROXY_NAMES = imgops.SUPPORTED | imgops.UNSUPPORTED


def is_thumbor(rest: str) -> bool:
    """Whether the path after the signature (raw) is thumbor's rather than imgproxy's.

    imgproxy's paths start with an option (``name:args``, a name imgproxy has), ``plain``,
    ``enc``, ``upload`` or a base64 source URL; thumbor's with one of its own keywords or
    sizes (``fit-in``, ``300x200``, ``10x10:90x90``, ``smart``, ``filters:...``) or with the
    image itself (``host.example.com/a.jpg``, ``http://...``, ``127.0.0.1:8000/a.jpg``).
    """
    first = rest.partition("/")[0]
    if _THUMBOR_FIRST.fullmatch(first):
        return True
    if "/plain/" in "/" + rest or first in ("plain", "enc") or first.startswith("upload"):
        return False
    name, colon, _ = first.replace("%3A", ":").partition(":")
    if colon and (name in IMGPROXY_NAMES or name.lower() == "local"):
        return False
    if any(part.startswith(_BASE64_SOURCE) for part in rest.split("/")):
        return False
    return _IMAGE_ALONE.match(rest) is not None


def signature_of(key: bytes, rest: str) -> str:
    """thumbor's signature of the path after it: URL-safe base64 of HMAC-SHA1, padded."""
    digest = hmac.new(key, rest.encode("utf-8"), hashlib.sha1).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def verify(key: bytes, signature: str, rest: str) -> bool:
    """Whether ``signature`` (as sent: thumbor unquotes it) is ``rest``'s."""
    given = urllib.parse.unquote(signature).encode("utf-8", "replace")
    return hmac.compare_digest(signature_of(key, rest).encode("ascii"), given)


# --- orientation: thumbor flips then rotates after the resize; imgproxy before it ---------

Edge = str  # "l", "t", "r", "b"
_FLIP_H = {"l": "r", "r": "l", "t": "t", "b": "b"}
_FLIP_V = {"l": "l", "r": "r", "t": "b", "b": "t"}
_CCW_90 = {"t": "l", "l": "b", "b": "r", "r": "t"}  # where each edge goes, turned left


@dataclass(frozen=True)
class Orientation:
    """thumbor's flips and counter-clockwise rotation, and what they mean for imgproxy."""

    flip_h: bool = False
    flip_v: bool = False
    ccw: int = 0  # 0, 90, 180, 270

    @property
    def turned(self) -> bool:
        return self.ccw in (90, 270)

    def edge(self, edge: Edge) -> Edge:
        """Where a source edge ends up in the result (flipped first, then turned)."""
        if self.flip_h:
            edge = _FLIP_H[edge]
        if self.flip_v:
            edge = _FLIP_V[edge]
        for _ in range(self.ccw // 90):
            edge = _CCW_90[edge]
        return edge

    def options(self) -> list[str]:
        """imgproxy rotates clockwise, then flips: the flips that, after the rotation, give
        thumbor's flips before it (their axes trade places when the image is turned)."""
        flip_h, flip_v = (self.flip_v, self.flip_h) if self.turned else (self.flip_h,
                                                                          self.flip_v)
        options = [f"rot:{(360 - self.ccw) % 360}"] if self.ccw else []
        if flip_h or flip_v:
            options.append(f"fl:{int(flip_h)}:{int(flip_v)}")
        return options

    def size(self, width: int, height: int) -> tuple[int, int]:
        return (height, width) if self.turned else (width, height)


def gravity(edges: dict[Edge, int]) -> str:
    """imgproxy's gravity (with offsets) for distances from result edges: ``{"l": 10}``."""
    vertical = "no" if "t" in edges else "so" if "b" in edges else ""
    horizontal = "we" if "l" in edges else "ea" if "r" in edges else ""
    kind = vertical + horizontal or "ce"
    x = edges.get("l", edges.get("r", 0))
    y = edges.get("t", edges.get("b", 0))
    return f"{kind}:{x}:{y}" if x or y else kind


# --- filters --------------------------------------------------------------------------

@dataclass
class Request:
    """What one thumbor URL asks for, read from its parts and filters."""

    width: int = 0
    height: int = 0
    fit_in: bool = False
    upscale: bool = False  # fit-in's upscale()
    no_upscale: bool = False
    stretch: bool = False
    fill: str | None = None  # a background colour (hex), "" for transparent
    background: str | None = None
    orientation: Orientation = Orientation()
    extra: list[str] = field(default_factory=list)  # quality, format, blur


CSS_COLORS = {  # the names thumbor's fill takes most often (CSS level 1, and orange)
    "black": "000000", "silver": "c0c0c0", "gray": "808080", "grey": "808080",
    "white": "ffffff", "maroon": "800000", "red": "ff0000", "purple": "800080",
    "fuchsia": "ff00ff", "green": "008000", "lime": "00ff00", "olive": "808000",
    "yellow": "ffff00", "navy": "000080", "blue": "0000ff", "teal": "008080",
    "aqua": "00ffff", "orange": "ffa500",
}
_HEX = re.compile(r"[0-9a-fA-F]{3}|[0-9a-fA-F]{6}")


def _bad(message: str) -> BadRequest:
    return BadRequest(f"thumbor URL: {message}", field=FIELD)


def _color(name: str, args: list[str]) -> str:
    if not args:
        raise _bad(f"filter {name}() takes a colour")
    color = args[0].strip().lower()
    if color == "transparent":
        return ""
    if color in CSS_COLORS:
        return CSS_COLORS[color]
    if _HEX.fullmatch(color):
        return color
    raise _bad(f"filter {name}({color[:20]}): the colour is a hex RGB, 'transparent' or one "
               f"of {', '.join(sorted(CSS_COLORS))} here ('auto' and 'blur' are not supported)")


def _number(name: str, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(f"filter {name}({text[:20]}): not a number") from None
    if not low <= value <= high:
        raise _bad(f"filter {name}({text[:20]}): outside {low:g}..{high:g}")
    return value


def _f_quality(req: Request, args: list[str]) -> None:
    req.extra.append(f"q:{int(_number('quality', args[0] if args else '', 0, 100))}")


def _f_format(req: Request, args: list[str]) -> None:
    fmt = args[0].strip().strip("'").lower() if args else ""
    req.extra.append(f"f:{imgops.output_format(fmt, FIELD)}")


def _f_fill(req: Request, args: list[str]) -> None:
    req.fill = _color("fill", args)


def _f_background_color(req: Request, args: list[str]) -> None:
    req.background = _color("background_color", args)


def _f_blur(req: Request, args: list[str]) -> None:
    radius = min(_number("blur", args[0] if args else "", 1, 1e6), MAX_BLUR_RADIUS)
    sigma = _number("blur", args[1], 0, 1e6) if len(args) > 1 else 0
    value = sigma or radius
    req.extra.append(f"bl:{int(value) if float(value).is_integer() else value}")


def _f_rotate(req: Request, args: list[str]) -> None:
    angle = int(_number("rotate", args[0] if args else "", -1e9, 1e9))
    if angle % 90 == 0:  # thumbor ignores any other angle
        o = req.orientation
        req.orientation = Orientation(o.flip_h, o.flip_v, (o.ccw + angle) % 360)


def _set(name: str) -> Callable[[Request, list[str]], None]:
    def apply(req: Request, args: list[str]) -> None:
        setattr(req, name, True)
    return apply


def _nothing(req: Request, args: list[str]) -> None:
    """strip_exif: DIPS writes no EXIF unless asked (imgproxy's strip_metadata)."""


FILTERS: dict[str, Callable[[Request, list[str]], None]] = {
    "quality": _f_quality, "format": _f_format, "fill": _f_fill, "blur": _f_blur,
    "rotate": _f_rotate, "background_color": _f_background_color,
    "no_upscale": _set("no_upscale"), "upscale": _set("upscale"), "stretch": _set("stretch"),
    "strip_exif": _nothing,
}
NOT_HERE = {  # thumbor filters DIPS's renderers cannot do, with why
    "grayscale": "the renderer has no grayscale", "strip_icc": "the renderer keeps ICC "
    "profiles", "max_age": "Cache-Control is the door's --cache-control",
}


def _apply_filters(text: str, req: Request) -> None:
    for part in text.split("):"):
        name, _, args = part.partition("(")
        args = args.removesuffix(")")
        handler = FILTERS.get(name)
        if handler is None:
            why = NOT_HERE.get(name, "docs/HTTP.md lists the supported filters")
            raise _bad(f"filter {name[:40]!r} is not supported by this server ({why})")
        handler(req, [a.strip() for a in args.split(",")] if args.strip() else [])


# --- the whole URL ----------------------------------------------------------------------

@dataclass(frozen=True)
class ThumborUrl:
    """A thumbor URL read as imgproxy options and a source."""

    options: tuple[str, ...]
    source: str


def parse(rest: str, *, respect_orientation: bool = False) -> ThumborUrl:
    """imgproxy options and the source of ``rest``, the raw path after the signature."""
    match = _THUMBOR.fullmatch(rest)
    if match is None:  # the image part takes anything but an empty path
        raise _bad("no image named")
    got = match.groupdict()
    for name in ("debug", "meta", "trim"):
        if got[name]:
            raise _bad(f"{name!r} is not supported by this server")
    if got["adaptive"] or got["full"]:
        raise _bad(f"{(got['adaptive'] or '') + (got['full'] or '')}fit-in is not supported "
                   "(fit-in is)")
    if "orig" in (got["width"], got["height"]):
        raise _bad("'orig' as a width or height is not supported")
    req = Request(width=int(got["width"] or 0), height=int(got["height"] or 0),
                  fit_in=bool(got["fit_in"]),
                  orientation=Orientation(got["hflip"] == "-", got["vflip"] == "-"))
    if got["filters"]:
        _apply_filters(urllib.parse.unquote(got["filters"]), req)
    options = req.orientation.options()
    options += _crop(got, req.orientation)
    options += _resize(req)
    options += _alignment(got, req.orientation)
    if not respect_orientation:
        options.append("ar:0")  # thumbor's RESPECT_ORIENTATION is off by default
    background = req.fill if req.fill else req.background
    if background:
        options.append(f"bg:{background}")
    options += req.extra
    return ThumborUrl(tuple(options), _source(got["image"]))


def _crop(got: dict[str, str | None], orientation: Orientation) -> list[str]:
    """``AxB:CxD`` (source pixels) as imgproxy's crop, placed from the edges the source's
    left and top edges become."""
    if got["crop_left"] is None:
        return []
    left, top, right, bottom = (int(got[k] or 0) for k in ("crop_left", "crop_top",
                                                            "crop_right", "crop_bottom"))
    if left >= right or top >= bottom:  # thumbor ignores such a crop
        return []
    width, height = orientation.size(right - left, bottom - top)
    edges = {orientation.edge("l"): left, orientation.edge("t"): top}
    return [f"c:{width}:{height}:{gravity(edges)}"]


def _resize(req: Request) -> list[str]:
    width, height = req.orientation.size(req.width, req.height)
    extend = req.fit_in and req.fill is not None
    if not width and not height:
        return []
    if req.fit_in:
        kind, enlarge = "fit", req.upscale and not req.no_upscale
    else:  # thumbor enlarges WxH beyond the source unless no_upscale()
        kind = "force" if req.stretch and width and height else "fill" if width and height \
            else "fit"
        enlarge = not req.no_upscale
    return [f"rs:{kind}:{width}:{height}:{int(enlarge)}:{int(extend)}"]


def _alignment(got: dict[str, str | None], orientation: Orientation) -> list[str]:
    if got["smart"]:
        return ["g:sm"]
    edges: dict[Edge, int] = {}
    if got["halign"] in ("left", "right"):
        edges[orientation.edge(got["halign"][0])] = 0
    if got["valign"] in ("top", "bottom"):
        edges[orientation.edge(got["valign"][0])] = 0
    place = gravity(edges)
    return [] if place == "ce" else [f"g:{place}"]


def _source(image: str | None) -> str:
    """thumbor's HTTP loader: the image unquoted, ``http://`` in front unless it has a
    scheme."""
    url = urllib.parse.unquote(image or "")
    if not url.lower().startswith(("http://", "https://")):
        url = "http://" + url
    return check_source(url)
