"""thumbor's URLs read as imgproxy options, without sockets: which grammar a path is,
thumbor's signatures (vectors made with libthumbor's CryptoURL), and the translation."""

from __future__ import annotations

from pathlib import Path

import pytest

from mdp.errors import BadRequest, ConfigError
from mdp_http import imgops, signing, thumborurl

KEY = b"MY_SECURE_KEY"
# libthumbor 2.0.2: CryptoURL(key="MY_SECURE_KEY").generate(...)
SIGNED = [
    "/OHHMqHwGrH1gubkMMveC8Ireg7A=/300x200/smart/my.server.com/some/path/to/image.jpg",
    "/M15u3WShztxNMxl-Pv7HNjIUhTM=/10x10:200x150/fit-in/300x200/"
    "filters:quality(80):fill(red)/http://127.0.0.1:9/a.jpg",
]


@pytest.mark.parametrize("url", SIGNED)
def test_thumbors_signature_is_libthumbors(url: str) -> None:
    signature, rest = url[1:].split("/", 1)
    assert thumborurl.signature_of(KEY, rest) == signature
    assert thumborurl.verify(KEY, signature, rest)
    assert thumborurl.verify(KEY, signature.replace("=", "%3D"), rest)  # quoted, as sent
    assert not thumborurl.verify(KEY, signature, rest.replace("300", "301"))
    assert not thumborurl.verify(b"other", signature, rest)


@pytest.mark.parametrize("rest", [
    "300x200/img.example.com/a.jpg", "fit-in/300x200/img.example.com/a.jpg",
    "-0x-0/img.example.com/a.jpg", "10x10:200x150/img.example.com/a.jpg",
    "smart/img.example.com/a.jpg", "filters:quality(80)/img.example.com/a.jpg",
    "left/img.example.com/a.jpg", "trim/img.example.com/a.jpg",
    "img.example.com/a.jpg", "127.0.0.1:8000/a.jpg", "http://img.example.com/a.jpg",
    "https%3A%2F%2Fimg.example.com%2Fa.jpg", "localhost:8000/a.jpg",
])
def test_thumbor_paths_are_told_from_imgproxys(rest: str) -> None:
    assert thumborurl.is_thumbor(rest)


@pytest.mark.parametrize("rest", [
    "rs:fill:300:200/plain/http://img.example.com/a.jpg", "plain/http://img.example.com/a.jpg",
    "w:30/https://img.example.com/a.jpg", "rs%3Afill%3A3%3A2/plain/http://x.example/a.jpg",
    "local:///a.jpg", "aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl.jpg", "zz:1/plain/http://a.b/c",
    "thumb:blurry/plain/http://a.b/c", "upload.png", "enc/abc", "nothing/here", "here",
    "t:10/plain/http://a.b/c",
])
def test_imgproxy_paths_and_others_are_not_thumbors(rest: str) -> None:
    assert not thumborurl.is_thumbor(rest)


@pytest.mark.parametrize(("rest", "options"), [
    ("300x200/h.example/a.jpg", ["rs:fill:300:200:1:0"]),
    ("300x200/filters:no_upscale()/h.example/a.jpg", ["rs:fill:300:200:0:0"]),
    ("300x200/filters:stretch()/h.example/a.jpg", ["rs:force:300:200:1:0"]),
    ("300x0/h.example/a.jpg", ["rs:fit:300:0:1:0"]),
    ("fit-in/300x200/h.example/a.jpg", ["rs:fit:300:200:0:0"]),
    ("fit-in/300x200/filters:upscale()/h.example/a.jpg", ["rs:fit:300:200:1:0"]),
    ("fit-in/300x200/filters:fill(f00)/h.example/a.jpg", ["rs:fit:300:200:0:1", "bg:f00"]),
    ("fit-in/300x200/filters:fill(white,1)/h.example/a.jpg",
     ["rs:fit:300:200:0:1", "bg:ffffff"]),
    ("fit-in/300x200/filters:fill(transparent)/h.example/a.jpg", ["rs:fit:300:200:0:1"]),
    ("-300x-200/h.example/a.jpg", ["fl:1:1", "rs:fill:300:200:1:0"]),
    ("10x20:110x70/h.example/a.jpg", ["c:100:50:nowe:10:20"]),
    ("0x0:110x70/h.example/a.jpg", ["c:110:70:nowe"]),
    ("50x20:10x70/h.example/a.jpg", []),  # thumbor ignores an empty crop
    ("300x200/right/bottom/h.example/a.jpg", ["rs:fill:300:200:1:0", "g:soea"]),
    ("300x200/smart/h.example/a.jpg", ["rs:fill:300:200:1:0", "g:sm"]),
    ("filters:rotate(90)/h.example/a.jpg", ["rot:270"]),  # thumbor turns counter-clockwise
    ("filters:rotate(-90)/h.example/a.jpg", ["rot:90"]),
    ("filters:rotate(45)/h.example/a.jpg", []),  # thumbor ignores other angles
    # turned: the size, the crop and the alignment follow the rotation
    ("10x20:110x70/300x200/left/filters:rotate(90)/h.example/a.jpg",
     ["rot:270", "c:50:100:sowe:20:10", "rs:fill:200:300:1:0", "g:so"]),
    # flipped before it is turned: imgproxy flips after turning, on the other axis
    ("-300x200/filters:rotate(270)/h.example/a.jpg", ["rot:90", "fl:0:1",
                                                       "rs:fill:200:300:1:0"]),
    ("-10x20:110x70/h.example/a.jpg", []),
    ("filters:quality(60):format(webp):blur(4)/h.example/a.jpg", ["q:60", "f:webp", "bl:4"]),
    ("filters:blur(4,1.5):strip_exif()/h.example/a.jpg", ["bl:1.5"]),
])
def test_thumbor_urls_become_the_imgproxy_options_that_give_thumbors_image(
        rest: str, options: list[str]) -> None:
    parsed = thumborurl.parse(rest)
    assert [o for o in parsed.options if o != "ar:0"] == options
    assert "ar:0" in parsed.options  # thumbor's RESPECT_ORIENTATION is off by default
    assert "ar:0" not in thumborurl.parse(rest, respect_orientation=True).options
    imgops.parse_options(parsed.options)  # the door reads them as any imgproxy URL's


def test_the_image_is_read_as_thumbors_http_loader_reads_it() -> None:
    for rest, source in (("300x200/h.example/a%20b.jpg", "http://h.example/a%20b.jpg"),
                         ("https%3A%2F%2Fh.example%2Fa.jpg", "https://h.example/a.jpg"),
                         ("fit-in/9x9/http://h.example:81/a.jpg?x", "http://h.example:81/a.jpg?x"),
                         ("127.0.0.1:8000/p/a.jpg", "http://127.0.0.1:8000/p/a.jpg")):
        assert thumborurl.parse(rest).source == source


@pytest.mark.parametrize(("rest", "named"), [
    ("filters:grayscale()/h.example/a.jpg", "grayscale"),
    ("filters:sepia()/h.example/a.jpg", "sepia"),
    ("filters:strip_icc()/h.example/a.jpg", "strip_icc"),
    ("filters:fill(auto)/h.example/a.jpg", "auto"),
    ("filters:format(heic)/h.example/a.jpg", "heic"),
    ("filters:quality(abc)/h.example/a.jpg", "quality"),
    ("full-fit-in/300x200/h.example/a.jpg", "full-fit-in"),
    ("adaptive-fit-in/300x200/h.example/a.jpg", "adaptive-fit-in"),
    ("trim/h.example/a.jpg", "trim"),
    ("meta/h.example/a.jpg", "meta"),
    ("origx100/h.example/a.jpg", "orig"),
])
def test_what_thumbor_has_and_this_door_does_not_is_a_400_naming_it(rest: str,
                                                                     named: str) -> None:
    with pytest.raises(BadRequest) as caught:
        thumborurl.parse(rest)
    assert named in caught.value.message


def test_the_thumbor_key_is_the_text_of_its_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes(b"MY_SECURE_KEY\n")
    assert signing.thumbor_key(str(tmp_path / "key")) == KEY
    for path, named in ((tmp_path / "missing", "cannot read"), (tmp_path / "empty", "empty")):
        if named == "empty":
            path.write_bytes(b"\n")
        with pytest.raises(ConfigError, match=named):
            signing.thumbor_key(str(path))
