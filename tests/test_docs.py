"""The documents are tests: every shell and Python block of README.md and docs/*.md runs.

One local cluster serves every block: ``mdpctl up`` in a temporary run directory, on the
default ports the documents name (5555, 5556, 8080, 4730), so the session first takes
``/tmp/dips-default-ports.lock`` (``flock``), as every user of those ports does. Each
document runs in a directory of its own, where ``mdpctl samples`` has written the inputs the
examples use (photo.jpg, photos/, card.json, cards.jsonl ...) and where copies of the
repository's scripts/, supervisor/ and docs/ are, so ``scripts/demo`` works as pasted and no
block can change the repository through them; ``DIPS_RUN_DIR`` points every ``mdpctl`` at
the cluster and ``HOME`` at a scratch directory. A block that stops the cluster (``mdpctl
down``, ``scripts/demo``) or starts one of its own in its place gets the session's started
again for the next.

How a document marks a block that cannot run, or one that needs setup: ``tests/docblocks.py``.
A failure names the document and the line of the block, with the end of its output.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from docblocks import Block, MarkerError, collect, parse
from testkit import kill_all_under, processes_under

REPO = Path(__file__).resolve().parents[1]
PORTS_LOCK = Path("/tmp/dips-default-ports.lock")
LOCK_WAIT_S = 600.0
BLOCK_TIMEOUT_S = 180.0
# One worker per service (and one spare slot): the blocks need every service, not its
# throughput, and the session starts this cluster five times (once, and again after each
# block that stops it or runs its own); 9 workers start in about half the time of 18.
UP = ["up", "--workers", "1", "--timeout", "120"]
COPIED = ("scripts", "supervisor", "docs", "pyproject.toml", "README.md")
# Blocks that must never run inside the suite, whatever their markers say.
FORBIDDEN = ("pytest", "pip install")

try:
    BLOCKS = collect(REPO)
    COLLECT_ERROR: str | None = None
except MarkerError as exc:
    BLOCKS, COLLECT_ERROR = [], str(exc)
RUNNABLE = [b for b in BLOCKS if b.runs]


def test_markers_are_well_formed() -> None:
    assert COLLECT_ERROR is None, COLLECT_ERROR
    assert all(b.skip for b in BLOCKS if b.lang in ("shell", "python") and not b.runs)


def test_the_marker_grammar() -> None:
    text = "\n".join([
        "<!-- docs-test: skip (needs several hosts) -->", "```sh", "ssh img1 true", "```",
        "", "<!-- docs-test: setup", "touch a.txt", "-->", "", "```bash", "cat a.txt", "```",
        "<!-- docs-test: setup-python x = 1 -->", "```python", "print(x)", "```",
        "```toml", "a = 1", "```", "  ```sh", "  echo indented", "  ```",
    ])
    blocks = parse(text, "X.md")
    assert [(b.line, b.lang, b.runs) for b in blocks] == [
        (2, "shell", False), (10, "shell", True), (14, "python", True), (17, "toml", False),
        (20, "shell", True)]
    assert blocks[0].skip == "needs several hosts" and blocks[1].setup_shell == "touch a.txt"
    assert blocks[2].setup_python == "x = 1" and blocks[4].code == "echo indented\n"
    for bad, message in [
        ("<!-- docs-test: skip -->\n```sh\ntrue\n```", "cannot run"),
        ("<!-- docs-test: skip (x) -->\ntext\n```sh\ntrue\n```", "right before a code block"),
        ("<!-- docs-test: setup\ntrue\n", "never closed"),
        ("<!-- docs-test: later (x) -->\n```sh\ntrue\n```", "unknown docs-test marker"),
    ]:
        with pytest.raises(MarkerError, match=message):
            parse(bad, "Y.md")


@dataclass
class Docs:
    """The session's cluster and the directories the documents run in."""

    root: Path
    env: dict[str, str]
    workdirs: dict[str, Path] = field(default_factory=dict)
    standard: str = ""  # the session cluster's up.json

    @property
    def run_dir(self) -> Path:
        return Path(self.env["DIPS_RUN_DIR"])

    def mdpctl(self, *args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mdpctl", *args], env=self.env,
                              cwd=self.root, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def ensure_up(self) -> None:
        """The session's cluster, serving; started again when a block stopped it or left
        one of its own (`mdpctl up --sources-root photos ...`) in its place."""
        if (self.run_dir / "supervisor.sock").exists():
            status = self.mdpctl("status", "--json", timeout=60)
            if status.returncode == 0 and self._options() == self.standard:
                return
            self.mdpctl("down", "--timeout", "30", timeout=60)
        up = self.mdpctl(*UP)
        assert up.returncode == 0, f"mdpctl up failed: {up.stdout}{up.stderr}"
        self.standard = self.standard or self._options()

    def _options(self) -> str:
        """What the running cluster was started with (`up.json`)."""
        try:
            return (self.run_dir / "up.json").read_text(encoding="utf-8")
        except OSError:
            return ""

    def workdir(self, doc: str) -> Path:
        """The document's own directory, with the sample inputs and copies of the
        repository's top-level entries a block may name."""
        if doc not in self.workdirs:
            path = self.root / "docs" / doc.replace("/", "_")
            path.mkdir(parents=True)
            for name in COPIED:
                source = REPO / name
                if source.is_dir():
                    shutil.copytree(source, path / name,
                                    ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(source, path / name)
            samples = self.mdpctl("samples", str(path))
            assert samples.returncode == 0, samples.stderr
            self.workdirs[doc] = path
        return self.workdirs[doc]


def _take_ports_lock() -> int | None:
    """Hold the default ports' lock, under CI too: CI=true is also set on shared machines,
    where a cluster on the default ports run without it meets another user's (and an
    `mdpctl down` of one finds and stops the other's, by its default port)."""
    fd = os.open(PORTS_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                pytest.fail(f"{PORTS_LOCK} was held for more than {LOCK_WAIT_S:g} s")
            time.sleep(0.5)  # another user of the default ports is still running


@pytest.fixture(scope="session")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Docs]:
    lock = _take_ports_lock()
    root = tmp_path_factory.mktemp("docs")
    home = root / "home"
    home.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
               [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "DIPS_RUN_DIR": str(root / "run"), "HOME": str(home),
           "XDG_STATE_HOME": str(home / ".local" / "state"),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    env.pop("DIPS_CLUSTER", None)
    session = Docs(root, env)
    try:
        session.ensure_up()
        yield session
    finally:
        try:
            session.mdpctl("down", "--timeout", "30", timeout=60)
        finally:
            kill_all_under(root)
            assert not processes_under(root), f"processes left under {root}"
            if lock is not None:
                os.close(lock)


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    with subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True) as proc:
        try:
            out, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=30)
            return -1, out + f"\n(killed after {BLOCK_TIMEOUT_S:g} s)"
    return proc.returncode, out


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


@pytest.mark.slow
@pytest.mark.timeout(LOCK_WAIT_S + BLOCK_TIMEOUT_S + 120)
@pytest.mark.parametrize("block", RUNNABLE, ids=[b.id for b in RUNNABLE])
def test_block_runs_as_pasted(block: Block, docs: Docs) -> None:
    for word in FORBIDDEN:
        assert word not in block.code, (
            f"{block.id}: a block that runs {word!r} cannot run inside the suite; mark it "
            "<!-- docs-test: skip (why) -->")
    cwd = docs.workdir(block.doc)
    if block.setup_shell:
        code, out = _run(["bash", "-euo", "pipefail", "-c", block.setup_shell], cwd, docs.env)
        assert code == 0, f"{block.id}: its setup failed (exit {code}):\n{_tail(out)}"
    if block.lang == "shell":
        argv = ["bash", "-euo", "pipefail", "-c", block.code]
    else:
        script = cwd / f".block-{block.line}.py"
        script.write_text(block.setup_python + "\n" + block.code, encoding="utf-8")
        argv = [sys.executable, script.name]
    try:
        code, out = _run(argv, cwd, docs.env)
        assert code == 0, f"{block.id} failed (exit {code}); its output ends:\n{_tail(out)}"
    finally:
        docs.ensure_up()


def test_commands_are_in_blocks_that_run() -> None:
    """A command written as a console session would escape the test: use ```sh."""
    hidden = [b.id for b in BLOCKS if b.lang in ("console", "shell-session", "zsh")]
    assert hidden == [], "use ```sh for commands (and a plain ``` for output)"
