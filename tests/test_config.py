"""Settings refused with an error that names the option (no process started)."""

from __future__ import annotations

import pytest

from mdp import protocol as p
from mdp.config import BrokerConfig, WorkerConfig, parse_broker_args, parse_worker_args
from mdp.errors import ConfigError
from mdp.rates import MIN_LINK_FLOOR, format_rate, format_size, parse_rate, parse_size


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


def test_max_worker_losses_is_bounded_by_what_a_count_may_say() -> None:
    # a broker counting past MAX_LOSSES could not tell its clients the count (LOSSES)
    config = BrokerConfig(bind=["tcp://127.0.0.1:5555"], max_worker_losses=p.MAX_LOSSES + 1)
    with pytest.raises(ConfigError, match=f"--max-worker-losses must be at most {p.MAX_LOSSES}"):
        config.validate()
    for fine in (0, 1, p.MAX_LOSSES):
        BrokerConfig(bind=["tcp://127.0.0.1:5555"], max_worker_losses=fine).validate()


# --- the link floor (--link-floor, link_floor) ------------------------------------------

BROKER_ARGV = ["--bind", "tcp://127.0.0.1:5555"]
WORKER_ARGV = ["--broker", "tcp://127.0.0.1:5555", "--service", "echo"]


@pytest.mark.parametrize("text, bytes_per_second", [
    ("10MB/s", 10_000_000), ("80Mbit/s", 10_000_000), ("500KB/s", 500_000),
    ("500kB/s", 500_000), ("50Mb/s", 6_250_000), ("100Mbps", 12_500_000),
    ("1.5GB/s", 1_500_000_000), ("1MiB/s", 1 << 20), ("2 MB/s", 2_000_000),
    ("6250000", 6_250_000), ("1e6", 1_000_000), (" 1Gbit/s ", 125_000_000),
])
def test_a_rate_reads_in_bytes_or_bits_with_any_prefix(text: str,
                                                       bytes_per_second: int) -> None:
    assert parse_rate(text) == bytes_per_second
    assert parse_rate(format_rate(bytes_per_second)) == bytes_per_second  # (help, mdpctl)


@pytest.mark.parametrize("text, says", [
    ("bogus", "'bogus' is not a rate like 10MB/s"),
    ("", "is not a rate"),
    ("10MB", "did you mean 10MB/s?"),
    ("10 furlongs/s", "unknown unit 'furlongs/s'"),
    ("10mb/s", "unknown unit"),  # m is milli, b a bit: a typo, not a guess
    ("1..2MB/s", "'1..2' is not a number"),
    ("1e999", "not a finite rate"),
    ("0", "at least 100KB/s"),
    ("-5MB/s", "at least 100KB/s (100000 bytes per second), got -5MB/s"),
    ("50KB/s", "got 50KB/s"),
    ("799kbit/s", "got 99875"),
])
@pytest.mark.parametrize("parse, argv", [(parse_broker_args, BROKER_ARGV),
                                         (parse_worker_args, WORKER_ARGV)])
def test_a_bad_link_floor_is_refused_naming_the_flag(
        parse: object, argv: list[str], text: str, says: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        parse([*argv, f"--link-floor={text}"])  # type: ignore[operator]
    assert done.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: argument --link-floor: " in last and says in last


def test_the_link_floor_reaches_the_broker_and_the_worker_from_their_command_lines() -> None:
    broker, _ = parse_broker_args([*BROKER_ARGV, "--link-floor", "50Mbit/s"])
    worker, _, _ = parse_worker_args([*WORKER_ARGV, "--link-floor", "800kbit/s"])
    assert (broker.link_floor, worker.link_floor) == (6_250_000, MIN_LINK_FLOOR)
    assert parse_broker_args(BROKER_ARGV)[0].link_floor == p.DEFAULT_LINK_FLOOR
    assert parse_worker_args(WORKER_ARGV)[0].link_floor == p.DEFAULT_LINK_FLOOR


@pytest.mark.parametrize("value, says", [
    (0, "at least 100KB/s"), (-1, "at least"), (99_999, "got 99999"),
    (1e7, "whole number"), ("10MB/s", "whole number"), (True, "whole number"),
])
def test_link_floor_settings_out_of_range_name_their_option(value: object, says: str) -> None:
    for config in (BrokerConfig(link_floor=value),  # type: ignore[arg-type]
                   WorkerConfig(brokers=["tcp://127.0.0.1:5555"],
                                link_floor=value)):  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=f"--link-floor .*{says}"):
            config.validate()


def test_the_zmtp_timeout_covers_the_largest_message_at_the_link_floor() -> None:
    """32 MiB takes 3.36 s at the default 10 MB/s, 33.6 s at 1 MB/s; one interval more."""
    assert BrokerConfig().zmtp_timeout_ms == 3356 + 1000
    assert BrokerConfig(link_floor=1_000_000).zmtp_timeout_ms == 33_555 + 1000
    assert BrokerConfig(link_floor=1_000_000_000).zmtp_timeout_ms == 3 * 1000


# --- sizes (--max-queue-bytes) -------------------------------------------------------------


@pytest.mark.parametrize("text, size", [
    ("1GiB", 1 << 30), ("512MB", 512_000_000), ("64KiB", 65_536), ("64kB", 64_000),
    ("1073741824", 1 << 30), ("1.5GiB", 3 << 29), (" 2 MiB ", 2 << 20),
])
def test_a_size_reads_in_bytes_with_any_prefix(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert parse_size(format_size(size)) == size  # (the help shows the default so)


@pytest.mark.parametrize("text, says", [
    ("lots", "is not a size like 1GiB"), ("1Gb", "unknown unit 'Gb'"),
    ("1GB/s", "unknown unit"), ("-1MB", "is not a size"), ("1e999", "is not a size"),
])
def test_a_bad_size_is_refused_naming_the_flag(text: str, says: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        parse_broker_args([*BROKER_ARGV, f"--max-queue-bytes={text}"])
    assert done.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: argument --max-queue-bytes: " in last and says in last


def test_the_queued_bytes_bound_reaches_the_broker_and_holds_the_largest_message() -> None:
    assert parse_broker_args(BROKER_ARGV)[0].max_queue_bytes == 1 << 30
    config, _ = parse_broker_args([*BROKER_ARGV, "--max-queue-bytes", "64MiB"])
    assert config.max_queue_bytes == 64 << 20
    with pytest.raises(ConfigError, match="--max-queue-bytes .*--max-message-bytes"):
        BrokerConfig(max_queue_bytes=1 << 20).validate()  # below a 32 MiB request
    BrokerConfig(max_queue_bytes=4096, max_message_bytes=4096).validate()


def test_the_message_bound_takes_a_size_with_its_unit_on_both_roles() -> None:
    assert parse_broker_args(BROKER_ARGV)[0].max_message_bytes == 32 << 20
    config, _ = parse_broker_args([*BROKER_ARGV, "--max-message-bytes", "64MiB"])
    assert config.max_message_bytes == 64 << 20
    worker, _, _ = parse_worker_args([*WORKER_ARGV, "--max-message-bytes", "2000000"])
    assert worker.max_message_bytes == 2_000_000
