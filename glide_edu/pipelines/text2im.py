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
from glide_edu.pipelines.loading import PipelineBase, load_glide_model


class Text2ImPipeline(PipelineBase):
    """GLIDE text-to-image: ``base`` (+ optional ``upsampler``) and GLIDE's tokenizer.

    Models are used as given (e.g. tiny random-weight models in the official format) and moved to
    ``device``; ``fp16=True`` converts them in place as the reference does (:mod:`glide_edu.nn.fp16`).
    ``tokenizer`` defaults to GLIDE's GPT-2 tokenizer (its files are fetched into the cache if missing).
    """

    def __init__(
        self,
        base: nn.Module,
        upsampler: nn.Module | None = None,
        tokenizer: Any = None,
        device: str | torch.device | None = "cpu",
        fp16: bool = False,
    ) -> None:
        super().__init__([base, upsampler], tokenizer, device, fp16)
        self.base, self.upsampler = base, upsampler

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
        """The released ``base`` (+ ``upsample``) checkpoints (≈1.5 GB each; downloaded once into the cache)."""
        kw = {"cache_dir": cache_dir, "checkpoint_dir": checkpoint_dir, "registry": registry, "progress": progress}
        base = load_glide_model("base", **kw)
        up = load_glide_model("upsample", **kw) if upsample else None
        return cls(base, up, tokenizer, device, fp16)

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
        scale = check_scale(guidance_scale, "guidance_scale", "1 = no guidance, 0 = unconditional")
        temperature = check_scale(upsample_temperature, "upsample_temperature", "GLIDE uses 0.997")
        base_respacing = respacing_of(num_inference_steps, respacing, "100")
        noise = NoiseSource(seed, generator)
        samples = base_stage(self.base, self.tokenizer, prompts, noise, base_respacing, scale, progress, bf16)
        low_res = quantize_8bit(samples)
        if upsample and self.upsampler is not None:
            final = upsample_stage(
                self.upsampler, self.tokenizer, prompts, low_res, noise, upsample_respacing, temperature, progress, bf16
            )
        else:
            final = low_res
        final = final.cpu()
        return PipelineOutput(to_pil(final), final, low_res.cpu(), prompts)
