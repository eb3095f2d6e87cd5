"""`mdpctl services`: the call line it suggests for a service works.

The line comes from the example request the workers announce in READY (bytes fields given
as files), so it can say what required flags cannot: thumbnail's "width, height or both",
watermark's "text or mark", imgproxy's "source or image".  The unit tests check that the
line reads back, through mdpctl's own parser, as the example that travelled worker ->
broker -> mmi.status; the system test runs the suggested line of every service a default
local cluster offers against its real workers, so a service whose example is wrong fails
here.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from mdp import handlers
from mdp import status as st
from mdp.brokerstatus import clean_info
from mdpctl import cli
from mdpctl.catalog import FILE, Offer
from mdpctl.commands.call import build_request
from mdpctl.services import default_services
from renderers.samples import EXAMPLE_IMAGE

from .opstools import LocalCluster

OUT = "OUT"


def as_announced(name: str) -> st.ServiceInfo:
    """The service's info as a worker sends it, a broker keeps it and mmi.status reads it."""
    info = handlers.resolve(name).info
    assert info is not None
    kept = clean_info(info)
    assert kept is not None, f"the broker drops {name}'s description"
    return st.ServiceInfo.from_wire(kept)


def argv_of(line: str, file: Path, out: Path) -> list[str]:
    """The suggested line as a command, FILE (also ``"@FILE"`` inside JSON) and OUT filled."""
    words = shlex.split(line)
    assert words[:2] == ["mdpctl", "call"], line
    nested = json.dumps("@" + FILE), json.dumps(f"@{file}")
    filled = [word.replace(f"={FILE}", f"={file}").replace(*nested) for word in words[1:]]
    return [str(out) if word == OUT else word for word in filled]


def read_back(argv: list[str]) -> dict[str, Any]:
    return build_request(cli.parse(cli.build_parser(), argv))


@pytest.mark.parametrize("name", default_services())
def test_the_suggested_call_is_the_example_the_workers_announce(name: str,
                                                               tmp_path: Path) -> None:
    info = as_announced(name)
    assert info.example, f"{name}'s workers announce no example request"
    image = tmp_path / "image"
    image.write_bytes(EXAMPLE_IMAGE)
    line = Offer(name, {"tcp://127.0.0.1:1": 1}, info).example()
    assert read_back(argv_of(line, image, tmp_path / "out")) == info.example


def test_an_example_with_nested_bytes_and_tricky_texts_reads_back(tmp_path: Path) -> None:
    example = {"image": b"\x89PNG", "ops": [{"op": "watermark", "mark": b"\x89PNG"}],
               "serial": "007", "title": "@home", "note": "it's 'quoted'", "n": 5, "on": True}
    info = st.ServiceInfo(fields=(st.FieldInfo("image", "bytes: an image", True),),
                          example=example)
    image = tmp_path / "image"
    image.write_bytes(b"\x89PNG")
    line = Offer("x", {}, info).example()
    assert line.endswith(" -o OUT")
    assert read_back(argv_of(line, image, tmp_path / "out")) == example


def test_without_an_example_the_line_has_the_required_fields() -> None:
    fields = (st.FieldInfo("image", "bytes", True), st.FieldInfo("width", "integer", True),
              st.FieldInfo("height", "integer"))
    assert Offer("crop", {}, st.ServiceInfo("", fields)).example() == (
        "mdpctl call crop --file image=FILE --set width=VALUE -o OUT")
    assert Offer("plain", {}, None).example() == "mdpctl call plain --json '{...}'"


def test_an_example_too_large_for_ready_is_left_out_and_the_rest_kept() -> None:
    info = handlers.service_info("image/png", [["image", "bytes", True, ""]], "doc",
                                 example={"image": b"x" * (handlers.MAX_EXAMPLE_BYTES + 1)})
    assert "example" not in info
    assert st.ServiceInfo.from_wire(clean_info(info)).fields[0].name == "image"
    assert "example" not in handlers.service_info(example={1: "not a request map"})


# --- every service of a default local cluster, through its real worker ------------------

@pytest.mark.slow
def test_the_suggested_call_of_every_default_service_succeeds(
    local_cluster: LocalCluster, tmp_path: Path,
) -> None:
    up = local_cluster.up("--workers", "1", "--spare", "0")
    assert up.returncode == 0, up.stderr
    samples = local_cluster.ctl("samples", str(tmp_path))
    assert samples.returncode == 0, samples.stderr
    listing = local_cluster.ctl("services", "--json", "--timeout", "10")
    assert listing.returncode == 0, listing.stderr
    calls = {s["name"]: s["call"] for s in json.loads(listing.stdout)}
    offered = sorted(calls)
    assert offered == sorted(default_services())
    for name in offered:
        detail = local_cluster.ctl("services", name, "--timeout", "10")
        assert detail.returncode == 0, detail.stderr
        line = next(row.split("call", 1)[1].strip() for row in detail.stdout.splitlines()
                    if row.startswith("  call "))
        assert line == calls[name]  # the JSON listing suggests the same line
        out = tmp_path / f"out-{name}"
        done = local_cluster.ctl(*argv_of(line, tmp_path / "photo.jpg", out))
        assert done.returncode == 0, f"{line}\n{done.stderr}"
        if "-o" in shlex.split(line):
            assert out.stat().st_size > 0, line
