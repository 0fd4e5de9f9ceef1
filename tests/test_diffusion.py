"""vdt/diffusion.py: schedules, q_sample, the masked objective, and the DDPM / DDIM samplers."""

import numpy as np
import pytest
import torch

from vdt.config import PREDICTIONS, ConfigError, DiffusionConfig
from vdt.diffusion import GaussianDiffusion, discretized_gaussian_log_likelihood, normal_kl, spaced_timesteps
from vdt.masks import make_mask

B, T, C, H, W = 2, 4, 2, 4, 4


def _diffusion(**kw) -> GaussianDiffusion:
    return GaussianDiffusion(DiffusionConfig(**kw))


def _x0(seed=0, shape=(B, T, C, H, W)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _analytic_model(learn_sigma: bool, nu: float = -1.0):
    """A deterministic, non-trivial prediction(x, t); with learned sigma the variance channel is the constant nu."""
    def model_fn(x, t):
        eps = torch.tanh(1.5 * x) * (0.2 + t.view(-1, 1, 1, 1, 1) / 1000) + 0.05 * torch.sin(3 * x)
        return torch.cat([eps, torch.full_like(eps, nu)], 2) if learn_sigma else eps
    return model_fn


# ---- schedules and q_sample ----------------------------------------------------------------------------------------

def test_linear_schedule_endpoints_and_scaling():
    d = _diffusion()
    assert len(d.betas) == 1000
    assert d.betas[0] == pytest.approx(1e-4) and d.betas[-1] == pytest.approx(0.02)
    d250 = _diffusion(steps=250)  # IDDPM scaling: both ends times 1000/250
    assert d250.betas[0] == pytest.approx(4e-4) and d250.betas[-1] == pytest.approx(0.08)
    assert d.betas.dtype == np.float64


def test_cosine_schedule():
    d = _diffusion(schedule="cosine")
    ac = d.alphas_cumprod
    assert ac[0] > 0.999 and ac[-1] < 1e-4
    assert np.all(np.diff(ac) < 0) and np.all(d.betas <= 0.999) and np.all(d.betas > 0)
    # abar follows cos^2 closely wherever the 0.999 cap is inactive
    u = (np.arange(1, 1001) / 1000 + 0.008) / 1.008
    ref = np.cos(u * np.pi / 2) ** 2 / np.cos(0.008 / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(ac[:900], ref[:900], rtol=1e-6)


def test_q_sample_statistics():
    d = _diffusion()
    ac = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))  # independent reference
    N = 20000
    x0 = torch.tensor([-0.9, -0.2, 0.4, 1.0]).view(1, 1, 1, 2, 2).expand(N, 1, 1, 2, 2)
    for step in (0, 300, 999):
        t = torch.full((N,), step)
        xt = d.q_sample(x0, t, torch.randn(N, 1, 1, 2, 2, generator=torch.Generator().manual_seed(step)))
        mean, var = xt.mean(0), xt.var(0)
        tol = 5 * np.sqrt((1 - ac[step]) / N)
        torch.testing.assert_close(mean, np.sqrt(ac[step]) * x0[0], atol=tol, rtol=0)
        torch.testing.assert_close(var, torch.full_like(var, 1 - ac[step]), atol=0.05 * (1 - ac[step]), rtol=0)


# ---- the masked objective --------------------------------------------------------------------------------------------

def _offset_model(noise, offset=0.5, learn_sigma=False):
    """A model whose eps error is exactly ``offset`` everywhere."""
    def model_fn(x, t):
        eps = noise + offset
        return torch.cat([eps, torch.zeros_like(eps)], 2) if learn_sigma else eps
    return model_fn


@pytest.mark.parametrize("k", [1, 2, 3])
def test_masked_loss_is_independent_of_mask_ratio(k):
    x0, noise, t = _x0(), torch.randn(B, T, C, H, W), torch.tensor([10, 500])
    mask = make_mask("predict", (T, H, W), k=k)                       # generated share (T - k) / T
    share = (T - k) / T
    masked = _diffusion(variance="fixed_small").training_losses(_offset_model(noise), x0, mask, t, noise)
    torch.testing.assert_close(masked["mse"], torch.full((B,), 0.25))
    torch.testing.assert_close(masked["loss"], masked["mse"])
    assert torch.all(masked["vb"] == 0)
    full = _diffusion(variance="fixed_small", loss_norm="all").training_losses(_offset_model(noise), x0, mask, t, noise)
    torch.testing.assert_close(full["mse"], torch.full((B,), 0.25 * share))


def test_model_input_is_clean_where_given_and_noised_where_generated():
    d = _diffusion(variance="fixed_small")
    x0, noise, t = _x0(), torch.randn(B, T, C, H, W), torch.tensor([3, 700])
    mask = make_mask("spatial_temporal", (T, H, W), generator=torch.Generator().manual_seed(1))
    seen = {}

    def model_fn(x, t_):
        seen["x"], seen["t"] = x, t_
        return torch.zeros_like(x)

    d.training_losses(model_fn, x0, mask, t, noise)
    m = mask[None, :, None].expand_as(x0).bool()
    xt = d.q_sample(x0, t, noise)
    assert torch.equal(seen["x"][~m], x0[~m]) and torch.equal(seen["x"][m], xt[m])
    assert torch.equal(seen["t"], t)


@pytest.mark.parametrize("variance", ["learned_range", "fixed_large"])
def test_all_zero_mask_gives_zero_loss_without_nan(variance):
    d = _diffusion(variance=variance)
    x0 = _x0()
    mask = torch.ones(B, T, H, W)
    mask[0] = 0                                                       # sample 0: nothing to generate
    out_c = 2 * C if d.cfg.learn_sigma else C
    param = torch.randn(B, T, out_c, H, W, requires_grad=True)
    losses = d.training_losses(lambda x, t: param * 1.0, x0, mask, torch.tensor([0, 400]))
    assert losses["loss"][0] == 0 and losses["loss"][1] > 0
    losses["loss"].sum().backward()
    assert torch.isfinite(param.grad).all() and torch.all(param.grad[0] == 0)


def test_hybrid_vb_is_finite_positive_and_trains_only_the_variance():
    d = _diffusion()
    x0, t = _x0(), torch.tensor([0, 250])
    mask = make_mask("interpolate", (T, H, W), stride=2)
    out = torch.randn(B, T, 2 * C, H, W, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    losses = d.training_losses(lambda x, t_: out * 1.0, x0, mask, t)
    assert torch.isfinite(losses["vb"]).all() and torch.all(losses["vb"] > 0)
    torch.testing.assert_close(losses["loss"], losses["mse"] + losses["vb"])
    losses["vb"].sum().backward()
    assert torch.all(out.grad[:, :, :C] == 0)                         # stop-gradient on the mean
    assert out.grad[:, :, C:].abs().sum() > 0


def test_vb_vanishes_for_the_true_posterior():
    """True eps and v = -1 (variance beta~_t) give p = q, so the KL terms are 0; at t = 0 the decoder NLL is > 0."""
    d = _diffusion()
    x0, noise, t = _x0(), torch.randn(B, T, C, H, W), torch.tensor([0, 600])
    out = torch.cat([noise, -torch.ones_like(noise)], 2)
    losses = d.training_losses(lambda x, t_: out, x0, torch.ones(T, H, W), t, noise)
    assert losses["vb"][1].abs() < 1e-4 and losses["vb"][0] > 0.1
    assert losses["mse"].abs().max() < 1e-10


def test_official_norm_keeps_vb_unmasked():
    x0, t = _x0(), torch.tensor([100, 900])
    out = torch.randn(B, T, 2 * C, H, W)
    mask = torch.zeros(T, H, W)
    assert torch.all(_diffusion().training_losses(lambda x, t_: out, x0, mask, t)["vb"] == 0)
    assert torch.all(_diffusion(loss_norm="all").training_losses(lambda x, t_: out, x0, mask, t)["vb"] > 0)


def test_bad_shapes_raise():
    d = _diffusion()
    x0 = _x0()
    with pytest.raises(ValueError, match="model_fn"):
        d.training_losses(lambda x, t: x, x0, torch.ones(T, H, W), torch.tensor([1, 2]))  # C instead of 2C
    with pytest.raises(ValueError, match="mask"):
        d.training_losses(lambda x, t: x, x0, torch.ones(T, H + 1, W), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="sampler"):
        d.sample(lambda x, t: x, x0, torch.ones(T, H, W), sampler="euler", progress=False)
    with pytest.raises(ValueError, match="steps"):
        d.sample(lambda x, t: x, x0, torch.ones(T, H, W), steps=1001, progress=False)


# ---- predictions: eps, v, x0 ------------------------------------------------------------------------------------

def _abar(t: torch.Tensor) -> torch.Tensor:
    """abar_t of DDPM's linear schedule, float64 (B, 1, 1, 1, 1), computed here independently of vdt."""
    ac = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    return torch.from_numpy(ac)[t].view(-1, 1, 1, 1, 1)


def test_prediction_is_validated_and_defaults_to_eps():
    assert DiffusionConfig().prediction == "eps"
    with pytest.raises(ConfigError, match=r"diffusion\.prediction: unknown prediction 'noise'"):
        DiffusionConfig(prediction="noise")


def test_conversions_between_predictions_are_exact():
    """eps -> x0 -> v -> eps (and every other pair) at the same (x_t, t) returns what it started from."""
    d = _diffusion()
    t = torch.tensor([0, 999])                                         # the worst-conditioned ends of the schedule
    x0, eps = _x0(1), torch.randn(B, T, C, H, W, generator=torch.Generator().manual_seed(2))
    xt = d.q_sample(x0, t, eps)
    a = _abar(t)
    truth = {"eps": eps, "x0": x0, "v": (a.sqrt() * eps.double() - (1 - a).sqrt() * x0.double()).float()}
    # float32 rounding, amplified by the conversion's gain: up to sqrt(1/abar - 1) = 157 at t = 999 for eps -> x0
    tol = dict(atol=2e-4, rtol=0)
    for src in PREDICTIONS:
        assert d.convert(truth[src], xt, t, src, src) is truth[src]
        for dst in PREDICTIONS:
            torch.testing.assert_close(d.convert(truth[src], xt, t, src, dst), truth[dst], **tol)
    x0_hat = d.convert(eps, xt, t, "eps", "x0")
    v_hat = d.convert(x0_hat, xt, t, "x0", "v")
    torch.testing.assert_close(d.convert(v_hat, xt, t, "v", "eps"), eps, **tol)
    with pytest.raises(ValueError, match="dst='score'"):
        d.convert(eps, xt, t, "eps", "score")


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_target_and_pred_x0_follow_the_prediction(prediction):
    """target() is the true eps / v / x0, and pred_x0 of that target (variance channels included) is x0."""
    d = _diffusion(prediction=prediction)                             # learned_range: (B, T, 2C, H, W) outputs
    t = torch.tensor([7, 640])
    x0, noise = _x0(3), torch.randn(B, T, C, H, W, generator=torch.Generator().manual_seed(4))
    xt, a = d.q_sample(x0, t, noise), _abar(t)
    want = {"eps": noise.double(), "x0": x0.double(), "v": a.sqrt() * noise.double() - (1 - a).sqrt() * x0.double()}
    target = d.target(x0, noise, t)
    torch.testing.assert_close(target.double(), want[prediction], atol=1e-6, rtol=0)
    out = torch.cat([target, torch.full_like(target, 0.7)], 2)
    torch.testing.assert_close(d.pred_x0(out, xt, t), x0, atol=1e-4, rtol=0)
    assert d.pred_x0(out * 3, xt, t, clip=True).abs().max() <= 1
    with pytest.raises(ValueError, match="model_fn"):
        d.pred_x0(target, xt, t)                                      # the variance half is missing


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_mse_is_on_the_prediction_target(prediction):
    """The masked MSE equals mean over generated elements of (target - out)^2, target computed here in float64."""
    d = _diffusion(variance="fixed_small", prediction=prediction)
    t = torch.tensor([30, 870])
    x0, noise = _x0(7), torch.randn(B, T, C, H, W, generator=torch.Generator().manual_seed(8))
    out = torch.randn(B, T, C, H, W, generator=torch.Generator().manual_seed(9))
    mask = make_mask("spatial_temporal", (T, H, W), generator=torch.Generator().manual_seed(3))
    a = _abar(t)
    target = {"eps": noise.double(), "x0": x0.double(),
              "v": a.sqrt() * noise.double() - (1 - a).sqrt() * x0.double()}[prediction]
    m = mask[None, :, None].double().expand_as(target)
    want = (((target - out.double()) ** 2) * m).sum((1, 2, 3, 4)) / m.sum((1, 2, 3, 4))
    got = d.training_losses(lambda x, t_: out, x0, mask, t, noise)
    torch.testing.assert_close(got["mse"].double(), want, atol=0, rtol=1e-5)
    assert torch.all(got["vb"] == 0)


def _eps_hybrid_reference(out, x0, noise, mask, t):
    """The eps-only hybrid loss as the code computed it before predictions existed (IDDPM's L_simple + L_vlb with a
    detached eps, masked mean), written out op for op from DDPM's linear schedule, so the eps path can't drift."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    ac = np.cumprod(1.0 - betas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)

    def at(table):
        return torch.from_numpy(table).float()[t].view(-1, 1, 1, 1, 1)

    m = mask[None, :, None].float()
    xt = at(np.sqrt(ac)) * x0 + at(np.sqrt(1.0 - ac)) * noise
    eps, nu = out[:, :, :C].float(), out[:, :, C:].float()
    dims = (1, 2, 3, 4)

    def reduce(err):
        return (err * m).sum(dims) / m.expand_as(err).sum(dims).clamp_min(1.0)
    mse = reduce((noise.float() - eps) ** 2)
    coef_x0, coef_xt = betas * np.sqrt(ac_prev) / (1.0 - ac), (1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac)
    post_log_var = np.log(np.append(post_var[1], post_var[1:]))
    true_mean = at(coef_x0) * x0 + at(coef_xt) * xt
    pred_x0 = at(np.sqrt(1.0 / ac)) * xt - at(np.sqrt(1.0 / ac - 1.0)) * eps
    mean = at(coef_x0) * pred_x0 + at(coef_xt) * xt
    frac = (nu + 1) / 2
    log_var = frac * at(np.log(betas)) + (1 - frac) * at(post_log_var)
    kl = normal_kl(true_mean, at(post_log_var), mean, log_var)
    nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)
    vb = reduce(torch.where((t == 0).view(-1, 1, 1, 1, 1), nll, kl) / np.log(2.0))
    return mse + vb


def test_eps_hybrid_loss_is_bitwise_unchanged():
    d = _diffusion()
    assert d.cfg.prediction == "eps" and d.cfg.variance == "learned_range"
    for seed, t in ((0, [0, 999]), (1, [1, 500]), (2, [250, 42])):
        g = torch.Generator().manual_seed(seed)
        x0, noise, out = _x0(seed), torch.randn(B, T, C, H, W, generator=g), torch.randn(B, T, 2 * C, H, W, generator=g)
        mask = make_mask("spatial_temporal", (T, H, W), generator=g)
        t = torch.tensor(t)
        got = d.training_losses(lambda x, t_, out=out: out, x0, mask, t, noise)["loss"]
        assert torch.equal(got, _eps_hybrid_reference(out, x0, noise, mask, t))


def test_batches_without_t0_skip_the_decoder_nll_with_the_same_loss_and_gradient():
    """training_losses computes the decoder NLL only when some t is 0. Sample 1 (t = 700) gets the same loss and
    gradient whether sample 0 has t = 0 (NLL computed, then selected away for sample 1) or t = 1 (skipped)."""
    d = _diffusion()
    g = torch.Generator().manual_seed(3)
    x0, noise, out = _x0(3), torch.randn(B, T, C, H, W, generator=g), torch.randn(B, T, 2 * C, H, W, generator=g)
    mask = make_mask("predict", (T, H, W), k=2)
    losses, grads = [], []
    for t0 in (0, 1):
        o = out.clone().requires_grad_(True)
        loss = d.training_losses(lambda x, t_, o=o: o, x0, mask, torch.tensor([t0, 700]), noise)["loss"]
        loss[1].backward()
        losses.append(loss[1].detach())
        grads.append(o.grad[1])
    assert torch.equal(losses[0], losses[1]) and torch.equal(grads[0], grads[1])
    assert grads[0][:, C:].abs().sum() > 0  # the variance channels are trained by the KL term


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_vb_vanishes_for_the_true_posterior_with_every_prediction(prediction):
    """The true target and nu = -1 (variance beta~_t) make p = q: the KL term is 0 for v and x0 as for eps."""
    d = _diffusion(prediction=prediction)
    x0, noise, t = _x0(), torch.randn(B, T, C, H, W), torch.tensor([0, 600])
    target = d.target(x0, noise, t)
    out = torch.cat([target, -torch.ones_like(target)], 2)
    losses = d.training_losses(lambda x, t_: out, x0, torch.ones(T, H, W), t, noise)
    assert losses["vb"][1].abs() < 1e-4 and losses["vb"][0] > 0.1
    assert losses["mse"].abs().max() < 1e-10


# ---- samplers --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
def test_ddim_eta1_over_all_steps_matches_ddpm(variance, prediction):
    """DDIM(eta = 1) over every step is DDPM with variance beta~_t (learned_range: nu = -1) on the same noise."""
    d = _diffusion(variance=variance, prediction=prediction)
    model_fn = _analytic_model(d.cfg.learn_sigma)
    x0, mask = _x0(), make_mask("predict", (T, H, W), k=1)

    def run(**kw):
        return d.sample(model_fn, x0, mask, steps=1000, generator=torch.Generator().manual_seed(7), progress=False,
                        **kw)

    ddpm, ddim = run(sampler="ddpm"), run(sampler="ddim", eta=1.0)
    torch.testing.assert_close(ddim, ddpm, atol=1e-4, rtol=0)
    assert (run(sampler="ddim", eta=0.0) - ddpm).abs().max() > 1e-2  # the comparison can tell samplers apart


@pytest.mark.parametrize("steps", [50, 250])
def test_respaced_sampling_calls_the_model_with_original_indices(steps):
    d = _diffusion(variance="fixed_small")
    calls = []

    def model_fn(x, t):
        assert t.dtype == torch.long and t.shape == (B,) and torch.all(t == t[0])
        calls.append(int(t[0]))
        return torch.zeros_like(x)

    d.sample(model_fn, _x0(), torch.ones(T, H, W), sampler="ddpm", steps=steps, progress=False)
    expected = np.round(np.linspace(0, 999, steps)).astype(int)[::-1].tolist()
    assert calls == expected and calls[0] == 999 and calls[-1] == 0
    assert spaced_timesteps(1000, steps) == expected[::-1]
    spaced = d.schedule(steps)                                        # abar kept at the kept steps
    np.testing.assert_allclose(spaced.np["ac"], d.alphas_cumprod[expected[::-1]], rtol=1e-12)


@pytest.mark.parametrize("sampler,steps", [("ddim", 25), ("ddpm", 50), ("ddim", 1000)])
def test_given_region_is_preserved_and_seen_clean_at_every_step(sampler, steps):
    d = _diffusion()
    x0 = _x0(3)
    mask = make_mask("spatial_temporal", (T, H, W), generator=torch.Generator().manual_seed(0))
    given = (mask[None, :, None] == 0).expand_as(x0)
    base = _analytic_model(True, nu=0.3)
    n_calls = []

    def model_fn(x, t):
        assert torch.equal(x[given], x0[given])
        n_calls.append(1)
        return base(x, t)

    out = d.sample(model_fn, x0, mask, sampler=sampler, steps=steps, eta=0.5,
                   generator=torch.Generator().manual_seed(1), progress=False)
    assert torch.equal(out[given], x0[given]) and len(n_calls) == steps
    assert not torch.equal(out[~given], x0[~given])


def _oracle(d: GaussianDiffusion, target: torch.Tensor):
    """A model that knows the clean data x*: it returns the true eps, v or x* at (x_t, t) for d's prediction."""
    ac = torch.tensor(d.alphas_cumprod, dtype=torch.float64)

    def model_fn(x, t):
        a = ac[t].view(-1, 1, 1, 1, 1)
        eps = (x.double() - a.sqrt() * target) / (1 - a).sqrt()
        out = {"eps": eps, "v": a.sqrt() * eps - (1 - a).sqrt() * target, "x0": target.double()}[d.cfg.prediction]
        out = out.float()
        return torch.cat([out, torch.zeros_like(out)], 2) if d.cfg.learn_sigma else out
    return model_fn


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("sampler,steps,variance", [("ddim", 50, "fixed_small"), ("ddim", 25, "learned_range"),
                                                    ("ddpm", 1000, "fixed_small"), ("ddpm", 100, "learned_range")])
def test_oracle_model_recovers_the_target(prediction, sampler, steps, variance):
    """With every prediction kind, a model that returns the true target for x* makes both samplers yield x*."""
    d = _diffusion(variance=variance, prediction=prediction)
    target, x0 = _x0(5), _x0(6)
    mask = make_mask("backward", (T, H, W), k=1)
    out = d.sample(_oracle(d, target), x0, mask, sampler=sampler, steps=steps,
                   generator=torch.Generator().manual_seed(0), progress=False)
    gen = (mask[None, :, None] == 1).expand_as(x0)
    torch.testing.assert_close(out[gen], target[gen], atol=1e-4, rtol=0)
    assert torch.equal(out[~gen], x0[~gen])


def test_sampling_is_reproducible_and_noise_argument_is_x_T():
    d = _diffusion()
    model_fn, x0, mask = _analytic_model(True), _x0(), torch.ones(T, H, W)
    a = d.sample(model_fn, x0, mask, steps=10, generator=torch.Generator().manual_seed(4), progress=False)
    b = d.sample(model_fn, x0, mask, steps=10, generator=torch.Generator().manual_seed(4), progress=False)
    xT = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    c = d.sample(model_fn, x0, mask, steps=10, noise=xT, progress=False)   # eta = 0: only x_T matters
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c)
