"""Error text for the user: one line, without terminal escapes or library paragraphs.

Every message the CLI and the widgets show goes through `one_line`; torch's refusals of a
file go through `load_error_reason`. The standard library only, so every unit may use it.
"""
from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(text: object, limit: int = 200) -> str:
    """Library error text for a one-line message: no terminal escapes, its first line, and when that is
    long, cut after a sentence or at a word (never mid-word)."""
    lines = _ANSI.sub("", str(text)).strip().splitlines()
    first = lines[0].strip() if lines else ""
    if len(first) <= limit:
        return first
    cut = first[:limit]
    end = max(cut.rfind(". "), cut.rfind("; "))
    return cut[:end + 1] if end > limit // 3 else cut.rsplit(" ", 1)[0] + " ..."


def load_error_reason(e: Exception) -> str:
    """Why `torch.load(weights_only=True)` refused a file, in a few words: its unpickler's own reason
    rather than torch's paragraph on weights_only (which suggests the unsafe way round it)."""
    text = _ANSI.sub("", str(e))
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n\n")[0]
        return f"holds something other than plain weights: {one_line(detail)}"
    return one_line(text) or type(e).__name__
