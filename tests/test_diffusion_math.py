"""Numerical tests of the Gaussian diffusion maths (not just shapes)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from glide_edu.diffusion import GaussianDiffusion, ModelVarType
from glide_edu.losses import normal_kl
from glide_edu.respace import create_diffusion
from glide_edu.sampling import replay_noise_fn
from glide_edu.schedules import cosine_betas, linear_betas


def _diffusion(T: int = 50, var: str = "fixed_small", schedule: str = "cosine") -> GaussianDiffusion:
    betas = cosine_betas(T) if schedule == "cosine" else linear_betas(T)
    return GaussianDiffusion(betas, model_var_type=var)


class GaussianDataDenoiser:
    """Exact ε*(x_t, t) when x_0 ~ N(m, s² I): E[x_0|x_t] = m + √ᾱ s²/(ᾱ s² + 1 − ᾱ)·(x_t − √ᾱ m)."""

    def __init__(self, alphas_cumprod: np.ndarray, m: float = 0.2, s: float = 0.5) -> None:
        self.abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.m, self.s = m, s

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar[t].view(-1, *([1] * (x.ndim - 1)))
        x64 = x.double()
        x0 = self.m + a.sqrt() * self.s**2 / (a * self.s**2 + 1 - a) * (x64 - a.sqrt() * self.m)
        return ((x64 - a.sqrt() * x0) / (1 - a).sqrt()).to(x.dtype)


# ------------------------------------------------------------------------------------- forward process
def test_closed_form_matches_iterated_chain() -> None:
    """q(x_t|x_0) in one step has the moments of T iterated steps q(x_t|x_{t−1}) (5 standard errors)."""
    d = _diffusion(60, schedule="cosine")
    gen = torch.Generator().manual_seed(0)
    n = 40_000
    x0 = torch.linspace(-1, 1, 5, dtype=torch.float64)  # five starting values
    x = x0.repeat(n, 1)  # (n, 5)
    for t in range(d.num_timesteps):
        beta = d.betas[t]
        x = math.sqrt(1 - beta) * x + math.sqrt(beta) * torch.randn(x.shape, generator=gen, dtype=torch.float64)
        if t in (5, 20, 59):
            mean_cf = math.sqrt(d.alphas_cumprod[t]) * x0
            var_cf = 1 - d.alphas_cumprod[t]
            se_mean = math.sqrt(var_cf / n)
            se_var = var_cf * math.sqrt(2 / (n - 1))
            assert (x.mean(0) - mean_cf).abs().max() < 5 * se_mean
            assert (x.var(0) - var_cf).abs().max() < 5 * se_var
            one_step = d.q_sample(x0.repeat(n, 1), t, generator=gen)
            assert (one_step.mean(0) - mean_cf).abs().max() < 5 * se_mean
    # and at t = T the chain has forgotten x_0: ≈ N(0, 1)
    assert x.mean(0).abs().max() < 0.05 and (x.var(0) - 1).abs().max() < 0.05


def test_q_mean_variance_and_q_sample_agree() -> None:
    d = _diffusion()
    x0 = torch.rand(3, 2, 4, 4) * 2 - 1
    t = torch.tensor([0, 17, 49])
    noise = torch.randn_like(x0)
    mean, var, log_var = d.q_mean_variance(x0, t)
    torch.testing.assert_close(d.q_sample(x0, t, noise), mean + var.sqrt() * noise)
    torch.testing.assert_close(log_var, var.log())
    assert d.q_sample(x0, 10).shape == x0.shape  # an int t broadcasts over the batch


def test_eps_xstart_round_trip() -> None:
    d = _diffusion()
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 5, 5, generator=gen), torch.randn(4, 3, 5, 5, generator=gen)
    t = torch.tensor([0, 10, 30, 40])  # (near t = 49, 1/√ᾱ ≈ 60 amplifies float32 rounding)
    xt = d.q_sample(x0, t, eps)
    torch.testing.assert_close(d.predict_xstart_from_eps(xt, t, eps), x0, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(d.predict_eps_from_xstart(xt, t, x0), eps, atol=2e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------- posterior
def test_posterior_matches_bayes_rule_in_closed_form_and_on_a_grid() -> None:
    """q(x_{t−1}|x_t, x_0) ∝ q(x_t|x_{t−1}) q(x_{t−1}|x_0): compare against numerical Bayes on a grid."""
    d = _diffusion(100, schedule="linear")
    x0_val, xt_val = 0.7, -0.3
    grid = np.linspace(-6, 6, 200_001)
    dx = grid[1] - grid[0]
    for t in (1, 10, 50, 99):
        abar_prev = d.alphas_cumprod[t - 1]
        alpha, beta = 1 - d.betas[t], d.betas[t]
        log_prior = -0.5 * (grid - math.sqrt(abar_prev) * x0_val) ** 2 / (1 - abar_prev)
        log_lik = -0.5 * (xt_val - math.sqrt(alpha) * grid) ** 2 / beta
        w = np.exp(log_prior + log_lik - (log_prior + log_lik).max())
        w /= w.sum() * dx
        bayes_mean = (grid * w).sum() * dx
        bayes_var = ((grid - bayes_mean) ** 2 * w).sum() * dx
        x0 = torch.full((1, 1), x0_val, dtype=torch.float64)
        xt = torch.full((1, 1), xt_val, dtype=torch.float64)
        mean, var, log_var = d.q_posterior_mean_variance(x0, xt, torch.tensor([t]))
        assert float(mean) == pytest.approx(bayes_mean, rel=1e-5, abs=1e-6)
        assert float(var) == pytest.approx(bayes_var, rel=1e-4)
        # posterior variance formula β̃_t = β_t (1−ᾱ_{t−1})/(1−ᾱ_t) = 1/(1/(1−ᾱ_{t−1}) + α_t/β_t)
        precision = 1 / (1 - abar_prev) + alpha / beta
        assert d.posterior_variance[t] == pytest.approx(1 / precision, rel=1e-12)
        assert float(log_var) == pytest.approx(math.log(d.posterior_variance[t]), rel=1e-6)


def test_posterior_at_t0_returns_x0_and_clipped_log_variance() -> None:
    d = _diffusion()
    x0, xt = torch.randn(2, 3), torch.randn(2, 3)
    mean, var, log_var = d.q_posterior_mean_variance(x0, xt, 0)
    torch.testing.assert_close(mean, x0)  # β̃_0 = 0: the posterior is a point mass at x_0
    assert float(var.max()) == 0.0
    assert d.posterior_log_variance_clipped[0] == d.posterior_log_variance_clipped[1]


# --------------------------------------------------------------------------------------------- KL
@settings(max_examples=60, deadline=None)
@given(st.floats(-3, 3), st.floats(-3, 3), st.floats(-4, 2), st.floats(-4, 2))
def test_normal_kl_is_nonnegative_and_zero_only_at_equality(m1: float, m2: float, lv1: float, lv2: float) -> None:
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    kl = normal_kl(t(m1), t(lv1), t(m2), t(lv2))
    assert float(kl) >= -1e-12
    assert abs(float(normal_kl(t(m1), t(lv1), t(m1), t(lv1)))) < 1e-15  # zero up to rounding
    if abs(m1 - m2) > 1e-3 or abs(lv1 - lv2) > 1e-3:
        assert float(kl) > 0


def test_normal_kl_matches_monte_carlo() -> None:
    gen = torch.Generator().manual_seed(1)
    m1, lv1, m2, lv2 = 0.3, math.log(0.5), -0.2, math.log(1.7)
    x = m1 + math.exp(0.5 * lv1) * torch.randn(400_000, generator=gen, dtype=torch.float64)
    logp = -0.5 * (lv1 + (x - m1) ** 2 / math.exp(lv1))
    logq = -0.5 * (lv2 + (x - m2) ** 2 / math.exp(lv2))
    mc = float((logp - logq).mean())
    exact = float(normal_kl(torch.tensor(m1), torch.tensor(lv1), torch.tensor(m2), torch.tensor(lv2)))
    assert exact == pytest.approx(mc, abs=5e-3)


# ----------------------------------------------------------------------------------- p_mean_variance
def test_variance_types() -> None:
    T = 40
    x = torch.randn(2, 1, 3, 3)
    t = torch.tensor([0, 25])
    eps = torch.zeros_like(x)
    small = _diffusion(T, "fixed_small").p_mean_variance(lambda x, t: eps, x, t)
    torch.testing.assert_close(
        small.variance[:, 0, 0, 0], torch.tensor(_diffusion(T).posterior_variance[[0, 25]]).float()
    )
    large_d = _diffusion(T, "fixed_large")
    large = large_d.p_mean_variance(lambda x, t: eps, x, t)
    expected = torch.tensor([large_d.posterior_variance[1], large_d.betas[25]]).float()
    torch.testing.assert_close(large.variance[:, 0, 0, 0], expected)
    d = _diffusion(T, "learned_range")
    for v, table in ((1.0, np.log(d.betas)), (-1.0, d.posterior_log_variance_clipped)):
        out = d.p_mean_variance(lambda x, t, v=v: torch.cat([eps, torch.full_like(x, v)], 1), x, t)
        torch.testing.assert_close(out.log_variance[:, 0, 0, 0], torch.tensor(table[[0, 25]]).float())
    learned = _diffusion(T, "learned").p_mean_variance(lambda x, t: torch.cat([eps, torch.full_like(x, -2.0)], 1), x, t)
    torch.testing.assert_close(learned.variance, torch.full_like(x, math.exp(-2.0)))


def test_p_mean_variance_with_true_eps_recovers_the_posterior() -> None:
    """With ε_θ equal to the true noise, μ_θ is the true posterior mean μ̃_t(x_t, x_0)."""
    d = _diffusion(50, "fixed_small")
    x0 = torch.rand(4, 3, 6, 6) * 1.6 - 0.8
    eps = torch.randn_like(x0)
    t = torch.tensor([1, 5, 20, 40])  # (at t = 49, 1/√ᾱ ≈ 60 amplifies float32 rounding)
    xt = d.q_sample(x0, t, eps)
    out = d.p_mean_variance(lambda x, ts: eps, xt, t, clip_denoised=False)
    mean, _, _ = d.q_posterior_mean_variance(x0, xt, t)
    torch.testing.assert_close(out.pred_xstart, x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.mean, mean, atol=1e-4, rtol=1e-4)
    start_x = GaussianDiffusion(d.betas, model_mean_type="start_x", model_var_type="fixed_small")
    torch.testing.assert_close(start_x.p_mean_variance(lambda x, ts: x0, xt, t).mean, mean, atol=1e-5, rtol=1e-5)


def test_denoised_fn_runs_before_clipping() -> None:
    d = _diffusion()
    seen = {}

    def denoised_fn(x0: torch.Tensor) -> torch.Tensor:
        seen["max"] = float(x0.abs().max())
        return x0 * 3

    x = torch.randn(2, 3, 4, 4) * 3
    out = d.p_mean_variance(lambda x, t: torch.randn_like(x), x, torch.tensor([49, 49]), denoised_fn=denoised_fn)
    assert seen["max"] > 1.0  # it saw the unclipped prediction
    assert float(out.pred_xstart.abs().max()) <= 1.0  # and the clamp came after it


# --------------------------------------------------------------------------------- sampling & guidance
def test_cond_fn_shifts_the_mean_by_variance_times_gradient_with_original_timesteps() -> None:
    d = create_diffusion(1000, "cosine", "10", model_var_type="fixed_small")
    x = torch.randn(3, 1, 2, 2)
    t = torch.tensor([9, 4, 0])
    got_t: list[torch.Tensor] = []

    def cond_fn(x: torch.Tensor, ts: torch.Tensor) -> torch.Tensor:
        got_t.append(ts)
        return torch.full_like(x, 2.0)

    model = lambda x, ts: torch.zeros_like(x)  # noqa: E731
    plain = d.p_mean_variance(model, x, t)
    guided = d.p_sample(model, x, t, cond_fn=cond_fn, noise=torch.zeros_like(x))
    torch.testing.assert_close(guided["mean"], plain.mean + plain.variance * 2.0)
    assert got_t[0].tolist() == [int(d.timestep_map[i]) for i in (9, 4, 0)] == [999, 444, 0]


def test_no_noise_is_added_at_t0_and_noise_scales_with_sigma() -> None:
    d = _diffusion(30, "fixed_large")
    x = torch.randn(2, 1, 3, 3)
    model = lambda x, t: torch.zeros_like(x)  # noqa: E731
    noise = torch.ones_like(x)
    step = d.p_sample(model, x, torch.tensor([0, 10]), noise=noise)
    out = d.p_mean_variance(model, x, torch.tensor([0, 10]))
    torch.testing.assert_close(step["sample"][0], out.mean[0])
    torch.testing.assert_close(step["sample"][1], out.mean[1] + out.variance[1].sqrt())


def test_progressive_loop_yields_every_step_and_replays_recorded_noise() -> None:
    d = create_diffusion(1000, "cosine", "8", model_var_type="fixed_small")
    model = GaussianDataDenoiser(create_diffusion(1000, "cosine").alphas_cumprod)
    shape = (2, 1, 4, 4)
    x_T = torch.randn(shape)
    stream = [torch.randn(shape) for _ in range(8)]
    steps = list(d.p_sample_loop_progressive(model, shape, noise=x_T, noise_fn=replay_noise_fn(stream)))
    assert [s.t for s in steps] == list(range(7, -1, -1))
    assert steps[0].timestep == 999 and steps[-1].timestep == 0
    again = d.p_sample_loop(model, shape, noise=x_T, noise_fn=replay_noise_fn(stream))
    torch.testing.assert_close(again, steps[-1].sample, rtol=0, atol=0)
    other = d.p_sample_loop(model, shape, noise=x_T, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(other, again)
    with pytest.raises(ValueError, match="exhausted"):
        d.p_sample_loop(model, shape, noise=x_T, noise_fn=replay_noise_fn(stream[:3]))


def test_ddim_eta0_is_deterministic_and_inverts() -> None:
    d = create_diffusion(1000, "cosine", "200", model_var_type="fixed_small")
    model = GaussianDataDenoiser(create_diffusion(1000, "cosine").alphas_cumprod)
    x0 = 0.2 + 0.5 * torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0 = x0.float()
    a = d.ddim_sample_loop(model, x0.shape, noise=torch.ones_like(x0), generator=torch.Generator().manual_seed(1))
    b = d.ddim_sample_loop(model, x0.shape, noise=torch.ones_like(x0), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # inversion x_0 → x_T then sampling x_T → x_0 reconstructs, with the O(1/N) discretisation error of DDIM
    errors = {}
    for n in (50, 200, 1000):
        dn = create_diffusion(1000, "cosine", str(n), model_var_type="fixed_small")
        latent = dn.ddim_reverse_loop(model, x0, clip_denoised=False)
        assert latent.std() > 0.5  # it really travelled to the noise end
        recon = dn.ddim_sample_loop(model, x0.shape, noise=latent, clip_denoised=False)
        errors[n] = float((recon - x0).abs().max())
    assert errors[1000] < 0.01 and errors[1000] < errors[200] / 3 < errors[50] / 9
    # η > 0 is stochastic
    c = d.ddim_sample_loop(
        model, x0.shape, noise=torch.ones_like(x0), eta=1.0, generator=torch.Generator().manual_seed(1)
    )
    e = d.ddim_sample_loop(
        model, x0.shape, noise=torch.ones_like(x0), eta=1.0, generator=torch.Generator().manual_seed(2)
    )
    assert not torch.allclose(c, e)


def test_samples_of_the_exact_gaussian_denoiser_have_the_data_moments() -> None:
    d = create_diffusion(1000, "cosine", "100", model_var_type="fixed_small")
    model = GaussianDataDenoiser(create_diffusion(1000, "cosine").alphas_cumprod, m=0.2, s=0.3)
    out = d.p_sample_loop(model, (4000, 1, 1, 1), generator=torch.Generator().manual_seed(0), clip_denoised=False)
    assert float(out.mean()) == pytest.approx(0.2, abs=0.02)
    assert float(out.std()) == pytest.approx(0.3, abs=0.02)


# ------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_value_errors() -> None:
    d = _diffusion(10)
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="timesteps must lie in 0..9"):
        d.q_sample(x, 10)
    with pytest.raises(ValueError, match="integers"):
        d.q_sample(x, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="do not broadcast"):
        d.q_sample(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="noise has shape"):
        d.q_sample(x, 1, noise=torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="expected .* 2·C"):
        _diffusion(10, "learned_range").p_mean_variance(lambda x, t: x, x, 1)
    with pytest.raises(ValueError, match="unknown model_var_type"):
        GaussianDiffusion(cosine_betas(10), model_var_type="huge")
    with pytest.raises(ValueError, match="eta must be >= 0"):
        d.ddim_sample(lambda x, t: x, x, torch.tensor([1, 1]), eta=-1)
    with pytest.raises(ValueError, match="eta = 0"):
        d.ddim_reverse_sample(lambda x, t: x, x, torch.tensor([1, 1]), eta=0.5)
    assert ModelVarType("learned_range").is_learned
