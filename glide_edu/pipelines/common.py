"""What the three GLIDE pipelines share: input checks, devices, seeds, precision, the upsampling stage, output.

Conventions (the reference notebooks'): images are tensors in [−1, 1], (B, 3, H, W); the base model's
samples are quantised to 8 bits before the upsampler sees them; a seed ``s`` with no generator draws the
same normals, in the same order, as the notebook run after ``torch.manual_seed(s)`` on the CPU (x_T of the
whole — for CFG doubled — batch first, then one tensor per step, then the upsampler's x_T).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from glide_edu.data import quantize_8bit  # noqa: F401  (re-exported for the pipelines)
from glide_edu.nn.fp16 import convert_to_fp16
from glide_edu.plotting import to_pil  # noqa: F401  (re-exported for the pipelines)
from glide_edu.respace import SpacedDiffusion, create_diffusion

DEVICES = ("cpu", "cuda", "mps")
UPSAMPLE_TEMPERATURE = 0.997  # the notebooks': "1.0 is sharper, but sometimes results in grainy artifacts"


@dataclass
class PipelineOutput:
    """What a pipeline returns: PIL images and the tensors behind them (all on the CPU, float32)."""

    images: list[Image.Image]  # final images (upsampled when an upsampler ran)
    samples: Tensor  # (B, 3, H, W) in [−1, 1], the final samples
    low_res: Tensor | None  # (B, 3, h, w) the base model's samples, quantised to 8 bits
    prompts: list[str] = field(default_factory=list)  # the prompt of each row

    def __len__(self) -> int:
        return len(self.images)


# ------------------------------------------------------------------------------------------------ checks
def check_prompts(prompt: str | Sequence[str], batch_size: int) -> list[str]:
    """One prompt per output row: each prompt repeated ``batch_size`` times (one-line ValueError otherwise)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1 (images per prompt), got {batch_size!r}")
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ValueError("the prompt list is empty; pass a prompt string or a non-empty list of strings")
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise ValueError(f"prompts must be strings, got {type(bad[0]).__name__}; pass e.g. ['a corgi']")
    return [p for p in prompts for _ in range(batch_size)]


def check_scale(value: float, name: str, meaning: str) -> float:
    """A finite float >= 0, else a one-line ValueError naming ``name`` and what it means."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0 ({meaning}), got {value!r}") from None
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"{name} must be a finite number >= 0 ({meaning}), got {value}")
    return scale


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "cpu", "cuda[:i]", "mps" or None (= cuda if available, else mps, else cpu); one-line errors."""
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use one of {', '.join(DEVICES)} (or None to pick one)") from None
    if dev.type not in DEVICES:
        raise ValueError(f"unknown device {device!r}; use one of {', '.join(DEVICES)} (or None to pick one)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use device='cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but Apple's MPS backend is not available; use device='cpu'")
    return dev


def respacing_of(num_inference_steps: int | None, respacing: str | None, default: str) -> str:
    """The respacing string from diffusers' ``num_inference_steps`` or GLIDE's string (not both)."""
    if num_inference_steps is not None:
        if respacing is not None:
            raise ValueError("give num_inference_steps or a respacing string, not both")
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        return str(num_inference_steps)
    return default if respacing is None else str(respacing)


def diffusion_for(model: nn.Module, respacing: str) -> SpacedDiffusion:
    """The respaced learned-range ε diffusion a GLIDE model samples with (its schedule is in ``model.glide``)."""
    schedule, steps = schedule_of(model)
    try:
        return create_diffusion(steps, schedule, respacing)
    except ValueError as err:
        raise ValueError(f"bad respacing for this model: {err}") from None


def schedule_of(model: nn.Module) -> tuple[str, int]:
    """(noise_schedule, diffusion_steps) recorded on a model by :func:`glide_edu.pipelines.attach_schedule`."""
    info = getattr(model, "glide_schedule", None)
    if info is None:  # GLIDE's defaults: super-resolution models use the linear schedule
        return ("linear" if _takes_low_res(model) else "squaredcos_cap_v2"), 1000
    return info


def attach_schedule(model: nn.Module, noise_schedule: str, diffusion_steps: int = 1000) -> nn.Module:
    """Record the schedule a model was trained with (GLIDE options ``noise_schedule`` / ``diffusion_steps``)."""
    model.glide_schedule = (str(noise_schedule), int(diffusion_steps))
    return model


def _takes_low_res(model: nn.Module) -> bool:
    return type(model).__name__.startswith("SuperRes")


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --------------------------------------------------------------------------------------- randomness
class NoiseSource:
    """N(0, I) draws from one CPU generator, moved to the device (same numbers on every device)."""

    def __init__(self, seed: int | None = None, generator: torch.Generator | None = None) -> None:
        if seed is not None and generator is not None:
            raise ValueError("give seed or generator, not both")
        if generator is None:
            generator = torch.Generator()
            if seed is None:
                generator.seed()
            else:
                if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
                    raise ValueError(f"seed must be an integer, got {seed!r}")
                generator.manual_seed(int(seed))
        self.generator = generator

    def __call__(self, like: Tensor) -> Tensor:
        noise = torch.randn(like.shape, generator=self.generator, device=self.generator.device)
        return noise.to(device=like.device, dtype=like.dtype)

    def draw(self, shape: Sequence[int], device: torch.device) -> Tensor:
        return self(torch.empty(tuple(shape), device=device))


# ---------------------------------------------------------------------------------------- precision
def prepare_models(models: Sequence[nn.Module | None], device: torch.device, fp16: bool) -> None:
    """Move models to ``device`` in eval mode; with ``fp16`` convert them as the reference does."""
    for model in models:
        if model is None:
            continue
        model.to(device).eval()
        if fp16 and hasattr(model, "input_blocks"):
            convert_to_fp16(model)


@contextlib.contextmanager
def autocast(device: torch.device, bf16: bool) -> Iterator[None]:
    """``torch.autocast(…, bfloat16)`` when ``bf16``, else nothing."""
    if not bf16:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield


# ------------------------------------------------------------------------------------- images & stages
def text_batch(tokenizer: Any, prompts: Sequence[str], text_ctx: int, device: torch.device) -> dict[str, Tensor]:
    """{"tokens", "mask"} for ``prompts`` (GLIDE's padded tokens and boolean mask) on ``device``."""
    tokens, mask = tokenizer.tokens_and_mask(list(prompts), text_ctx)
    return {"tokens": tokens.to(device), "mask": mask.to(device)}


def upsample_stage(
    upsampler: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    low_res: Tensor,
    noise: NoiseSource,
    respacing: str,
    temperature: float,
    progress: bool,
    bf16: bool = False,
    method: str = "ddim",
    inpaint: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """The upsampler's loop: x_T = temperature·N(0, I) at its size, conditioned on the prompts and ``low_res``.

    ``method`` "ddim" (η = 0, text-to-image) or "ancestral" (inpainting); ``inpaint`` = (image, mask) at
    the upsampler's size (adds the model inputs and the known-region clamp). No classifier-free guidance
    (the notebooks use none here).
    """
    from glide_edu.inpaint import known_region_clamp

    device = model_device(upsampler)
    size = upsampler.config.image_size
    kwargs = text_batch(tokenizer, prompts, upsampler.text_config.text_ctx, device)
    kwargs["low_res"] = low_res.to(device)
    denoised_fn = None
    if inpaint is not None:
        image, mask = (t.to(device) for t in inpaint)
        kwargs["inpaint_image"], kwargs["inpaint_mask"] = image * mask, mask
        denoised_fn = known_region_clamp(image * mask, mask)
    diffusion = diffusion_for(upsampler, respacing)
    shape = (len(prompts), 3, size, size)
    loop = diffusion.ddim_sample_loop if method == "ddim" else diffusion.p_sample_loop
    x_T = noise.draw(shape, device)
    with autocast(device, bf16):
        out = loop(
            upsampler,
            shape,
            noise=x_T,
            temperature=temperature,
            denoised_fn=denoised_fn,
            model_kwargs=kwargs,
            progress=progress,
            noise_fn=noise,
        )
    return out.float()


def base_stage(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    noise: NoiseSource,
    respacing: str,
    guidance_scale: float,
    progress: bool,
    bf16: bool = False,
    inpaint: tuple[Tensor, Tensor] | None = None,
    cond_fn: Callable[..., Tensor] | None = None,
) -> Tensor:
    """The base model's ancestral loop at its own size; returns (B, 3, s, s) samples in [−1, 1].

    With ``guidance_scale`` != 1 (and no ``cond_fn``) it runs GLIDE's classifier-free guidance: the batch is
    doubled as [prompts; ""·B], ε is guided on channels 0–2 only (:func:`~glide_edu.guidance.classifier_free_guidance`)
    and the first half is kept. At s = 1 the conditional model runs alone (the same result, half the work).
    ``inpaint`` = (image, mask) at the base size adds the model inputs and the known-region clamp;
    ``cond_fn`` (CLIP guidance) shifts each step's mean by Σ·gradient.
    """
    from glide_edu.guidance import classifier_free_guidance
    from glide_edu.inpaint import known_region_clamp

    device = model_device(model)
    size, batch = model.config.image_size, len(prompts)
    guided = cond_fn is None and guidance_scale != 1.0
    rows = list(prompts) + ([""] * batch if guided else [])
    kwargs = text_batch(tokenizer, rows, model.text_config.text_ctx, device)
    denoised_fn = None
    if inpaint is not None:
        image, mask = (t.to(device).expand(batch, *t.shape[1:]) for t in inpaint)
        if guided:
            image, mask = torch.cat([image, image]), torch.cat([mask, mask])
        kwargs["inpaint_image"], kwargs["inpaint_mask"] = image * mask, mask
        denoised_fn = known_region_clamp(image * mask, mask)
    model_fn = classifier_free_guidance(model, guidance_scale) if guided else model
    diffusion = diffusion_for(model, respacing)
    with autocast(device, bf16):
        out = diffusion.p_sample_loop(
            model_fn,
            (len(rows), 3, size, size),
            denoised_fn=denoised_fn,
            cond_fn=cond_fn,
            model_kwargs=kwargs,
            device=device,
            progress=progress,
            noise_fn=noise,
        )
    return out[:batch].float()
