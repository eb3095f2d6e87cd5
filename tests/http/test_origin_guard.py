"""The door's slow-origin decisions without sockets (mdp_http.origins), on a clock the test
turns: holding an origin after timeouts in a row, one probe after the hold, the bound on
requests in flight per origin, and what becomes of the records."""

from __future__ import annotations

import pytest

from mdp_http import origins
from mdp_http.errors import status_for
from mdp_http.origins import OriginBusy, OriginGuard, OriginHeld, origin_of

ORIGIN = "http://img.example.com:80"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard(hold_s: float = 10, after: int = 2, concurrency: int = 0) -> tuple[OriginGuard, Clock]:
    clock = Clock()
    return OriginGuard(hold_s, after, concurrency, clock), clock


def fail(g: OriginGuard, origin: str = ORIGIN) -> None:
    probe = g.admit(origin)
    g.done(origin, timed_out=True, probe=probe)


def test_origin_of_names_scheme_host_and_port() -> None:
    assert origin_of("http://IMG.Example.com/a.jpg") == ORIGIN
    assert origin_of("https://img.example.com:8443/a/b.jpg?x=1") == "https://img.example.com:8443"
    assert origin_of("https://img.example.com/a.jpg") == "https://img.example.com:443"
    assert origin_of("http://[::1]:8080/a.jpg") == "http://[::1]:8080"


def test_spellings_of_one_origin_share_its_record() -> None:
    """A root dot, IDNA, an IPv4 address in a short or hex form, a zero-padded IPv6: each
    reaches the same host as its plain spelling, so it cannot dodge the origin's bound."""
    assert origin_of("http://img.example.com./a.jpg") == ORIGIN
    assert origin_of("http://127.1/a.jpg") == origin_of("http://127.0.0.1/a.jpg") == (
        "http://127.0.0.1:80")
    assert origin_of("http://0x7f.0.0.1/a.jpg") == "http://127.0.0.1:80"
    assert origin_of("http://[0:0::1]/a.jpg") == "http://[::1]:80"
    assert origin_of("http://[::ffff:93.184.216.34]/a.jpg") == "http://93.184.216.34:80"
    assert origin_of("http://bücher.example/a.jpg") == origin_of(
        "http://xn--bcher-kva.example/a.jpg") == "http://xn--bcher-kva.example:80"
    for other in ("local:///a.jpg", "", "ftp://host/a.jpg", "http:///a.jpg", "http://h:99999/"):
        assert origin_of(other) is None


def test_timeouts_in_a_row_hold_the_origin_then_one_request_tries_it_again() -> None:
    g, clock = guard(hold_s=10, after=2)
    fail(g)
    assert g.held() == 0  # one timeout is one slow image, not a stalled origin
    fail(g)
    assert g.held() == 1
    with pytest.raises(OriginHeld) as held:
        g.admit(ORIGIN)
    assert ORIGIN in held.value.message and "--origin-hold" in held.value.message
    assert (held.value.code, status_for(held.value), held.value.retry_after) == (
        "source_timeout", 504, 10)
    assert g.admit("http://other.example.com:80") is False  # other origins are not held
    clock.now += 10
    assert g.admit(ORIGIN) is True  # the probe
    with pytest.raises(OriginHeld, match="trying it again"):
        g.admit(ORIGIN)  # the others are still answered at once while it runs
    g.done(ORIGIN, timed_out=True, probe=True)  # still stalled: held again, for a whole hold
    with pytest.raises(OriginHeld) as again:
        g.admit(ORIGIN)
    assert again.value.retry_after == 10
    clock.now += 10
    assert g.admit(ORIGIN) is True
    g.done(ORIGIN, timed_out=False, probe=True)  # it answered: the hold is over
    assert g.held() == 0
    assert g.admit(ORIGIN) is False and g.admit(ORIGIN) is False


def test_an_answer_between_timeouts_or_an_unknown_end_decides_nothing_wrongly() -> None:
    g, _ = guard(after=2)
    fail(g)
    probe = g.admit(ORIGIN)
    g.done(ORIGIN, timed_out=False, probe=probe)  # the origin answered: the count starts over
    fail(g)
    assert g.held() == 0
    probe = g.admit(ORIGIN)
    g.done(ORIGIN, timed_out=None, probe=probe)  # the door's own timeout says nothing of it
    assert g.held() == 0
    fail(g)
    assert g.held() == 1


def test_a_hold_of_zero_never_holds() -> None:
    g, _ = guard(hold_s=0, after=1)
    for _ in range(5):
        fail(g)
    assert g.held() == 0 and g.admit(ORIGIN) is False


def test_the_bound_on_requests_in_flight_for_one_origin() -> None:
    g, _ = guard(concurrency=2)
    g.admit(ORIGIN)
    g.admit(ORIGIN)
    with pytest.raises(OriginBusy) as busy:
        g.admit(ORIGIN)
    assert ORIGIN in busy.value.message and "--origin-concurrency 2" in busy.value.message
    assert (busy.value.code, status_for(busy.value)) == ("overloaded", 503)
    g.admit("http://other.example.com:80")  # another origin has its own bound
    g.done(ORIGIN, timed_out=False, probe=False)
    g.admit(ORIGIN)


def test_records_are_dropped_when_nothing_is_left_to_remember(monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    g, clock = guard(after=1, hold_s=5)
    g.admit(ORIGIN)
    g.done(ORIGIN, timed_out=False, probe=False)
    assert not g._records
    monkeypatch.setattr(origins, "MAX_TRACKED", 3)
    for i in range(3):
        fail(g, f"http://h{i}.example.com:80")  # held, remembered
    clock.now += 5  # their holds have passed: room is made for a new origin
    g.admit("http://new.example.com:80")
    assert list(g._records) == ["http://new.example.com:80"]
