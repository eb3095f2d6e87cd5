"""The door's event loop (``--event-loop``): uvloop where installed, asyncio's own on request.

The rest of tests/gearman runs the door with the default (``auto``: uvloop, which the dev
install brings); these tests run a real door on each loop, and on a machine where uvloop
cannot be imported (a ``uvloop`` module that raises ImportError, first on the door's path).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import uvloop
from doorloops import refused_without_uvloop
from gwkit import port_of, start_gateway

from clusterkit import Cluster
from testkit import gear_call, gear_client
from testkit.shims import without_module


def _echo_through(gateway_port: int) -> bytes:
    client = gear_client([gateway_port])
    try:
        return b"".join(gear_call(client, "echo", b'{"loop": 1}').data)
    finally:
        client.shutdown()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "auto"])
def test_the_door_serves_on_the_loop_it_names(cluster: Cluster, loop: str) -> None:
    broker = cluster.broker()
    cluster.worker([broker], "echo")
    gateway = start_gateway(cluster, [broker], "--event-loop", loop)
    name = "asyncio" if loop == "asyncio" else f"uvloop {uvloop.__version__}"
    assert f"event loop: {name}\n" in gateway.output()
    assert _echo_through(port_of(gateway)) == b'{"loop": 1}'


def test_without_uvloop_auto_falls_back_and_uvloop_is_refused_by_name(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = cluster.broker()
    cluster.worker([broker], "echo")
    without_module("uvloop", tmp_path, monkeypatch)
    gateway = start_gateway(cluster, [broker])
    assert "event loop: asyncio (uvloop is not installed)\n" in gateway.output()
    assert _echo_through(port_of(gateway)) == b'{"loop": 1}'
    refused_without_uvloop(cluster, "mdp_gearman", broker.endpoint)
