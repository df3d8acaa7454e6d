"""Checkers for the exercises of chapter 5 (classifier guidance).

* :func:`check_classifier_gradient` — s·∇_{x_t} log p_φ(y | x_t, t) from a classifier's logits;
* :func:`check_guided_mean` — the ancestral rule μ̂ = μ + s·Σ·∇ log p_φ(y | x_t);
* :func:`check_guided_eps` — the DDIM rule ε̂ = ε − √(1−ᾱ_t)·s·∇ log p_φ(y | x_t);
* :func:`check_classifier_timestep` — a prediction: which original timestep the classifier receives at a step
  of a respaced chain (computed from ``create_diffusion``'s ``timestep_map``);
* :func:`check_half_accuracy_steps` — an experiment: where the noisy and the clean classifier first fall
  below 50 % accuracy on noised test digits (recomputed live from the shipped classifiers).

Each checker calls the reader's function on fresh inputs, compares it with the library
(:func:`glide_edu.guidance.classifier_cond_fn`, :meth:`GaussianDiffusion.p_sample`,
:meth:`GaussianDiffusion.ddim_sample`) and names the typical slip when the answer is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from glide_edu.checks import (
    ExerciseError,
    call_reader,
    expect_close,
    expect_integer,
    expect_shape,
    expect_tensor,
    passed,
    raise_if_matches,
)
from glide_edu.guidance import classifier_cond_fn
from glide_edu.nn.classifier import ClassifierConfig, EncoderUNetModel
from glide_edu.respace import create_diffusion

__all__ = [
    "check_classifier_gradient",
    "check_guided_mean",
    "check_guided_eps",
    "check_classifier_timestep",
    "check_half_accuracy_steps",
]

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


# ------------------------------------------------- prediction: the classifier's timestep on a respaced chain
def check_classifier_timestep(t_classifier: object, steps: int = 25, step: int = 7, num_timesteps: int = 1000) -> bool:
    """Check the original timestep the classifier receives at respaced ``step`` of a ``steps``-step chain.

    The truth is ``SpacedDiffusion.timestep_map[step]`` of ``create_diffusion(num_timesteps, …, str(steps))``,
    i.e. the ``step``-th smallest of ``space_timesteps(num_timesteps, str(steps))``.
    """
    name = "t_classifier"
    got = expect_integer(t_classifier, name)
    spaced = create_diffusion(num_timesteps, "cosine", str(steps), model_var_type="fixed_small")
    kept = [int(s) for s in spaced.timestep_map]
    truth = kept[step]
    if got == truth:
        return passed(
            name,
            f"step {step} of the {steps}-step chain is original timestep {truth}; timestep_map = "
            f"{kept[:step + 2]} … {kept[-1]}",
        )
    where = f"{name} (step {step} of a {steps}-step chain over T = {num_timesteps})"
    stride = (num_timesteps - 1) / (steps - 1)
    if got == step:
        raise ExerciseError(
            f"{where}: {got} is the respaced index. The classifier was trained on the original 1000-step "
            "chain and only knows those noise levels: hand it timestep_map[i], the original step i stands for"
        )
    if got == step * num_timesteps // steps:
        raise ExerciseError(
            f"{where}: {got} = {step}·{num_timesteps}/{steps} is the integer stride of 'ddim{steps}' (0, 40, 80, …, "
            f"never {num_timesteps - 1}). A plain '{steps}' spreads {steps} steps over [0, {num_timesteps - 1}] "
            f"with both ends kept: stride ({num_timesteps - 1})/({steps - 1}) ≈ {stride:.2f}"
        )
    if got in (kept[-1 - step], num_timesteps - 1 - step, num_timesteps - step):
        raise ExerciseError(
            f"{where}: respaced steps are counted from the clean end, like the original ones: step 0 is original "
            f"step {kept[0]} and step {steps - 1} is {kept[-1]}"
        )
    if abs(got - truth) <= 2:
        raise ExerciseError(
            f"{where}: close — {got}, but the kept steps are round(i·{num_timesteps - 1}/{steps - 1}) "
            f"(stride ≈ {stride:.3f}, Python's round): {step}·{stride:.3f} = {step * stride:.3f}"
        )
    raise ExerciseError(
        f"{where}: got {got}, expected {truth}. Print create_diffusion({num_timesteps}, 'cosine', '{steps}')"
        f".timestep_map and look at its entry number {step}"
    )


# ---------------------------------------------------- experiment: where does each classifier fall below ½?
@lru_cache(maxsize=1)
def _shipped_classifiers() -> tuple[dict[str, Any], Any, Tensor, Tensor]:
    """The two shipped digit classifiers, their 1000-step diffusion and the test digits (loaded once)."""
    from glide_edu.data import load_digits
    from glide_edu.train_classifier import digits_diffusion_config, load_classifier

    classifiers = {kind: load_classifier(f"digits_classifier_{kind}")[0] for kind in ("noisy", "clean")}
    x, y = load_digits(16, "test")
    return classifiers, create_diffusion(**digits_diffusion_config()), x, y


@lru_cache(maxsize=64)
def _accuracies(kind: str, n_digits: int, timesteps: tuple[int, ...], clean: bool | None = None) -> dict[int, float]:
    from glide_edu.train_classifier import accuracy_vs_t

    classifiers, diffusion, x, y = _shipped_classifiers()
    clean = (kind == "clean") if clean is None else clean
    return accuracy_vs_t(classifiers[kind], diffusion, x[:n_digits], y[:n_digits], timesteps, clean=clean)


def _first_below(acc: dict[int, float], level: float) -> int | None:
    return next((t for t in sorted(acc) if acc[t] < level), None)


def check_half_accuracy_steps(t_half: object, n_digits: int, level: float = 0.5) -> bool:
    """Check ``t_half = {"noisy": t, "clean": t}``: the first t of ``EVAL_TIMESTEPS`` with accuracy < ``level``.

    Accuracies are those of :func:`glide_edu.train_classifier.accuracy_vs_t` on the first ``n_digits`` test digits
    (its noise seed 0; the clean classifier is shown t = 0), recomputed here from the shipped classifiers. Use
    ``None`` for a classifier that never falls below ``level`` on the grid.
    """
    from glide_edu.train_classifier import EVAL_TIMESTEPS

    name = "t_half"
    grid = tuple(int(t) for t in EVAL_TIMESTEPS)
    if not isinstance(t_half, dict) or set(t_half) != {"noisy", "clean"}:
        raise ExerciseError(f'{name}: expected a dict {{"noisy": t, "clean": t}}, got {t_half!r}')
    n_test = len(_shipped_classifiers()[2])
    n_digits = expect_integer(n_digits, "n_digits")
    if not 10 <= n_digits <= n_test:
        raise ExerciseError(f"{name}: n_digits must be an integer between 10 and {n_test}, got {n_digits!r}")
    answers: dict[str, int | None] = {}
    for kind in ("noisy", "clean"):
        value = t_half[kind]
        answers[kind] = None if value is None else expect_integer(value, f'{name}["{kind}"]')
        if answers[kind] is not None and answers[kind] not in grid:
            raise ExerciseError(f'{name}["{kind}"]: {answers[kind]} is not on the grid EVAL_TIMESTEPS = {list(grid)}')
    found = {}
    for kind in ("noisy", "clean"):
        guess = answers[kind]
        # fast path: the answer is right iff its own accuracy is below the level and the previous grid point's is not
        if guess is not None:
            i = grid.index(guess)
            acc = _accuracies(kind, n_digits, grid[max(i - 1, 0) : i + 1])
            if acc[guess] < level and (i == 0 or acc[grid[i - 1]] >= level):
                found[kind] = f"{kind} {acc[guess]:.2f} at t = {guess}"
                continue
        curve = _accuracies(kind, n_digits, grid)
        truth = _first_below(curve, level)
        table = ", ".join(f"{t}: {a:.2f}" for t, a in curve.items())
        where = f'{name}["{kind}"]'
        other = "clean" if kind == "noisy" else "noisy"
        if truth is None:
            raise ExerciseError(
                f"{where}: the {kind} classifier never falls below {level:g} on the grid ({table}); answer None"
            )
        if guess is None:
            raise ExerciseError(f"{where}: None, but its accuracy falls below {level:g} at t = {truth} ({table})")
        hint = ""
        if guess == _first_below(_accuracies(other, n_digits, grid), level):
            hint = f" — that is where the {other} classifier falls below {level:g}; are the two swapped?"
        elif kind == "clean" and guess == _first_below(_accuracies(kind, n_digits, grid, clean=False), level):
            hint = (
                " — that is the clean classifier told the true t; it was trained at t = 0 only and must be shown "
                "t = 0 (accuracy_vs_t(..., clean=True))"
            )
        elif grid.index(guess) + 1 < len(grid) and grid[grid.index(guess) + 1] == truth:
            hint = f" — {guess} is the last step at or above {level:g}; the question asks for the first one below"
        raise ExerciseError(
            f"{where}: got t = {guess} (accuracy {curve[guess]:.2f}), but the first step whose accuracy on the first "
            f"{n_digits} test digits is below {level:g} is t = {truth}{hint}. Accuracies: {table}"
        )
    return passed(name, "; ".join(found.values()) + f" (first {n_digits} test digits)")
