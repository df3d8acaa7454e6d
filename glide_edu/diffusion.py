"""Gaussian diffusion: the forward process q and the learned reverse process p_θ.

Notation (DDPM / Improved DDPM / GLIDE):

* forward step   q(x_t | x_{t-1}) = N(√(1−β_t) x_{t−1}, β_t I)
* closed form    q(x_t | x_0)     = N(√ᾱ_t x_0, (1−ᾱ_t) I),  ᾱ_t = ∏_{s≤t}(1−β_s)
* posterior      q(x_{t−1} | x_t, x_0) = N(μ̃_t(x_t, x_0), β̃_t I),
                 μ̃_t = coef1·x_0 + coef2·x_t,  β̃_t = β_t (1−ᾱ_{t−1})/(1−ᾱ_t)
* reverse model  p_θ(x_{t−1} | x_t) = N(μ_θ(x_t, t), Σ_θ(x_t, t))

Time indices run 0 … T−1 (index t here is the paper's t+1). Every coefficient is a float64 table that is
cast to float32 before it touches a tensor, exactly as the reference does. Sampling loops live in
:mod:`glide_edu.sampling` (mixed into :class:`GaussianDiffusion`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from glide_edu.losses import LossesMixin
from glide_edu.sampling import SamplingMixin
from glide_edu.schedules import betas_from_array

Model = Callable[..., Any]
"""A denoiser called as ``model(x_t, t, **model_kwargs)``; returns a tensor (or a tuple whose first item is one)."""


class ModelMeanType(str, enum.Enum):
    """What the network predicts for the mean: the noise ε (DDPM, GLIDE) or the clean image x_0."""

    EPSILON = "epsilon"
    START_X = "start_x"


class ModelVarType(str, enum.Enum):
    """How Σ_θ is obtained.

    * ``fixed_small`` — Σ = β̃_t (posterior variance; right when x_0 is a point).
    * ``fixed_large`` — Σ = β_t (with β̃_1 at t = 0 for a better decoder likelihood).
    * ``learned`` — the network outputs log Σ directly.
    * ``learned_range`` — the network outputs v ∈ [−1, 1]; log Σ = frac·log β_t + (1−frac)·log β̃_t,
      frac = (v+1)/2 (Improved DDPM, GLIDE).
    """

    FIXED_SMALL = "fixed_small"
    FIXED_LARGE = "fixed_large"
    LEARNED = "learned"
    LEARNED_RANGE = "learned_range"

    @property
    def is_learned(self) -> bool:
        return self in (ModelVarType.LEARNED, ModelVarType.LEARNED_RANGE)


@dataclass
class MeanVariance:
    """Output of :meth:`GaussianDiffusion.p_mean_variance`; also readable as a dict (``out["mean"]``)."""

    mean: Tensor  # μ_θ(x_t, t)                      (B, C, H, W)
    variance: Tensor  # Σ_θ(x_t, t)                  (B, C, H, W)
    log_variance: Tensor  # log Σ_θ                  (B, C, H, W)
    pred_xstart: Tensor  # x̂_0 after denoised_fn and clipping
    model_output: Tensor | None = None  # raw network output (B, C or 2C, H, W)
    extra: Any = None
    eps: Tensor | None = field(default=None, repr=False)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def keys(self) -> list[str]:
        return ["mean", "variance", "log_variance", "pred_xstart", "model_output", "extra"]


def _as_enum(value: Any, enum_cls: type[enum.Enum], what: str) -> Any:
    try:
        return enum_cls(value.value if isinstance(value, enum.Enum) else value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_cls)
        raise ValueError(f"unknown {what} {value!r}; choose one of: {allowed}") from None


class GaussianDiffusion(SamplingMixin, LossesMixin):
    """The DDPM forward process and its learned reverse, with GLIDE's conventions.

    Args:
        betas: β_1…β_T (any 1-D sequence with 0 < β < 1); see :mod:`glide_edu.schedules`.
        model_mean_type: what the network predicts (ε by default).
        model_var_type: how Σ_θ is produced (GLIDE: ``learned_range``).
    """

    def __init__(
        self,
        betas: Any,
        model_mean_type: ModelMeanType | str = ModelMeanType.EPSILON,
        model_var_type: ModelVarType | str = ModelVarType.LEARNED_RANGE,
    ) -> None:
        self.model_mean_type: ModelMeanType = _as_enum(model_mean_type, ModelMeanType, "model_mean_type")
        self.model_var_type: ModelVarType = _as_enum(model_var_type, ModelVarType, "model_var_type")
        betas = betas_from_array(betas)
        self.betas = betas
        self.num_timesteps = int(betas.shape[0])

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)  # ᾱ_t
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])  # ᾱ_{t−1}, with ᾱ_{−1} = 1
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.one_minus_alphas_cumprod = 1.0 - self.alphas_cumprod
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        # β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # β̃_0 = 0, so index 0 borrows index 1 to keep the log finite (as the reference does).
        pv = self.posterior_variance
        self.posterior_log_variance_clipped = np.log(np.append(pv[1], pv[1:]) if len(pv) > 1 else betas)
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        self.log_betas = np.log(betas)
        fixed_large = np.append(pv[1], betas[1:]) if len(pv) > 1 else betas
        self.fixed_large_variance = fixed_large
        self.fixed_large_log_variance = np.log(fixed_large)
        self.timestep_map = np.arange(self.num_timesteps)  # respaced index → original timestep
        self._device_tables: dict[tuple[str, str], Tensor] = {}

    # ----------------------------------------------------------------------------------------- tables
    def _table(self, name: str, device: torch.device) -> Tensor:
        """The float64 table ``name`` cast to float32 (on the CPU) and cached on ``device``."""
        key = (name, str(device))
        if key not in self._device_tables:
            arr = getattr(self, name)
            self._device_tables[key] = torch.from_numpy(np.asarray(arr, dtype=np.float64)).float().to(device)
        return self._device_tables[key]

    def _timesteps(self, t: Tensor | int, batch: int, device: torch.device) -> Tensor:
        """Validate t and return an int64 vector of length ``batch``."""
        t = torch.as_tensor(t, device=device)
        if t.is_floating_point() or t.dtype == torch.bool:
            raise ValueError(f"timesteps must be integers (indices 0..{self.num_timesteps - 1}), got {t.dtype}")
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim != 1 or t.shape[0] != batch:
            raise ValueError(
                f"timesteps of shape {tuple(t.shape)} do not broadcast against a batch of {batch}; "
                f"pass one index per sample (shape ({batch},)) or a single int"
            )
        if batch and (int(t.min()) < 0 or int(t.max()) >= self.num_timesteps):
            raise ValueError(
                f"timesteps must lie in 0..{self.num_timesteps - 1}, got min {int(t.min())}, max {int(t.max())}"
            )
        return t.long()

    def extract(self, name: str, t: Tensor | int, shape: torch.Size | tuple[int, ...], device: torch.device) -> Tensor:
        """Table ``name`` at timesteps ``t``, float32, reshaped to broadcast over ``shape`` = (B, ...)."""
        if len(shape) < 1:
            raise ValueError(f"x must have a batch dimension, got shape {tuple(shape)}")
        t = self._timesteps(t, shape[0], device)
        out = self._table(name, device)[t]
        return out.reshape(out.shape + (1,) * (len(shape) - 1))

    def _coef(self, name: str, t: Tensor | int, x: Tensor) -> Tensor:
        return self.extract(name, t, x.shape, x.device)

    @staticmethod
    def _check_same_shape(a: Tensor, b: Tensor, what_a: str, what_b: str) -> None:
        if a.shape != b.shape:
            raise ValueError(
                f"{what_a} has shape {tuple(a.shape)} but {what_b} has shape {tuple(b.shape)}; they must match"
            )

    # ------------------------------------------------------------------------------ forward process q
    def q_mean_variance(self, x_start: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
        """Mean √ᾱ_t·x_0, variance 1−ᾱ_t and log-variance of q(x_t | x_0)."""
        mean = self._coef("sqrt_alphas_cumprod", t, x_start) * x_start
        variance = self._coef("one_minus_alphas_cumprod", t, x_start).expand_as(mean)
        log_variance = self._coef("log_one_minus_alphas_cumprod", t, x_start).expand_as(mean)
        return mean, variance, log_variance

    def q_sample(
        self, x_start: Tensor, t: Tensor | int, noise: Tensor | None = None, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw x_t ~ q(x_t | x_0) in one step: x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε,  ε ~ N(0, I)."""
        if noise is None:
            noise = torch.randn(x_start.shape, generator=generator, device=x_start.device, dtype=x_start.dtype)
        self._check_same_shape(noise, x_start, "noise", "x_start")
        return (
            self._coef("sqrt_alphas_cumprod", t, x_start) * x_start
            + self._coef("sqrt_one_minus_alphas_cumprod", t, x_start) * noise
        )

    def q_posterior_mean_variance(self, x_start: Tensor, x_t: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor, Tensor]:
        """μ̃_t(x_t, x_0), β̃_t and the clipped log β̃_t of q(x_{t−1} | x_t, x_0)."""
        self._check_same_shape(x_start, x_t, "x_start", "x_t")
        mean = self._coef("posterior_mean_coef1", t, x_t) * x_start + self._coef("posterior_mean_coef2", t, x_t) * x_t
        variance = self._coef("posterior_variance", t, x_t)
        log_variance = self._coef("posterior_log_variance_clipped", t, x_t)
        return mean, variance.expand_as(mean), log_variance.expand_as(mean)

    # ------------------------------------------------------------------------ x_0 ↔ ε conversions
    def predict_xstart_from_eps(self, x_t: Tensor, t: Tensor | int, eps: Tensor) -> Tensor:
        """x̂_0 = √(1/ᾱ_t)·x_t − √(1/ᾱ_t − 1)·ε."""
        self._check_same_shape(x_t, eps, "x_t", "eps")
        return (
            self._coef("sqrt_recip_alphas_cumprod", t, x_t) * x_t
            - self._coef("sqrt_recipm1_alphas_cumprod", t, x_t) * eps
        )

    def predict_eps_from_xstart(self, x_t: Tensor, t: Tensor | int, pred_xstart: Tensor) -> Tensor:
        """ε = (√(1/ᾱ_t)·x_t − x̂_0) / √(1/ᾱ_t − 1)."""
        self._check_same_shape(x_t, pred_xstart, "x_t", "pred_xstart")
        return (self._coef("sqrt_recip_alphas_cumprod", t, x_t) * x_t - pred_xstart) / self._coef(
            "sqrt_recipm1_alphas_cumprod", t, x_t
        )

    # ------------------------------------------------------------------------- reverse process p_θ
    def _wrap_model(self, model: Model) -> Model:
        """Hook for respacing: hands the model the original timesteps. Identity here."""
        return model

    def p_mean_variance(
        self,
        model: Model,
        x: Tensor,
        t: Tensor | int,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Tensor], Tensor] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> MeanVariance:
        """μ_θ(x_t, t), Σ_θ(x_t, t) and x̂_0 from one call of the model.

        Order (the reference's): split the output into the mean part and v; build Σ from v; x̂_0 from ε
        (or taken directly); then ``denoised_fn(x̂_0)``; then clamp to [−1, 1] if ``clip_denoised``;
        finally μ = μ̃_t(x_t, x̂_0).
        """
        if x.ndim < 2:
            raise ValueError(f"x must be batched (B, C, ...), got shape {tuple(x.shape)}")
        t = self._timesteps(t, x.shape[0], x.device)
        out = self._wrap_model(model)(x, t, **(model_kwargs or {}))
        extra = None
        if isinstance(out, tuple):
            out, extra = out
        B, C = x.shape[:2]
        expected = 2 * C if self.model_var_type.is_learned else C
        if out.shape[0] != B or out.shape[1] != expected or out.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"model output has shape {tuple(out.shape)}, expected {(B, expected) + tuple(x.shape[2:])} "
                f"for model_var_type={self.model_var_type.value} (learned variances need 2·C channels)"
            )
        if self.model_var_type.is_learned:
            mean_part, var_values = torch.split(out, C, dim=1)
            if self.model_var_type is ModelVarType.LEARNED:
                log_variance = var_values
            else:
                min_log = self._coef("posterior_log_variance_clipped", t, x)
                max_log = self._coef("log_betas", t, x)
                frac = (var_values + 1) / 2
                log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            mean_part = out
            small = self.model_var_type is ModelVarType.FIXED_SMALL
            var_table = "posterior_variance" if small else "fixed_large_variance"
            log_table = "posterior_log_variance_clipped" if small else "fixed_large_log_variance"
            variance = self._coef(var_table, t, x).expand_as(x)
            log_variance = self._coef(log_table, t, x).expand_as(x)

        def process_xstart(x0: Tensor) -> Tensor:
            if denoised_fn is not None:
                x0 = denoised_fn(x0)
            return x0.clamp(-1, 1) if clip_denoised else x0

        if self.model_mean_type is ModelMeanType.EPSILON:
            pred_xstart = process_xstart(self.predict_xstart_from_eps(x, t, mean_part))
        else:
            pred_xstart = process_xstart(mean_part)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return MeanVariance(mean, variance, log_variance, pred_xstart, out, extra)

    # ------------------------------------------------------------------------------------ guidance
    def condition_mean(
        self,
        cond_fn: Callable[..., Tensor],
        p_mean_var: MeanVariance,
        x: Tensor,
        t: Tensor,
        model_kwargs: dict[str, Any] | None = None,
    ) -> Tensor:
        """Classifier guidance on the mean (Sohl-Dickstein; ADM eq. 10): μ' = μ + Σ·∇_{x_t} log p(y | x_t).

        ``cond_fn(x, t, **model_kwargs)`` returns the (already scaled) gradient; under respacing it
        receives the original timesteps.
        """
        gradient = self._wrap_model(cond_fn)(x, t, **(model_kwargs or {}))
        self._check_same_shape(gradient, x, "cond_fn gradient", "x")
        return p_mean_var.mean.float() + p_mean_var.variance * gradient.float()

    def condition_score(
        self,
        cond_fn: Callable[..., Tensor],
        p_mean_var: MeanVariance,
        x: Tensor,
        t: Tensor,
        model_kwargs: dict[str, Any] | None = None,
    ) -> MeanVariance:
        """Score-based guidance for DDIM (Song et al.): ε' = ε − √(1−ᾱ_t)·∇_{x_t} log p(y | x_t)."""
        alpha_bar = self._coef("alphas_cumprod", t, x)
        eps = self.predict_eps_from_xstart(x, t, p_mean_var.pred_xstart)
        gradient = self._wrap_model(cond_fn)(x, t, **(model_kwargs or {}))
        self._check_same_shape(gradient, x, "cond_fn gradient", "x")
        eps = eps - (1 - alpha_bar).sqrt() * gradient
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return MeanVariance(
            mean, p_mean_var.variance, p_mean_var.log_variance, pred_xstart, p_mean_var.model_output, p_mean_var.extra
        )
