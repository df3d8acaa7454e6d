"""Likelihood terms shared by the diffusion code and the training losses.

``normal_kl`` is KL(N(μ₁, σ₁²) ‖ N(μ₂, σ₂²)) elementwise, in nats; ``discretized_gaussian_log_likelihood``
is the decoder term L_0 of the variational bound for 8-bit images scaled to [−1, 1].
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def mean_flat(x: Tensor) -> Tensor:
    """Mean over every dimension but the batch one: (B, ...) → (B,)."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^{logvar1}) ‖ N(mean2, e^{logvar2})) elementwise, in nats (broadcasting).

    KL = ½ (−1 + logvar2 − logvar1 + e^{logvar1 − logvar2} + (mean1 − mean2)² e^{−logvar2}).
    """
    tensors = [a for a in (mean1, logvar1, mean2, logvar2) if isinstance(a, Tensor)]
    if not tensors:
        raise ValueError("normal_kl needs at least one tensor argument")
    ref = tensors[0]
    logvar1, logvar2 = (
        v if isinstance(v, Tensor) else torch.tensor(v, dtype=ref.dtype, device=ref.device) for v in (logvar1, logvar2)
    )
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """Φ(x) by the tanh approximation ½(1 + tanh(√(2/π)(x + 0.044715 x³)))."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(x: Tensor, *, means: Tensor, log_scales: Tensor) -> Tensor:
    """log p(x) of 8-bit data x ∈ [−1, 1] under N(means, e^{2·log_scales}) integrated over each pixel's bin.

    Bins have width 2/255 (x ± 1/255); the two edge bins are open (−∞ below −0.999, +∞ above 0.999).
    Logs are clamped at 1e-12. Returns nats, same shape as ``x``.
    """
    if not (x.shape == means.shape == log_scales.shape):
        raise ValueError(
            f"x, means and log_scales must have one shape; got {tuple(x.shape)}, "
            f"{tuple(means.shape)}, {tuple(log_scales.shape)}"
        )
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))),
    )
