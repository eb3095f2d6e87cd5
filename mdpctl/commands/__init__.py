"""One module per mdpctl command; each has ``add_arguments(parser)`` and ``run(args, ctx)``.

A command's usage and help text are its module docstring: the first line is the summary,
the rest is the description ``mdpctl COMMAND --help`` prints.
"""

from __future__ import annotations

import importlib
from types import ModuleType

COMMANDS = ("up", "down", "status", "services", "call", "scale", "reload", "batch", "config",
            "keys", "samples", "imgproxy")


def load(name: str) -> ModuleType:
    return importlib.import_module(f"mdpctl.commands.{name}")
