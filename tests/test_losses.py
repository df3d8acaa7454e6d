"""The training objectives: VLB vs the true NLL, the hybrid loss's stop-gradient, importance sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glide_edu.diffusion import GaussianDiffusion
from glide_edu.losses import approx_standard_normal_cdf, discretized_gaussian_log_likelihood
from glide_edu.resample import LossSecondMomentResampler, UniformSampler, create_named_schedule_sampler
from glide_edu.schedules import cosine_betas


class ExactGaussianReverse:
    """The exact reverse process of x_0 ~ N(m, s²I): ε from E[x_0|x_t] and log Var(x_{t−1}|x_t) (LEARNED)."""

    def __init__(self, d: GaussianDiffusion, m: float, s: float) -> None:
        self.m, self.s = m, s
        abar = d.alphas_cumprod
        abar_prev = d.alphas_cumprod_prev
        v_prev = abar_prev * s**2 + 1 - abar_prev  # Var(x_{t−1}); Var(x_0) = s² at t = 0
        alpha = 1 - d.betas
        v_t = alpha * v_prev + d.betas
        self.log_var = torch.from_numpy(np.log(v_prev - alpha * v_prev**2 / v_t))
        self.abar = torch.from_numpy(abar)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar[t].view(-1, 1, 1, 1).double()
        x0 = self.m + a.sqrt() * self.s**2 / (a * self.s**2 + 1 - a) * (x.double() - a.sqrt() * self.m)
        eps = (x.double() - a.sqrt() * x0) / (1 - a).sqrt()
        log_var = self.log_var[t].view(-1, 1, 1, 1).expand_as(x)
        return torch.cat([eps, log_var], dim=1).float()


def test_vlb_bounds_and_nearly_equals_the_true_nll_on_gaussian_data() -> None:
    m, s = 0.1, 0.3
    d = GaussianDiffusion(cosine_betas(100), model_var_type="learned")
    gen = torch.Generator().manual_seed(0)
    z = m + s * torch.randn(16, 1, 16, 16, generator=gen)
    x0 = ((z.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1  # 8-bit data
    # true NLL of the discretised Gaussian, bits/dim
    p_bin = approx_standard_normal_cdf((x0 + 1 / 255 - m) / s) - approx_standard_normal_cdf((x0 - 1 / 255 - m) / s)
    true_bpd = float((-torch.log2(p_bin)).mean())
    out = d.calc_bpd_loop(ExactGaussianReverse(d, m, s), x0, clip_denoised=False, generator=gen)
    vlb = float(out["total_bpd"].mean())
    assert out["vb"].shape == (16, 100) and float(out["vb"].min()) >= -1e-4  # each KL term ≥ 0
    assert float(out["prior_bpd"].max()) < 1e-3  # ᾱ_T ≈ 0: L_T is negligible
    assert vlb >= true_bpd - 0.01  # a bound (up to Monte Carlo error) …
    assert vlb - true_bpd < 0.05  # … and a tight one for the exact reverse process
    # a wrong variance (fixed_large) makes the bound looser
    loose = GaussianDiffusion(cosine_betas(100), model_var_type="fixed_large")
    eps_only = ExactGaussianReverse(d, m, s)
    out_loose = loose.calc_bpd_loop(lambda x, t: eps_only(x, t)[:, :1], x0, clip_denoised=False, generator=gen)
    assert float(out_loose["total_bpd"].mean()) > vlb + 0.05


def test_discretized_likelihood_is_a_probability_over_the_grid() -> None:
    grid = torch.linspace(-1, 1, 256).view(256, 1)
    for mean, log_scale in ((0.0, math.log(0.2)), (0.9, math.log(0.05)), (-0.3, math.log(1.5))):
        lp = discretized_gaussian_log_likelihood(
            grid, means=torch.full_like(grid, mean), log_scales=torch.full_like(grid, log_scale)
        )
        assert float(lp.exp().sum()) == pytest.approx(1.0, abs=2e-3)  # the edge bins are open-ended
    with pytest.raises(ValueError, match="one shape"):
        discretized_gaussian_log_likelihood(grid, means=grid[:3], log_scales=grid)


def test_hybrid_stop_gradient_leaves_the_mean_gradient_equal_to_l_simple() -> None:
    d = GaussianDiffusion(cosine_betas(50), model_var_type="learned_range")
    x0 = torch.rand(4, 3, 4, 4) * 2 - 1
    t = torch.tensor([0, 3, 20, 49])
    noise = torch.randn_like(x0)
    param = torch.randn(4, 6, 4, 4, requires_grad=True)
    model = lambda x, ts: param * 1.0  # noqa: E731
    hybrid = d.training_losses(model, x0, t, noise=noise, loss_type="hybrid")
    (g_hybrid,) = torch.autograd.grad(hybrid["loss"].sum(), param, retain_graph=True)
    (g_simple,) = torch.autograd.grad(hybrid["mse"].sum(), param)
    torch.testing.assert_close(g_hybrid[:, :3], g_simple[:, :3], rtol=0, atol=0)  # the mean: L_simple only
    assert float(g_hybrid[:, 3:].abs().sum()) > 0 and float(g_simple[:, 3:].abs().sum()) == 0  # Σ: L_vlb only
    assert torch.all(hybrid["vb"] >= 0)
    # λ convention: lambda_vlb·T scales the per-step term; λ = 1/T is guided-diffusion's unscaled vb
    unscaled = d.training_losses(model, x0, t, noise=noise, loss_type="hybrid", lambda_vlb=1 / 50)
    torch.testing.assert_close(hybrid["vb"], unscaled["vb"] * (0.001 * 50))


def test_loss_type_and_variance_must_agree() -> None:
    fixed = GaussianDiffusion(cosine_betas(10), model_var_type="fixed_small")
    learned = GaussianDiffusion(cosine_betas(10), model_var_type="learned_range")
    x0 = torch.zeros(2, 1, 2, 2)
    with pytest.raises(ValueError, match="hybrid loss"):
        fixed.training_losses(lambda x, t: x, x0, torch.tensor([1, 2]), loss_type="hybrid")
    with pytest.raises(ValueError, match="L_simple"):
        learned.training_losses(lambda x, t: x, x0, torch.tensor([1, 2]), loss_type="simple")
    simple = fixed.training_losses(
        lambda x, t: torch.zeros_like(x), x0, torch.tensor([1, 2]), noise=torch.ones_like(x0)
    )
    torch.testing.assert_close(simple["loss"], torch.ones(2))  # ‖ε − 0‖² with ε = 1
    kl = learned.training_losses(lambda x, t: torch.zeros(2, 2, 2, 2), x0, torch.tensor([1, 2]), loss_type="kl")
    assert torch.all(kl["loss"] > 0)


def test_importance_sampling_keeps_the_estimator_unbiased() -> None:
    T = 50
    losses = torch.linspace(0.01, 3.0, T) ** 2  # very uneven L_t
    sampler = LossSecondMomentResampler(T)
    assert not sampler.warmed_up()
    for _ in range(10):
        sampler.update_with_local_losses(torch.arange(T), losses)
    assert sampler.warmed_up()
    p = sampler.probabilities()
    assert p[-1] > 50 * p[0]  # it concentrates on high-loss steps
    gen = torch.Generator().manual_seed(0)
    t, w = sampler.sample(200_000, generator=gen)
    estimate = float((w * losses[t]).mean())
    assert estimate == pytest.approx(float(losses.mean()), rel=0.01)
    # and with lower variance than uniform sampling
    tu, wu = UniformSampler(T).sample(200_000, generator=gen)
    assert float((w * losses[t]).var()) < float((wu * losses[tu]).var())
    assert torch.all(wu == 1)
    with pytest.raises(ValueError, match="unknown schedule sampler"):
        create_named_schedule_sampler("importance", T)
