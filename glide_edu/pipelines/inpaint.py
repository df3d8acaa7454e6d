"""Inpainting, as OpenAI's ``inpaint`` notebook runs GLIDE (filtered).

1. The source image is resized (bicubic) to 64 and 256; the mask (1 = keep, 0 = generate) is given at 64
   (or at the image's size) and nearest-resized to 256.
2. ``base-inpaint``, 64×64: 100 ancestral steps with classifier-free guidance at s = 5, the model seeing
   [x_t, image·mask, mask], and every x̂_0 clamped to the known pixels (:func:`glide_edu.inpaint.known_region_clamp`).
3. Quantise to 8 bits; ``upsample-inpaint``, 64→256: 27 "fast27" *ancestral* steps from 0.997·N(0, I), with
   the same clamp at 256.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from glide_edu.inpaint import resize_image, resize_mask
from glide_edu.pipelines.common import NoiseSource, PipelineOutput, base_stage
from glide_edu.pipelines.text2im import Text2ImPipeline

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


class InpaintPipeline(Text2ImPipeline):
    """GLIDE inpainting: ``base_inpaint`` (+ optional ``upsample_inpaint``) and GLIDE's tokenizer.

    :meth:`from_pretrained` loads the released ``base-inpaint`` and ``upsample-inpaint`` checkpoints.
    """

    CHECKPOINTS = ("base-inpaint", "upsample-inpaint")
    UPSAMPLE_METHOD = "ancestral"  # the inpaint notebook samples the upsampler ancestrally

    def __init__(
        self,
        base_inpaint: nn.Module,
        upsample_inpaint: nn.Module | None = None,
        tokenizer: Any = None,
        device: str | torch.device | None = "cpu",
        fp16: bool = False,
    ) -> None:
        super().__init__(base_inpaint, upsample_inpaint, tokenizer, device, fp16)
        self._source: tuple[ImageLike, Tensor] | None = None

    def __call__(  # type: ignore[override]
        self,
        prompt: str | Sequence[str],
        image: ImageLike,
        mask: ImageLike,
        guidance_scale: float = 5.0,
        **options: Any,
    ) -> PipelineOutput:
        """Fill the pixels where ``mask`` is 0 so that the picture matches ``prompt``; keep the others.

        ``image``: PIL image or tensor in [−1, 1] (any size; resized); ``mask``: (H, W) tensor/array/PIL "L"
        image, 1 = keep, at the image's size or the base model's (64). ``guidance_scale`` defaults to the
        notebook's 5; every other option (``batch_size``, ``seed``, ``num_inference_steps``, …) is that of
        :class:`Text2ImPipeline`.
        """
        size = self.base.config.image_size
        hw = tuple(image.size[::-1]) if isinstance(image, Image.Image) else tuple(torch.as_tensor(image).shape[-2:])
        raw_mask = mask_tensor(mask, hw, size)

        def check_batch(batch: int) -> None:
            for t, what in ((image_tensor(image, size), "image"), (raw_mask, "mask")):
                if t.shape[0] not in (1, batch):
                    raise ValueError(f"{what} has batch {t.shape[0]}; give 1 (shared) or {batch} (one per image)")

        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ValueError(f"unknown option {unknown[0]!r}; the options are {', '.join(_OPTIONS)}")
        self._source = (image, resize_mask(raw_mask, size))
        try:
            merged = {**_OPTIONS, **options}
            return self._run(prompt, guidance_scale=guidance_scale, before_base=check_batch, **merged)
        finally:
            self._source = None

    def _base_samples(
        self, prompts: list[str], noise: NoiseSource, respacing: str, scale: float, progress: bool, bf16: bool
    ) -> Tensor:
        image, mask = self._source
        source = (image_tensor(image, self.base.config.image_size), mask)
        return base_stage(self.base, self.tokenizer, prompts, noise, respacing, scale, progress, bf16, source)

    def _upsample_inpaint(self, batch: int) -> tuple[Tensor, Tensor]:
        image, mask = self._source
        size = self.upsampler.config.image_size
        return image_tensor(image, size).expand(batch, -1, -1, -1), resize_mask(mask, size).expand(batch, -1, -1, -1)


# The options (and defaults) of Text2ImPipeline.__call__ other than the prompt and the guidance scale.
_OPTIONS = {
    name: param.default
    for name, param in inspect.signature(Text2ImPipeline.__call__).parameters.items()
    if name not in ("self", "prompt", "guidance_scale")
}
