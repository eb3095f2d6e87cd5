"""``mdpctl imgproxy``: a key and salt the door takes, and URLs signed as the door checks."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from mdp_http.imgurl import parse_path
from mdp_http.signing import Signer, post_text

VECTOR_PATH = "/fill/300/400/sm/0/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png"


def mdpctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mdpctl", "imgproxy", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_key_files_are_new_secret_and_what_the_door_reads(tmp_path: Path) -> None:
    done = mdpctl("key", "--dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    key, salt = tmp_path / "images.key.hex", tmp_path / "images.salt.hex"
    assert key.stat().st_mode & 0o777 == 0o600
    signer = Signer.from_files([str(key)], [str(salt)])
    assert signer is not None and len(signer.pairs[0][0]) == 32
    again = mdpctl("key", "--dir", str(tmp_path))
    assert again.returncode == 2 and "exists" in again.stderr


def test_sign_gives_imgproxys_test_vector_and_urls_the_door_verifies(tmp_path: Path) -> None:
    (tmp_path / "k").write_text(b"secret".hex())
    (tmp_path / "s").write_text(b"hello".hex())
    keys = ["--key", str(tmp_path / "k"), "--salt", str(tmp_path / "s")]
    done = mdpctl("sign", *keys, "--path", VECTOR_PATH)
    assert done.stdout.strip() == "/AfrOrF3gWeDA6VOlDG4TzxMv39O7MXnF4CXpKUwGqRM" + VECTOR_PATH
    signer = Signer(((b"secret", b"hello"),))
    for extra in ([], ["--encoded"]):
        done = mdpctl("sign", *keys, "--options", "rs:fit:300:300/q:80", "--source",
                      "http://127.0.0.1:9/a b.jpg", "--ext", "webp", "--base",
                      "http://door:8080", *extra)
        url = done.stdout.strip()
        assert url.startswith("http://door:8080/")
        parsed = parse_path(url.removeprefix("http://door:8080"))
        assert signer.verify(parsed.signature, parsed.signed_path)
        assert (parsed.source, parsed.extension) == ("http://127.0.0.1:9/a%20b.jpg", "webp")
    (tmp_path / "photo").write_bytes(b"\xff\xd8 not really a photo")
    done = mdpctl("sign", *keys, "--path", "/w:40/upload.png", "--body", str(tmp_path / "photo"))
    signature = done.stdout.strip().split("/")[1]
    digest = hashlib.sha256((tmp_path / "photo").read_bytes()).digest()
    assert signer.verify(signature, post_text("/w:40/upload.png", digest))


def test_sign_refuses_options_the_door_would_refuse_and_a_base_that_is_no_url(
    tmp_path: Path,
) -> None:
    (tmp_path / "k").write_text(b"secret".hex())
    (tmp_path / "s").write_text(b"hello".hex())
    keys = ["--key", str(tmp_path / "k"), "--salt", str(tmp_path / "s")]
    source = ["--source", "https://img.example.com/a.jpg"]
    for extra, named in ((["--options", "rs:fit:abc"], "--options: processing option 'rs'"),
                         (["--options", "w:10/nosuch:1"], "unknown processing option"),
                         (["--ext", "bmp"], "--ext: output format 'bmp'"),
                         (["--base", "door:8080"], "--base 'door:8080' is not"),
                         (["--base", "img.example.org"], "http(s) address")):
        done = mdpctl("sign", *keys, *source, *extra)
        assert done.returncode == 2 and done.stdout == "", (extra, done.stdout)
        assert named in done.stderr, (extra, done.stderr)
    # presets are the door's own: not checked here, nor a presets-only door's names
    for extra in (["--options", "rs:fit:300:300/pr:thumb"],
                  ["--options", "thumb:blurry", "--only-presets"]):
        done = mdpctl("sign", *keys, *source, *extra, "--base", "https://img.example.org/x")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("https://img.example.org/x/")
