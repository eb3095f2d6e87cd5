"""Client options: one frozen object, checked once; malformed endpoints refused at once."""

from __future__ import annotations

import pytest
import zmq

from mdp import protocol as p
from mdp.aio import AsyncMDPClient
from mdp.client import MDPClient
from mdp.clientcore import ClientCore
from mdp.errors import ConfigError
from mdp.options import ClientOptions, check_endpoint
from mdp.rates import MIN_LINK_FLOOR


@pytest.mark.parametrize("endpoint", [
    "tcp://127.0.0.1:5555", "tcp://localhost:1", "tcp://broker-a.example:65535",
    "tcp://[::1]:5555", "ipc:///tmp/dips.sock", "inproc://broker",
])
def test_good_endpoints_pass(endpoint: str) -> None:
    assert check_endpoint(endpoint) == endpoint


@pytest.mark.parametrize(("endpoint", "says"), [
    ("127.0.0.1:5555", "did you mean 'tcp://127.0.0.1:5555'"),
    ("localhost", "names no transport"),
    ("tcp://127.0.0.1", "malformed"),
    ("tcp://127.0.0.1:0", "out of range"),
    ("tcp://127.0.0.1:70000", "out of range"),
    ("tcp://*:5555", "for binding"),
    ("http://127.0.0.1:5555", "names no transport"),
    ("", "empty"),
])
def test_malformed_endpoints_are_refused_with_one_line(endpoint: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        check_endpoint(endpoint)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("make", [
    lambda: MDPClient(["127.0.0.1:5555"]),
    lambda: AsyncMDPClient(["127.0.0.1:5555"]),
    lambda: ClientCore(["tcp://127.0.0.1:5555", "nope"]),
    lambda: MDPClient("tcp://127.0.0.1:5555"),
    lambda: MDPClient([]),
    lambda: MDPClient(["tcp://127.0.0.1:5555", "tcp://127.0.0.1:5555"]),
])
def test_every_client_refuses_bad_brokers_before_opening_anything(
        make: object, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_socket(*args: object, **kwargs: object) -> None:
        raise AssertionError("a socket was opened for brokers that are refused")

    monkeypatch.setattr(zmq.Context, "socket", no_socket)
    with pytest.raises(ConfigError):
        make()  # type: ignore[operator]


def test_options_are_one_frozen_object_with_keyword_overrides() -> None:
    options = ClientOptions(timeout=3.0)
    client = MDPClient(["tcp://127.0.0.1:5555"], options, retries=1)
    try:
        assert client.options == ClientOptions(timeout=3.0, retries=1)
        assert client._core.options is client.options
    finally:
        client.close()
    with pytest.raises(ConfigError, match="unknown client option"):
        MDPClient(["tcp://127.0.0.1:5555"], tiemout=3.0)
    with pytest.raises(ConfigError, match="timeout must be a positive"):
        ClientOptions(timeout=0)
    with pytest.raises(ConfigError, match="retries"):
        ClientOptions(retries=-1)



def test_the_link_floor_is_a_client_option_checked_with_the_others() -> None:
    assert ClientOptions().link_floor == p.DEFAULT_LINK_FLOOR
    client = MDPClient(["tcp://127.0.0.1:5555"], link_floor=1_000_000)
    try:
        assert [ep.link_floor for ep in client._core.endpoints] == [1_000_000]
    finally:
        client.close()
    for value in (0, -10_000_000, MIN_LINK_FLOOR - 1):
        with pytest.raises(ConfigError, match="link_floor must be at least 100KB/s"):
            ClientOptions(link_floor=value)
    with pytest.raises(ConfigError, match="link_floor must be a whole number"):
        ClientOptions(link_floor="10MB/s")  # type: ignore[arg-type]
