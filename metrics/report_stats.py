"""Report statistics: intervals over seeds, paired tests between variants, tests against baselines, Holm.

The unit of replication is the training seed: each run's score is its mean over the test clips,
and a variant's seeds are independent draws of that score.

- A variant's mean: with 3 to 9 seeds, the 95% Student t interval (``scipy.stats.ttest_1samp``);
  from ``BOOTSTRAP_FROM`` (10) seeds, a BCa bootstrap interval (``scipy.stats.bootstrap``; Efron 1987).
  With fewer than 3 seeds there is no interval, only the min-max range, and it is called that.
- Two variants: paired by seed (runs with the same seed score the same test clips), two-sided paired
  t-test (``scipy.stats.ttest_rel``) and its 95% interval of the mean difference; from 10 pairs the
  interval is BCa, the p-value still the t-test's.
- A variant against a baseline (one number per test set): two-sided one-sample t-test of the seeds'
  scores against that number (``scipy.stats.ttest_1samp(popmean=baseline)``).
- Each table's p-values are adjusted together with Holm's method (``statsmodels`` ``multipletests``).
  A difference is significant only when its adjusted p < 0.05.
- No test: fewer than 3 seeds, or zero variance (every seed gives the same value or difference). Such a
  comparison is reported as such, gets no p-value, is not counted among the comparisons and is never
  significant.
"""

import inspect
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

log = logging.getLogger("report")
MIN_SEEDS = 3  # fewer seeds: the min-max range, no test
BOOTSTRAP_FROM = 10  # from this many seeds the interval is a bootstrap one; below it, Student t
LEVEL = 0.95
ALPHA = 0.05
METHODS = ("BCa", "percentile")  # scipy.stats.bootstrap methods the report offers (10 seeds and more)
STUDENT_T, ZERO_VARIANCE, MIN_MAX, ONE_SEED, NONE = "Student t", "zero variance", "min-max", "one seed", "none"
CORRECTION = "Holm (statsmodels.stats.multitest.multipletests, method='holm')"
SIGNIFICANCE_RULE = (f"A difference is called significant only when its Holm-adjusted p < {ALPHA} (adjusted over "
                     "the table's comparisons). With fewer than 3 seeds, or zero variance (every seed gives the same "
                     "value), there is no test: such a comparison is never significant and is not counted.")
SMALL_N_NOTE = ("With 3 seeds the t interval is wide (its half-width is 4.30 standard errors): a difference smaller "
                "than the seed-to-seed spread is seldom detected, so 'not significant' is not 'equal'.")


@dataclass(frozen=True)
class Interval:
    """A mean (or mean difference) over seeds and its 95% interval; ``kind`` says what the interval is.

    ``p`` is the two-sided p-value of the test behind it (differences and baseline tests; NaN: no test)."""

    mean: float
    low: float
    high: float
    n: int
    kind: str  # "Student t", "BCa bootstrap", "percentile bootstrap", "zero variance", "min-max", "one seed", "none"
    p: float = math.nan

    @property
    def is_interval(self) -> bool:
        """A confidence interval (Student t or bootstrap), not a range or a single value."""
        return self.kind == STUDENT_T or "bootstrap" in self.kind

    @property
    def fell_back(self) -> bool:
        """A percentile interval where the requested method (BCa) is undefined."""
        return "undefined" in self.kind


def method_label(method: str) -> str:
    return f"{method} bootstrap"


def interval_name(n: int, method: str = "BCa") -> str:
    """The interval a table shows for n seeds."""
    if n < MIN_SEEDS:
        return "none (min-max range)"
    return method_label(method) if n >= BOOTSTRAP_FROM else STUDENT_T


def _rng_kwarg(seed: int) -> dict:
    """scipy >= 1.15 takes ``rng``; older versions take ``random_state``."""
    name = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def _bootstrap(data: tuple, statistic, paired: bool, method: str, n_boot: int, seed: int) -> tuple:
    """(low, high, kind) of scipy.stats.bootstrap; BCa that is undefined falls back to percentile, and says so."""
    if method not in METHODS:
        raise ValueError(f"interval method must be one of {METHODS}, got {method!r}")
    for m in dict.fromkeys([method, "percentile"]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BCa on degenerate data warns, then returns NaN
            res = stats.bootstrap(data, statistic, paired=paired, n_resamples=n_boot, confidence_level=LEVEL,
                                  method=m, **_rng_kwarg(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            kind = method_label(m) if m == method else f"{method_label(m)} ({method} undefined)"
            return low, high, kind
    return math.nan, math.nan, NONE


def finite(values) -> np.ndarray:
    """The finite values as floats; None and non-numbers count as missing (NaN), never 0."""
    x = np.asarray([number(v) for v in values], dtype=float)
    return x[np.isfinite(x)]


def number(value) -> float:
    """A metric value as float; null (missing) stays NaN, never 0; a non-number is logged and read as missing."""
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        log.warning("not a number: %r (read as missing)", value)
        return math.nan


def zero_spread(x: np.ndarray) -> bool:
    """Every value the same (to rounding): no variance, so no t-test and no interval."""
    return x.size > 0 and float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.abs(x).max()))


def seed_interval(values, method: str = "BCa", n_boot: int = 2000, seed: int = 0) -> Interval:
    """Mean over seeds with its 95% interval: Student t for 3-9 seeds, bootstrap from 10; fewer: the min-max
    range; equal seeds: zero variance. NaNs are dropped."""
    if method not in METHODS:
        raise ValueError(f"interval method must be one of {METHODS}, got {method!r}")
    x = finite(values)
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, NONE)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, mean, mean, 1, ONE_SEED)
    if n < MIN_SEEDS:
        return Interval(mean, float(x.min()), float(x.max()), n, MIN_MAX)
    if zero_spread(x):
        return Interval(mean, mean, mean, n, ZERO_VARIANCE)
    if n < BOOTSTRAP_FROM:
        ci = stats.ttest_1samp(x, 0.0).confidence_interval(LEVEL)
        return Interval(mean, float(ci.low), float(ci.high), n, STUDENT_T)
    low, high, kind = _bootstrap((x,), np.mean, False, method, n_boot, seed)
    return Interval(mean, low, high, n, kind)


def _mean_difference(a, b, axis=-1):
    return np.mean(a - b, axis=axis)


def paired_difference(a, b, method: str = "BCa", n_boot: int = 2000, seed: int = 0) -> Interval:
    """Mean of a - b over pairs (a[i], b[i] share seed i), the paired t-test's p and the 95% interval.

    Pairs where either value is missing are dropped. Fewer than 3 pairs, or equal differences: no test."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two 1-D arrays of one length, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    n = int(a.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, NONE)
    mean = float(np.mean(a - b))
    if n < MIN_SEEDS:
        return Interval(mean, math.nan, math.nan, n, NONE)
    if zero_spread(a - b):
        return Interval(mean, mean, mean, n, ZERO_VARIANCE)
    res = stats.ttest_rel(a, b)
    if n < BOOTSTRAP_FROM:
        ci = res.confidence_interval(LEVEL)
        return Interval(mean, float(ci.low), float(ci.high), n, STUDENT_T, float(res.pvalue))
    low, high, kind = _bootstrap((a, b), _mean_difference, True, method, n_boot, seed)
    return Interval(mean, low, high, n, kind, float(res.pvalue))


def against_value(values, value: float) -> Interval:
    """Mean of values - value over seeds, with the one-sample t-test's p and 95% interval (n >= 3, not all equal)."""
    x = finite(values)
    n = int(x.size)
    if n == 0 or not math.isfinite(value):
        return Interval(math.nan, math.nan, math.nan, n, NONE)
    mean = float(x.mean() - value)
    if n < MIN_SEEDS:
        return Interval(mean, math.nan, math.nan, n, NONE)
    if zero_spread(x):
        return Interval(mean, mean, mean, n, ZERO_VARIANCE)
    res = stats.ttest_1samp(x, value)
    ci = res.confidence_interval(LEVEL)
    return Interval(mean, float(ci.low) - value, float(ci.high) - value, n, STUDENT_T, float(res.pvalue))


# ---------------------------------------------------------------- multiple comparisons


def holm(pvalues) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels multipletests); NaN (no test) stays NaN and is not counted."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    tested = np.isfinite(p)
    if tested.any():
        out[tested] = multipletests(p[tested], alpha=ALPHA, method="holm")[1]
    return out


def label(rows: list) -> int:
    """Add p_holm and significant (adjusted p < ALPHA) to each row (dicts with "p"); return the number of tests."""
    adjusted = holm([r["p"] for r in rows])
    for r, q in zip(rows, adjusted, strict=True):
        r["p_holm"] = float(q)
        r["significant"] = bool(math.isfinite(q) and q < ALPHA)
    return int(np.isfinite(adjusted).sum())


def better(a: float, b: float, higher_is_better: bool) -> bool:
    return a > b if higher_is_better else a < b


def verdict(diff_mean: float, significant: bool, higher_is_better: bool) -> str:
    """'beats' (better and significant), 'does not beat' (not better on the mean), 'unclear' (better, not
    significant, or no test), or 'n/a'."""
    if not math.isfinite(diff_mean):
        return "n/a"
    if not better(diff_mean, 0.0, higher_is_better):
        return "does not beat"
    return "beats" if significant else "unclear"


def test_caption(count: int, what: str) -> str:
    """The sentence a table's caption gives: the test, the correction, the number of comparisons."""
    return (f"Test: {what}. Correction: {CORRECTION}, over the {count} comparison{'s' if count != 1 else ''} of this "
            f"table that have a test. {SIGNIFICANCE_RULE}")


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
        return Interval(math.nan, math.nan, math.nan, 0, NONE)
    a = np.asarray(a_lists, dtype=float).mean(axis=0)  # (clips,)
    b = np.asarray(b_lists, dtype=float).mean(axis=0)
    return paired_difference(a, b, method, n_boot, seed)


def paired_frame(frame, metrics: list, references: dict, method: str = "BCa", n_boot: int = 2000,
                 seed: int = 0, per_video: dict | None = None) -> tuple:
    """Paired differences variant - reference per (task, variant, metric), matched by seed, Holm-adjusted over
    all of them; and notes.

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
                             "interval": d.kind, "p": d.p, "clip_n": clips.n, "clip_low": clips.low,
                             "clip_high": clips.high, "clip_interval": clips.kind})
    label(rows)
    return rows, notes


def baseline_tests(frame, metrics: list, directions: dict, baselines: dict) -> list:
    """One row per (task, variant, baseline, metric) that both scored: the seeds' mean minus the baseline, the
    one-sample t-test's p, Holm-adjusted over all the rows, and the verdict.

    ``baselines`` is {task: {name: {metric: value}}}; a metric a baseline has no value for (black fill's FVD)
    is not compared."""
    rows = []
    evaluated = frame[frame["task"].notna()]
    for (task, variant), group in evaluated.groupby(["task", "variant"], sort=True):
        for name, scores in sorted(baselines.get(task, {}).items()):
            for m in metrics:
                value = number(scores.get(m))
                if m not in directions or not math.isfinite(value) or m not in group:
                    continue
                d = against_value(group[m].to_numpy(float), value)
                if d.n == 0:
                    continue
                rows.append({"task": task, "variant": variant, "baseline": name, "metric": m, "n": d.n,
                             "mean": d.mean + value, "baseline_value": value, "diff_mean": d.mean, "diff_low": d.low,
                             "diff_high": d.high, "interval": d.kind, "p": d.p})
    label(rows)
    for r in rows:
        r["verdict"] = verdict(r["diff_mean"], r["significant"], directions[r["metric"]])
    return rows


def min_detectable_difference(sd: float, n: int = 3, power: float = 0.8) -> dict:
    """The smallest mean paired difference n seeds detect (two-sided paired t-test at ALPHA, with ``power``) when
    the differences' standard deviation is ``sd``; and the 95% t interval's half-width at that sd."""
    from statsmodels.stats.power import TTestPower  # only the docs' computation needs it

    effect = TTestPower().solve_power(nobs=n, alpha=ALPHA, power=power, alternative="two-sided")
    return {"mdd": float(effect * sd), "half_width": float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)),
            "effect_size": float(effect)}
