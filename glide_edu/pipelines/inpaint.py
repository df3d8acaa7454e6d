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
from torch import Tensor, nn

from glide_edu.inpaint import resize_image, resize_mask
from glide_edu.pipelines.common import (
    UPSAMPLE_TEMPERATURE,
    NoiseSource,
    PipelineOutput,
    base_stage,
    check_prompts,
    check_scale,
    quantize_8bit,
    respacing_of,
    to_pil,
    upsample_stage,
)
from glide_edu.pipelines.loading import PipelineBase, load_glide_model

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


class InpaintPipeline(PipelineBase):
    """GLIDE inpainting: ``base_inpaint`` (+ optional ``upsample_inpaint``) and GLIDE's tokenizer."""

    def __init__(
        self,
        base_inpaint: nn.Module,
        upsample_inpaint: nn.Module | None = None,
        tokenizer: Any = None,
        device: str | torch.device | None = "cpu",
        fp16: bool = False,
    ) -> None:
        super().__init__([base_inpaint, upsample_inpaint], tokenizer, device, fp16)
        self.base, self.upsampler = base_inpaint, upsample_inpaint

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
        """The released ``base-inpaint`` (+ ``upsample-inpaint``) checkpoints, from the cache or a folder."""
        kw = {"cache_dir": cache_dir, "checkpoint_dir": checkpoint_dir, "registry": registry, "progress": progress}
        base = load_glide_model("base-inpaint", **kw)
        up = load_glide_model("upsample-inpaint", **kw) if upsample else None
        return cls(base, up, tokenizer, device, fp16)

    def __call__(
        self,
        prompt: str | Sequence[str],
        image: ImageLike,
        mask: ImageLike,
        batch_size: int = 1,
        guidance_scale: float = 5.0,
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
        image, 1 = keep, at the image's size or the base model's (64). Other options as :class:`Text2ImPipeline`.
        """
        prompts = check_prompts(prompt, batch_size)
        scale = check_scale(guidance_scale, "guidance_scale", "1 = no guidance, 0 = unconditional")
        temperature = check_scale(upsample_temperature, "upsample_temperature", "GLIDE uses 0.997")
        base_respacing = respacing_of(num_inference_steps, respacing, "100")
        size = self.base.config.image_size
        hw = tuple(image.size[::-1]) if isinstance(image, Image.Image) else tuple(torch.as_tensor(image).shape[-2:])
        raw_mask = mask_tensor(mask, hw, size)
        image_lo, mask_lo = image_tensor(image, size), resize_mask(raw_mask, size)
        for t, what in ((image_lo, "image"), (mask_lo, "mask")):
            if t.shape[0] not in (1, len(prompts)):
                raise ValueError(f"{what} has batch {t.shape[0]}; give 1 (shared) or {len(prompts)} (one per image)")
        noise = NoiseSource(seed, generator)
        samples = base_stage(
            self.base, self.tokenizer, prompts, noise, base_respacing, scale, progress, bf16, (image_lo, mask_lo)
        )
        low_res = quantize_8bit(samples)
        final = low_res
        if upsample and self.upsampler is not None:
            up_size = self.upsampler.config.image_size
            image_hi = image_tensor(image, up_size).expand(len(prompts), -1, -1, -1)
            mask_hi = resize_mask(mask_lo, up_size).expand(len(prompts), -1, -1, -1)
            final = upsample_stage(
                self.upsampler,
                self.tokenizer,
                prompts,
                low_res,
                noise,
                upsample_respacing,
                temperature,
                progress,
                bf16,
                method="ancestral",
                inpaint=(image_hi, mask_hi),
            )
        final = final.cpu()
        return PipelineOutput(to_pil(final), final, low_res.cpu(), prompts)
