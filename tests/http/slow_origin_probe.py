"""What a stalled origin does to ordinary image requests (a measurement, not a test).

    PYTHONPATH=.:tests:tests/http python tests/http/slow_origin_probe.py [--workers 3]
        [--stalled 3] [--ordinary 24] [--door-flag=--origin-hold=0 ...]

A broker, ``--workers`` renderers' imgproxy workers (``DIPS_SOURCE_TIMEOUT`` 5 s, the
default), one door and two loopback origins: one that accepts and never answers, one healthy.
Two waves, one after the other: in each, ``--stalled`` requests for distinct images on the
stalled origin, and beside them ``--ordinary`` requests (each a different size of a photo on
the healthy origin) arriving one every 50 ms from 0.2 s on, each on its own connection.
Prints, per wave, the statuses, the ordinary requests' latencies (p50, max) and the wave's
wall time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from httpkit import start_gateway
from imagekit import Origin, image_workers, make_photos, signed

from clusterkit import Cluster


def one(gateway_call, url: str) -> tuple[int, str, float]:
    started = time.monotonic()
    status, _, body = gateway_call("GET", url, timeout=60)
    code = "" if status == 200 else json.loads(body)["error"]["code"]
    return status, code, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--stalled", type=int, default=3)
    parser.add_argument("--ordinary", type=int, default=24)
    parser.add_argument("--door-flag", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        make_photos(tmp_path / "photos")
        origin = Origin(tmp_path / "photos").start()
        stalls = Origin(tmp_path / "photos").start()
        cluster = Cluster(tmp_path)
        try:
            broker = cluster.broker()
            image_workers(cluster, [broker], args.workers, allow=f"{origin.url},{stalls.url}",
                          env={"DIPS_SOURCE_TIMEOUT": "5"})
            gateway = start_gateway(cluster, [broker.endpoint], "--timeout", "20",
                                    *args.door_flag)
            for wave in (1, 2):
                stalled = [signed(["w:50"], f"{stalls.url}/stall/{wave}-{i}.jpg", signer=None)
                           for i in range(args.stalled)]
                ordinary = [signed([f"w:{100 + wave * 200 + i}"], f"{origin.url}/a.jpg",
                                   signer=None) for i in range(args.ordinary)]
                started = time.monotonic()
                with concurrent.futures.ThreadPoolExecutor(args.stalled + args.ordinary) as pool:
                    held = [pool.submit(one, gateway.call, url) for url in stalled]
                    time.sleep(0.2)  # the stalled requests reach the workers first
                    arriving = []
                    for url in ordinary:  # open loop: one every 50 ms, whatever came back
                        arriving.append(pool.submit(one, gateway.call, url))
                        time.sleep(0.05)
                    fine = [f.result() for f in arriving]
                    bad = [f.result() for f in held]
                wall = time.monotonic() - started
                lat = [t for _, _, t in fine]
                print(f"wave {wave}: stalled {sorted({(s, c) for s, c, _ in bad})} "
                      f"in {statistics.median(t for _, _, t in bad):.2f} s (median); "
                      f"ordinary {sorted({s for s, _, _ in fine})} "
                      f"p50 {statistics.median(lat) * 1000:.0f} ms, "
                      f"max {max(lat) * 1000:.0f} ms, {sum(t > 1 for t in lat)} over 1 s; "
                      f"wave {wall:.2f} s", flush=True)
        finally:
            cluster.stop_all()
            origin.stop()
            stalls.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
