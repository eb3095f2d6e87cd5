"""The cluster file: brokers and hosts, credentials kept out of the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mdpctl.cluster import (
    DEFAULT_BROKERS,
    load_cluster,
    local_cluster,
    local_cluster_toml,
)
from mdpctl.errors import ClusterFileError

GOOD = """
brokers = ["tcp://10.0.0.1:5555", "tcp://10.0.0.2:5555"]
username = "dips"
password_env = "DIPS_PW"

[hosts.img1]
supervisor = "http://10.0.1.11:9001"

[hosts.img2]
supervisor = "http://10.0.1.12:9001"
password_file = "img2.secret"

[hosts.local]
supervisor = "unix://run/supervisor.sock"
username = "other"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def test_a_good_file(tmp_path: Path) -> None:
    (tmp_path / "img2.secret").write_text("from-file\n")
    cluster = load_cluster(write(tmp_path, GOOD), {"DIPS_PW": "from-env"})
    assert cluster.brokers == ("tcp://10.0.0.1:5555", "tcp://10.0.0.2:5555")
    assert [h.name for h in cluster.hosts] == ["img1", "img2", "local"]
    img1, img2, local = (h.supervisor for h in cluster.hosts)
    assert (img1.url, img1.username, img1.password) == ("http://10.0.1.11:9001", "dips", "from-env")
    assert img2.password == "from-file"
    assert local.url == f"unix://{tmp_path}/run/supervisor.sock"  # relative to the file
    assert (local.username, local.password) == ("other", "from-env")
    assert [h.name for h in cluster.select(["local", "img1"])] == ["img1", "local"]
    assert cluster.select(None) == cluster.hosts


@pytest.mark.parametrize(
    "text, message",
    [
        ("brokers = []\n[hosts.a]\nsupervisor='http://h:1'", "non-empty list"),
        ("brokers = ['10.0.0.1:5555']\n[hosts.a]\nsupervisor='http://h:1'", "did you mean 'tcp://10.0.0.1:5555'"),
        ("brokers = ['tcp://a:1', 'tcp://a:1']\n[hosts.a]\nsupervisor='http://h:1'", "twice"),
        ("brokers = ['tcp://a:1']", "at least one"),
        ("brokers = ['tcp://a:1']\n[hosts.a]\nsupervisor='https://h:1'", "unix:///"),
        ("brokers = ['tcp://a:1']\n[hosts.a]\nsupervisor='http://h:1'\nport=1", "unknown key"),
        ("brokers = ['tcp://a:1']\nbrokerz=1\n[hosts.a]\nsupervisor='http://h:1'", "brokerz"),
        ("brokers = ['tcp://a:1']\n[hosts.a]\nsupervisor='http://h:1'\npassword='x'", "env"),
        (
            "brokers = ['tcp://a:1']\n[hosts.a]\nsupervisor='http://h:1'\npassword_env='NOPE'",
            "NOPE, which is not set",
        ),
        ("brokers = ['tcp://a:1']\n[hosts.'a b']\nsupervisor='unix:///s'", "host name"),
        ("brokers = ['tcp://a:1']\ntimeout = -1\n[hosts.a]\nsupervisor='unix:///s'", "timeout"),
        ("brokers = ['tcp://a:1'\n", "not valid TOML"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ClusterFileError, match=message):
        load_cluster(write(tmp_path, text), {})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ClusterFileError, match="does not exist"):
        load_cluster(tmp_path / "nope.toml", {})


def test_http_needs_credentials(tmp_path: Path) -> None:
    text = "brokers = ['tcp://a:1']\n[hosts.a]\nsupervisor='http://h:1'\nusername='u'"
    with pytest.raises(ClusterFileError, match="needs a username and a password"):
        load_cluster(write(tmp_path, text), {})


def test_password_without_username(tmp_path: Path) -> None:
    text = "brokers = ['tcp://a:1']\n[hosts.a]\nsupervisor='http://h:1'\npassword_env='P'"
    with pytest.raises(ClusterFileError, match="no username"):
        load_cluster(write(tmp_path, text), {"P": "x"})


def test_unknown_host(tmp_path: Path) -> None:
    with pytest.raises(ClusterFileError, match="no host 'img9'.*hosts: local"):
        local_cluster(tmp_path).select(["img9"])


def test_local_cluster_file_round_trip(tmp_path: Path) -> None:
    run_dir = tmp_path / "with space" / 'and"quote'
    brokers = ("tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002")
    written = write(tmp_path, local_cluster_toml(run_dir, brokers))
    cluster = load_cluster(written, {})
    assert cluster.brokers == brokers
    assert cluster.hosts == local_cluster(run_dir, brokers).hosts
    assert local_cluster(run_dir).brokers == DEFAULT_BROKERS
