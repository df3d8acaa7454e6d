"""Sampling from p_θ: ancestral (DDPM) steps, DDIM steps and their loops.

Every loop has a ``*_progressive`` generator that yields a :class:`SampleStep` after each step (for
animations and widgets) and a plain version that returns the final sample. Randomness comes from a
``noise_fn(like) -> Tensor`` (default: ``torch.randn`` with an optional ``torch.Generator``), so a recorded
noise stream can be replayed exactly.

This module is mixed into :class:`glide_edu.diffusion.GaussianDiffusion`; use it through that class.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

if TYPE_CHECKING:  # pragma: no cover
    from glide_edu.diffusion import MeanVariance, Model

NoiseFn = Callable[[Tensor], Tensor]
StepFn = Callable[[Tensor, Tensor], dict[str, Tensor]]
"""One reverse step ``step_fn(x_t, t) -> {"sample": x_next, "pred_xstart": x̂_0, ...}``; t has shape (B,)."""


@dataclass
class SampleStep:
    """State after one reverse step; readable as a dict (``step["sample"]``) like the reference's."""

    t: int  # index in this (possibly respaced) process, T'−1 … 0
    timestep: int  # the original timestep the model saw
    sample: Tensor  # x_{t−1}                   (B, C, H, W)
    pred_xstart: Tensor  # x̂_0 at this step     (B, C, H, W)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def randn_noise_fn(generator: torch.Generator | None = None) -> NoiseFn:
    """A noise source drawing N(0, I) like its argument, from ``generator`` if given."""

    def draw(like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

    return draw


def replay_noise_fn(stream: Sequence[Tensor]) -> NoiseFn:
    """A noise source that returns the tensors of ``stream`` in order (to replay a recorded run)."""
    it = iter(stream)

    def draw(like: Tensor) -> Tensor:
        try:
            noise = next(it)
        except StopIteration:
            raise ValueError("the recorded noise stream is exhausted; record one tensor per step") from None
        if noise.shape != like.shape:
            raise ValueError(f"recorded noise has shape {tuple(noise.shape)}, expected {tuple(like.shape)}")
        return noise.to(like.device, like.dtype)

    return draw


def _last(steps: Iterator[SampleStep]) -> SampleStep:
    """Run a progressive loop to the end and return its final step."""
    tail = deque(steps, maxlen=1)
    if not tail:
        raise ValueError("the diffusion has no steps to run")
    return tail[0]


class SamplingMixin:
    """Ancestral and DDIM sampling on top of ``p_mean_variance`` (see GaussianDiffusion)."""

    num_timesteps: int

    # ----------------------------------------------------------------------------- single steps
    def p_sample(
        self,
        model: Model,
        x: Tensor,
        t: Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Tensor], Tensor] | None = None,
        cond_fn: Callable[..., Tensor] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        noise: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """One ancestral step x_{t−1} = μ_θ + σ_θ·z (z ~ N(0, I); no noise at t = 0).

        With ``cond_fn`` the mean is shifted by Σ·∇ log p(y | x_t) first (classifier / CLIP guidance).
        """
        out: MeanVariance = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        t = self._timesteps(t, x.shape[0], x.device)
        if noise is None:
            noise = torch.randn_like(x)
        mean = out.mean
        if cond_fn is not None:
            mean = self.condition_mean(cond_fn, out, x, t, model_kwargs)
        nonzero_mask = (t != 0).float().view(-1, *([1] * (x.ndim - 1)))  # no noise when t == 0
        sample = mean + nonzero_mask * torch.exp(0.5 * out.log_variance) * noise
        return {"sample": sample, "pred_xstart": out.pred_xstart, "mean": mean, "variance": out.variance}

    def ddim_sample(
        self,
        model: Model,
        x: Tensor,
        t: Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Tensor], Tensor] | None = None,
        cond_fn: Callable[..., Tensor] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        eta: float = 0.0,
        noise: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """One DDIM step (Song et al. eq. 12):

        x_{t−1} = √ᾱ_{t−1}·x̂_0 + √(1 − ᾱ_{t−1} − σ_t²)·ε̂ + σ_t·z,
        σ_t = η·√((1−ᾱ_{t−1})/(1−ᾱ_t))·√(1 − ᾱ_t/ᾱ_{t−1});  ε̂ is recomputed from the clipped x̂_0.
        """
        if eta < 0:
            raise ValueError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta}")
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        t = self._timesteps(t, x.shape[0], x.device)
        if cond_fn is not None:
            out = self.condition_score(cond_fn, out, x, t, model_kwargs)
        eps = self.predict_eps_from_xstart(x, t, out.pred_xstart)
        alpha_bar = self._coef("alphas_cumprod", t, x)
        alpha_bar_prev = self._coef("alphas_cumprod_prev", t, x)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        if noise is None:
            noise = torch.randn_like(x)  # drawn even for eta = 0, as the reference does
        mean_pred = out.pred_xstart * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        nonzero_mask = (t != 0).float().view(-1, *([1] * (x.ndim - 1)))
        sample = mean_pred + nonzero_mask * sigma * noise
        return {"sample": sample, "pred_xstart": out.pred_xstart}

    def ddim_reverse_sample(
        self,
        model: Model,
        x: Tensor,
        t: Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Tensor], Tensor] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        eta: float = 0.0,
    ) -> dict[str, Tensor]:
        """Deterministic DDIM step *up* the chain, x_t → x_{t+1} (inversion; needs η = 0)."""
        if eta != 0.0:
            raise ValueError(f"ddim_reverse_sample is only defined for eta = 0 (deterministic), got eta={eta}")
        out = self.p_mean_variance(model, x, t, clip_denoised, denoised_fn, model_kwargs)
        t = self._timesteps(t, x.shape[0], x.device)
        eps = (self._coef("sqrt_recip_alphas_cumprod", t, x) * x - out.pred_xstart) / self._coef(
            "sqrt_recipm1_alphas_cumprod", t, x
        )
        alpha_bar_next = self._coef("alphas_cumprod_next", t, x)
        sample = out.pred_xstart * torch.sqrt(alpha_bar_next) + torch.sqrt(1 - alpha_bar_next) * eps
        return {"sample": sample, "pred_xstart": out.pred_xstart}

    # ----------------------------------------------------------------------------------- loops
    def _start(
        self, shape: Sequence[int], noise: Tensor | None, device: Any, noise_fn: NoiseFn, temperature: float = 1.0
    ) -> Tensor:
        """x_T = temperature · (``noise`` if given, else a draw from ``noise_fn``)."""
        if not temperature > 0:
            raise ValueError(
                f"temperature must be > 0 (1.0 = plain N(0, I); GLIDE's upsampler uses 0.997), got {temperature}"
            )
        if noise is not None:
            if tuple(noise.shape) != tuple(shape):
                raise ValueError(f"initial noise has shape {tuple(noise.shape)} but shape={tuple(shape)} was asked")
            x = noise.to(device) if device is not None else noise
        else:
            if len(shape) < 2:
                raise ValueError(f"shape must be (B, C, ...), got {tuple(shape)}")
            x = noise_fn(torch.empty(tuple(shape), device=device or "cpu"))
        return x * temperature if temperature != 1.0 else x

    def _indices(self, progress: bool, reverse: bool = True) -> Iterator[int]:
        """Indices T'−1 … 0 (sampling) or 0 … T'−1 (``reverse=False``: inversion), with a bar if ``progress``."""
        steps = range(self.num_timesteps - 1, -1, -1) if reverse else range(self.num_timesteps)
        return iter(tqdm(steps, desc="sampling" if reverse else "inverting", leave=False)) if progress else iter(steps)

    def _loop(self, x: Tensor, indices: Iterator[int], step_fn: StepFn) -> Iterator[SampleStep]:
        """The one reverse-process loop: x ← ``step_fn(x, t)["sample"]`` for each index, yielding each state.

        ``t`` is the index broadcast over the batch, shape (B,); the step runs without gradients (a
        ``cond_fn`` that needs them enables them itself). The index order and the step decide what the
        loop is: ancestral, DDIM, or DDIM inversion.
        """
        for i in indices:
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)  # (B,)
            with torch.no_grad():
                out = step_fn(x, t)
            x = out["sample"]  # (B, C, H, W)
            yield SampleStep(i, int(self.timestep_map[i]), x, out["pred_xstart"])

    def p_sample_loop_progressive(
        self,
        model: Model,
        shape: Sequence[int],
        noise: Tensor | None = None,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Tensor], Tensor] | None = None,
        cond_fn: Callable[..., Tensor] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        device: Any = None,
        progress: bool = False,
        generator: torch.Generator | None = None,
        noise_fn: NoiseFn | None = None,
        temperature: float = 1.0,
    ) -> Iterator[SampleStep]:
        """Yield a :class:`SampleStep` after each ancestral step, from x_T to x_0.

        x_T = ``temperature`` · ``noise`` (or · a fresh draw); only x_T is scaled, not the per-step noise
        (GLIDE's upsampler: temperature 0.997, "1.0 is sharper, but sometimes results in grainy artifacts").
        Noise draws: one for x_T (unless ``noise`` is given), then one per step, the last one included.
        """
        draw = noise_fn or randn_noise_fn(generator)
        x = self._start(shape, noise, device, draw, temperature)

        def step(x: Tensor, t: Tensor) -> dict[str, Tensor]:
            return self.p_sample(model, x, t, clip_denoised, denoised_fn, cond_fn, model_kwargs, draw(x))

        yield from self._loop(x, self._indices(progress), step)

    def p_sample_loop(self, model: Model, shape: Sequence[int], **kwargs: Any) -> Tensor:
        """Ancestral sampling x_T → x_0; returns x_0. Keywords as :meth:`p_sample_loop_progressive`."""
        return _last(self.p_sample_loop_progressive(model, shape, **kwargs)).sample

    def ddim_sample_loop_progressive(
        self,
        model: Model,
        shape: Sequence[int],
        noise: Tensor | None = None,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Tensor], Tensor] | None = None,
        cond_fn: Callable[..., Tensor] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        device: Any = None,
        progress: bool = False,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        noise_fn: NoiseFn | None = None,
        temperature: float = 1.0,
    ) -> Iterator[SampleStep]:
        """Yield a :class:`SampleStep` after each DDIM step (η = 0: deterministic); x_T as in the ancestral loop.

        Noise is drawn once per step even for η = 0 (as the reference does), so the stream stays aligned.
        """
        draw = noise_fn or randn_noise_fn(generator)
        x = self._start(shape, noise, device, draw, temperature)

        def step(x: Tensor, t: Tensor) -> dict[str, Tensor]:
            return self.ddim_sample(model, x, t, clip_denoised, denoised_fn, cond_fn, model_kwargs, eta, draw(x))

        yield from self._loop(x, self._indices(progress), step)

    def ddim_sample_loop(self, model: Model, shape: Sequence[int], **kwargs: Any) -> Tensor:
        """DDIM sampling x_T → x_0; returns x_0. Keywords as :meth:`ddim_sample_loop_progressive`."""
        return _last(self.ddim_sample_loop_progressive(model, shape, **kwargs)).sample

    def ddim_reverse_loop_progressive(
        self,
        model: Model,
        x_start: Tensor,
        clip_denoised: bool = True,
        denoised_fn: Callable[[Tensor], Tensor] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> Iterator[SampleStep]:
        """DDIM inversion x_0 → x_T: yield the state after each deterministic step up the chain (no noise)."""

        def step(x: Tensor, t: Tensor) -> dict[str, Tensor]:
            return self.ddim_reverse_sample(model, x, t, clip_denoised, denoised_fn, model_kwargs)

        yield from self._loop(x_start, self._indices(progress, reverse=False), step)

    def ddim_reverse_loop(self, model: Model, x_start: Tensor, **kwargs: Any) -> Tensor:
        """Encode x_0 into the x_T that deterministic DDIM maps back to it."""
        return _last(self.ddim_reverse_loop_progressive(model, x_start, **kwargs)).sample
