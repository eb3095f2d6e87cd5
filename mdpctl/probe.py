"""The version probe: ``python -m mdpctl.probe`` prints what a worker started now would run.

supervisord on each worker host runs it as the ``mdp-version`` program, with the same
interpreter and environment as the workers; ``mdpctl reload`` reads its output to learn
the code version the rollout must reach.  The output is one JSON line.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any

PREFIX = "mdp-version: "


def probe() -> dict[str, Any]:
    """The code version of the tree ``mdp`` imports from, with host and interpreter."""
    from mdp.version import code_version

    return {"version": code_version(), "host": socket.gethostname(), "python": sys.executable}


def parse(output: str) -> dict[str, Any] | None:
    """The last probe line in ``output`` (a log tail), or None."""
    for line in reversed(output.splitlines()):
        if line.startswith(PREFIX):
            try:
                value = json.loads(line[len(PREFIX) :])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def main() -> int:
    try:
        result = probe()
    except Exception as exc:  # report any import or hashing failure as one line
        sys.stdout.write(f"mdp-version failed: {type(exc).__name__}: {exc}\n")
        return 1
    sys.stdout.write(PREFIX + json.dumps(result, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
