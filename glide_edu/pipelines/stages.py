"""The stages a GLIDE pipeline is made of, each a plain function of its inputs.

    text = encode_prompts(tokenizer, prompts, base, device, with_empty=True)       # 1. tokens (+ "" for CFG)
    x = sample_base(base, text, noise, "100", guidance_scale=3.0)                   # 2. 64×64, ancestral
    low_res = quantize_8bit(x)                                                      # 3. the 8-bit hand-over
    final = sample_upsampler(upsampler, text_up, low_res, noise, "fast27", 0.997)   # 4. 64→256, DDIM

Inpainting adds the source image and mask to both sampling stages (:func:`known_region`), CLIP guidance
passes a ``cond_fn`` to :func:`sample_base` instead of a guidance scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from glide_edu.guidance import classifier_free_guidance
from glide_edu.inpaint import known_region_clamp
from glide_edu.pipelines.common import NoiseSource, network_fn
from glide_edu.pipelines.models import GlideModel

__all__ = ["encode_prompts", "known_region", "sample_base", "sample_upsampler"]

Conditioning = tuple[dict[str, Tensor], Callable[[Tensor], Tensor]]


def encode_prompts(
    tokenizer: Any, prompts: Sequence[str], model: GlideModel, device: torch.device, with_empty: bool = False
) -> dict[str, Tensor]:
    """{"tokens", "mask"}: GLIDE's padded caption tokens and boolean mask for ``model``, on ``device``.

    ``with_empty`` appends one empty prompt (all padding, all-false mask) per row: the unconditional half of
    classifier-free guidance's doubled batch [prompts; ""·B].
    """
    rows = list(prompts) + ([""] * len(prompts) if with_empty else [])
    tokens, mask = tokenizer.tokens_and_mask(rows, model.text_ctx)
    return {"tokens": tokens.to(device), "mask": mask.to(device)}


def known_region(image: Tensor, mask: Tensor, batch: int, copies: int = 1) -> Conditioning:
    """Inpainting's extra model inputs and its known-region clamp, for ``copies``·``batch`` rows.

    ``image`` (1 or B, 3, s, s) in [−1, 1] and ``mask`` (1 or B, 1, s, s), 1 = keep, at the model's size and
    on its device.
    Returns ({"inpaint_image": image·mask, "inpaint_mask": mask}, denoised_fn): the model sees
    [x_t, image·mask, mask] and every x̂_0 is overwritten on the known pixels
    (:func:`glide_edu.inpaint.known_region_clamp`). ``copies`` = 2 repeats them for the CFG-doubled batch.
    """
    image, mask = (t.expand(batch, *t.shape[1:]) for t in (image, mask))
    if copies > 1:
        image, mask = image.repeat(copies, 1, 1, 1), mask.repeat(copies, 1, 1, 1)
    known = image * mask
    return {"inpaint_image": known, "inpaint_mask": mask}, known_region_clamp(known, mask)


def sample_base(
    model: GlideModel,
    text: dict[str, Tensor],
    noise: NoiseSource,
    respacing: str,
    *,
    guidance_scale: float | None = None,
    cond_fn: Callable[..., Tensor] | None = None,
    inpaint: Conditioning | None = None,
    progress: bool = False,
    bf16: bool = False,
) -> Tensor:
    """The base model's ancestral loop at its own size; returns (B, 3, s, s) float32 samples in [−1, 1].

    With ``guidance_scale`` (``text`` then holds the doubled batch [prompts; ""·B]) ε is guided by GLIDE's
    classifier-free guidance on channels 0–2 only and the conditional half is kept. ``cond_fn`` (CLIP
    guidance) shifts each step's mean by Σ·gradient; ``inpaint`` (from :func:`known_region`) adds the
    inpainting inputs and the clamp. x_T and every step's noise come from ``noise``, in that order.
    """
    network = model.network
    device = next(network.parameters()).device
    rows = len(text["tokens"])
    kwargs, denoised_fn = dict(text), None
    if inpaint is not None:
        extra, denoised_fn = inpaint
        kwargs.update(extra)
    with network_fn(network, device, bf16) as net:  # bf16: autocast inside, float32 out
        net = model.with_prior(net)  # the data-mean x̂₀ at the top, for models that name one (glide_edu.prior)
        model_fn = net if guidance_scale is None else classifier_free_guidance(net, guidance_scale)
        out = model.diffusion(respacing).p_sample_loop(
            model_fn,
            (rows, 3, model.image_size, model.image_size),
            denoised_fn=denoised_fn,
            cond_fn=cond_fn,
            model_kwargs=kwargs,
            device=device,
            progress=progress,
            noise_fn=noise,
        )
    kept = rows // 2 if guidance_scale is not None else rows
    return out[:kept].float()


def sample_upsampler(
    model: GlideModel,
    text: dict[str, Tensor],
    low_res: Tensor,
    noise: NoiseSource,
    respacing: str,
    temperature: float,
    *,
    method: str = "ddim",
    inpaint: Conditioning | None = None,
    progress: bool = False,
    bf16: bool = False,
) -> Tensor:
    """The upsampler's loop from x_T = ``temperature``·N(0, I) at its size, conditioned on ``text`` and ``low_res``.

    ``method`` "ddim" (η = 0, the text2im notebook) or "ancestral" (the inpaint notebook); ``inpaint`` from
    :func:`known_region` at the upsampler's size. No classifier-free guidance (the notebooks use none here).
    Returns (B, 3, S, S) float32 samples in [−1, 1].
    """
    if method not in ("ddim", "ancestral"):
        raise ValueError(f"method must be 'ddim' or 'ancestral', got {method!r}")
    network = model.network
    device = next(network.parameters()).device
    kwargs, denoised_fn = {**text, "low_res": low_res.to(device)}, None
    if inpaint is not None:
        extra, denoised_fn = inpaint
        kwargs.update(extra)
    diffusion = model.diffusion(respacing)
    loop = diffusion.ddim_sample_loop if method == "ddim" else diffusion.p_sample_loop
    shape = (len(low_res), 3, model.image_size, model.image_size)
    x_T = noise.draw(shape, device)
    with network_fn(network, device, bf16) as net:
        out = loop(
            net,
            shape,
            noise=x_T,
            temperature=temperature,
            denoised_fn=denoised_fn,
            model_kwargs=kwargs,
            progress=progress,
            noise_fn=noise,
        )
    return out.float()
