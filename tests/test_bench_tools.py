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


def test_speed_variants_compute_what_our_model_computes(monkeypatch):
    """Each measured alternative is our function to float32 rounding: the same outputs and gradients."""
    from benchmarks import speed_variants as sv
    from vdt.config import ModelConfig
    from vdt.model import VDT

    h = torch.randn(4096) * 4
    assert torch.allclose(sv.gelu_sigmoid(h), F.gelu(h, approximate="tanh"), rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(sv.SigmoidGeluBlock, "gelu", sv.gelu_sigmoid)  # eager: no C++ compiler needed here
    torch.manual_seed(0)
    ours = VDT(ModelConfig(preset="cpu-tiny", frames=4, size=8))
    for p in ours.parameters():  # break the zero init, so every branch contributes
        torch.nn.init.normal_(p, std=0.05)
    x, t = torch.randn(2, 4, 3, 8, 8), torch.tensor([3, 700])
    ref = ours(x, t)
    ref_grads = torch.autograd.grad(ref.square().sum(), list(ours.parameters()))
    for name, block_class in sv.VARIANTS.items():
        model = sv.variant_model(ours, block_class)
        assert all(type(b) is block_class for b in model.blocks)
        out = model(x, t)
        grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5, msg=name)
        for g, r in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-5, msg=name)
