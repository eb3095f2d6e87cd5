"""imgproxy's processing options, read into the canonical ``ops`` map of the imgproxy
contract (no I/O).

An option is ``name:arg1:arg2...`` (full or short name). Options apply in order, later ones
overriding earlier ones field by field, as in imgproxy; a preset (``pr:name``) applies its
own options where it stands, and the preset named ``default`` applies before the URL's.
The result is canonical: options left at their defaults are omitted, so that ``w:300`` and
``rs:fit:300:0:0:0`` give the same map (and so the same request key). Options DIPS does not
implement are refused with :class:`~mdp.errors.BadRequest` naming the option; docs/HTTP.md
lists both sets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mdp.errors import BadRequest

FIELD = "options"
MAX_SIDE = 65_535  # the worker bounds sizes by its own settings; this only keeps ints sane
MAX_DPR = 8.0
MAX_SIGMA = 1000.0
MAX_PRESET_DEPTH = 4

RESIZE_TYPES = ("fit", "fill", "fill-down", "force", "auto")
GRAVITIES = ("ce", "no", "so", "ea", "we", "noea", "nowe", "soea", "sowe")
WATERMARK_POSITIONS = (*GRAVITIES, "re")
FORMATS = {"jpg": "jpeg", "jpeg": "jpeg", "png": "png", "webp": "webp", "avif": "avif",
           "gif": "gif"}
_TRUE = ("1", "t", "true")
_FALSE = ("0", "f", "false")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_PRESET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# Options of imgproxy (open source and Pro) that DIPS does not implement: refused by name.
UNSUPPORTED = frozenset({
    "resizing_algorithm", "ra",
    "extend_aspect_ratio", "extend_ar", "exar", "objects_position", "obj_pos", "op",
    "crop_aspect_ratio", "crop_ar", "car", "trim", "t", "background_alpha", "bga",
    "adjust", "a", "brightness", "br", "contrast", "co", "saturation", "sa",
    "monochrome", "mc", "duotone", "dt", "unsharp_masking", "ush",
    "blur_detections", "bd", "draw_detections", "dd", "colorize", "col", "gradient", "gr",
    "watermark_url", "wmu", "watermark_text", "wmt", "watermark_size", "wms",
    "watermark_rotate", "wm_rot", "wmr", "watermark_shadow", "wmsh", "style", "st",
    "keep_copyright", "kcr", "dpi", "strip_color_profile", "scp", "enforce_thumbnail", "eth",
    "format_quality", "fq", "autoquality", "aq", "max_bytes", "mb", "jpeg_options", "jpgo",
    "png_options", "pngo", "webp_options", "webpo", "page", "pg", "pages", "pgs",
    "disable_animation", "da", "video_thumbnail_second", "vts", "video_thumbnail_keyframes",
    "vtk", "video_thumbnail_tile", "vtt", "video_thumbnail_animation", "vta",
    "fallback_image_url", "fiu", "skip_processing", "skp", "raw", "hashsum", "hs",
    "max_src_resolution", "msr", "max_src_file_size", "msfs", "max_animation_frames", "maf",
    "max_animation_frame_resolution", "mafr", "max_result_dimension", "mrd",
})


@dataclass
class Processing:
    """What a URL's options ask for: the worker's ``ops`` and the door's own settings."""

    ops: dict[str, Any] = field(default_factory=dict)
    format: str = ""  # "" leaves it open: the source's format, or one the client accepts
    quality: int | None = None
    cachebuster: str = ""  # in the request key only: a new value bypasses every cache
    expires: int | None = None  # unix time after which the URL answers 404
    filename: str | None = None
    attachment: bool = False
    _resize: dict[str, Any] = field(default_factory=dict)

    def finish(self) -> Processing:
        resize = {"type": "fit", "width": 0, "height": 0, "enlarge": False, "extend": False}
        resize.update(self._resize)
        if resize != {"type": "fit", "width": 0, "height": 0, "enlarge": False,
                      "extend": False}:
            self.ops["resize"] = resize
        self._resize = {}
        return self


# --- argument readers -------------------------------------------------------------------

def _bad(option: str, message: str) -> BadRequest:
    return BadRequest(f"processing option {option!r}: {message}", field=FIELD)


def _bool(option: str, arg: str) -> bool:
    low = arg.lower()
    if low in _TRUE:
        return True
    if low in _FALSE or low == "":
        return False
    raise _bad(option, f"{arg!r} is not a boolean (1/t/true or 0/f/false)")


def _int(option: str, arg: str, low: int = 0, high: int = MAX_SIDE) -> int:
    if not re.fullmatch(r"-?\d{1,9}", arg):
        raise _bad(option, f"{arg!r} is not an integer")
    value = int(arg)
    if not low <= value <= high:
        raise _bad(option, f"{value} is outside {low}..{high}")
    return value


def _float(option: str, arg: str, low: float = 0.0, high: float = MAX_SIDE) -> float:
    if not re.fullmatch(r"-?(?:\d{1,9}(?:\.\d{0,9})?|\.\d{1,9})", arg):
        raise _bad(option, f"{arg!r} is not a number")
    value = float(arg)
    if not (math.isfinite(value) and low <= value <= high):
        raise _bad(option, f"{arg} is outside {low:g}..{high:g}")
    return int(value) if value.is_integer() else value


def _count(option: str, args: Sequence[str], low: int, high: int) -> None:
    if not low <= len(args) <= high:
        expected = f"{low}" if low == high else f"{low} to {high}"
        raise _bad(option, f"takes {expected} arguments, got {len(args)}")


CENTRE = {"type": "ce"}


def _gravity(option: str, args: Sequence[str], allow_smart: bool = True) -> dict[str, Any]:
    """A gravity map; offsets are left out when 0 (the contract's canonical form)."""
    if not args or args[0] == "":
        return dict(CENTRE)
    kind, rest = args[0], args[1:]
    if kind == "sm":
        if not allow_smart:
            raise _bad(option, "smart gravity is not allowed here")
        _count(option, rest, 0, 0)
        return {"type": "sm"}
    if kind == "fp":
        _count(option, rest, 2, 2)
        return {"type": "fp", "x": _float(option, rest[0], 0, 1),
                "y": _float(option, rest[1], 0, 1)}
    if kind not in GRAVITIES:
        raise _bad(option, f"unknown gravity {kind!r} (one of {', '.join(GRAVITIES)}, sm, fp)")
    _count(option, rest, 0, 2)
    gravity: dict[str, Any] = {"type": kind}
    for name, arg in zip(("x", "y"), rest, strict=False):
        value = _float(option, arg, -MAX_SIDE, MAX_SIDE) if arg else 0
        if value:
            gravity[name] = value
    return gravity


# --- one handler per option -------------------------------------------------------------

def _resize_fields(option: str, proc: Processing, args: Sequence[str],
                   names: Sequence[str]) -> None:
    for name, arg in zip(names, args, strict=False):
        if arg == "":
            continue
        if name == "type":
            if arg not in RESIZE_TYPES:
                raise _bad(option, f"unknown resizing type {arg!r} "
                           f"(one of {', '.join(RESIZE_TYPES)})")
            proc._resize["type"] = arg
        elif name in ("width", "height"):
            proc._resize[name] = _int(option, arg)
        else:
            proc._resize[name] = _bool(option, arg)


def _extend_gravity(option: str, proc: Processing, args: Sequence[str]) -> None:
    if args and args[0]:
        proc._resize["extend_gravity"] = _gravity(option, args, allow_smart=False)


def _opt_resize(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 0, 8)
    _resize_fields(option, proc, args, ("type", "width", "height", "enlarge", "extend"))
    _extend_gravity(option, proc, args[5:])


def _opt_size(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 0, 7)
    _resize_fields(option, proc, args, ("width", "height", "enlarge", "extend"))
    _extend_gravity(option, proc, args[4:])


def _single(name: str) -> Callable[[str, Processing, Sequence[str]], None]:
    def handle(option: str, proc: Processing, args: Sequence[str]) -> None:
        _count(option, args, 1, 1)
        _resize_fields(option, proc, args, (name,))
    return handle


def _opt_extend(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 4)
    _resize_fields(option, proc, args[:1], ("extend",))
    _extend_gravity(option, proc, args[1:])


def _opt_dpr(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 1)
    value = _float(option, args[0], 0, MAX_DPR)
    if value <= 0:
        raise _bad(option, "must be greater than 0")
    _set(proc.ops, "dpr", value, 1)


def _set(ops: dict[str, Any], name: str, value: Any, default: Any) -> None:
    if value == default:
        ops.pop(name, None)
    else:
        ops[name] = value


def _opt_gravity(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 3)
    _set(proc.ops, "gravity", _gravity(option, args), CENTRE)


def _opt_crop(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 5)
    width = _float(option, args[0]) if args[0] else 0
    height = _float(option, args[1]) if len(args) > 1 and args[1] else 0
    crop: dict[str, Any] = {"width": width, "height": height}
    if len(args) > 2:
        crop["gravity"] = _gravity(option, args[2:])
    _set(proc.ops, "crop", crop, {"width": 0, "height": 0})


def _opt_padding(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 4)
    given = [(_int(option, a) if a else None) for a in args] + [None] * (4 - len(args))
    if all(v is None for v in given):
        raise _bad(option, "set at least one side")
    top, right, bottom, left = given
    sides = [top or 0] * 4
    if right is not None:
        sides[1] = sides[3] = right
    if bottom is not None:
        sides[2] = bottom
    if left is not None:
        sides[3] = left
    _set(proc.ops, "padding", sides, [0, 0, 0, 0])


def _opt_background(option: str, proc: Processing, args: Sequence[str]) -> None:
    if not args or args == [""]:
        proc.ops.pop("background", None)
        return
    if len(args) == 1:
        color = args[0]
        if not _HEX.match(color):
            raise _bad(option, f"{color!r} is not a hex color (rgb or rrggbb)")
        if len(color) == 3:
            color = "".join(c * 2 for c in color)
        proc.ops["background"] = [int(color[i:i + 2], 16) for i in (0, 2, 4)]
        return
    _count(option, args, 3, 3)
    proc.ops["background"] = [_int(option, a, 0, 255) for a in args]


def _sigma(name: str) -> Callable[[str, Processing, Sequence[str]], None]:
    def handle(option: str, proc: Processing, args: Sequence[str]) -> None:
        _count(option, args, 1, 1)
        _set(proc.ops, name, _float(option, args[0], 0, MAX_SIGMA), 0)
    return handle


def _opt_rotate(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 1)
    angle = _int(option, args[0], -36000, 36000)
    if angle % 90:
        raise _bad(option, f"{angle} is not a multiple of 90")
    _set(proc.ops, "rotate", angle % 360, 0)


def _opt_flip(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 2)
    flip = [_bool(option, args[0]), _bool(option, args[1]) if len(args) > 1 else False]
    _set(proc.ops, "flip", flip, [False, False])


def _flag(name: str) -> Callable[[str, Processing, Sequence[str]], None]:
    def handle(option: str, proc: Processing, args: Sequence[str]) -> None:
        _count(option, args, 1, 1)
        proc.ops[name] = _bool(option, args[0])
    return handle


def _opt_watermark(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 5)
    opacity = _float(option, args[0], 0, 1) if args[0] else 0
    position = args[1] if len(args) > 1 and args[1] else "ce"
    if position not in WATERMARK_POSITIONS:
        raise _bad(option, f"unknown position {position!r} "
                   f"(one of {', '.join(WATERMARK_POSITIONS)})")
    watermark: dict[str, Any] = {"opacity": opacity, "position": position}
    for name, arg, low, high in (("x", _arg(args, 2), -MAX_SIDE, MAX_SIDE),
                                 ("y", _arg(args, 3), -MAX_SIDE, MAX_SIDE),
                                 ("scale", _arg(args, 4), 0, 1)):
        value = _float(option, arg, low, high) if arg else 0
        if value:  # left out when 0, as the contract's canonical form has it
            watermark[name] = value
    if opacity == 0:
        proc.ops.pop("watermark", None)
    else:
        proc.ops["watermark"] = watermark


def _arg(args: Sequence[str], index: int) -> str:
    return args[index] if len(args) > index else ""


def _opt_zoom(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 2)
    factors = [_float(option, a, 0, MAX_DPR * 8) for a in args]
    if any(f <= 0 for f in factors):
        raise _bad(option, "must be greater than 0")
    _set(proc.ops, "zoom", factors * 2 if len(factors) == 1 else factors, [1, 1])


def _opt_min(name: str) -> Callable[[str, Processing, Sequence[str]], None]:
    def handle(option: str, proc: Processing, args: Sequence[str]) -> None:
        _count(option, args, 1, 1)
        _set(proc.ops, name, _int(option, args[0]), 0)
    return handle


def _opt_pixelate(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 1)
    _set(proc.ops, "pixelate", _int(option, args[0], 0, 10_000), 0)


def _opt_quality(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 1)
    quality = _int(option, args[0], 0, 100)
    proc.quality = quality or None


def _opt_format(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 1)
    proc.format = output_format(args[0], FIELD)


def _opt_cachebuster(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 1)
    proc.cachebuster = args[0][:256]


def _opt_expires(option: str, proc: Processing, args: Sequence[str]) -> None:
    """A unix time in seconds (any real one has 10 digits); 0 or less: no expiry, as in
    imgproxy (its applyExpiresOption)."""
    _count(option, args, 1, 1)
    if not re.fullmatch(r"-?\d{1,18}", args[0]):
        raise _bad(option, f"{args[0][:40]!r} is not a unix time in seconds")
    seconds = int(args[0])
    proc.expires = seconds if seconds > 0 else None


def _opt_filename(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 2)
    name = args[0]
    if len(args) > 1 and _bool(option, args[1]):
        from mdp_http.imgurl import b64url_decode  # here: imgurl imports this module

        name = b64url_decode(name, FIELD).decode("utf-8", "replace")
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"\\/')[:200]
    proc.filename = name or None


def _opt_attachment(option: str, proc: Processing, args: Sequence[str]) -> None:
    _count(option, args, 1, 1)
    proc.attachment = _bool(option, args[0])


Handler = Callable[[str, Processing, Sequence[str]], None]
_HANDLERS: dict[str, Handler] = {}


def _register(handler: Handler, *names: str) -> None:
    for name in names:
        _HANDLERS[name] = handler


_register(_opt_resize, "resize", "rs")
_register(_opt_size, "size", "s")
_register(_single("type"), "resizing_type", "rt")
_register(_single("width"), "width", "w")
_register(_single("height"), "height", "h")
_register(_single("enlarge"), "enlarge", "el")
_register(_opt_extend, "extend", "ex")
_register(_opt_dpr, "dpr")
_register(_opt_gravity, "gravity", "g")
_register(_opt_crop, "crop", "c")
_register(_opt_padding, "padding", "pd")
_register(_opt_background, "background", "bg")
_register(_sigma("blur"), "blur", "bl")
_register(_sigma("sharpen"), "sharpen", "sh")
_register(_opt_rotate, "rotate", "rot")
_register(_opt_flip, "flip", "fl")
_register(_flag("strip_metadata"), "strip_metadata", "sm")
_register(_flag("auto_rotate"), "auto_rotate", "ar")
_register(_opt_watermark, "watermark", "wm")
_register(_opt_zoom, "zoom", "z")
_register(_opt_min("min_width"), "min-width", "mw")
_register(_opt_min("min_height"), "min-height", "mh")
_register(_opt_pixelate, "pixelate", "pix")
_register(_opt_quality, "quality", "q")
_register(_opt_format, "format", "f", "ext")
_register(_opt_cachebuster, "cachebuster", "cb")
_register(_opt_expires, "expires", "exp")
_register(_opt_filename, "filename", "fn")
_register(_opt_attachment, "return_attachment", "att")
PRESET_NAMES = ("preset", "pr")
SUPPORTED = frozenset(_HANDLERS) | frozenset(PRESET_NAMES)


def output_format(extension: str, where: str = "extension") -> str:
    """The canonical output format of an extension (``jpg`` -> ``jpeg``)."""
    fmt = FORMATS.get(extension.lower())
    if fmt is None:
        raise BadRequest(f"output format {extension!r} is not supported here "
                         f"(one of {', '.join(sorted(FORMATS))})", field=where)
    return fmt


# --- presets and the whole list -----------------------------------------------------------

@dataclass(frozen=True)
class Presets:
    """Named option lists (``name=opt1/opt2``); ``default`` applies to every request."""

    table: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    only: bool = False  # presets-only mode: a URL names presets, never options

    @classmethod
    def parse(cls, definitions: Sequence[str], only: bool = False) -> Presets:
        """From ``name=options`` strings; ValueError naming a malformed one."""
        table: dict[str, tuple[str, ...]] = {}
        for definition in definitions:
            name, sep, options = definition.partition("=")
            name = name.strip()
            if not sep or not _PRESET_NAME.match(name) or not options.strip("/ "):
                raise ValueError(f"preset {definition!r} is not NAME=option:args/option:args")
            table[name] = tuple(part for part in options.strip().split("/") if part)
        presets = cls(table, only)
        for name in table:  # every option in every preset must parse
            parse_options([f"pr:{name}"], cls(table, False))
        return presets


def _apply(parts: Sequence[str], proc: Processing, presets: Presets, depth: int) -> None:
    for part in parts:
        name, _, rest = part.partition(":")
        args = rest.split(":") if rest else []
        if name in PRESET_NAMES:
            _apply_presets(name, args, proc, presets, depth)
        elif name in _HANDLERS:
            _HANDLERS[name](name, proc, args)
        elif name in UNSUPPORTED:
            raise BadRequest(f"processing option {name!r} is not supported by this server "
                             "(docs/HTTP.md lists the supported options)", field=FIELD)
        else:
            raise BadRequest(f"unknown processing option {name[:40]!r}", field=FIELD)


def _apply_presets(option: str, names: Sequence[str], proc: Processing, presets: Presets,
                   depth: int) -> None:
    if depth >= MAX_PRESET_DEPTH:
        raise _bad(option, f"presets nest deeper than {MAX_PRESET_DEPTH} levels")
    if not names:
        raise _bad(option, "name at least one preset")
    for name in names:
        options = presets.table.get(name)
        if options is None:
            raise BadRequest(f"unknown preset {name[:64]!r}", field=FIELD)
        _apply(options, proc, presets, depth + 1)


def parse_options(parts: Sequence[str], presets: Presets = Presets()) -> Processing:
    """The processing a URL's option segments ask for (``default`` preset first)."""
    proc = Processing()
    if "default" in presets.table:
        _apply(presets.table["default"], proc, presets, 1)
    if presets.only:
        for part in parts:
            _apply_presets("preset", [n for n in part.split(":") if n], proc, presets, 0)
    else:
        _apply(parts, proc, presets, 0)
    return proc.finish()
