"""vdt/ops.py: each form of the tanh-GELU and of the short temporal attention computes the same function, and
each place (eager CPU, compiled CPU) gets the form it is meant to get. The routing to vdt's own CPU kernels is
tested in tests/test_cpu_kernels.py; here, tests that check PyTorch's forms switch those kernels off."""

import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from vdt import cpu_kernels, ops
from vdt.config import ModelConfig
from vdt.model import VDT


@pytest.fixture
def without_kernels(monkeypatch):
    """As where vdt's CPU kernels can't be built: ops falls back to PyTorch's ops."""
    monkeypatch.setattr(cpu_kernels, "extension", lambda: None)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def value_and_grad(fn, *inputs):
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*inputs)
    grad_out = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    return out.detach(), torch.autograd.grad(out, inputs, grad_out)


def test_a_failed_kernel_build_warns_and_falls_back(monkeypatch, tmp_path):
    """No compiler, no ninja, a broken toolchain: vdt says so once and runs on PyTorch's ops."""
    import torch.utils.cpp_extension

    def broken(*args, **kwargs):
        raise RuntimeError("Error building extension 'vdt_cpu_kernels': c++: command not found")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(torch.utils.cpp_extension, "load", broken)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    with pytest.warns(UserWarning, match="could not be built.*c\\+\\+: command not found.*fall back"):
        assert cpu_kernels.extension.__wrapped__() is None
    monkeypatch.setenv("VDT_CPU_KERNELS", "0")  # switched off: no build is tried, so no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_kernels.extension.__wrapped__() is None


def test_sigmoid_form_is_the_tanh_gelu():
    h = torch.cat([torch.linspace(-12, 12, 20001), torch.tensor([-1e4, -60.0, 0.0, 60.0, 1e4])])
    out, (grad,) = value_and_grad(ops.gelu_tanh_sigmoid, h)
    ref, (ref_grad,) = value_and_grad(lambda x: F.gelu(x, approximate="tanh"), h)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out, F.gelu(h), rtol=0, atol=1e-4)  # the tanh approximation, not the erf GELU


def test_eager_gelu_is_atens_kernel(without_kernels):
    h = torch.randn(1000) * 3
    assert torch.equal(ops.gelu_tanh(h), F.gelu(h, approximate="tanh"))


def qkv(length, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 6, length, 16, generator=g) for _ in range(3)]  # (B, heads, L, hd)


@pytest.mark.parametrize("length", [5, 16, ops.MATH_MAX_LEN])
def test_short_attention_on_the_cpu_is_sdpas_math_backend(length):
    q, k, v = qkv(length)
    with sdpa_kernel(SDPBackend.MATH):
        math = F.scaled_dot_product_attention(q, k, v)
    assert torch.equal(ops.short_attention(q, k, v), math)
    out, grads = value_and_grad(ops.short_attention, q, k, v)
    ref, ref_grads = value_and_grad(F.scaled_dot_product_attention, q, k, v)  # SDPA's own pick (flash)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def test_long_sequences_keep_sdpas_own_kernel():
    q, k, v = qkv(ops.MATH_MAX_LEN + 1)
    assert torch.equal(ops.short_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_written_out_math_backend_matches_sdpa():
    q, k, v = (x.transpose(1, 2) for x in qkv(16, seed=1))  # strided views, as the model passes them
    out, grads = value_and_grad(ops.math_attention, q, k, v)
    ref, ref_grads = value_and_grad(F.scaled_dot_product_attention, q, k, v)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)


def test_a_compiled_cpu_graph_gets_the_compiled_forms(without_kernels):
    """Traced by dynamo (the 'eager' backend: no C++ compiler), each op takes its compiled-CPU branch."""
    h = torch.randn(4096) * 3
    assert torch.equal(torch.compile(ops.gelu_tanh, backend="eager")(h), ops.gelu_tanh_sigmoid(h))
    assert not torch.equal(ops.gelu_tanh_sigmoid(h), ops.gelu_tanh(h))  # so the check above tells them apart
    q, k, v = qkv(16)
    traced = torch.compile(ops.short_attention, backend="eager")(q, k, v)
    assert torch.equal(traced, ops.math_attention(q, k, v))


def tiny_model(heads=4):
    torch.manual_seed(0)
    model = VDT(ModelConfig(preset="cpu-tiny", depth=2, frames=4, size=8, heads=heads))
    for p in model.parameters():  # break the zero init, so every branch contributes
        torch.nn.init.normal_(p, std=0.05)
    return model


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")), reason="inductor needs a C++ compiler")
@pytest.mark.parametrize("heads", [4, 2], ids=["hd16-pytorch-ops", "hd32-vdt-kernels"])
def test_inductor_compiled_model_matches_eager(heads):
    """The whole model under torch.compile (inductor, as train.compile=true runs it): same outputs, same grads.
    16-wide heads take PyTorch's forms; 32-wide heads take vdt's CPU kernels, kept as ops in the graph."""
    torch._dynamo.reset()
    model = tiny_model(heads)
    x, t = torch.randn(2, 4, 3, 8, 8), torch.tensor([3, 700])
    params = list(model.parameters())
    ref = model(x, t)
    ref_grads = torch.autograd.grad(ref.square().sum(), params)
    out = torch.compile(model)(x, t)
    grads = torch.autograd.grad(out.square().sum(), params)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-4)  # float32 sums in another order


def test_kernel_source_is_built_from_the_cache_folder_whatever_the_checkout(tmp_path):
    """Two checkouts sharing ~/.cache/vdt must not rebuild each other's kernels: the build names a copy of the
    source inside the build folder, the same path from every checkout, rewritten only when it differs."""
    src = cpu_kernels.build_source(tmp_path)
    assert src.parent == tmp_path and src.read_bytes() == cpu_kernels.SOURCE.read_bytes()
    stamp = src.stat().st_mtime_ns
    assert cpu_kernels.build_source(tmp_path) == src and src.stat().st_mtime_ns == stamp
    src.write_text("// stale")
    assert cpu_kernels.build_source(tmp_path).read_bytes() == cpu_kernels.SOURCE.read_bytes()
