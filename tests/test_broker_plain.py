"""``mdp-broker --transport plain``: how it is chosen and refused, and real broker processes on
the plain ROUTER (the real endpoint of a ``*`` port, ipc, a SIGSTOPped worker dropped by the
ZMTP heartbeat). It is the default (``auto``) where it binds as pyzmq would, so the rest of
the suite runs on it too."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mdp.config import BROKER_TRANSPORT_ENV, BrokerConfig, parse_broker_args
from mdp.errors import ConfigError
from mdp.plainrouter import PlainRouter
from testkit import broker_status, count_workers, has_worker, wait_for
from tests.clusterkit import Cluster


def test_plain_with_curve_is_refused_naming_why() -> None:
    config = BrokerConfig(transport="plain", curve_secret="s", client_keys="c", worker_keys="w")
    with pytest.raises(ConfigError, match="--transport plain cannot do CURVE"):
        config.validate()


def test_plain_with_inproc_is_refused_and_auto_takes_pyzmq() -> None:
    with pytest.raises(ConfigError, match="cannot bind 'inproc://x'"):
        BrokerConfig(bind=["inproc://x"], transport="plain").validate()
    auto = BrokerConfig(bind=["inproc://x"], transport="auto")
    auto.validate()
    assert not auto.plain


def test_the_default_comes_from_the_environment_and_the_flag_wins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BROKER_TRANSPORT_ENV, "plain")
    config, _ = parse_broker_args(["--bind", "tcp://127.0.0.1:*"])
    assert config.plain
    config, _ = parse_broker_args(["--bind", "tcp://127.0.0.1:*", "--transport", "zmq"])
    assert not config.plain
    monkeypatch.setenv(BROKER_TRANSPORT_ENV, "zmq")
    config, _ = parse_broker_args(["--bind", "tcp://127.0.0.1:*"])
    assert config.transport == "zmq" and not config.plain
    monkeypatch.delenv(BROKER_TRANSPORT_ENV)
    config, _ = parse_broker_args(["--bind", "tcp://127.0.0.1:*"])
    assert config.transport == "auto" and config.plain


def test_auto_is_plain_where_it_can_be_and_pyzmq_for_curve_or_inproc() -> None:
    assert BrokerConfig(bind=["tcp://127.0.0.1:5555", "ipc:///tmp/b.sock"]).plain
    assert not BrokerConfig(bind=["tcp://127.0.0.1:5555", "inproc://x"]).plain
    assert not BrokerConfig(curve_secret="s", client_keys="c", worker_keys="w").plain
    assert not BrokerConfig(transport="zmq").plain


def test_auto_leaves_a_bind_a_plain_socket_could_read_otherwise_to_pyzmq() -> None:
    """libzmq (no IPv6) binds a name's IPv4 address, binds an interface by its name and
    makes a path of ``ipc://*``: ``auto`` takes plain only where it binds the same."""
    for endpoint in ("tcp://*:5555", "tcp://0.0.0.0:*", "tcp://10.1.2.3:5555",
                     "ipc:///run/dips/b.ipc", "ipc://@abstract"):
        assert BrokerConfig(bind=[endpoint]).plain, endpoint
    for endpoint in ("tcp://localhost:5555", "tcp://lo:5555", "tcp://broker-1.example:5555",
                     "tcp://[::1]:5555", "ipc://*"):
        config = BrokerConfig(bind=["tcp://127.0.0.1:5555", endpoint])
        config.validate()
        assert not config.plain, endpoint


@pytest.mark.parametrize("endpoint", ["tcp://[::1]:5555", "ipc://*"])
def test_plain_refuses_a_bind_libzmq_would_read_otherwise(endpoint: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"cannot bind {endpoint!r}")):
        BrokerConfig(bind=[endpoint], transport="plain").validate()
    with pytest.raises(ValueError, match="binds IPv4 and named ipc:// paths only"):
        router = PlainRouter(1 << 20)
        try:
            router.bind(endpoint)
        finally:
            router.close()


def test_a_plain_broker_binds_a_name_s_ipv4_address_where_ipv6_is_listed_first(
        tmp_path: Path) -> None:
    """Under Debian's /etc/hosts (``::1 localhost`` as well), glibc gives ::1 first: a plain
    socket bound to it would be out of reach of every pyzmq client and worker (IPv4 only).
    The broker runs in a mount namespace of its own whose /etc/hosts lists ::1 first."""
    hosts = tmp_path / "hosts"
    hosts.write_text("::1 localhost ip6-localhost\n127.0.0.1 localhost\n")
    script = (f"mount --bind {hosts} /etc/hosts && exec {sys.executable} -m mdp.broker "
              "--bind 'tcp://localhost:*' --transport plain")
    try:
        proc = subprocess.Popen(["unshare", "-rm", "sh", "-c", script],
                                stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        pytest.skip("no unshare (util-linux)")
    try:
        (tcp,) = _ready_endpoints(proc)
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", tcp), tcp
        status = broker_status(tcp, 5.0)
        assert status is not None
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_bad_transport_in_the_environment_is_refused_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(BROKER_TRANSPORT_ENV, "udp")
    with pytest.raises(SystemExit) as refused:
        parse_broker_args(["--bind", "tcp://127.0.0.1:*"])
    assert refused.value.code == 2
    assert f"${BROKER_TRANSPORT_ENV} must be one of" in capsys.readouterr().err
    config, _ = parse_broker_args(["--bind", "tcp://127.0.0.1:*", "--transport", "zmq"])
    assert not config.plain


def test_plain_from_the_environment_leaves_curve_and_inproc_brokers_on_pyzmq(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fleet's (or a suite's) default is plain where it can be; the flag itself is not."""
    monkeypatch.setenv(BROKER_TRANSPORT_ENV, "plain")
    curve = ["--curve-secret", "s", "--client-keys", "c", "--worker-keys", "w"]
    config, _ = parse_broker_args(["--bind", "tcp://127.0.0.1:*", *curve])
    assert config.transport == "auto" and not config.plain
    config, _ = parse_broker_args(["--bind", "inproc://x"])
    assert not config.plain
    with pytest.raises(SystemExit) as refused:
        parse_broker_args(["--bind", "tcp://127.0.0.1:*", "--transport", "plain", *curve])
    assert refused.value.code == 2


def test_a_plain_broker_with_curve_exits_with_one_clear_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mdp.broker", "--bind", "tcp://127.0.0.1:*",
                           "--transport", "plain", "--curve-secret", str(tmp_path / "k"),
                           "--client-keys", str(tmp_path), "--worker-keys", str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "--transport plain cannot do CURVE" in done.stderr.strip().splitlines()[-1]


def _ready_endpoints(proc: subprocess.Popen[str]) -> list[str]:
    """The endpoints of the broker's ready line (it logs to stderr)."""
    assert proc.stderr is not None
    for line in proc.stderr:
        match = re.search(r"broker ready on (.*), link floor .*, (\w+) transport", line)
        if match:
            assert match[2] == "plain"
            return match[1].split()
    raise AssertionError("the broker ended without its ready line")


def test_a_plain_broker_reports_the_port_it_got_and_serves_tcp_and_ipc(tmp_path: Path) -> None:
    ipc = f"ipc://{tmp_path / 'b.ipc'}"
    proc = subprocess.Popen([sys.executable, "-m", "mdp.broker", "--bind", "tcp://127.0.0.1:*",
                             "--bind", ipc, "--transport", "plain"],
                            stderr=subprocess.PIPE, text=True)
    try:
        tcp, bound_ipc = _ready_endpoints(proc)
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", tcp) and bound_ipc == ipc
        for endpoint in (tcp, ipc):
            status = broker_status(endpoint, 5.0)
            assert status is not None and status.broker.endpoint == f"{tcp} {ipc}"
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        if proc.stderr is not None:
            proc.stderr.close()
    assert not (tmp_path / "b.ipc").exists()


def test_a_sigstopped_worker_is_dropped_by_the_plain_routers_zmtp_heartbeat(
        cluster: Cluster) -> None:
    """MDP liveness would keep it for 50 s; the ZMTP heartbeat (100 ms, 300 ms timeout)
    drops its connection, and the broker's next MDP heartbeat to it fails: it is gone."""
    beats = ["--heartbeat-interval", "0.5", "--heartbeat-liveness", "100"]
    broker = cluster.broker(None, "--transport", "plain", "--zmtp-heartbeat", "100",
                            "--max-message-bytes", "1MiB", "--max-queue-bytes", "1MiB",
                            *beats, fast=False)
    worker = cluster.worker([broker], "echo", *beats, fast=False)
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: count_workers(broker.endpoint, "echo", None, 1.0) == 0, 5,
                 "the stopped worker to be dropped")
        assert not has_worker(broker.endpoint, worker.pid)
        assert "its ZMTP heartbeats stopped" in broker.output()
    finally:
        os.kill(worker.pid, signal.SIGCONT)
