"""Checkers for the exercises of chapter 2 (the reverse process).

* :func:`check_posterior_mean_variance` — μ̃_t and β̃_t of q(x_{t−1} | x_t, x_0);
* :func:`check_mu_from_eps` — μ_θ = (x_t − β_t/√(1−ᾱ_t)·ε_θ)/√α_t;
* :func:`check_p_step` — one ancestral step x_t → x_{t−1} with Σ = β̃_t;
* :func:`check_one_shot_limit` — what the exact denoiser returns from pure noise;
* :func:`check_variance_prediction` — a prediction: which fixed variance suits a 10-step chain, and where the
  true reverse variance lies (sampled and computed live with the exact denoiser of the moons).

Each checker calls the reader's function on fresh random inputs (several schedules, batches that contain
t = 0 and t = T−1), compares with :mod:`glide_edu.diffusion` and, when the answer is wrong, looks for the
typical slips (swapped coefficients, ᾱ_t in place of ᾱ_{t−1}, β_t in place of β̃_t, a missing square
root, noise added at t = 0, …) to say which one it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from glide_edu.checks import (
    ExerciseError,
    call_reader,
    expect_choice,
    expect_close,
    expect_shape,
    expect_tensor,
    passed,
    raise_if_matches,
    values_close,
)
from glide_edu.diffusion import GaussianDiffusion
from glide_edu.respace import create_diffusion
from glide_edu.schedules import cosine_betas, linear_betas
from glide_edu.toy import OptimalDenoiser, make_toy_2d, mean_pairwise_distance

__all__ = ["check_posterior_mean_variance", "check_mu_from_eps", "check_p_step", "check_one_shot_limit",
           "check_variance_prediction", "variance_study"]

ATOL = 1e-4
RTOL = 1e-4


# ------------------------------------------------------------------------------------------ helpers
def _cases(seed: int) -> list[tuple[str, np.ndarray, Tensor]]:
    """(description, betas, timesteps) for a cosine and a linear schedule; t includes 0, 1 and T−1."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for name, betas in (("cosine, T=40", cosine_betas(40)), ("linear, T=100", linear_betas(100))):
        T = len(betas)
        t = torch.cat([torch.tensor([0, 1, T - 1]), torch.randint(2, T - 1, (3,), generator=gen)]).long()
        out.append((name, betas, t))
    return out


def _tables(betas: np.ndarray) -> dict[str, Tensor]:
    b = torch.as_tensor(betas, dtype=torch.float64)
    a = 1 - b
    abar = torch.cumprod(a, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return {"beta": b, "alpha": a, "abar": abar, "abar_prev": abar_prev}


def _at(table: Tensor, t: Tensor, ndim: int) -> Tensor:
    return table[t].view(-1, *([1] * (ndim - 1)))


def _close(actual: Tensor, expected: Tensor, atol: float = ATOL, rtol: float = RTOL) -> bool:
    return values_close(actual, expected, atol, rtol)


def _diagnose(actual: Tensor, candidates: dict[str, Tensor], name: str) -> None:
    """Raise with the hint of the first wrong-but-typical candidate that ``actual`` matches."""
    raise_if_matches(actual, candidates, name, ATOL, RTOL)


_call = call_reader


def _as_full(value: object, like: Tensor, name: str) -> Tensor:
    """A per-sample (B,) or broadcastable value, expanded to ``like``'s shape."""
    value = expect_tensor(value, name)
    if value.ndim == 1 and value.shape[0] == like.shape[0] and like.ndim > 1:
        value = value.view(-1, *([1] * (like.ndim - 1)))
    try:
        return value.expand_as(like)
    except RuntimeError:
        raise ExerciseError(
            f"{name}: shape {tuple(value.shape)} does not broadcast to x's shape {tuple(like.shape)}; "
            f"return one value per sample shaped ({like.shape[0]}, 1, 1, 1) or the full shape"
        ) from None


# ------------------------------------------------------------------------------ exercise 1: posterior
def check_posterior_mean_variance(fn: Callable) -> bool:
    """Check ``fn(x0, xt, t, betas) -> (mean, variance)`` against ``q_posterior_mean_variance``."""
    name = "posterior_mean_variance"
    gen = torch.Generator().manual_seed(2024)
    for desc, betas, t in _cases(1):
        B = t.shape[0]
        x0 = torch.rand(B, 2, 3, 3, generator=gen) * 2 - 1
        xt = torch.randn(B, 2, 3, 3, generator=gen)
        result = _call(fn, name, x0.clone(), xt.clone(), t.clone(), betas.copy())
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise ExerciseError(f"{name}: return a pair (mean, variance), got {type(result).__name__}")
        mean = expect_tensor(result[0], f"{name} mean")
        expect_shape(mean, x0.shape, f"{name} mean", "(B,C,H,W)")
        var = _as_full(result[1], x0, f"{name} variance")

        diffusion = GaussianDiffusion(betas, model_var_type="fixed_small")
        ref_mean, ref_var, _ = diffusion.q_posterior_mean_variance(x0, xt, t)
        tb = _tables(betas)
        b, a, ab, abp = (_at(tb[k], t, 4) for k in ("beta", "alpha", "abar", "abar_prev"))
        c1, c2 = abp.sqrt() * b / (1 - ab), a.sqrt() * (1 - abp) / (1 - ab)
        x0d, xtd = x0.double(), xt.double()
        ab_wrap = _at(torch.cat([tb["abar"][-1:], tb["abar"][:-1]]), t, 4)  # abar[t-1] with t=0 → abar[-1]
        if not _close(mean, ref_mean):
            _diagnose(
                mean,
                {
                    "the two coefficients are swapped — coef1 = √ᾱ_{t−1}·β_t/(1−ᾱ_t) multiplies x_0 and "
                    "coef2 = √α_t·(1−ᾱ_{t−1})/(1−ᾱ_t) multiplies x_t": c2 * x0d + c1 * xtd,
                    "looks like you used ᾱ_t where ᾱ_{t−1} belongs (an off-by-one in the cumulative product)": ab.sqrt()
                    * b
                    / (1 - ab)
                    * x0d
                    + a.sqrt() * (1 - ab) / (1 - ab) * xtd,
                    "looks like you used the one-step α_t where the cumulative ᾱ_{t−1} belongs": a.sqrt()
                    * b
                    / (1 - ab)
                    * x0d
                    + a.sqrt() * (1 - a) / (1 - ab) * xtd,
                    "a square root is missing: coef1 has √ᾱ_{t−1} and coef2 has √α_t": abp * b / (1 - ab) * x0d
                    + a * (1 - abp) / (1 - ab) * xtd,
                    "wrong at t = 0: there ᾱ_{t−1} must be 1 (x_{t−1} is x_0 itself), not ᾱ of the last step "
                    "(indexing [t−1] wraps around to −1)": ab_wrap.sqrt() * b / (1 - ab) * x0d
                    + a.sqrt() * (1 - ab_wrap) / (1 - ab) * xtd,
                },
                f"{name} mean ({desc})",
            )
            expect_close(
                mean,
                ref_mean,
                f"{name} mean ({desc})",
                ATOL,
                RTOL,
                hint="μ̃_t = coef1·x_0 + coef2·x_t with coef1 = √ᾱ_{t−1}β_t/(1−ᾱ_t), coef2 = √α_t(1−ᾱ_{t−1})/(1−ᾱ_t)",
            )
        if not _close(var, ref_var):
            _diagnose(
                var,
                {
                    "this is β_t (the 'fixed_large' choice of chapter 2), not the posterior variance "
                    "β̃_t = (1−ᾱ_{t−1})β_t/(1−ᾱ_t)": b.expand_as(x0),
                    "looks like you used ᾱ_t where ᾱ_{t−1} belongs in β̃_t": (b * (1 - ab) / (1 - ab)).expand_as(x0),
                    "wrong at t = 0: there ᾱ_{t−1} = 1, so β̃_0 = 0 (indexing [t−1] wraps around to −1)": (
                        b * (1 - ab_wrap) / (1 - ab)
                    ).expand_as(x0),
                    "this is the standard deviation √β̃_t; the exercise asks for the variance β̃_t": (
                        b * (1 - abp) / (1 - ab)
                    )
                    .sqrt()
                    .expand_as(x0),
                },
                f"{name} variance ({desc})",
            )
            expect_close(
                var,
                ref_var,
                f"{name} variance ({desc})",
                ATOL,
                RTOL,
                hint="β̃_t = (1−ᾱ_{t−1})·β_t/(1−ᾱ_t), and β̃ = 0 at t = 0",
            )
    return passed(name, "μ̃_t and β̃_t match q_posterior_mean_variance on two schedules, t = 0 … T−1")


# ---------------------------------------------------------------------------- exercise 2: ε → μ
def check_mu_from_eps(fn: Callable) -> bool:
    """Check ``fn(xt, t, eps, betas) -> μ`` against ``p_mean_variance`` of an ε-predicting model."""
    name = "mu_from_eps"
    gen = torch.Generator().manual_seed(7)
    for desc, betas, t in _cases(2):
        B = t.shape[0]
        xt = torch.randn(B, 1, 4, 4, generator=gen)
        eps = torch.randn(B, 1, 4, 4, generator=gen)
        mu = expect_tensor(_call(fn, name, xt.clone(), t.clone(), eps.clone(), betas.copy()), name)
        expect_shape(mu, xt.shape, name, "(B,C,H,W)")
        diffusion = GaussianDiffusion(betas, model_var_type="fixed_small")
        ref = diffusion.p_mean_variance(lambda x, s, e=eps: e, xt, t, clip_denoised=False).mean
        if _close(mu, ref):
            continue
        tb = _tables(betas)
        b, a, ab, abp = (_at(tb[k], t, 4) for k in ("beta", "alpha", "abar", "abar_prev"))
        x, e = xt.double(), eps.double()
        _diagnose(
            mu,
            {
                "you divided by √ᾱ_t; the mean of one reverse step divides by the one-step √α_t": (
                    x - b / (1 - ab).sqrt() * e
                )
                / ab.sqrt(),
                "the ε coefficient is β_t/√(1−ᾱ_t) — a square root is missing on (1−ᾱ_t)": (x - b / (1 - ab) * e)
                / a.sqrt(),
                "the ε coefficient is β_t/√(1−ᾱ_t), not √β_t/√(1−ᾱ_t)": (x - b.sqrt() / (1 - ab).sqrt() * e) / a.sqrt(),
                "sign error: μ_θ = (x_t − β_t/√(1−ᾱ_t)·ε_θ)/√α_t subtracts the predicted noise": (
                    x + b / (1 - ab).sqrt() * e
                )
                / a.sqrt(),
                "the whole bracket must be divided by √α_t": x - b / (1 - ab).sqrt() * e,
                "this is x̂_0, the predicted clean image; the exercise asks for the mean of x_{t−1}": (
                    x - (1 - ab).sqrt() * e
                )
                / ab.sqrt(),
            },
            f"{name} ({desc})",
        )
        expect_close(mu, ref, f"{name} ({desc})", ATOL, RTOL, hint="μ_θ = (x_t − β_t/√(1−ᾱ_t)·ε_θ)/√α_t")
    return passed(name, "μ_θ(x_t, ε_θ) matches p_mean_variance on two schedules, t = 0 … T−1")


# ------------------------------------------------------------------------ exercise 3: one reverse step
class _ToyEps:
    """A deterministic stand-in for ε_θ that depends on x and t (and records how it was called)."""

    def __init__(self, T: int) -> None:
        self.T = T
        self.calls: list[Tensor] = []

    def __call__(self, x: Tensor, t: Tensor, **_: object) -> Tensor:
        t = torch.as_tensor(t)
        self.calls.append(t.clone())
        tt = t.to(x.dtype).view(-1, *([1] * (x.ndim - 1))) if t.ndim else t.to(x.dtype)
        return 0.7 * torch.tanh(x) + 0.3 * tt / self.T


def check_p_step(fn: Callable) -> bool:
    """Check ``fn(model, xt, t, betas, noise) -> x_{t−1}`` against ``p_sample`` (Σ = β̃_t, no clipping)."""
    name = "p_step"
    gen = torch.Generator().manual_seed(11)
    for desc, betas, t in _cases(3):
        B = t.shape[0]
        xt = torch.randn(B, 1, 4, 4, generator=gen)
        noise = torch.randn(B, 1, 4, 4, generator=gen)
        model = _ToyEps(len(betas))
        out = expect_tensor(_call(fn, name, model, xt.clone(), t.clone(), betas.copy(), noise.clone()), name)
        expect_shape(out, xt.shape, name, "(B,C,H,W)")
        diffusion = GaussianDiffusion(betas, model_var_type="fixed_small")
        ref_model = _ToyEps(len(betas))
        ref = diffusion.p_sample(ref_model, xt, t, clip_denoised=False, noise=noise)["sample"]
        if _close(out, ref):
            continue
        if not model.calls:
            raise ExerciseError(f"{name} ({desc}): the model was never called — ε_θ = model(x_t, t) gives the noise")
        tb = _tables(betas)
        b, ab, abp = (_at(tb[k], t, 4) for k in ("beta", "abar", "abar_prev"))
        mean = diffusion.p_mean_variance(_ToyEps(len(betas)), xt, t, clip_denoised=False).mean.double()
        small = b * (1 - abp) / (1 - ab)
        at0 = (t == 0).view(-1, 1, 1, 1)
        z = noise.double()
        mask = (~at0).double()
        small_1 = float(tb["beta"][1] * (1 - tb["abar"][0]) / (1 - tb["abar"][1]))  # β̃ at index 1
        t0_hint = "no noise may be added at t = 0: the last step returns the mean μ_θ(x_1, 1) itself"
        _diagnose(
            out,
            {
                t0_hint: mean + torch.where(at0, torch.full_like(small, small_1), small).sqrt() * z,
                "no noise may be added at t = 0 (mask it out: x_0 = μ_θ(x_1, 1) exactly)": mean
                + torch.where(at0, b, small).sqrt() * z,
                "this step uses Σ = β_t (the 'fixed_large' choice); the exercise asks for Σ = β̃_t": mean
                + mask * b.sqrt() * z,
                "the noise must be scaled by the standard deviation √β̃_t, not by the variance β̃_t": mean
                + mask * small * z,
                "the noise term is missing: x_{t−1} = μ_θ + √β̃_t·z for t > 0": mean,
                "the noise term should be added, not subtracted": mean - mask * small.sqrt() * z,
            },
            f"{name} ({desc})",
        )
        expect_close(
            out,
            ref,
            f"{name} ({desc})",
            ATOL,
            RTOL,
            hint="x_{t−1} = μ_θ(x_t, t) + √β̃_t·z for t > 0 and μ_θ at t = 0, "
            "μ_θ = (x_t − β_t/√(1−ᾱ_t)·model(x_t, t))/√α_t",
        )
    return passed(name, "one ancestral step matches p_sample with the same noise, t = 0 … T−1")


# ------------------------------------------------------------------- exercise 4: the one-shot limit
def check_one_shot_limit(fn: Callable) -> bool:
    """Check ``fn(data) -> image``: what E[x_0 | x_T] is for pure noise x_T (the dataset mean)."""
    name = "one_shot_limit"
    gen = torch.Generator().manual_seed(5)
    # a small dataset with a clearly non-zero, non-symmetric mean (mean ≠ median)
    data = (torch.rand(40, 1, 5, 5, generator=gen) ** 3) * 2 - 1 + 0.3 * torch.linspace(0, 1, 25).view(1, 1, 5, 5)
    data = data.clamp(-1, 1)
    ans = expect_tensor(_call(fn, name, data.clone()), name)
    if ans.shape == (1,) + tuple(data.shape[1:]):
        ans = ans[0]
    if ans.numel() == 1:
        raise ExerciseError(
            f"{name}: a single number was returned; E[x_0|x_T] is an image — average over the "
            "dataset axis only (dim 0), not over the pixels too"
        )
    expect_shape(ans, data.shape[1:], name, "(C,H,W)")
    # what the exact denoiser actually returns at the last step of a 1000-step cosine process
    abar = GaussianDiffusion(cosine_betas(1000), model_var_type="fixed_small").alphas_cumprod
    x_T = torch.randn(8, *data.shape[1:], generator=gen)
    oneshot = OptimalDenoiser(data, abar).predict_xstart(x_T, torch.full((8,), 999))
    mean = data.mean(0)
    assert (oneshot - mean).abs().max() < 1e-3  # the fact behind the exercise
    if _close(ans, mean, atol=1e-4, rtol=1e-4):
        return passed(name, "from pure noise the exact denoiser returns the dataset mean")
    if _close(ans, torch.zeros_like(mean)):
        raise ExerciseError(
            f"{name}: zero is the mean of the noise x_T, but the denoiser returns an average of "
            "training images, weighted by how well each explains x_T"
        )
    if _close(ans, data.median(0).values):
        raise ExerciseError(f"{name}: the median minimises the L1 error; E[x_0|x_T] minimises the squared error")
    if any(_close(ans, d) for d in data):
        raise ExerciseError(
            f"{name}: a single training image is what you get at *low* noise; at t = T every "
            "image explains x_T equally well, so the weights w_i are all 1/N"
        )
    expect_close(ans, mean, name, 1e-4, 1e-4, hint="E[x_0|x_T] = Σ_i w_i x^(i) with every w_i = 1/N")
    return True  # pragma: no cover (expect_close raised)


# ---------------------------------------------------- prediction: which variance suits a 10-step chain?
def variance_study(steps: int = 10, n_data: int = 400, n_points: int = 500) -> dict[str, Any]:
    """Chapter 2 § 4.3 live: the exact denoiser of the moons sampled on a ``steps``-step chain.

    "spread": each fixed variance's sample spread over the data's; "small", "true", "large": β̃'_i, the true
    Var(x_{i−1} | x_i) (law of total variance from the exact posterior weights, averaged over x_i ~ q) and β'_i.
    """
    abar = GaussianDiffusion(cosine_betas(1000), model_var_type="fixed_small").alphas_cumprod
    data = make_toy_2d("moons", n_data, seed=0)
    denoiser, spread = OptimalDenoiser(data, abar), {}
    x_T = torch.randn(n_points, 2, generator=torch.Generator().manual_seed(2))
    for var in ("fixed_small", "fixed_large"):
        proc = create_diffusion(1000, "cosine", str(steps), model_var_type=var)
        samples = proc.p_sample_loop(denoiser, x_T.shape, noise=x_T, clip_denoised=False,
                                     generator=torch.Generator().manual_seed(4))
        spread[var] = mean_pairwise_distance(samples) / mean_pairwise_distance(data)
    gen, d, true_var = torch.Generator().manual_seed(12), data.double(), []
    x0 = d[torch.randint(0, n_data, (n_points,), generator=gen)]
    for i in range(1, proc.num_timesteps):
        x_i, t_i = proc.q_sample(x0, i, generator=gen), torch.full((n_points,), int(proc.timestep_map[i]))
        w = denoiser.posterior_weights(x_i, t_i)
        var_x0 = float((w @ d**2 - (w @ d) ** 2).mean())  # Var(x_0 | x_i), averaged
        true_var.append(proc.posterior_variance[i] + proc.posterior_mean_coef1[i] ** 2 * var_x0)
    return {"spread": spread, "small": proc.posterior_variance[1:], "true": np.array(true_var), "large": proc.betas[1:]}


def check_variance_prediction(closer_spread: Any, true_variance: Any) -> bool:
    """Check ``closer_spread`` ("fixed_small"/"fixed_large": whose 10-step samples spread most like the data) and
    ``true_variance`` ("below"/"between"/"above": the true reverse variance against β̃_t and β_t), computed live."""
    guess_var = expect_choice(closer_spread, ("fixed_small", "fixed_large"), "closer_spread")
    guess_pos = expect_choice(true_variance, ("below", "between", "above"), "true_variance")
    study = variance_study()
    spread, small, true, large = study["spread"], study["small"], study["true"], study["large"]
    truth_var = min(spread, key=lambda v: abs(spread[v] - 1.0))
    truth_pos = ("between" if all((small < true) & (true < large)) else "below" if all(true < small)
                 else "above" if all(true > large) else "mixed")
    frac, problems = (true - small) / (large - small), []
    if guess_var != truth_var:
        problems.append(
            f"closer_spread: {truth_var} comes closer — with 10 steps the fixed_small samples have "
            f"{spread['fixed_small']:.3f} of the data's spread, the fixed_large ones {spread['fixed_large']:.3f}. "
            "β̃_t is the noise left when x_0 is known; the sampler does not know x_0, and over a big step its "
            "uncertainty about x_0 adds variance that β̃_t leaves out, so that cloud comes out too narrow"
        )
    if guess_pos != truth_pos:
        problems.append(
            f"true_variance: it lies {truth_pos} β̃_t and β_t at the {len(frac)} steps (its position from β̃_t = 0 to "
            f"β_t = 1: {np.array2string(frac, precision=2)}). Var(x_{{t−1}}|x_t) = β̃_t + coef1²·Var(x_0|x_t) cannot "
            "be smaller than β̃_t, and β_t is the reverse variance of data that is itself N(0, I) — the two extreme "
            "cases of § 3.2; the moons are far more concentrated than that"
        )
    if problems:
        raise ExerciseError("\n".join(problems))
    return passed("variance prediction", f"spread / data's: fixed_small {spread['fixed_small']:.3f}, fixed_large "
                  f"{spread['fixed_large']:.3f}; the true variance lies {truth_pos} β̃_t and β_t at every step")
