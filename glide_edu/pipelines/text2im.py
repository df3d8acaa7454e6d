"""Text-to-image, as OpenAI's ``text2im`` notebook runs GLIDE (filtered).

1. Tokenise the prompt (GPT-2 BPE, padded to 128) and the empty prompt.
2. Base model, 64×64: 100 respaced ancestral steps with classifier-free guidance at s = 3 on the ε channels.
3. Quantise the samples to 8 bits.
4. Upsampler, 64→256: 27 "fast27" DDIM steps (η = 0) from x_T = 0.997·N(0, I), conditioned on the prompt.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

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
from glide_edu.pipelines.loading import default_tokenizer, load_glide_model
from glide_edu.pipelines.models import GlideModel
from glide_edu.pipelines.stages import encode_prompts, sample_base, sample_upsampler


class Text2ImPipeline:
    """GLIDE text-to-image: ``base`` (+ optional ``upsampler``) GlideModels and GLIDE's tokenizer.

    Models are used as given (e.g. tiny random-weight models in the official format) and moved to
    ``device``; ``fp16=True`` converts them in place as the reference does (:mod:`glide_edu.nn.fp16`).
    ``tokenizer`` defaults to GLIDE's GPT-2 tokenizer (its files are fetched into the cache if missing).
    :meth:`from_pretrained` loads the released ``base`` and ``upsample`` checkpoints.
    """

    def __init__(
        self,
        base: GlideModel,
        upsampler: GlideModel | None = None,
        tokenizer: Any = None,
        device: str | torch.device | None = "cpu",
        fp16: bool = False,
    ) -> None:
        self.base = check_component(base, "base", "base")
        self.upsampler = None if upsampler is None else check_component(upsampler, "upsample", "upsampler")
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
    ) -> Text2ImPipeline:
        """The released ``base`` and ``upsample`` checkpoints, from the cache (downloaded once, ≈1.5 GB each)
        or from ``checkpoint_dir``; ``upsample=False`` skips the upsampler. ``cache_dir`` also holds GPT-2's
        vocabulary (fetched there if missing, unless a ``tokenizer`` is given)."""
        source = {"cache_dir": cache_dir, "checkpoint_dir": checkpoint_dir, "registry": registry, "progress": progress}
        base = load_glide_model("base", **source)
        upsampler = load_glide_model("upsample", **source) if upsample else None
        if tokenizer is None:
            tokenizer = default_tokenizer(cache_dir=cache_dir, progress=progress)
        return cls(base, upsampler, tokenizer, device, fp16)

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
        """Images for ``prompt`` (``batch_size`` per prompt).

        ``guidance_scale`` s: ε̂ = ε(∅) + s·(ε(c) − ε(∅)); 1 = no guidance, 0 = unconditional. Base steps:
        ``num_inference_steps`` (evenly spaced) or a GLIDE ``respacing`` string (default "100").
        ``bf16`` runs the networks under bfloat16 autocast; ``progress`` shows tqdm bars.
        """
        prompts = check_prompts(prompt, batch_size)
        scale = check_guidance_scale(guidance_scale)
        temperature = check_temperature(upsample_temperature)
        base_steps = respacing_of(num_inference_steps, respacing, "100")
        noise = NoiseSource(seed, generator)
        run = {"progress": progress, "bf16": bf16}

        # 1. the prompts as tokens; classifier-free guidance adds the empty prompt (s = 1 needs no second half)
        cfg = scale != 1.0
        text = encode_prompts(self.tokenizer, prompts, self.base, self.device, with_empty=cfg)
        # 2. 64×64 base model, ancestral, ε guided by s
        x = sample_base(self.base, text, noise, base_steps, guidance_scale=scale if cfg else None, **run)
        # 3. the hand-over: the upsampler was trained on 8-bit images
        low_res = quantize_8bit(x)
        # 4. 64→256 upsampler: DDIM from 0.997·N(0, I), conditioned on the prompts and the 8-bit samples
        final = low_res
        if upsample and self.upsampler is not None:
            text_up = encode_prompts(self.tokenizer, prompts, self.upsampler, self.device)
            final = sample_upsampler(self.upsampler, text_up, low_res, noise, upsample_respacing, temperature, **run)
        return PipelineOutput.from_samples(final, low_res, prompts)
