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

from glide_edu.data import quantize_8bit
from glide_edu.guidance import check_guidance_scale
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
from glide_edu.pipelines.loading import default_tokenizer, load_glide_model, load_noised_clip
from glide_edu.pipelines.models import GlideModel
from glide_edu.pipelines.stages import encode_prompts, sample_base, sample_upsampler

CLIP_SCALE_MEANING = "the CLIP gradient scale; 0 = no guidance"


class ClipGuidedPipeline:
    """GLIDE with noised-CLIP guidance: ``base`` (GlideModel), ``clip`` (a NoisedClip) and an optional ``upsampler``.

    Called like :class:`~glide_edu.pipelines.Text2ImPipeline`, but ``guidance_scale`` is CLIP's gradient scale
    (default 3; 0 = no guidance) and the base model runs conditionally, without classifier-free guidance. The
    CLIP encoders are never converted to fp16 (the reference keeps them in float32).
    """

    def __init__(
        self,
        base: GlideModel,
        clip: nn.Module,
        upsampler: GlideModel | None = None,
        tokenizer: Any = None,
        device: str | torch.device | None = "cpu",
        fp16: bool = False,
    ) -> None:
        self.base = check_component(base, "base", "base")
        self.upsampler = None if upsampler is None else check_component(upsampler, "upsample", "upsampler")
        if clip.config.image_size != self.base.image_size:
            raise ValueError(
                f"the CLIP model sees {clip.config.image_size}×{clip.config.image_size} images but the base model "
                f"makes {self.base.image_size}×{self.base.image_size}; use a matching pair"
            )
        self.clip = clip
        self.device = place_models([self.base, self.upsampler], device, fp16, extra=[clip])
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
    ) -> ClipGuidedPipeline:
        """The released ``base``, noised CLIP and ``upsample`` checkpoints (see
        :meth:`Text2ImPipeline.from_pretrained <glide_edu.pipelines.Text2ImPipeline.from_pretrained>`)."""
        source = {"cache_dir": cache_dir, "checkpoint_dir": checkpoint_dir, "registry": registry, "progress": progress}
        base = load_glide_model("base", **source)
        clip = load_noised_clip(**source)
        upsampler = load_glide_model("upsample", **source) if upsample else None
        if tokenizer is None:
            tokenizer = default_tokenizer(cache_dir=cache_dir, progress=progress)
        return cls(base, clip, upsampler, tokenizer, device, fp16)

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
        """Images for ``prompt`` steered by the noised CLIP; ``guidance_scale`` is CLIP's gradient scale s."""
        prompts = check_prompts(prompt, batch_size)
        scale = check_guidance_scale(guidance_scale, CLIP_SCALE_MEANING)
        temperature = check_temperature(upsample_temperature)
        base_steps = respacing_of(num_inference_steps, respacing, "100")
        noise = NoiseSource(seed, generator)
        run = {"progress": progress, "bf16": bf16}

        # 1. the prompts as tokens for the UNet (conditional rows only) and as CLIP's text embedding
        text = encode_prompts(self.tokenizer, prompts, self.base, self.device)
        cond_fn = self.clip.cond_fn(prompts, scale) if scale > 0 else None
        # 2. 64×64 base model, ancestral, each step's mean moved by Σ·s·∇ CLIP score
        x = sample_base(self.base, text, noise, base_steps, cond_fn=cond_fn, **run)
        # 3. the 8-bit hand-over
        low_res = quantize_8bit(x)
        # 4. 64→256 upsampler, as in text-to-image
        final = low_res
        if upsample and self.upsampler is not None:
            text_up = encode_prompts(self.tokenizer, prompts, self.upsampler, self.device)
            final = sample_upsampler(self.upsampler, text_up, low_res, noise, upsample_respacing, temperature, **run)
        return PipelineOutput.from_samples(final, low_res, prompts)
