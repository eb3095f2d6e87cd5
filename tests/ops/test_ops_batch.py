"""`mdpctl batch`: the job and retry logic without sockets, then end to end on a live cluster.

The end-to-end tests share one local cluster (`mdpctl up`, real supervisord): 2,000 small
generated JPEGs thumbnailed under tmux (the bar is read off the pane), interrupted with
Ctrl-C half way and finished by a second run; 2,000 cards with a broker SIGKILLed during
the batch; bad requests that are listed and not retried.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from clusterkit import needs
from mdp.errors import BadRequest, Expired, Overloaded, Timeout, WorkerError
from mdpctl import batchjobs
from mdpctl.batchrecord import RECORD_NAME
from mdpctl.batchrun import Summary, is_fault, retry_delay_s
from mdpctl.cli import build_parser, parse
from mdpctl.pipeline import Feed
from testkit import broker_status, free_ports, kill_all_under, serving_workers, wait_for

from .conftest import NO_DOORS
from .opstools import FAST, LocalCluster, copy_code

# --- without sockets ---------------------------------------------------------------------


def test_image_inputs_keep_their_tree_and_collisions_are_refused(tmp_path: Path) -> None:
    (tmp_path / "in" / "a").mkdir(parents=True)
    for name in ("a/x.jpg", "y.PNG", "notes.txt"):
        (tmp_path / "in" / name).write_bytes(b"data")
    (tmp_path / "z.jpeg").write_bytes(b"data")
    walk = batchjobs.image_jobs([tmp_path / "in", tmp_path / "z.jpeg"])
    jobs = walk.jobs
    assert [j.key for j in jobs] == ["a/x", "y", "z"]
    assert walk.skipped == {".txt": 1}
    assert batchjobs.request_for(jobs[0], {"width": 8}) == {"width": 8, "image": b"data"}
    (tmp_path / "in" / "z.png").write_bytes(b"other")
    with pytest.raises(batchjobs.UsageError, match="would both be written to z"):
        batchjobs.image_jobs([tmp_path / "in", tmp_path / "z.jpeg"])


def test_jsonl_lines_are_named_by_number_or_field(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"pSN": "12/34"}\n\n{"pSN": 7}\nnot json\n[1]\n')
    jobs = batchjobs.jsonl_jobs(path, None)
    assert [j.key for j in jobs] == ["000001", "000003", "000004", "000005"]
    assert [j.key for j in batchjobs.jsonl_jobs(path, "pSN")][:2] == ["12_34", "7"]
    assert batchjobs.request_for(jobs[0], {"scale": 2}) == {"pSN": "12/34", "scale": 2}
    with pytest.raises(batchjobs.InputError, match=r"r.jsonl:4 is not JSON"):
        batchjobs.request_for(jobs[2], {})
    with pytest.raises(batchjobs.InputError, match="not a JSON object"):
        batchjobs.request_for(jobs[3], {})


def test_outputs_are_sniffed_written_atomically_and_found_again(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"x" * 10
    assert batchjobs.encode_output(png) == (png, ".png")
    assert batchjobs.encode_output(b"RIFF\0\0\0\0WEBPVP8 ")[1] == ".webp"
    assert batchjobs.encode_output(b"\xff\xd8\xff\xe0")[1] == ".jpg"
    assert batchjobs.encode_output(b"??")[1] == ".bin"
    assert batchjobs.encode_output({"a": 1}) == (b'{"a": 1}\n', ".json")
    out = tmp_path / "out"
    written = batchjobs.write_atomically(out, "sub/a.b", png, ".png")
    assert written == out / "sub" / "a.b.png" and written.read_bytes() == png
    (out / ".c.png.tmp-123").write_bytes(b"half")  # left by a killed run
    assert set(batchjobs.done_keys(out)) == {"sub/a.b"}
    assert batchjobs.remove_partial(out) == 1
    assert sorted(p.name for p in out.iterdir()) == ["sub"]


def test_a_directory_says_what_it_skipped_and_why(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.JPEG", "notes.txt", "more.txt", "README", ".hidden.png",
                 ".git/x.png", "c.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"data")
    walk = batchjobs.image_jobs([tmp_path])
    assert [j.key for j in walk.jobs] == ["a", "b"]
    assert walk.skipped == {".txt": 2, "hidden": 2, "without extension": 1, ".json": 1}
    assert walk.skipped_line() == ("skipped 6 file(s) of the input directories, not images "
                                   "by their name: 2 .txt, 2 hidden, 1 .json, 1 without "
                                   "extension")
    assert batchjobs.image_jobs([tmp_path / "a.jpg"]).skipped_line() is None


def test_an_output_is_redone_when_its_input_changed_and_leaves_no_twin(tmp_path: Path) -> None:
    photo = tmp_path / "p.jpg"
    photo.write_bytes(b"data")
    out = tmp_path / "out"
    batchjobs.write_atomically(out, "p", b"RIFF\0\0\0\0WEBP", ".webp")
    (job,) = batchjobs.image_jobs([photo]).jobs
    done = batchjobs.done_keys(out)
    os.utime(photo, ns=(done["p"] - 10**9, done["p"] - 10**9))
    assert batchjobs.is_done(job, done)
    os.utime(photo, ns=(done["p"] + 10**9, done["p"] + 10**9))
    assert not batchjobs.is_done(job, done)
    (out / "p.x.png").write_bytes(b"another input's output")
    batchjobs.write_atomically(out, "p", b"\x89PNG\r\n\x1a\n", ".png")
    assert sorted(p.name for p in out.iterdir()) == ["p.png", "p.x.png"]


def test_a_run_with_other_parameters_is_named_and_refused(tmp_path: Path) -> None:
    from mdpctl import batchrecord
    from mdpctl.commands.batch import check_record
    from mdpctl.errors import UsageError

    out = tmp_path / "thumbs"
    first = batchrecord.make("thumbnail", {"width": 256, "mark": b"logo"})
    batchrecord.write(out, first)
    check_record(out, batchrecord.make("thumbnail", {"width": 128}), redo=False)  # no output
    batchjobs.write_atomically(out, "a", b"\xff\xd8\xff", ".jpg")
    check_record(out, batchrecord.make("thumbnail", {"width": 256, "mark": b"logo"}), False)
    other = batchrecord.make("thumbnail", {"width": 128, "format": "webp"})
    with pytest.raises(UsageError) as refused:
        check_record(out, other, redo=False)
    assert str(refused.value) == (
        f"{out} holds outputs made with other parameters (format: not set then, \"webp\" now; "
        "mark: 4 bytes (" + first["fields"]["mark"]["sha256"][:12] + ") then, not set now; "
        "width: 256 then, 128 now); --redo makes them all again with these, or choose "
        "another -o DIR")
    check_record(out, other, redo=True)


def test_set_values_take_json_text_and_files(tmp_path: Path) -> None:
    from mdpctl.fields import parse_set

    logo = tmp_path / "logo.png"
    logo.write_bytes(b"\x89PNG")
    fields = parse_set(["width=256", "text=(c) DIPS", f"mark=@{logo}", "handle=@@dips",
                        'title="007"', "tiled=true"])
    assert fields == {"width": 256, "text": "(c) DIPS", "mark": b"\x89PNG", "handle": "@dips",
                      "title": "007", "tiled": True}


def test_only_faults_are_retried() -> None:
    for fault in (Timeout("t"), Overloaded("o"), Expired("e"), WorkerError("x", code="internal")):
        assert is_fault(fault), fault
    for final in (BadRequest("b", "width"), WorkerError("w"), batchjobs.InputError("i")):
        assert not is_fault(final), final
    assert [retry_delay_s(n) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]
    assert retry_delay_s(20) == 5.0


def test_feed_hands_out_retries_when_due_and_ends_when_all_settled() -> None:
    feed: Feed[str] = Feed(["a", "b", "c"])
    assert feed.take(2, now=0.0) == ["a", "b"]
    feed.settle("a")
    feed.settle("b", retry_at=5.0)
    assert feed.take(5, now=1.0) == ["c"]
    feed.settle("c")
    assert feed.take(5, now=1.0) == []  # only b is left, and not yet due
    assert feed.take(5, now=5.0) == ["b"]
    assert feed.take(5, now=6.0) == []  # b is out: not over yet
    feed.settle("b")
    assert feed.take(5, now=6.0) is None


class RefusingClient:
    """Stands in for MDPClient.send_many, which refuses a whole chunk for one bad request."""

    def send_many(self, service: str, requests: list[dict], *, window: int,
                  return_exceptions: bool) -> list[object]:
        if any("huge" in r for r in requests):
            raise BadRequest("request is too large")
        return [dict(r, served=True) for r in requests]


def test_one_request_the_client_refuses_fails_alone() -> None:
    import queue
    import threading

    from mdpctl.pipeline import Pipeline

    pipeline: Pipeline[int] = Pipeline(("tcp://127.0.0.1:1",), "echo",
                                       lambda n: {"huge": n} if n == 2 else {"n": n})
    results: queue.Queue = queue.Queue()
    pipeline._send(RefusingClient(), [1, 2, 3], 8, results, threading.Event())
    outcomes = dict(results.get_nowait() for _ in range(3))
    assert outcomes[1] == {"n": 1, "served": True} and outcomes[3] == {"n": 3, "served": True}
    assert isinstance(outcomes[2], BadRequest)


def test_summary_names_codes_and_the_failures_file(tmp_path: Path) -> None:
    summary = Summary("ecard", 10, done=6, skipped=1, failed=Counter(bad_request=2, timeout=1),
                      elapsed_s=2.0, failures_path=tmp_path / "f.jsonl")
    lines = summary.lines()
    assert lines[0].startswith("batch ecard finished: 10 input(s): 6 done, 1 skipped")
    assert "3 failed" in lines[0]
    assert lines[1] == f"failed by error code: bad_request 2, timeout 1; the list is in " \
        f"{tmp_path / 'f.jsonl'}"
    assert not summary.ok


def test_inputs_may_follow_the_options() -> None:
    argv = ["batch", "thumbnail", "--width", "256", "--format", "webp", "photos/", "more/",
            "-o", "thumbs/", "--set", "mode=fill", "--set", "quality=70"]
    args = parse(build_parser(), argv)
    assert args.inputs == ["photos/", "more/"]
    from mdpctl.commands.batch import request_fields

    assert request_fields(args) == {"width": 256, "format": "webp", "mode": "fill",
                                    "quality": 70}
    with pytest.raises(SystemExit):
        parse(build_parser(), ["status", "stray"])


# --- end to end ------------------------------------------------------------------------

SIZES = [(96 + 8 * i, 72) for i in range(8)]  # thumbnails of these at width 64
IMAGES = 2000
CARDS = 2000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("batch")
    ports = free_ports(2)
    lc = LocalCluster(root, copy_code(root / "code"), root / "run",
                      [f"tcp://127.0.0.1:{p}" for p in ports])
    try:
        up = lc.ctl("up", *[a for b in lc.brokers for a in ("--broker", b)], *FAST,
                    "--service", "echo=1", "--service", "thumbnail=2", "--service", "ecard=2",
                    "--spare", "0", *NO_DOORS)
        assert up.returncode == 0, up.stderr
        yield lc
    finally:
        kill_all_under(root)  # a clean-up, as the local_cluster fixture's


def batch_argv(cluster: LocalCluster, *args: str) -> list[str]:
    return [sys.executable, "-m", "mdpctl", "--run-dir", str(cluster.run_dir), "batch", *args]


def batch_env(cluster: LocalCluster) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(cluster.code)}
    env.pop("DIPS_CLUSTER", None)
    return env


def worker_pids(cluster: LocalCluster, service: str) -> list[int]:
    return [w["pid"] for w in cluster.status()["workers"]
            if w["service"] == service and w["state"] == "RUNNING"]


def outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if not p.name.startswith("."))


def files_under(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))


class Pane:
    """Commands in tmux panes of a private tmux server: a real terminal for the bar."""

    def __init__(self, root: Path, name: str) -> None:
        self.tmux = ["tmux", "-L", f"dips-test-{os.getpid()}-{name}", "-f", "/dev/null"]
        self.root = root
        self.runs = 0

    @property
    def session(self) -> str:
        return f"batch{self.runs}"

    def run(self, argv: list[str], env: dict[str, str]) -> None:
        """Run ``argv`` in a new session (a fresh screen); it stays open after the end."""
        exports = " ".join(f"{k}={shlex.quote(env[k])}" for k in ("PYTHONPATH", "PATH"))
        command = f"cd {shlex.quote(str(self.root))} && env {exports} {shlex.join(argv)}; " \
            "echo EXIT=$?; sleep 120"
        self.runs += 1
        self._tmux("new-session", "-d", "-s", self.session, "-x", "160", "-y", "40", command)

    def capture(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.session).stdout

    def exit_status(self) -> int | None:
        found = re.search(r"^EXIT=(\d+)$", self.capture(), re.M)
        return int(found.group(1)) if found else None

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.session, *keys)

    def close(self) -> None:
        self._tmux("kill-server", check=False)

    def _tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.tmux, *args], capture_output=True, text=True, timeout=10)
        if check and result.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args[:1])} failed: {result.stderr.strip()}")
        return result


BAR = re.compile(r"thumbnail:\s+(\d+)%\|.*\|\s*(\d+)/(\d+) \[\d\d:\d\d<\d\d:\d\d,\s+[\d.]+req/s")


def bar_count(text: str) -> int:
    found = BAR.findall(text)
    return int(found[-1][1]) if found else -1


@pytest.mark.slow
@needs(shutil.which("tmux") is not None, "tmux")
def test_thumbnails_in_a_terminal_interrupted_and_resumed(cluster: LocalCluster) -> None:
    from renderers import samples

    photos, thumbs = cluster.root / "photos", cluster.root / "thumbs"
    (photos / "sub").mkdir(parents=True)
    bodies = [samples.photo_jpeg(w, h, quality=70) for w, h in SIZES]
    for i in range(IMAGES):
        folder = photos / "sub" if i % 2 else photos
        (folder / f"p{i:04d}.jpg").write_bytes(bodies[i % len(SIZES)])
    # A small window keeps the run long enough to be caught half way on a fast machine.
    argv = batch_argv(cluster, "thumbnail", "--width", "64", "--format", "webp",
                      str(photos), "-o", str(thumbs), "--window", "4")
    pane = Pane(cluster.root, "thumbs")
    workers = worker_pids(cluster, "thumbnail")
    stopped = False
    try:
        pane.run(argv, batch_env(cluster))
        first = wait_for(lambda: max(0, bar_count(pane.capture())) >= 100 and pane.capture(),
                         30, "the bar to show 100 or more")
        later = wait_for(lambda: bar_count(pane.capture()) > bar_count(first) + 100
                         and pane.capture(), 30, "the bar to move on")
        assert bar_count(later) < IMAGES
        for text in (first, later):
            assert f"/{IMAGES} [" in text and "req/s" in text  # the count, rate, time left
        # Half way: freeze the workers so the batch cannot finish, then Ctrl-C.
        wait_for(lambda: len(files_under(thumbs)) >= IMAGES // 2, 30, "half the thumbnails")
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        stopped = True
        pane.keys("C-c")
        wait_for(lambda: pane.exit_status() is not None, 30, "the batch to stop")
        assert pane.exit_status() == 130, pane.capture()
        text = pane.capture()
        assert "batch thumbnail interrupted" in text and "not done" in text, text
        first_run = {p: p.stat().st_mtime_ns for p in files_under(thumbs)}
        kept = len(first_run)
        assert IMAGES // 2 <= kept < IMAGES
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        stopped = False
        wait_for(lambda: all(serving_workers(b, "thumbnail") == 2 for b in cluster.brokers), 20,
                 "the thumbnail workers to serve again")

        pane.run(argv, batch_env(cluster))
        wait_for(lambda: pane.exit_status() is not None, 60, "the second run to end")
        text = pane.capture()
        assert pane.exit_status() == 0, text
        assert f"{IMAGES - kept} done, {kept} skipped (already done), 0 failed" in text, text
        assert "100%|" in text and f"{IMAGES - kept}/{IMAGES - kept} [" in text, text
    finally:
        if stopped:
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
        pane.close()

    for path, mtime in first_run.items():  # the first run's outputs were not redone
        assert path.stat().st_mtime_ns == mtime, path
    files = files_under(thumbs)
    left = [p for p in thumbs.rglob("*") if p.is_file() and p.name != RECORD_NAME]
    assert len(files) == IMAGES and len(left) == IMAGES  # no temporary file left over
    for path in files:
        i = int(path.stem[1:])
        assert path.parent == (thumbs / "sub" if i % 2 else thumbs) and path.suffix == ".webp"
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            w, h = SIZES[i % len(SIZES)]
            assert image.format == "WEBP" and image.size == (64, round(h * 64 / w)), path
    assert not (cluster.root / "thumbs.failures.jsonl").exists()


def card(i: int) -> dict[str, object]:
    return {"pSN": f"{i:010d}", "pData": [(i * 7 + j) % 100 for j in range(80)]}


@pytest.mark.slow
def test_cards_with_a_broker_killed_during_the_batch(cluster: LocalCluster) -> None:
    import renderers

    jsonl, out = cluster.root / "cards.jsonl", cluster.root / "cards"
    jsonl.write_text("".join(json.dumps(card(i)) + "\n" for i in range(CARDS)))
    victim = cluster.brokers[0]
    status = broker_status(victim)
    assert status is not None
    with subprocess.Popen(batch_argv(cluster, "ecard", "--jsonl", str(jsonl), "-o", str(out)),
                          env=batch_env(cluster), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as proc:
        try:
            wait_for(lambda: out.is_dir() and len(outputs(out)) >= CARDS // 4, 60,
                     "a quarter of the cards")
            os.kill(status.broker.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stdout + stderr
    assert f"{CARDS} done, 0 skipped (already done), 0 failed" in stdout, stdout
    assert len(outputs(out)) == CARDS
    ecard = renderers.get("ecard")
    for i in range(0, CARDS, 7):  # the same request gives the same bytes everywhere
        path = out / f"{i + 1:06d}.png"
        assert path.read_bytes() == ecard.render(card(i)), path
    def restarted() -> bool:
        now = broker_status(victim)
        return now is not None and now.broker.pid != status.broker.pid

    wait_for(restarted, 20, "supervisord to restart the broker")


@pytest.mark.slow
def test_bad_requests_are_listed_not_retried(cluster: LocalCluster) -> None:
    jsonl, out = cluster.root / "mixed.jsonl", cluster.root / "mixed"
    lines = [json.dumps(card(i)) for i in range(20)]
    lines[3] = json.dumps({"pSN": "1"})  # no pData
    lines[11] = json.dumps({**card(11), "scale": 3})
    lines[17] = "{not json"
    jsonl.write_text("\n".join(lines) + "\n")
    argv = batch_argv(cluster, "ecard", "--jsonl", str(jsonl), "-o", str(out))
    run = subprocess.run(argv, env=batch_env(cluster), capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    failures_path = cluster.root / "mixed.failures.jsonl"
    assert "17 done, 0 skipped (already done), 3 failed" in run.stdout
    assert f"failed by error code: bad_input 1, bad_request 2; the list is in {failures_path}" \
        in run.stdout
    records = {r["input"]: r for r in map(json.loads, failures_path.read_text().splitlines())}
    assert set(records) == {f"{jsonl}:4", f"{jsonl}:12", f"{jsonl}:18"}
    assert records[f"{jsonl}:4"]["field"] == "pData"
    assert records[f"{jsonl}:12"]["field"] == "scale"
    assert all(r["attempts"] == 1 for r in records.values())

    lines[3], lines[11], lines[17] = (json.dumps(card(i)) for i in (3, 11, 17))
    jsonl.write_text("\n".join(lines) + "\n")
    again = subprocess.run(argv, env=batch_env(cluster), capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "3 done, 17 skipped (already done), 0 failed" in again.stdout
    assert not failures_path.exists()
    assert len(outputs(out)) == 20
