"""vdt/cpu_kernels.py: the C++ attention and GELU kernels compute PyTorch's functions (values and gradients),
take the model's strided layouts, are deterministic across thread counts (exact resume depends on it), work
under torch.compile, and are what vdt/ops.py routes fp32 CPU work to.

The kernels are built on first use; where there is no C++ compiler these tests are skipped (the model then
runs on PyTorch's ops, which tests/test_ops.py covers). With a compiler, a failed build fails here."""

import shutil

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from vdt import cpu_kernels, ops
from vdt.config import ModelConfig
from vdt.model import VDT

pytestmark = [
    pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="the kernels need a C++ compiler"),
    pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"), reason="needs AVX2"),
]


@pytest.fixture(scope="module", autouse=True)
def built():
    assert cpu_kernels.available(), "the CPU kernels failed to build (see the warning)"


def value_and_grad(fn, *inputs, grad_out=None):
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*inputs)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    return out.detach(), torch.autograd.grad(out, inputs, grad_out)


def assert_matches_sdpa(q, k, v):
    out, grads = value_and_grad(cpu_kernels.attention, q, k, v)
    ref, ref_grads = value_and_grad(F.scaled_dot_product_attention, q, k, v)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("shape", [(3, 4, 256, 32), (2, 3, 16, 32), (2, 2, 20, 32), (1, 2, 3, 32),
                                   (2, 2, 64, 64), (1, 3, 100, 64),
                                   (16, 8, 9, 16), (6, 4, 64, 16), (1, 2, 3, 16), (2, 2, 101, 16)])
def test_attention_matches_sdpa(shape):
    """Lengths that fill whole 16-column tiles and ones that don't, a 64-row block and a ragged one, every width
    (16: cpu-tiny's heads; its temporal attention is 9 long, its spatial 64; 101 leaves 6-, 2- and 1-row tails)."""
    g = torch.Generator().manual_seed(sum(shape))
    q, k, v = (torch.randn(shape, generator=g) * s for s in (1.5, 1.5, 1.0))
    assert_matches_sdpa(q, k, v)


def test_attention_takes_the_models_layouts():
    """Spatial: heads as strided views of one (B, T*N, 3D) qkv. Temporal: (B, T, N, D) seen as (B, N*nh, T, hd).
    The output comes back heads-last, so the model's rearrange back to tokens is a view."""
    B, T, N, D, nh = 2, 4, 64, 128, 4
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(B, T * N, 3 * D, generator=g)
    q, k, v = rearrange(qkv, "b (t n) (three h d) -> three (b t) h n d", t=T, three=3, h=nh)
    assert not q.is_contiguous()
    assert_matches_sdpa(q, k, v)
    assert rearrange(cpu_kernels.attention(q, k, v), "(b t) h n d -> b (t n) (h d)", t=T).is_contiguous()
    q, k, v = (torch.randn(B, T, N, D, generator=g).view(B, T, N * nh, D // nh).transpose(1, 2) for _ in range(3))
    assert_matches_sdpa(q, k, v)
    assert cpu_kernels.attention(q, k, v).transpose(1, 2).is_contiguous()


def test_attention_is_deterministic_across_thread_counts():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(4, 4, 48, 32, generator=g) for _ in range(3))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = value_and_grad(cpu_kernels.attention, q, k, v)
        torch.set_num_threads(2)
        two = value_and_grad(cpu_kernels.attention, q, k, v)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], two[0])
    assert all(torch.equal(a, b) for a, b in zip(one[1], two[1], strict=True))


def test_gelu_matches_aten():
    """Across the range, at the saturated ends, and with a length off the 8-lane vectors (the scalar tail)."""
    h = torch.cat([torch.linspace(-12, 12, 20001), torch.tensor([-1e4, -60.0, -0.0, 0.0, 60.0, 1e4])])
    out, (grad,) = value_and_grad(cpu_kernels.gelu_tanh, h)
    ref, (ref_grad,) = value_and_grad(lambda x: F.gelu(x, approximate="tanh"), h)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=5e-6)  # aten's gradient is off by up to 1e-6
    assert not torch.allclose(out, F.gelu(h), rtol=0, atol=1e-4)  # the tanh approximation, not the erf GELU
    # No less accurate than aten's own kernel, against a float64 reference.
    exact, (exact_grad,) = value_and_grad(lambda x: F.gelu(x, approximate="tanh"), h.double())
    assert (out.double() - exact).abs().max() <= 2 * (ref.double() - exact).abs().max()
    assert (grad.double() - exact_grad).abs().max() <= 2 * (ref_grad.double() - exact_grad).abs().max()


@pytest.mark.parametrize("op, args", [
    ("cpu_attention", lambda: [torch.randn(2, 3, 20, 32) for _ in range(3)]),
    ("gelu_tanh", lambda: [torch.randn(5, 37)]),
])
def test_ops_are_registered_consistently(op, args):
    """torch.library.opcheck: schema, fake (meta) implementation, autograd registration, as torch.compile uses them."""
    inputs = [x.requires_grad_() for x in args()]
    torch.library.opcheck(getattr(torch.ops.vdt, op), inputs)


class Counting:
    """Wraps the built extension and counts its calls by name."""

    def __init__(self, ext):
        self.ext, self.calls = ext, {}

    def __getattr__(self, name):
        fn = getattr(self.ext, name)

        def counted(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            return fn(*args)
        return counted


@pytest.fixture
def counting(monkeypatch):
    counter = Counting(cpu_kernels.extension())
    monkeypatch.setattr(cpu_kernels, "extension", lambda: counter)
    torch._dynamo.reset()
    yield counter
    torch._dynamo.reset()


def test_ops_route_fp32_cpu_work_to_the_kernels(counting):
    q, k, v = (torch.randn(2, 2, 16, 32) for _ in range(3))
    ops.attention(q, k, v)
    ops.gelu_tanh(q)
    assert counting.calls == {"attention_forward": 1, "gelu_forward": 1}
    ops.attention(*(x[..., :8] for x in (q, k, v)))  # 8-wide heads: SDPA
    ops.attention(*(x.double() for x in (q, k, v)))  # float64: SDPA
    ops.gelu_tanh(q.double())
    assert counting.calls == {"attention_forward": 1, "gelu_forward": 1}


@pytest.mark.parametrize("preset", ["cpu-small", "cpu-tiny"])
def test_model_step_uses_the_kernels_forward_and_backward(counting, preset):
    """cpu-small's 32-wide and cpu-tiny's 16-wide heads: every block's spatial and temporal attention and its GELU,
    both directions."""
    cfg = ModelConfig(preset=preset, depth=2, frames=4, size=8)
    model = VDT(cfg)
    model(torch.randn(2, 4, 3, 8, 8), torch.tensor([1, 500])).square().sum().backward()
    assert counting.calls == {"attention_forward": 4, "attention_backward": 4, "gelu_forward": 2, "gelu_backward": 2}


def test_traced_by_dynamo_the_kernels_stay_ops(counting):
    """torch.compile keeps each kernel as one op in the graph (the 'eager' backend: no inductor needed)."""
    q, k, v = (torch.randn(2, 2, 16, 32) for _ in range(3))
    out = torch.compile(ops.attention, backend="eager")(q, k, v)
    assert counting.calls == {"attention_forward": 1}
    assert torch.equal(out, cpu_kernels.attention(q, k, v))
