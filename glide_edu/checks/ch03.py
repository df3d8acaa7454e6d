"""Checkers for the exercises of chapter 3 (L_simple).

* :func:`check_l_simple` — the L_simple training loss of one batch, E‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖²;
* :func:`check_elbo_weight` — the weight λ_t = β_t² / (2σ_t² α_t (1−ᾱ_t)) that L_simple drops;
* :func:`check_timestep_embedding` — the cos-first sinusoidal timestep embedding of the ADM UNet;
* :func:`check_weight_prediction` — a prediction: where the weight λ_t is smallest, and how much larger it is at
  t = 1 (cosine schedule, computed live).

Each checker calls the reader's function on fresh random inputs (two schedules; timesteps that include
0 and T−1), compares with the library (:meth:`GaussianDiffusion.training_losses`, the Gaussian KL of
:func:`glide_edu.losses.normal_kl`, :func:`glide_edu.nn.layers.timestep_embedding`) and, when the answer
is wrong, looks for the typical slips (swapped coefficients, x_0 as the target, a sum instead of a mean,
a missing factor ½, sin before cos, …) to say which one it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from glide_edu.checks import (
    ExerciseError,
    call_reader,
    expect_close,
    expect_integer,
    expect_shape,
    expect_tensor,
    passed,
    raise_if_matches,
    values_close,
)
from glide_edu.diffusion import GaussianDiffusion
from glide_edu.losses import normal_kl
from glide_edu.nn.layers import timestep_embedding as reference_timestep_embedding
from glide_edu.schedules import cosine_betas, linear_betas

__all__ = [
    "check_l_simple",
    "check_elbo_weight",
    "check_timestep_embedding",
    "check_weight_prediction",
    "elbo_weights_cosine",
    "ToyEpsModel",
]


# ------------------------------------------------------------------------------------------ helpers
def _schedules() -> list[tuple[str, np.ndarray]]:
    return [("cosine, T=50", cosine_betas(50)), ("linear, T=100", linear_betas(100))]


def _timesteps(T: int, gen: torch.Generator, n_random: int = 3) -> Tensor:
    """0, 1 and T−1 plus a few random indices (int64)."""
    return torch.cat([torch.tensor([0, 1, T - 1]), torch.randint(2, T - 1, (n_random,), generator=gen)]).long()


_close = values_close
_diagnose = raise_if_matches
_call = call_reader


def _as_tensor(value: object, name: str) -> Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return expect_tensor(value, name)


# ------------------------------------------------------------------------------- exercise 1: L_simple
class ToyEpsModel(nn.Module):
    """A small, deterministic, trainable stand-in for ε_θ(x_t, t) that records how it was called.

    ε_θ = conv3×3(x_t) + a·sin(t/T·π) — it depends on both inputs, has parameters (so the loss must stay
    differentiable) and remembers the (x_t, t) pairs it saw.
    """

    def __init__(self, channels: int, T: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.T = T
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(0.3 * torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.copy_(0.1 * torch.randn(self.conv.bias.shape, generator=gen))
        self.a = nn.Parameter(torch.tensor(0.4))
        self.calls: list[tuple[Tensor, Tensor]] = []

    def forward(self, x: Tensor, t: Tensor, **_: object) -> Tensor:
        t = torch.as_tensor(t)
        self.calls.append((x.detach().clone(), t.detach().clone()))
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        phase = torch.sin(t.to(x.dtype) / self.T * torch.pi).view(-1, *([1] * (x.ndim - 1)))
        return self.conv(x) + self.a * phase


def check_l_simple(fn: Callable) -> bool:
    """Check ``fn(model, x0, t, noise, alphas_cumprod) -> loss`` against ``training_losses(loss_type="simple")``.

    The loss must be one number (the mean over batch, channels and pixels) that stays differentiable.
    """
    name = "l_simple"
    gen = torch.Generator().manual_seed(303)
    for k, (desc, betas) in enumerate(_schedules()):
        T = len(betas)
        t = _timesteps(T, gen)
        B = t.shape[0]
        x0 = torch.rand(B, 2, 4, 4, generator=gen) * 2 - 1
        noise = torch.randn(B, 2, 4, 4, generator=gen)
        diffusion = GaussianDiffusion(betas, model_var_type="fixed_small")
        abar_np = diffusion.alphas_cumprod.copy()
        model = ToyEpsModel(2, T, seed=k)
        out = _call(fn, name, model, x0.clone(), t.clone(), noise.clone(), abar_np.copy())
        loss = _as_tensor(out, name)
        if loss.numel() == B and loss.ndim >= 1:
            raise ExerciseError(
                f"{name}: got one value per sample, shape {tuple(loss.shape)}; L_simple is a single "
                "number — average over the batch too (mean over every axis)"
            )
        if loss.numel() != 1:
            raise ExerciseError(f"{name}: expected a single number (a 0-d tensor), got shape {tuple(loss.shape)}")
        loss = loss.reshape(())

        ref_model = ToyEpsModel(2, T, seed=k)
        ref = diffusion.training_losses(ref_model, x0, t, noise=noise, loss_type="simple")["loss"].mean()
        if _close(loss, ref, 1e-5, 1e-4):
            if not loss.requires_grad:
                raise ExerciseError(
                    f"{name} ({desc}): the value is right but it carries no gradient — do not use "
                    ".item(), .detach(), NumPy or torch.no_grad() inside the loss, or "
                    "training cannot back-propagate through it"
                )
            grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
            if any(g is None for g in grads):
                raise ExerciseError(
                    f"{name} ({desc}): the loss does not depend on every model parameter; "
                    "call model(x_t, t) once on the noised batch"
                )
            continue
        if not model.calls:
            raise ExerciseError(f"{name} ({desc}): the model was never called — ε_θ = model(x_t, t)")
        seen_x, seen_t = model.calls[-1]
        if seen_t.shape == t.shape and not torch.equal(seen_t.long(), t):
            raise ExerciseError(
                f"{name} ({desc}): the model must receive the same integer timesteps t that "
                "noised the batch (got different values)"
            )

        # the typical slips, each recomputed with the reference model
        ab = torch.as_tensor(abar_np)[t].view(-1, 1, 1, 1)
        ab_wrap = torch.as_tensor(np.roll(abar_np, 1))[t].view(-1, 1, 1, 1)  # alphas_cumprod[t − 1]
        x0d, nd = x0.double(), noise.double()

        def run(x_in: Tensor, T: int = T, seed: int = k, t: Tensor = t) -> Tensor:
            return ToyEpsModel(2, T, seed=seed)(x_in.float(), t).detach().double()

        good_xt = ab.sqrt() * x0d + (1 - ab).sqrt() * nd
        eps_hat = run(good_xt)
        hint_coefs = "x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε: the signal gets √ᾱ_t and the noise √(1−ᾱ_t)"
        candidates = {
            "the two coefficients are swapped — " + hint_coefs: (
                (nd - run((1 - ab).sqrt() * x0d + ab.sqrt() * nd)) ** 2
            ).mean(),
            "square roots are missing — " + hint_coefs: ((nd - run(ab * x0d + (1 - ab) * nd)) ** 2).mean(),
            "looks like you used ᾱ_{t−1} (alphas_cumprod[t − 1]) — noise the batch with ᾱ_t = alphas_cumprod[t]": (
                (nd - run(ab_wrap.sqrt() * x0d + (1 - ab_wrap).sqrt() * nd)) ** 2
            ).mean(),
            "the target is the clean image x_0; with the ε-parameterisation the network predicts the noise ε": (
                (x0d - eps_hat) ** 2
            ).mean(),
            "the model was given the clean x_0; it must see the noised x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε": (
                (nd - run(x0d)) ** 2
            ).mean(),
            "this is a sum; L_simple averages the squared error over batch, channels and pixels (use .mean())": (
                (nd - eps_hat) ** 2
            ).sum(),
            "this sums over pixels and averages over the batch; the library (and this exercise) averages over "
            "every axis — use .mean()": ((nd - eps_hat) ** 2).flatten(1).sum(1).mean(),
            "this is an L1 (absolute) error; L_simple is the mean *squared* error": (nd - eps_hat).abs().mean(),
            "this is a root-mean-square; L_simple is the mean squared error itself (no square root)": (
                (nd - eps_hat) ** 2
            )
            .mean()
            .sqrt(),
        }
        _diagnose(loss, candidates, f"{name} ({desc})", 1e-5, 1e-4)
        if seen_x.shape == x0.shape and not _close(seen_x, good_xt, 1e-4, 1e-4):
            raise ExerciseError(
                f"{name} ({desc}): the model was not called on x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε "
                "(use the given noise and alphas_cumprod[t], one value per sample)"
            )
        expect_close(
            loss, ref, f"{name} ({desc})", 1e-5, 1e-4, hint="mean((noise − model(√ᾱ_t·x0 + √(1−ᾱ_t)·noise, t))²)"
        )
    return passed(name, "matches diffusion.training_losses(..., loss_type='simple') on two schedules")


# ------------------------------------------------------------------------ exercise 2: the ELBO weight
def _weight_cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(description, betas, σ²): Σ = β_t and Σ = β̃_t (β̃ of index 1 at index 0) on two schedules."""
    out = []
    for desc, betas in _schedules():
        d = GaussianDiffusion(betas, model_var_type="fixed_small")
        small = np.exp(d.posterior_log_variance_clipped)
        out.append((f"{desc}, σ² = β_t", betas, betas.copy()))
        out.append((f"{desc}, σ² = β̃_t", betas, small))
    return out


def kl_per_squared_error(betas: np.ndarray, sigma2: np.ndarray, seed: int = 0) -> np.ndarray:
    """KL(q(x_{t−1}|x_t,x_0) ‖ N(μ_θ, σ_t²)) − C_t divided by ‖ε − ε_θ‖², measured with ``normal_kl``.

    C_t, the part of the KL that does not involve the means, is removed by subtracting the KL at ε_θ = ε.
    """
    gen = torch.Generator().manual_seed(seed)
    d = GaussianDiffusion(betas, model_var_type="fixed_small")
    T = len(betas)
    x0 = torch.rand(T, 1, 3, 3, generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn(T, 1, 3, 3, generator=gen, dtype=torch.float64)
    eps_theta = eps + 0.3 * torch.randn(T, 1, 3, 3, generator=gen, dtype=torch.float64)
    shape = (-1, 1, 1, 1)
    b, a = torch.as_tensor(betas).view(shape), torch.as_tensor(1 - betas).view(shape)
    ab = torch.as_tensor(d.alphas_cumprod).view(shape)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    mean_q = (
        torch.as_tensor(d.posterior_mean_coef1).view(shape) * x0
        + torch.as_tensor(d.posterior_mean_coef2).view(shape) * x_t
    )
    logvar_q = torch.as_tensor(d.posterior_log_variance_clipped).view(shape).expand_as(x0)
    logvar_p = torch.as_tensor(np.log(sigma2)).view(shape).expand_as(x0)

    def kl(e: Tensor) -> Tensor:
        mu = (x_t - b / (1 - ab).sqrt() * e) / a.sqrt()
        return normal_kl(mean_q, logvar_q, mu, logvar_p).flatten(1).sum(1)

    return ((kl(eps_theta) - kl(eps)) / ((eps - eps_theta) ** 2).flatten(1).sum(1)).numpy()


def check_elbo_weight(fn: Callable) -> bool:
    """Check ``fn(betas, sigma2) -> λ`` (length T) against the Gaussian KL of every step."""
    name = "elbo_weight"
    for desc, betas, sigma2 in _weight_cases():
        T = len(betas)
        out = _call(fn, name, betas.copy(), sigma2.copy())
        if isinstance(out, (list, tuple)):
            out = np.asarray(out, dtype=np.float64)
        lam = _as_tensor(out, name).detach().double()
        expect_shape(lam, (T,), name, "(T,) — one weight per step")
        b = torch.as_tensor(betas)
        s2 = torch.as_tensor(sigma2)
        a = 1 - b
        ab = torch.cumprod(a, 0)
        ref = b**2 / (2 * s2 * a * (1 - ab))
        # the KL itself says the same (the fact behind the exercise)
        measured = torch.as_tensor(kl_per_squared_error(betas, sigma2))
        assert _close(measured, ref, 1e-9, 1e-6), "internal: λ_t does not match the KL"
        if _close(lam, ref, 1e-12, 1e-6):
            continue
        _diagnose(
            lam,
            {
                "a factor 2 is off: the Gaussian KL has 1/(2σ_t²), so λ_t = β_t²/(2σ_t²·α_t·(1−ᾱ_t))": 2 * ref,
                "the factor ½ is applied twice: λ_t = β_t²/(2σ_t²·α_t·(1−ᾱ_t))": ref / 2,
                "β_t must be squared: μ̃_t − μ_θ = β_t/(√α_t·√(1−ᾱ_t))·(ε_θ − ε), and the KL squares it": ref / b,
                "use the cumulative ᾱ_t in (1−ᾱ_t), not the one-step α_t": b**2 / (2 * s2 * a * (1 - a)),
                "(1−ᾱ_t) should not have a square root here — the square of 1/√(1−ᾱ_t) is 1/(1−ᾱ_t)": b**2
                / (2 * s2 * a * (1 - ab).sqrt()),
                "α_t is missing: μ_θ divides by √α_t, which becomes 1/α_t once squared": b**2 / (2 * s2 * (1 - ab)),
                "α_t should not have a square root here — (1/√α_t)² = 1/α_t": b**2 / (2 * s2 * a.sqrt() * (1 - ab)),
                "use the one-step α_t in the denominator, not the cumulative ᾱ_t": b**2 / (2 * s2 * ab * (1 - ab)),
                "σ_t² is the variance already; do not square it again": b**2 / (2 * s2**2 * a * (1 - ab)),
                "the variance σ_t² is missing from the denominator: λ_t = β_t²/(2σ_t²·α_t·(1−ᾱ_t))": b**2
                / (2 * a * (1 - ab)),
            },
            f"{name} ({desc})",
            1e-12,
            1e-6,
        )
        expect_close(lam, ref, f"{name} ({desc})", 1e-12, 1e-6, hint="λ_t = β_t²/(2σ_t²·α_t·(1−ᾱ_t))")
    return passed(name, "λ_t equals the KL per unit of squared ε-error on two schedules, for σ² = β and β̃")


# ------------------------------------------------------------------- exercise 3: timestep embedding
def check_timestep_embedding(fn: Callable) -> bool:
    """Check ``fn(t, dim) -> (B, dim)`` against :func:`glide_edu.nn.layers.timestep_embedding`."""
    name = "timestep_embedding"
    gen = torch.Generator().manual_seed(33)
    t = torch.cat([torch.tensor([0, 1, 999]), torch.randint(2, 999, (5,), generator=gen)]).long()
    atol, rtol = 2e-3, 0.0  # float32 arguments up to ~1000 rad: allow float64 answers too
    for dim in (8, 32, 128):
        emb = expect_tensor(_call(fn, name, t.clone(), dim), name)
        expect_shape(emb, (t.shape[0], dim), f"{name} (dim={dim})", "(B, dim)")
        ref = reference_timestep_embedding(t, dim)
        if _close(emb, ref, atol, rtol):
            continue
        half = dim // 2
        td = t.double()[:, None]
        k = torch.arange(half, dtype=torch.float64)
        args = td * torch.exp(-np.log(10000.0) * k / half)
        cos, sin = torch.cos(args), torch.sin(args)

        def with_freqs(freqs: Tensor, td: Tensor = td) -> Tensor:
            return torch.cat([torch.cos(td * freqs), torch.sin(td * freqs)], dim=1)

        _diagnose(
            emb,
            {
                "sin comes first here; this model puts the cosine half first: [cos(t·f_k)…, sin(t·f_k)…]": torch.cat(
                    [sin, cos], 1
                ),
                "the cos and sin values are interleaved (cos, sin, cos, sin, …); put all cosines first, "
                "then all sines": torch.stack([cos, sin], 2).flatten(1),
                "the frequencies are f_k = exp(−ln(10000)·k/half) with half = dim/2 — you divided by dim": with_freqs(
                    torch.exp(-np.log(10000.0) * k / dim)
                ),
                "the frequencies are f_k = exp(−ln(10000)·k/half) — dividing by half − 1 is another convention "
                "(diffusers' downscale_freq_shift=1), not this model's": with_freqs(
                    torch.exp(-np.log(10000.0) * k / max(half - 1, 1))
                ),
                "the frequencies decrease with k: f_k = exp(−ln(10000)·k/half), a minus sign is missing": with_freqs(
                    torch.exp(np.log(10000.0) * k / half)
                ),
                "the frequencies are f_k = 10000^(−k/half), i.e. exp(−ln(10000)·k/half); the log is missing":
                    with_freqs(torch.exp(-10000.0 * k / half)),
            },
            f"{name} (dim={dim})",
            atol,
            rtol,
        )
        expect_close(
            emb,
            ref,
            f"{name} (dim={dim})",
            atol,
            1e-3,
            hint="[cos(t·f_k) for k < half] + [sin(t·f_k) for k < half], f_k = exp(−ln(10000)·k/half)",
        )
    return passed(name, "matches glide_edu.nn.layers.timestep_embedding for dim = 8, 32, 128")


# ------------------------------------------------------ prediction: where is the ELBO's weight smallest?
def elbo_weights_cosine(T: int = 1000) -> np.ndarray:
    """λ_t = β_t²/(2 β̃_t α_t (1 − ᾱ_t)) of the cosine schedule with σ_t² = β̃_t, NaN at t = 0 (β̃_0 = 0)."""
    d = GaussianDiffusion(cosine_betas(T), model_var_type="fixed_small")
    lam = np.full(T, np.nan)
    lam[1:] = d.betas[1:] ** 2 / (2 * d.posterior_variance[1:] * (1 - d.betas[1:]) * (1 - d.alphas_cumprod[1:]))
    return lam


def check_weight_prediction(t_min_weight: object, weight_ratio_order: object, tolerance: int = 50) -> bool:
    """Check ``t_min_weight`` (where λ_t is smallest, within ``tolerance`` steps) and ``weight_ratio_order`` (the
    power of ten nearest to λ_1 / min λ) for the cosine schedule, T = 1000, σ_t² = β̃_t, computed live."""
    guess_t = expect_integer(t_min_weight, "t_min_weight")
    guess_order = expect_integer(weight_ratio_order, "weight_ratio_order")
    orders = (1, 10, 100, 1000, 10_000)
    if guess_order not in orders:
        raise ExerciseError(f"weight_ratio_order: choose one of {', '.join(map(str, orders))}, got {guess_order}")
    lam = elbo_weights_cosine()
    T, t_min = len(lam), int(np.nanargmin(lam))
    ratio = float(lam[1] / lam[t_min])
    order = 10 ** round(math.log10(ratio))
    abar = np.cumprod(1 - cosine_betas(T))
    crossing = int(np.argmax(abar / (1 - abar) <= 1))
    if not 1 <= guess_t <= T - 1:
        raise ExerciseError(f"t_min_weight: λ_t is defined for t = 1 … {T - 1}, got {guess_t}")
    problems = []
    if abs(guess_t - t_min) > tolerance:
        where = (
            f"near the start the SNR drops by a large factor per step (λ_1 = {lam[1]:.3f})"
            if guess_t < T // 10
            else f"near the end β_t is clipped at 0.999 and λ shoots up to {lam[-1]:.0f}"
            if guess_t > T - T // 10
            else f"{lam[guess_t] / lam[t_min]:.2f} times the minimum"
        )
        problems.append(
            f"t_min_weight: λ_t is smallest at t = {t_min} (λ = {lam[t_min]:.4f}); you said {guess_t}, where "
            f"λ = {lam[guess_t]:.4f} — {where}. λ_t = ½(SNR(t−1)/SNR(t) − 1) is half the relative drop of the SNR in "
            f"one step, so it is smallest where log-SNR falls slowest: for the cosine schedule, where SNR crosses 1 "
            f"(t = {crossing}, chapter 1, exercise 3)"
        )
    if guess_order != order:
        problems.append(
            f"weight_ratio_order: λ_1 / λ_min = {lam[1]:.3f} / {lam[t_min]:.4f} = {ratio:.0f}, about {order} "
            f"(you said {guess_order}) — the bound weights the first, imperceptible step that much more than the "
            "middle of the chain"
        )
    if problems:
        raise ExerciseError("\n".join(problems))
    return passed("weight prediction", f"λ_t is smallest at t = {t_min}, and λ_1 is {ratio:.0f} times that minimum")
