"""The handler registry: echo built in, services from the dips.services entry points."""

from __future__ import annotations

import threading
from importlib import metadata
from typing import Any

import pytest

from mdp import handlers
from mdp.errors import ConfigError
from mdp.version import code_version, handler_packages, package_hash


class Provider:
    """What a third-party package's entry point may load: services() and warm_up()."""

    warmed = 0

    def services(self) -> dict[str, Any]:
        return {"shout": lambda request: str(request.get("text", "")).upper()}

    def warm_up(self) -> None:
        Provider.warmed += 1


PROVIDER = Provider()
BROKEN = 42  # gives no mapping


def entry(value: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(value.partition(":")[0], value, handlers.GROUP)


def test_echo_is_built_in_and_returns_the_request_frame_unchanged() -> None:
    echo = handlers.resolve("echo")
    assert echo.raw and echo.instant and echo.package is None
    frame = b"\x81\xa1a\x01"
    assert echo.call(frame) is frame


def test_renderers_register_through_the_entry_point() -> None:
    ecard = handlers.resolve("ecard")
    assert ecard.package == "renderers" and ecard.warm_up is not None and not ecard.raw
    assert "renderers" in handler_packages()


def test_a_third_party_provider_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "_providers", lambda: [entry("test_handlers:PROVIDER")])
    shout = handlers.resolve("shout")
    assert shout.call({"text": "hi"}) == "HI" and shout.package == "test_handlers"
    assert shout.warm_up is not None
    shout.warm_up()
    assert Provider.warmed == 1


def test_an_unknown_service_names_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "_providers", lambda: [entry("test_handlers:PROVIDER")])
    with pytest.raises(ConfigError, match=r"unknown service 'nope'; known: echo, shout"):
        handlers.resolve("nope")


def test_a_broken_provider_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(handlers, "_providers", lambda: [entry("test_handlers:BROKEN")])
    with pytest.raises(ConfigError, match="gives no service mapping"):
        handlers.resolve("shout")
    monkeypatch.setattr(handlers, "_providers", lambda: [entry("no_such_module_x:THING")])
    with pytest.raises(ConfigError, match="cannot load dips.services entry point"):
        handlers.resolve("shout")


def test_service_names_are_echo_and_every_providers_in_their_order(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import renderers

    assert handlers.service_names() == ["echo", *renderers.services()]
    monkeypatch.setattr(handlers, "_providers", lambda: [entry("test_handlers:PROVIDER"),
                                                         entry("test_handlers:PROVIDER")])
    assert handlers.service_names() == ["echo", "shout"]
    monkeypatch.setattr(handlers, "_providers", lambda: [entry("test_handlers:BROKEN")])
    with pytest.raises(ConfigError, match="gives no service mapping"):
        handlers.service_names()


def test_the_code_version_covers_the_handler_package() -> None:
    assert code_version() == code_version("renderers")  # renderers is a provider already
    assert code_version("test_handlers") == code_version()  # not a package: nothing added


def test_progress_outside_a_task_is_a_no_op() -> None:
    handlers.progress(1, 2)
    handlers.send_data(b"x")
    handlers.warn("careful")


def test_progress_inside_a_task_reaches_the_worker_from_the_handler_thread_only() -> None:
    got: list[tuple[Any, ...]] = []
    handlers.reporting(lambda *report: got.append(report))
    try:
        handlers.progress(3, 10)
        handlers.send_data(bytearray(b"chunk"))
        handlers.warn("héllo")
        other = threading.Thread(target=handlers.progress, args=(9, 10))
        other.start()
        other.join(timeout=5)
    finally:
        handlers.reporting(None)
    handlers.progress(10, 10)  # the task is over
    assert got == [("status", 3, 10, None), ("data", None, None, b"chunk"),
                   ("warning", None, None, "héllo".encode())]


def test_progress_refuses_what_cannot_travel() -> None:
    handlers.reporting(lambda *report: None)
    try:
        with pytest.raises(ValueError, match="num"):
            handlers.progress(-1, 2)
        with pytest.raises(ValueError, match="den"):
            handlers.progress(1, True)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="send_data takes bytes"):
            handlers.send_data("text")  # type: ignore[arg-type]
    finally:
        handlers.reporting(None)


class Versioned:
    """A provider that tells its output version (or fails to)."""

    def __init__(self, version: Any = None, error: bool = False) -> None:
        self.version, self.error = version, error

    def output_version(self) -> Any:
        if self.error:
            raise RuntimeError("no version here")
        return self.version


def test_the_output_version_is_the_provider_s_or_its_package_s_code(
        caplog: pytest.LogCaptureFixture) -> None:
    assert handlers.output_version_of(Versioned("v" * 80), "anything") == "v" * 64
    assert handlers.output_version_of(Provider(), "renderers") == package_hash("renderers")
    assert handlers.output_version_of(Provider(), "test_handlers") is None  # not a package
    with caplog.at_level("WARNING", logger="mdp.handlers"):
        assert handlers.output_version_of(Versioned(error=True), "x") is None
        assert handlers.output_version_of(Versioned(7), "x") is None
    assert "RuntimeError: no version here" in caplog.text and "not a string: 7" in caplog.text


def test_the_renderers_output_version_follows_what_draws_and_not_the_core() -> None:
    import renderers

    ecard = handlers.resolve("ecard")
    assert ecard.output == renderers.output_version() and len(ecard.output) == 16
    assert handlers.resolve("echo").output is None
    before = renderers.configure(ecard_title="Another Title")
    try:
        assert renderers.output_version() != ecard.output
    finally:
        renderers.configure(before)
    assert renderers.output_version() == ecard.output
