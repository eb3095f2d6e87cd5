"""The cluster file: which brokers there are and where each host's supervisord listens.

A cluster file is TOML::

    brokers = ["tcp://10.0.0.1:5555", "tcp://10.0.0.2:5555"]
    username = "dips"                       # default for every host
    password_env = "DIPS_SUPERVISOR_PASSWORD"

    [hosts.img1]
    supervisor = "http://10.0.1.11:9001"    # or "unix:///run/dips/supervisor.sock"

    [hosts.img2]
    supervisor = "http://10.0.1.12:9001"
    password_file = "/etc/dips/img2.secret"

    # brokers that require CURVE (docs/SECURITY.md): mdpctl's own key pair and theirs
    curve_secret = "keys/mdpctl.key_secret"
    broker_key = "keys/broker.key"

Passwords never live in the file itself: a host names an environment variable
(``password_env``) or a file (``password_file``) that holds it.  Without a cluster file
mdpctl works on the local cluster that ``mdpctl up`` starts.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdp.errors import ConfigError
from mdp.keys import CurveConfig
from mdpctl.endpoints import check_endpoint
from mdpctl.errors import ClusterFileError
from mdpctl.rpc import SupervisorEndpoint

DEFAULT_BROKERS = ("tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556")
LOCAL_HOST = "local"
SOCKET_NAME = "supervisor.sock"
CLUSTER_FILE_NAME = "cluster.toml"

_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ENDPOINT = re.compile(r"^tcp://[^:/\s]+:\d{1,5}$")
_TOP_KEYS = {"brokers", "hosts", "username", "password_env", "password_file", "timeout",
             "curve_secret", "broker_key"}
_HOST_KEYS = {"supervisor", "username", "password_env", "password_file"}


@dataclass(frozen=True)
class Host:
    """One host's supervisord."""

    name: str
    supervisor: SupervisorEndpoint


@dataclass(frozen=True)
class Cluster:
    """Brokers and hosts that mdpctl acts on."""

    brokers: tuple[str, ...]
    hosts: tuple[Host, ...]
    source: str
    rpc_timeout_s: float = 10.0
    curve: CurveConfig | None = None  # keys for brokers that require CURVE

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise ClusterFileError(f"no host {name!r} in {self.source} (hosts: {known})")

    def select(self, names: list[str] | None) -> tuple[Host, ...]:
        """The hosts named, in cluster order; every host when ``names`` is empty."""
        if not names:
            return self.hosts
        wanted = {self.host(name).name for name in names}
        return tuple(h for h in self.hosts if h.name in wanted)


def local_cluster(run_dir: Path, brokers: tuple[str, ...] = DEFAULT_BROKERS) -> Cluster:
    """The local all-in-one cluster of ``mdpctl up`` with its run directory."""
    endpoint = SupervisorEndpoint(f"unix://{run_dir / SOCKET_NAME}")
    return Cluster(brokers, (Host(LOCAL_HOST, endpoint),), source=f"local cluster in {run_dir}")


def local_cluster_toml(run_dir: Path, brokers: tuple[str, ...]) -> str:
    """The cluster file ``mdpctl up`` writes into its run directory."""
    quoted = ", ".join(_toml_string(b) for b in brokers)
    return (
        "# Written by `mdpctl up`: the local cluster. Other mdpctl commands read it.\n"
        f"brokers = [{quoted}]\n\n"
        f"[hosts.{LOCAL_HOST}]\n"
        f"supervisor = {_toml_string('unix://' + str(run_dir / SOCKET_NAME))}\n"
    )


def _toml_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def load_cluster(path: Path, environ: dict[str, str] | None = None) -> Cluster:
    """Read and check a cluster file; every mistake raises ClusterFileError naming it."""
    env = dict(os.environ) if environ is None else environ
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ClusterFileError(f"cluster file {path} does not exist") from exc
    except OSError as exc:
        raise ClusterFileError(f"cannot read cluster file {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ClusterFileError(f"cluster file {path} is not valid TOML: {exc}") from exc
    return parse_cluster(data, str(path), path.parent, env)


def parse_cluster(
    data: dict[str, Any], source: str, base_dir: Path, environ: dict[str, str]
) -> Cluster:
    """Build a Cluster from decoded TOML; relative paths are taken from ``base_dir``."""
    _refuse_unknown(data, _TOP_KEYS, source, "")
    if "password" in data:
        raise ClusterFileError(_PASSWORD_INLINE.format(source=source))
    brokers = _brokers(data.get("brokers"), source)
    hosts_table = data.get("hosts")
    if not isinstance(hosts_table, dict) or not hosts_table:
        raise ClusterFileError(f"{source}: needs at least one [hosts.NAME] table")
    hosts = tuple(
        _host(name, table, data, source, base_dir, environ) for name, table in hosts_table.items()
    )
    timeout = data.get("timeout", 10.0)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise ClusterFileError(f"{source}: timeout must be a positive number of seconds")
    return Cluster(brokers, hosts, source, float(timeout), _curve(data, source, base_dir))


def _curve(data: dict[str, Any], source: str, base_dir: Path) -> CurveConfig | None:
    """``curve_secret`` (mdpctl's own key pair) and ``broker_key``: both or neither."""
    secret, broker = data.get("curve_secret"), data.get("broker_key")
    if secret is None and broker is None:
        return None
    if not isinstance(secret, str) or not isinstance(broker, str):
        raise ClusterFileError(f"{source}: CURVE needs both curve_secret and broker_key "
                               "(paths to key files)")
    try:
        return CurveConfig.from_files(base_dir / secret, base_dir / broker)
    except ConfigError as exc:
        raise ClusterFileError(f"{source}: {exc}") from exc


_PASSWORD_INLINE = (
    "{source}: passwords do not belong in the cluster file; "
    "name an environment variable (password_env) or a file (password_file) instead"
)


def _refuse_unknown(table: dict[str, Any], known: set[str], source: str, where: str) -> None:
    for key in table:
        if key not in known and key != "password":
            raise ClusterFileError(
                f"{source}: unknown key {where}{key!r} (known: {', '.join(sorted(known))})"
            )


def _brokers(value: Any, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ClusterFileError(f"{source}: brokers must be a non-empty list of tcp:// endpoints")
    for endpoint in value:
        if not isinstance(endpoint, str):
            raise ClusterFileError(f"{source}: broker {endpoint!r} is not a string")
        try:
            check_endpoint(endpoint)
        except ConfigError as exc:
            raise ClusterFileError(f"{source}: {exc}") from exc
        if not _ENDPOINT.match(endpoint):
            raise ClusterFileError(
                f"{source}: broker {endpoint!r} is not an endpoint like tcp://HOST:PORT"
            )
    if len(set(value)) != len(value):
        raise ClusterFileError(f"{source}: brokers lists an endpoint twice")
    return tuple(value)


def _host(
    name: str,
    table: Any,
    top: dict[str, Any],
    source: str,
    base_dir: Path,
    environ: dict[str, str],
) -> Host:
    where = f"hosts.{name}"
    if not _HOST_NAME.match(name):
        raise ClusterFileError(f"{source}: host name {name!r} must be letters, digits, . _ -")
    if not isinstance(table, dict):
        raise ClusterFileError(f"{source}: {where} must be a table")
    _refuse_unknown(table, _HOST_KEYS, source, where + ".")
    if "password" in table:
        raise ClusterFileError(_PASSWORD_INLINE.format(source=source))
    url = table.get("supervisor")
    if not isinstance(url, str) or not url.startswith(("unix://", "http://")):
        raise ClusterFileError(
            f"{source}: {where}.supervisor must be unix:///path/to/socket or http://HOST:PORT"
        )
    if url.startswith("unix://") and not url[len("unix://") :].startswith("/"):
        url = "unix://" + str(base_dir / url[len("unix://") :])
    username = _optional_str(table, top, "username", source, where)
    password = _password(table, top, source, where, base_dir, environ)
    if password is not None and username is None:
        raise ClusterFileError(f"{source}: {where} has a password but no username")
    if url.startswith("http://") and password is None:
        raise ClusterFileError(
            f"{source}: {where} is reached over HTTP, which needs a username and a password "
            "(password_env or password_file)"
        )
    return Host(name, SupervisorEndpoint(url, username, password))


def _optional_str(
    table: dict[str, Any], top: dict[str, Any], key: str, source: str, where: str
) -> str | None:
    value = table.get(key, top.get(key))
    if value is not None and not isinstance(value, str):
        raise ClusterFileError(f"{source}: {where}.{key} must be a string")
    return value


def _password(
    table: dict[str, Any],
    top: dict[str, Any],
    source: str,
    where: str,
    base_dir: Path,
    environ: dict[str, str],
) -> str | None:
    # A host's own password setting replaces the top-level one as a whole.
    own = "password_env" in table or "password_file" in table
    scope = table if own else top
    env_name = scope.get("password_env")
    file_name = scope.get("password_file")
    for key, value in (("password_env", env_name), ("password_file", file_name)):
        if value is not None and not isinstance(value, str):
            raise ClusterFileError(f"{source}: {where}.{key} must be a string")
    if env_name is not None and file_name is not None:
        raise ClusterFileError(f"{source}: {where} gets both password_env and password_file")
    if env_name is not None:
        if env_name not in environ:
            raise ClusterFileError(
                f"{source}: {where} takes its password from ${env_name}, which is not set"
            )
        return environ[env_name]
    if file_name is not None:
        path = Path(file_name) if Path(file_name).is_absolute() else base_dir / file_name
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ClusterFileError(
                f"{source}: {where} password file {path}: {exc.strerror}"
            ) from exc
    return None
