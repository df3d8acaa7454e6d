"""Noise schedules β_1 … β_T of the forward process q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t I).

Every table here is a float64 NumPy array, exactly as the reference code keeps them; the diffusion class
casts to float32 only when it applies a coefficient to a tensor (which also makes it work on Apple MPS,
which has no float64).

* ``linear`` — DDPM's schedule, β from 1e-4 to 0.02, rescaled by 1000/T so that any T gives a process
  of the same overall strength.
* ``cosine`` (alias ``squaredcos_cap_v2``, diffusers' name for GLIDE's schedule) — Improved DDPM's
  ᾱ(s) = cos²((s + 0.008)/1.008 · π/2), with β_t = min(1 − ᾱ(t/T)/ᾱ((t−1)/T), 0.999).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

SCHEDULE_NAMES = ("linear", "cosine", "squaredcos_cap_v2")


def _check_num_timesteps(num_timesteps: int) -> int:
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)):
        raise ValueError(f"num_timesteps must be an integer >= 1, got {num_timesteps!r}")
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}; use e.g. 1000")
    return int(num_timesteps)


def linear_betas(num_timesteps: int) -> np.ndarray:
    """DDPM's linear schedule β_t ∈ [1e-4, 0.02]·(1000/T) as a float64 array of length T."""
    num_timesteps = _check_num_timesteps(num_timesteps)
    scale = 1000 / num_timesteps
    if scale * 0.02 >= 1.0:
        raise ValueError(
            f"the linear schedule needs num_timesteps > 20 (its last beta is 20/T = {scale * 0.02:g}, "
            "which must be < 1); use more steps or the cosine schedule"
        )
    return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)


def betas_for_alpha_bar(num_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999) -> np.ndarray:
    """Discretise a continuous ᾱ(s), s ∈ [0, 1], into β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), max_beta)."""
    num_timesteps = _check_num_timesteps(num_timesteps)
    betas = [
        min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
        for i in range(num_timesteps)
    ]
    return np.array(betas, dtype=np.float64)


def cosine_alpha_bar(s: float, offset: float = 0.008) -> float:
    """Improved DDPM's ᾱ(s) = cos²((s + 0.008)/(1 + 0.008) · π/2) for s ∈ [0, 1]."""
    return math.cos((s + offset) / (1 + offset) * math.pi / 2) ** 2


def cosine_betas(num_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """GLIDE's ``squaredcos_cap_v2`` schedule (s = 0.008, β capped at 0.999)."""
    return betas_for_alpha_bar(num_timesteps, cosine_alpha_bar, max_beta)


def betas_from_array(betas: Sequence[float] | np.ndarray) -> np.ndarray:
    """Validate explicit betas: a non-empty 1-D sequence with every 0 < β_t < 1.

    β_t = 1 would make ᾱ_t = 0 and the x_0-prediction 1/√ᾱ_t infinite, so it is refused.
    """
    arr = np.asarray(betas, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"betas must be a non-empty 1-D sequence, got shape {arr.shape}")
    ok = np.isfinite(arr) & (arr > 0) & (arr < 1)
    if not np.all(ok):
        raise ValueError(f"every beta must satisfy 0 < beta < 1; offending values: {arr[~ok][:5].tolist()}")
    return arr


def get_named_beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """β_1…β_T for a schedule name: ``linear``, ``cosine`` or ``squaredcos_cap_v2`` (same as cosine)."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key == "linear":
        return linear_betas(num_timesteps)
    if key in ("cosine", "squaredcos_cap_v2"):
        return cosine_betas(num_timesteps)
    raise ValueError(f"unknown noise schedule {name!r}; choose one of {', '.join(SCHEDULE_NAMES)}")


def make_betas(schedule: str | Sequence[float] | np.ndarray, num_timesteps: int | None = None) -> np.ndarray:
    """β table from a schedule name (needs ``num_timesteps``) or from explicit betas."""
    if isinstance(schedule, str):
        if num_timesteps is None:
            raise ValueError(f"schedule {schedule!r} needs num_timesteps (e.g. 1000)")
        return get_named_beta_schedule(schedule, num_timesteps)
    betas = betas_from_array(schedule)
    if num_timesteps is not None and num_timesteps != len(betas):
        raise ValueError(f"got {len(betas)} explicit betas but num_timesteps={num_timesteps}")
    return betas


def alphas_cumprod(betas: np.ndarray) -> np.ndarray:
    """ᾱ_t = ∏_{s≤t} (1 − β_s), float64."""
    return np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))


def snr(betas: np.ndarray) -> np.ndarray:
    """Signal-to-noise ratio SNR(t) = ᾱ_t / (1 − ᾱ_t) of q(x_t | x_0)."""
    abar = alphas_cumprod(betas)
    return abar / (1.0 - abar)
