"""What the three GLIDE pipelines share: input checks, devices, seeds, precision and the output.

Conventions (the reference notebooks'): images are tensors in [−1, 1], (B, 3, H, W); the base model's
samples are quantised to 8 bits before the upsampler sees them; a seed ``s`` with no generator draws the
same normals, in the same order, as the notebook run after ``torch.manual_seed(s)`` on the CPU (x_T of the
whole — for CFG doubled — batch first, then one tensor per step, then the upsampler's x_T).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from glide_edu.nn.fp16 import convert_to_fp16
from glide_edu.pipelines.models import GlideModel
from glide_edu.plotting import to_pil

DEVICES = ("cpu", "cuda", "mps")
UPSAMPLE_TEMPERATURE = 0.997  # the notebooks': "1.0 is sharper, but sometimes results in grainy artifacts"


@dataclass
class PipelineOutput:
    """What a pipeline returns: PIL images and the tensors behind them (all on the CPU, float32)."""

    images: list[Image.Image]  # final images (upsampled when an upsampler ran)
    samples: Tensor  # (B, 3, H, W) in [−1, 1], the final samples
    low_res: Tensor | None  # (B, 3, h, w) the base model's samples, quantised to 8 bits
    prompts: list[str] = field(default_factory=list)  # the prompt of each row

    @classmethod
    def from_samples(cls, samples: Tensor, low_res: Tensor, prompts: list[str]) -> PipelineOutput:
        samples = samples.float().cpu()
        return cls(to_pil(samples), samples, low_res.float().cpu(), prompts)

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


def check_temperature(value: float) -> float:
    """The upsampler's x_T scale: a finite number > 0 (GLIDE uses 0.997), else a one-line ValueError."""
    try:
        temperature = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"upsample_temperature must be a number > 0 (GLIDE uses 0.997), got {value!r}") from None
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"upsample_temperature must be a finite number > 0 (GLIDE uses 0.997), got {value}")
    return temperature


def check_component(model: Any, kind: str, role: str) -> GlideModel:
    """``model`` as the GlideModel of ``kind`` a pipeline needs in slot ``role`` (one-line ValueError otherwise)."""
    if not isinstance(model, GlideModel):
        raise ValueError(
            f"{role} must be a GlideModel (a network with its diffusion schedule), got {type(model).__name__}; "
            f"use load_glide_model({kind!r}) or GlideModel.from_options(network, options, {kind!r})"
        )
    if model.kind != kind:
        raise ValueError(
            f"{role} must be a model of kind {kind!r}, got one of kind {model.kind!r}; use a matching pair"
        )
    return model


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
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type not in DEVICES:
        raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r} was asked for but no CUDA GPU is available; use cpu")
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"device {str(device)!r} does not exist: this machine has {count} CUDA GPU(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but Apple's MPS backend is not available; use cpu")
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
                try:
                    generator.manual_seed(int(seed))
                except (RuntimeError, ValueError, OverflowError):
                    raise ValueError(f"seed {seed} is out of range; use an integer in 0…2**63 − 1") from None
        self.generator = generator

    def __call__(self, like: Tensor) -> Tensor:
        noise = torch.randn(like.shape, generator=self.generator, device=self.generator.device)
        return noise.to(device=like.device, dtype=like.dtype)

    def draw(self, shape: Sequence[int], device: torch.device) -> Tensor:
        return self(torch.empty(tuple(shape), device=device))


# ------------------------------------------------------------------------------------ devices & precision
def place_models(
    models: Sequence[GlideModel | None], device: str | torch.device | None, fp16: bool, extra: Sequence[nn.Module] = ()
) -> torch.device:
    """Resolve ``device``, move the networks (and ``extra`` modules, e.g. CLIP) there in eval mode; returns it.

    ``fp16`` converts the GLIDE networks as the reference does (:mod:`glide_edu.nn.fp16`); ``extra`` modules
    stay float32 (the reference keeps the noised CLIP in float32).
    """
    dev = resolve_device(device)
    if fp16 and dev.type == "cpu":
        warnings.warn("fp16 on the CPU is slow and only useful for checking; use a GPU or bf16=True", stacklevel=3)
    for model in models:
        if model is not None:
            model.network.to(dev).eval()
            if fp16:
                convert_to_fp16(model.network)
    for module in extra:
        module.to(dev).eval()
    return dev


@contextlib.contextmanager
def network_fn(network: nn.Module, device: torch.device, bf16: bool) -> Iterator[Callable[..., Tensor]]:
    """Yields ``network`` itself, or with ``bf16`` a function that runs it under bfloat16 autocast and returns
    float32, with :func:`bf16_weights` applied for the duration (use it around the whole sampling loop).

    Only the network runs in low precision: the sampler's own arithmetic (posterior mean and variance, x̂₀,
    clipping, the next x_t) stays float32, as it would if autocast covered the network call alone.
    """
    if not bf16:
        yield network
        return

    def run(*args: Any, **kwargs: Any) -> Tensor:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            return network(*args, **kwargs).float()

    with bf16_weights(network):
        yield run


LOW_PRECISION_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)  # the layers autocast runs in bfloat16


@contextlib.contextmanager
def bf16_weights(network: nn.Module) -> Iterator[None]:
    """Give ``network``'s convolutions and linear layers bfloat16 copies of their float32 weights and biases
    (4-D ones channels-last) for the duration; the float32 tensors are put back, untouched, on exit.

    Under bfloat16 autocast these layers cast their weights to bfloat16 on *every* call — 385 M values per
    step for GLIDE's base model. Casting once per sampling loop gives the same bfloat16 values (the same
    round-to-nearest cast), and channels-last weights let oneDNN pick its faster convolution kernels.
    Parameters that are not float32 (fp16-converted networks) are left as they are.
    """
    saved: list[tuple[nn.Parameter, Tensor]] = []
    try:
        for module in network.modules():
            if not isinstance(module, LOW_PRECISION_LAYERS):
                continue
            for param in (module.weight, module.bias):
                if param is None or param.dtype != torch.float32:
                    continue
                low = param.data.to(torch.bfloat16)  # (out, in, k, k) for convolutions
                saved.append((param, param.data))
                param.data = low.contiguous(memory_format=torch.channels_last) if low.dim() == 4 else low
        yield
    finally:
        for param, data in saved:
            param.data = data
