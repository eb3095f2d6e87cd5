"""What both doors' event-loop tests check of a door asked for uvloop where it is missing."""

from __future__ import annotations

import subprocess

import pytest

from clusterkit import Cluster


def refused_without_uvloop(cluster: Cluster, module: str, broker: str) -> str:
    """Start ``python -m module --event-loop uvloop`` (uvloop already made unimportable) and
    check that it exits 2 naming the cause, never listening; its output."""
    refused = cluster._spawn(["-m", module, "--listen", "127.0.0.1:0", "--broker", broker,
                              "--event-loop", "uvloop"], "refused")
    try:
        assert refused.popen.wait(timeout=30) == 2
    except subprocess.TimeoutExpired:
        pytest.fail(f"{module} started without uvloop:\n{refused.output()}")
    output = refused.output()
    assert "--event-loop uvloop: uvloop cannot be imported" in output
    assert "listening" not in output
    return output
