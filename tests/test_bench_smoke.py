"""``scripts/bench --quick`` runs and prints its table (a smoke test, not a benchmark).

gearmand is left out so that CI needs neither it nor root; the figures are not checked,
only that every section ran, printed its table and left no process behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "scripts" / "bench"
DOC = REPO / "docs" / "BENCHMARKS.md"


def _marked_processes(marker: str) -> list[int]:
    """Processes whose environment carries ``marker`` (the bench passes it to every child)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker.encode() in environ:
                found.append(int(entry.name))
    return found


@pytest.mark.timeout(240)
def test_quick_bench_prints_its_table(tmp_path: Path) -> None:
    doc_before = DOC.read_bytes() if DOC.exists() else None
    json_path = tmp_path / "bench.json"
    marker = f"DIPS_BENCH_SMOKE={uuid.uuid4().hex}"
    name, value = marker.split("=")
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--no-gearman", "--json", str(json_path)],
        cwd=REPO, capture_output=True, text=True, timeout=200,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **{name: value}),
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    out = done.stdout
    assert out.startswith("# DIPS benchmarks")
    assert "| system | mode | body | clients/workers | req/s |" in out
    for row in ("| floor (pyzmq) | sync | 5 B | 1/1 |", "| DIPS | sync | 5 B | 1/1 |",
                "| DIPS | pipelined | 5 B | 1/1 |"):
        assert row in out, f"missing row {row!r} in:\n{out}"
    assert "## Scale" in out and "### Dispatch cost" in out and "## Targets" in out
    assert "## The real job" in out and "## CPU per request by role" in out
    for row in ("| 2 processes rendering in-process |", "| DIPS / in-process |",
                "| render alone (in-process", "| client 1 |", "(the broker that carried more)",
                "(the other broker)", "| worker 1 |", "| workers net of the handler |",
                "| **floor: total** |", "| DIPS: client-facing broker |", "| DIPS: other broker |",
                "| **DIPS: total** |", "| other broker / client-facing broker |",
                "| cards through 2 brokers ≥ 0.85 of in-process |",
                "all processes' CPU/request ≤ 3× the floor's",
                "| scale: one broker on one core routes ≥ 30,000 req/s"):
        assert row in out, f"missing row {row!r} in:\n{out}"
    assert "sync 1/1: CPU µs/request" in out and "pipelined 1/2, window 64" in out
    assert "Targets (issue 5)" not in out
    assert "\n| gearmand (gear) |" not in out
    assert "pyzmq / libzmq" in out and "command" in out
    assert json_path.exists()
    assert (DOC.read_bytes() if DOC.exists() else None) == doc_before, "--quick wrote the doc"
    assert _marked_processes(marker) == [], "a benchmark process outlived the run"


def test_help_runs_as_a_script() -> None:
    done = subprocess.run([str(BENCH), "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "--quick" in done.stdout
