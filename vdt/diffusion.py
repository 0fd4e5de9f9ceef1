"""Gaussian diffusion with a spatial-temporal mask: the noise process, the masked objective and the samplers.

Symbols (Ho et al. 2020, "DDPM"; Nichol & Dhariwal 2021, "IDDPM"; Song et al. 2021, "DDIM"):

    beta_t            betas[t]                   noise added at step t
    abar_t            alphas_cumprod[t]          prod_{s <= t} (1 - beta_s)
    x_t               sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps        (q_sample)
    beta~_t           posterior variance         beta_t (1 - abar_{t-1}) / (1 - abar_t)
    mu~_t(x_0, x_t)   posterior mean             coef_x0 x_0 + coef_xt x_t
    v_t               the v target               sqrt(abar_t) eps - sqrt(1 - abar_t) x_0   (Salimans & Ho 2022, sec. 4)

The denoiser is a plain callable ``model_fn(x_in, t) -> out``: x_in (B, T, C, H, W), t (B,) long, out (B, T, C, H, W)
with ``variance`` fixed, or (B, T, 2C, H, W) with ``learned_range``: the prediction, then nu in [-1, 1], the model
log-variance being (nu + 1)/2 log beta_t + (1 - nu)/2 log beta~_t (IDDPM eq. 15, where nu is called v; renamed here
so it is not taken for the v target). This module knows nothing about the network.

The prediction (``cfg.prediction``) is what the first C channels estimate: "eps" (the noise; DDPM, IDDPM, DiT and
VDT), "v" (v_t above; Salimans & Ho 2022, "Progressive Distillation", arXiv 2202.00512) or "x0" (the clean data).
At fixed x_t and t each is an affine function of the others (``convert``); every sampler step and the VB term go
through the x_0 estimate (``pred_x0``). Why the choice matters: on the linear schedule abar_999 = 4e-5, so an eps
prediction's error reaches the x_0 estimate multiplied by sqrt(1/abar - 1) = 157 at t = 999; a v prediction's by
sqrt(1 - abar) <= 1.

Mask convention (vdt/masks.py): 1 = generate, 0 = given. Masks are (B, T, H, W) or (T, H, W), broadcast over C. The
model sees the clean data where mask = 0 and the noised data where mask = 1, in training and at every sampling step.

Choices, stated once:
- Timesteps. ``model_fn`` always receives indices of the training process (0 .. cfg.steps - 1; with the default 1000
  steps, the paper's indexing), also when sampling over fewer, respaced steps. No rescaling to a 1000 range (DiT's
  rescale_timesteps=False).
- Loss. The MSE is on the prediction's own target (eps, v_t or x_0), unweighted over t (L_simple for eps).
- Loss normalisation (``cfg.loss_norm``). "masked" (default): per sample, the squared error summed over mask = 1
  elements divided by their number (mask cells x C), so the loss scale does not depend on the mask ratio; a sample
  with an all-zero mask contributes exactly 0. The VB term is reduced the same way over the same elements. "all": the
  official code, ``mean_flat(((eps - eps_hat) * mask) ** 2)``, a mean over every element (scales with the generated
  share), and its VB term is a mean over every element, unmasked (given positions included), as in the official code.
- Hybrid loss (learned_range): loss = mse + vb, vb with the prediction detached (IDDPM's hybrid L_simple +
  L_vlb, whose lambda = 0.001 is IDDPM's num_timesteps/1000 rescale that DiT and VDT do not apply: LossType.MSE).
  vb is in bits per element; at t = 0 it is the discretised Gaussian decoder NLL (bins of 2/255 on [-1, 1]).
  Fixed variance (fixed_small: beta~_t, fixed_large: beta_t): loss = mse, vb = 0.
- Respacing. ``steps`` sampling steps keep ``spaced_timesteps(cfg.steps, steps)``: plain even spacing with both ends
  (round(i (N - 1) / (steps - 1))), IDDPM's space_timesteps with one section; for 1000 -> 250 this is DiT's. The betas
  of the kept steps are recomputed from abar so that abar is unchanged (IDDPM's SpacedDiffusion); learned and fixed
  variances use the respaced betas.
- Clipping. ``clip_denoised=True`` (DiT's default) clamps each x_0 prediction to [-1, 1] before it is used (DDPM mean,
  DDIM update); turn it off for unbounded latents. The training VB never clips.
- Noise order. Both samplers draw x_T first (unless ``noise`` is given), then one standard normal per step, including
  the last one (where it is multiplied by 0), all from ``generator``. Hence DDIM with eta = 1 over every step equals
  DDPM with beta~ (fixed_small, or learned_range with nu = -1) on the same generator.
- Classifier-free guidance belongs to the caller: wrap model_fn. With learned_range the wrapper returns the full 2C
  output, guiding the prediction half and choosing the variance half itself (usually the conditional one, as DiT
  does). Guiding v or x_0 is guiding eps: at fixed x_t and t the conversion is affine, the same for both passes.
"""

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from vdt.config import PREDICTIONS, DiffusionConfig

SAMPLERS = ("ddim", "ddpm")


# --------------------------------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------------------------------

def linear_betas(steps: int) -> np.ndarray:
    """DDPM's 1e-4 -> 0.02 over 1000 steps; other step counts scale both ends by 1000/steps (IDDPM)."""
    scale = 1000 / steps
    return np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)


def cosine_betas(steps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """IDDPM eq. 17: abar(u) = cos^2((u + s)/(1 + s) pi/2), beta_t = 1 - abar((t+1)/N)/abar(t/N), capped at 0.999."""
    u = np.arange(steps + 1, dtype=np.float64) / steps
    abar = np.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1 - abar[1:] / abar[:-1], max_beta)


def spaced_timesteps(total: int, count: int) -> list:
    """``count`` indices of [0, total) evenly spaced, first and last included (one step: the last index)."""
    if not 1 <= count <= total:
        raise ValueError(f"steps: {count} sampling steps is not in [1, {total}] (the training process has {total})")
    if count == 1:
        return [total - 1]
    # round(i (total - 1) / (count - 1)), half up, in integers
    return [(2 * i * (total - 1) + count - 1) // (2 * (count - 1)) for i in range(count)]


class _Schedule:
    """The tables of one noise process (the training one or a respaced one). float64 numpy, float32 when indexed."""

    def __init__(self, betas: np.ndarray, timesteps: list):
        self.timesteps = list(timesteps)  # training-process index of each step
        ac = np.cumprod(1.0 - betas)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        first = post_var[1] if len(betas) > 1 else betas[0]  # beta~_0 = 0: its log is clipped to beta~_1 (IDDPM)
        self.np = dict(
            betas=betas, ac=ac, ac_prev=ac_prev,
            sqrt_ac=np.sqrt(ac), sqrt_1m_ac=np.sqrt(1.0 - ac),
            sqrt_recip_ac=np.sqrt(1.0 / ac), sqrt_recipm1_ac=np.sqrt(1.0 / ac - 1.0),
            post_var=post_var, post_log_var=np.log(np.append(first, post_var[1:])),
            log_beta=np.log(betas), large_log_var=np.log(np.append(first, betas[1:])),
            coef_x0=betas * np.sqrt(ac_prev) / (1.0 - ac), coef_xt=(1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac),
        )
        self.torch = {k: torch.from_numpy(v).float() for k, v in self.np.items()}
        self._on_device = {}  # (name, device) -> float32 table there

    def __len__(self) -> int:
        return len(self.timesteps)

    def scalar(self, name: str, i: int) -> float:
        """Table ``name`` at step i, as a Python float (the samplers share one step across the batch)."""
        return float(self.np[name][i])

    def at(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """Table ``name`` at steps t (B,), shaped (B, 1, 1, 1, 1) for broadcasting over a video."""
        key = (name, t.device)
        if key not in self._on_device:
            self._on_device[key] = self.torch[name].to(t.device)
        return self._on_device[key][t].view(-1, 1, 1, 1, 1)


# --------------------------------------------------------------------------------------------------------------------
# Likelihood helpers (IDDPM's VB terms), elementwise, natural log
# --------------------------------------------------------------------------------------------------------------------

def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x, mean, log_scale) -> torch.Tensor:
    """log P(x) for data in [-1, 1] quantised to 256 bins, under N(mean, e^(2 log_scale)); edge bins are open."""
    inv_std = torch.exp(-log_scale)
    upper = (x - mean + 1.0 / 255) * inv_std
    lower = (x - mean - 1.0 / 255) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)  # bin x = -1 takes everything below
    log_sf_lower = torch.special.log_ndtr(-lower)  # bin x = 1 takes everything above
    log_delta = torch.log((torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp_min(1e-12))
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_sf_lower, log_delta))


def _video_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W) or (T, H, W) mask -> (B or 1, T, 1, H, W), in x's dtype and device."""
    B, T, C, H, W = x.shape
    if mask.dim() == 3:
        mask = mask[None]
    if mask.dim() != 4 or tuple(mask.shape[1:]) != (T, H, W) or mask.shape[0] not in (1, B):
        raise ValueError(f"mask: expected (B, T, H, W) = ({B}, {T}, {H}, {W}) or (T, H, W), got {tuple(mask.shape)}")
    return mask.to(device=x.device, dtype=x.dtype).unsqueeze(2)


def _randn(shape, generator, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise from ``generator`` (on its own device), moved to ``like``'s device and dtype."""
    if generator is None:
        return torch.randn(shape, device=like.device, dtype=like.dtype)
    return torch.randn(shape, generator=generator, device=generator.device).to(like.device, like.dtype)


# --------------------------------------------------------------------------------------------------------------------
# Predictions: eps, v or x_0, each a function of the others at fixed (x_t, t)
# --------------------------------------------------------------------------------------------------------------------

def _to_x0(kind: str, pred, x_t, c):
    """The x_0 that prediction ``pred`` of ``kind`` implies at x_t; c(name) is that schedule table at the step(s)."""
    if kind == "eps":  # x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps, solved for x_0 (DDPM eq. 15)
        return c("sqrt_recip_ac") * x_t - c("sqrt_recipm1_ac") * pred
    if kind == "v":  # sqrt(abar) x_t - sqrt(1 - abar) v_t = x_0 (Salimans & Ho 2022, sec. 4)
        return c("sqrt_ac") * x_t - c("sqrt_1m_ac") * pred
    return pred


def _from_x0(kind: str, x0, x_t, c):
    """The prediction of ``kind`` that x_0 implies at x_t (the inverse of ``_to_x0``)."""
    if kind == "eps":
        return (c("sqrt_recip_ac") * x_t - x0) / c("sqrt_recipm1_ac")
    if kind == "v":
        return (c("sqrt_ac") * x_t - x0) / c("sqrt_1m_ac")
    return x0


# --------------------------------------------------------------------------------------------------------------------
# The diffusion
# --------------------------------------------------------------------------------------------------------------------

class GaussianDiffusion:
    """VDT's noise process: q_sample, the masked objective (eps, v or x_0 target; hybrid VB), DDPM and DDIM."""

    def __init__(self, cfg: DiffusionConfig):
        self.cfg = cfg
        self.betas = linear_betas(cfg.steps) if cfg.schedule == "linear" else cosine_betas(cfg.steps)
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)
        self.base = _Schedule(self.betas, range(cfg.steps))
        self._spaced = {cfg.steps: self.base}

    @property
    def num_timesteps(self) -> int:
        return self.cfg.steps

    def schedule(self, steps: int) -> _Schedule:
        """The process on ``steps`` evenly spaced steps; betas recomputed so abar is kept (IDDPM's SpacedDiffusion)."""
        if steps not in self._spaced:
            kept = spaced_timesteps(self.cfg.steps, steps)
            ac = self.alphas_cumprod[kept]
            betas = 1.0 - ac / np.append(1.0, ac[:-1])
            self._spaced[steps] = _Schedule(betas, kept)
        return self._spaced[steps]

    def sample_timesteps(self, batch: int, device=None, generator=None) -> torch.Tensor:
        """Uniform training timesteps (B,), one per sample."""
        dev = generator.device if generator is not None else device
        t = torch.randint(0, self.cfg.steps, (batch,), generator=generator, device=dev)
        return t.to(device) if device is not None else t

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps. x0 (B, T, C, H, W), t (B,)."""
        noise = torch.randn_like(x0) if noise is None else noise
        return self.base.at("sqrt_ac", t) * x0 + self.base.at("sqrt_1m_ac", t) * noise

    # ---- the prediction ------------------------------------------------------------------------------------------

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the prediction regresses to at x_t = q_sample(x0, t, noise): eps, v_t or x_0. All (B, T, C, H, W)."""
        if self.cfg.prediction == "eps":
            return noise
        if self.cfg.prediction == "x0":
            return x0
        return self.base.at("sqrt_ac", t) * noise - self.base.at("sqrt_1m_ac", t) * x0

    def pred_x0(self, model_out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip: bool = False):
        """The one-step clean-data estimate of a model call, float32 (B, T, C, H, W).

        model_out: what ``model_fn(x_t, t)`` returned, (B, T, C, H, W), or (B, T, 2C, H, W) with learned_range (the
        variance half is dropped); x_t (B, T, C, H, W); t (B,) training-process steps. clip clamps to [-1, 1]."""
        pred, _ = self._split(model_out, x_t)
        x0 = _to_x0(self.cfg.prediction, pred, x_t.float(), lambda k: self.base.at(k, t))
        return x0.clamp(-1, 1) if clip else x0

    def convert(self, pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, src: str, dst: str) -> torch.Tensor:
        """A prediction of kind ``src`` at (x_t, t) rewritten as kind ``dst`` (kinds: PREDICTIONS); (B, T, C, H, W)."""
        for name, kind in (("src", src), ("dst", dst)):
            if kind not in PREDICTIONS:
                raise ValueError(f"convert: {name}={kind!r} is not a prediction; choose from {PREDICTIONS}")
        if src == dst:
            return pred

        def c(k):
            return self.base.at(k, t)
        return _from_x0(dst, _to_x0(src, pred, x_t, c), x_t, c)

    # ---- training ------------------------------------------------------------------------------------------------

    def training_losses(self, model_fn, x0: torch.Tensor, mask: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor | None = None) -> dict:
        """Per-sample losses {"loss", "mse", "vb"}, each (B,). noise=None draws it from the global RNG."""
        if x0.dim() != 5 or t.shape != (x0.shape[0],):
            raise ValueError(f"training_losses: expected x0 (B, T, C, H, W) and t (B,), got {tuple(x0.shape)} and "
                             f"{tuple(t.shape)}")
        m = _video_mask(mask, x0)                                    # (B|1, T, 1, H, W)
        noise = torch.randn_like(x0) if noise is None else noise
        x_t = self.q_sample(x0, t, noise)                            # (B, T, C, H, W)
        x_in = x0 * (1 - m) + x_t * m                                # clean where given, noised where generated
        pred, nu = self._split(model_fn(x_in, t), x0)
        mse = self._region_mean((self.target(x0, noise, t).float() - pred) ** 2, m)
        if nu is None:
            vb = torch.zeros_like(mse)
        else:  # the VB term trains only the variance: the mean comes from a detached prediction (IDDPM's hybrid loss)
            vb_el = self._vb_bits(pred.detach(), nu, x0.float(), x_t.float(), t)
            vb = self._region_mean(vb_el, m) if self.cfg.loss_norm == "masked" else vb_el.mean((1, 2, 3, 4))
        return {"loss": mse + vb, "mse": mse, "vb": vb}

    def _region_mean(self, err: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) elementwise loss -> (B,): summed over the generated region (m = 1) and divided by its size
        (cfg.loss_norm=masked) or by every element's count (all; see the module docstring)."""
        dims = (1, 2, 3, 4)
        m = m.float()
        if self.cfg.loss_norm == "all":
            return (err * m).mean(dims)
        count = m.expand_as(err).sum(dims)                           # masked elements, channels counted
        return (err * m).sum(dims) / count.clamp_min(1.0)            # all-zero mask: 0 / 1 = 0

    def _vb_bits(self, pred, nu, x0, x_t, t) -> torch.Tensor:
        """Elementwise L_{t-1} in bits: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)); at t = 0 the decoder NLL."""
        s = self.base
        true_mean = s.at("coef_x0", t) * x0 + s.at("coef_xt", t) * x_t
        pred_x0 = _to_x0(self.cfg.prediction, pred, x_t, lambda k: s.at(k, t))   # unclipped, as IDDPM
        mean = s.at("coef_x0", t) * pred_x0 + s.at("coef_xt", t) * x_t
        log_var = self._log_variance(nu, s.at("log_beta", t), s.at("post_log_var", t), s.at("large_log_var", t))
        kl = normal_kl(true_mean, s.at("post_log_var", t), mean, log_var)
        at0 = t == 0
        if not bool(at0.any()):  # most batches: the decoder NLL (a few % of a CPU step) would be thrown away
            return kl / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)
        return torch.where(at0.view(-1, 1, 1, 1, 1), nll, kl) / math.log(2.0)

    def _log_variance(self, nu, log_beta, post_log_var, large_log_var):
        """The model's log-variance at a step: interpolated by nu (learned_range), else a fixed table."""
        if self.cfg.variance == "learned_range":
            frac = (nu + 1) / 2
            return frac * log_beta + (1 - frac) * post_log_var
        return post_log_var if self.cfg.variance == "fixed_small" else large_log_var

    def _split(self, out: torch.Tensor, x: torch.Tensor):
        """model output -> (prediction, nu or None), float32; checks the shape against x (B, T, C, H, W)."""
        B, T, C, H, W = x.shape
        want = 2 * C if self.cfg.learn_sigma else C
        if tuple(out.shape) != (B, T, want, H, W):
            raise ValueError(f"model_fn: expected output (B, T, {want}, H, W) = {(B, T, want, H, W)} for "
                             f"variance={self.cfg.variance!r}, got {tuple(out.shape)}")
        out = out.float()
        return (out[:, :, :C], out[:, :, C:]) if self.cfg.learn_sigma else (out, None)

    # ---- sampling ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, model_fn, x0: torch.Tensor, mask: torch.Tensor, *, sampler: str = "ddim", steps: int = 50,
               eta: float = 0.0, generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
               progress: bool = True, clip_denoised: bool = True) -> torch.Tensor:
        """Generate the mask = 1 region of x0 (B, T, C, H, W); the mask = 0 region is kept from x0 exactly.

        sampler: "ddim" (eta: 0 deterministic, 1 ancestral) or "ddpm" (ancestral, the model's variance); steps: how
        many of the cfg.steps training steps to visit (respaced); noise: x_T (default: drawn from generator)."""
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler: unknown {sampler!r}; choose from {SAMPLERS}")
        if x0.dim() != 5:
            raise ValueError(f"sample: expected x0 (B, T, C, H, W), got {tuple(x0.shape)}")
        s = self.schedule(steps)
        m = _video_mask(mask, x0)                                    # (B|1, T, 1, H, W)
        x = _randn(x0.shape, generator, x0) if noise is None else noise.to(x0)
        for i in tqdm(range(len(s) - 1, -1, -1), desc=f"{sampler} {len(s)} steps", disable=not progress):
            x = x0 * (1 - m) + x * m                                 # re-impose the given region
            t = torch.full((x0.shape[0],), s.timesteps[i], device=x0.device, dtype=torch.long)
            pred, nu = self._split(model_fn(x, t), x0)
            z = _randn(x0.shape, generator, x0)
            if sampler == "ddpm":
                x = self._ddpm_step(s, i, x.float(), pred, nu, z, clip_denoised).to(x0.dtype)
            else:
                x = self._ddim_step(s, i, x.float(), pred, z, eta, clip_denoised).to(x0.dtype)
        return x0 * (1 - m) + x * m

    def _step_x0(self, s: _Schedule, i: int, x, pred, clip: bool):
        """The x_0 estimate at step i of schedule s (``_to_x0``), optionally clamped to [-1, 1]."""
        x0 = _to_x0(self.cfg.prediction, pred, x, lambda k: s.scalar(k, i))
        return x0.clamp(-1, 1) if clip else x0

    def _ddpm_step(self, s: _Schedule, i: int, x, pred, nu, z, clip: bool):
        """x_{t-1} = mu~_t(x_0_hat, x_t) + sigma_t z (no noise at the last step); DDPM eq. 11 via the posterior."""
        x0 = self._step_x0(s, i, x, pred, clip)
        mean = s.scalar("coef_x0", i) * x0 + s.scalar("coef_xt", i) * x
        log_var = self._log_variance(nu, *(s.scalar(k, i) for k in ("log_beta", "post_log_var", "large_log_var")))
        sigma = torch.exp(0.5 * torch.as_tensor(log_var, dtype=x.dtype, device=x.device))
        return mean + (i > 0) * sigma * z

    def _ddim_step(self, s: _Schedule, i: int, x, pred, z, eta: float, clip: bool):
        """DDIM eq. 12: x_{t-1} = sqrt(abar_{t-1}) x_0 + sqrt(1 - abar_{t-1} - sigma^2) eps + sigma z."""
        x0 = self._step_x0(s, i, x, pred, clip)
        # eps consistent with the (clipped) x0 prediction, as IDDPM's ddim_sample (for every prediction kind)
        eps = _from_x0("eps", x0, x, lambda k: s.scalar(k, i))
        ac, ac_prev = s.scalar("ac", i), s.scalar("ac_prev", i)
        sigma = eta * math.sqrt((1 - ac_prev) / (1 - ac) * (1 - ac / ac_prev))   # DDIM eq. 16
        dir_coef = math.sqrt(max(1 - ac_prev - sigma**2, 0.0))
        return math.sqrt(ac_prev) * x0 + dir_coef * eps + (i > 0) * sigma * z
