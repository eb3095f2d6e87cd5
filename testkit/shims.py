"""Processes that behave as on a machine without an optional package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def without_module(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes started from now on fail to import ``name``, as where it is not installed
    (a module of that name that raises ImportError, first on their PYTHONPATH)."""
    shim = tmp_path / f"shim-{name}"
    shim.mkdir()
    (shim / f"{name}.py").write_text(f'raise ImportError("no module named {name} (test shim)")\n')
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(shim) + (os.pathsep + path if path else ""))
