"""Faults behind the door: brokers die and hang, the Gearman clients see nothing of it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gwkit import HERE

SCRIPT = HERE.parent.parent / "scripts" / "gearman_faults"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_broker_sigkill_then_sigstop_loses_no_job_and_no_card_is_wrong(tmp_path: Path) -> None:
    """4 gear clients, 600 PHP-serialized ecard jobs through mdp-gearman; broker A is
    SIGKILLed and restarted, then broker B SIGSTOPped for 5 s (scripts/gearman_faults runs
    the same with 2,000 jobs and gearmand beside it)."""
    out = tmp_path / "faults.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--dips-only", "--jobs", "600",
                           "--json", str(out)], capture_output=True, text=True, timeout=170)
    print(done.stdout)
    result = json.loads(out.read_text())["mdp-gearman -> DIPS"]
    assert (result["ok"], result["failed"], result["wrong"]) == (600, 0, 0), done.stdout
    assert done.returncode == 0
