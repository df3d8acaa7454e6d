"""Text-to-image, as OpenAI's ``text2im`` notebook runs GLIDE (filtered).

1. Tokenise the prompt (GPT-2 BPE, padded to 128) and the empty prompt.
2. Base model, 64×64: 100 respaced ancestral steps with classifier-free guidance at s = 3 on the ε channels.
3. Quantise the samples to 8 bits.
4. Upsampler, 64→256: 27 "fast27" DDIM steps (η = 0) from x_T = 0.997·N(0, I), conditioned on the prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

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
from glide_edu.pipelines.loading import PipelineBase


class Text2ImPipeline(PipelineBase):
    """GLIDE text-to-image: ``base`` (+ optional ``upsampler``) and GLIDE's tokenizer.

    Models are used as given (e.g. tiny random-weight models in the official format) and moved to
    ``device``; ``fp16=True`` converts them in place as the reference does (:mod:`glide_edu.nn.fp16`).
    ``tokenizer`` defaults to GLIDE's GPT-2 tokenizer (its files are fetched into the cache if missing).
    :meth:`from_pretrained` loads the released ``base`` and ``upsample`` checkpoints.
    """

    CHECKPOINTS = ("base", "upsample")
    UPSAMPLE_METHOD = "ddim"  # the text2im notebook: DDIM (η = 0) for the upsampler
    SCALE_MEANING = "1 = no guidance, 0 = unconditional"

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
        return self._run(
            prompt,
            batch_size,
            guidance_scale,
            num_inference_steps,
            respacing,
            upsample_respacing,
            upsample_temperature,
            seed,
            generator,
            bf16,
            progress,
            upsample,
        )

    # --------------------------------------------------------------------------- hooks for subclasses
    def _base_samples(
        self, prompts: list[str], noise: NoiseSource, respacing: str, scale: float, progress: bool, bf16: bool
    ) -> Tensor:
        return base_stage(self.base, self.tokenizer, prompts, noise, respacing, scale, progress, bf16)

    def _upsample_inpaint(self, batch: int) -> tuple[Tensor, Tensor] | None:
        return None

    def _run(
        self,
        prompt: str | Sequence[str],
        batch_size: int,
        guidance_scale: float,
        num_inference_steps: int | None,
        respacing: str | None,
        upsample_respacing: str,
        upsample_temperature: float,
        seed: int | None,
        generator: torch.Generator | None,
        bf16: bool,
        progress: bool,
        upsample: bool,
        before_base: Callable[[int], None] | None = None,
    ) -> PipelineOutput:
        """Check the options, run the base stage, quantise, run the upsampler, package the output."""
        prompts = check_prompts(prompt, batch_size)
        scale = check_scale(guidance_scale, "guidance_scale", self.SCALE_MEANING)
        temperature = check_scale(upsample_temperature, "upsample_temperature", "GLIDE uses 0.997")
        base_respacing = respacing_of(num_inference_steps, respacing, "100")
        if before_base is not None:
            before_base(len(prompts))
        noise = NoiseSource(seed, generator)
        low_res = quantize_8bit(self._base_samples(prompts, noise, base_respacing, scale, progress, bf16))
        final = low_res
        if upsample and self.upsampler is not None:
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
                method=self.UPSAMPLE_METHOD,
                inpaint=self._upsample_inpaint(len(prompts)),
            )
        final = final.cpu()
        return PipelineOutput(to_pil(final), final, low_res.cpu(), prompts)
