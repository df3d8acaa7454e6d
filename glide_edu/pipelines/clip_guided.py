"""CLIP guidance, as OpenAI's ``clip_guided`` notebook runs GLIDE (filtered).

1. Base model, 64×64, conditioned on the prompt only (no classifier-free guidance): 100 ancestral steps.
2. At every step the noised CLIP's gradient g = s·∇_{x_t} 100·z_text·z_image(x_t, t) (s = 3) shifts the mean
   through the variance: μ' = μ + Σ·g (:meth:`glide_edu.nn.clip.NoisedClip.cond_fn`).
3. Quantise to 8 bits; the upsampler as in text-to-image (fast27 DDIM, temperature 0.997).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

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
from glide_edu.pipelines.loading import PipelineBase, load_glide_model, load_noised_clip


class ClipGuidedPipeline(PipelineBase):
    """GLIDE with noised-CLIP guidance: ``base``, ``clip`` (a NoisedClip) and an optional ``upsampler``.

    The CLIP encoders are never converted to fp16 (the reference keeps them in float32).
    """

    def __init__(
        self,
        base: nn.Module,
        clip: nn.Module,
        upsampler: nn.Module | None = None,
        tokenizer: Any = None,
        device: str | torch.device | None = "cpu",
        fp16: bool = False,
    ) -> None:
        super().__init__([base, upsampler, clip], tokenizer, device, fp16)
        if clip.config.image_size != base.config.image_size:
            raise ValueError(
                f"the CLIP model sees {clip.config.image_size}×{clip.config.image_size} images but the base model "
                f"makes {base.config.image_size}×{base.config.image_size}; use a matching pair"
            )
        self.base, self.clip, self.upsampler = base, clip, upsampler

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
    ) -> ClipGuidedPipeline:
        """The released ``base``, both noised-CLIP encoders and (optionally) ``upsample``."""
        kw = {"cache_dir": cache_dir, "checkpoint_dir": checkpoint_dir, "registry": registry, "progress": progress}
        base = load_glide_model("base", **kw)
        clip = load_noised_clip(**kw)
        up = load_glide_model("upsample", **kw) if upsample else None
        return cls(base, clip, up, tokenizer, device, fp16)

    def __call__(
        self,
        prompt: str | Sequence[str],
        batch_size: int = 1,
        guidance_scale: float = 3.0,
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
        """Images for ``prompt`` steered by the noised CLIP; ``guidance_scale`` is CLIP's gradient scale (0 = none)."""
        prompts = check_prompts(prompt, batch_size)
        scale = check_scale(guidance_scale, "guidance_scale", "the CLIP gradient scale; 0 = no guidance")
        temperature = check_scale(upsample_temperature, "upsample_temperature", "GLIDE uses 0.997")
        base_respacing = respacing_of(num_inference_steps, respacing, "100")
        noise = NoiseSource(seed, generator)
        cond_fn = self.clip.cond_fn(prompts, scale) if scale > 0 else None
        samples = base_stage(
            self.base, self.tokenizer, prompts, noise, base_respacing, 1.0, progress, bf16, cond_fn=cond_fn
        )
        low_res = quantize_8bit(samples)
        final = low_res
        if upsample and self.upsampler is not None:
            final = upsample_stage(
                self.upsampler, self.tokenizer, prompts, low_res, noise, upsample_respacing, temperature, progress, bf16
            )
        final = final.cpu()
        return PipelineOutput(to_pil(final), final, low_res.cpu(), prompts)
