"""Classifier-free guidance with class labels (chapter 6): the doubled batch, the limits s = 0 and s = 1,
bad inputs, and the implicit-classifier identity on a Gaussian mixture with exact scores."""

from __future__ import annotations

import math

import pytest
import torch

from glide_edu.guidance import check_guidance_scale, class_conditional_cfg, sample_cfg
from glide_edu.nn.unet import UNetConfig, UNetModel
from glide_edu.respace import create_diffusion
from glide_edu.toy import LabelledGaussianMixture

NULL = 3


@pytest.fixture(scope="module")
def net() -> UNetModel:
    torch.manual_seed(0)
    cfg = UNetConfig(
        image_size=8,
        in_channels=1,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(4,),
        num_head_channels=32,
        learn_sigma=True,
        num_classes=NULL + 1,
    )
    model = UNetModel(cfg).eval()
    with torch.no_grad():  # the output conv starts at zero; give every weight a value so branches differ
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _inputs(b: int = 4):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 1, 8, 8, generator=g)
    t = torch.randint(0, 1000, (b,), generator=g)
    y = torch.tensor([0, 1, 2, 1])[:b]
    return x, t, y


def _branches(net, x, t, y):
    """The conditional and unconditional outputs from the same doubled network call CFG makes."""
    out = net(torch.cat([x, x]), torch.cat([t, t]), y=torch.cat([y, torch.full_like(y, NULL)]))
    return out.split(x.shape[0])


@torch.no_grad()
def test_scale_one_is_the_conditional_model(net) -> None:
    x, t, y = _inputs()
    guided = class_conditional_cfg(net, 1.0, NULL)(x, t, y=y)
    cond, _ = _branches(net, x, t, y)
    assert guided.shape == cond.shape == (4, 2, 8, 8)
    assert torch.equal(guided, cond)  # bit for bit, ε and variance channels
    # and the same as calling the conditional model alone (a batch of 4 instead of 8 rounds differently)
    torch.testing.assert_close(guided, net(x, t, y=y), atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_scale_zero_is_the_unconditional_eps_with_the_conditional_variance(net) -> None:
    x, t, y = _inputs()
    guided = class_conditional_cfg(net, 0.0, NULL)(x, t, y=y)
    cond, uncond = _branches(net, x, t, y)
    assert torch.equal(guided[:, :1], uncond[:, :1])
    assert torch.equal(guided[:, 1:], cond[:, 1:])
    assert not torch.allclose(uncond[:, 1:], cond[:, 1:], atol=1e-4)  # so the last check means something
    torch.testing.assert_close(guided[:, :1], net(x, t, y=torch.full_like(y, NULL))[:, :1], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_guided_eps_formula_and_one_doubled_call(net) -> None:
    x, t, y = _inputs()
    calls = []

    def counting(x_in, t_in, **kw):
        calls.append((x_in.shape[0], kw["y"].clone()))
        return net(x_in, t_in, **kw)

    s = 3.0
    guided = class_conditional_cfg(counting, s, NULL)(x, t, y=y)
    assert len(calls) == 1 and calls[0][0] == 8
    assert calls[0][1].tolist() == y.tolist() + [NULL] * 4
    c, u = net(x, t, y=y), net(x, t, y=torch.full_like(y, NULL))
    torch.testing.assert_close(guided[:, :1], u[:, :1] + s * (c[:, :1] - u[:, :1]), atol=1e-5, rtol=1e-5)
    # the null label itself asks for the unconditional model at any scale
    only_null = class_conditional_cfg(net, 7.0, NULL)(x, t, y=torch.full_like(y, NULL))
    torch.testing.assert_close(only_null[:, :1], u[:, :1], atol=1e-5, rtol=1e-5)  # batch 8 vs 4: rounding


@pytest.mark.parametrize(
    ("scale", "labels", "match"),
    [
        (-1.0, [0, 1, 2, 1], "guidance_scale must be a finite number >= 0"),
        (float("nan"), [0, 1, 2, 1], "guidance_scale must be a finite number >= 0"),
        ("big", [0, 1, 2, 1], "guidance_scale must be a number"),
        (2.0, [0, 1, 4, 1], r"labels must lie in 0…3 \(3 = no label\), got \[4\]"),
        (2.0, [0, -1, 2, 1], r"got \[-1\]"),
        (2.0, [0.0, 1.0, 2.0, 1.0], "integer labels"),
        (2.0, [0, 1], "4 integer labels"),
    ],
)
def test_bad_inputs_give_one_line_errors(net, scale, labels, match) -> None:
    x, t, _ = _inputs()
    with pytest.raises(ValueError, match=match) as err:
        class_conditional_cfg(net, scale, NULL)(x, t, y=torch.tensor(labels))
    assert "\n" not in str(err.value)


def test_odd_batch_and_missing_labels_rejected(net) -> None:
    from glide_edu.guidance import classifier_free_guidance

    x, t, y = _inputs()
    with pytest.raises(ValueError, match="even batch"):
        classifier_free_guidance(net, 2.0, eps_channels=1)(x[:3], t[:3], y=y[:3])
    with pytest.raises(ValueError, match="needs labels"):
        class_conditional_cfg(net, 2.0, NULL)(x, t)
    with pytest.raises(ValueError, match="null_label"):
        class_conditional_cfg(net, 2.0, 0)
    assert check_guidance_scale(3) == 3.0


def test_sample_cfg_runs_both_samplers_and_scale_one_matches_plain_sampling(net) -> None:
    diffusion = create_diffusion(1000, "cosine", "5", model_var_type="learned_range")
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 0])
    for method in ("ancestral", "ddim"):
        guided = sample_cfg(net, diffusion, y, 1.0, NULL, x_T, method, torch.Generator().manual_seed(4))
        loop = diffusion.ddim_sample_loop if method == "ddim" else diffusion.p_sample_loop
        with torch.no_grad():
            plain = loop(net, x_T.shape, noise=x_T, model_kwargs={"y": y}, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(guided, plain, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="method"):
        sample_cfg(net, diffusion, y, 1.0, NULL, x_T, "euler")


# ------------------------------------------------------------------- the implicit classifier, exactly
MIX = LabelledGaussianMixture.example()


@pytest.mark.parametrize("alpha_bar", [0.9, 0.5, 0.1])
def test_closed_form_eps_is_the_scaled_score(alpha_bar) -> None:
    x = (0.8 * torch.randn(16, 2, generator=torch.Generator().manual_seed(5))).double().requires_grad_()
    y = torch.arange(16) % 3
    for label in (None, y):
        (grad,) = torch.autograd.grad(MIX.log_prob(x, alpha_bar, label).sum(), x)
        torch.testing.assert_close(MIX.eps(x, alpha_bar, label), -math.sqrt(1 - alpha_bar) * grad)


@pytest.mark.parametrize("alpha_bar", [0.95, 0.6, 0.2, 0.02])
def test_implicit_classifier_identity(alpha_bar) -> None:
    """∇ log p(y|x_t) (autograd of Bayes' posterior) = −(ε*(x_t|y) − ε*(x_t)) / √(1−ᾱ_t)."""
    x = (0.9 * torch.randn(32, 2, generator=torch.Generator().manual_seed(6))).double().requires_grad_()
    y = torch.arange(32) % 3
    log_post = MIX.log_class_posterior(x, alpha_bar).gather(1, y[:, None]).sum()
    (grad,) = torch.autograd.grad(log_post, x)
    implicit = -(MIX.eps(x, alpha_bar, y) - MIX.eps(x, alpha_bar)) / math.sqrt(1 - alpha_bar)
    torch.testing.assert_close(grad, implicit, atol=1e-10, rtol=1e-8)
    assert grad.abs().max() > 1e-3  # not trivially zero


def test_cfg_on_exact_scores_is_the_score_of_the_sharpened_density() -> None:
    """ε̂ with scale s is −√(1−ᾱ)·∇[log p(x_t) + s·log p(y|x_t)]: the score of p(x_t)·p(y|x_t)^s."""
    abar = torch.linspace(0.999, 0.01, 1000).numpy()
    model = MIX.as_model(abar)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(7)).double()
    t = torch.tensor([10, 10, 300, 300, 800, 800])
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    s = 4.0
    guided = class_conditional_cfg(model, s, MIX.num_classes)(x, t, y=y)
    for i in range(6):
        a = float(abar[t[i]])
        xi = x[i : i + 1].clone().requires_grad_()
        obj = MIX.log_prob(xi, a) + s * MIX.log_class_posterior(xi, a)[:, y[i]]
        (grad,) = torch.autograd.grad(obj.sum(), xi)
        torch.testing.assert_close(guided[i : i + 1], -math.sqrt(1 - a) * grad)


def test_mixture_validation_and_sampling() -> None:
    with pytest.raises(ValueError, match="every index"):
        LabelledGaussianMixture(torch.zeros(2, 2), torch.ones(2), torch.ones(2), torch.tensor([0, 2]))
    draws = MIX.sample(600, torch.full((600,), 1), torch.Generator().manual_seed(0))
    assert draws.shape == (600, 2)
    assert (draws.mean(0) - MIX.means[2:4].mean(0)).abs().max() < 0.06
