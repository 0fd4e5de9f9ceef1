"""Scaling of a training step with frames T and frame size: log-log least-squares exponents and the plot.

    python benchmarks/scaling_plot.py results/bench/<machine-id>/<platform>/0001_*.json [--out scaling.png]

Reads the "scaling" benchmarks of a pytest-benchmark JSON (benchmarks/test_bench_scaling.py). The exponent a of
step time in T is the slope of log(seconds) against log(T) at a fixed frame size; for the frame size the x axis is
the spatial tokens per frame, N = (side / patch)^2. Seconds are the fastest round of each point (the least disturbed
by other processes on a shared machine).
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402


def scaling_points(data: dict) -> list:
    """[{frames, side, spatial_tokens, seconds, mem_mb}] of the scaling benchmarks, sorted by (frames, side)."""
    points = []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if not b["group"] or not b["group"].startswith("scaling") or "frames" not in info:
            continue
        points.append({"frames": info["frames"], "side": info["side"], "spatial_tokens": info["spatial_tokens"],
                       "seconds": b["stats"]["min"], "mem_mb": info.get("step_mem_mb"),
                       "series": info.get("series", [])})
    return sorted(points, key=lambda p: (p["frames"], p["side"]))


def fit_exponent(x, y) -> tuple:
    """(a, c) of the least-squares fit log y = a log x + log c."""
    a, logc = np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)
    return float(a), float(np.exp(logc))


def series(points: list, name: str, x_key: str) -> tuple:
    """(x, seconds, memory) of one series ("T" or "side"), sorted by x."""
    chosen = sorted((p for p in points if name in p["series"]), key=lambda p: p[x_key])
    return ([p[x_key] for p in chosen], [p["seconds"] for p in chosen], [p["mem_mb"] for p in chosen])


def exponents(data: dict) -> dict:
    """Fitted exponents of time (and memory) in T and in spatial tokens; None where a series has < 2 points."""
    points, out = scaling_points(data), {}
    for name, x_key in (("T", "frames"), ("side", "spatial_tokens")):
        x, sec, mem = series(points, name, x_key)
        out[f"time_{name}"] = fit_exponent(x, sec)[0] if len(x) >= 2 else None
        ok = [(a, m) for a, m in zip(x, mem, strict=True) if m is not None and m > 0]
        out[f"mem_{name}"] = fit_exponent(*zip(*ok, strict=True))[0] if len(ok) >= 2 else None
    return out


def plot(data: dict, out: Path, title: str = "") -> dict:
    """Draw step time (and step memory) against T and against spatial tokens; returns the exponents."""
    points, fits = scaling_points(data), exponents(data)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (("T", "frames", "frames T (32x32 px)"), ("side", "spatial_tokens", "spatial tokens per frame (T = 16)"))
    for ax, (name, x_key, label) in zip(axes, panels, strict=True):
        x, sec, mem = series(points, name, x_key)
        if len(x) < 2:
            ax.set_title(f"{label}: not measured")
            continue
        a, c = fit_exponent(x, sec)
        sym = "T" if name == "T" else "N"
        grid = np.geomspace(min(x), max(x), 50)
        ax.loglog(x, sec, "o", color="C0", label="step time")
        ax.loglog(grid, c * grid**a, "-", color="C0", alpha=0.6, label=f"fit: time ∝ {sym}^{a:.2f}")
        ax.loglog(grid, sec[0] * grid / x[0], ":", color="grey", label=f"linear in {sym} (reference)")
        ax.set_xlabel(label)
        ax.set_ylabel("seconds per training step (fastest round)")
        if all(m is not None and m > 0 for m in mem):
            am, cm = fit_exponent(x, mem)
            twin = ax.twinx()
            twin.loglog(x, mem, "s", color="C1", label="step memory")
            twin.loglog(grid, cm * grid**am, "--", color="C1", alpha=0.6, label=f"fit: memory ∝ {sym}^{am:.2f}")
            twin.set_ylabel("step memory, MiB")
            twin.minorticks_off()
            handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
            ax.legend(handles, [h.get_label() for h in handles], loc="upper left", fontsize=8)
        else:
            ax.legend(loc="upper left", fontsize=8)
        ax.set_xticks(x, [str(v) for v in x])  # after twinx, which resets the shared x axis's ticks
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.grid(True, which="major", alpha=0.3)
    t_exp = fits["time_T"]
    head = f"time ∝ T^{t_exp:.2f}" if t_exp is not None else "time vs T not measured"
    fig.suptitle(f"Training step scaling: {head}" + (f" — {title}" if title else ""), fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return fits


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=Path, help="a pytest-benchmark JSON file")
    p.add_argument("--out", type=Path, help="PNG path (default: scaling.png beside the machine folder)")
    args = p.parse_args(argv)
    data = json.loads(args.json.read_text())
    print(json.dumps(plot(data, args.out or args.json.parent.parent / "scaling.png")))


if __name__ == "__main__":
    main()
