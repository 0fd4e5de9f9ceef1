"""The speed script's profile summary: op time is grouped by what the op is (matmul, GELU, copies, ...)."""

import re

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

