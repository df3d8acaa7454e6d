"""CLIP guidance, as OpenAI's ``clip_guided`` notebook runs GLIDE (filtered).

1. Base model, 64×64, conditioned on the prompt only (no classifier-free guidance): 100 ancestral steps.
2. At every step the noised CLIP's gradient g = s·∇_{x_t} 100·z_text·z_image(x_t, t) (s = 3) shifts the mean
   through the variance: μ' = μ + Σ·g (:meth:`glide_edu.nn.clip.NoisedClip.cond_fn`).
3. Quantise to 8 bits; the upsampler as in text-to-image (fast27 DDIM, temperature 0.997).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from glide_edu.pipelines.common import NoiseSource, base_stage
from glide_edu.pipelines.loading import PipelineBase
from glide_edu.pipelines.text2im import Text2ImPipeline


class ClipGuidedPipeline(Text2ImPipeline):
    """GLIDE with noised-CLIP guidance: ``base``, ``clip`` (a NoisedClip) and an optional ``upsampler``.

    Called like :class:`Text2ImPipeline`, but ``guidance_scale`` is CLIP's gradient scale (default 3;
    0 = no guidance) and the base model runs conditionally, without classifier-free guidance. The CLIP
    encoders are never converted to fp16 (the reference keeps them in float32).
    """

    CHECKPOINTS = ("base", "clip", "upsample")
    SCALE_MEANING = "the CLIP gradient scale; 0 = no guidance"

    def __init__(
        self,
        base: nn.Module,
        clip: nn.Module,
        upsampler: nn.Module | None = None,
        tokenizer: Any = None,
        device: str | torch.device | None = "cpu",
        fp16: bool = False,
    ) -> None:
        PipelineBase.__init__(self, [base, upsampler, clip], tokenizer, device, fp16)
        if clip.config.image_size != base.config.image_size:
            raise ValueError(
                f"the CLIP model sees {clip.config.image_size}×{clip.config.image_size} images but the base model "
                f"makes {base.config.image_size}×{base.config.image_size}; use a matching pair"
            )
        self.base, self.clip, self.upsampler = base, clip, upsampler

    def _base_samples(
        self, prompts: list[str], noise: NoiseSource, respacing: str, scale: float, progress: bool, bf16: bool
    ) -> Tensor:
        cond_fn = self.clip.cond_fn(prompts, scale) if scale > 0 else None
        return base_stage(self.base, self.tokenizer, prompts, noise, respacing, 1.0, progress, bf16, cond_fn=cond_fn)
