"""mdp-http's event loop (``--event-loop``): uvloop where installed, asyncio's own on request.

The rest of tests/http runs the door with the default (``auto``: uvloop, which the dev
install brings), the connection guard's resets and limits included; these tests run a
real door on each loop, and on a machine where uvloop cannot be imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import uvloop
from doorloops import refused_without_uvloop
from httpkit import Gateway, start_gateway

from clusterkit import Cluster
from testkit.shims import without_module


def _echoes(gateway: Gateway) -> None:
    status, _, body = gateway.post_json("echo", {"loop": 1})
    assert status == 200, body[:300]
    assert json.loads(body) == {"loop": 1}


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "auto"])
def test_the_door_serves_on_the_loop_it_names(cluster: Cluster, loop: str) -> None:
    broker = cluster.broker()
    cluster.worker([broker], "echo")
    gateway = start_gateway(cluster, [broker.endpoint], "--event-loop", loop)
    name = "asyncio" if loop == "asyncio" else f"uvloop {uvloop.__version__}"
    assert f"event loop: {name}\n" in gateway.proc.output()
    _echoes(gateway)


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused_by_name(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = cluster.broker()
    cluster.worker([broker], "echo")
    without_module("uvloop", tmp_path, monkeypatch)
    gateway = start_gateway(cluster, [broker.endpoint])
    assert "event loop: asyncio (uvloop is not installed)\n" in gateway.proc.output()
    _echoes(gateway)
    output = refused_without_uvloop(cluster, "mdp_http", broker.endpoint)
    assert "install it with pip install 'dips[http]'" in output


def test_an_unknown_loop_is_refused_in_one_line() -> None:
    out = subprocess.run([sys.executable, "-m", "mdp_http", "--broker", "tcp://127.0.0.1:1",
                          "--event-loop", "trio"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr == "mdp-http: --event-loop is one of auto, uvloop, asyncio, not 'trio'\n"
