"""Per-deployment settings of the renderers: resource limits and card defaults.

The settings are read from the environment when :mod:`renderers` is imported and can be
replaced at any time with :func:`configure`::

    DIPS_MAX_INPUT_BYTES   largest image byte string accepted          (default 33554432, 32 MiB)
    DIPS_MAX_PIXELS        largest width x height decoded or produced  (default 50000000)
    DIPS_MAX_SIDE          largest width or height decoded or produced (default 65535; a
                           result's format may hold less: WebP 16383, see renderers.encode)
    DIPS_MAX_RESULT_DIMENSION  largest width or height of an ``imgproxy`` result; a request
                           for more is refused before any pixel is made (default 4096;
                           0: no limit but the two above)
    DIPS_RENDER_DAMAGED    render a truncated or damaged image as far as it decodes, with
                           a warning in the reply (default 1); 0 refuses it (bad request)
    DIPS_MAX_FRAMES        most frames an animated input may have      (default 1000)
    DIPS_MAX_JPEG_SCANS    most scans a (progressive) JPEG may have    (default 256)
    DIPS_ECARD_TITLE       the card title when a request gives none    (default 金山密码保护卡)
    DIPS_TEXT_FONT         a font file for watermark text; default: the bundled subset

Sources fetched by the worker (``imgproxy``, ``info``; see :mod:`renderers.sources`)::

    DIPS_SOURCES_ALLOW         origins a source URL may come from, comma-separated
                               (``https://img.example.com``, ``https://*.example.com``)
    DIPS_SOURCES_INTERNAL      origins that may also resolve to loopback, private or
                               shared addresses (allowed too; never link-local; default none)
    DIPS_SOURCES_ROOTS         directories ``local:///path`` is looked up in, in order
    DIPS_SOURCE_MAX_BYTES      largest source fetched                   (default 33554432)
    DIPS_SOURCE_TIMEOUT        seconds for a whole fetch, redirects included (default 5)
    DIPS_SOURCE_MAX_REDIRECTS  redirects followed                       (default 5)
    DIPS_SOURCE_CACHE_BYTES    per-process cache of fetched sources     (default 67108864)
    DIPS_SOURCE_CACHE_TTL      seconds a cached source is used before it is revalidated
                               with the origin's ETag / Last-Modified   (default 60)

Output formats of ``imgproxy`` when a request leaves the format open::

    DIPS_AUTO_WEBP             WebP for clients that accept it          (default 1)
    DIPS_AUTO_AVIF             AVIF for clients that accept it (default 1 when Pillow can
                               encode AVIF)
    DIPS_MAX_ANIMATION_FRAMES  most frames an animated result keeps     (default 100)
    DIPS_MAX_ANIMATION_PIXELS  most pixels x frames of one animation, decoded (source size)
                               or held (result size) (default 50000000); past either bound
                               the first frames that fit are kept
    DIPS_WATERMARK_IMAGE       the image ``imgproxy``'s ``watermark`` lays (a file)
    DIPS_WATERMARK_TEXT        or a text drawn with the watermark font

Pillow's own decompression-bomb threshold (``Image.MAX_IMAGE_PIXELS``) is set to
``max_pixels`` as a second line of defence, and its ``DecompressionBombWarning`` is turned into
an error for the whole process, so Pillow never decodes more than the limit even where the
renderers' own header checks do not reach.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from PIL import Image, features

from mdp.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_TITLE = "金山密码保护卡"
AVIF_ENCODER = bool(features.check("avif"))
DEFAULT_MAX_RESULT_DIMENSION = 4096
_POSITIVE_INTS = (
    "max_input_bytes",
    "max_pixels",
    "max_side",
    "max_frames",
    "max_jpeg_scans",
    "source_max_bytes",
    "source_cache_bytes",
    "max_animation_frames",
    "max_animation_pixels",
)


@dataclass(frozen=True)
class Settings:
    """Limits and defaults for one deployment; checked on construction."""

    max_input_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_side: int = 65_535  # JPEG's and GIF's own; sources are bounded by max_pixels
    # imgproxy's results: a larger side is refused from the source's header (docs/HTTP.md)
    max_result_dimension: int = DEFAULT_MAX_RESULT_DIMENSION
    max_frames: int = 1000
    max_jpeg_scans: int = 256
    render_damaged: bool = True  # thumbor's (Pillow's LOAD_TRUNCATED_IMAGES), libvips'
    ecard_title: str = DEFAULT_TITLE
    text_font: str | None = None
    sources_allow: tuple[str, ...] = ()
    sources_internal: tuple[str, ...] = ()
    sources_roots: tuple[str, ...] = ()
    source_max_bytes: int = 32 * 1024 * 1024
    source_timeout: float = 5.0  # imgproxy's; below the doors' 10 s, so a caller learns why
    source_max_redirects: int = 5
    source_cache_bytes: int = 64 * 1024 * 1024
    source_cache_ttl: float = 60.0
    auto_webp: bool = True
    auto_avif: bool = AVIF_ENCODER
    max_animation_frames: int = 100
    max_animation_pixels: int = 50_000_000
    watermark_image: str | None = None
    watermark_text: str | None = None

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        self._check_sources()
        if not isinstance(self.max_result_dimension, int) or not (
                0 <= self.max_result_dimension <= 65_535):
            raise ConfigError("max_result_dimension must be 0 (no limit) to 65535, got "
                              f"{self.max_result_dimension!r}")
        if self.max_side > 65_535:
            raise ConfigError(f"max_side must be at most 65535, got {self.max_side}")
        if not isinstance(self.ecard_title, str) or not self.ecard_title.strip():
            raise ConfigError(f"ecard_title must be a non-empty string, got {self.ecard_title!r}")
        for name in ("text_font", "watermark_image"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{name} {path!r} is not a file")
        if self.auto_avif and not AVIF_ENCODER:
            raise ConfigError("auto_avif: this Pillow cannot encode AVIF")

    def _check_sources(self) -> None:
        from renderers.sources import origins  # here: sources import these settings

        if not 0 < self.source_timeout <= 600:
            raise ConfigError(f"source_timeout must be 0-600 s, got {self.source_timeout!r}")
        if not 0 <= self.source_cache_ttl <= 86_400:
            raise ConfigError(f"source_cache_ttl must be 0-86400 s, got {self.source_cache_ttl}")
        if not 0 <= self.source_max_redirects <= 20:
            raise ConfigError(f"source_max_redirects must be 0-20, got {self.source_max_redirects}")
        for name in ("sources_allow", "sources_internal"):
            for entry in getattr(self, name):
                origins.parse_pattern(entry, name)
        for root in self.sources_roots:
            if not Path(root).is_absolute() or not Path(root).is_dir():
                raise ConfigError(f"sources_roots: {root!r} is not an absolute directory")


_ENVIRONMENT = {
    "DIPS_MAX_INPUT_BYTES": "max_input_bytes",
    "DIPS_MAX_PIXELS": "max_pixels",
    "DIPS_MAX_SIDE": "max_side",
    "DIPS_MAX_RESULT_DIMENSION": "max_result_dimension",
    "DIPS_MAX_FRAMES": "max_frames",
    "DIPS_MAX_JPEG_SCANS": "max_jpeg_scans",
    "DIPS_RENDER_DAMAGED": "render_damaged",
    "DIPS_ECARD_TITLE": "ecard_title",
    "DIPS_TEXT_FONT": "text_font",
    "DIPS_SOURCES_ALLOW": "sources_allow",
    "DIPS_SOURCES_INTERNAL": "sources_internal",
    "DIPS_SOURCES_ROOTS": "sources_roots",
    "DIPS_SOURCE_MAX_BYTES": "source_max_bytes",
    "DIPS_SOURCE_TIMEOUT": "source_timeout",
    "DIPS_SOURCE_MAX_REDIRECTS": "source_max_redirects",
    "DIPS_SOURCE_CACHE_BYTES": "source_cache_bytes",
    "DIPS_SOURCE_CACHE_TTL": "source_cache_ttl",
    "DIPS_AUTO_WEBP": "auto_webp",
    "DIPS_AUTO_AVIF": "auto_avif",
    "DIPS_MAX_ANIMATION_FRAMES": "max_animation_frames",
    "DIPS_MAX_ANIMATION_PIXELS": "max_animation_pixels",
    "DIPS_WATERMARK_IMAGE": "watermark_image",
    "DIPS_WATERMARK_TEXT": "watermark_text",
}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings with every ``DIPS_*`` variable of ``environ`` (default ``os.environ``) applied."""
    environ = os.environ if environ is None else environ
    defaults = Settings()
    values: dict[str, Any] = {}
    for variable, name in _ENVIRONMENT.items():
        raw = environ.get(variable)
        if raw is None or raw == "":
            continue
        values[name] = _parse(variable, raw, getattr(defaults, name))
    return Settings(**values)


def _parse(variable: str, raw: str, default: Any) -> Any:
    """A variable's text as the type of its setting's default."""
    if isinstance(default, bool):
        if raw.strip().lower() in _TRUE + _FALSE:
            return raw.strip().lower() in _TRUE
        raise ConfigError(f"{variable}={raw!r} is not a boolean (1/0, true/false)")
    if isinstance(default, int):
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{variable}={raw!r} is not an integer") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{variable}={raw!r} is not a number") from None
    if isinstance(default, tuple):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


_current = Settings()


def current() -> Settings:
    """The settings in force."""
    return _current


def configure(settings: Settings | None = None, **changes: Any) -> Settings:
    """Put new settings in force: ``settings`` (default: the current ones) with ``changes``.

    Returns the previous settings, so a test can restore them. Raises
    :class:`~mdp.errors.ConfigError` for an unknown name or a bad value.
    """
    global _current
    known = {field.name for field in fields(Settings)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ConfigError(f"unknown renderer settings: {', '.join(unknown)}")
    previous = _current
    new = replace(settings if settings is not None else _current, **changes)
    _check_title(new.ecard_title)
    if new.watermark_text is not None and new.text_font is None:
        _check_glyphs("watermark_text", new.watermark_text)
    _current = new
    Image.MAX_IMAGE_PIXELS = new.max_pixels
    log.debug("renderer settings: %s", new)
    return previous


def _check_title(title: str) -> None:
    _check_glyphs("ecard_title", title)


def _check_glyphs(name: str, text: str) -> None:
    from renderers import fonts  # here, not at the top: fonts imports nothing of ours

    missing = fonts.missing_characters(text)
    if missing:
        raise ConfigError(f"{name}: the bundled font has no glyph for {missing!r}")


def install_bomb_guard() -> None:
    """Turn Pillow's ``DecompressionBombWarning`` into an exception for this process."""
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
