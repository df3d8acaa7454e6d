"""Tests of glide_edu.toy: the exact denoiser of a finite dataset, and chapter 2's metrics and sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glide_edu.schedules import alphas_cumprod, cosine_betas
from glide_edu.toy import (
    OptimalDenoiser,
    denoise_renoise_sample,
    make_toy_2d,
    mean_pairwise_distance,
    nearest_distance,
    noisy_log_density,
    sharpness,
)

ABAR = alphas_cumprod(cosine_betas(200))


# ------------------------------------------------------------------------------ the exact denoiser
def test_posterior_weights_are_a_distribution_and_one_shot_gives_the_mean() -> None:
    data = make_toy_2d("gaussians8", 64, seed=1)
    den = OptimalDenoiser(data, ABAR)
    x = torch.randn(10, 2)
    w = den.posterior_weights(x, torch.full((10,), 50))
    assert w.shape == (10, 64)
    assert torch.allclose(w.sum(1), torch.ones(10, dtype=w.dtype))
    x0 = den.predict_xstart(x, torch.full((10,), 199))  # ᾱ ≈ 0: every point explains x_T equally well
    assert torch.allclose(x0, data.mean(0).expand(10, 2), atol=1e-3)


# ---------------------------------------------------------------------------------------- sharpness
def test_sharpness_values() -> None:
    flat = torch.zeros(2, 1, 6, 6)
    assert torch.allclose(sharpness(flat), torch.zeros(2, dtype=torch.float64))
    checker = (torch.arange(6)[:, None] + torch.arange(6)[None, :]) % 2 * 2.0 - 1  # ±1 checkerboard
    assert math.isclose(float(sharpness(checker.view(1, 1, 6, 6).float())[0]), 2.0)
    img = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    blurred = torch.nn.functional.avg_pool2d(img, 3, stride=1, padding=1, count_include_pad=False)
    assert sharpness(blurred)[0] < 0.6 * sharpness(img)[0]
    with pytest.raises(ValueError, match="B, C, H, W"):
        sharpness(torch.zeros(6, 6))


# ------------------------------------------------------------------------------------ diversity
def test_mean_pairwise_distance() -> None:
    assert math.isclose(mean_pairwise_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0]])), 5.0)
    assert mean_pairwise_distance(torch.ones(5, 1, 2, 2)) == 0.0
    pts = torch.tensor([[0.0], [1.0], [3.0]])  # pairs: 1, 3, 2 → mean 2
    assert math.isclose(mean_pairwise_distance(pts), 2.0)
    with pytest.raises(ValueError, match="at least 2"):
        mean_pairwise_distance(torch.zeros(1, 3))


# ----------------------------------------------------------------------------- noisy log-density
def test_noisy_log_density_of_one_point_is_a_gaussian() -> None:
    y = torch.tensor([[0.5, -0.2]], dtype=torch.float64)
    x = torch.randn(7, 2, dtype=torch.float64)
    a = 0.3
    expected = torch.distributions.Normal(math.sqrt(a) * y, math.sqrt(1 - a)).log_prob(x).sum(1)
    assert torch.allclose(noisy_log_density(x, y, a), expected, atol=1e-10)
    with pytest.raises(ValueError, match="alpha_bar"):
        noisy_log_density(x, y, 1.0)


def test_score_of_noisy_density_is_minus_eps_over_sigma() -> None:
    """Tweedie: ∇ log q_t(x_t) = −ε*(x_t, t)/√(1−ᾱ_t) for the finite dataset."""
    data = make_toy_2d("moons", 100, seed=0).double()
    den = OptimalDenoiser(data, ABAR)
    for t in (5, 60, 150):
        x = torch.randn(20, 2, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(noisy_log_density(x, data, float(ABAR[t])).sum(), x)
        eps = den(x.detach(), torch.full((20,), t))
        assert torch.allclose(grad, -eps / math.sqrt(1 - ABAR[t]), atol=1e-6)


# -------------------------------------------------------------------------- denoise / re-noise
def test_denoise_renoise_one_level_is_one_shot() -> None:
    data = make_toy_2d("spiral", 50, seed=2)
    den = OptimalDenoiser(data, ABAR)
    x_T = torch.randn(6, 2)
    out = denoise_renoise_sample(den.predict_xstart, ABAR, [199], x_T)
    assert torch.equal(out, den.predict_xstart(x_T, torch.full((6,), 199)))


def test_denoise_renoise_is_reproducible_and_lands_on_data() -> None:
    data = make_toy_2d("gaussians8", 40, seed=3, noise=0.0)
    den = OptimalDenoiser(data, ABAR)
    ts = np.linspace(199, 0, 12).round().astype(int)
    x_T = torch.randn(30, 2, generator=torch.Generator().manual_seed(0))
    a = denoise_renoise_sample(den.predict_xstart, ABAR, ts, x_T, generator=torch.Generator().manual_seed(1))
    b, preds = denoise_renoise_sample(den.predict_xstart, ABAR, ts, x_T, generator=torch.Generator().manual_seed(1),
                                      return_all=True)
    assert torch.equal(a, b) and len(preds) == len(ts) and torch.equal(preds[-1], b)
    assert nearest_distance(a, data).max() < 1e-3  # the exact denoiser of a finite set memorises
    assert mean_pairwise_distance(a) > 0.5  # … but different noise lands on different points


def test_denoise_renoise_validates_timesteps() -> None:
    den = OptimalDenoiser(torch.zeros(3, 2), ABAR)
    with pytest.raises(ValueError, match="decreasing"):
        denoise_renoise_sample(den.predict_xstart, ABAR, [10, 20], torch.zeros(1, 2))
    with pytest.raises(ValueError, match="empty"):
        denoise_renoise_sample(den.predict_xstart, ABAR, [], torch.zeros(1, 2))
