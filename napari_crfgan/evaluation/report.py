"""One call that runs every offline metric: arrays in, a JSON-able dict out.

:func:`evaluate` compares generated volumes with real ones and, beside every
number, the same number for two halves of the real set (the noise floor: a
model cannot be told apart from real data on a metric where it sits at the
floor). :func:`to_markdown` renders the result as a table.

Rules followed: random-feature metrics are averaged over seeds
(mean +- std); features are normalised by one scalar, the RMS of the real
features; FD magnitudes depend on the extractor and are never comparable with
published MedicalNet numbers; compare models only at equal sample counts.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from . import features as _features
from .frechet import frechet_distance
from .kid import kid
from .artefacts import artefact_tests
from .mmd import median_bandwidth, mmd, pool_volumes
from .msssim import msssim_pair_values
from .prdc import prdc
from .seams import sdr, sdr_profile

__all__ = ["evaluate", "to_markdown", "METRIC_INFO", "INTERVALS", "interval_meanings", "metric_keys"]

#: Metric name prefix -> (which direction is better, one-line meaning).
METRIC_INFO = {
    "fd": ("lower", "Frechet distance of fixed-network features"),
    "kid": ("lower", "kernel distance (unbiased MMD^2, cubic kernel) of features"),
    "mmd": ("lower", "Gaussian MMD^2 on voxels pooled to 16^3; p from a permutation test"),
    "precision": ("higher", "fraction of fakes inside the real k-NN manifold (fidelity)"),
    "recall": ("higher", "fraction of reals inside the fake k-NN manifold (diversity)"),
    "density": ("~1", "mean count of real k-NN balls holding a fake, over k (fidelity)"),
    "coverage": ("higher", "fraction of reals with a fake in their k-NN ball (mode collapse)"),
    "msssim_diversity": ("~real", "mean MS-SSIM of random fake pairs; lower = more diverse"),
    "sdr": ("~real (~1)", "plane-gap ratio on the slab grid (also reacts to the x4 upsampling grid: see seams, grid)"),
    "memorisation": ("~0.05", "fraction of samples closer to a training volume than 95% of held-out real "
                              "volumes are (pooled 16^3 voxels)"),
    "seams": ("~0, p > 0.05", "slab-border excess of squared plane gaps along D at the strongest phase, grid part "
                              "removed, fake minus real; p: permutation test"),
    "grid": ("~0, p > 0.05", "period-4 component of in-plane squared plane gaps (nearest-upsampling grid), "
                             "fake minus real; p: permutation test"),
    "sdr_free": ("lower", "max |r(k) - 1| of the fake/real plane-gap ratio profile"),
}


#: The one vocabulary for what a metric's spread ("std", printed as "±") or interval means.
#: Each value is the exact string stored in ``evaluate(...)["intervals"][key]`` (and in
#: :mod:`~napari_crfgan.evaluation.paired` results), so readers can compare by equality.
INTERVALS = {
    "extractor_seeds": "std over feature-extractor seeds",
    "fixed": "none: one fixed network (std 0)",
    "permutation_null": "std under the permutation null",
    "sample_pairs": "std over random sample pairs",
    "bootstrap": "bootstrap std over volumes",
    "bootstrap_ci": "bootstrap std over volumes; [lo, hi]: bootstrap 95% CI of fake - real over volumes",
    "none": "none (no spread reported; p: permutation test where given)",
    "paired_bootstrap": "paired bootstrap 95% percentile CI over samples (a - b)",
    "training_seeds": "std over training seeds (ddof=1)",
}


def _interval_key(key: str, fixed_features: Sequence[str] = (), single_seed: bool = False,
                  prdc_features: str | None = None) -> str:
    """The :data:`INTERVALS` code of metric ``key``'s "std" in an :func:`evaluate` result."""
    if key.startswith(("fd_", "kid_")):
        name = key.split("_", 1)[1]
        return "fixed" if single_seed or name in fixed_features else "extractor_seeds"
    if key in ("precision", "recall", "density", "coverage"):
        return "fixed" if single_seed or prdc_features in fixed_features else "extractor_seeds"
    if key == "mmd":
        return "permutation_null"
    if key == "msssim_diversity":
        return "sample_pairs"
    if key.startswith("sdr_free"):
        return "bootstrap"
    if key.startswith("sdr_"):
        return "bootstrap_ci"
    return "none"  # seams, grid (null_std + p), memorisation and anything added later


def interval_meanings(result: dict) -> dict[str, str]:
    """``{metric key: meaning of its std}`` for an :func:`evaluate` result (strings of
    :data:`INTERVALS`). Uses ``result["intervals"]`` where present and derives the rest from
    the key and ``result["meta"]`` (results saved before the field existed, or metrics
    added after :func:`evaluate`, e.g. ``memorisation``)."""
    stored = result.get("intervals") or {}
    meta = result.get("meta") or {}
    kinds = meta.get("features") or []
    fixed = [_feature_name(k) for k in kinds if str(k).startswith("medicalnet:")]
    single = len(meta.get("seeds") or [0, 1]) < 2
    return {key: stored.get(key) or INTERVALS[_interval_key(key, fixed, single, meta.get("prdc_features"))]
            for key in metric_keys(result)}


def _info(key: str) -> tuple[str, str]:
    if key.startswith("sdr_free"):
        return METRIC_INFO["sdr_free"]
    for prefix in ("fd", "kid", "sdr"):
        if key.startswith(prefix + "_"):
            return METRIC_INFO[prefix]
    return METRIC_INFO.get(key, ("", ""))


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _clean(obj):
    """Make numbers JSON-safe: numpy scalars -> float/int, NaN/inf -> None."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def _feature_name(kind: str) -> str:
    return kind.split(":", 1)[0]


def _pairs_mean(metric: Callable, refs: Sequence, cands: Sequence) -> dict:
    """Mean of dict-valued ``metric(ref, cand)`` over all (ref, cand) pairs."""
    acc: dict[str, list[float]] = {}
    for r in refs:
        for c in cands:
            for k, v in metric(r, c).items():
                acc.setdefault(k, []).append(v)
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _feature_metrics(refs: dict, cands: dict, names: Sequence[str], prdc_name: str,
                     kid_subsets: int, rng_seed: int) -> dict:
    """FD/KID for every extractor and PRDC for ``prdc_name``.

    ``refs[name][seed]`` and ``cands[name][seed]`` are lists of feature arrays;
    each seed's value is the mean over all (ref, cand) pairs, and the entry is
    the mean and std over seeds.
    """
    out: dict = {}
    for name in names:
        per_seed: dict[str, list[float]] = {}
        for seed, (rs, cs) in enumerate(zip(refs[name], cands[name])):
            def one(fr, ff, _seed=seed, _name=name):
                vals = {"fd": frechet_distance(fr, ff),
                        "kid": kid(fr, ff, subsets=kid_subsets, seed=rng_seed + _seed)[0]}
                if _name == prdc_name and min(len(fr), len(ff)) > 5:
                    vals.update(prdc(fr, ff, k=5))
                return vals
            for k, v in _pairs_mean(one, rs, cs).items():
                per_seed.setdefault(k, []).append(v)
        for k in ("fd", "kid"):
            vals = per_seed[k]
            out[f"{k}_{name}"] = {"value": float(np.mean(vals)), "std": _std(vals)}
        if name == prdc_name:
            for k in ("precision", "recall", "density", "coverage"):
                vals = per_seed.get(k)
                out[k] = ({"value": float(np.mean(vals)), "std": _std(vals)} if vals
                          else {"value": None, "std": None})
    # table order: all FD/KID first, then PRDC
    order = [f"{k}_{n}" for n in names for k in ("fd", "kid")]
    return {k: out[k] for k in order + [k for k in out if k not in order]}


def _volume_metrics(real: np.ndarray, fake: np.ndarray, refs: Sequence[np.ndarray],
                    cands: Sequence[np.ndarray], *, div_real: np.ndarray,
                    div_fake: np.ndarray, seam_period: int | None, rng_seed: int,
                    mmd_permutations: int, n_boot: int, mmd_bandwidth: float) -> dict:
    """MMD, MS-SSIM diversity and seam metrics.

    Count-free or unbiased metrics use the whole sets ``real`` and ``fake``; the
    grid-free seam measure (a maximum, which grows with noise) is averaged over
    the count-matched (ref, cand) pairs. ``div_real``/``div_fake`` are MS-SSIM
    values of random pairs within each set.
    """
    out: dict = {}
    m = mmd(real, fake, permutations=mmd_permutations, seed=rng_seed, bandwidth=mmd_bandwidth)
    out["mmd"] = {"value": m["value"], "std": m["std"], "p": m["p"], "bandwidth": m["bandwidth"]}
    out.update(artefact_tests(real, fake, permutations=mmd_permutations, seed=rng_seed))  # "seams", "grid"
    out["msssim_diversity"] = {"value": float(div_fake.mean()), "std": float(div_fake.std()),
                               "real": float(div_real.mean()), "real_std": float(div_real.std())}
    for axis, name in enumerate("dhw"):
        length = real.shape[axis + 1]
        period = seam_period if seam_period is not None else max(3, length // 8)
        try:
            s = sdr(real, fake, axis=axis, period=period, n_boot=n_boot, seed=rng_seed)
        except ValueError:  # axis too short for any seam with two neighbours
            continue
        out[f"sdr_{name}"] = {k: s[k] for k in ("value", "std", "real", "diff", "ci")}
    d_period = seam_period if seam_period is not None else max(3, real.shape[1] // 8)

    def free(r, c):
        f = sdr_profile(r, c, axis=0, period=d_period, n_boot=n_boot, seed=rng_seed)
        return {k: f[k] for k in ("value", "std", "spectral", "spectral_std")}
    out["sdr_free_d"] = _pairs_mean(free, refs, cands)
    return out


# long: about half of it is the docstring, the rest one straight sequence of metrics
def evaluate(real, fake, *, features: Sequence[str] = ("shallow", "resnet10"),
             seeds: Sequence[int] = (0, 1, 2), medicalnet: str | None = None,
             seam_period: int | None = None, rng_seed: int = 0, batch_size: int | None = None,
             kid_subsets: int = 100, mmd_permutations: int = 200, msssim_pairs: int = 100,
             n_boot: int = 1000, max_chunks: int = 8,
             progress: Callable[[str], None] | None = None) -> dict:
    """Run every offline metric on generated vs real volumes.

    The real set is split (seeded) into two disjoint halves A and B of ``N // 2``
    volumes. Metrics whose value depends on the sample count (FD is biased at
    finite N; PRDC radii shrink with N; the grid-free seam maximum grows with
    noise) are computed at matched counts: the fake set is cut into chunks of
    ``N // 2`` (at most ``max_chunks``) and the fake-vs-real value is the mean over
    (A or B) x chunk comparisons, while the floor compares A with B. Unbiased or
    count-free metrics (MMD with its p-value, MS-SSIM diversity, grid SDR) use
    all of ``real`` and ``fake``; their floor is again A vs B.

    Args:
        real: real volumes, float array ``[N, D, H, W]`` in [-1, 1] (N >= 4; PRDC
            needs N >= 12).
        fake: generated volumes ``[M, D, H, W]``, same spatial shape (M >= 2;
            best M >= N // 2, else the matched counts are M vs N // 2).
        features: random extractors for FD/KID (``"shallow"``, ``"resnet10"``);
            PRDC (k = 5) uses the first one.
        seeds: weight seeds of the random extractors; feature metrics are the
            mean and std (ddof=1) over them.
        medicalnet: optional local MedicalNet ResNet-50 weights file (``PATH`` or
            ``"medicalnet:PATH"``) adding ``fd_medicalnet``/``kid_medicalnet``
            (one fixed network: std 0).
        seam_period: slab thickness in planes for the SDR grid (default: each
            axis length // 8, the CRF-GAN slab along D).
        rng_seed: seed of the real split, fake chunks, KID subsets, permutations,
            MS-SSIM pairs and bootstraps.
        batch_size: volumes per forward pass of the extractors (default: about
            2^23 voxels a batch, see ``features.auto_batch_size``).
        kid_subsets, mmd_permutations, msssim_pairs, n_boot: sizes of the
            random procedures.
        max_chunks: most fake chunks of ``N // 2`` used by matched metrics.
        progress: optional callable receiving a short message per stage.

    Returns:
        A JSON-able dict: one entry per metric, ``{"value": float, "std": float}``
        plus extra fields where a metric has them (``"p"`` for ``mmd``; ``"real"``,
        ``"real_std"`` for ``msssim_diversity``; ``"real"``, ``"diff"``, ``"ci"`` for
        ``sdr_d``/``sdr_h``/``sdr_w``; ``"spectral"``, ``"spectral_std"`` for
        ``sdr_free_d``). Keys: ``fd_<extractor>``, ``kid_<extractor>`` (extractor
        = ``shallow``, ``resnet10``, ``medicalnet``), ``precision``, ``recall``,
        ``density``, ``coverage``, ``mmd``, ``msssim_diversity``, ``sdr_d``,
        ``sdr_h``, ``sdr_w``, ``sdr_free_d``. Also ``"real_vs_real"`` with the same
        keys for real half A vs real half B (the noise floor); ``"intervals"``:
        ``{metric key: what its "std" means}``, one string of :data:`INTERVALS` per
        key, the same for both rows (extractor seeds, permutation null, random
        pairs or a bootstrap: the "±" means different things per metric);
        ``"counts"``: ``{"real": N, "fake": M, "real_half": N // 2, "fake_chunks": C}``;
        ``"meta"`` with the settings. Numbers that could not be computed are
        ``None``.
    """
    say = progress or (lambda msg: None)
    real = _features.as_volumes(real)
    fake = _features.as_volumes(fake)
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real volumes are {real.shape[1:]}, fake ones {fake.shape[1:]}")
    if len(real) < 4 or len(fake) < 2:
        raise ValueError(f"need >= 4 real and >= 2 fake volumes, got {len(real)} and {len(fake)}")
    if not features and medicalnet is None:
        raise ValueError("no feature extractor selected")

    kinds = list(features)
    if medicalnet is not None:
        kinds.append(medicalnet if str(medicalnet).startswith("medicalnet:")
                     else f"medicalnet:{medicalnet}")
    names = [_feature_name(k) for k in kinds]
    rng = np.random.default_rng(rng_seed)
    perm = rng.permutation(len(real))
    half = len(real) // 2
    idx_a, idx_b = perm[:half], perm[half:2 * half]
    fperm = rng.permutation(len(fake))
    n_chunks = max(1, min(len(fake) // half, max_chunks))
    size = min(half, len(fake))
    chunks = [fperm[j * size:(j + 1) * size] for j in range(n_chunks)]

    # Features: each set extracted once per (extractor, seed); halves and chunks
    # are row subsets. One scalar (RMS of all real features) normalises both rows.
    refs: dict[str, list] = {}
    cands: dict[str, list] = {}
    floor_refs: dict[str, list] = {}
    floor_cands: dict[str, list] = {}
    for kind, name in zip(kinds, names):
        kind_seeds = (0,) if kind.startswith("medicalnet:") else tuple(seeds)
        for seed in kind_seeds:
            say(f"features {name} seed {seed}")
            fr = _features.extract(real, kind, seed, batch_size)
            ff = _features.extract(fake, kind, seed, batch_size)
            fr, ff = _features.normalise(fr, ff)
            refs.setdefault(name, []).append([fr[idx_a], fr[idx_b]])
            cands.setdefault(name, []).append([ff[c] for c in chunks])
            floor_refs.setdefault(name, []).append([fr[idx_a]])
            floor_cands.setdefault(name, []).append([fr[idx_b]])
    prdc_name = names[0]

    say("feature metrics")
    result = _feature_metrics(refs, cands, names, prdc_name, kid_subsets, rng_seed)
    floor = _feature_metrics(floor_refs, floor_cands, names, prdc_name, kid_subsets, rng_seed)
    say("MS-SSIM diversity")
    real_a, real_b = real[idx_a], real[idx_b]
    # Pairs within each real half serve both rows: the floor compares half B's
    # diversity with half A's; the main row's real diversity pools both.
    div_a = msssim_pair_values(real_a, pairs=msssim_pairs, seed=rng_seed)
    div_b = msssim_pair_values(real_b, pairs=msssim_pairs, seed=rng_seed + 1)
    div_f = msssim_pair_values(fake, pairs=msssim_pairs, seed=rng_seed)
    say("MMD and seams")
    # one kernel for every comparison with this real set (and its floor): bandwidth from real only
    opts = dict(seam_period=seam_period, rng_seed=rng_seed, mmd_permutations=mmd_permutations,
                n_boot=n_boot, mmd_bandwidth=median_bandwidth(pool_volumes(real)))
    result.update(_volume_metrics(real, fake, [real_a, real_b], [fake[c] for c in chunks],
                                  div_real=np.concatenate([div_a, div_b]), div_fake=div_f,
                                  **opts))
    floor.update(_volume_metrics(real_a, real_b, [real_a], [real_b], div_real=div_a,
                                 div_fake=div_b, **opts))
    result["real_vs_real"] = floor
    result["counts"] = {"real": int(len(real)), "fake": int(len(fake)), "real_half": int(half),
                        "fake_chunks": int(n_chunks)}
    result["meta"] = {
        "features": kinds, "seeds": [int(s) for s in seeds], "prdc_features": prdc_name,
        "shape": [int(s) for s in real.shape[1:]],
        "seam_period": (seam_period if seam_period is not None
                        else max(3, int(real.shape[1]) // 8)),
        "rng_seed": int(rng_seed),
    }
    result["intervals"] = interval_meanings(result)
    return _clean(result)


def metric_keys(result: dict) -> list[str]:
    """The metric names of an :func:`evaluate` result, in table order."""
    return [k for k, v in result.items()
            if k not in ("real_vs_real", "counts", "meta", "split", "intervals") and isinstance(v, dict)]


def _fmt(x) -> str:
    if x is None:
        return "n/a"
    x = float(x)
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
        return f"{x:.3e}"
    return f"{x:.4g}"


def _cell(entry: dict | None) -> str:
    if not entry:
        return "n/a"
    text = _fmt(entry.get("value"))
    if entry.get("std") is not None:
        text += f" ± {_fmt(entry['std'])}"
    extra = []
    if "p" in entry:
        extra.append(f"p={_fmt(entry['p'])}")
    if "diff" in entry:
        ci = entry.get("ci") or [None, None]
        extra.append(f"real {_fmt(entry.get('real'))}, diff {_fmt(entry['diff'])} "
                     f"[{_fmt(ci[0])}, {_fmt(ci[1])}]")
    elif "real" in entry:
        extra.append(f"real {_fmt(entry['real'])}")
    if "spectral" in entry:
        extra.append(f"periodic {_fmt(entry['spectral'])}")
    if extra:
        text += " (" + "; ".join(extra) + ")"
    return text


def to_markdown(result: dict) -> str:
    """A Markdown table of an :func:`evaluate` result, the real-vs-real floor
    beside each metric, the direction that is better and what its "±" means."""
    counts = result.get("counts", {})
    floor = result.get("real_vs_real", {})
    split = result.get("split")
    lines = [
        f"Generated: {counts.get('fake', '?')} volumes; real: {counts.get('real', '?')} "
        f"(floor: two halves of {counts.get('real_half', '?')}).",
        *([f"Real set {split['real']}; training set {split['train'] or 'unknown'}: "
           + {True: "held out.", False: "NOT held out (the generator saw these volumes).",
              None: "not known to be held out (no training source recorded)."}[split["held_out"]]]
          if split else []),
        "",
        "| metric | fake vs real | real vs real (floor) | better | ± is |",
        "|---|---|---|---|---|",
    ]
    meanings = interval_meanings(result)
    for key in metric_keys(result):
        lines.append(f"| {key} | {_cell(result[key])} | {_cell(floor.get(key))} "
                     f"| {_info(key)[0]} | {meanings[key]} |")
    meta = result.get("meta")
    if meta:
        kinds = meta.get("features", [])
        random_kinds = [k for k in kinds if not k.startswith("medicalnet:")]
        fixed = [k for k in kinds if k.startswith("medicalnet:")]
        lines += ["", f"Random extractors {', '.join(random_kinds) or 'none'} over seeds "
                      f"{meta.get('seeds')} (mean ± std)"
                      + (f"; {', '.join(fixed)} is one fixed network (std 0)" if fixed else "")
                      + "; PRDC k=5 on "
                      f"{meta.get('prdc_features')}; seam grid every "
                      f"{meta.get('seam_period')} planes along D. FD magnitudes depend on "
                      "the extractor: do not compare them with published numbers."]
    return "\n".join(lines) + "\n"
