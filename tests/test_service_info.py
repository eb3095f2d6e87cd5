"""Workers tell the fleet what their service is (READY ``info``), and brokers report it."""

from __future__ import annotations

import msgpack

from clusterkit import Cluster
from mdp.brokerstatus import clean_info as _clean_info
from mdp.handlers import service_info
from testkit import broker_status


def test_a_worker_announces_its_service_and_the_broker_reports_it(cluster: Cluster) -> None:
    broker = cluster.broker()
    cluster.worker([broker], "ecard")
    cluster.worker([broker], "thumbnail")
    status = broker_status(broker.endpoint)
    assert status is not None
    ecard = status.services["ecard"].info
    assert ecard is not None and ecard.content_type == "image/png"
    assert (ecard.fields[0].name, ecard.fields[0].required, ecard.fields[0].doc) == (
        "pSN", True, "")
    thumbnail = status.services["thumbnail"].info
    assert thumbnail is not None and thumbnail.content_type == ""  # "format" chooses
    assert "width" in {field.name for field in thumbnail.fields}
    assert thumbnail.bytes_fields == {"image"}


def test_echo_describes_itself() -> None:
    from mdp.handlers import resolve

    assert resolve("echo").info == service_info(
        doc="returns the request unchanged (a diagnostic service)", example={"hello": "world"})


def test_a_malformed_or_huge_description_is_dropped_not_fatal() -> None:
    good = service_info("image/png", [["a", "int", True, ""]], "doc")
    assert _clean_info(good) == good
    assert _clean_info("text") is None
    assert _clean_info({"fields": [["a", "int", "yes", ""]]}) is None
    assert _clean_info({"fields": [["a"] * 4] * 2}) is None
    huge = {"content_type": "", "doc": "x" * 9000, "fields": []}
    assert len(msgpack.packb(huge)) > 8192 and _clean_info(huge) is None
