"""Markdown pieces shared by every section's table."""

from __future__ import annotations

import math


def num(value: float | None, digits: int = 0) -> str:
    """``1,234`` (``digits`` decimals), or a dash for a missing or undefined figure."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:,.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def met(ok: bool) -> str:
    """The last cell of a Targets row."""
    return "met" if ok else "**not met**"
