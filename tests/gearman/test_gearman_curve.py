"""The gateway as a CURVE client of brokers that require it (keys as mdp-worker takes them)."""

from __future__ import annotations

import shutil
from pathlib import Path

from gwkit import Raw, port_of, start_gateway

from clusterkit import Cluster
from mdp.keys import new_keypair
from mdp_gearman.packets import T
from testkit import wait_for


def test_the_gateway_reaches_curve_brokers_with_its_key_and_not_without(
        cluster: Cluster, tmp_path: Path) -> None:
    private, clients, workers = tmp_path / "private", tmp_path / "clients", tmp_path / "workers"
    for folder in (clients, workers):
        folder.mkdir(parents=True)
    for name in ("broker", "gateway", "worker", "stranger"):
        new_keypair(private, name)
    shutil.copy(private / "gateway.key", clients)
    shutil.copy(private / "worker.key", workers)
    broker = cluster.broker(None, "--curve-secret", str(private / "broker.key_secret"),
                            "--client-keys", str(clients), "--worker-keys", str(workers),
                            wait=False)
    wait_for(lambda: "broker ready" in broker.output(), 10, "the CURVE broker")
    cluster.worker([broker], "echo", "--curve-secret", str(private / "worker.key_secret"),
                   "--broker-key", str(private / "broker.key"), wait=False)
    allowed = start_gateway(cluster, [broker], "--curve-secret",
                            str(private / "gateway.key_secret"),
                            "--broker-key", str(private / "broker.key"), worker_functions=None)
    raw = Raw(port_of(allowed))

    def served() -> bool:
        kind, args = raw.call(b"echo", b'{"secure": 1}')
        return kind == T.WORK_COMPLETE and args[1] == b'{"secure": 1}'

    wait_for(served, 20, "an echo job through the CURVE broker")
    raw.close()
    stranger = start_gateway(cluster, [broker], "--timeout", "1", "--curve-secret",
                             str(private / "stranger.key_secret"),
                             "--broker-key", str(private / "broker.key"),
                             worker_functions=None)
    raw = Raw(port_of(stranger))
    kind, args = raw.call(b"echo", b"{}")  # its key is not on the allow-list: the reason
    assert kind == T.WORK_WARNING and b"\0timeout: " in args[0]  # (it asked no exceptions)
    assert raw.recv()[0] == T.WORK_FAIL
    raw.close()
