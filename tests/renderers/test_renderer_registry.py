"""The registry, the request barrier every renderer shares, and the deployment settings."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from renderer_testing import *  # noqa: F403  (the fixtures; first: see there)

import renderers
from mdp.errors import BadRequest, ConfigError
from renderers import ecard, registry, samples, settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "RENDERERS.md"
SERVICES = ["convert", "crop", "ecard", "image", "imgproxy", "info", "thumbnail", "watermark"]


def test_every_service_is_registered_on_import() -> None:
    assert renderers.names() == SERVICES
    for name in SERVICES:
        renderer = renderers.get(name)
        assert renderer.name == name
        assert re.fullmatch(r"image/png|", renderer.content_type)  # "": the request chooses
        assert renderer.fields and all(isinstance(f, renderers.Field) for f in renderer.fields)


def test_describe_gives_each_service_its_fields() -> None:
    described = renderers.describe()
    assert sorted(described) == SERVICES
    assert described["ecard"]["content_type"] == "image/png"
    assert described["imgproxy"]["content_type"] == ""
    assert ["source", "string: http(s)://host/path or local:///path", False] == described[
        "imgproxy"]["fields"][0][:3]


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_gives_an_example_request_that_works_and_announces_it(name: str) -> None:
    """What `mdpctl services NAME` suggests: it names only declared fields, every required
    one, and renders (the either/or rules are the renderer's, not the table's)."""
    renderer = renderers.get(name)
    example = dict(renderer.example)
    declared = {f.name for f in renderer.fields}
    assert example and set(example) <= declared
    assert {f.name for f in renderer.fields if f.required} <= set(example)
    assert renderer.render(example)
    assert renderers.describe()[name]["example"] == example


def test_warm_up_draws_the_card_assets() -> None:
    renderers.warm_up("ecard")
    assert set(ecard._tiles) == {1, 2}


def test_warm_up_warms_only_the_services_the_process_looked_up() -> None:
    """A worker resolves its one service by name, then warms up: an imgproxy worker does not
    draw (and keep) the card's templates and tiles. A fresh process: the tiles are global."""
    program = (
        "import renderers\n"
        "from renderers import ecard\n"
        "assert renderers.services().get('imgproxy') is not None\n"
        "renderers.warm_up()\n"
        "print(sorted(ecard._tiles), ecard.template.cache_info().currsize)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "0"]


def test_unknown_service_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="no renderer named 'blur'"):
        renderers.get("blur")


def test_duplicate_and_reserved_names_are_refused() -> None:
    class Again(renderers.Renderer):
        name = "ecard"
        content_type = "image/png"
        fields = ()

    with pytest.raises(ConfigError, match="already registered"):
        renderers.register(Again)

    class Reserved(Again):
        name = "mmi.service"

    with pytest.raises(ConfigError, match="reserved"):
        renderers.register(Reserved)


def test_a_new_renderer_registers_and_checks_its_fields() -> None:
    @renderers.register
    class Echo(renderers.Renderer):
        name = "test.echo"
        content_type = "application/octet-stream"
        fields = (renderers.Field("data", "bytes", required=True),)

        def render_checked(self, request: Mapping[str, Any]) -> bytes:
            return bytes(request["data"])

    try:
        echo = renderers.get("test.echo")
        assert echo.render({"data": b"x", "_trace": 1}) == b"x"  # "_" keys are the platform's
        with pytest.raises(BadRequest) as caught:
            echo.render({"data": b"x", "extra": 1})
        assert caught.value.field == "extra"
        with pytest.raises(BadRequest) as caught:
            echo.render({})
        assert caught.value.field == "data"
    finally:
        registry.unregister("test.echo")
    assert "test.echo" not in renderers.names()


@pytest.mark.parametrize("request_map", [None, [], "pSN=1", b"", 42])
def test_a_request_that_is_not_a_map_is_a_bad_request(request_map: Any) -> None:
    for name in SERVICES:
        with pytest.raises(BadRequest):
            renderers.get(name).render(request_map)


def test_a_key_that_is_not_a_string_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="field names must be strings"):
        renderers.get("ecard").render({b"pSN": "1", "pData": samples.SEED_DATA})


def test_every_field_of_every_service_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for name in SERVICES:
        section = text.split(f"### `{name}`", 1)
        assert len(section) == 2, f"docs/RENDERERS.md has no section for {name}"
        for field in renderers.get(name).fields:
            assert f"`{field.name}`" in text, f"{name}.{field.name} is not documented"
    for variable in settings._ENVIRONMENT:
        assert variable in text


# settings -----------------------------------------------------------------------------------


def test_settings_from_the_environment() -> None:
    loaded = settings.from_environment(
        {"DIPS_MAX_PIXELS": "20_000_000", "DIPS_MAX_FRAMES": "10", "DIPS_ECARD_TITLE": "ACME"}
    )
    assert (loaded.max_pixels, loaded.max_frames, loaded.ecard_title) == (20_000_000, 10, "ACME")
    assert settings.from_environment({}) == settings.Settings()


@pytest.mark.parametrize(
    "environ",
    [
        {"DIPS_MAX_PIXELS": "lots"},
        {"DIPS_MAX_PIXELS": "0"},
        {"DIPS_MAX_SIDE": "70000"},
        {"DIPS_ECARD_TITLE": "  "},
        {"DIPS_TEXT_FONT": "/nonexistent.otf"},
    ],
)
def test_bad_environment_is_a_config_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        settings.from_environment(environ)


def test_configure_checks_names_and_the_title_glyphs(configure: Any) -> None:
    with pytest.raises(ConfigError, match="unknown renderer settings: max_pixel"):
        configure(max_pixel=5)
    with pytest.raises(ConfigError, match="no glyph"):
        configure(ecard_title="金山逍遥")
    previous = renderers.configure(max_frames=7)
    assert previous.max_frames != 7 and renderers.current().max_frames == 7


def test_a_bad_environment_stops_the_import() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import renderers"],
        env={"DIPS_MAX_PIXELS": "many", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "DIPS_MAX_PIXELS='many' is not an integer" in result.stderr


def test_text_font_setting_replaces_the_bundled_font(configure: Any, tmp_path: Path) -> None:
    from renderers import fonts

    font_file = tmp_path / "font.otf"
    font_file.write_bytes(fonts._font_bytes("Regular"))
    configure(text_font=str(font_file))
    out = renderers.get("watermark").render(
        {"image": samples.photo_jpeg(200, 100), "text": "DIPS", "format": "png"}
    )
    assert out.startswith(b"\x89PNG")


def test_watermark_text_setting_needs_glyphs(configure: Any) -> None:
    with pytest.raises(ConfigError, match="watermark_text: the bundled font has no glyph"):
        configure(watermark_text="逍遥")
    configure(watermark_text="© DIPS")
