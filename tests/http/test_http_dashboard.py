"""The dashboard of an `mdpctl up` cluster in real headless Chromium (DevTools protocol)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cdp import CHROMIUM, Browser, Page
from httpkit import Gateway, HttpLoad

from clusterkit import Proc, needs
from testkit import broker_status, free_ports, wait_for

pytestmark = [pytest.mark.slow,
              needs(CHROMIUM is not None, "chromium")]
SCREENSHOT_ENV = "DIPS_DASHBOARD_SCREENSHOT"  # also write the screenshot under load there
SERVICES = {"echo": 1, "ecard": 2, "thumbnail": 1}


def mdpctl(run_dir: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mdpctl", "--run-dir", str(run_dir), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def fleet_workers(brokers: list[str]) -> set[str]:
    """service:pid of every worker some broker knows."""
    found = set()
    for endpoint in brokers:
        status = broker_status(endpoint)
        for name, entry in status.services.items() if status else ():
            found.update(f"{name}:{w.pid}" for w in entry.workers)
    return found


async def numbers(page: Page) -> tuple[float, int]:
    """The total reply rate in the header and the sum of the workers' served counts."""
    rate = await page.evaluate("Number((document.getElementById('total-rate') || {}).textContent)")
    served = await page.evaluate(
        "[...document.querySelectorAll('td.served')]"
        ".reduce((a, e) => a + Number(e.textContent), 0)")
    return float(rate or 0), int(served or 0)


async def drive(tmp_path: Path, url: str, brokers: list[str], gateway: Gateway) -> None:
    browser = Browser(tmp_path)
    try:
        page = await browser.page()
        await page.send("Emulation.setDeviceMetricsOverride", width=1280, height=1000,
                        deviceScaleFactor=1, mobile=False)
        await page.send("Page.navigate", url=url)
        await page.wait_for("!!document.body && Number(document.body.dataset.updates || 0) >= 2",
                            30, "two live updates")
        workers = fleet_workers(brokers)
        expected = sum(SERVICES.values())
        assert len(workers) == expected, workers
        shown_workers = await page.wait_for(
            f"(() => {{ const w = [...document.querySelectorAll('[data-worker]')]"
            f".map(e => e.dataset.worker); return w.length === {expected} && w; }})()",
            15, "every worker on the page")
        assert set(shown_workers) == workers
        shown_services = await page.evaluate(
            "[...document.querySelectorAll('[data-service]')].map(e => e.dataset.service)")
        assert set(shown_services) == set(SERVICES)
        assert await page.evaluate("document.querySelectorAll('[data-broker]').length") == 2

        rate0, served0 = await numbers(page)
        ecard = {"pSN": "1234567890", "pData": list(range(80))}
        with HttpLoad(gateway, threads=2), \
                HttpLoad(gateway, threads=2, service="ecard", request=ecard):
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # the numbers move while the load runs
                rate, served = await numbers(page)
                if rate > 0 and served > served0 + 50:
                    break
                assert asyncio.get_running_loop().time() < deadline, (rate, served)
                await asyncio.sleep(0.2)
            await page.wait_for("[...document.querySelectorAll('[data-service]')].every("
                                "e => e.querySelector('.v').textContent !== '–')", 10,
                                "a rate on every service card")
            rate_before = await page.evaluate("document.getElementById('total-rate').textContent")
            await page.wait_for(f"document.getElementById('total-rate').textContent !== "
                                f"'{rate_before}'", 10, "the rate to change")
            shot = tmp_path / "dashboard.png"
            await page.screenshot(shot)
            if os.environ.get(SCREENSHOT_ENV):
                shutil.copy(shot, os.environ[SCREENSHOT_ENV])
        assert rate0 >= 0
        await page.send("Emulation.setDeviceMetricsOverride", width=390, height=844,
                        deviceScaleFactor=2, mobile=True)
        await page.wait_for("document.documentElement.scrollWidth <= window.innerWidth + 1", 10,
                            "no sideways scrolling on a phone-sized screen")
        await page.screenshot(tmp_path / "dashboard-phone.png")
        assert page.problems() == []
        await page.close()
    finally:
        await browser.close()


def test_dashboard_shows_the_fleet_and_moves_under_load(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    *broker_ports, http_port = free_ports(3)
    brokers = [f"tcp://127.0.0.1:{port}" for port in broker_ports]
    listen = f"127.0.0.1:{http_port}"
    args = ["up", "--spare", "0", "--http", listen, "--gearman", "off",
            "--heartbeat-interval", "0.5"]
    for broker in brokers:
        args += ["--broker", broker]
    for service, count in SERVICES.items():
        args += ["--service", f"{service}={count}"]
    try:
        up = mdpctl(run_dir, *args)
        assert up.returncode == 0, up.stdout + up.stderr
        log = run_dir / "log" / "mdp-http.log"
        gateway = Gateway(Proc(None, log), f"http://{listen}")  # type: ignore[arg-type]
        wait_for(lambda: gateway.call("GET", "/healthz", timeout=2)[0] == 200
                 if log.exists() else False, 30, "mdp-http under supervisord")
        asyncio.run(drive(tmp_path, f"http://{listen}/", brokers, gateway))
    finally:
        down = mdpctl(run_dir, "down", "--timeout", "30", timeout=60)
        assert down.returncode == 0 or "no cluster" in down.stderr, down.stderr
