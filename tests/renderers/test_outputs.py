"""The output version (renderers.outputs): what a service's results depend on, and nothing
else. A copy of the package is changed file by file, and each service's version read again
in a fresh process, as a worker would announce it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import renderers
from renderers import outputs

REPO = Path(__file__).resolve().parents[2]
VERSIONS = """
import json
from mdp import handlers
import renderers
worker = handlers.resolve("imgproxy")  # as a worker does: it looks its service up first
print(json.dumps({"worker": worker.output,
                  **{name: renderers.output_version(name) for name in ("imgproxy", "ecard",
                                                                       "info", "thumbnail")}}))
"""


def versions(root: Path) -> dict[str, str]:
    found = subprocess.run([sys.executable, "-c", VERSIONS], capture_output=True, text=True,
                           env={"PYTHONPATH": f"{root}:{REPO}", "PATH": "/usr/bin:/bin"},
                           cwd=root, timeout=60, check=True)
    return dict(json.loads(found.stdout))


def relative(paths: set[Path]) -> set[str]:
    return {p.relative_to(outputs.ROOT).as_posix() for p in paths}


def test_every_data_file_of_the_package_is_read_by_a_named_module() -> None:
    named = {folder for folders in outputs.DATA.values() for folder in folders}
    for path in outputs.ROOT.rglob("*"):
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in (
                path.parts):
            part = path.relative_to(outputs.ROOT).parts[0]
            assert part in named or part in outputs.NOT_DATA, f"{path}: name it in DATA"


def test_a_service_s_files_are_what_its_module_imports_with_their_packages() -> None:
    imgproxy = relative(outputs.files_of(["renderers.imgproxy.service"]))
    assert {"imgproxy/service.py", "imgproxy/pipeline.py", "imgproxy/geometry.py",
            "decode.py", "encode.py", "ops.py", "settings.py", "fonts.py",
            "fonts/DIPSCardSans-Regular.otf"} <= imgproxy
    for other in ("ecard.py", "ecard_layout.py", "toolkit.py", "blurhash.py", "info.py",
                  "samples.py", "__init__.py", "outputs.py"):
        assert other not in imgproxy
    # what it asks an origin for can change which bytes arrive; a subpackage's __init__ runs
    assert {"sources/remote.py", "imgproxy/__init__.py"} <= imgproxy
    ecard = relative(outputs.files_of(["renderers.ecard"]))
    assert {"ecard.py", "ecard_layout.py", "png.py"} <= ecard
    assert not any(name.startswith("imgproxy/") for name in ecard)


def test_settings_that_change_drawn_bytes_change_the_version() -> None:
    """Results kept under one version must be what the workers draw now: a damaged source
    refused (render_damaged off) must not be served from a lenient render cached before."""
    before = renderers.current()
    first = renderers.output_version("imgproxy")
    try:
        for change in ({"render_damaged": False}, {"auto_webp": False},
                       {"max_animation_frames": 10}):
            renderers.configure(before, **change)
            assert renderers.output_version("imgproxy") != first, change
    finally:
        renderers.configure(before)
    assert renderers.output_version("imgproxy") == first


def test_the_card_s_title_is_the_card_s_alone() -> None:
    before = renderers.current()
    imgproxy, ecard = renderers.output_version("imgproxy"), renderers.output_version("ecard")
    try:
        renderers.configure(ecard_title="Another Title")
        assert renderers.output_version("imgproxy") == imgproxy
        assert renderers.output_version("ecard") != ecard
    finally:
        renderers.configure(before)


def test_a_change_re_keys_only_the_services_whose_drawing_it_touches(tmp_path: Path) -> None:
    shutil.copytree(outputs.ROOT, tmp_path / "renderers",
                    ignore=shutil.ignore_patterns("__pycache__"))
    first = versions(tmp_path)
    assert first["worker"] == first["imgproxy"]  # what a worker announces: its own service's
    assert len({first["imgproxy"], first["ecard"], first["info"], first["thumbnail"]}) == 4

    def change(name: str) -> dict[str, str]:
        path = tmp_path / "renderers" / name
        path.write_text(path.read_text() + "\n# changed\n")
        return versions(tmp_path)

    after_card = change("ecard_layout.py")
    assert after_card["ecard"] != first["ecard"]
    assert {k: after_card[k] for k in ("imgproxy", "info", "thumbnail")} == {
        k: first[k] for k in ("imgproxy", "info", "thumbnail")}
    after_fetch = change("sources/remote.py")  # its Accept header: which bytes arrive
    assert after_fetch["ecard"] == after_card["ecard"]
    assert after_fetch["imgproxy"] != after_card["imgproxy"]
    after_card = after_fetch
    after_decode = change("decode.py")
    assert after_decode["ecard"] == after_card["ecard"]
    for name in ("imgproxy", "info", "thumbnail"):
        assert after_decode[name] != after_card[name]
