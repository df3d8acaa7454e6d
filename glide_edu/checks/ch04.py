"""Checkers for the exercises of chapter 4 (the hybrid loss and fast sampling).

* :func:`check_learned_log_variance` — Improved DDPM's learned range,
  log Σ_θ = v·log β_t + (1 − v)·log β̃_t with the fraction v = (u + 1)/2 of the raw output u;
* :func:`check_respace_betas` — the betas of a respaced process, β'_i = 1 − ᾱ_{s_i}/ᾱ_{s_{i−1}};
* :func:`check_ddim_step` — one DDIM update with a given η;
* :func:`check_respacing_prediction` — a prediction: the last step ``"ddim25"`` keeps, and whether the two fixed
  variances of a 10-step chain move apart (computed live from ``space_timesteps`` and ``SpacedDiffusion``).

Each checker calls the reader's function on fresh random inputs, compares with the library
(:meth:`GaussianDiffusion.p_mean_variance`, :class:`SpacedDiffusion`, :meth:`ddim_sample`) and, when the
answer is wrong, looks for the typical slips to say which one it is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from glide_edu.checks import (
    ExerciseError,
    call_reader,
    expect_choice,
    expect_close,
    expect_integer,
    expect_shape,
    expect_tensor,
    passed,
    raise_if_matches,
    values_close,
)
from glide_edu.diffusion import GaussianDiffusion
from glide_edu.respace import SpacedDiffusion, space_timesteps
from glide_edu.schedules import cosine_betas, linear_betas

__all__ = [
    "check_learned_log_variance",
    "check_respace_betas",
    "check_ddim_step",
    "check_respacing_prediction",
    "variance_ratio",
]

ATOL = 1e-4
RTOL = 1e-4


# ------------------------------------------------------------------------------------------ helpers
def _close(actual: Tensor, expected: Tensor, atol: float = ATOL, rtol: float = RTOL) -> bool:
    return values_close(actual, expected, atol, rtol)


def _diagnose(actual: Tensor, candidates: dict[str, Tensor], name: str) -> None:
    raise_if_matches(actual, candidates, name, ATOL, RTOL)


_call = call_reader


def _as_tensor(value: object, name: str) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    value = expect_tensor(value, name)
    if value.is_complex():
        raise ExerciseError(
            f"{name}: the result has complex values — a square root of a negative number. Check the order of "
            "ᾱ_t and ᾱ_{t−1} (ᾱ_{t−1} > ᾱ_t, so 1 − ᾱ_t/ᾱ_{t−1} > 0); are they swapped?"
        )
    return value


def _schedules() -> list[tuple[str, np.ndarray]]:
    return [("cosine, T=60", cosine_betas(60)), ("linear, T=100", linear_betas(100))]


# ------------------------------------------------------------------- exercise 1: learned-range Σ_θ
def check_learned_log_variance(fn: Callable) -> bool:
    """Check ``fn(u, t, betas) -> log Σ_θ`` against ``p_mean_variance`` with ``learned_range``."""
    name = "learned_log_variance"
    gen = torch.Generator().manual_seed(404)
    for desc, betas in _schedules():
        T = len(betas)
        t = torch.cat([torch.tensor([0, 1, T - 1]), torch.randint(2, T - 1, (3,), generator=gen)]).long()
        B = t.shape[0]
        u = torch.rand(B, 1, 3, 3, generator=gen) * 2 - 1
        u[0, 0, 0, 0], u[1, 0, 0, 0], u[2, 0, 0, 1] = -1.0, 1.0, 0.0  # the two ends and the middle
        out = _as_tensor(_call(fn, name, u.clone(), t.clone(), betas.copy()), name)
        expect_shape(out, u.shape, name, "(B,C,H,W)")
        diffusion = GaussianDiffusion(betas, model_var_type="learned_range")
        ref = diffusion.p_mean_variance(
            lambda x, s, u=u: torch.cat([torch.zeros_like(u), u], dim=1), torch.zeros_like(u), t, clip_denoised=False
        ).log_variance
        if _close(out, ref):
            continue
        at0 = (t == 0).view(-1, 1, 1, 1)
        if not torch.isfinite(out[~at0.expand_as(out)]).all():
            raise ExerciseError(f"{name} ({desc}): NaN or inf for t > 0 — check the logs of β_t and β̃_t")
        if not torch.isfinite(out).all():
            raise ExerciseError(
                f"{name} ({desc}): NaN or inf at t = 0. There β̃_0 = 0 and log β̃_0 = −∞; use β̃ of index 1 "
                "instead (the library's 'posterior_log_variance_clipped')"
            )
        b = torch.as_tensor(betas, dtype=torch.float64)
        abar = torch.cumprod(1 - b, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        tilde = b * (1 - abar_prev) / (1 - abar)
        tilde_clipped = torch.cat([tilde[1:2], tilde[1:]])
        lb = b.log()[t].view(-1, 1, 1, 1)
        lt = tilde_clipped.log()[t].view(-1, 1, 1, 1)
        lt_beta0 = torch.where(at0, lb, lt)  # a different patch at t = 0
        ud = u.double()
        frac = (ud + 1) / 2  # the fraction v
        _diagnose(out, {
            "the network's raw output u lies in [−1, 1]; turn it into the fraction first, v = (u + 1)/2":
                ud * lb + (1 - ud) * lt,
            "the ends are swapped: u = +1 (v = 1) must give Σ = β_t and u = −1 (v = 0) must give Σ = β̃_t":
                frac * lt + (1 - frac) * lb,
            "interpolate the *log*-variances (a geometric mean of β_t and β̃_t), not the variances: "
            "log Σ = v·log β_t + (1−v)·log β̃_t": torch.log(frac * lb.exp() + (1 - frac) * lt.exp()),
            "this is Σ itself; the exercise asks for log Σ": (frac * lb + (1 - frac) * lt).exp(),
            "right for t > 0, but at t = 0 the library uses β̃ of index 1 (not β_0) for the lower end":
                frac * lb + (1 - frac) * lt_beta0,
        }, f"{name} ({desc})")
        expect_close(out, ref, f"{name} ({desc})", ATOL, RTOL,
                     hint="log Σ = v·log β_t + (1−v)·log β̃_t, v = (u+1)/2, β̃_t = (1−ᾱ_{t−1})β_t/(1−ᾱ_t), "
                          "with β̃ of index 1 at t = 0")
    return passed(name, "log Σ_θ matches p_mean_variance (learned_range) on two schedules, t = 0 … T−1")


# ---------------------------------------------------------------------- exercise 2: respaced betas
def check_respace_betas(fn: Callable) -> bool:
    """Check ``fn(alphas_cumprod, kept_steps) -> betas'`` against :class:`SpacedDiffusion`."""
    name = "respace_betas"
    rng = np.random.default_rng(7)
    for desc, betas in _schedules():
        T = len(betas)
        abar = np.cumprod(1 - betas)
        for spec in ("10", "4,3", "ddim5"):
            kept = sorted(space_timesteps(T, spec))
            shuffled = list(rng.permutation(kept))  # the reader must sort
            got = _as_tensor(_call(fn, name, abar.copy(), shuffled), name).double().flatten()
            where = f"{name} ({desc}, respacing {spec!r})"
            if got.numel() != len(kept):
                raise ExerciseError(
                    f"{where}: {len(kept)} betas expected (one per kept step), got {got.numel()}"
                    + (" — the first kept step needs a beta too: ᾱ before it is 1" if got.numel() == len(kept) - 1
                       else "")
                )
            ref = torch.from_numpy(SpacedDiffusion(kept, betas).betas)
            if _close(got, ref, atol=1e-9, rtol=1e-7):
                continue
            a = torch.from_numpy(abar[kept])
            prev_one = torch.cat([torch.ones(1, dtype=torch.float64), a[:-1]])
            prev_self = torch.cat([a[:1], a[:-1]])
            unsorted_a = torch.from_numpy(abar[shuffled])
            unsorted_prev = torch.cat([torch.ones(1, dtype=torch.float64), unsorted_a[:-1]])
            _diagnose(got, {
                "these are the original β at the kept steps; a respaced step jumps over several original "
                "steps, so β'_i = 1 − ᾱ_{s_i}/ᾱ_{s_{i−1}}": torch.from_numpy(betas[kept]),
                "the ratio is upside down: β'_i = 1 − ᾱ_{s_i}/ᾱ_{s_{i−1}} (ᾱ decreases, so β' > 0)":
                    1 - prev_one / a,
                "wrong first beta: before the first kept step ᾱ is 1 (the clean image), so β'_0 = 1 − ᾱ_{s_0}":
                    1 - a / prev_self,
                "these are ᾱ at the kept steps; the exercise asks for the betas β'_i = 1 − ᾱ_{s_i}/ᾱ_{s_{i−1}}": a,
                "sort the kept steps first (a set, or a shuffled list, has no order)": 1 - unsorted_a / unsorted_prev,
            }, where)
            expect_close(got, ref, where, 1e-9, 1e-7, hint="β'_i = 1 − ᾱ_{s_i}/ᾱ_{s_{i−1}} with ᾱ_{s_{−1}} = 1")
    return passed(name, "the respaced betas reproduce ᾱ at the kept steps (three respacings, two schedules)")


# ---------------------------------------------------------------------------- exercise 3: DDIM step
def check_ddim_step(fn: Callable) -> bool:
    """Check ``fn(x_t, eps, abar_t, abar_prev, eta, noise) -> x_{t−1}`` against ``ddim_sample`` (no clipping)."""
    name = "ddim_step"
    gen = torch.Generator().manual_seed(31)
    betas = cosine_betas(100)
    diffusion = GaussianDiffusion(betas, model_var_type="fixed_small")
    for eta in (0.0, 0.5, 1.0):
        for t in (1, 40, 90):
            x = torch.randn(4, 1, 3, 3, generator=gen, dtype=torch.float64)
            eps = torch.randn(4, 1, 3, 3, generator=gen, dtype=torch.float64)
            z = torch.randn(4, 1, 3, 3, generator=gen, dtype=torch.float64)
            ab, abp = float(diffusion.alphas_cumprod[t]), float(diffusion.alphas_cumprod_prev[t])
            out = _as_tensor(_call(fn, name, x.clone(), eps.clone(), ab, abp, eta, z.clone()), name)
            expect_shape(out, x.shape, name, "(B,C,H,W)")
            ref = diffusion.ddim_sample(lambda xx, tt, e=eps: e.float(), x.float(), torch.full((4,), t),
                                        clip_denoised=False, eta=eta, noise=z.float())["sample"].double()
            where = f"{name} (t = {t}, η = {eta})"
            if _close(out, ref):
                continue
            x0 = (x - (1 - ab) ** 0.5 * eps) / ab**0.5
            sigma = eta * ((1 - abp) / (1 - ab)) ** 0.5 * (1 - ab / abp) ** 0.5
            sigma_half = eta * (1 - ab / abp) ** 0.5
            _diagnose(out, {
                "this is x̂_0, the predicted clean image; the step continues to x_{t−1} = √ᾱ_{t−1}·x̂_0 + …": x0,
                "the direction term must shrink when noise is added: √(1 − ᾱ_{t−1} − σ_t²)·ε, not √(1 − ᾱ_{t−1})·ε":
                    abp**0.5 * x0 + (1 - abp) ** 0.5 * eps + sigma * z,
                "σ_t = η·√((1−ᾱ_{t−1})/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_{t−1}) — the first square-root factor is missing":
                    abp**0.5 * x0 + (1 - abp - sigma_half**2) ** 0.5 * eps + sigma_half * z,
                "the noise term σ_t·z is missing (it vanishes only for η = 0)":
                    abp**0.5 * x0 + (1 - abp - sigma**2) ** 0.5 * eps,
                "ᾱ_t and ᾱ_{t−1} are swapped (x̂_0 uses ᾱ_t, the new state ᾱ_{t−1})":
                    ab**0.5 * (x - (1 - abp) ** 0.5 * eps) / abp**0.5 + (1 - ab) ** 0.5 * eps,
            }, where)
            expect_close(out, ref, where, ATOL, RTOL,
                         hint="x̂_0 = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t; x_{t−1} = √ᾱ_{t−1}·x̂_0 + √(1−ᾱ_{t−1}−σ_t²)·ε + σ_t·z")
    return passed(name, "the DDIM update matches ddim_sample for η = 0, 0.5 and 1")


# ---------------------------------------------------------- prediction: what does a respacing keep?
def variance_ratio(steps: int | str, T: int = 1000) -> float:
    """Median over the steps i ≥ 1 of β'_i / β̃'_i for a ``steps``-step respacing of the cosine schedule."""
    kept = sorted(space_timesteps(T, str(steps)))
    d = SpacedDiffusion(kept, cosine_betas(T), model_var_type="fixed_small")
    return float(np.median(d.betas[1:] / d.posterior_variance[1:]))


def check_respacing_prediction(last_kept_ddim25: object, fixed_variances_10: object, T: int = 1000) -> bool:
    """Check ``last_kept_ddim25`` (the last original step kept by ``"ddim25"``) and ``fixed_variances_10``
    ("closer"/"apart": β'_i and β̃'_i of a 10-step chain compared with the full chain), computed live."""
    guess_last = expect_integer(last_kept_ddim25, "last_kept_ddim25")
    guess_gap = expect_choice(fixed_variances_10, ("closer", "apart"), "fixed_variances_10")
    kept = sorted(space_timesteps(T, "ddim25"))
    abar = np.cumprod(1 - cosine_betas(T))
    r_full, r_10 = variance_ratio(T, T), variance_ratio(10, T)
    problems = []
    if guess_last != kept[-1]:
        stride = kept[1] - kept[0]
        why = {
            T - 1: f"{T - 1} is kept by the plain '25', which keeps both ends",
            T: f"the steps are 0-based, {T - 1} is the last one — and 'ddim25' does not even reach it",
        }.get(guess_last, f"the stride is {T} // 25 = {stride}, from 0")
        problems.append(
            f"last_kept_ddim25: {why}. 'ddimN' keeps range(0, {T}, {stride}) = 0, {stride}, …, {kept[-1]}, so a "
            f"chain respaced this way starts from x_{kept[-1]} (ᾱ = {abar[kept[-1]]:.1e}), not x_{T - 1} "
            f"(ᾱ = {abar[T - 1]:.1e}): it treats pure noise as if a trace of signal were left"
        )
    if guess_gap != ("apart" if r_10 > r_full else "closer"):
        problems.append(
            f"fixed_variances_10: they move {'apart' if r_10 > r_full else 'closer'} — the median β'_i/β̃'_i is "
            f"{r_10:.2f} with 10 steps against {r_full:.4f} with all {T}. β̃'_i/β'_i = (1 − ᾱ'_{{i−1}})/(1 − ᾱ'_i), and "
            "over a big step ᾱ changes a lot; that is why the choice of Σ matters with few steps (§ 7)"
        )
    if problems:
        raise ExerciseError("\n".join(problems))
    return passed("respacing prediction", f"'ddim25' ends at step {kept[-1]}; median β'/β̃' is {r_10:.2f} with 10 "
                  f"steps and {r_full:.4f} with {T}")
