"""Likelihood terms shared by the diffusion code and the training losses.

``normal_kl`` is KL(N(μ₁, σ₁²) ‖ N(μ₂, σ₂²)) elementwise, in nats; ``discretized_gaussian_log_likelihood``
is the decoder term L_0 of the variational bound for 8-bit images scaled to [−1, 1].
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any

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


# --------------------------------------------------------------------------------------------------------
# Training objectives (mixed into GaussianDiffusion)
# --------------------------------------------------------------------------------------------------------


class LossType(str, enum.Enum):
    """Training objective.

    * ``simple`` — L_simple = E‖ε − ε_θ(x_t, t)‖² (DDPM); needs a fixed Σ.
    * ``hybrid`` — L_simple + λ·L_vlb (Improved DDPM) with the stop-gradient on the mean inside L_vlb, so
      the VLB term trains only Σ_θ. One sampled t estimates L_vlb by T·L_t, so the VLB part of the loss is
      ``lambda_vlb · T · L_t``. With λ = 0.001 and T = 1000 that is L_t itself — improved-diffusion's
      ``RESCALED_MSE`` (vb·T/1000). guided-diffusion's default (``rescale_learned_sigmas=False``) adds L_t
      unscaled, i.e. λ = 1/T.
    * ``kl`` — the VLB alone, T·L_t in bits/dim (an unbiased estimate of L_vlb; RESCALED_KL).
    """

    SIMPLE = "simple"
    HYBRID = "hybrid"
    KL = "kl"


class LossesMixin:
    """L_simple, the VLB terms in bits/dim, the hybrid loss and the full NLL (``calc_bpd_loop``)."""

    num_timesteps: int

    def vb_terms_bpd(
        self,
        model: Callable[..., Tensor],
        x_start: Tensor,
        x_t: Tensor,
        t: Tensor,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """L_t in bits/dim.

        KL(q(x_{t−1}|x_t,x_0) ‖ p_θ(x_{t−1}|x_t)) for t > 0; the decoder NLL −log p_θ(x_0|x_1) at t = 0.
        """
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, out.mean, out.log_variance)) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, means=out.mean, log_scales=0.5 * out.log_variance)
        decoder_nll = mean_flat(nll) / math.log(2.0)
        return {"output": torch.where(t == 0, decoder_nll, kl), "pred_xstart": out.pred_xstart}

    def training_losses(
        self,
        model: Callable[..., Tensor],
        x_start: Tensor,
        t: Tensor,
        model_kwargs: dict[str, Any] | None = None,
        noise: Tensor | None = None,
        loss_type: LossType | str | None = None,
        lambda_vlb: float = 0.001,
    ) -> dict[str, Tensor]:
        """Per-sample losses for one training step: {"loss", "mse", "vb"} each (B,).

        x_t = q_sample(x_0, t, ε); the network sees x_t and (original) timestep t. ``loss_type`` defaults
        to ``simple`` for a fixed Σ and ``hybrid`` for a learned one.
        """
        learned = self.model_var_type.is_learned
        if loss_type is None:
            loss_type = LossType.HYBRID if learned else LossType.SIMPLE
        loss_type = LossType(loss_type.value if isinstance(loss_type, enum.Enum) else loss_type)
        if loss_type is LossType.SIMPLE and learned:
            raise ValueError("a learned variance gets no gradient from L_simple; use loss_type='hybrid' or 'kl'")
        if loss_type is LossType.HYBRID and not learned:
            raise ValueError("the hybrid loss trains a learned variance; use model_var_type='learned_range'")
        if noise is None:
            noise = torch.randn_like(x_start)
        t = self._timesteps(t, x_start.shape[0], x_start.device)
        x_t = self.q_sample(x_start, t, noise=noise)
        terms: dict[str, Tensor] = {}
        if loss_type is LossType.KL:
            vb = self.vb_terms_bpd(model, x_start, x_t, t, clip_denoised=False, model_kwargs=model_kwargs)["output"]
            terms["vb"] = vb
            terms["loss"] = vb * self.num_timesteps
            return terms
        model_output = self._wrap_model(model)(x_t, t, **(model_kwargs or {}))
        C = x_start.shape[1]
        if learned:
            if model_output.shape[1] != 2 * C:
                raise ValueError(f"a learned variance needs {2 * C} output channels, got {model_output.shape[1]}")
            model_output, var_values = torch.split(model_output, C, dim=1)
            frozen = torch.cat([model_output.detach(), var_values], dim=1)  # stop-gradient on the mean
            terms["vb"] = self.vb_terms_bpd(lambda *_, **__: frozen, x_start, x_t, t, clip_denoised=False)[
                "output"
            ] * (lambda_vlb * self.num_timesteps)
        target = noise if self.model_mean_type.value == "epsilon" else x_start
        if model_output.shape != target.shape:
            raise ValueError(
                f"model output {tuple(model_output.shape)} does not match the target {tuple(target.shape)}"
            )
        terms["mse"] = mean_flat((target - model_output) ** 2)
        terms["loss"] = terms["mse"] + terms["vb"] if "vb" in terms else terms["mse"]
        return terms

    def prior_bpd(self, x_start: Tensor) -> Tensor:
        """L_T = KL(q(x_T|x_0) ‖ N(0, I)) in bits/dim, (B,). Not trained; ≈ 0 for a good schedule."""
        t = torch.full((x_start.shape[0],), self.num_timesteps - 1, device=x_start.device, dtype=torch.long)
        mean, _, log_var = self.q_mean_variance(x_start, t)
        return mean_flat(normal_kl(mean, log_var, torch.zeros_like(mean), torch.zeros_like(mean))) / math.log(2.0)

    @torch.no_grad()
    def calc_bpd_loop(
        self,
        model: Callable[..., Tensor],
        x_start: Tensor,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> dict[str, Tensor]:
        """The full variational bound −log p(x_0) ≤ L_0 + Σ_t L_t + L_T in bits/dim, per image.

        Returns total_bpd (B,), prior_bpd (B,), vb (B, T), xstart_mse (B, T), mse (B, T) (ε MSE).
        """
        from tqdm.auto import tqdm

        B = x_start.shape[0]
        vb, xstart_mse, mse = [], [], []
        steps = range(self.num_timesteps - 1, -1, -1)
        for i in tqdm(steps, desc="bits/dim", leave=False) if progress else steps:
            t = torch.full((B,), i, device=x_start.device, dtype=torch.long)
            noise = torch.randn(x_start.shape, generator=generator, device=x_start.device, dtype=x_start.dtype)
            x_t = self.q_sample(x_start, t, noise)
            out = self.vb_terms_bpd(model, x_start, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
            vb.append(out["output"])
            xstart_mse.append(mean_flat((out["pred_xstart"] - x_start) ** 2))
            eps = self.predict_eps_from_xstart(x_t, t, out["pred_xstart"])
            mse.append(mean_flat((eps - noise) ** 2))
        vb_t = torch.stack(vb[::-1], dim=1)  # (B, T), column t = L_t
        prior = self.prior_bpd(x_start)
        return {
            "total_bpd": vb_t.sum(dim=1) + prior,
            "prior_bpd": prior,
            "vb": vb_t,
            "xstart_mse": torch.stack(xstart_mse[::-1], dim=1),
            "mse": torch.stack(mse[::-1], dim=1),
        }
