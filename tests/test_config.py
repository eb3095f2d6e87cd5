"""Settings refused with an error that names the option (no process started)."""

from __future__ import annotations

import pytest

from mdp.config import BrokerConfig, WorkerConfig, parse_worker_args
from mdp.errors import ConfigError


@pytest.mark.parametrize("changes,option", [
    ({"prefetch": 17}, "--prefetch"),
    ({"reply_gather_s": -0.001}, "--reply-gather"),
    ({"reply_gather_s": 0.01, "busy_after_s": 0.005}, "--reply-gather"),
    ({"busy_after_s": 40.0}, "--busy-after"),
])
def test_worker_settings_out_of_range_name_their_option(changes: dict[str, float],
                                                        option: str) -> None:
    config = WorkerConfig(brokers=["tcp://127.0.0.1:5555"], **changes)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=option):
        config.validate()


def test_reply_gather_reaches_the_worker_from_its_command_line() -> None:
    config, _, _ = parse_worker_args(["--broker", "tcp://127.0.0.1:5555", "--service", "echo",
                                      "--reply-gather", "0"])
    assert config.reply_gather_s == 0.0
    defaults, _, _ = parse_worker_args(["--broker", "tcp://127.0.0.1:5555", "--service", "echo"])
    assert defaults.reply_gather_s == WorkerConfig.reply_gather_s
    assert defaults.prefetch == WorkerConfig.prefetch <= BrokerConfig.max_prefetch
