"""The result-size limit through the door: workers with ``DIPS_MAX_RESULT_DIMENSION`` answer a
request for a larger result with a 400 that names the limit, without rendering it; what fits
renders as before (docs/HTTP.md, "The result-size limit")."""

from __future__ import annotations

import io
import json

import pytest
from httpkit import start_gateway
from imagekit import Origin, image_workers, signed
from PIL import Image

from clusterkit import Cluster

pytestmark = pytest.mark.slow


def test_a_result_past_the_limit_is_a_400_naming_it(cluster: Cluster, origin: Origin) -> None:
    broker = cluster.broker()
    image_workers(cluster, [broker], 1, allow=origin.url,
                  env={"DIPS_MAX_RESULT_DIMENSION": "300"})
    gateway = start_gateway(cluster, [broker.endpoint])
    source = f"{origin.url}/a.jpg"  # 640 x 480
    for options, field, size in (([], "ops.resize", "640x480"),
                                 (["w:200", "dpr:2", "el:1"], "ops.resize", "400x300"),
                                 (["rs:fit:300:300", "pd:10"], "ops.padding", "320x245")):
        status, headers, body = gateway.call("GET", signed(options, source, signer=None))
        error = json.loads(body)["error"]
        assert (status, error["code"], error["field"]) == (400, "bad_request", field), body
        assert size in error["message"] and "300 px per side" in error["message"]
        assert "DIPS_MAX_RESULT_DIMENSION" in error["message"]
        assert headers["Cache-Control"] == "no-store"
    status, _, body = gateway.call("GET", signed(["rs:fit:300:300"], source, signer=None))
    assert status == 200 and Image.open(io.BytesIO(body)).size == (300, 225)
    assert gateway.metric('dips_http_requests_total{service="imgproxy",status="400"}') == 3
