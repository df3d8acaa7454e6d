"""Guidance: steer a diffusion model towards a condition at sampling time.

Classifier-free guidance (Ho & Salimans; GLIDE eq. 4) extrapolates from the unconditional towards the
conditional noise prediction,

    ε̂(x_t | c) = ε_θ(x_t | ∅) + s · (ε_θ(x_t | c) − ε_θ(x_t | ∅)),

with s = ``guidance_scale`` (s = 1: the conditional model, s = 0: the unconditional one). GLIDE evaluates
both branches in one doubled batch — first half conditional, second half unconditional — and guides only
the ε channels; the variance channels stay each row's own output.

For class labels (chapter 6) :func:`class_conditional_cfg` wraps a network trained with a learned null
label into a B-row model function that builds the doubled batch [x; x] with labels [y; ∅] itself, and
:func:`sample_cfg` samples with it.

Classifier guidance (Dhariwal & Nichol 2021; chapter 5) instead adds the gradient of a noisy classifier,
s·∇_{x_t} log p_φ(y | x_t, t) (:func:`classifier_cond_fn`), to the mean as μ + Σ·grad (ancestral steps) or
to the noise as ε − √(1−ᾱ_t)·grad (DDIM); :func:`guided_samples` samples with it. Its scale convention is
ADM's ``classifier_scale``: s = 0 is unguided (for classifier-free guidance s = 1 is unguided). A classifier
trained only on clean images never saw t ≠ 0, so guiding with it (``clean=True``) always passes t = 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from glide_edu.diffusion import GaussianDiffusion
    from glide_edu.nn.classifier import EncoderUNetModel

__all__ = [
    "check_guidance_scale",
    "classifier_free_guidance",
    "class_conditional_cfg",
    "sample_cfg",
    "classifier_log_prob",
    "classifier_cond_fn",
    "guided_samples",
]


def check_guidance_scale(guidance_scale: float, meaning: str = "1 = no guidance, 0 = unconditional") -> float:
    """``guidance_scale`` as a float; a one-line ValueError unless it is a finite number >= 0.

    The one validator of guidance scales in the library; ``meaning`` says what the scale does in the error
    (classifier-free guidance by default; e.g. "0 = no guidance" for classifier or CLIP guidance).
    """
    try:
        s = float(guidance_scale)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_scale must be a number >= 0 ({meaning}), got {guidance_scale!r}") from None
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0 ({meaning}), got {guidance_scale}")
    return s


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
    guidance_scale = check_guidance_scale(guidance_scale)

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


def class_conditional_cfg(
    model: Callable[..., Tensor], guidance_scale: float, null_label: int, eps_channels: int | None = None
) -> Callable[..., Tensor]:
    """CFG model function for a class-conditional network with a learned null label.

    ``model(x, t, y=labels)`` must accept ``null_label`` as "no label" (the network was trained with labels
    replaced by it with probability p_uncond). The returned ``model_fn(x_t, t, y=labels)`` takes an
    ordinary batch of B rows, labels in 0…``null_label`` (``null_label`` itself asks for the unconditional
    model), and returns B rows:

    * ε channels (the first ``eps_channels``, default: as many as x_t has): ε(x_t|∅) + s·(ε(x_t|y) − ε(x_t|∅));
    * any further channels (a learned variance): the conditional branch's own, unguided.

    Both branches run in one network call on the doubled batch [x_t; x_t] with labels [y; ∅], as in GLIDE's
    :func:`classifier_free_guidance`; here the caller never sees the doubled batch.
    """
    guidance_scale = check_guidance_scale(guidance_scale)
    if isinstance(null_label, bool) or not isinstance(null_label, int) or null_label < 1:
        raise ValueError(f"null_label must be a positive integer (the 'no label' index), got {null_label!r}")

    def model_fn(x_t: Tensor, ts: Tensor, y: Tensor | None = None, **kwargs: Any) -> Tensor:
        if y is None:
            raise ValueError("class-conditional CFG needs labels: call model_fn(x_t, t, y=labels)")
        y = torch.as_tensor(y, device=x_t.device)
        if y.shape != (x_t.shape[0],) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"y must be {x_t.shape[0]} integer labels, got {y.dtype} of shape {tuple(y.shape)}")
        bad = y[(y < 0) | (y > null_label)]
        if bad.numel():
            raise ValueError(f"labels must lie in 0…{null_label} ({null_label} = no label), got {bad.tolist()}")
        c = eps_channels if eps_channels is not None else x_t.shape[1]
        doubled_y = torch.cat([y.long(), torch.full_like(y.long(), null_label)])
        out = model(torch.cat([x_t, x_t]), torch.cat([ts, ts]), y=doubled_y, **kwargs)
        cond, uncond = out.split(x_t.shape[0])
        # s·ε_c + (1 − s)·ε_u is ε_u + s(ε_c − ε_u) rearranged: s = 1 gives ε_c and s = 0 gives ε_u bit for bit
        eps = guidance_scale * cond[:, :c] + (1.0 - guidance_scale) * uncond[:, :c]
        return torch.cat([eps, cond[:, c:]], dim=1)

    return model_fn


@torch.no_grad()
def sample_cfg(
    model: Callable[..., Tensor],
    diffusion: Any,
    labels: Tensor,
    guidance_scale: float,
    null_label: int,
    noise: Tensor,
    method: str = "ancestral",
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    clip_denoised: bool = True,
) -> Tensor:
    """Samples x_0 for ``labels`` from x_T = ``noise`` with classifier-free guidance at ``guidance_scale``.

    ``method`` is "ancestral" (p_sample_loop; a learned Σ comes from the conditional branch) or "ddim"
    (deterministic for η = 0). ``diffusion`` may be respaced: the network still receives original timesteps.
    """
    if method not in ("ancestral", "ddim"):
        raise ValueError(f"method must be 'ancestral' or 'ddim', got {method!r}")
    if noise.shape[0] != len(labels):
        raise ValueError(f"need one label per sample: noise has {noise.shape[0]} rows, labels {len(labels)}")
    model_fn = class_conditional_cfg(model, guidance_scale, null_label)
    kwargs = {"noise": noise, "model_kwargs": {"y": torch.as_tensor(labels)}, "generator": generator}
    kwargs["clip_denoised"] = clip_denoised  # False for data that is not an image in [−1, 1]
    if method == "ddim":
        return diffusion.ddim_sample_loop(model_fn, noise.shape, eta=eta, **kwargs)
    return diffusion.p_sample_loop(model_fn, noise.shape, **kwargs)


# ---------------------------------------------------------------------------------------- classifier guidance
def classifier_log_prob(classifier: EncoderUNetModel, x: Tensor, t: Tensor, y: Tensor, clean: bool = False) -> Tensor:
    """log p_φ(y | x_t, t) per sample, (B,). ``clean=True``: the classifier is shown t = 0."""
    if clean:
        t = torch.zeros_like(t)
    return classifier(x, t).log_softmax(dim=-1).gather(1, y[:, None])[:, 0]


def classifier_cond_fn(classifier: EncoderUNetModel, scale: float, clean: bool = False) -> Callable[..., Tensor]:
    """``cond_fn(x, t, y=…)`` = scale·∇_{x_t} log p_φ(y | x_t, t) for ``GaussianDiffusion``'s samplers.

    The diffusion calls it with the *original* timesteps (respacing wraps it like the model) and with the
    ``model_kwargs``, which must hold ``y`` (B,) — the target labels. The gradient of the sum of the
    per-sample log-probabilities is each sample's own gradient, since samples do not interact.
    """

    def cond_fn(x: Tensor, t: Tensor, y: Tensor | None = None, **_: Any) -> Tensor:
        if y is None:
            raise ValueError("classifier guidance needs the target labels: pass model_kwargs={'y': labels}")
        with torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)
            log_p = classifier_log_prob(classifier, x_in, t, y, clean)
            (grad,) = torch.autograd.grad(log_p.sum(), x_in)
        return scale * grad

    return cond_fn


class _Unconditional:
    """Lets an unconditional model ignore the ``y`` that guidance puts into ``model_kwargs``."""

    def __init__(self, model: Callable[..., Tensor]) -> None:
        self.model = model

    def __call__(self, x: Tensor, t: Tensor, **_: Any) -> Tensor:
        return self.model(x, t)


def guided_samples(
    model: Callable[..., Tensor],
    diffusion: GaussianDiffusion,
    classifier: EncoderUNetModel,
    labels: Tensor,
    scale: float,
    method: str = "ancestral",
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    clean: bool = False,
    noise_fn: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Samples of the (unconditional) ``model`` guided towards ``labels`` (B,) with scale ``scale``.

    ``method`` is ``"ancestral"`` (μ + s·Σ·∇log p) or ``"ddim"`` (ε − s·√(1−ᾱ_t)·∇log p, η = 0). With
    ``scale == 0`` no cond_fn is passed at all, so the result is exactly the unguided sampler's.
    """
    if method not in ("ancestral", "ddim"):
        raise ValueError(f"method must be 'ancestral' or 'ddim', got {method!r}")
    shape = (len(labels), classifier.config.in_channels, classifier.config.image_size, classifier.config.image_size)
    cond_fn = classifier_cond_fn(classifier, scale, clean) if scale != 0 else None
    loop = diffusion.p_sample_loop if method == "ancestral" else diffusion.ddim_sample_loop
    return loop(
        _Unconditional(model),
        shape,
        noise=noise,
        cond_fn=cond_fn,
        model_kwargs={"y": labels},
        generator=generator,
        noise_fn=noise_fn,
    )
