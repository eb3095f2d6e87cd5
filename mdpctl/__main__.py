"""``python -m mdpctl``: the same as the ``mdpctl`` console script."""

from __future__ import annotations

import sys

from mdpctl.cli import main

if __name__ == "__main__":
    sys.exit(main())
