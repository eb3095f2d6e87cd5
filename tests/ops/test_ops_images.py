"""The image server in mdpctl's configurations, without a cluster: the shared options
declared once, the doors' Redis as a never-persisted cache (a password beyond loopback,
of which files hold only the hash), the door's keys and the workers' sources."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from clusterkit import needs
from mdp_http import config as http_config
from mdpctl import flags, images
from mdpctl.cli import build_parser, main
from mdpctl.doors import door_kind
from renderers import settings as renderer_settings
from testkit import free_port, free_ports, processes_under, taken_port, wait_for

from .opstools import REPO, supervisord_reads

REDIS_SERVER = images.REDIS_SERVER
HAVE_REDIS = shutil.which(REDIS_SERVER) is not None


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = sub.choices[name]
    return found


def option(parser: argparse.ArgumentParser, name: str) -> argparse.Action:
    return next(a for a in parser._actions if name in a.option_strings)


def test_up_and_config_take_the_shared_options_from_one_declaration() -> None:
    up, config = subparser("up"), subparser("config")
    for flag in flags.FLAGS:
        ours, theirs = option(up, flag.name), option(config, flag.name)
        assert (ours.help, ours.type, ours.default) == (theirs.help, theirs.type, None)
    for command in ("up", "config"):
        source = (REPO / "mdpctl" / "commands" / f"{command}.py").read_text()
        declared = [f.name for f in flags.FLAGS if f'"{f.name}"' in source]
        assert declared == [], f"{command}.py declares {declared} again"


def test_the_variables_mdpctl_sets_are_the_ones_the_programs_read() -> None:
    read = renderer_settings._ENVIRONMENT
    assert read[images.SOURCES_ROOTS_ENV] == "sources_roots"
    assert read[images.SOURCES_ALLOW_ENV] == "sources_allow"
    door = {f.metadata["flag"]: http_config.env_name(f)
            for f in dataclasses.fields(http_config.HttpConfig)}
    assert door["--redis"] == images.DOOR_REDIS_ENV
    assert (door["--sign-key"], door["--sign-salt"]) == (
        flags.BY_DEST["sign_key"].env, flags.BY_DEST["sign_salt"].env)


def parse_config(text: str, where: Path) -> ServerOptions:
    """The file as supervisord reads it (``%(ENV_...)s`` filled from this environment)."""
    (where / "run" / "log").mkdir(parents=True, exist_ok=True)
    return supervisord_reads(text, where)


def program(options: ServerOptions, name: str) -> object:
    return next(p for g in options.process_group_configs for p in g.process_configs
                if p.name == name)


def render(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code, out, err = run(capsys, "config", *argv)
    assert code == 0, err
    return out


def test_the_doors_redis_is_a_cache_on_loopback_that_writes_nothing_to_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = render(capsys, "local", "--service", "echo", "--redis", "--redis-max-memory",
                  "64MB", "--run-dir", str(tmp_path / "run"))
    options = parse_config(text, tmp_path)
    redis = program(options, "redis")
    argv = redis.command.split()  # type: ignore[attr-defined]
    assert argv[:5] == [REDIS_SERVER, "--bind", "127.0.0.1", "--port", "6379"]
    assert "--save ''" in redis.command and "--appendonly no" in redis.command  # type: ignore
    assert "--maxmemory 64mb --maxmemory-policy allkeys-lru" in redis.command  # type: ignore
    door = program(options, "mdp-http")
    assert door.environment["DIPS_HTTP_REDIS"] == "redis://127.0.0.1:6379/0"  # type: ignore
    assert door_kind(redis.command) == ("redis", "127.0.0.1:6379")  # type: ignore[attr-defined]
    assert "--redis 127.0.0.1:6379 --redis-max-memory 64mb" in text.splitlines()[1]


@pytest.mark.parametrize("argv, message", [
    (["broker-host", "--redis", "10.0.0.9:6379"], "needs a password: set $DIPS_REDIS_PASSWORD"),
    (["worker-host", "--cpus", "1", "--broker", "tcp://10.0.0.1:5555", "--sign-key", "/k"],
     "add --http"),
    (["worker-host", "--cpus", "1", "--broker", "tcp://10.0.0.1:5555", "--http", "0.0.0.0:80",
      "--sign-key", "/k/a", "--sign-salt", "/k/b", "--sign-key", "/k/c"], "go in pairs"),
    (["worker-host", "--cpus", "1", "--broker", "tcp://10.0.0.1:5555", "--sources-root",
      "images"], "give an absolute path"),
    (["broker-host", "--sources-allow", "https://a.example"], "runs no workers"),
    (["local", "--redis", "--redis-url", "redis://10.0.0.9:6379/0"], "give one of them"),
    (["local", "--redis-max-memory", "1gb"], "for the Redis that --redis runs"),
    (["local", "--redis-url", "http://10.0.0.9/"], "is not a redis:// URL"),
])
def test_image_options_that_cannot_work_are_refused_in_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DIPS_SUPERVISOR_PASSWORD", "pw")
    monkeypatch.delenv(images.REDIS_PASSWORD_ENV, raising=False)
    code, out, err = run(capsys, "config", *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


def redis_answer(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(command)
        return sock.recv(128)


@needs(HAVE_REDIS, "redis-server")
def test_a_password_protected_redis_keeps_only_its_hash_and_the_door_reads_it_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "k8s-Sx_2.~z"
    monkeypatch.setenv(images.REDIS_PASSWORD_ENV, password)
    monkeypatch.setenv("DIPS_SUPERVISOR_PASSWORD", "pw")
    port = free_port()
    text = render(capsys, "broker-host", "--redis", f"127.0.0.1:{port}", "--run-dir",
                  str(tmp_path / "run"), "--http", "127.0.0.1:8080")
    assert password not in text
    options = parse_config(text, tmp_path)  # supervisord fills the password in at start
    url = program(options, "mdp-http").environment["DIPS_HTTP_REDIS"]  # type: ignore
    assert url == f"redis://:{password}@127.0.0.1:{port}/0"
    command = program(options, "redis").command  # type: ignore[attr-defined]
    with subprocess.Popen(shlex.split(command), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, cwd=tmp_path) as redis:
        try:
            wait_for(lambda: _answers(port), 10, "redis-server to listen")
            assert redis_answer(port, b"PING\r\n").startswith(b"-NOAUTH")
            auth = f"AUTH {password}\r\nPING\r\n".encode()
            assert redis_answer(port, auth).startswith(b"+OK")
            monkeypatch.setenv(images.REDIS_PASSWORD_ENV, "another")
            assert run(capsys, "config", "broker-host", "--redis",
                       f"127.0.0.1:{port}")[0] == 0  # any password may be chosen anew
        finally:
            redis.kill()
    assert processes_under(tmp_path) == []


def _answers(port: int) -> bool:
    try:
        return bool(redis_answer(port, b"PING\r\n"))
    except OSError:
        return False


def test_a_password_a_url_cannot_carry_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(images.REDIS_PASSWORD_ENV, "a/b@c")
    code, _, err = run(capsys, "config", "broker-host", "--redis", "10.0.0.9:6379")
    assert code == 2 and "must be URL-safe" in err


def test_a_door_elsewhere_takes_the_password_from_supervisords_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(images.REDIS_PASSWORD_ENV, "s3cret")
    monkeypatch.setenv("DIPS_SUPERVISOR_PASSWORD", "pw")
    text = render(capsys, "worker-host", "--cpus", "1", "--broker", "tcp://10.0.0.1:5555",
                  "--service", "echo", "--http", "0.0.0.0:8080",
                  "--redis-url", "redis://10.0.0.9:6379/0")
    assert "s3cret" not in text
    assert ('environment=DIPS_HTTP_REDIS="redis://:%(ENV_DIPS_REDIS_PASSWORD)s@10.0.0.9:6379/0"'
            in text)


def test_keys_and_sources_reach_the_door_and_the_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIPS_SUPERVISOR_PASSWORD", "pw")
    text = render(capsys, "worker-host", "--cpus", "1", "--broker", "tcp://10.0.0.1:5555",
                  "--service", "imgproxy", "--http", "0.0.0.0:8080",
                  "--sign-key", "/etc/dips/a.key.hex", "--sign-salt", "/etc/dips/a.salt.hex",
                  "--sign-key", "/etc/dips/b.key.hex", "--sign-salt", "/etc/dips/b.salt.hex",
                  "--sources-root", "/srv/images", "--sources-root", "/srv/more",
                  "--sources-allow", "https://img.example.com", "--run-dir",
                  str(tmp_path / "run"))
    options = parse_config(text, tmp_path)
    door = program(options, "mdp-http").command  # type: ignore[attr-defined]
    assert ("--sign-key /etc/dips/a.key.hex --sign-salt /etc/dips/a.salt.hex "
            "--sign-key /etc/dips/b.key.hex --sign-salt /etc/dips/b.salt.hex") in door
    worker = program(options, "imgproxy-00").environment  # type: ignore[attr-defined]
    assert worker["DIPS_SOURCES_ROOTS"] == "/srv/images,/srv/more"
    assert worker["DIPS_SOURCES_ALLOW"] == "https://img.example.com"


def up_refusal(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> str:
    code, _, err = run(capsys, "--run-dir", str(tmp_path / "run"), "up", "--service",
                       "echo=1", "--gearman", "off", *argv)
    assert code == 2 and err.count("\n") == 1, err
    assert processes_under(tmp_path) == [] and not (tmp_path / "run").exists()
    return err


@pytest.mark.parametrize("argv, variable", [
    (["--sources-root", "."], "DIPS_SOURCES_ROOTS"),
    (["--sources-allow", "https://a.example"], "DIPS_SOURCES_ALLOW"),
    (["--redis-url", "redis://127.0.0.1:1/0"], "DIPS_HTTP_REDIS"),
    (["--redis"], "DIPS_HTTP_REDIS"),
    (["--sign-key", "k", "--sign-salt", "s"], "DIPS_HTTP_SIGN_KEY"),
])
def test_up_refuses_an_option_and_the_variable_that_says_the_same(
    argv: list[str], variable: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(variable, "/elsewhere")
    err = up_refusal(capsys, tmp_path, *argv)
    assert f"and ${variable} both say it: give one of them" in err


@pytest.mark.parametrize("argv, message", [
    (["--redis", "10.0.0.9:6379"], "listens on loopback only"),
    (["--redis", "--http", "off"], "not with --http off"),
    (["--redis-max-memory", "1gb"], "for the Redis that --redis runs"),
    (["--sources-root", "no-such-dir"], "--sources-root no-such-dir: not a directory"),
    (["--sign-key", "no-such.key", "--sign-salt", "no-such.salt"],
     "--sign-key no-such.key: not a readable file"),
])
def test_up_refuses_image_options_that_cannot_work_before_anything_starts(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert message in up_refusal(capsys, tmp_path, *argv)


@needs(HAVE_REDIS, "redis-server")
def test_up_refuses_a_taken_redis_port_in_one_line_naming_its_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = free_ports(3)
    brokers = [a for p in ours[:2] for a in ("--broker", f"tcp://127.0.0.1:{p}")]
    with taken_port(avoid=ours) as taken:
        port = taken.getsockname()[1]
        code, _, err = run(capsys, "--run-dir", str(tmp_path / "run"), "up", *brokers,
                           "--service", "echo=1", "--http", f"127.0.0.1:{ours[2]}",
                           "--gearman", "off", "--redis", f"127.0.0.1:{port}")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"mdpctl: redis (127.0.0.1:{port}) cannot start: port {port} on "
                          f"127.0.0.1 is in use by pid {os.getpid()} (")
    assert err.endswith("; move it with --redis HOST:PORT, or --redis off for none\n")
    assert processes_under(tmp_path) == []
