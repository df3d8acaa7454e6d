"""The data-mean prior at the top of the schedule (glide_edu.prior) and its use by GlideModel and the trainer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from glide_edu.pipelines.models import GlideModel
from glide_edu.pipelines.tiny import tiny_glide_model
from glide_edu.prior import X0_PRIOR_ABOVE_T, check_prior, data_mean, x0_prior

MU = (0.7, 0.5, -0.2)


def test_data_mean_is_the_weighted_mean_picture() -> None:
    images = torch.rand(5, 3, 4, 4) * 2 - 1
    weights = torch.tensor([1.0, 0.0, 2.0, 0.0, 1.0])
    expected = (images[0] + 2 * images[2] + images[4]).mean(dim=(1, 2)) / 4
    assert data_mean(images, weights) == pytest.approx(expected.tolist(), abs=1e-6)
    assert data_mean(images) == pytest.approx(images.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    with pytest.raises(ValueError, match="non-negative"):
        data_mean(images, -weights)


def test_above_the_threshold_x0_is_the_mean_and_below_the_network_is_untouched() -> None:
    model = tiny_glide_model("base")
    diffusion = model.diffusion("")  # every step: the model sees original timesteps
    prior = dataclasses.replace(model, x0_prior_mean=MU)
    fn = prior.with_prior(model.network)
    x = torch.randn(4, 3, 16, 16)
    text = {"tokens": torch.zeros(4, model.text_ctx, dtype=torch.long), "mask": torch.zeros(4, model.text_ctx,
                                                                                                 dtype=torch.bool)}
    ts = torch.tensor([990, X0_PRIOR_ABOVE_T + 1, X0_PRIOR_ABOVE_T, 10])
    with torch.no_grad():
        plain, wrapped = model.network(x, ts, **text), fn(x, ts, **text)
        out = diffusion.p_mean_variance(fn, x, ts, clip_denoised=False, model_kwargs=text)
    mu = torch.tensor(MU).view(1, 3, 1, 1)
    assert torch.allclose(out["pred_xstart"][:2], mu.expand(2, -1, 16, 16), atol=1e-3)  # x̂₀ = μ above
    assert torch.equal(wrapped[2:], plain[2:])  # at and below above_t: the network's output
    assert torch.equal(wrapped[:, 3:], plain[:, 3:])  # the learned variance is always the network's
    assert not torch.allclose(wrapped[:2, :3], plain[:2, :3])


def test_a_respaced_loop_hands_the_prior_original_timesteps() -> None:
    model = dataclasses.replace(tiny_glide_model("base"), x0_prior_mean=MU)
    spaced = model.diffusion("10")  # respaced indices 9 and 8 are original t = 999 and 888
    x = torch.randn(2, 3, 16, 16)
    text = {"tokens": torch.zeros(2, model.text_ctx, dtype=torch.long), "mask": torch.zeros(2, model.text_ctx,
                                                                                                 dtype=torch.bool)}
    with torch.no_grad():
        out = spaced.p_mean_variance(model.with_prior(model.network), x, torch.tensor([9, 8]), clip_denoised=False,
                                     model_kwargs=text)
    # at t = 999 float32 rounding of ε̂ is amplified 1/√ᾱ ≈ 20 000 times: x̂₀ = μ to 1e-2
    assert torch.allclose(out["pred_xstart"], torch.tensor(MU).view(1, 3, 1, 1).expand(2, -1, 16, 16), atol=1e-2)


def test_models_without_a_prior_are_unchanged_and_options_carry_one() -> None:
    model = tiny_glide_model("base")
    assert model.x0_prior_mean is None and model.with_prior(model.network) is model.network
    options = {"noise_schedule": "squaredcos_cap_v2", "diffusion_steps": 1000, "x0_prior_mean": list(MU),
               "x0_prior_above_t": 900}
    loaded = GlideModel.from_options(model.network, options, "base")
    assert loaded.x0_prior_mean == MU and loaded.x0_prior_above_t == 900


@pytest.mark.parametrize(("mean", "above", "match"), [
    ((0.1, 0.2), 800, "3 numbers"),
    ((0.1, 0.2, 1.5), 800, r"in \[-1, 1\]"),
    ("white", 800, "3 numbers"),
    (MU, 1000, r"in \[0, 1000\)"),
    (MU, True, "integer timestep"),
])
def test_bad_priors_are_refused_with_the_fix(mean, above, match) -> None:
    with pytest.raises(ValueError, match=match):
        check_prior(mean, above, 1000)
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(tiny_glide_model("base"), x0_prior_mean=mean, x0_prior_above_t=above)


def test_x0_prior_refuses_a_bad_mean_at_construction() -> None:
    with pytest.raises(ValueError, match="x0_prior_mean"):
        x0_prior(lambda x, t: x, [0.5] * 1000, (0.0, float("nan"), 0.0))
