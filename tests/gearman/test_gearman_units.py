"""Unit tests of the gateway's sans-I/O parts: no sockets, no processes."""

from __future__ import annotations

import json
import random

import msgpack
import pytest

from mdp.errors import CODES, BadRequest, Overloaded, Timeout, WorkerError
from mdp.status import BrokerInfo, BrokerStatus, ServiceStatus, WorkerStatus
from mdp_gearman import admin, mapping, phpser
from mdp_gearman import packets as g
from mdp_gearman.background import backoff_s
from mdp_gearman.jobs import HIGH, LOW, JobTable, parse_submission
from mdp_gearman.packets import T
from renderers.samples import seed_request

# --- packets ------------------------------------------------------------------------------


def _events(decoder: g.Decoder) -> list[g.Event]:
    out = []
    while (event := decoder.next_event()) is not None:
        out.append(event)
    return out


def test_packets_are_framed_whatever_the_chunking() -> None:
    stream = (g.build_request(T.SUBMIT_JOB, b"ecard", b"u1", b"data\0with nul")
              + b"status\r\n" + g.build_request(T.ECHO_REQ, b"ping"))
    for size in (1, 3, 12, 13, len(stream)):
        decoder = g.Decoder()
        events: list[g.Event] = []
        for i in range(0, len(stream), size):
            decoder.feed(stream[i:i + size])
            events += _events(decoder)
        assert events == [g.Packet(T.SUBMIT_JOB, (b"ecard", b"u1", b"data\0with nul")),
                          g.AdminLine("status"), g.Packet(T.ECHO_REQ, (b"ping",))]


def test_a_declared_size_past_the_limit_is_refused_before_the_body_arrives() -> None:
    decoder = g.Decoder(max_packet_bytes=1 << 20)
    decoder.feed(g.HEADER.pack(g.REQ, T.SUBMIT_JOB, 100 * 1024 * 1024))
    with pytest.raises(g.WireError, match="declares 104857600 bytes"):
        decoder.next_event()


def test_bad_magic_and_endless_lines_are_wire_errors() -> None:
    decoder = g.Decoder()
    decoder.feed(b"\0RES" + bytes(8))
    with pytest.raises(g.WireError, match="magic"):
        decoder.next_event()
    decoder = g.Decoder(max_line_bytes=100)
    decoder.feed(b"x" * 101)
    with pytest.raises(g.WireError, match="longer than 100"):
        decoder.next_event()


def test_wrong_argument_counts_are_bad_packets_and_worker_packets_parse() -> None:
    assert isinstance(g.parse_packet(T.SUBMIT_JOB, b"only-one"), g.BadPacket)
    assert isinstance(g.parse_packet(T.WORK_STATUS, b"H:h:1\x001"), g.BadPacket)
    assert isinstance(g.parse_packet(999, b""), g.BadPacket)
    assert g.parse_packet(T.CAN_DO, b"ecard") == g.Packet(T.CAN_DO, (b"ecard",))
    assert g.parse_packet(T.GRAB_JOB_ALL, b"ignored") == g.Packet(T.GRAB_JOB_ALL, ())
    assert g.parse_packet(T.WORK_COMPLETE, b"H:h:1\0a\0b") == g.Packet(
        T.WORK_COMPLETE, (b"H:h:1", b"a\0b"))
    assert g.parse_packet(T.WORK_FAIL, b"H:h:1\0") == g.Packet(T.WORK_FAIL, (b"H:h:1",))


def test_random_bytes_never_escape_as_anything_but_wire_errors() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        decoder = g.Decoder(max_packet_bytes=4096)
        decoder.feed(rng.choice([b"\0REQ", b"", b"\0"]) + rng.randbytes(rng.randrange(64)))
        try:
            _events(decoder)
        except g.WireError:
            pass


# --- PHP serialize() ----------------------------------------------------------------------


def test_php_round_trip_of_the_seed_request() -> None:
    blob = phpser.dumps(seed_request())
    assert blob.startswith(b'a:2:{s:3:"pSN";s:10:"1234567890";s:5:"pData";s:320:"61, 61')
    assert phpser.loads(blob) == seed_request()


def test_php_flat_arrays_decode_as_the_general_reader_decodes_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-pass decoder of the usual workload (string keys, string or int values) and
    the general reader agree on every input, valid or broken."""
    rng = random.Random(18)
    seeds = [phpser.dumps(seed_request()), phpser.dumps({"a": 1, "b": 'x";y', "c": -5}),
             phpser.dumps({"0": "x"}), phpser.dumps({}), phpser.dumps({"k": b"\xff\xfe"}),
             b'a:1:{s:1:"a";i:+3;}', b'a:2:{s:1:"a";i:1;s:1:"a";i:2;}', b'a:1:{i:0;s:1:"x";}',
             phpser.dumps({"x": {"y": 1}}), phpser.dumps({"a": 1.5, "b": True, "c": None})]
    cases = list(seeds)
    for seed in seeds:
        for _ in range(300):
            broken = bytearray(seed)
            broken[rng.randrange(len(broken))] = rng.choice(b'0123456789:;"{}asidbN-+\xff')
            cases += [bytes(broken), seed[:rng.randrange(len(seed) + 1)]]

    def outcome(data: bytes) -> object:
        try:
            return phpser.loads(data)
        except BadRequest as exc:
            return type(exc)

    fast = [outcome(c) for c in cases]
    monkeypatch.setattr(phpser, "_flat_map", lambda data, max_items: None)
    assert fast == [outcome(c) for c in cases]


def test_php_values() -> None:
    blob = b'a:6:{s:1:"i";i:-5;s:1:"d";d:0.25;s:1:"b";b:0;s:1:"n";N;s:1:"l";a:2:{i:0;s:0:"";' \
           b'i:1;d:INF;}s:1:"m";a:1:{i:7;s:2:"\xff\xfe";}}'
    assert phpser.loads(blob) == {"i": -5, "d": 0.25, "b": False, "n": None,
                                  "l": ["", float("inf")], "m": {"7": b"\xff\xfe"}}


@pytest.mark.parametrize("blob, words", [
    (b'a:1:{s:1:"o";O:8:"stdClass":0:{}}', "objects"),
    (b'a:1:{s:1:"r";r:1;}', "references"),
    (b'a:1:{s:3:"abc";s:9:"short";}', "runs past the end"),
    (b'a:1:{s:1:"a";i:1;s:1:"b";i:2;}', "expected '}'"),
    (b'a:2:{s:1:"a";i:1;}', "key must be"),
    (b'a:1:{s:1:"a";i:1;}junk', "trailing bytes"),
    (b'a:1:{d:1.5;i:1;}', "key must be"),
    (b'a:1:{s:1:"a";i:12x;}', "bad integer"),
    (b'a:1:{s:1:"a";b:2;}', "bool"),
    (b'a:1:{', "unexpected end"),
    (b'a:1:{s:1:"a";i:INF;}', "bad integer"),  # INF and NAN are floats' only
    (b'a:1:{s:1:"a";i:-INF;}', "bad integer"),
    (b'a:1:{i:NAN;i:1;}', "bad integer"),
    (b'a:1:{s:NAN:"a";i:1;}', "bad string length"),
    (b'a:INF:{}', "bad array size"),
])
def test_php_refusals_name_what_is_wrong(blob: bytes, words: str) -> None:
    with pytest.raises(phpser.PhpSerializeError, match=words):
        phpser.loads(blob)


def test_php_ten_thousand_deep_is_refused_without_recursion() -> None:
    deep = b"a:1:{i:0;" * 10_000 + b"N;" + b"}" * 10_000
    with pytest.raises(phpser.PhpSerializeError, match="nested deeper than 32"):
        phpser.loads(deep)
    assert phpser.loads(deep, phpser.Limits(max_depth=20_000)) is not None  # iterative


def test_php_item_and_length_limits() -> None:
    with pytest.raises(phpser.PhpSerializeError, match="more than 10 items"):
        phpser.loads(b"a:11:{" + b"}", phpser.Limits(max_items=10))
    with pytest.raises(phpser.PhpSerializeError, match="limit"):
        phpser.loads(b"N;" * 10, phpser.Limits(max_bytes=5))


# --- workload mapping ---------------------------------------------------------------------


def test_every_format_of_the_seed_request_maps_to_the_same_map() -> None:
    seed = seed_request()
    php = mapping.decode_workload(phpser.dumps(seed))
    packed = mapping.decode_workload(msgpack.packb(seed))
    text = mapping.decode_workload(json.dumps(seed).encode())
    assert php == (seed, mapping.Format.PHP)
    assert packed == (seed, mapping.Format.MSGPACK)
    assert text == (seed, mapping.Format.JSON)


def test_other_bytes_are_raw_and_php_lists_are_refused() -> None:
    assert mapping.decode_workload(b"\x89PNG...") == ({"image": b"\x89PNG..."},
                                                      mapping.Format.RAW)
    assert mapping.decode_workload(b"{not json")[1] is mapping.Format.RAW
    with pytest.raises(BadRequest, match="string keys"):
        mapping.decode_workload(b"a:1:{i:0;i:1;}")


def test_results_go_back_in_the_workload_format() -> None:
    assert mapping.encode_result(b"\x89PNG", mapping.Format.PHP) == b"\x89PNG"
    assert mapping.encode_result({"a": 1}, mapping.Format.PHP) == b'a:1:{s:1:"a";i:1;}'
    assert msgpack.unpackb(mapping.encode_result({"a": 1}, mapping.Format.MSGPACK)) == {"a": 1}
    assert mapping.encode_result({"a": b"x"}, mapping.Format.RAW) == b'{"a": "x"}'
    assert msgpack.unpackb(mapping.encode_result({"a": b"\xff"}, mapping.Format.JSON)) \
        == {"a": b"\xff"}


@pytest.mark.parametrize("fmt", list(mapping.Format))
def test_a_result_no_format_can_carry_is_a_bad_reply_naming_why(fmt: mapping.Format) -> None:
    """Nested past what msgpack packs (json gives up earlier and falls back to msgpack):
    ``bad_reply``, not a RecursionError that would fail the job as the gateway's bug."""
    deep: dict[str, object] = {}
    for _ in range(100_000):
        deep = {"k": deep}
    with pytest.raises(WorkerError, match="nested too deep") as raised:
        mapping.encode_result(deep, fmt)
    assert raised.value.code == "bad_reply"


def test_errors_carry_code_and_message() -> None:
    assert mapping.exception_bytes(BadRequest("no", "pSN")) == b"bad_request: no (field 'pSN')"
    assert mapping.exception_bytes(Timeout("late")).startswith(b"timeout: late")


# --- jobs ---------------------------------------------------------------------------------


def test_submissions_priorities_and_checks() -> None:
    sub = parse_submission(g.Packet(T.SUBMIT_JOB_HIGH_BG, (b"ecard", b"u", b"w")), 0)
    assert (sub.priority, sub.background, sub.workload) == (HIGH, True, b"w")
    assert parse_submission(g.Packet(T.SUBMIT_JOB_LOW, (b"e", b"", b"")), 0).priority == LOW
    epoch = parse_submission(g.Packet(T.SUBMIT_JOB_EPOCH, (b"e", b"", b"1000", b"w")), 0)
    assert epoch.background and epoch.run_at == 1000.0
    for bad in ((b"mmi.status", b"", b""), (b"a b", b"", b""), (b"e", b"u" * 65, b"")):
        with pytest.raises(BadRequest):
            parse_submission(g.Packet(T.SUBMIT_JOB, bad), 0)
    with pytest.raises(BadRequest, match="epoch"):
        parse_submission(g.Packet(T.SUBMIT_JOB_EPOCH, (b"e", b"", b"soon", b"w")), 0)
    assert parse_submission(g.Packet(T.SUBMIT_JOB, (b"e", b"-", b"w")), 0).unique == b"w"


def test_coalescing_by_unique_id() -> None:
    table = JobTable(b"H:t:")
    first = parse_submission(g.Packet(T.SUBMIT_JOB, (b"e", b"same", b"1")), 0)
    job = table.add(first)
    assert table.coalesce(first) is job
    assert table.coalesce(parse_submission(g.Packet(T.SUBMIT_JOB, (b"f", b"same", b"")), 0)) \
        is None  # same unique id, other function
    assert table.coalesce(parse_submission(g.Packet(T.SUBMIT_JOB, (b"e", b"", b"")), 0)) is None
    background = parse_submission(g.Packet(T.SUBMIT_JOB_BG, (b"e", b"same", b"")), 0)
    assert table.coalesce(background) is None  # a durable job never joins a mortal one
    job.waiters += ["a", "b"]
    assert table.by_handle[job.handle] is job and not job.running
    assert table.drop_waiter("a", [job]) == [] and table.drop_waiter("b", [job]) == [job]
    assert table.finish(job) == [] and job.handle not in table.by_handle
    assert table.coalesce(first) is None


def test_background_backoff_grows_to_a_cap() -> None:
    assert backoff_s(1) == 0.5 and backoff_s(2) == 1.0 and backoff_s(50) == 30.0
    assert issubclass(Overloaded, Exception)


# --- admin --------------------------------------------------------------------------------


def _worker(pid: int, state: str = "idle") -> WorkerStatus:
    return WorkerStatus(f"{pid:04x}", state, "h", pid, "v1", 0, 1.0)


def _status(services: dict[str, tuple[int, list[WorkerStatus]]]) -> BrokerStatus:
    return BrokerStatus(BrokerInfo("tcp://b:1", 9, "b", "v1", 1.0),
                        {name: ServiceStatus(name, queue, tuple(workers))
                         for name, (queue, workers) in services.items()})


def test_admin_status_counts_each_worker_once_over_brokers() -> None:
    a = _status({"ecard": (3, [_worker(1, "busy"), _worker(2)]), "echo": (0, [_worker(3)])})
    b = _status({"ecard": (1, [_worker(1, "away"), _worker(2)])})
    text = admin.answer("status", [a, b, None], [], {"ecard": 2, "thumb": 1}, 1).decode()
    assert text == "ecard\t7\t1\t2\necho\t0\t0\t1\nthumb\t1\t0\t0\n.\n"


def test_a_gearman_worker_through_a_door_counts_once_and_is_listed_once() -> None:
    """It reports no pid, and each broker knows its link by another identity: it counted
    once per broker in ``status``, and ``workers`` listed it again once per link."""
    links = [WorkerStatus(f"id{n}", "idle", "10.0.0.9:5000", 0, "gw", 0, 1.0) for n in (1, 2)]
    a, b = _status({"php_fn": (0, [links[0]])}), _status({"php_fn": (0, [links[1]])})
    status = admin.answer("status", [a, b], [], {}, 1).decode()
    assert status == "php_fn\t0\t0\t1\n.\n"
    here = admin.ClientInfo(7, "10.0.0.9", "php-1", ("php_fn",), "10.0.0.9:5000")
    listing = admin.answer("workers", [a, b], [here], {}, 1).decode()
    assert listing == "7 10.0.0.9 php-1 : php_fn\n.\n"


def test_admin_other_commands() -> None:
    assert admin.answer("getpid", [], [], {}, 42) == b"OK 42\n"
    assert admin.answer("version", [], [], {}, 1).startswith(b"OK dips-gateway ")
    assert admin.answer("shutdown", [], [], {}, 1).startswith(b"ERR NOT_SUPPORTED ")
    assert admin.answer("bogus", [], [], {}, 1).startswith(b"ERR UNKNOWN_COMMAND ")
    clients = [admin.ClientInfo(7, "127.0.0.1", "php")]
    text = admin.answer("workers", [_status({"echo": (0, [_worker(3)])})],
                        clients, {}, 1).decode()
    assert text == "7 127.0.0.1 php :\n- h dips-worker-3 : echo\n.\n"


def test_priority_slots_let_high_in_first_then_arrival_order() -> None:
    import asyncio

    from mdp_gearman.slots import PrioritySlots

    async def scenario() -> list[str]:
        slots = PrioritySlots(1)
        order: list[str] = []
        await slots.acquire(0)  # the one slot is taken

        async def job(name: str, priority: int) -> None:
            await slots.acquire(priority)
            order.append(name)
            slots.release()

        tasks = [asyncio.create_task(job(n, p)) for n, p in
                 (("low", -1), ("normal-1", 0), ("high", 1), ("normal-2", 0))]
        cancelled = asyncio.create_task(job("gone", 1))
        await asyncio.sleep(0)
        cancelled.cancel()
        slots.release()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario()) == ["high", "normal-1", "normal-2", "low"]


@pytest.mark.parametrize(("raw", "shown"), [
    (b"php-worker-7", "php-worker-7"),
    (b"x\n.\n", "x_._"),  # would end gearadmin's workers listing early
    (b"a b\tc", "a_b_c"),
    (b"", "-"),
    (b"\xff" + b"y" * 100, "\ufffd" + "y" * 63),
])
def test_a_client_id_is_kept_as_the_admin_listing_can_show_it(raw: bytes, shown: str) -> None:
    from mdp_gearman.admin import printable

    assert printable(raw) == shown


@pytest.mark.parametrize("blob", [
    b"i:99999999999999999999;", b'a:1:{s:1:"n";i:9223372036854775808;}',
    b'a:1:{s:1:"n";i:-9223372036854775809;}'])
def test_an_integer_beyond_64_bits_is_the_callers_mistake(blob: bytes) -> None:
    """PHP has no such integer, and msgpack cannot carry one: refused as a bad workload
    (it failed inside the door as an internal error, with a traceback per job)."""
    with pytest.raises(phpser.PhpSerializeError, match="beyond 64 bits"):
        phpser.loads(blob)


def test_the_64_bit_bounds_themselves_are_integers() -> None:
    assert phpser.loads(b'a:2:{s:1:"a";i:9223372036854775807;s:1:"b";i:-9223372036854775808;}'
                        ) == {"a": 2**63 - 1, "b": -(2**63)}


def test_a_gearman_worker_s_failure_codes_are_in_the_one_list() -> None:
    assert {mapping.GEARMAN_FAIL, mapping.GEARMAN_EXCEPTION} <= set(CODES)


# --- settings -----------------------------------------------------------------------------


def test_the_link_floor_reaches_the_doors_client_and_its_gearman_workers_links(
        capsys: pytest.CaptureFixture[str]) -> None:
    from mdp_gearman.config import parse_args
    from mdp_gearman.dips import Dips
    from mdp_gearman.server import Gateway

    config, _ = parse_args(["--broker", "tcp://127.0.0.1:1", "--link-floor", "50Mbit/s"])
    dips = Dips(config.brokers, timeout_s=1.0, link_floor=config.link_floor)
    gateway = Gateway(config, dips, None)
    try:
        assert gateway.worker_settings.timing.link_floor == config.link_floor == 6_250_000
        assert dips._client.options.link_floor == 6_250_000
    finally:
        gateway.zmq.term()
    with pytest.raises(SystemExit) as done:
        parse_args(["--broker", "tcp://127.0.0.1:1", "--link-floor", "10MB"])
    assert done.value.code == 2
    assert "argument --link-floor: '10MB': unknown unit" in capsys.readouterr().err


def test_the_inflight_budget_lets_waiters_in_by_arrival_as_bytes_free() -> None:
    from mdp_gearman.inflight import InflightBudget

    budget, granted = InflightBudget(100), []
    assert budget.take(60) and not budget.take(50)
    budget.wait(50, lambda: granted.append("a"))
    budget.wait(10, lambda: granted.append("b"))  # fits, but comes after "a"
    assert not budget.take(10) and granted == []  # nobody overtakes a waiter
    budget.release(60)
    assert granted == ["a", "b"] and budget.used == 60
    budget.wait(70, cancelled := lambda: granted.append("c"))
    budget.wait(30, lambda: granted.append("d"))
    budget.cancel(cancelled)  # the head left: the next one that fits is let in
    assert granted == ["a", "b", "d"] and budget.used == 90


def test_a_packet_in_progress_is_known_by_its_offset_until_it_is_whole() -> None:
    decoder = g.Decoder(1024)
    packet = g.build_request(T.ECHO_REQ, b"x" * 100)
    decoder.feed(packet + packet[:50])
    assert decoder.next_event() == g.Packet(T.ECHO_REQ, (b"x" * 100,))
    assert decoder.next_event() is None
    pending = decoder.in_progress()
    assert pending == g.InProgress(len(packet), T.ECHO_REQ, 100, 50 - g.HEADER_BYTES)
    decoder.feed(packet[50:])
    assert decoder.next_event() is not None and decoder.in_progress() is None


def test_an_error_packet_has_two_arguments_whatever_its_text_quotes() -> None:
    """An ERROR's text may quote a peer (a broker's refusal, a function name): a NUL in it
    would read as a third argument to the Gearman peer."""
    packet = g.error("registration_refused", "broker said: a\0b")
    body = packet[g.HEADER.size:]
    assert body.split(b"\0") == [b"registration_refused", b"broker said: a\\0b"]
