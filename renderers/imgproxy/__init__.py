"""imgproxy's processing options, rendered with Pillow: the ``imgproxy`` service.

:mod:`~renderers.imgproxy.options` checks the canonical option map the HTTP door sends,
:mod:`~renderers.imgproxy.geometry` computes sizes and boxes without pixels,
:mod:`~renderers.imgproxy.smart` finds the interesting part for ``gravity: sm``,
:mod:`~renderers.imgproxy.pipeline` applies it all to each frame, and
:mod:`~renderers.imgproxy.service` registers the service.
"""

from __future__ import annotations

from renderers.imgproxy import service

__all__ = ["service"]
