"""Inpainting, as OpenAI's ``inpaint`` notebook runs GLIDE (filtered).

1. The source image is resized (bicubic) to 64 and 256; the mask (1 = keep, 0 = generate) is given at 64
   (or at the image's size) and nearest-resized to 256.
2. ``base-inpaint``, 64×64: 100 ancestral steps with classifier-free guidance at s = 5, the model seeing
   [x_t, image·mask, mask], and every x̂_0 clamped to the known pixels (:func:`glide_edu.inpaint.known_region_clamp`).
3. Quantise to 8 bits; ``upsample-inpaint``, 64→256: 27 "fast27" *ancestral* steps from 0.997·N(0, I), with
   the same clamp at 256.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from glide_edu.data import quantize_8bit
from glide_edu.guidance import check_guidance_scale
from glide_edu.inpaint import resize_image, resize_mask
from glide_edu.pipelines.common import (
    UPSAMPLE_TEMPERATURE,
    NoiseSource,
    PipelineOutput,
    check_component,
    check_prompts,
    check_temperature,
    place_models,
    respacing_of,
)
from glide_edu.pipelines.loading import default_tokenizer, load_glide_model
from glide_edu.pipelines.models import GlideModel
from glide_edu.pipelines.stages import encode_prompts, known_region, sample_base, sample_upsampler

ImageLike = Image.Image | Tensor | np.ndarray


def image_tensor(image: ImageLike, size: int) -> Tensor:
    """(1 or B, 3, size, size) in [−1, 1] from a PIL image (bicubic resize, as the notebook) or a tensor in [−1, 1]."""
    if isinstance(image, Image.Image):
        array = np.array(image.convert("RGB").resize((size, size), resample=Image.BICUBIC))
        return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 127.5 - 1
    x = torch.as_tensor(image).float()
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(
            f"image must be a PIL image or a (3, H, W) / (B, 3, H, W) tensor in [-1, 1], got {tuple(x.shape)}"
        )
    return resize_image(x, size)


def mask_tensor(mask: ImageLike, image_hw: tuple[int, int], base_size: int) -> Tensor:
    """(1 or B, 1, h, w) float mask (1 = keep) checked against the image's or the base model's size."""
    if isinstance(mask, Image.Image):
        m = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0).round()
    else:
        m = torch.as_tensor(mask).float()
    while m.ndim < 4:
        m = m[None]
    allowed = {tuple(image_hw), (base_size, base_size)}
    if m.ndim != 4 or m.shape[1] != 1 or tuple(m.shape[2:]) not in allowed:
        sizes = " or ".join(f"{h}×{w}" for h, w in sorted(allowed))
        raise ValueError(
            f"mask has shape {tuple(m.shape)}; give one (H, W) / (1, 1, H, W) mask of {sizes} pixels "
            "(1 = keep the pixel, 0 = generate it)"
        )
    if ((m != 0) & (m != 1)).any():
        raise ValueError("mask values must be 0 (generate) or 1 (keep); threshold your mask first")
    return m


def check_batch(tensors: Mapping[str, Tensor], batch: int) -> None:
    """Each of ``tensors`` has batch 1 (shared by every row) or ``batch`` (one per row)."""
    for what, t in tensors.items():
        if t.shape[0] not in (1, batch):
            raise ValueError(f"{what} has batch {t.shape[0]}; give 1 (shared) or {batch} (one per image)")


class InpaintPipeline:
    """GLIDE inpainting: ``base_inpaint`` (+ optional ``upsample_inpaint``) GlideModels and GLIDE's tokenizer.

    :meth:`from_pretrained` loads the released ``base-inpaint`` and ``upsample-inpaint`` checkpoints.
    """

    def __init__(
        self,
        base_inpaint: GlideModel,
        upsample_inpaint: GlideModel | None = None,
        tokenizer: Any = None,
        device: str | torch.device | None = "cpu",
        fp16: bool = False,
    ) -> None:
        self.base = check_component(base_inpaint, "base-inpaint", "base_inpaint")
        self.upsampler = None
        if upsample_inpaint is not None:
            self.upsampler = check_component(upsample_inpaint, "upsample-inpaint", "upsample_inpaint")
        self.device = place_models([self.base, self.upsampler], device, fp16)
        self.tokenizer = default_tokenizer() if tokenizer is None else tokenizer

    @classmethod
    def from_pretrained(
        cls,
        device: str | torch.device | None = "cpu",
        fp16: bool = False,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        upsample: bool = True,
        registry: Mapping[str, Any] | None = None,
        tokenizer: Any = None,
        progress: bool = True,
    ) -> InpaintPipeline:
        """The released ``base-inpaint`` and ``upsample-inpaint`` checkpoints (see
        :meth:`Text2ImPipeline.from_pretrained <glide_edu.pipelines.Text2ImPipeline.from_pretrained>`)."""
        source = {"cache_dir": cache_dir, "checkpoint_dir": checkpoint_dir, "registry": registry, "progress": progress}
        base = load_glide_model("base-inpaint", **source)
        upsampler = load_glide_model("upsample-inpaint", **source) if upsample else None
        if tokenizer is None:
            tokenizer = default_tokenizer(cache_dir=cache_dir, progress=progress)
        return cls(base, upsampler, tokenizer, device, fp16)

    def __call__(
        self,
        prompt: str | Sequence[str],
        image: ImageLike,
        mask: ImageLike,
        guidance_scale: float = 5.0,
        *,
        batch_size: int = 1,
        num_inference_steps: int | None = None,
        respacing: str | None = None,
        upsample_respacing: str = "fast27",
        upsample_temperature: float = UPSAMPLE_TEMPERATURE,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        bf16: bool = False,
        progress: bool = False,
        upsample: bool = True,
    ) -> PipelineOutput:
        """Fill the pixels where ``mask`` is 0 so that the picture matches ``prompt``; keep the others.

        ``image``: PIL image or tensor in [−1, 1] (any size; resized); ``mask``: (H, W) tensor/array/PIL "L"
        image, 1 = keep, at the image's size or the base model's (64). ``guidance_scale`` defaults to the
        notebook's 5; the other options are those of :class:`~glide_edu.pipelines.Text2ImPipeline`.
        """
        size = self.base.image_size
        hw = tuple(image.size[::-1]) if isinstance(image, Image.Image) else tuple(torch.as_tensor(image).shape[-2:])
        mask = mask_tensor(mask, hw, size)
        prompts = check_prompts(prompt, batch_size)
        scale = check_guidance_scale(guidance_scale)
        temperature = check_temperature(upsample_temperature)
        base_steps = respacing_of(num_inference_steps, respacing, "100")
        image_lo, mask_lo = image_tensor(image, size).to(self.device), resize_mask(mask, size).to(self.device)
        check_batch({"image": image_lo, "mask": mask_lo}, len(prompts))
        noise = NoiseSource(seed, generator)
        run = {"progress": progress, "bf16": bf16}

        # 1. the prompts as tokens, with the empty prompt for classifier-free guidance
        cfg = scale != 1.0
        text = encode_prompts(self.tokenizer, prompts, self.base, self.device, with_empty=cfg)
        # 2. 64×64: the model sees [x_t, image·mask, mask]; every x̂_0 is clamped to the known pixels
        known = known_region(image_lo, mask_lo, len(prompts), copies=2 if cfg else 1)
        x = sample_base(self.base, text, noise, base_steps, guidance_scale=scale if cfg else None, inpaint=known, **run)
        # 3. the 8-bit hand-over
        low_res = quantize_8bit(x)
        # 4. 64→256, ancestral, with the same inputs and clamp at the upsampler's size
        final = low_res
        if upsample and self.upsampler is not None:
            up = self.upsampler.image_size
            image_hi, mask_hi = image_tensor(image, up).to(self.device), resize_mask(mask_lo, up)
            text_up = encode_prompts(self.tokenizer, prompts, self.upsampler, self.device)
            known_hi = known_region(image_hi, mask_hi, len(prompts))
            final = sample_upsampler(
                self.upsampler, text_up, low_res, noise, upsample_respacing, temperature,
                method="ancestral", inpaint=known_hi, **run,
            )  # fmt: skip
        return PipelineOutput.from_samples(final, low_res, prompts)
