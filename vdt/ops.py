"""Two pieces of the VDT block whose fastest form depends on where they run: the tanh-GELU and the short
temporal attention. Each form computes the same function (to float32 rounding); tests/test_ops.py checks it.

Measured on a 2-core AVX2 CPU at the core issue's config (``python benchmarks/bench_model_speed.py
[--compile]``; figures in the README):
- Temporal attention runs over T frames, a short sequence (16 here) at every spatial location. There SDPA's
  flash CPU kernel is slower than its math backend (batched matmuls and a softmax), so on the CPU
  ``short_attention`` picks the math backend for up to ``MATH_MAX_LEN`` positions. ``torch.compile`` ignores
  ``sdpa_kernel`` inside a graph and traces the flash kernel, so a compiled CPU graph gets the math backend
  written out. Elsewhere (CUDA, long sequences) SDPA picks its own fused kernel.
- The tanh-GELU: eager PyTorch has one fused kernel for it. Inductor's CPU code is faster for the same function
  written with a sigmoid, 0.5 * (1 + tanh(u)) = sigmoid(2u), so a compiled CPU graph gets that form.
"""

import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# Math over flash, fwd+bwd on the CPU: 2.6x faster at 8 frames, 1.7x at 16, 1.1x at 64, 1.02x at 128 (its L x L
# weights grow with L); past 64 the gain is not worth the memory.
MATH_MAX_LEN = 64
GELU_C = 2 * math.sqrt(2 / math.pi)  # 2u = GELU_C * (h + 0.044715 h^3)


def gelu_tanh(h: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation (the official MLP's), in the form that runs fastest where h lives."""
    if h.device.type == "cpu" and torch.compiler.is_compiling():
        return gelu_tanh_sigmoid(h)
    return F.gelu(h, approximate="tanh")


def gelu_tanh_sigmoid(h: torch.Tensor) -> torch.Tensor:
    """h * sigmoid(2u), u = sqrt(2/pi) (h + 0.044715 h^3): the tanh-GELU, since 0.5 (1 + tanh u) = sigmoid(2u)."""
    return h * torch.sigmoid(h * (GELU_C + GELU_C * 0.044715 * (h * h)))


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
