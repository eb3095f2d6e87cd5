"""``--profile DIR``: py-spy attached to the broker, a worker and a client under load.

Each profile is written in py-spy's collapsed-stack format (``*.txt``, one ``stack count``
line per distinct stack; https://www.speedscope.app and flamegraph.pl read it), and beside
it a ``*.top.txt`` summary: the functions with the most samples on top of the stack (self)
and anywhere in it (inclusive). py-spy samples in its default (blocking) mode, which pauses
the target for each sample but never reads a torn stack.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from benchlib.procs import Child, Children

RATE_HZ = 250
TOP = 25
WAITING = "Poller.poll ("


def find_py_spy() -> str | None:
    """The py-spy executable; installed with pip if missing (and said so)."""
    found = shutil.which("py-spy")
    if found:
        return found
    print("py-spy is not installed; trying: pip install py-spy", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"],
                       check=True, timeout=300)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"could not install py-spy ({exc}); no profiles", file=sys.stderr)
        return None
    return shutil.which("py-spy")


class Spy:
    """py-spy recorders on a few processes for one window."""

    window_s = 4.0

    def __init__(self, kids: Children, out_dir: Path) -> None:
        self.kids = kids
        self.out_dir = out_dir
        self.outputs: list[Path] = []
        self._recorders: list[Child] = []

    def start(self, label: str, targets: dict[str, Child]) -> bool:
        exe = find_py_spy()
        if exe is None:
            return False
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for role, target in targets.items():
            output = self.out_dir / f"{label}-{role}.txt"
            self.outputs.append(output)
            self._recorders.append(self.kids.spawn(f"py-spy-{role}", [
                exe, "record", "--pid", str(target.pid), "--rate", str(RATE_HZ),
                "--format", "raw", "--output", str(output)]))
        time.sleep(1.0)  # let py-spy attach before the window starts
        return True

    def stop(self) -> None:
        for recorder in self._recorders:
            recorder.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        deadline = time.monotonic() + 20
        for recorder in self._recorders:
            try:
                recorder.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        self.kids.kill(*self._recorders)
        for output in self.outputs:
            if output.exists():
                output.with_suffix(".top.txt").write_text(summarize(output))


def summarize(collapsed: Path) -> str:
    """Self and inclusive sample shares per function of a collapsed-stack file.

    py-spy cannot tell a thread blocked in ``zmq_poll`` from a busy one, so samples inside
    ``Poller.poll`` are counted apart as waiting and the shares are of the rest.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = waiting = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        if any(f.startswith(WAITING) for f in frames):
            waiting += count
            continue
        busy += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    total = max(1, busy)
    lines = [f"{collapsed.name}: {busy} busy samples at {RATE_HZ} Hz, {waiting} more waiting "
             "in Poller.poll", "", "self %   function (share of the busy samples)"]
    lines += [f"{100 * n / total:6.1f}   {name}" for name, n in own.most_common(TOP)]
    lines += ["", "incl %   function"]
    lines += [f"{100 * n / total:6.1f}   {name}" for name, n in inclusive.most_common(TOP)]
    return "\n".join(lines) + "\n"


def _short(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (file.py)``: lines merged per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({path.rsplit('/', 1)[-1]})" if path else name
