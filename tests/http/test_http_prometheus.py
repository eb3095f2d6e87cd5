"""A real Prometheus server scrapes mdp-http; its query API sees rates and quantiles."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from httpkit import HttpLoad, start_gateway

from clusterkit import Cluster, needs
from testkit import broker_status, free_port, wait_for

PROMETHEUS = shutil.which("prometheus")
pytestmark = [pytest.mark.slow,
              needs(PROMETHEUS is not None, "prometheus")]


class Prometheus:
    def __init__(self, tmp_path: Path, target: str) -> None:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            # scrapes 4 times a second: a rate needs two scrapes under load, not two seconds
            "global:\n  scrape_interval: 250ms\n  evaluation_interval: 250ms\n"
            "scrape_configs:\n  - job_name: dips\n    scrape_interval: 250ms\n"
            f"    static_configs:\n      - targets: ['{target}']\n")
        self.log = tmp_path / "prometheus.log"
        for _ in range(3):  # a free port may be taken before Prometheus binds it
            self.url = f"http://127.0.0.1:{free_port()}"
            with self.log.open("wb") as out:
                self.proc = subprocess.Popen(
                    [str(PROMETHEUS), f"--config.file={config}",
                     f"--storage.tsdb.path={tmp_path / 'data'}",
                     f"--web.listen-address={self.url[len('http://'):]}"],
                    stdout=out, stderr=out)
            if wait_for(lambda: self.proc.poll() is not None or self.ready(), 30,
                        "Prometheus to be ready") is True:
                return
        raise AssertionError(f"Prometheus did not start:\n{self.log.read_text()[-2000:]}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=5) as response:
            reply = json.loads(response.read())
        assert reply["status"] == "success", reply
        return list(reply["data"]["result"])

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now; None while it has no (non-NaN) result."""
        result = self.query(expr)
        if not result or result[0]["value"][1] in ("NaN", "+Inf", "-Inf"):
            return None
        return float(result[0]["value"][1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_prometheus_scrapes_rates_and_quantiles(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    prometheus = None
    try:
        brokers = [cluster.broker() for _ in range(2)]
        for _ in range(2):
            cluster.worker(brokers, "echo")
        gateway = start_gateway(cluster, [b.endpoint for b in brokers])
        prometheus = Prometheus(tmp_path, gateway.url[len("http://"):])
        wait_for(lambda: prometheus.value('up{job="dips"}') == 1, 30, "a first scrape")
        status = broker_status(brokers[0].endpoint)
        echo = status.services.get("echo") if status else None
        has_v2 = echo is not None and echo.counters is not None
        with HttpLoad(gateway, threads=4) as load:
            queries = {
                "gateway rate": 'sum(rate(dips_http_requests_total{service="echo"}[30s]))',
                "served rate": 'sum(rate(dips_worker_served_total{service="echo"}[30s]))',
                "gateway p99": "histogram_quantile(0.99, sum by (le) "
                               '(rate(dips_http_request_seconds_bucket{service="echo"}[30s])))',
            }
            if has_v2:
                queries["requests rate"] = 'sum(rate(dips_requests_total{service="echo"}[30s]))'
                queries["work p50"] = ("histogram_quantile(0.5, sum by (le) "
                                       '(rate(dips_work_seconds_bucket{service="echo"}[30s])))')
                queries["queue p99"] = ("histogram_quantile(0.99, sum by (le) "
                                        '(rate(dips_queue_seconds_bucket{service="echo"}[30s])))')
            values: dict[str, float] = {}

            def all_answered() -> bool:
                for name, expr in queries.items():
                    value = prometheus.value(expr)
                    if value is None or value <= 0:
                        return False
                    values[name] = value
                return True

            wait_for(all_answered, 40, f"Prometheus to answer {list(queries)}")
        assert load.failures == []
        total = load.ok
        for name in ("gateway rate", "served rate", "requests rate"):
            if name in values:  # a rate over 30 s cannot exceed what was sent
                assert 0 < values[name] * 30 <= total * 1.5 + 30, (name, values, total)
        for name in ("gateway p99", "work p50", "queue p99"):
            if name in values:
                assert 0 < values[name] < 10, (name, values)
        broker_up = prometheus.query("dips_broker_up")
        assert sorted(float(r["value"][1]) for r in broker_up) == [1.0, 1.0]
        assert has_v2, f"the brokers' per-service counters and histograms: {sorted(values)}"
    finally:
        if prometheus is not None:
            prometheus.stop()
        cluster.stop_all()
