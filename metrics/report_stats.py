"""Report statistics: intervals over seeds, paired differences between variants, verdicts against baselines.

The unit of replication is the training seed: each run's score is its mean over the test clips,
and a variant's seeds are independent draws of that score. Every interval comes from
``scipy.stats.bootstrap`` (Efron and Tibshirani 1993; BCa: Efron 1987), never a hand-written loop,
and names its method. With fewer than ``MIN_SEEDS`` seeds there is no bootstrap interval, only the
min-max range, and it is called that.

Comparisons between variants are paired: the runs of two variants with the same seed score the same
test clips, so each shared seed gives one difference, and the bootstrap resamples those differences
(``paired=True``). A difference is called significant only when its 95% interval excludes zero.
"""

import inspect
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_SEEDS = 3  # fewer seeds: the min-max range, no bootstrap interval
LEVEL = 0.95
METHODS = ("BCa", "percentile")  # scipy.stats.bootstrap methods the report offers
SIGNIFICANCE_RULE = ("A difference is called significant only when the 95% interval of the paired difference "
                     "excludes zero; with fewer than 3 paired seeds there is no interval and nothing is significant.")
# With n seeds a bootstrap interval can't reach past the seeds' own range; with 3 it is about that range.
SMALL_N_NOTE = ("With 3-5 seeds a bootstrap interval is no wider than the seeds' range and undercovers: read it as a "
                "lower bound on the uncertainty. With 3 paired seeds, 'significant' means the 3 differences share "
                "a sign.")


@dataclass(frozen=True)
class Interval:
    """A mean over seeds and its interval; ``kind`` says what the interval is."""

    mean: float
    low: float
    high: float
    n: int
    kind: str  # "BCa bootstrap", "percentile bootstrap", "min-max", "one seed" or "none"

    @property
    def is_bootstrap(self) -> bool:
        return "bootstrap" in self.kind

    @property
    def fell_back(self) -> bool:
        """A percentile interval where the requested method (BCa) is undefined."""
        return "undefined" in self.kind


def method_label(method: str) -> str:
    return f"{method} bootstrap"


def _rng_kwarg(seed: int) -> dict:
    """scipy >= 1.15 takes ``rng``; older versions take ``random_state``."""
    name = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def _bootstrap(data: tuple, statistic, paired: bool, method: str, n_boot: int, seed: int) -> tuple:
    """(low, high, kind) of scipy.stats.bootstrap; BCa that is undefined (constant data) falls back to percentile."""
    if method not in METHODS:
        raise ValueError(f"interval method must be one of {METHODS}, got {method!r}")
    for m in dict.fromkeys([method, "percentile"]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa on constant data warns, then returns NaN
            res = stats.bootstrap(data, statistic, paired=paired, n_resamples=n_boot, confidence_level=LEVEL,
                                  method=m, **_rng_kwarg(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            kind = method_label(m) if m == method else f"{method_label(m)} ({method} undefined)"
            return low, high, kind
    return math.nan, math.nan, "none"


def finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def seed_interval(values, method: str = "BCa", n_boot: int = 2000, seed: int = 0) -> Interval:
    """Mean over seeds with a 95% bootstrap interval (n >= 3), else the min-max range. NaNs are dropped."""
    x = finite(values)
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "none")
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, mean, mean, 1, "one seed")
    if n < MIN_SEEDS:
        return Interval(mean, float(x.min()), float(x.max()), n, "min-max")
    low, high, kind = _bootstrap((x,), np.mean, False, method, n_boot, seed)
    return Interval(mean, low, high, n, kind)


def _mean_difference(a, b, axis=-1):
    return np.mean(a - b, axis=axis)


def paired_difference(a, b, method: str = "BCa", n_boot: int = 2000, seed: int = 0) -> Interval:
    """Mean of a - b over pairs (a[i], b[i] share seed i) with the paired 95% bootstrap interval (n >= 3 pairs).

    Pairs where either value is missing are dropped; fewer than 3 pairs give the mean and no interval."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-D arrays of one length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = int(a.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, "none")
    mean = float(np.mean(a - b))
    if n < MIN_SEEDS:
        return Interval(mean, math.nan, math.nan, n, "none")
    low, high, kind = _bootstrap((a, b), _mean_difference, True, method, n_boot, seed)
    return Interval(mean, low, high, n, kind)


def significant(diff: Interval) -> bool:
    """True only for a bootstrap interval of >= 3 pairs that excludes zero."""
    return diff.is_bootstrap and diff.n >= MIN_SEEDS and (diff.low > 0 or diff.high < 0)


def better(a: float, b: float, higher_is_better: bool) -> bool:
    return a > b if higher_is_better else a < b


def against_baseline(model: Interval, baseline: float, higher_is_better: bool) -> str:
    """'beats', 'does not beat' or 'unclear' (the mean is better, the interval or too few seeds don't settle it).

    The baseline is one number per test set (the same clips for every seed), so the model's interval over seeds
    is compared with it directly."""
    if not (math.isfinite(model.mean) and math.isfinite(baseline)):
        return "n/a"
    if not better(model.mean, baseline, higher_is_better):
        return "does not beat"
    if not model.is_bootstrap:
        return "unclear"  # fewer than 3 seeds: no interval to settle it
    worst = model.low if higher_is_better else model.high
    return "beats" if better(worst, baseline, higher_is_better) else "unclear"


# ---------------------------------------------------------------- over a sweep's runs


def pick_reference(means: dict, higher_is_better: bool | None, requested: str | None) -> tuple:
    """(reference variant, why) for one task: the requested one if it ran, else the best mean of the first metric.

    ``means`` maps each variant to its mean of that metric (NaN when missing)."""
    if requested is not None and requested in means:
        return requested, "chosen with --reference"
    ranked = sorted((v for v in means if math.isfinite(means[v])), key=means.get, reverse=bool(higher_is_better))
    if not ranked:
        return sorted(means)[0], "first by name (no metric to rank by)"
    return ranked[0], "best mean"


def clip_difference(a_lists: list, b_lists: list, method: str, n_boot: int, seed: int) -> Interval:
    """Paired over test clips: per-video scores (one list per paired seed) averaged over the seeds, a - b.

    This interval covers the choice of test clips, not seed-to-seed variation; it decides nothing."""
    lists = a_lists + b_lists
    if not a_lists or not all(isinstance(x, list) for x in lists) or len({len(x) for x in lists}) != 1:
        return Interval(math.nan, math.nan, math.nan, 0, "none")
    a = np.asarray(a_lists, dtype=float).mean(axis=0)  # (clips,)
    b = np.asarray(b_lists, dtype=float).mean(axis=0)
    return paired_difference(a, b, method, n_boot, seed)


def paired_frame(frame, metrics: list, references: dict, method: str = "BCa", n_boot: int = 2000,
                 seed: int = 0, per_video: dict | None = None) -> tuple:
    """Paired differences variant - reference per (task, variant, metric), matched by seed; and notes.

    ``frame`` has one row per run and task (columns task, variant, seed, clips, and the metrics);
    ``references`` maps each task to its reference variant. Seeds whose two runs scored different
    test clips are left out, and a note says so. ``per_video`` ({(task, variant, seed): {metric: [score
    per clip]}}) adds the interval over test clips (columns clip_*)."""
    per_video = per_video or {}
    rows, notes = [], []
    evaluated = frame[frame["task"].notna() & frame["seed"].notna()]
    for task, group in evaluated.groupby("task", sort=True):
        ref_name = references.get(task)
        ref = group[group["variant"] == ref_name].drop_duplicates("seed").set_index("seed")
        for variant, runs in group.groupby("variant", sort=True):
            if variant == ref_name:
                continue
            runs = runs.drop_duplicates("seed").set_index("seed")
            shared = sorted(set(runs.index) & set(ref.index))
            same = [s for s in shared if runs.at[s, "clips"] == ref.at[s, "clips"]]
            if len(same) < len(shared):
                notes.append(f"{task}: {variant} vs {ref_name}: seeds {sorted(set(shared) - set(same))} scored "
                             "different test clips; left out of the paired comparison")
            for m in metrics:
                d = paired_difference(runs.loc[same, m].to_numpy(float), ref.loc[same, m].to_numpy(float), method,
                                      n_boot, seed)
                clips = clip_difference([per_video.get((task, variant, int(s)), {}).get(m) for s in same],
                                        [per_video.get((task, ref_name, int(s)), {}).get(m) for s in same],
                                        method, n_boot, seed)
                rows.append({"task": task, "variant": variant, "reference": ref_name, "metric": m,
                             "n_pairs": d.n, "diff_mean": d.mean, "diff_low": d.low, "diff_high": d.high,
                             "interval": d.kind, "significant": significant(d), "clip_n": clips.n,
                             "clip_low": clips.low, "clip_high": clips.high, "clip_interval": clips.kind})
    return rows, notes
