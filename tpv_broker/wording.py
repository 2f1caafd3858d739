"""Small helpers for the words around numbers in what people read."""

from __future__ import annotations

import math


def counted(n: float, noun: str, plural: str | None = None) -> str:
    """``counted(1, "check")`` is "1 check", ``counted(3, "check")`` "3 checks",
    ``counted(2.5, "core")`` "2.5 cores"."""
    shown = str(n) if isinstance(n, int) else f"{n:g}"
    return f"{shown} {noun if n == 1 else plural or noun + 's'}"


def percent_below(share: float) -> str:
    """``share`` as a whole percentage, rounded down: 0.9999 of a need is
    "99%", never the "100%" that reads as all of it."""
    return f"{math.floor(share * 100 + 1e-9)}%"
