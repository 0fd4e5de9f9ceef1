"""vdt's fp32 kernels for x86 CPUs with AVX2 (vdt/csrc/cpu_kernels.cpp), as torch ops with autograd.

- ``attention(q, k, v)``: exact softmax(q k^T / sqrt(hd)) v, forward and backward, the same function as
  F.scaled_dot_product_attention, for 16-, 32- and 64-wide heads. VDT's heads are 32 wide (cpu-tiny's 16), and
  at those widths PyTorch's CPU attention kernels reach a fraction of the matmul peak; this kernel keeps each
  (batch, head) task in cache and runs its products at a higher share of the peak (benchmarks/bench_kernels.py).
- ``gelu_tanh(h)``: the tanh-GELU, forward and backward, in one pass over memory each way.

tests/test_cpu_kernels.py checks values and gradients against PyTorch's own ops; docs/performance.md has the
speed figures.

The kernels are compiled on first use, once per machine, torch version and source version, by
torch.utils.cpp_extension (a C++ compiler and ninja; about a minute), into ~/.cache/vdt/ (or
$XDG_CACHE_HOME/vdt/), where later runs find them. Where they can't run
(no AVX2, no compiler, a failed build: warned once) or are switched off with VDT_CPU_KERNELS=0, the callers
in vdt/ops.py use PyTorch's ops. They are registered as ops (vdt::cpu_attention, vdt::gelu_tanh), so
torch.compile keeps each as one call.
"""

import functools
import hashlib
import os
import shutil
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).parent / "csrc" / "cpu_kernels.cpp"
NAME = "vdt_cpu_kernels"
HEAD_DIMS = (16, 32, 64)


def build_directory() -> Path:
    """Where the kernels are built: one folder per torch version and source version."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    return cache / "vdt" / f"{NAME}-torch{torch.__version__}-{digest}"


def build_source(build: Path) -> Path:
    """The source, copied into the build folder: the build then names the same file from every checkout of
    vdt-bench, and two checkouts sharing the cache don't rebuild each other's kernels."""
    src = build / SOURCE.name
    text = SOURCE.read_bytes()
    if not src.exists() or src.read_bytes() != text:
        tmp = build / f".{SOURCE.name}.tmp{os.getpid()}"
        tmp.write_bytes(text)
        os.replace(tmp, src)
    return src


@functools.cache
def extension():
    """The compiled kernel module, or None where it can't be used here (warned once, with the reason)."""
    if os.environ.get("VDT_CPU_KERNELS", "1") == "0":
        return None
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    from torch.utils.cpp_extension import load

    build = build_directory()
    try:
        if shutil.which("ninja") is None:  # the pip package's binary, where the venv's bin/ is not on PATH
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        build.mkdir(parents=True, exist_ok=True)
        if not (build / f"{NAME}.so").exists():
            print(f"vdt: building the CPU kernels in {build} (once per machine, about a minute)", file=sys.stderr)
        return load(NAME, [str(build_source(build))], extra_cflags=["-O3", "-mavx2", "-mfma", "-fopenmp"],
                    extra_ldflags=["-fopenmp"], build_directory=str(build))
    except Exception as e:  # no compiler, no ninja, a failed build: PyTorch's ops still work
        warnings.warn(f"vdt: the CPU kernels could not be built ({type(e).__name__}: {str(e)[-300:]}); "
                      "attention and GELU fall back to PyTorch's ops", stacklevel=2)
        return None


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the kernels are built and enabled (a constant for torch.compile)."""
    return extension() is not None


def supports(x: Tensor) -> bool:
    """Whether the kernels take this tensor: fp32 on the CPU, with the kernels available."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and available()


def supports_attention(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether attention(q, k, v) takes the kernel: 4-d self-attention shapes, 16-, 32- or 64-wide heads."""
    return q.dim() == 4 and q.shape == k.shape == v.shape and q.shape[-1] in HEAD_DIMS and supports(q)


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(hd)) v for (G1, G2, L, hd) q, k, v; the output's memory is (G1, L, G2, hd)."""
    return torch.ops.vdt.cpu_attention(q, k, v)[0]


def gelu_tanh(h: Tensor) -> Tensor:
    """0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3))), F.gelu(h, approximate="tanh")."""
    return torch.ops.vdt.gelu_tanh(h)


def _last_dim_contiguous(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _heads_last(q: Tensor) -> Tensor:
    return q.new_empty(q.shape[0], q.shape[2], q.shape[1], q.shape[3]).transpose(1, 2)


# --- attention -------------------------------------------------------------------------------------------

@torch.library.custom_op("vdt::cpu_attention", mutates_args=())
def _attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    out, lse = extension().attention_forward(*map(_last_dim_contiguous, (q, k, v)))
    return out, lse  # (G1, G2, L, hd) heads-last, (G1, G2, L)


@_attention.register_fake
def _(q, k, v):
    return _heads_last(q), q.new_empty(q.shape[:3])


@torch.library.custom_op("vdt::cpu_attention_backward", mutates_args=())
def _attention_backward(grad: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
                        lse: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    dq, dk, dv = extension().attention_backward(*map(_last_dim_contiguous, (grad, q, k, v, out)), lse.contiguous())
    return dq, dk, dv


@_attention_backward.register_fake
def _(grad, q, k, v, out, lse):
    return _heads_last(q), _heads_last(q), _heads_last(q)


def _attention_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs, *output)


def _attention_grad(ctx, grad_out, grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    return _attention_backward(grad_out, q, k, v, out, lse)


_attention.register_autograd(_attention_grad, setup_context=_attention_setup)


# --- GELU ------------------------------------------------------------------------------------------------

@torch.library.custom_op("vdt::gelu_tanh", mutates_args=())
def _gelu(h: Tensor) -> Tensor:
    return extension().gelu_forward(h.contiguous())


@_gelu.register_fake
def _(h):
    return torch.empty_like(h, memory_format=torch.contiguous_format)


@torch.library.custom_op("vdt::gelu_tanh_backward", mutates_args=())
def _gelu_backward(grad: Tensor, h: Tensor) -> Tensor:
    return extension().gelu_backward(grad.contiguous(), h.contiguous())


@_gelu_backward.register_fake
def _(grad, h):
    return torch.empty_like(h, memory_format=torch.contiguous_format)


def _gelu_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _gelu_grad(ctx, grad):
    return _gelu_backward(grad, ctx.saved_tensors[0])


_gelu.register_autograd(_gelu_grad, setup_context=_gelu_setup)
