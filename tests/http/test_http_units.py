"""mdp-http's decisions without sockets: status parsing, metrics, dashboard, signing, codec."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math

import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mdp import protocol as p
from mdp.errors import (
    CODES,
    BadRequest,
    Blame,
    Expired,
    Overloaded,
    Timeout,
    UnknownService,
    WorkerError,
    blame_of,
)
from mdp.status import BrokerStatus, BrokerView, ServiceInfo
from mdp_http import codec, content
from mdp_http.app import json_errors
from mdp_http.config import parse_args
from mdp_http.dashboard import fleet_state
from mdp_http.errors import (
    STATUS_BY_CODE,
    Busy,
    Forbidden,
    TooLarge,
    UnsupportedMediaType,
    status_for,
)
from mdp_http.metrics import FleetCollector
from mdp_http.signing import Signer, sign

INF = float("inf")
LE = [0.001, 0.01, 0.1, 1.0, INF]


def status_map(requests: int = 10, served: int = 10, work: list[int] | None = None,
               v2: bool = True, version: str = "1.0+a", pid: int = 100) -> dict:
    service: dict = {"queue": 2, "queue_bytes": 3000, "workers": [
        {"identity": "aa", "state": "busy", "host": "h1", "pid": 7, "version": version,
         "served": served, "uptime_s": 3.0, "failures": 1},
        {"identity": "bb", "state": "idle", "host": "h2", "pid": 8, "version": "1.0+a",
         "served": 0, "uptime_s": 3.0},
    ]}
    if v2:
        service["counters"] = {"requests": requests, "replies": requests - 1,
                               "errors": {"bad_request": 1}, "expired": 0, "requeued": 0,
                               "bounced": 0}
        service["histograms"] = {
            "work_seconds": {"le": LE, "counts": work or [0, requests, 0, 0, 0],
                             "sum": 0.005 * requests, "count": requests},
            "queue_seconds": {"le": LE, "counts": [requests, 0, 0, 0, 0], "sum": 0.0,
                              "count": requests},
        }
    return {"broker": {"endpoint": "tcp://x:1", "pid": pid, "host": "b", "version": "1.0+a",
                       "uptime_s": 5.0, "instance": "i1"},
            "services": {"ecard": service}, "counters": {"requests": requests}}


def polled(endpoint: str, status: dict, taken_at: float) -> BrokerView:
    """One broker's view as the poller keeps it."""
    return BrokerView(endpoint, BrokerStatus.from_wire(status), taken_at=taken_at)


# --- metrics --------------------------------------------------------------------------------

def scrape(views: list) -> dict[str, list]:
    registry = CollectorRegistry()
    registry.register(FleetCollector(lambda: views))
    text = generate_latest(registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_metrics_names_labels_and_histograms() -> None:
    views = [polled("tcp://x:1", status_map(requests=10), 0.0)]
    families = scrape(views)
    req = families["dips_requests"][0]
    assert req.name == "dips_requests_total" and req.value == 10
    assert req.labels == {"service": "ecard", "broker": "tcp://x:1"}
    errors = families["dips_errors"][0]
    assert errors.labels["code"] == "bad_request" and errors.value == 1
    buckets = [s for s in families["dips_work_seconds"] if s.name.endswith("_bucket")]
    assert [s.labels["le"] for s in buckets][-1] == "+Inf"
    assert [s.value for s in buckets] == [0, 10, 10, 10, 10]  # cumulative
    count = [s for s in families["dips_work_seconds"] if s.name.endswith("_count")][0]
    assert count.value == 10
    states = {s.labels["state"]: s.value for s in families["dips_workers"]}
    assert states["busy"] == 1 and states["idle"] == 1
    info = families["dips_worker_info"][0]
    assert info.name == "dips_worker_info" and info.labels["version"] == "1.0+a"
    assert families["dips_broker_up"][0].value == 1
    assert [(s.labels["service"], s.value) for s in families["dips_queue_bytes"]] == \
        [("ecard", 3000)]


def test_metrics_of_a_down_broker_and_an_old_broker() -> None:
    views = [BrokerView("tcp://y:2", None, "Timeout"),
             polled("tcp://x:1", status_map(v2=False), 0.0)]
    families = scrape(views)
    ups = {s.labels["broker"]: s.value for s in families["dips_broker_up"]}
    assert ups == {"tcp://y:2": 0.0, "tcp://x:1": 1.0}
    assert not families.get("dips_requests") and not families.get("dips_work_seconds")
    assert families["dips_worker_served"][0].value == 10


# --- dashboard ------------------------------------------------------------------------------

def test_dashboard_rates_quantiles_rollout() -> None:
    before = [polled("tcp://x:1", status_map(requests=10, served=10), 10.0)]
    after = [polled("tcp://x:1", status_map(requests=30, served=30, version="2.0+b",
                                                  work=[0, 10, 20, 0, 0]), 12.0)]
    state = fleet_state(before, after, 0.0)
    ecard = state["services"][0]
    assert state["interval_s"] == 2.0
    assert ecard["rate"] == pytest.approx((29 - 9) / 2)
    assert ecard["p99"] is not None and 0.01 < ecard["p99"] <= 0.1  # the window's 20 slow ones
    assert ecard["workers"] == {"busy": 1, "idle": 1}
    assert state["rollout"]["in_progress"] and state["rollout"]["versions"] == {
        "2.0+b": 1, "1.0+a": 1}
    host = state["hosts"][0]["workers"][0]
    assert host["busy_for"] == ["tcp://x:1"] and host["served"] == 30


def test_dashboard_counts_a_callers_bad_request_as_refused_not_as_an_error() -> None:
    def with_errors(errors: dict[str, int], requests: int) -> dict:
        status = status_map(requests=requests, served=requests)
        status["services"]["ecard"]["counters"]["errors"] = errors
        status["counters"] = {"requests": requests, "coalesced": 4, "poisoned": 1}
        return status

    before = [polled("tcp://x:1", with_errors({"bad_request": 1}, 10), 10.0)]
    after = [polled("tcp://x:1", with_errors({"bad_request": 11, "source_forbidden": 2,
                                              "worker_error": 3, "worker_timeout": 1}, 20),
                    12.0)]
    state = fleet_state(before, after, 0.0)
    ecard = state["services"][0]
    assert ecard["error_rate"] == pytest.approx(4 / 2)  # worker_error and worker_timeout
    assert ecard["refused_rate"] == pytest.approx(12 / 2)  # bad requests, a refused source
    assert (state["totals"]["coalesced"], state["totals"]["poisoned"]) == (4, 1)


def test_dashboard_without_v2_counts_served() -> None:
    before = [polled("tcp://x:1", status_map(served=10, v2=False), 10.0)]
    after = [polled("tcp://x:1", status_map(served=20, v2=False), 11.0)]
    ecard = fleet_state(before, after, 0.0)["services"][0]
    assert ecard["rate"] == 10 and ecard["p50"] is None and not ecard["latency_known"]


def test_dashboard_broker_restart_is_no_negative_rate() -> None:
    before = [polled("tcp://x:1", status_map(requests=100, served=100), 10.0)]
    after = [polled("tcp://x:1", status_map(requests=3, served=3, pid=101), 11.0)]
    assert fleet_state(before, after, 0.0)["services"][0]["rate"] >= 0


# --- signing --------------------------------------------------------------------------------

IMGPROXY_PATH = "/fill/300/400/sm/0/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png"


def test_signature_matches_imgproxy_test_vector() -> None:
    assert sign(b"secret", b"hello", IMGPROXY_PATH) == "AfrOrF3gWeDA6VOlDG4TzxMv39O7MXnF4CXpKUwGqRM"


def test_signer_rotation_and_files(tmp_path) -> None:
    files = []
    for name, value in (("k1", b"secret"), ("s1", b"hello"), ("k2", b"new"), ("s2", b"salt")):
        (tmp_path / name).write_text(value.hex() + "\n")
        files.append(str(tmp_path / name))
    signer = Signer.from_files([files[0], files[2]], [files[1], files[3]])
    assert signer is not None
    assert signer.verify("AfrOrF3gWeDA6VOlDG4TzxMv39O7MXnF4CXpKUwGqRM", IMGPROXY_PATH)
    assert signer.verify(sign(b"new", b"salt", "/ecard?pSN=1"), "/ecard?pSN=1")
    assert not signer.verify(sign(b"new", b"salt", "/ecard?pSN=1"), "/ecard?pSN=2")
    assert not signer.verify("!!!not base64", "/ecard")
    assert Signer.from_files([], []) is None
    with pytest.raises(Exception, match="salt"):
        Signer.from_files([files[0]], [])


# --- codec, content types, statuses ---------------------------------------------------------

def test_json_bytes_fields_and_data_uris() -> None:
    png = b"\x89PNG\r\n\x1a\nxxxx"
    body = json.dumps({"image": base64.b64encode(png).decode(), "ops": [
        {"mark": "data:image/png;base64," + base64.b64encode(png).decode()}]}).encode()
    request = codec.from_json(body, frozenset({"image"}))
    assert request["image"] == png and request["ops"][0]["mark"] == png
    with pytest.raises(BadRequest) as err:
        codec.from_json(b'{"image": "%%%"}', frozenset({"image"}))
    assert err.value.field == "image"
    for bad in (b"[1]", b"{", b"\xff"):
        with pytest.raises(BadRequest):
            codec.from_json(bad)


def test_form_and_query_values() -> None:
    request = codec.from_fields([("width", "256"), ("pSN", "0123"), ("pData", "61,61"),
                                 ("upscale", "true"), ("image", b"\xff\xd8\xff"),
                                 ("tag", "a"), ("tag", "b"),
                                 ("request", '{"format": "png"}')])
    assert request == {"width": 256, "pSN": "0123", "pData": "61,61", "upscale": True,
                       "image": b"\xff\xd8\xff", "tag": ["a", "b"], "format": "png"}


def test_msgpack_body_and_unsupported_type() -> None:
    body = msgpack.packb({"image": b"\x00\x01"}, use_bin_type=True)
    assert codec.parse_body("application/msgpack", body, frozenset()) == {"image": b"\x00\x01"}
    with pytest.raises(BadRequest, match="msgpack"):
        codec.parse_body("application/x-msgpack", b"\xc1", frozenset())
    with pytest.raises(BadRequest, match="text/plain"):
        codec.parse_body("text/plain", b"x", frozenset())


def test_the_415_lists_every_type_a_body_may_have_forms_included() -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        codec.parse_body("text/plain", b"x", frozenset())
    listed = caught.value.message.partition("send one of ")[2].split(", ")
    assert listed == list(codec.ACCEPTED_TYPES)
    assert {"application/json", "application/x-www-form-urlencoded", "multipart/form-data",
            *codec.MSGPACK_TYPES} == set(listed)


def test_json_sent_as_a_form_is_told_to_say_application_json() -> None:
    """curl --data @card.json sends JSON as a form: one field named by the whole text."""
    with pytest.raises(BadRequest) as caught:
        codec.from_form([('{"pSN": "1", "pData": [1, 2]}', "")])
    assert "looks like JSON" in caught.value.message
    assert "Content-Type: application/json" in caught.value.message
    assert codec.from_form([("width", "256")]) == {"width": 256}


def test_results_as_json_or_msgpack() -> None:
    body, kind = codec.encode_result({"a": b"\x01"}, "*/*")
    assert kind == "application/json" and json.loads(body) == {"a": {"base64": "AQ=="}}
    body, kind = codec.encode_result({"a": b"\x01"}, "application/msgpack")
    assert msgpack.unpackb(body) == {"a": b"\x01"}


def test_content_types() -> None:
    assert content.sniff(b"\x89PNG\r\n\x1a\n...") == "image/png"
    assert content.sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert content.sniff(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert content.sniff(b"hello") == "application/octet-stream"
    assert content.content_type(None, b"GIF89a") == "image/gif"  # not described: sniffed


def test_content_type_and_bytes_fields_from_the_fleet() -> None:
    thumbnail = ServiceInfo.from_wire({
        "content_type": "", "doc": "a smaller image",
        "fields": [["image", "bytes: a JPEG, PNG, WebP or GIF image", True, ""],
                   ["format", "jpeg | png | webp", False, "default jpeg"]]})
    ecard = ServiceInfo.from_wire({"content_type": "image/png", "fields": []})
    webp = b"RIFF\x00\x00\x00\x00WEBPVP8 "
    assert content.content_type(thumbnail, webp) == "image/webp"  # "": the request chose
    assert content.content_type(ecard, b"\x89PNG") == "image/png"
    assert content.bytes_fields(thumbnail) == {"image"} and content.bytes_fields(None) == set()
    request = codec.from_json(json.dumps({"image": base64.b64encode(webp).decode(),
                                          "format": "webp"}).encode(),
                              content.bytes_fields(thumbnail))
    assert request == {"image": webp, "format": "webp"}


def test_base64_files_are_guessed_only_for_a_service_not_described() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
    request = {"image": base64.b64encode(png).decode(), "title": "aGVsbG8gd29ybGQgaGVsbG8=",
               "n": 3}
    assert content.guess_bytes(request, None) == {**request, "image": png}
    assert content.guess_bytes(request, ServiceInfo()) == request


@pytest.mark.parametrize("exc, status", [
    (BadRequest("x"), 400), (Forbidden("x"), 403), (UnknownService("x"), 404),
    (TooLarge("x"), 413), (Busy("x"), 429), (Overloaded("x"), 503), (Expired("x"), 504),
    (Timeout("x"), 504), (WorkerError("x"), 502), (WorkerError("x", code="internal"), 500),
])
def test_statuses(exc: Exception, status: int) -> None:
    assert status_for(exc) == status  # type: ignore[arg-type]


def test_command_line() -> None:
    config = parse_args(["--broker", "tcp://a:1", "--broker", "tcp://b:2", "--listen",
                         "127.0.0.1:0", "--timeout", "3"])
    assert config.brokers == ["tcp://a:1", "tcp://b:2"] and config.timeout_s == 3.0
    assert config.host_port == ("127.0.0.1", 0) and not math.isnan(config.poll_interval_s)
    with pytest.raises(SystemExit):
        parse_args(["--listen", "nowhere"])


def test_every_door_error_code_is_in_the_one_list_with_its_blame() -> None:
    """The doors' codes are declared in mdp.errors.CODES too, so that whose fault they are
    (a caller's mistake, not the fleet's) is known wherever a code is read."""
    assert set(STATUS_BY_CODE) <= set(CODES)
    for code in ("forbidden", "too_large", "unsupported_media_type", "body_timeout"):
        assert blame_of(code) is Blame.CALLER, code
    assert blame_of("not_found") is Blame.MISSING


def test_a_bug_in_a_handler_is_a_json_500_and_a_logged_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise KeyError("a bug")

    async def scenario() -> tuple[int, str, dict[str, object]]:
        app = web.Application(middlewares=[json_errors])
        app.add_routes([web.get("/broken", broken)])
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/broken")
            return response.status, response.content_type, await response.json()

    status, content_type, body = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert (status, content_type) == (500, "application/json")
    assert body == {"error": {"code": "internal",
                              "message": "the gateway failed; its log says why"}}
    assert any("Traceback" in r.getMessage() and "KeyError: 'a bug'" in r.getMessage()
               for r in caplog.records)  # (through a rate-limited log: a peer may repeat it)


def test_a_handler_s_own_timeout_is_a_json_504_and_a_bug_logs_at_error(
        caplog: pytest.LogCaptureFixture) -> None:
    async def slow(request: web.Request) -> web.Response:
        raise TimeoutError

    async def broken(request: web.Request) -> web.Response:
        raise KeyError("a bug")

    async def scenario() -> list[tuple[int, dict[str, object]]]:
        app = web.Application(middlewares=[json_errors])
        app.add_routes([web.get("/slow", slow), web.get("/broken", broken)])
        async with TestClient(TestServer(app)) as client:
            answers = []
            for path in ("/slow", "/broken"):
                response = await client.get(path)
                answers.append((response.status, await response.json()))
            return answers

    (slow_status, slow_body), (bug_status, _) = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert slow_status == 504 and slow_body["error"]["code"] == "timeout"
    assert bug_status == 500
    assert [r.levelno for r in caplog.records if "KeyError: 'a bug'" in r.getMessage()] == \
        [logging.ERROR]


def test_aiohttp_s_own_failures_log_at_error_apart_from_peers_mistakes() -> None:
    from aiohttp.http_exceptions import BadHttpMessage

    from mdp_http.serverlog import PeerErrorFilter

    lines: list[tuple[int, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append((record.levelno, record.getMessage()))

    logger = logging.getLogger("test.serverlog")
    logger.addHandler(Keep())
    logger.propagate = False
    from mdp.logs import RateLimitedLog
    where = PeerErrorFilter(RateLimitedLog(logger), RateLimitedLog(logger, level=logging.ERROR))

    def record(exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1,
                                 "Error handling request", None, (type(exc), exc, None))

    for _ in range(50):  # a flood of peers' mistakes
        assert where.filter(record(BadHttpMessage("bad header"))) is False
    assert where.filter(record(RuntimeError("aiohttp's own"))) is False
    assert (logging.ERROR, "Error handling request\nRuntimeError: aiohttp's own") in lines
    mistakes = [text for level, text in lines if level == logging.WARNING]
    assert len(mistakes) == 10 and "BadHttpMessage" in mistakes[0]


def test_the_link_floor_comes_from_its_flag_or_variable_and_reaches_the_client(
        capsys: pytest.CaptureFixture[str]) -> None:
    from mdp_http.app import Gateway

    brokers = ["--broker", "tcp://127.0.0.1:1"]
    assert parse_args(brokers, environ={}).link_floor == p.DEFAULT_LINK_FLOOR
    config = parse_args([*brokers, "--link-floor", "50Mbit/s"], environ={})
    assert config.link_floor == 6_250_000
    assert Gateway(config).backend._client.options.link_floor == 6_250_000
    from_env = parse_args(brokers, environ={"DIPS_HTTP_LINK_FLOOR": "2MB/s"})
    assert from_env.link_floor == 2_000_000
    for argv, environ, says in (
            (["--link-floor", "fast"], {}, "argument --link-floor: 'fast' is not a rate"),
            ([], {"DIPS_HTTP_LINK_FLOOR": "0"}, "DIPS_HTTP_LINK_FLOOR='0': the link floor "
             "must be at least 100KB/s")):
        with pytest.raises(SystemExit) as done:
            parse_args([*brokers, *argv], environ=environ)
        assert done.value.code == 2 and says in capsys.readouterr().err
