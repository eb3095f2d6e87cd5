"""The broker's mutable tallies (mdp.tally) and the frozen mmi.status schema (mdp.status)
list the same counters twice: the tallies are the broker's hot-path accumulators, the
schema is what every reader decodes. Readers ignore keys they do not know, so a counter
added to one side only would vanish without an error; these tests make that a failure."""

from __future__ import annotations

from dataclasses import fields

from mdp.status import Counters, Histogram, ServiceCounters
from mdp.tally import BrokerTally, LatencyTally, ServiceTally


def test_every_broker_counter_is_in_the_status_schema_and_survives_decoding() -> None:
    tally = BrokerTally()
    for n, f in enumerate(fields(BrokerTally), start=1):
        setattr(tally, f.name, n)  # a distinct value each, so a swapped key shows
    wire = tally.to_wire()
    assert set(wire) == {f.name for f in fields(Counters)}
    assert Counters.from_wire(wire).to_wire() == wire


def test_every_service_counter_is_in_the_status_schema_and_survives_decoding() -> None:
    tally = ServiceTally()
    counted = [f.name for f in fields(ServiceTally)
               if f.name not in ("errors", "queue_time", "work_time")]
    for n, name in enumerate(counted, start=1):
        setattr(tally, name, n)
    tally.error("timeout")
    tally.error("timeout")
    tally.error("internal")
    counters, histograms = tally.to_wire()
    assert set(counters) == {f.name for f in fields(ServiceCounters)}
    decoded = ServiceCounters.from_wire(counters)
    assert decoded.to_wire() == counters
    assert decoded.errors == {"timeout": 2, "internal": 1}
    assert set(histograms) == {"queue_seconds", "work_seconds"}


def test_a_latency_tally_decodes_as_the_schema_s_histogram() -> None:
    tally = LatencyTally()
    for seconds in (0.0001, 0.003, 0.003, 7.0, 99.0):
        tally.observe(seconds)
    hist = Histogram.from_wire(tally.to_wire())
    assert hist.count == 5
    assert sum(hist.counts) == 5
    assert hist.sum == round(0.0001 + 0.006 + 7.0 + 99.0, 6)
