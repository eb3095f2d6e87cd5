"""The door's per-job shortcuts give exactly what the general paths give."""

from __future__ import annotations

import pytest

from mdp.errors import BadRequest
from mdp_gearman import packets as g
from mdp_gearman.jobs import parse_submission
from mdp_gearman.packets import T


@pytest.mark.parametrize("handle", [b"H:host:1", b"", b"H:" + b"x" * 300])
def test_job_created_is_the_general_packet(handle: bytes) -> None:
    assert g.job_created(handle) == g.build(T.JOB_CREATED, handle)


@pytest.mark.parametrize("result", [b"", b"card", b"\0with\0nuls\0", bytes(range(256)) * 40])
def test_work_complete_is_the_general_packet(result: bytes) -> None:
    handle = b"H:host:7"
    assert g.work_complete(handle, result) == g.build(T.WORK_COMPLETE, handle, result)


def test_a_function_name_checked_once_is_still_checked_for_every_job() -> None:
    good = g.Packet(T.SUBMIT_JOB, (b"ecard", b"", b"w"))
    assert parse_submission(good, 0.0).service == "ecard"
    assert parse_submission(good, 0.0).service == "ecard"  # (the second one: remembered)
    for bad in (b"mmi.status", b"bad name", b"", b"x" * 101):
        for _ in range(2):  # a refused name is never remembered as good
            with pytest.raises(BadRequest):
                parse_submission(g.Packet(T.SUBMIT_JOB, (bad, b"", b"w")), 0.0)
