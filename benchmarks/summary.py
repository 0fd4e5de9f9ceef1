"""A markdown summary of one pytest-benchmark JSON: one row per benchmark, the ours-vs-official speed-up, scaling.

    python benchmarks/summary.py results/bench/<machine-id>/<platform>/0001_*.json [--command "..."] [--peak-gflops G]

Throughput is ``extra_info["items"]`` (tokens, frames, clips, videos, ...) over the median seconds per round. Memory
is the training step's: peak RSS of a fresh process and the step's share of it on the CPU (peak minus the RSS once the
model, optimiser and batch exist), max allocated on CUDA. MFU: see ``FLOPS_NOTE``.
"""

import argparse
import json
import os
from pathlib import Path

from benchmarks.scaling_plot import exponents

OFFICIAL_GROUP = "train step: ours vs official design"
TARGET_SPEEDUP = 1.2
FLOPS_NOTE = ("MFU = model FLOPs per training step (`vdt.model.count_flops(cfg.model, batch)`: forward + backward, "
              "backward = 2x forward) / median step time / the matmul peak measured in the same session (best of "
              "square fp32 matmuls, n = 1024 and 2048, on the CPU; bf16 n = 8192 on CUDA; 2n^3 FLOPs each; re-measured "
              "before each training benchmark, the best rate so far counts).")


def fmt_seconds(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    return f"{s * 1e3:.3g} ms" if s >= 1e-3 else f"{s * 1e6:.3g} µs"


def fmt_number(v: float) -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


def case_name(b: dict) -> str:
    """The parameter id of a parametrised benchmark (``test_x[id]``), or the test name without its test_ prefix."""
    name = b["name"]
    return name[name.index("[") + 1:-1] if name.endswith("]") else name.removeprefix("test_")


def memory_cell(info: dict) -> str:
    if "step_mem_mb" not in info:
        return ""
    peak = info.get("peak_rss_mb", info.get("peak_mem_mb"))
    kind = "RSS" if "peak_rss_mb" in info else "alloc"
    return f"{peak:,.0f} MiB {kind} (step +{info['step_mem_mb']:,.0f})"


def row(b: dict) -> str:
    info, med = b.get("extra_info", {}), b["stats"]["median"]
    through = f"{fmt_number(info['items'] / med)} {info['unit']}/s" if "items" in info else ""
    mfu = f"{100 * info['mfu']:.1f}%" if "mfu" in info else ""
    note = info.get("note", "")
    if "flops_per_s" in info and "mfu" in info:
        note = f"{fmt_number(info['flops_per_s'])}FLOP/s" + (f"; {note}" if note else "")
    return (f"| {b['group'] or ''} | {case_name(b)} | {fmt_seconds(med)} | {fmt_seconds(b['stats']['min'])} "
            f"({b['stats']['rounds']}) | {through} | "
            f"{memory_cell(info)} | {mfu} | {note} |")


def official_row(b: dict) -> str:
    """The official design's interleaved timing, recorded in the extra_info of the comparison benchmark."""
    info = b["extra_info"]
    mem = memory_cell({k.removeprefix("official_"): v for k, v in info.items() if k.startswith("official_")})
    return (f"| {b['group']} | official design (interleaved) | {fmt_seconds(info['official_median_s'])} | "
            f"{fmt_seconds(min(info['official_s']))} ({len(info['official_s'])}) | "
            f"{fmt_number(info['official_tokens_per_s'])} tokens/s | {mem} | "
            f"{100 * info['official_mfu']:.1f}% | {fmt_number(info['official_flops_per_s'])}FLOP/s |")


def speedup(data: dict) -> dict | None:
    """The comparison benchmark's medians (ours timed by pytest-benchmark, official interleaved) and their ratio."""
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if b["group"] == OFFICIAL_GROUP and "speedup" in info:
            return {"official_s": info["official_median_s"], "ours_s": b["stats"]["median"], "speedup": info["speedup"],
                    "official_mfu": info["official_mfu"], "ours_mfu": info["mfu"], "rounds": b["stats"]["rounds"],
                    "speedup_min": min(info["official_s"]) / b["stats"]["min"]}
    return None


def first_info(data: dict) -> dict:
    return next((b["extra_info"] for b in data["benchmarks"] if "torch" in b.get("extra_info", {})), {})


def with_peak(data: dict, peak_flops: float) -> dict:
    """The same results with every MFU recomputed against ``peak_flops`` (a peak measured on the idle machine)."""
    data = json.loads(json.dumps(data))
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        for prefix in ("", "official_"):
            if f"{prefix}mfu" in info and f"{prefix}flops_per_s" in info:
                info[f"{prefix}mfu"] = info[f"{prefix}flops_per_s"] / peak_flops
    data["given_peak_flops"] = peak_flops
    return data


def summary_markdown(data: dict, command: str = "python benchmarks/run.py", machine: str = "") -> str:
    info, lines = first_info(data), []
    peaks = [b["extra_info"]["matmul_peak_flops_per_s"] for b in data["benchmarks"]
             if "matmul_peak_flops_per_s" in b.get("extra_info", {})]
    peak = max(peaks, default=None)
    where = info.get("device", "?") + (f" (`{machine}`)" if machine else "")
    lines.append(f"Machine: {where}; torch {info.get('torch', '?')}, {info.get('threads', '?')} threads, "
                 f"{info.get('dtype', '?')}; date {data.get('datetime', '?')[:19]}; command `{command}`.")
    if data.get("given_peak_flops"):
        lines.append(f"MFU against a {fmt_number(data['given_peak_flops'])}FLOP/s matmul peak measured on the idle "
                     f"machine (`--peak-gflops`); the session itself measured {fmt_number(peak or 0)}FLOP/s.")
    elif peak:
        lines.append(f"MFU against the matmul peak measured in the session (best of the session): "
                     f"{fmt_number(peak)}FLOP/s.")
    loads = [b["extra_info"]["load_avg_1m"] for b in data["benchmarks"] if "load_avg_1m" in b.get("extra_info", {})]
    if loads:
        busy = max(loads) > (os.cpu_count() or 1)
        lines.append(f"1-minute load average after each benchmark (the suite's own threads included): {min(loads):.1f} "
                     f"to {max(loads):.1f}" + (": above the core count, other processes shared the CPU and times are "
                                               "inflated." if busy else "."))
    lines.append("")
    lines.append("| group | case | median | min (rounds) | throughput (median) | memory | MFU (median) | notes |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for b in data["benchmarks"]:
        lines.append(row(b))
        if "official_median_s" in b.get("extra_info", {}):
            lines.append(official_row(b))
    lines.append("")
    sp = speedup(data)
    if sp:
        verdict = "meets" if sp["speedup"] >= TARGET_SPEEDUP else "misses"
        lines.append(f"Ours vs the official design (depth 4, hidden 128, 4 heads, 16 frames of 32x32x3, patch 2, "
                     f"batch 8 = 32,768 tokens; one AdamW step; same run, the two alternating step by step, median of "
                     f"{sp['rounds']} each): official {fmt_seconds(sp['official_s'])} "
                     f"(MFU {100 * sp['official_mfu']:.0f}%), "
                     f"ours {fmt_seconds(sp['ours_s'])} (MFU {100 * sp['ours_mfu']:.0f}%), speed-up "
                     f"**{sp['speedup']:.2f}x** ({verdict} the {TARGET_SPEEDUP}x target; "
                     f"{sp['speedup_min']:.2f}x on the fastest step of each).")
    fits = exponents(data)
    if fits.get("time_T") is not None:
        parts = [f"step time ∝ T^{fits['time_T']:.2f}"]
        if fits.get("mem_T") is not None:
            parts.append(f"step memory ∝ T^{fits['mem_T']:.2f}")
        if fits.get("time_side") is not None:
            parts.append(f"step time ∝ N^{fits['time_side']:.2f} in spatial tokens N at T = 16")
        lines.append("Scaling (cpu-small, batch 2; log-log least squares on the fastest round): " + ", ".join(parts)
                     + ". See scaling.png.")
    lines.append("")
    lines.append(FLOPS_NOTE + (" Here every MFU is recomputed from the timings against the peak given above, "
                               "measured on the idle machine: a peak measured under load is low and inflates MFU."
                               if data.get("given_peak_flops") else ""))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("json", type=Path, help="a pytest-benchmark JSON file")
    p.add_argument("--command", default="python benchmarks/run.py", help="the command that produced it")
    p.add_argument("--machine", default="", help="the machine id (results/bench/<machine-id>)")
    p.add_argument("--peak-gflops", type=float, help="recompute every MFU against this matmul peak (measured idle)")
    args = p.parse_args(argv)
    data = json.loads(args.json.read_text())
    if args.peak_gflops:
        data = with_peak(data, args.peak_gflops * 1e9)
    print(summary_markdown(data, args.command, args.machine), end="")


if __name__ == "__main__":
    main()
