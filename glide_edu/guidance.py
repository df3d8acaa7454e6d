"""Guidance: steer a diffusion model towards a condition at sampling time.

Classifier-free guidance (Ho & Salimans; GLIDE eq. 4) extrapolates from the unconditional towards the
conditional noise prediction,

    ε̂(x_t | c) = ε_θ(x_t | ∅) + s · (ε_θ(x_t | c) − ε_θ(x_t | ∅)),

with s = ``guidance_scale`` (s = 1: the conditional model, s = 0: the unconditional one). GLIDE evaluates
both branches in one doubled batch — first half conditional, second half unconditional — and guides only
the ε channels; the variance channels stay each row's own output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def classifier_free_guidance(
    model: Callable[..., Tensor], guidance_scale: float, eps_channels: int = 3
) -> Callable[..., Tensor]:
    """Wrap ``model`` into GLIDE's doubled-batch CFG model function.

    The returned ``model_fn(x_t, t, **kwargs)`` expects a batch of 2B rows whose kwargs (tokens, labels…)
    hold the conditional inputs in rows 0…B−1 and the unconditional ones in rows B…2B−1. Only x_t[:B] is
    used: it is duplicated, both halves are evaluated in one call, the first ``eps_channels`` channels are
    combined as ε_u + s(ε_c − ε_u) and written to both halves; the remaining channels (the learned variance
    v) are left as each row's own output.
    """

    def model_fn(x_t: Tensor, ts: Tensor, **kwargs: Any) -> Tensor:
        if x_t.shape[0] % 2:
            raise ValueError(f"classifier-free guidance needs an even batch (cond + uncond halves), got {x_t.shape[0]}")
        half = x_t[: len(x_t) // 2]
        model_out = model(torch.cat([half, half], dim=0), ts, **kwargs)
        eps, rest = model_out[:, :eps_channels], model_out[:, eps_channels:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + guidance_scale * (cond_eps - uncond_eps)
        return torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=1)

    return model_fn
