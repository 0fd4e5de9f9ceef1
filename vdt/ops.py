"""Pieces of the VDT block whose fastest form depends on where they run: attention and the tanh-GELU. Each
form computes the same function (to float32 rounding); tests/test_ops.py and tests/test_cpu_kernels.py check it.

Which form is fastest where, as measured with ``python benchmarks/bench_kernels.py`` and
``python benchmarks/bench_model_speed.py [--compile]`` (figures and machine in docs/performance.md):
- fp32 on an AVX2 CPU: vdt's own kernels (vdt/cpu_kernels.py) for attention with 16-, 32- or 64-wide heads (the
  spatial and the temporal attention) and for the GELU, eager or compiled. They are faster there than
  PyTorch's CPU kernels.
- Elsewhere (CUDA, other dtypes or head widths, or the kernels unavailable), PyTorch's ops: SDPA for
  attention, which picks its own fused kernel, except for short sequences on the CPU (``short_attention``):
  there SDPA's flash CPU kernel is slower than its math backend, so it gets the math backend for up to
  ``MATH_MAX_LEN`` positions. ``torch.compile`` ignores ``sdpa_kernel`` inside a graph and traces the flash
  kernel, so a compiled CPU graph gets the math backend written out. The tanh-GELU is aten's kernel, except
  in a compiled CPU graph, where inductor's code is faster for the same function written with a sigmoid,
  0.5 * (1 + tanh(u)) = sigmoid(2u).
"""

import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from vdt import cpu_kernels

# On the CPU, SDPA's math backend beats its flash kernel (forward + backward) on short sequences, by less as L grows,
# while its L x L weights grow with L: past 64 the gain is not worth the memory (docs/performance.md).
MATH_MAX_LEN = 64
GELU_C = 2 * math.sqrt(2 / math.pi)  # 2u = GELU_C * (h + 0.044715 h^3)


def gelu_tanh(h: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (the official MLP's), in the form that runs fastest where h lives."""
    if cpu_kernels.supports(h):
        return cpu_kernels.gelu_tanh(h)
    if h.device.type == "cpu" and torch.compiler.is_compiling():
        return gelu_tanh_sigmoid(h)
    return F.gelu(h, approximate="tanh")


def gelu_tanh_sigmoid(h: torch.Tensor) -> torch.Tensor:
    """h * sigmoid(2u), u = sqrt(2/pi) (h + 0.044715 h^3): the tanh-GELU, since 0.5 (1 + tanh u) = sigmoid(2u)."""
    return h * torch.sigmoid(h * (GELU_C + GELU_C * 0.044715 * (h * h)))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd)) v for (G1, G2, L, hd) q, k, v: vdt's CPU kernel where it applies, else SDPA."""
    if cpu_kernels.supports_attention(q, k, v):
        return cpu_kernels.attention(q, k, v)
    return short_attention(q, k, v)


def short_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd)) v for (..., L, hd) q, k, v: scaled_dot_product_attention, math backend on the CPU
    for L <= MATH_MAX_LEN."""
    if q.device.type != "cpu" or q.shape[-2] > MATH_MAX_LEN:
        return F.scaled_dot_product_attention(q, k, v)
    if torch.compiler.is_compiling():
        return math_attention(q, k, v)
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v)


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDPA's math backend written out: (..., L, hd) -> (..., L, hd)."""
    a = torch.einsum("...id,...jd->...ij", q * q.shape[-1] ** -0.5, k).softmax(dim=-1)  # (..., L, L)
    return torch.einsum("...ij,...jd->...id", a, v)
