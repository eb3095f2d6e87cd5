"""What the door repairs and honours the way imgproxy does, without sockets: expiry times,
query strings, paths a proxy normalised (imgproxy's own test vectors), conditional GETs and
a Cache-Control capped at a URL's expiry."""

from __future__ import annotations

import pytest

from mdp.errors import BadRequest
from mdp_http import imgops, imgurl, negotiate
from mdp_http.signing import Signer

SIGNER = Signer(((b"secret", b"hello"),))

# imgproxy's handlers/path_test.go, TestRedenormalizePathHTTPProtocol: (input, expected)
REDENORMALIZE_VECTORS = [
    ("plain/http:/example.com/image.jpg", "plain/http://example.com/image.jpg"),
    ("plain/https:/example.com/image.jpg", "plain/https://example.com/image.jpg"),
    ("plain/local:/image.jpg", "plain/local:///image.jpg"),
    ("/rs:fill:300:200/plain/http:/example.com/image.jpg",
     "rs:fill:300:200/plain/http://example.com/image.jpg"),
    ("/plain/http://example.com/image.jpg", "plain/http://example.com/image.jpg"),
    ("/rs:fill:300:200/plain/example.com/image.jpg",
     "rs:fill:300:200/plain/example.com/image.jpg"),
    ("", ""),
    ("/", ""),
    ("/http:/example.com/image.jpg", "http:/example.com/image.jpg"),
    ("/plain/example.com/image.jpg", "plain/example.com/image.jpg"),
    ("/plain/http:", "plain/http:"),
    ("/plain/http:/test", "plain/http://test"),
]

# TestParsePath: (request path, path after the signature)
SPLIT_VECTORS = [
    ("/dummy_signature/rs:fill:300:200/plain/http://example.com/image.jpg",
     "rs:fill:300:200/plain/http://example.com/image.jpg"),
    ("/dummy_signature/rs:fill:300:200/plain/http://example.com/image.jpg?param1=value1&p=2",
     "rs:fill:300:200/plain/http://example.com/image.jpg"),
    ("/dummy_signature/rs:fill:300:200/plain/https:/example.com/path/to/image.jpg",
     "rs:fill:300:200/plain/https://example.com/path/to/image.jpg"),
    ("/dummy_signature/rs%3Afill%3A300%3A200/plain/https://example.com/path/to/image.jpg",
     "rs:fill:300:200/plain/https://example.com/path/to/image.jpg"),
    ("/dummy_signature/rs%3Afill%3A300%3A200/abc/abc", "rs:fill:300:200/abc/abc"),
]


@pytest.mark.parametrize(("given", "expected"), REDENORMALIZE_VECTORS)
def test_a_normalised_path_is_repaired_as_imgproxy_repairs_it(given: str, expected: str) -> None:
    assert imgurl.redenormalize(given) == expected


@pytest.mark.parametrize(("path", "rest"), SPLIT_VECTORS)
def test_the_signature_and_path_split_as_imgproxy_splits_them(path: str, rest: str) -> None:
    assert imgurl.split_signature(path) == ("dummy_signature", rest)


def test_a_query_string_is_dropped_and_not_signed() -> None:
    path = imgurl.plain_path(["rs:fit:300:300"], "http://example.com/a.jpg", "webp")
    signed = f"/{SIGNER.sign(path)}{path}"
    for query in ("", "?v=2", "?utm_source=x&w=5"):
        url = imgurl.parse_path(signed + query)
        assert (url.source, url.extension) == ("http://example.com/a.jpg", "webp")
        assert SIGNER.verify(url.signature, url.signed_path)


def test_a_signature_made_for_the_path_verifies_on_the_path_a_proxy_normalised() -> None:
    path = "/rs:fill:300:200/plain/http://example.com/a.jpg"
    signature = SIGNER.sign(path)
    for sent in ("/rs%3Afill%3A300%3A200/plain/http://example.com/a.jpg",
                 "/rs:fill:300:200/plain/http:/example.com/a.jpg"):
        url = imgurl.parse_path(f"/{signature}{sent}")
        assert url.options == ("rs:fill:300:200",)
        assert url.source == "http://example.com/a.jpg"
        assert SIGNER.verify(url.signature, url.signed_path)
    local = imgurl.parse_path("/unsafe/w:10/plain/local:/photos/a.jpg")
    assert local.source == "local:///photos/a.jpg"


@pytest.mark.parametrize(("arg", "expires"), [
    ("1767225600", 1767225600), ("4102444800", 4102444800), ("0", None), ("-1", None),
])
def test_expires_takes_a_real_unix_time_and_0_means_never(arg: str, expires: int | None) -> None:
    assert imgops.parse_options([f"exp:{arg}"]).expires == expires


@pytest.mark.parametrize("arg", ["", "x", "1.5", "1" * 19])
def test_expires_that_is_no_unix_time_is_refused(arg: str) -> None:
    with pytest.raises(BadRequest, match="exp"):
        imgops.parse_options([f"exp:{arg}"])


@pytest.mark.parametrize(("given", "left", "capped"), [
    ("public, max-age=3600", 120.7, "public, max-age=120"),
    ("public, max-age=60", 120, "public, max-age=60"),
    ("max-age=3600, s-maxage=86400, stale-while-revalidate=600", 30,
     "max-age=30, s-maxage=30"),
    ("public", 90, "public, max-age=90"),
    ("public, max-age=3600", -5, "public, max-age=0"),
    ("no-store", 90, "no-store"),
])
def test_cache_control_never_outlives_the_urls_expiry(given: str, left: float,
                                                      capped: str) -> None:
    assert negotiate.cap_max_age(given, left) == capped


LAST_MODIFIED = "Sun, 06 Dec 2026 22:49:08 GMT"


@pytest.mark.parametrize(("inm", "ims", "expected"), [
    (None, LAST_MODIFIED, True),
    (None, "Sun, 06 Dec 2026 22:49:09 GMT", True),
    (None, "Sun, 06 Dec 2026 22:49:07 GMT", False),
    (None, "Sunday, 06-Dec-26 22:49:08 GMT", True),  # RFC 850's form, which RFC 9110 reads
    (None, "Sun Dec  6 22:49:08 2026", True),  # asctime's, also read (as GMT)
    (None, "Sun Dec  6 22:49:07 2026", False),
    (None, "yesterday", False),
    (None, "", False),
    ('"other"', LAST_MODIFIED, False),  # If-None-Match is there: it alone decides
    ('"tag"', "Sun, 06 Dec 2020 00:00:00 GMT", True),
])
def test_if_modified_since_is_honoured_unless_if_none_match_is_sent(
        inm: str | None, ims: str | None, expected: bool) -> None:
    assert negotiate.not_modified(inm, ims, '"tag"', LAST_MODIFIED) is expected
    assert negotiate.not_modified(None, ims, '"tag"', "") is False  # no Last-Modified known
