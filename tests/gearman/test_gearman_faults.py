"""Faults behind the door: brokers die and hang, the Gearman clients see nothing of it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from gwkit import HERE, need_php

SCRIPT = HERE.parent.parent / "scripts" / "gearman_faults"
DOUBLE_FAULT = HERE.parent.parent / "scripts" / "gearman_double_fault"


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


@need_php
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_php_clients_see_every_card_through_issue_18_s_double_fault(tmp_path: Path) -> None:
    """One run of scripts/gearman_double_fault: four PHP clients (the slides' code, one
    addServer line) call ecard through a door while broker A is SIGKILLed, then B SIGSTOPped
    as A restarts, then B continued: every call comes back with the card."""
    out = tmp_path / "double.json"
    done = subprocess.run([sys.executable, str(DOUBLE_FAULT), "--runs", "1", "--calls", "300",
                           "--json", str(out)], capture_output=True, text=True, timeout=290)
    print(done.stdout, done.stderr[-2000:])
    [run] = json.loads(out.read_text())
    assert (run["calls"], run["ok"], run["timed_out"], run["failed"]) == (1200, 1200, 0, 0)
    assert done.returncode == 0
