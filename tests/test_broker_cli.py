"""The broker's and the worker's command lines: every flag explained with its default, a
version, and a malformed endpoint refused at once in one line (no process started)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from mdp.config import parse_broker_args, parse_worker_args


@pytest.mark.parametrize("parse", [parse_broker_args, parse_worker_args])
def test_help_explains_every_flag_with_its_default(parse: object,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        parse(["--help"])  # type: ignore[operator]
    assert done.value.code == 0
    text = capsys.readouterr().out.split("options:", 1)[1]
    flags = re.findall(r"^\s{2}(--[a-z-]+)", text, flags=re.M)
    assert "--heartbeat-interval" in flags and "--version" in flags
    for flag in flags:  # each flag's own entry has a line of help
        entry = text.split(flag, 1)[1].split("\n  --", 1)[0]
        assert len(entry.strip().split()) > 1, f"{flag} has no help"
    for flag in ("--heartbeat-interval", "--max-prefetch" if "--max-prefetch" in flags
                 else "--prefetch"):
        assert "(default:" in text.split(flag, 1)[1].split("\n  --", 1)[0]


@pytest.mark.parametrize("argv", [
    ["--bind", "127.0.0.1:5555"],
    ["--bind", "tcp://*:99999"],
])
def test_a_malformed_bind_is_refused_in_one_line(argv: list[str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        parse_broker_args(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mdp-broker: --bind")


def test_a_malformed_broker_endpoint_is_refused_in_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        parse_worker_args(["--broker", "127.0.0.1:5555", "--service", "echo"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'tcp://127.0.0.1:5555'" in err


def test_bind_takes_any_interface_and_any_port() -> None:
    config, _ = parse_broker_args(["--bind", "tcp://*:5555", "--bind", "tcp://127.0.0.1:*"])
    assert config.bind == ["tcp://*:5555", "tcp://127.0.0.1:*"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        parse_broker_args(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("mdp-broker ")



def test_a_broker_given_a_bogus_link_floor_exits_with_one_clear_line() -> None:
    """The real program: exit 2 before anything is bound, the flag and the fault named."""
    done = subprocess.run([sys.executable, "-m", "mdp.broker", "--bind", "tcp://127.0.0.1:*",
                           "--link-floor", "bogus"], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last == ("mdp-broker: error: argument --link-floor: 'bogus' is not a rate like "
                    "10MB/s, 80Mbit/s, 500KB/s or a number of bytes per second")
