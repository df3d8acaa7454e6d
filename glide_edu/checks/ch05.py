"""Checkers for the exercises of chapter 5 (classifier guidance).

* :func:`check_classifier_gradient` — s·∇_{x_t} log p_φ(y | x_t, t) from a classifier's logits;
* :func:`check_guided_mean` — the ancestral rule μ̂ = μ + s·Σ·∇ log p_φ(y | x_t);
* :func:`check_guided_eps` — the DDIM rule ε̂ = ε − √(1−ᾱ_t)·s·∇ log p_φ(y | x_t).

Each checker calls the reader's function on fresh inputs, compares it with the library
(:func:`glide_edu.guidance.classifier_cond_fn`, :meth:`GaussianDiffusion.p_sample`,
:meth:`GaussianDiffusion.ddim_sample`) and names the typical slip when the answer is wrong.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from glide_edu.checks import call_reader, expect_close, expect_shape, expect_tensor, passed, raise_if_matches
from glide_edu.guidance import classifier_cond_fn
from glide_edu.nn.classifier import ClassifierConfig, EncoderUNetModel
from glide_edu.respace import create_diffusion

__all__ = ["check_classifier_gradient", "check_guided_mean", "check_guided_eps"]

ATOL = 1e-4
RTOL = 1e-4


def _small_classifier() -> EncoderUNetModel:
    torch.manual_seed(55)
    cfg = ClassifierConfig(channel_mult=(1, 2), attention_resolutions=(8,), num_res_blocks=1)
    model = EncoderUNetModel(cfg)
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    return model.eval()


def _grad_of(clf: EncoderUNetModel, x: Tensor, t: Tensor, f: Callable[[Tensor], Tensor]) -> Tensor:
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(clf(x, t)).sum(), x)
    return g


# ---------------------------------------------------------------- exercise 1: the classifier gradient
def check_classifier_gradient(fn: Callable) -> bool:
    """Check ``fn(classifier, x_t, t, y, scale) -> scale·∇_{x_t} log p_φ(y | x_t, t)``."""
    name = "classifier_gradient"
    clf = _small_classifier()
    gen = torch.Generator().manual_seed(5)
    for scale in (2.0, 3.0):
        x = torch.randn(3, 1, 16, 16, generator=gen)
        t, y = torch.tensor([10, 400, 900]), torch.tensor([2, 7, 0])
        out = expect_tensor(call_reader(fn, name, clf, x.clone(), t.clone(), y.clone(), scale), name)
        expect_shape(out, x.shape, name, "(B,C,H,W)")
        ref = classifier_cond_fn(clf, scale)(x, t, y=y)
        where = f"{name} (s = {scale:g})"
        atol = 1e-3 * float(ref.abs().max())  # tolerances relative to the size of the gradient
        if out.requires_grad:
            out = out.detach()
        pick = torch.nn.functional.one_hot(y, 10).float()
        wrong_scale = {} if scale == 1 else {
            "the scale s is missing": ref / scale, "the scale is applied twice": ref * scale
        }
        raise_if_matches(out, {
            **wrong_scale,
            "this is the gradient of the raw logit of y; guidance uses the log-probability, "
            "log_softmax(logits)[y] (the logit minus log Σ_k exp(logit_k))":
                scale * _grad_of(clf, x, t, lambda z, pick=pick: (z * pick).sum(1)),
            "this is the gradient of p_φ(y|x_t) itself; take the gradient of its log":
                scale * _grad_of(clf, x, t, lambda z, pick=pick: (z.softmax(1) * pick).sum(1)),
            "the sign is flipped: guidance climbs log p_φ(y|x_t), so the gradient points towards class y": -ref,
            "the classifier must be given the timestep t of x_t (it was trained on noised images at every t)":
                scale * _grad_of(clf, x, torch.zeros_like(t), lambda z, pick=pick: (z.log_softmax(1) * pick).sum(1)),
        }, where, atol, 1e-3)
        expect_close(out, ref, where, atol, 1e-3, hint="s·∂/∂x_t of log_softmax(classifier(x_t, t))[y], per sample")
    return passed(name, "s·∇ log p_φ(y|x_t, t) matches the library's cond_fn")


# ------------------------------------------------------------------ exercise 2: the perturbed mean
def check_guided_mean(fn: Callable) -> bool:
    """Check ``fn(mean, variance, grad, scale) -> μ + s·Σ·grad`` against ``p_sample`` with a ``cond_fn``."""
    name = "guided_mean"
    diffusion = create_diffusion(1000, "cosine", "25", model_var_type="fixed_small")
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 1, 4, 4, generator=gen)
    grad = torch.randn(2, 1, 4, 4, generator=gen)
    for i, scale in ((20, 2.0), (5, 4.0)):
        t = torch.full((2,), i)
        plain = diffusion.p_sample(lambda z, s: 0.5 * z, x, t, noise=torch.zeros_like(x))
        ref = diffusion.p_sample(
            lambda z, s: 0.5 * z, x, t, cond_fn=lambda z, s, g=grad, c=scale: c * g, noise=torch.zeros_like(x)
        )["mean"]
        mean, var = plain["mean"], plain["variance"]
        out = expect_tensor(call_reader(fn, name, mean.clone(), var.clone(), grad.clone(), scale), name)
        where = f"{name} (step {i}, s = {scale:g})"
        expect_shape(out, x.shape, name, "(B,C,H,W)")
        raise_if_matches(out, {
            "use the variance Σ, not the standard deviation √Σ: μ̂ = μ + s·Σ·∇log p": mean + scale * var.sqrt() * grad,
            "the scale s is missing": mean + var * grad,
            "the sign is flipped: the mean moves *up* the gradient of log p_φ(y|x_t)": mean - scale * var * grad,
            "Σ is missing: the shift is s·Σ·∇log p (a step of the size of the step's own noise)": mean + scale * grad,
        }, where, ATOL, RTOL)
        expect_close(out, ref, where, ATOL, RTOL, hint="μ̂ = μ + s·Σ·∇ log p_φ(y|x_t)")
    return passed(name, "the perturbed mean matches p_sample with a cond_fn")


# ---------------------------------------------------------------------- exercise 3: DDIM guidance
def check_guided_eps(fn: Callable) -> bool:
    """Check ``fn(eps, grad, alpha_bar, scale) -> ε − √(1−ᾱ_t)·s·grad`` against ``ddim_sample``."""
    name = "guided_eps"
    diffusion = create_diffusion(1000, "cosine", "25", model_var_type="fixed_small")
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 1, 4, 4, generator=gen)
    eps = torch.randn(2, 1, 4, 4, generator=gen)
    grad = torch.randn(2, 1, 4, 4, generator=gen)
    for i, scale in ((22, 1.5), (6, 3.0)):
        t = torch.full((2,), i)
        abar = float(diffusion.alphas_cumprod[i])
        out = expect_tensor(call_reader(fn, name, eps.clone(), grad.clone(), abar, scale), name)
        where = f"{name} (step {i}, s = {scale:g})"
        expect_shape(out, x.shape, name, "(B,C,H,W)")
        guided = diffusion.ddim_sample(
            lambda z, s: eps, x, t, clip_denoised=False, cond_fn=lambda z, s, g=grad, c=scale: c * g
        )["pred_xstart"]
        ref = (x - abar**0.5 * guided) / (1 - abar) ** 0.5  # the ε that gives the guided x̂_0
        raise_if_matches(out, {
            "the sign is flipped: ε points *away* from the data, so guidance subtracts √(1−ᾱ_t)·s·∇log p":
                eps + (1 - abar) ** 0.5 * scale * grad,
            "use √(1−ᾱ_t), the noise level of x_t, not (1−ᾱ_t)": eps - (1 - abar) * scale * grad,
            "use √(1−ᾱ_t), not √ᾱ_t": eps - abar**0.5 * scale * grad,
            "the scale s is missing": eps - (1 - abar) ** 0.5 * grad,
        }, where, ATOL, RTOL)
        expect_close(out, ref, where, ATOL, RTOL, hint="ε̂ = ε − √(1−ᾱ_t)·s·∇ log p_φ(y|x_t)")
    return passed(name, "the guided ε reproduces ddim_sample's guided x̂_0")
