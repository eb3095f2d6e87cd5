"""Chaos: brokers and workers killed and frozen under load lose no request (promise 1).

``scripts/chaos`` runs real brokers and workers (restarted like supervisord restarts them)
under sync and asyncio client load, and strikes them with a schedule drawn from a seed:
SIGKILL and SIGSTOP of workers and brokers every few seconds. Here it runs once, with a
fixed seed and a short duration; every reply must be its own request's, none may be lost.
Errors such as ``worker_lost`` are printed, not judged here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from types import ModuleType

import pytest

from testkit import kill_all_under

CHAOS = Path(__file__).resolve().parent.parent / "scripts" / "chaos"
SEED = 3
DURATION_S = 20.0  # every kind of fault strikes at least once (the schedule comes in rounds)


def chaos_module() -> ModuleType:
    """``scripts/chaos`` imported as a module (it has no ``.py``)."""
    name = "chaos_script"
    if name not in sys.modules:
        loader = SourceFileLoader(name, str(CHAOS))
        spec = spec_from_loader(name, loader)
        assert spec is not None
        module = module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up
        loader.exec_module(module)
    return sys.modules[name]


def test_the_schedule_is_the_seeds_alone_and_every_round_has_every_fault() -> None:
    chaos = chaos_module()
    faults = chaos.schedule(SEED, DURATION_S, 2, 4, (1.5, 4.0))
    assert faults == chaos.schedule(SEED, DURATION_S, 2, 4, (1.5, 4.0))
    assert faults != chaos.schedule(SEED + 1, DURATION_S, 2, 4, (1.5, 4.0))
    kinds = [fault.kind for fault in faults]
    assert sorted(kinds[:4]) == sorted(chaos.KINDS)
    for fault in faults:
        assert 0 < fault.at_s < DURATION_S
        if fault.kind == "stop-worker":
            assert 0.5 <= fault.pause_s <= 3.0 and fault.target < 4
        elif fault.kind == "stop-broker":
            assert 1.0 <= fault.pause_s <= 5.0 and fault.target < 2


@pytest.mark.slow
def test_seeded_chaos_loses_no_request_and_answers_none_with_another_reply(
        tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    command = [sys.executable, str(CHAOS), "--seed", str(SEED), "--duration", str(DURATION_S),
               "--dir", str(tmp_path / "run"), "--json", str(summary)]
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=DURATION_S + 60)
    finally:
        kill_all_under(tmp_path)  # whatever the run left behind, if it was cut short
    print(done.stdout, done.stderr)
    result = json.loads(summary.read_text())
    print(f"worker_lost answers: {result['worker_lost']}, expired: {result['expired']}, "
          f"other errors: {result['errors']}, of {result['requests']} requests")
    struck = " ".join(result["applied"])
    assert "SIGKILL worker" in struck and "SIGSTOP worker" in struck
    assert "SIGKILL broker" in struck and "SIGSTOP broker" in struck
    assert result["ok"] > 0
    assert result["wrong"] == 0, result["notes"].get("wrong")
    assert result["lost"] == 0, result["notes"].get("lost")
    assert result["hung_clients"] == 0
    assert result["unexpected_exits"] == []
    assert done.returncode == 0
