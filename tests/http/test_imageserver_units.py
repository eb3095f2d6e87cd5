"""The image server's decisions without sockets: imgproxy URLs and options, signing,
negotiation, request keys and ETags, the result caches and the body frames."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import msgpack
import pytest

from mdp.errors import BadRequest
from mdp_http import imgops, imgurl, negotiate
from mdp_http.bodies import Budget, map_prefix
from mdp_http.errors import Busy, NotFound, status_for
from mdp_http.resultcache import Breaker, Cached, Entry, MemoryCache, TieredCache
from mdp_http.signing import Signer, post_text, sign

DOC_SIGNATURE = "AfrOrF3gWeDA6VOlDG4TzxMv39O7MXnF4CXpKUwGqRM"
SOURCE = "http://example.com/images/curiosity.jpg"
# imgproxy's documented example in its three spellings (docs: "Processing an image")
DOC_EXAMPLES = [
    f"/{DOC_SIGNATURE}/preset:sharp/resize:fill:300:400:0/gravity:sm/plain/{SOURCE}@png",
    f"/{DOC_SIGNATURE}/pr:sharp/rs:fill:300:400:0/g:sm/plain/{SOURCE}@png",
    f"/{DOC_SIGNATURE}/pr:sharp/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/"
    "cy9jdXJpb3NpdHku/anBn.png",
]
SHARP = imgops.Presets.parse(["sharp=sh:0.7"])
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "imgproxy_cases.json"


def parse(path: str, presets: imgops.Presets = SHARP) -> tuple[imgurl.ImageUrl,
                                                               imgops.Processing]:
    url = imgurl.parse_path(path)
    proc = imgops.parse_options(url.options, presets)
    if url.extension:
        proc.format = imgops.output_format(url.extension)
    return url, proc


def test_the_signature_test_vector_of_imgproxy_verifies() -> None:
    path = "/fill/300/400/sm/0/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png"
    assert sign(b"secret", b"hello", path) == DOC_SIGNATURE
    assert Signer(((b"secret", b"hello"),)).verify(DOC_SIGNATURE, path)


@pytest.mark.parametrize("path", DOC_EXAMPLES)
def test_imgproxy_documented_examples_read_alike(path: str) -> None:
    url, proc = parse(path)
    assert url.signature == DOC_SIGNATURE
    assert url.source == SOURCE
    assert proc.format == "png"
    assert proc.ops == {"sharpen": 0.7, "gravity": {"type": "sm"},
                        "resize": {"type": "fill", "width": 300, "height": 400,
                                   "enlarge": False, "extend": False}}


def test_the_signed_path_is_everything_after_the_signature_as_sent() -> None:
    url = imgurl.parse_path("/sig/rs:fit:10:10/plain/http://a.example/x%20y.jpg@webp")
    assert url.signed_path == "/rs:fit:10:10/plain/http://a.example/x%20y.jpg@webp"
    assert url.source == "http://a.example/x%20y.jpg"  # as sent: the worker fetches that
    assert url.extension == "webp"


def test_equivalent_options_give_one_canonical_map() -> None:
    spellings = ["w:300", "rs:fit:300", "s:300:0", "rt:fit/width:300", "rs:fill:10:10/rs:fit:300:0"]
    maps = [imgops.parse_options(s.split("/")).ops for s in spellings]
    assert all(m == maps[0] for m in maps)
    assert imgops.parse_options([]).ops == {}
    assert imgops.parse_options(["rot:450", "bl:0", "dpr:1"]).ops == {"rotate": 90}


def test_each_supported_option_reads_into_the_contract_map() -> None:
    proc = imgops.parse_options([
        "rs:fill-down:200:100:1:1", "dpr:2", "g:noea:5:0.5", "c:0.5:300:sowe", "pd:10:20",
        "bg:ff8000", "bl:1.5", "sh:0.3", "rot:-90", "fl:1:0", "sm:1", "ar:0",
        "wm:0.5:re:10:10:0.2", "q:80", "f:jpg", "cb:v2", "fn:photo", "att:1"])
    assert proc.ops == {
        "resize": {"type": "fill-down", "width": 200, "height": 100, "enlarge": True,
                   "extend": True},
        "dpr": 2, "gravity": {"type": "noea", "x": 5, "y": 0.5},
        "crop": {"width": 0.5, "height": 300, "gravity": {"type": "sowe"}},
        "padding": [10, 20, 10, 20], "background": [255, 128, 0], "blur": 1.5,
        "sharpen": 0.3, "rotate": 270, "flip": [True, False], "strip_metadata": True,
        "auto_rotate": False,
        "watermark": {"opacity": 0.5, "position": "re", "x": 10, "y": 10, "scale": 0.2}}
    assert (proc.quality, proc.format, proc.cachebuster) == (80, "jpeg", "v2")
    assert (proc.filename, proc.attachment) == ("photo", True)
    assert imgops.parse_options(["bg:10:20:30"]).ops == {"background": [10, 20, 30]}
    assert imgops.parse_options(["bg:abc", "bg:"]).ops == {}
    assert imgops.parse_options(["g:fp:0.25:1"]).ops["gravity"] == {"type": "fp", "x": 0.25,
                                                                    "y": 1}


@pytest.mark.parametrize(("option", "named"), [
    ("trim:10", "'trim' is not supported"), ("ra:nearest", "'ra' is not supported"),
    ("mb:1000", "'mb' is not supported"), ("nosuch:1", "unknown processing option 'nosuch'"),
    ("rs:zoom:1:1", "unknown resizing type"), ("w:abc", "'w': 'abc' is not an integer"),
    ("w:-5", "outside"), ("rot:45", "not a multiple of 90"), ("g:up", "unknown gravity"),
    ("q:101", "outside"), ("f:tiff", "'tiff' is not supported"), ("el:maybe", "not a boolean"),
    ("dpr:0", "greater than 0"), ("bg:12", "not a hex color"), ("pr:nope", "unknown preset"),
    ("w:1:2", "takes 1 arguments"), ("ex:1:sm", "smart gravity"), ("wm:0.5:up", "position"),
])
def test_a_wrong_or_unsupported_option_is_refused_by_name(option: str, named: str) -> None:
    with pytest.raises(BadRequest) as caught:
        imgops.parse_options([option])
    assert named in str(caught.value)
    assert caught.value.field == "options"
    assert status_for(caught.value) == 400


def test_presets_default_and_only_presets_mode() -> None:
    presets = imgops.Presets.parse(["default=q:70/sm:1", "thumb=rs:fill:64:64", "blurry=bl:2"])
    assert imgops.parse_options(["w:10"], presets).quality == 70
    only = imgops.Presets.parse(["thumb=rs:fill:64:64", "blurry=bl:2"], only=True)
    proc = imgops.parse_options(["thumb:blurry"], only)
    assert proc.ops["blur"] == 2 and proc.ops["resize"]["width"] == 64
    with pytest.raises(BadRequest, match="unknown preset 'w'"):
        imgops.parse_options(["w:10"], only)
    with pytest.raises(ValueError, match="NAME=option"):
        imgops.Presets.parse(["nonsense"])
    with pytest.raises(BadRequest, match="not supported"):
        imgops.Presets.parse(["bad=trim:1"])


def test_presets_that_name_each_other_are_refused() -> None:
    with pytest.raises(BadRequest, match="nest deeper"):
        imgops.Presets.parse(["a=pr:b", "b=pr:a"])


@pytest.mark.parametrize(("path", "named"), [
    ("/sig/rs:fit:1:1/plain/ftp://x/y.jpg", "scheme 'ftp'"),
    ("/sig/rs:fit:1:1/plain/file:///etc/passwd", "scheme 'file'"),
    ("/sig/rs:fit:1:1/plain/local://etc/passwd", "local:///"),
    ("/sig/rs:fit:1:1/plain/", "empty"),
    ("/sig/rs:fit:1:1/enc/abcdef", "encrypted"),
    ("/sig/rs:fit:1:1/!!!notbase64", "base64"),
    ("/sig/rs:fit:1:1", "no source"),
    ("/justone", "an image URL is"),
])
def test_a_malformed_image_url_gets_a_clear_error(path: str, named: str) -> None:
    with pytest.raises(BadRequest) as caught:
        raw, _, query = path.partition("?")
        imgurl.parse_path(raw + ("?" + query if query else ""))
    assert named in str(caught.value)


@pytest.mark.parametrize(("path", "source"), [
    ("/unsafe/rs:fill:300:200/local:///p1.jpg", "local:///p1.jpg"),
    ("/unsafe/local:///p1.jpg@webp", "local:///p1.jpg@webp"),
    ("/unsafe/w:30/https://img.example.com/a.jpg", "https://img.example.com/a.jpg"),
    ("/unsafe/w:30/https%3A%2F%2Fimg.example.com%2Fa.jpg", "https://img.example.com/a.jpg"),
    ("/unsafe/w:30/HTTP:%2F%2Fimg.example.com/a.jpg", "HTTP://img.example.com/a.jpg"),
])
def test_a_plain_source_without_plain_says_where_plain_goes(path: str, source: str) -> None:
    """Left out, the source was read as options or base64: 'the base64 source URL is not
    UTF-8 text'."""
    for info in (False, True):
        with pytest.raises(BadRequest) as caught:
            imgurl.parse_path(("/info" if info else "") + path, info=info)
        assert caught.value.message == (
            f"{source!r} looks like a source URL: a plain source URL follows `plain/`: "
            "/{signature}/{options}/plain/{source}@{ext} (without it, the source is URL-safe "
            "base64)")
        assert caught.value.field == "source" and not isinstance(caught.value, NotFound)


def test_url_builders_round_trip() -> None:
    source = "http://127.0.0.1:8000/photos/a%20b@2x.jpg?x=1&y=%3F"
    for build in (imgurl.plain_path, imgurl.encoded_path):
        path = build(["rs:fit:10:10"], source, "png")
        url = imgurl.parse_path("/unsafe" + path)
        assert (url.source, url.extension, url.options) == (source, "png", ("rs:fit:10:10",))
        assert url.signed_path == path


def test_negotiation_names_only_formats_the_operator_enables() -> None:
    chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
    assert negotiate.accepted(chrome, ("avif", "webp")) == ("avif", "webp")
    assert negotiate.accepted(chrome, ("webp",)) == ("webp",)
    assert negotiate.accepted("image/*,*/*", ("avif", "webp")) == ()
    assert negotiate.accepted("image/webp;q=0, image/avif;q=0.5", ("avif", "webp")) == ("avif",)
    assert negotiate.accepted("image/webp;q=x" * 1000, ("webp",)) == ()


def test_request_keys_separate_what_changes_the_bytes() -> None:
    base = {"service": "imgproxy", "source": "http://a/x.jpg", "ops": {"blur": 1, "dpr": 2},
            "fmt": "", "accept": ("webp",), "quality": None, "cachebuster": "",
            "version": "1"}
    key = negotiate.request_key(**base)
    assert key == negotiate.request_key(**{**base, "ops": {"dpr": 2, "blur": 1}})
    for change in ({"source": "http://a/y.jpg"}, {"ops": {"blur": 2}}, {"accept": ()},
                   {"quality": 80}, {"cachebuster": "x"}, {"version": "2"},
                   {"source": b"\x00" * 32}, {"fmt": "png"}):
        assert negotiate.request_key(**{**base, **change}) != key, change
    # with the format fixed, Accept does not matter
    fixed = {**base, "fmt": "png"}
    assert negotiate.request_key(**fixed) == negotiate.request_key(**{**fixed, "accept": ()})
    assert len(key) == 32


def test_etags_are_strong_and_if_none_match_reads_lists() -> None:
    tag = negotiate.etag(b"k" * 32)
    assert tag.startswith('"') and not tag.startswith("W/")
    assert negotiate.etag_matches(tag, tag)
    assert negotiate.etag_matches(f'"x", W/{tag}', tag)
    assert negotiate.etag_matches("*", tag)
    assert not negotiate.etag_matches('"other"', tag)
    assert not negotiate.etag_matches("", tag)


def test_memory_cache_is_bounded_by_bytes_and_ages_out() -> None:
    now = [0.0]
    cache = MemoryCache(max_bytes=10_000, ttl_s=60, clock=lambda: now[0])
    entry = Entry(b"x" * 1000, "image/jpeg")

    async def run() -> None:
        for i in range(20):
            await cache.put(bytes([i]), entry)
        assert cache.bytes <= 10_000 and len(cache) == 8
        assert await cache.get(bytes([19])) == entry
        assert await cache.get(bytes([0])) is None
        await cache.put(b"huge", Entry(b"x" * 5000, "image/jpeg"))  # > 1/4: not kept
        assert await cache.get(b"huge") is None
        now[0] = 61
        assert await cache.get(bytes([19])) is None

    asyncio.run(run())


def test_cache_entries_survive_their_encoding_and_garbage_is_a_miss() -> None:
    entry = Entry(b"\xff\xd8img", "image/jpeg", 30, 20, '"e"', "Mon, 01 Jan 2026 00:00:00 GMT")
    assert Entry.from_bytes(entry.to_bytes()) == entry
    for garbage in (b"", b"\xc1", msgpack.packb([1, 2]), msgpack.packb([1, "s", "t", 1, 1, "",
                                                                       ""])):
        assert Entry.from_bytes(garbage) is None


def test_a_result_past_its_ttl_is_kept_stale_for_revalidation_until_keep() -> None:
    now = [0.0]
    cache = MemoryCache(max_bytes=10_000, ttl_s=60, clock=lambda: now[0], keep_s=600)
    entry = Entry(b"x" * 100, "image/jpeg", source_etag='"v1"')
    cache.put_now(b"k", entry)
    assert cache.lookup_now(b"k") == Cached(entry, True)
    now[0] = 61
    assert cache.lookup_now(b"k") == Cached(entry, False)
    assert cache.get_now(b"k") is None  # get: fresh entries only
    cache.put_now(b"k", entry)  # revalidated: fresh again
    assert cache.lookup_now(b"k") == Cached(entry, True)
    now[0] = 61 + 601
    assert cache.lookup_now(b"k") is None and len(cache) == 0


def test_the_tiers_give_the_freshest_entry_memory_first() -> None:
    """Another door revalidated the result in Redis: this door's stale copy gives way."""
    now = [0.0]
    memory = MemoryCache(max_bytes=10_000, ttl_s=60, clock=lambda: now[0], keep_s=600)
    old, new = Entry(b"old", "image/jpeg", source_etag='"1"'), Entry(b"new", "image/jpeg")

    class Shared:  # RedisCache's lookup: (entry and freshness, seconds it stays fresh)
        found: tuple[Cached, float] | None = None

        async def lookup(self, key: bytes) -> tuple[Cached, float] | None:
            return self.found

    shared = Shared()
    tiers = TieredCache(memory, shared)  # type: ignore[arg-type]

    async def run() -> None:
        memory.put_now(b"k", old)
        assert await tiers.lookup(b"k") == Cached(old, True)  # fresh in memory: no round trip
        now[0] = 100
        assert await tiers.lookup(b"k") == Cached(old, False)  # stale, Redis has nothing
        shared.found = (Cached(new, True), 30.0)
        assert await tiers.lookup(b"k") == Cached(new, True)
        assert memory.lookup_now(b"k") == Cached(new, True)
        now[0] = 131  # memory kept it fresh for what Redis said was left: 30 s
        assert memory.lookup_now(b"k") == Cached(new, False)

    asyncio.run(run())


def test_a_shared_entry_carries_when_it_was_checked() -> None:
    entry = Entry(b"\xff\xd8img", "image/jpeg", 30, 20, '"e"', "")
    assert Entry.read(entry.to_bytes(1_000.5)) == (entry, 1_000.5)
    assert Entry.read(entry.to_bytes()) == (entry, None)  # version 1, as older doors wrote
    assert entry.validators() == {"etag": '"e"'}
    assert Entry(b"x", "image/jpeg").validators() == {}


def test_a_results_etag_follows_its_sources_version() -> None:
    key = b"k" * 32
    plain = negotiate.result_etag(key, "", "")
    v1 = negotiate.result_etag(key, '"v1"', "Sun, 06 Dec 2026 07:00:00 GMT")
    v2 = negotiate.result_etag(key, '"v2"', "Sun, 06 Dec 2026 07:00:00 GMT")
    assert plain == negotiate.etag(key) and len({plain, v1, v2}) == 3
    assert v1 == negotiate.result_etag(key, '"v1"', "Sun, 06 Dec 2026 07:00:00 GMT")


def test_the_breaker_backs_off_and_logs_each_outage_once(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    now = [0.0]
    breaker = Breaker("redis", clock=lambda: now[0])
    breaker.failed(OSError("refused"))
    assert not breaker.allows()
    now[0] = 0.6
    assert breaker.allows()
    breaker.failed(OSError("refused"))
    assert breaker.open_until == pytest.approx(1.6)
    breaker.succeeded()
    assert breaker.allows()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2  # down once, back once


def test_a_body_frame_is_the_request_map_with_the_image_last() -> None:
    fields = {"ops": {"resize": {"width": 5}}, "format": "", "accept": [], "quality": None}
    for size in (3, 300, 70_000):
        image = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        frame = map_prefix(fields, "image", len(image)) + image
        assert msgpack.unpackb(frame) == {**fields, "image": image}


def test_the_body_budget_refuses_past_its_bound_but_takes_one_large_body() -> None:
    budget = Budget(100)
    budget.take(500)  # alone: taken, however large (the body limit bounds it)
    with pytest.raises(Busy):
        budget.take(1)
    budget.give(500)
    budget.take(60)
    with pytest.raises(Busy):
        budget.take(50)
    assert budget.peak == 500


def test_post_signatures_cover_the_body() -> None:
    signer = Signer(((b"k", b"s"),))
    text = post_text("/rs:fit:10:10/upload.png", b"\x01" * 32)
    assert signer.verify(signer.sign(text), text)
    assert not signer.verify(signer.sign(text), post_text("/rs:fit:10:10/upload.png",
                                                          b"\x02" * 32))


CASES = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {"cases": [], "presets": {}}


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda c: c["name"])
def test_the_door_reads_imagings_cases_into_the_same_request(case: dict) -> None:
    """tests/fixtures/imgproxy_cases.json is the contract with the renderer (imaging's)."""
    presets = imgops.Presets.parse([f"{k}={v}" for k, v in CASES["presets"].items()])
    if "path" in case:
        url, proc = parse(case["path"], presets)
    else:
        parts = [part for part in case["options"].split("/") if part]
        proc = imgops.parse_options(parts, presets)
        if case.get("extension"):
            proc.format = imgops.output_format(case["extension"])
    request = case["request"]
    assert proc.ops == request["ops"]
    assert proc.format == request.get("format", "")
    assert proc.quality == request.get("quality")


def test_b64url_tolerates_missing_padding() -> None:
    text = base64.urlsafe_b64encode(b"local:///a.jpg").rstrip(b"=").decode()
    assert imgurl.b64url_decode(text, "source") == b"local:///a.jpg"


def test_help_shows_every_flags_default_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    from mdp_http.config import DEFAULT_MAX_BODY, parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    flags = [line.split()[0] for line in text.splitlines()
             if line.startswith("  --") and not line.startswith(("  --help", "  --version"))]
    assert len(flags) > 20
    assert text.count("(default:") >= len(flags)  # every flag says its default
    with pytest.raises(SystemExit):
        parse_args(["--version"])
    assert capsys.readouterr().out.startswith("mdp-http ")
    assert DEFAULT_MAX_BODY >= 32 * 1024 * 1024 * 4 // 3  # a 32 MiB image fits as base64 JSON


def test_no_url_breaks_the_parser_with_anything_but_a_clear_error() -> None:
    import random

    rng = random.Random(17)
    alphabet = "/:@.%_-=+?&#abcdefxyz0123456789plainencupload\u00e9\u2603 \t\x00"
    pieces = ["plain", "rs", "fill", "w", "pr", "g", "sm", "fp", "c", "pd", "bg", "wm", "re",
              "http://a/b.jpg", "local:///x", "aHR0cDovL2E", "%25", "%3F", "@png", ".webp"]
    for _ in range(3000):
        path = "/" + "".join(rng.choice(pieces) if rng.random() < 0.3 else rng.choice(alphabet)
                             for _ in range(rng.randint(0, 60)))
        try:
            url = imgurl.parse_path(path, info=rng.random() < 0.1,
                                    allow_no_source=rng.random() < 0.2)
            proc = imgops.parse_options(url.options, SHARP)
            if url.extension:
                imgops.output_format(url.extension)
            negotiate.request_key(service="imgproxy", source=url.source, ops=proc.ops,
                                  fmt=proc.format, accept=(), quality=proc.quality,
                                  cachebuster=proc.cachebuster, version="v")
        except BadRequest as exc:  # NotFound is one too
            assert exc.message


def test_every_flag_takes_its_default_from_a_dips_http_variable() -> None:
    from mdp_http.config import parse_args

    environ = {"DIPS_HTTP_BROKER": "tcp://127.0.0.1:1,tcp://127.0.0.1:2",
               "DIPS_HTTP_REDIS": "redis://127.0.0.1:7/0", "DIPS_HTTP_AUTO_WEBP": "1",
               "DIPS_HTTP_CACHE_BYTES": "1024", "DIPS_HTTP_PRESET": "a=w:10,b=h:20"}
    config = parse_args([], environ)
    assert config.brokers == ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"]
    assert (config.redis, config.auto_webp, config.cache_bytes) == ("redis://127.0.0.1:7/0",
                                                                    True, 1024)
    assert config.presets == ["a=w:10", "b=h:20"]
    flags = parse_args(["--broker", "tcp://127.0.0.1:3", "--no-auto-webp"], environ)
    assert flags.brokers == ["tcp://127.0.0.1:3"] and not flags.auto_webp  # flags win
    with pytest.raises(SystemExit):
        parse_args([], {**environ, "DIPS_HTTP_CACHE_BYTES": "lots"})
