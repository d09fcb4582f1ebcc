"""The "mask synthesis" section of results.md from a :func:`~.mask_eval.run_mask_eval` result.

:func:`mask_markdown` renders it (paper-tables' Table 6, and `crfgan mask-eval`); :func:`put_section`
puts it into an existing results.md in place of an earlier one (before the closing sections), so the
mask evaluation can be rerun without rerunning the other tables.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..files import write_bytes_atomic
from ..model import display_name
from .mask_eval import ARMS, BODY, HU_TOLERANCE, NODULE_CONTRAST, STRUCTURES

TITLE = "## Table 6: mask synthesis on demo-chest"
#: the section goes before the first of these headings of results.md (or at the end)
BEFORE = ("## Where this run differs from the paper", "## Timings")
DICE_COLUMNS = (*STRUCTURES, BODY)


def _num(x, spec=".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def _dice_cell(entry: dict) -> str:
    if entry["mean"] is None:
        return "n/a"
    if entry["low"] is None:
        return _num(entry["mean"])
    return f"{entry['mean']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def _holds(ok: bool) -> str:
    return "**holds**" if ok else "**does not hold**"


def dice_table(seg: dict) -> list[str]:
    lines = ["| segmenter trained on | pairs | " + " | ".join(f"Dice {c}" for c in DICE_COLUMNS) + " |",
             "|---" * (len(DICE_COLUMNS) + 2) + "|"]
    for arm in ARMS:
        name = f"{arm} (floor)" if arm == "real only" else arm
        lines.append(f"| {name} | {seg[arm]['pairs']} | "
                     + " | ".join(_dice_cell(seg[arm]["dice"][c]) for c in DICE_COLUMNS) + " |")
    return lines


def intensity_table(rows: dict) -> list[str]:
    lines = ["| structure | real mean HU | synthetic mean HU | synthetic - real (HU, ± std over cases) | cases |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        std = "" if r["diff_std"] is None else f" ± {r['diff_std']:.0f}"
        lines.append(f"| {name} | {_num(r['real'], '.0f')} | {_num(r['synthetic'], '.0f')} | "
                     f"{r['diff']:+.0f}{std} | {r['cases']} |")
    return lines


def mask_markdown(result: dict, command: str) -> str:
    """The section (a heading, the method, four tables and the acceptance lines)."""
    s, c, seg = result["settings"], result["counts"], result["segmentation"]
    real, painted, acc = result["realism"], result["painted"], result["acceptance"]
    seeds = s["seg_seeds"]
    gan = display_name(result["model"])
    lines = [
        TITLE, "",
        f"Printed by `{command}` ({result['seconds'] / 60:.1f} min{_reused(result)}){_provenance(result)}.", "",
        (f"demo-chest ({s['count']} volumes with their 15-label masks) split once by `data/split.py` (seed "
         f"{s['split_seed']}, stratified by nodule / no-nodule; `{result['split']}`): train {c['train']}, val "
         f"{c['val']}, test {c['test']}. {gan} ({result['preset']}, batch {result['batch_size']}, "
         f"{result['gan'].get('checkpoint_iteration', s['iterations'])} iterations, seed {s['gan_seed']}) trained on "
         f"the train pairs only. Synthetic pairs: "
         f"its volumes of the {c['val']} **val masks**, which it never saw (their real images are never used). "
         f"The segmenter (`model/segmenter.py`, a 3D U-Net of width {s['segmenter']['width']}) trains "
         f"{s['segmenter']['steps']} steps at batch {s['segmenter']['batch_size']} in every arm (cross-entropy + "
         f"soft Dice, Adam {s['segmenter']['lr']}) from seeds {list(seeds)}, on the classes "
         + ", ".join(f"{k} ({', '.join(v)})" for k, v in STRUCTURES.items())
         + f" and background; {BODY} = every class but background. Everything below is measured on the "
         f"{c['test']} **test pairs**, which neither the GAN nor any segmenter saw."), "",
        (f"Dice: per test case (a case where the structure is neither present nor predicted is left out), "
         f"averaged over the cases, then mean [95% t-interval, cut to 0..1] over the {len(seeds)} segmenter seeds. "
         "The real-only row is the floor: synthetic pairs help where a row is above it."), "",
        *dice_table(seg), "",
        (f"Realism of the {gan}'s volumes of the test masks against the real test volumes (`evaluate`, shallow "
         f"random features over extractor seeds {list(s['eval_options']['seeds'])}, ± their std): "
         f"FD {real['fd_shallow']['value']:.4g} ± {real['fd_shallow']['std']:.2g} (real vs real floor "
         f"{real['fd_shallow']['floor']:.4g}), KID {real['kid_shallow']['value']:.4g} ± "
         f"{real['kid_shallow']['std']:.2g} (floor {real['kid_shallow']['floor']:.4g})."), "",
        "Intensity agreement: mean HU inside each structure, the synthetic volume against the real one of the "
        "same test mask, averaged over the test cases:", "",
        *intensity_table(result["intensity"]["structures"]), "",
        (f"Painted nodule: in each test mask a ball of the nodule label, radius {painted['radius']:g} voxels "
         f"of the {result['preset']} grid, painted where the lung label is deepest; mean HU inside the ball "
         f"minus the mean HU of the lung within {painted['shell']:g} voxels around it, in the synthesized "
         f"volume (\"unpainted\": the same measure on the volume of the unpainted mask). "
         f"{len(painted['cases'])} cases" + (f" ({painted['skipped']} skipped: no ball of that radius fits in "
                                             "their lung)" if painted["skipped"] else "") + ": mean contrast "
         f"{_num(painted['mean'], '.0f')} HU, smallest {_num(painted['min'], '.0f')} HU, unpainted "
         f"{_num(_mean([p['unpainted_contrast'] for p in painted['cases']]), '.0f')} HU."), "",
        "Acceptance (issue 14):", "",
        (f"- lungs and soft tissue mean HU within {HU_TOLERANCE:g} HU of real: "
         + ", ".join(f"{k} {v:+.0f} HU" for k, v in acc["hu"]["diff"].items()) + f": {_holds(acc['hu']['holds'])};"),
        (f"- painted nodule at least {NODULE_CONTRAST:g} HU above the surrounding lung: "
         f"{_num(acc['nodule']['contrast'], '.0f')} HU: {_holds(acc['nodule']['holds'])};"),
        ("- Dice with real + synthetic at least the real-only Dice within its interval (its mean at least the "
         "real-only interval's lower end): "
         + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in acc["dice"]["per_structure"].items())
         + f": {_holds(acc['dice']['holds'])}."),
        "",
        "<details><summary>Mean HU per label (test cases)</summary>", "",
        *intensity_table(result["intensity"]["labels"]), "", "</details>", "",
    ]
    return "\n".join(lines) + "\n"


def _reused(result: dict) -> str:
    """Say so when the time above excludes runs trained earlier and reused from the work folder."""
    runs = [r for arm in result["segmentation"].values() for r in arm["runs"]]
    kept = sum(bool(r.get("reused")) for r in runs)
    parts = (["the GAN"] if result["gan"].get("reused") else []) + ([f"{kept} of {len(runs)} segmenter runs"]
                                                                     if kept else [])
    return f"; {' and '.join(parts)} trained earlier and reused from the work folder" if parts else ""


def _provenance(result: dict) -> str:
    """Where `crfgan mask-eval` ran (paper-tables says it in the page's header instead)."""
    p = result.get("provenance")
    if not p:
        return ""
    m = p["machine"]
    return (f" at commit `{p['commit']}` on {p['date']}, {m['cpu']} ({m['cpu_count']} logical CPUs), "
            f"{m['torch_threads']} torch thread(s), torch {m['torch']}")


def _mean(values):
    return sum(values) / len(values) if values else None


def put_section(path: str | Path, section: str) -> Path:
    """Write `section` into results.md at `path`: in place of an earlier one, else before the closing
    sections, else at the end (a missing file gets the section alone)."""
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    start = text.find(TITLE)
    if start >= 0:
        nxt = re.search(r"^## ", text[start + len(TITLE):], flags=re.M)
        end = start + len(TITLE) + nxt.start() if nxt else len(text)
        text = text[:start] + section + "\n" + text[end:] if nxt else text[:start] + section
    else:
        at = min((i for i in (text.find(h) for h in BEFORE) if i >= 0), default=-1)
        text = text[:at] + section + "\n" + text[at:] if at >= 0 else (text + "\n" if text else "") + section
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, text.encode())
    return path
