"""Per-deployment settings of the renderers: resource limits and card defaults.

The settings are read from the environment when :mod:`renderers` is imported and can be
replaced at any time with :func:`configure`::

    DIPS_MAX_INPUT_BYTES   largest image byte string accepted          (default 33554432, 32 MiB)
    DIPS_MAX_PIXELS        largest width x height decoded or produced  (default 50000000)
    DIPS_MAX_SIDE          largest width or height decoded or produced (default 16383)
    DIPS_MAX_FRAMES        most frames an animated input may have      (default 1000)
    DIPS_MAX_JPEG_SCANS    most scans a (progressive) JPEG may have    (default 256)
    DIPS_ECARD_TITLE       the card title when a request gives none    (default 金山密码保护卡)
    DIPS_TEXT_FONT         a font file for watermark text; default: the bundled subset

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

from PIL import Image

from mdp.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_TITLE = "金山密码保护卡"


@dataclass(frozen=True)
class Settings:
    """Limits and defaults for one deployment; checked on construction."""

    max_input_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_side: int = 16_383
    max_frames: int = 1000
    max_jpeg_scans: int = 256
    ecard_title: str = DEFAULT_TITLE
    text_font: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_input_bytes", "max_pixels", "max_side", "max_frames", "max_jpeg_scans"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.max_side > 65_535:
            raise ConfigError(f"max_side must be at most 65535, got {self.max_side}")
        if not isinstance(self.ecard_title, str) or not self.ecard_title.strip():
            raise ConfigError(f"ecard_title must be a non-empty string, got {self.ecard_title!r}")
        if self.text_font is not None and not Path(self.text_font).is_file():
            raise ConfigError(f"text_font {self.text_font!r} is not a file")


_ENVIRONMENT = {
    "DIPS_MAX_INPUT_BYTES": "max_input_bytes",
    "DIPS_MAX_PIXELS": "max_pixels",
    "DIPS_MAX_SIDE": "max_side",
    "DIPS_MAX_FRAMES": "max_frames",
    "DIPS_MAX_JPEG_SCANS": "max_jpeg_scans",
    "DIPS_ECARD_TITLE": "ecard_title",
    "DIPS_TEXT_FONT": "text_font",
}


def from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings with every ``DIPS_*`` variable of ``environ`` (default ``os.environ``) applied."""
    environ = os.environ if environ is None else environ
    defaults = Settings()
    values: dict[str, Any] = {}
    for variable, name in _ENVIRONMENT.items():
        raw = environ.get(variable)
        if raw is None or raw == "":
            continue
        if isinstance(getattr(defaults, name), int):
            try:
                values[name] = int(raw.replace("_", ""))
            except ValueError:
                raise ConfigError(f"{variable}={raw!r} is not an integer") from None
        else:
            values[name] = raw
    return Settings(**values)


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
    _current = new
    Image.MAX_IMAGE_PIXELS = new.max_pixels
    log.debug("renderer settings: %s", new)
    return previous


def _check_title(title: str) -> None:
    from renderers import fonts  # here, not at the top: fonts imports nothing of ours

    missing = fonts.missing_characters(title)
    if missing:
        raise ConfigError(f"ecard_title: the bundled font has no glyph for {missing!r}")


def install_bomb_guard() -> None:
    """Turn Pillow's ``DecompressionBombWarning`` into an exception for this process."""
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
