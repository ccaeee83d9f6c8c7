"""Console text shared by every command: lines without terminal colour codes, counts in words."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences (Flower colours its log levels even into pipes and files)."""
    return _ANSI.sub("", text)


def plural(n: int, noun: str) -> str:
    """``"1 shop"``, ``"3 shops"``: a count and its noun, regular English plural."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
