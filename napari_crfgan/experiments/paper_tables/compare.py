"""The comparisons the tables and the commentary share: which pairs, in percent, against the paper.

A ratio of :func:`~napari_crfgan.experiments.bench.bench` is taken per repeat (runs of one
repeat ran back to back) and comes as its median and range; here it becomes "% less" memory
or "% faster" speed, the range turned with it (the largest ratio is the smallest "less").
"""
from __future__ import annotations

from ...model import display_name

#: (system, reference): the paper's comparison first, then what the ablation adds
#: (the CRF's own effect, and what dropping HA-GAN's G^L / D^L / E^G alone does).
PAIRS = (("crfgan", "hagan"), ("crfgan", "crfgan-nocrf"), ("crfgan-nocrf", "hagan"))

#: |measured - paper| in percentage points within which a figure counts as "as in the paper"
CLOSE_PP = 2.0


def pct_less(c: float | None, h: float | None) -> float | None:
    """How much less `c` is than `h`, in percent of `h` (None when either is missing or h is not positive)."""
    if c is None or h is None or h <= 0:
        return None
    return 100 * (1 - c / h)


def pair_label(a: str, b: str) -> str:
    return f"{display_name(a)} vs {display_name(b)}"


def bench_pct(r: dict, a: str, b: str, what: str) -> dict | None:
    """`a` against `b` in a bench result: "speed" as % faster, "peak_memory" as % less; median, min, max."""
    spread = (r.get("ratios", {}).get(f"{a} / {b}") or {}).get(what)
    if not spread:
        return None
    if what == "speed":
        return {k: 100 * (spread[k] - 1) for k in ("median", "min", "max")}
    return {"median": 100 * (1 - spread["median"]), "min": 100 * (1 - spread["max"]),
            "max": 100 * (1 - spread["min"])}


def pct_cell(p: dict | None, repeats: int = 1, signed: bool = True) -> str:
    """'+20.9% [+19.0, +22.1]' (the range only where there was more than one repeat); 'n/a' without a value."""
    if p is None:
        return "n/a"
    spec = "+.1f" if signed else ".1f"
    text = f"{p['median']:{spec}}%"
    if repeats > 1:
        text += f" [{p['min']:{spec}}, {p['max']:{spec}}]"
    return text


def versus_paper(measured: float, paper: float, lo: float | None = None, hi: float | None = None) -> str:
    """How a measured percentage stands to the paper's: "as in the paper" only where they are close.

    Close means within :data:`CLOSE_PP` percentage points, or the paper's figure inside the measured
    range [lo, hi]; otherwise the direction and the size relative to the paper's, in plain words.
    """
    if abs(measured - paper) <= CLOSE_PP or (lo is not None and hi is not None and lo <= paper <= hi):
        return "as in the paper"
    if measured * paper < 0:
        return "the opposite direction of the paper"
    if measured == 0 or paper == 0:
        return "no difference where the paper has one" if measured == 0 else "a difference where the paper has none"
    size = measured / paper
    if 1.75 <= size < 2.5:
        words = "about twice the size"
    elif size >= 2.5:
        words = f"about {size:.0f} times the size"
    else:
        words = f"{size:.1f} times the size"
    return f"same direction, {words}"
