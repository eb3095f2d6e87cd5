"""The first hour of a newcomer, end to end with real processes (issue 16).

`up` right after `down`, `up` refusing a door's taken port with one line naming it and its
holder, a door that cannot start reported (and started again once it can), the doors in
`status` and `reload`, `down` and `status` from another directory, `call` of every image
service with files, `services` from the workers themselves, and a batch rerun with other
parameters.  Every wait has a timeout; no fixed sleeps.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from clusterkit import needs
from docblocks import parse
from testkit import free_ports, kill_all_under, processes_under, taken_port, wait_for

from .conftest import NO_DOORS
from .opstools import FAST, REPO, LocalCluster, copy_code

pytestmark = pytest.mark.slow

DOOR_PACKAGES = ("mdp_http", "mdp_gearman")


def with_doors(code: Path) -> Path:
    """The code copy also gets the doors, so that they run the code under test."""
    for package in DOOR_PACKAGES:
        if not (code / package).exists():
            shutil.copytree(REPO / package, code / package)  # with its compiled modules
    return code


def doors_on_free_ports() -> tuple[list[str], str, str]:
    http, gearman = (f"127.0.0.1:{p}" for p in free_ports(2))
    return ["--http", http, "--gearman", gearman], http, gearman


def one_line(text: str) -> str:
    assert text.count("\n") == 1, text
    return text


def ctl_in(cwd: Path, code: Path, *args: str, home: Path | None = None,
           timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """mdpctl run from ``cwd`` with no run directory named (HOME decides the default)."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    for name in ("DIPS_CLUSTER", "DIPS_RUN_DIR", "XDG_STATE_HOME"):
        env.pop(name, None)
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "mdpctl", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def time_wait_on(port: int) -> None:
    """Leave a connection in TIME-WAIT on ``port``, as a broker's do after `down`."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        accepted, _ = listener.accept()
        accepted.close()  # the listening side closes first
        client.close()


def test_up_right_after_down_with_its_ports_in_time_wait(local_cluster: LocalCluster) -> None:
    with_doors(local_cluster.code)
    doors, http, gearman = doors_on_free_ports()
    local_cluster.up_args = doors
    args = ("--service", "echo=1", "--spare", "0")
    first = local_cluster.up(*args)
    assert first.returncode == 0, first.stderr
    assert "starting 2 brokers, 1 worker, 2 doors under supervisord" in first.stdout
    assert f"http     http://{http}/" in first.stdout and f"gearman  {gearman}" in first.stdout
    call = local_cluster.ctl("call", "echo", "--json", '{"n": 1}')
    assert call.returncode == 0, call.stderr
    down = local_cluster.ctl("down")
    assert down.returncode == 0, down.stderr
    assert processes_under(local_cluster.root) == []
    for listen in [*local_cluster.brokers, http, gearman]:
        time_wait_on(int(listen.rpartition(":")[2]))
    again = local_cluster.up(*args)  # at once: no wait for TIME-WAIT to pass
    assert again.returncode == 0, again.stderr
    assert "cluster up" in again.stdout


@pytest.mark.parametrize("door", ["http", "gearman"])
def test_up_refuses_a_taken_door_port_in_one_line_naming_its_holder(
    door: str, local_cluster: LocalCluster
) -> None:
    doors, http, gearman = doors_on_free_ports()
    local_cluster.up_args = doors
    ours = [int(a.rpartition(":")[2]) for a in (*local_cluster.brokers, http, gearman)]
    with taken_port(avoid=ours) as taken:
        port = taken.getsockname()[1]
        result = local_cluster.up("--service", "echo=1", f"--{door}", f"127.0.0.1:{port}")
    assert result.returncode == 2, result.stdout + result.stderr
    name = "mdp-http" if door == "http" else "mdp-gearman"
    assert one_line(result.stderr).startswith(
        f"mdpctl: {name} (127.0.0.1:{port}) cannot start: port {port} on 127.0.0.1 is in use by "
        f"pid {os.getpid()} (")  # this test's own process holds it
    assert result.stderr.endswith(f"; move it with --{door} HOST:PORT, or --{door} off for "
                                  "none\n")
    assert processes_under(local_cluster.root) == []


def break_door(code: Path) -> Path:
    main = code / "mdp_http" / "__main__.py"
    pristine = code.parent / "pristine-mdp-http-main.py"
    pristine.write_text(main.read_text())
    main.write_text("import sys\nsys.exit('mdp-http: broken on purpose by the test')\n")
    return pristine


def test_a_door_that_cannot_start_fails_up_shows_in_status_and_comes_back(
    local_cluster: LocalCluster,
) -> None:
    pristine = break_door(with_doors(local_cluster.code))
    doors, http, gearman = doors_on_free_ports()
    local_cluster.up_args = doors
    # One start retry, not three: supervisord gives up on the door after 1 s, not 6.
    failed = local_cluster.up("--service", "echo=1", "--spare", "0", "--start-retries", "1")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert one_line(failed.stderr).startswith(f"mdpctl: mdp-http ({http}) could not start: ")
    assert "broken on purpose" in failed.stderr

    status = local_cluster.ctl("status", "--json")
    assert status.returncode == 3
    found = {d["door"]: d for d in json.loads(status.stdout)["doors"]}
    assert found["mdp-gearman"]["serving"] and found["mdp-gearman"]["listen"] == gearman
    assert not found["mdp-http"]["serving"] and found["mdp-http"]["state"] != "RUNNING"
    text = local_cluster.ctl("status")
    assert "DOOR" in text.stdout and "mdp-http" in text.stdout

    def http_state() -> str:
        doors = json.loads(local_cluster.ctl("status", "--json").stdout)["doors"]
        return next(d["state"] for d in doors if d["door"] == "mdp-http")

    # supervisord gives up on it after its start retries; then only `up` starts it again.
    wait_for(lambda: http_state() == "FATAL", 60, "supervisord to give up on mdp-http")
    (local_cluster.code / "mdp_http" / "__main__.py").write_text(pristine.read_text())
    again = local_cluster.up()  # the same options: it starts the door that is down
    assert again.returncode == 0, again.stdout + again.stderr
    assert "started local/mdp-http:mdp-http again" in again.stdout
    fleet = local_cluster.status()
    assert all(d["serving"] for d in fleet["doors"]), fleet["doors"]
    pids = {d["door"]: d["pid"] for d in fleet["doors"]}

    reload = local_cluster.ctl("reload")
    assert reload.returncode == 0, reload.stdout + reload.stderr
    assert "[door 2/2]" in reload.stdout and "2 door(s) restarted" in reload.stdout
    after = {d["door"]: d for d in local_cluster.status()["doors"]}
    assert all(d["serving"] and d["pid"] != pids[name] for name, d in after.items())

    other = local_cluster.up("--service", "echo=2", "--http", "off")
    assert other.returncode == 2
    assert "already running" in one_line(other.stderr) and "http: " in other.stderr
    assert "workers: 1 (+0 spare) running, 2 (+" in other.stderr  # what differs, only


def test_down_and_status_from_another_directory(tmp_path: Path) -> None:
    code = with_doors(copy_code(tmp_path / "code"))
    here, there = tmp_path / "here", tmp_path / "there"
    for path in (here, there):
        path.mkdir()
    # A home of a usual length: the run directory's socket path must fit in sun_path.
    home = Path(tempfile.mkdtemp(prefix="fh-home-"))
    brokers = [f"tcp://127.0.0.1:{p}" for p in free_ports(2)]
    doors, _http, _gearman = doors_on_free_ports()
    up_args = ["up", *[a for b in brokers for a in ("--broker", b)], *FAST, *doors,
               "--service", "echo=1", "--spare", "0"]
    try:
        up = ctl_in(here, code, *up_args, home=home)
        assert up.returncode == 0, up.stderr
        run_dir = home / ".local" / "state" / "dips" / "run"
        assert f"run directory {run_dir}" in up.stdout
        status = ctl_in(there, code, "status", "--json", home=home)
        assert status.returncode == 0, status.stderr
        assert [b["endpoint"] for b in json.loads(status.stdout)["brokers"]] == brokers
        down = ctl_in(there, code, "down", home=home)
        assert down.returncode == 0, down.stderr
        assert f"cluster in {run_dir} stopped" in down.stdout
        assert processes_under(tmp_path) == [] and processes_under(home) == []
        none = ctl_in(there, code, "status", home=home)
        assert none.returncode == 3 and none.stdout == ""
        assert one_line(none.stderr).startswith(f"mdpctl: no cluster is running in "
                                                f"{run_dir}")
        again = ctl_in(there, code, "down", home=home)
        assert again.returncode == 0 and "no cluster is running" in again.stdout

        # A run directory named at `up` is noted, and found from elsewhere without it.
        custom = tmp_path / "custom-run"
        up = ctl_in(here, code, "--run-dir", str(custom), *up_args, home=home)
        assert up.returncode == 0, up.stderr
        down = ctl_in(there, code, "down", home=home)
        assert down.returncode == 0 and f"cluster in {custom} stopped" in down.stdout
        assert processes_under(tmp_path) == [] and processes_under(home) == []
    finally:
        kill_all_under(tmp_path)
        kill_all_under(home)
        shutil.rmtree(home, ignore_errors=True)


# --- one cluster for calls, services and batches -------------------------------------------

IMAGE_SERVICES = ("thumbnail", "crop", "watermark", "convert", "image")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("first-hour")
    lc = LocalCluster(root, copy_code(root / "code"), root / "run",
                      [f"tcp://127.0.0.1:{p}" for p in free_ports(2)], up_args=list(NO_DOORS))
    try:
        up = lc.up(*[a for s in ("echo", *IMAGE_SERVICES) for a in ("--service", f"{s}=1")],
                   "--spare", "0")
        assert up.returncode == 0, up.stderr
        samples = lc.ctl("samples", str(root))
        assert samples.returncode == 0, samples.stderr
        yield lc
    finally:
        kill_all_under(root)  # a clean-up, as the local_cluster fixture's


def image_of(path: Path) -> Image.Image:
    with Image.open(io.BytesIO(path.read_bytes())) as image:
        image.load()
        return image


CALLS = {
    "thumbnail": (["--file", "image=photo.jpg", "--set", "width=256"], "JPEG", (256, 192)),
    "crop": (["--file", "image=photo.png", "--set", "width=300", "--set", "height=200",
              "--set", "format=png"], "PNG", (300, 200)),
    "watermark": (["--json", '{"image": "@photo.jpg", "mark": "@logo.png", "opacity": 0.4}'],
                  "JPEG", (1600, 1200)),
    "convert": (["--file", "image=photo.png", "--set", "format=webp"], "WEBP", (800, 600)),
    "image": (["--json", '{"image": "@photo.jpg", "format": "png", "ops": '
               '[{"op": "thumbnail", "width": 400}]}'], "PNG", (400, 300)),
}


@pytest.mark.parametrize("service", IMAGE_SERVICES)
def test_call_each_image_service_with_a_file(service: str, fleet: LocalCluster) -> None:
    argv, kind, size = CALLS[service]
    out = fleet.root / f"out-{service}"
    result = subprocess.run(
        [sys.executable, "-m", "mdpctl", "--run-dir", str(fleet.run_dir), "call", service,
         *argv, "-o", str(out)],
        cwd=fleet.root, env={**os.environ, "PYTHONPATH": str(fleet.code)},
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wrote ") and f"to {out}" in result.stdout
    image = image_of(out)
    assert (image.format, image.size) == (kind, size)


def test_services_come_from_the_workers_and_call_says_what_went_wrong(
    fleet: LocalCluster,
) -> None:
    listing = fleet.ctl("services", "--json")
    assert listing.returncode == 0, listing.stderr
    services = {s["name"]: s for s in json.loads(listing.stdout)}
    assert set(services) == {"echo", *IMAGE_SERVICES}
    thumbnail = services["thumbnail"]
    assert thumbnail["workers"] == {b: 1 for b in fleet.brokers}
    image_field = next(f for f in thumbnail["fields"] if f["name"] == "image")
    assert image_field["required"] and image_field["kind"].startswith("bytes")
    detail = fleet.ctl("services", "thumbnail")
    assert "call     mdpctl call thumbnail --file image=FILE --set width=64 -o OUT" in detail.stdout
    assert fleet.ctl("call", "--list").stdout.startswith("SERVICE")

    as_text = fleet.ctl("call", "thumbnail", "--json",
                        json.dumps({"image": str(fleet.root / "photo.jpg"), "width": 9}))
    assert as_text.returncode == 1
    assert f'write "@{fleet.root / "photo.jpg"}" or --file image=' in one_line(as_text.stderr)
    missing = fleet.ctl("call", "thumbnail", "--file", "image=/nonexistent.jpg")
    assert missing.returncode == 2
    assert "field image: cannot read /nonexistent.jpg" in one_line(missing.stderr)
    nowhere = fleet.root / "no-such-dir" / "thumb.jpg"
    unwritable = fleet.ctl("call", "thumbnail", "--file", f"image={fleet.root / 'photo.jpg'}",
                           "--set", "width=16", "-o", str(nowhere))
    assert unwritable.returncode == 2  # refused before the request is sent
    assert one_line(unwritable.stderr) == (
        f"mdpctl: -o {nowhere}: the directory {nowhere.parent} does not exist\n")
    status = fleet.ctl("call", "mmi.status")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["broker"]["endpoint"] in fleet.brokers


def test_a_batch_rerun_with_other_parameters_is_refused_then_redone(
    fleet: LocalCluster,
) -> None:
    photos, out = fleet.root / "photos", fleet.root / "thumbs"

    def batch(*args: str) -> subprocess.CompletedProcess[str]:
        return fleet.ctl("batch", "thumbnail", str(photos), "-o", str(out), "--no-progress",
                         *args)

    first = batch("--width", "64")
    assert first.returncode == 0, first.stdout + first.stderr
    assert ("skipped 1 file(s) of the input directories, not images by their name: 1 .txt"
            in first.stdout)
    assert "6 input(s): 6 done" in first.stdout
    widths = {p.name: image_of(p).size[0] for p in out.rglob("*.jpg")}
    assert set(widths.values()) == {64} and len(widths) == 6

    same = batch("--width", "64")
    assert same.returncode == 0 and "0 done, 6 skipped (already done)" in same.stdout

    other = batch("--width", "32", "--format", "png")
    assert other.returncode == 2
    assert one_line(other.stderr) == (
        f"mdpctl: {out} holds outputs made with other parameters (format: not set then, "
        '"png" now; width: 64 then, 32 now); --redo makes them all again with these, or '
        "choose another -o DIR\n")
    redo = batch("--width", "32", "--format", "png", "--redo")
    assert redo.returncode == 0, redo.stdout + redo.stderr
    assert "6 done, 0 skipped" in redo.stdout
    files = sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert [p.suffix for p in files] == [".png"] * 6  # the .jpg outputs were replaced
    assert {image_of(p).size[0] for p in files} == {32}


def _php_gearman() -> bool:
    if shutil.which("php") is None:
        return False
    return b"gearman" in subprocess.run(["php", "-m"], capture_output=True, timeout=30).stdout


@needs(_php_gearman(), "php-cli and php-gearman")
def test_the_readme_php_client_gets_a_card_as_pasted(local_cluster: LocalCluster) -> None:
    with_doors(local_cluster.code)
    [port] = free_ports(1)
    local_cluster.up_args = ["--http", "off", "--gearman", f"127.0.0.1:{port}"]
    up = local_cluster.up("--service", "ecard=1", "--spare", "0")
    assert up.returncode == 0, up.stderr
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    [block] = [b for b in parse(readme, "README.md") if b.lang == "php"]
    assert "4730" in block.code
    script = local_cluster.root / "client.php"
    script.write_text("<?php\n" + block.code.replace("4730", str(port)), encoding="utf-8")
    done = subprocess.run(["php", str(script)], cwd=local_cluster.root, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    card = image_of(local_cluster.root / "card.png")
    assert (card.format, card.size) == ("PNG", (480, 300))


def test_down_stops_the_programs_of_a_cluster_whose_supervisord_was_killed(
    local_cluster: LocalCluster,
) -> None:
    args = ("--service", "echo=1", "--spare", "0")
    assert local_cluster.up(*args).returncode == 0
    run_dir = local_cluster.run_dir
    supervisord = int((run_dir / "supervisord.pid").read_text())
    os.kill(supervisord, signal.SIGKILL)
    wait_for(lambda: supervisord not in processes_under(run_dir), 10, "supervisord to die")
    assert len(processes_under(run_dir)) >= 3  # the 2 brokers and the worker run on

    status = local_cluster.ctl("status")
    assert status.returncode == 3
    assert re.fullmatch(
        f"mdpctl: the supervisord of the cluster in {re.escape(str(run_dir))} is gone and "
        rf"\d+ of its processes run on without it; `mdpctl --run-dir "
        f"{re.escape(str(run_dir))} down` stops them\n", one_line(status.stderr))
    held = local_cluster.up(*args)  # their ports are taken, by the cluster's own brokers
    assert held.returncode == 2
    assert f"`mdpctl --run-dir {run_dir} down` stops it" in one_line(held.stderr)

    down = local_cluster.ctl("down")
    assert down.returncode == 0, down.stderr
    assert re.match(f"the supervisord of the cluster in {re.escape(str(run_dir))} was gone; "
                    r"its \d+ leftover processes have exited", one_line(down.stdout))
    assert processes_under(local_cluster.root) == []
    again = local_cluster.up(*args)
    assert again.returncode == 0, again.stderr
