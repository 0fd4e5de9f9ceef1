"""What a run will cost before it is launched: training and sampling FLOPs, and GPU-hours.

FLOPs come from ``vdt.model.count_flops(cfg.model, batch)`` (forward + backward of one training
step) when the model module provides it. Otherwise the fallback is the dense-transformer rule
6 * params * tokens (Kaplan et al. 2020, arXiv 2001.08361, section 2.1), with params estimated
from the config below; it leaves out attention's N^2 term, so it underestimates long sequences.

GPU-hours = FLOPs / (peak * MFU) / 3600. The MFU is the user's assumption (``--mfu``), stated
next to every number.
"""

from dataclasses import dataclass

from vdt.config import RunConfig

# Dense (no 2:4 sparsity) bf16 tensor-core peak, FLOP/s, from NVIDIA's datasheets: A100 SXM 312 TF
# ("NVIDIA A100 Tensor Core GPU" datasheet), H100 SXM 989 TF and H200 SXM 989 TF (H100 / H200
# datasheets; the headline 1979 TF is with sparsity), L40S 362 TF (L40S datasheet, 733 TF sparse).
# V100 has no bf16: its fp16 tensor-core peak, 125 TF (V100 SXM2 datasheet), stands in.
GPU_PEAK_FLOPS = {
    "V100": 125e12,
    "A100": 312e12,
    "L40S": 362e12,
    "H100": 989e12,
    "H200": 989e12,
}


@dataclass(frozen=True)
class Cost:
    """One run's estimated compute."""

    train_flops: float
    eval_flops: float
    method: str  # which formula produced the FLOPs
    params: int | None = None  # the fallback's parameter estimate

    @property
    def flops(self) -> float:
        return self.train_flops + self.eval_flops

    def gpu_hours(self, gpu: str, mfu: float) -> float:
        return self.flops / (GPU_PEAK_FLOPS[gpu] * mfu) / 3600


def tokens_per_video(cfg: RunConfig) -> int:
    """Tokens the denoiser sees per video: frames x (side / patch)^2 (condition frames included)."""
    m = cfg.model
    return (m.frames + m.cond_frames) * (m.size // m.patch) ** 2


def estimate_params(cfg: RunConfig) -> int:
    """Weights of a VDT-like model from its config (for the fallback only).

    Per block: spatial and temporal attention (2 x 4 D^2), the MLP (2 * mlp_ratio * D^2) and the adaLN
    modulation (D -> 6D per attention/MLP, ~9 D^2); cross-attention adds 4 D^2. Plus the patch embedding,
    the output layer and the timestep MLP.
    """
    m = cfg.model
    D, p = m.hidden, m.patch
    per_block = (8 + 2 * m.mlp_ratio + 9) * D * D + (4 * D * D if m.conditioning == "cross_attn" else 0)
    out_channels = 2 * m.channels if m.learn_sigma else m.channels
    embed = m.channels * p * p * D + D * p * p * out_channels + 2 * D * D + 256 * D + D * D
    return int(m.depth * per_block + embed)


def estimate(cfg: RunConfig) -> Cost:
    """Training FLOPs for cfg.train.steps at cfg.train.batch_size, plus evaluation sampling."""
    try:
        from vdt.model import count_flops
    except ImportError:
        count_flops = None
    if count_flops is not None:
        step = float(count_flops(cfg.model, cfg.train.batch_size))
        per_video_forward = step / cfg.train.batch_size / 3  # backward ~ 2x forward
        method = "vdt.model.count_flops (forward + backward)"
    else:
        tokens = tokens_per_video(cfg)
        params = estimate_params(cfg)
        step = 6.0 * params * tokens * cfg.train.batch_size
        per_video_forward = 2.0 * params * tokens
        method = "6 * params * tokens with estimated params (fallback: vdt.model.count_flops is absent)"
    e = cfg.eval
    passes = 2 if (cfg.model.num_classes and e.guidance != 1.0) else 1  # classifier-free guidance: 2 passes
    eval_flops = len(e.tasks) * e.num_videos * e.best_of * e.sample_steps * passes * per_video_forward
    return Cost(train_flops=step * cfg.train.steps, eval_flops=eval_flops, method=method,
                params=None if count_flops is not None else params)


def human(n: float) -> str:
    """1.23e15 -> '1.23 PFLOP'."""
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g} FLOP"
