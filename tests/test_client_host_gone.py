"""A plain client's host drops off the network while the client is idle: the broker frees
its connection. Such a connection is never dropped for ZMTP silence (an idle sync client on
a plain socket reads nothing, see mdp/plainrouter.py), so the broker's kernel watches it:
TCP keepalive. Real network namespace and veth link (tests/test_netns.py); needs root and
iproute2 (skipped without)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from test_netns import Netns, made_netns

from clusterkit import Cluster, needs
from testkit import free_port, wait_for

pytestmark = [
    pytest.mark.slow,
    needs(os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("ss") is not None,
          "root, iproute2 (ip, ss) for a network namespace"),
]

IDLE_CLIENT = """
import sys, time
from mdp.client import MDPClient
client = MDPClient([sys.argv[1]], transport="plain", shuffle=False)
print(client.mmi_service("echo"), flush=True)
time.sleep(120)  # idle, its connection open
"""


@pytest.fixture
def netns() -> Iterator[Netns]:
    with made_netns() as ns:
        yield ns


def connections_from(address: str, port: int) -> int:
    """Established TCP connections to local ``port`` from ``address``."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                         check=True, capture_output=True, text=True, timeout=10).stdout
    return sum(f"{address}:" in line for line in out.splitlines())


def test_an_idle_plain_clients_connection_is_freed_when_its_host_is_gone(
        cluster: Cluster, netns: Netns) -> None:
    port = free_port()
    endpoint = f"tcp://{netns.host_addr}:{port}"
    cluster.broker(None, "--bind", endpoint, "--transport", "plain")
    client = netns.spawn(cluster, "idle-client", ["-c", IDLE_CLIENT, endpoint])
    wait_for(lambda: "404" in client.output(), 15, "the client's first call")
    assert connections_from(netns.ns_addr, port) == 1
    netns.cut()  # no FIN, no RST: only silence, and the client sends nothing anyway
    # (keepalive after 1 s of quiet, reset once unanswered for the ZMTP timeout, 4.4 s)
    wait_for(lambda: connections_from(netns.ns_addr, port) == 0, 30,
             "the broker to free the connection of a client whose host is gone")
    assert client.popen.poll() is None  # (the client itself never noticed)
