"""Chapter 1 only: the pure functions behind its widgets (schedule curves, an image noised to any step).

A widget cell is a thin ipywidgets shell (sliders, dropdowns, a plot) around one function here. The function
takes plain values (tensors, integers, schedule names) and returns plain values (tensors, floats, a readout
string); it never draws and never reads widget state. The chapter can therefore call it directly and
``assert`` on the result, which is how an automated run checks the logic behind a slider nobody moves —
the pattern every chapter's widget follows (see docs/architecture.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from glide_edu.diffusion import GaussianDiffusion
from glide_edu.schedules import get_named_beta_schedule

__all__ = [
    "ScheduleCurves",
    "NoisedView",
    "diffusion_for",
    "schedule_curves",
    "noised_view",
]


# ---------------------------------------------------------------------------------------------------
# Chapter 1 — the forward process
# ---------------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def diffusion_for(schedule: str, num_timesteps: int = 1000) -> GaussianDiffusion:
    """A (cached) :class:`GaussianDiffusion` for a named schedule; only its forward tables are used here.

    Cached so that a slider does not rebuild the tables on every move. Treat the result as read-only.
    """
    betas = get_named_beta_schedule(schedule, num_timesteps)
    return GaussianDiffusion(betas, model_mean_type="epsilon", model_var_type="fixed_small")


@dataclass(frozen=True)
class ScheduleCurves:
    """The per-step tables of one schedule, as float64 arrays of length T (index t = 0 … T−1)."""

    name: str
    fraction: np.ndarray  # (t + 1) / T, the position along the chain in (0, 1]
    betas: np.ndarray  # β_t
    alphas_cumprod: np.ndarray  # ᾱ_t
    log_snr: np.ndarray  # log(ᾱ_t / (1 − ᾱ_t)), natural log


def schedule_curves(schedule: str, num_timesteps: int = 1000) -> ScheduleCurves:
    """β_t, ᾱ_t and log-SNR of a named schedule, for plotting (new arrays; safe to modify)."""
    d = diffusion_for(schedule, num_timesteps)
    abar = d.alphas_cumprod.copy()
    return ScheduleCurves(
        name=schedule,
        fraction=np.arange(1, num_timesteps + 1, dtype=np.float64) / num_timesteps,
        betas=d.betas.copy(),
        alphas_cumprod=abar,
        log_snr=np.log(abar) - np.log1p(-abar),
    )


@dataclass(frozen=True)
class NoisedView:
    """What the forward-process widget shows for one position of its slider."""

    x0: Tensor  # the clean images, (N, C, H, W) in [−1, 1]
    noise: Tensor  # the ε used, same shape
    x_t: Tensor  # √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, same shape (not clipped)
    t: int
    schedule: str
    num_timesteps: int
    alpha_bar: float  # ᾱ_t
    snr: float  # ᾱ_t / (1 − ᾱ_t)

    @property
    def signal_scale(self) -> float:
        """√ᾱ_t, the factor in front of x_0."""
        return math.sqrt(self.alpha_bar)

    @property
    def noise_scale(self) -> float:
        """√(1−ᾱ_t), the standard deviation of the noise added to x_0."""
        return math.sqrt(1.0 - self.alpha_bar)

    @property
    def log_snr(self) -> float:
        return math.log(self.alpha_bar) - math.log1p(-self.alpha_bar)

    def readout(self) -> str:
        """One line for the widget: t, ᾱ_t, the two scales and the SNR."""
        return (
            f"{self.schedule}, t = {self.t}/{self.num_timesteps - 1}:  ᾱ_t = {self.alpha_bar:.4g},  "
            f"x_t = {self.signal_scale:.3f}·x_0 + {self.noise_scale:.3f}·ε,  "
            f"SNR = {self.snr:.3g} (log-SNR = {self.log_snr:+.2f})"
        )


def noised_view(
    x0: Tensor,
    t: int,
    schedule: str = "linear",
    num_timesteps: int = 1000,
    noise: Tensor | None = None,
    seed: int = 0,
) -> NoisedView:
    """Noise ``x0`` (N, C, H, W) to step ``t`` of a named schedule in one shot, x_t ~ q(x_t | x_0).

    Without ``noise``, ε is drawn from a generator seeded with ``seed``, so moving a slider over t (or
    switching the schedule) keeps the *same* ε and only changes how much of it is mixed in.
    """
    if not isinstance(x0, Tensor) or x0.ndim != 4:
        shape = tuple(x0.shape) if isinstance(x0, Tensor) else type(x0).__name__
        raise ValueError(f"x0 must be an (N, C, H, W) tensor, got {shape}")
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= int(t) < num_timesteps:
        raise ValueError(f"t must be an integer in 0..{num_timesteps - 1}, got {t!r}")
    t = int(t)
    d = diffusion_for(schedule, num_timesteps)
    if noise is None:
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(x0.shape, generator=gen, dtype=x0.dtype).to(x0.device)
    x_t = d.q_sample(x0, t, noise=noise)
    abar = float(d.alphas_cumprod[t])
    return NoisedView(
        x0=x0,
        noise=noise,
        x_t=x_t,
        t=t,
        schedule=schedule,
        num_timesteps=num_timesteps,
        alpha_bar=abar,
        snr=abar / (1.0 - abar),
    )
