"""`crfgan validate-artefacts`: the validation matrix of the seam and grid tests.

Real volumes against an independent draw of the same demo set, corrupted one way
at a time: slab seams (on and off the slab grid, multiplicative, additive, under
noise), additive noise alone, the blocky grid of nearest x4 upsampling without
slabs, and a blur. Each test must react to its own artefact (p < 0.05) and stay at
its null (p >= 0.05) for every other row; `expect` says which row should trip which.
"""
from __future__ import annotations

import numpy as np

from ..data import VolumeDataset
from ..evaluation.artefacts import artefact_tests
from ..evaluation.inject import blur, nearest_grid, noise, slab_seams
from ..evaluation.seams import sdr

ALPHA = 0.05


def cases(fake: np.ndarray, period: int) -> dict[str, tuple[np.ndarray, set[str]]]:
    """Row name -> (corrupted volumes, the tests that should react)."""
    return {
        "none (an independent draw)": (fake, set()),
        "seams on the slab grid": (slab_seams(fake, period, 0.3), {"seams"}),
        f"seams shifted by {period // 2} planes": (slab_seams(fake, period, 0.3, phase=period // 2), {"seams"}),
        "seams shifted by 2 planes": (slab_seams(fake, period, 0.3, phase=2), {"seams"}),
        "multiplicative seams (gain only)": (slab_seams(fake, period, 0.3, kind="gain"), {"seams"}),
        "additive seams (offset only)": (slab_seams(fake, period, 0.3, kind="offset"), {"seams"}),
        "seams + noise 0.2": (noise(slab_seams(fake, period, 0.3), 0.2), {"seams"}),
        "noise 0.1": (noise(fake, 0.1), set()),
        "noise 0.2": (noise(fake, 0.2), set()),
        "nearest x4 grid, no slabs": (nearest_grid(fake, 4, 0.5), {"grid"}),
        "nearest x4 grid + noise 0.2": (noise(nearest_grid(fake, 4, 0.5), 0.2), {"grid"}),
        "blur (sigma 1)": (blur(fake, 1.0), set()),
    }


def artefact_matrix(num: int = 24, size: int = 64, data: str = "demo-brain", permutations: int = 500) -> list[dict]:
    """One row per case: each test's value and p, what was expected and whether it held."""
    if 1 / (1 + permutations) >= ALPHA:  # the smallest p a permutation test can give is 1 / (1 + n)
        raise ValueError(f"permutations must be at least {int(1 / ALPHA)} for a p-value below {ALPHA}")
    def load(seed: int) -> np.ndarray:
        return VolumeDataset(data, size=size, demo_count=num, demo_seed=seed).volumes()

    real, fake = load(0), load(1)
    rows = []
    for name, (volumes, expect) in cases(fake, size // 8).items():
        r = artefact_tests(real, volumes, permutations=permutations)
        # the older seam ratio, for comparison: it also reacts to the x4 grid, whose period divides D / 8
        row = {"case": name, "expect": sorted(expect),
               "sdr_d_diff": sdr(real, volumes, axis=0, period=size // 8, n_boot=200)["diff"]}
        for test in ("seams", "grid"):
            reacted = r[test]["p"] < ALPHA
            row[test] = {"value": r[test]["value"], "p": r[test]["p"], "reacted": reacted,
                         "as_expected": reacted == (test in expect)}
        rows.append(row)
    return rows


def matrix_markdown(rows: list[dict], num: int, size: int) -> str:
    lines = [f"| corruption of the fake set ({num} volumes a side, {size}^3) | seams: value (p) | grid: value (p) "
             "| expected to react | as expected | SDR (D), fake - real |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r[t]['value']:+.3f} ({r[t]['p']:.3f})" for t in ("seams", "grid")]
        ok = all(r[t]["as_expected"] for t in ("seams", "grid"))
        lines.append(f"| {r['case']} | {cells[0]} | {cells[1]} | {', '.join(r['expect']) or 'none'} | "
                     f"{'yes' if ok else 'NO'} | {r['sdr_d_diff']:+.3f} |")
    return "\n".join(lines) + "\n"
