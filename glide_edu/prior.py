"""The data-mean prior at the top of the schedule: x̂₀ = μ where an ε-prediction cannot carry the mean.

GLIDE's networks predict ε, and the model's guess of the clean picture is read back through

    x̂₀ = (x_t − √(1 − ᾱ_t) · ε̂) / √ᾱ_t .

With the cosine schedule ᾱ_999 ≈ 2.4·10⁻⁹: an error of 10⁻⁴ in ε̂ moves x̂₀ by about 2, so near t = T the
x̂₀ a network reports is noise (then clipped to [−1, 1]), and the loss never teaches it otherwise (the same
error costs 10⁻⁸ of mean-squared ε). For photographs this does not matter: their mean is near 0, the middle
of [−1, 1], which is also where a clipped noise field averages. For pictures on white (the book's emoji and
shapes, mean ≈ +0.7) it does: the first sampling steps leave x_t with a mean of 0 where noised training
pictures have a positive one, a few steps later the network (rightly) reads that mean as evidence for a dark,
colourful picture, and the samples become colour fields. That ε-prediction breaks down at (near) zero
signal-to-noise ratio is also argued, with a different cure (v-prediction), in "Common Diffusion Noise
Schedules and Sample Steps are Flawed", Lin, Liu, Li and Yang, WACV 2024, https://arxiv.org/abs/2305.08891.

The cure here keeps GLIDE's network and loop: above a timestep ``above_t`` the model's ε̂ is replaced by the
ε̂ whose x̂₀ is the data mean μ — the Bayes answer E[x₀ | x_t] when x_t carries (almost) no information:

    ε̂_prior = (x_t − √ᾱ_t · μ) / √(1 − ᾱ_t),   t > above_t .

The learned-variance channels are left as the network's. At t = 800 (√ᾱ ≈ 0.31 for the cosine schedule)
the network takes over. μ is per channel (R, G, B in [−1, 1]); checkpoints name it in their options
(``x0_prior_mean``, optionally ``x0_prior_above_t``); the released GLIDE files have none, and nothing
changes for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["X0_PRIOR_ABOVE_T", "check_prior", "data_mean", "x0_prior"]

X0_PRIOR_ABOVE_T = 800  # above it, x̂₀ = μ; see the module docstring


def data_mean(images: Tensor, weights: Tensor | None = None) -> tuple[float, ...]:
    """μ per channel of ``images`` (N, C, H, W) in [−1, 1], each weighted by ``weights`` (N,) (default
    uniform) — the mean picture a training batch drawn with those weights has."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    per_image = images.float().mean(dim=(2, 3))  # (N, C)
    w = torch.ones(len(images)) if weights is None else weights.float()
    if w.shape != (len(images),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be (N,) non-negative with a positive sum")
    return tuple(float(v) for v in (w[:, None] * per_image).sum(0) / w.sum())


def check_prior(mean: Sequence[float], above_t: int, num_timesteps: int, channels: int = 3
                ) -> tuple[tuple[float, ...], int]:
    """(mean, above_t) checked: ``channels`` finite values in [−1, 1] and 0 ≤ above_t < num_timesteps."""
    try:
        values = tuple(float(v) for v in mean)
    except (TypeError, ValueError):
        raise ValueError(f"x0_prior_mean must be {channels} numbers (the data's mean per channel in [-1, 1]), "
                         f"got {mean!r}") from None
    if len(values) != channels or not all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in values):
        raise ValueError(f"x0_prior_mean must be {channels} numbers in [-1, 1] (the data's mean per channel), "
                         f"got {list(values)}")
    if isinstance(above_t, bool) or not isinstance(above_t, (int, np.integer)) or not 0 <= above_t < num_timesteps:
        raise ValueError(f"x0_prior_above_t must be an integer timestep in [0, {num_timesteps}), got {above_t!r}")
    return values, int(above_t)


def x0_prior(model: Callable[..., Tensor], alphas_cumprod: Sequence[float] | np.ndarray, mean: Sequence[float],
             above_t: int = X0_PRIOR_ABOVE_T, eps_channels: int = 3) -> Callable[..., Tensor]:
    """``model`` with ε̂ (its first ``eps_channels`` channels) replaced by (x_t − √ᾱ_t μ)/√(1 − ᾱ_t) on the rows
    whose timestep exceeds ``above_t``.

    ``alphas_cumprod``: ᾱ of the **unrespaced** schedule; the wrapped model must receive original timesteps
    (as a respaced diffusion gives its model). Wrap the network before classifier-free guidance: both halves
    then agree above ``above_t``, and the guided ε̂ is the prior's too.
    """
    mean, above_t = check_prior(mean, above_t, len(alphas_cumprod), eps_channels)
    abar = torch.as_tensor(np.asarray(alphas_cumprod, dtype=np.float64))

    def model_fn(x_t: Tensor, ts: Tensor, **kwargs: Any) -> Tensor:
        out = model(x_t, ts, **kwargs)  # (B, eps_channels [+ variance], H, W)
        top = ts > above_t  # (B,)
        if not bool(top.any()):
            return out
        a = abar.to(x_t.device)[ts].to(x_t.dtype).view(-1, 1, 1, 1)  # ᾱ_t per row
        mu = torch.tensor(mean, dtype=x_t.dtype, device=x_t.device).view(1, -1, 1, 1)
        eps_prior = (x_t - a.sqrt() * mu) / (1.0 - a).sqrt()  # x̂₀ = μ
        eps = torch.where(top.view(-1, 1, 1, 1), eps_prior.to(out.dtype), out[:, :eps_channels])
        return torch.cat([eps, out[:, eps_channels:]], dim=1)

    return model_fn
