"""Smoke test of scripts/bench_renderers (a benchmark, so no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_renderers"


def test_quick_benchmark_prints_every_comparison() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--cards", "60", "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in (
        "ecard 480x300",
        "ecard 960x600",
        "naive (ImageDraw",
        "thumbnail of a",
        "ratio naive/dips",
        "-> 256x171",
    ):
        assert expected in out, out
    assert out.count("ratio naive/dips") == 3
