"""Small helpers for the words around numbers in what people read."""

from __future__ import annotations


def counted(n: float, noun: str, plural: str | None = None) -> str:
    """``counted(1, "check")`` is "1 check", ``counted(3, "check")`` "3 checks",
    ``counted(2.5, "core")`` "2.5 cores"."""
    shown = str(n) if isinstance(n, int) else f"{n:g}"
    return f"{shown} {noun if n == 1 else plural or noun + 's'}"
