"""Report plots: convergence curves (one line per variant, seeds as a band) and the cost of a step.

Every figure is saved as PNG (for the page) and PDF (for the paper). A curve is a pair of
arrays (x, y); a series maps each variant to the curves of its seeds.
"""

import json
import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

log = logging.getLogger("report")
GRID_POINTS = 400  # points of the common x grid the seeds of a variant are interpolated onto


# ---------------------------------------------------------------- curves from train logs


def curve(records: list, x_key: str, y_get) -> tuple:
    """Sorted (x, y) arrays from log records; a step logged twice (a resume) keeps its last value."""
    points = {}
    for rec in records:
        x, y = rec.get(x_key), y_get(rec)
        if x is not None and y is not None and math.isfinite(float(y)):
            points[float(x)] = float(y)
    xs = np.array(sorted(points))
    return xs, np.array([points[x] for x in xs])


def loss_series(runs: list, x_key: str, scale: float = 1.0) -> dict:
    """{variant: [(x, loss) per seed]} from the train logs of runs (objects with .variant and .log)."""
    out = {}
    for r in runs:
        x, y = curve(r.log, x_key, lambda rec: rec.get("loss"))
        out.setdefault(r.variant, []).append((x / scale, y))
    return out


def eval_series(runs: list) -> dict:
    """(task, metric) -> {variant: [(step, value) per seed]} from the eval lines of the train logs."""
    keys = sorted({(t, m) for r in runs for rec in r.log for t, res in (rec.get("eval") or {}).items()
                   for m in res})
    out = {}
    for task, m in keys:
        for r in runs:
            x, y = curve(r.log, "step", lambda rec, t=task, k=m: ((rec.get("eval") or {}).get(t) or {}).get(k))
            out.setdefault((task, m), {}).setdefault(r.variant, []).append((x, y))
    return out


# ---------------------------------------------------------------- convergence


def colours(variants: list) -> dict:
    """One fixed colour per variant, so a variant keeps its colour in every plot of the sweep."""
    cmap = plt.get_cmap("tab10" if len(variants) <= 10 else "tab20")
    return {v: cmap(i % cmap.N) for i, v in enumerate(variants)}


def band(curves: list) -> tuple:
    """Seeds on one x grid: (grid, mean, low, high); low/high (min/max over seeds) are NaN where one seed covers x."""
    xs = np.unique(np.concatenate([x for x, _ in curves]))
    grid = xs if xs.size <= GRID_POINTS else np.linspace(xs[0], xs[-1], GRID_POINTS)
    ys = np.full((len(curves), grid.size), np.nan)  # (seeds, points)
    for i, (x, y) in enumerate(curves):
        inside = (grid >= x[0]) & (grid <= x[-1])
        ys[i, inside] = np.interp(grid[inside], x, y)  # no extrapolation past a seed's own range
    count = np.isfinite(ys).sum(axis=0)
    filled = np.where(np.isfinite(ys), ys, 0.0)
    mean = np.where(count > 0, filled.sum(axis=0) / np.maximum(count, 1), np.nan)
    low = np.where(count > 1, np.where(np.isfinite(ys), ys, np.inf).min(axis=0), np.nan)
    high = np.where(count > 1, np.where(np.isfinite(ys), ys, -np.inf).max(axis=0), np.nan)
    return grid, mean, low, high


def fits_log(values) -> bool:
    """A log axis fits positive values that span at least a decade."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return v.size > 1 and v.min() > 0 and v.max() / v.min() >= 10


def save(fig, stem: Path) -> list:
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.13, top=0.91)  # fixed margins: tight_layout is slow
    for p in paths:
        fig.savefig(p, dpi=120 if p.suffix == ".png" else None)
    plt.close(fig)
    return paths


def nonempty(series: dict) -> dict:
    """variant -> its non-empty (x, y) curves; variants with none are left out."""
    series = {v: [c for c in curves if len(c[0])] for v, curves in series.items()}
    return {v: curves for v, curves in series.items() if curves}


def plot_bands(series: dict, stem: Path, *, xlabel: str, ylabel: str, title: str, variants: list) -> list:
    """One line per variant (mean over seeds) with a min-max band over seeds; returns [png, pdf] or []."""
    series = nonempty(series)
    if not series:
        return []
    colour = colours(variants)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    all_y = []
    for v in [v for v in variants if v in series]:
        grid, mean, low, high = band(series[v])
        ax.plot(grid, mean, color=colour[v], lw=1.6, label=f"{v} (n={len(series[v])})")
        if np.isfinite(low).any():
            ax.fill_between(grid, low, high, color=colour[v], alpha=0.2, lw=0)
        all_y.append(np.concatenate([y for _, y in series[v]]))
    if fits_log(np.concatenate(all_y)):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(title="variant (seeds)", fontsize=8, title_fontsize=8)
    return save(fig, stem)


def plot_x0(series: dict, lines: dict, stem: Path, *, task: str, variants: list) -> list:
    """PSNR of the one-step clean-frame estimate against the noise level t: one line per variant (mean over seeds,
    min-max band) and each baseline's PSNR (``lines``: label -> dB) as a horizontal line; [png, pdf] or []."""
    series = nonempty(series)
    if not series:
        return []
    colour = colours(variants)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for v in [v for v in variants if v in series]:
        grid, mean, low, high = band(series[v])
        ax.plot(grid, mean, color=colour[v], lw=1.6, marker="o", ms=3, label=f"{v} (n={len(series[v])})")
        if np.isfinite(low).any():
            ax.fill_between(grid, low, high, color=colour[v], alpha=0.2, lw=0)
    for (label, db), style in zip(sorted(lines.items()), ("--", ":", "-.", (0, (1, 3))), strict=False):
        if math.isfinite(db):
            ax.axhline(db, color="black", ls=style, lw=1.0, label=f"{label}: {db:.2f} dB")
    ax.set_xlabel("diffusion step t of the noised input (0 = clean, larger = noisier)")
    ax.set_ylabel("x0-estimate PSNR (dB), generated region")
    ax.set_title(f"Clean-frame estimate by noise level ({task}; band: min-max over seeds)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, stem)


def time_unit(max_seconds: float) -> tuple:
    """(divisor, unit) that keeps a wall-clock axis readable."""
    if max_seconds >= 2 * 3600:
        return 3600.0, "h"
    if max_seconds >= 120:
        return 60.0, "min"
    return 1.0, "s"


# ---------------------------------------------------------------- cost (benchmarks)


def read_bench(bench_dir: Path) -> list:
    """Benchmarks that record a token count (or tokens/s), from results/bench/<machine-id>/**/*.json
    (pytest-benchmark JSON; it keeps its files in a subfolder per interpreter)."""
    points = []
    for path in sorted(Path(bench_dir).glob("*/**/*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            log.warning("skipping unreadable benchmark file %s: %s", path, e)
            continue
        for b in data.get("benchmarks", []):
            extra, stats = b.get("extra_info") or {}, b.get("stats") or {}
            seconds = extra.get("step_time_s", stats.get("median", stats.get("mean")))
            tokens = extra.get("tokens")
            if tokens is None and extra.get("tokens_per_s") is not None and seconds is not None:
                tokens = extra["tokens_per_s"] * seconds  # tokens per step
            if tokens is None or seconds is None:
                continue
            name = b.get("group") or str(b.get("name", "?")).split("[")[0]
            machine = path.relative_to(bench_dir).parts[0]
            points.append({"machine": machine, "name": name, "tokens": float(tokens),
                           "seconds": float(seconds), "extra": extra})
    return points


def plot_cost(points: list, stem: Path) -> list:
    """Step time against token count, one line per (machine, benchmark); [] when there is nothing to plot."""
    if not points:
        return []
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    keys = sorted({(p["machine"], p["name"]) for p in points})
    for machine, name in keys:
        pts = sorted((p["tokens"], p["seconds"]) for p in points if (p["machine"], p["name"]) == (machine, name))
        t, s = np.array(pts).T
        # Only a scaling series is one model at growing length; other groups compare different configs.
        ax.plot(t, s * 1e3, marker="o", ms=4, lw=1.4 if name.startswith("scaling") else 0,
                label=f"{name} ({machine})")
    tokens = [p["tokens"] for p in points]
    times = [p["seconds"] for p in points]
    if fits_log(tokens):
        ax.set_xscale("log", base=2)
    if fits_log(times):
        ax.set_yscale("log")
    ax.set_xlabel("sequence length (tokens)")
    ax.set_ylabel("step time (ms)")
    ax.set_title("Cost of a step (pytest-benchmark)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, stem)
