"""How much memory a GLIDE pipeline run needs, estimated before anything is loaded.

peak ≈ overhead + weights + the largest stage's activations, where

* weights: every model's parameters in their dtype (counted exactly on a ``meta``-device build, after the
  reference's fp16 conversion when asked);
* activations of one UNet call: k · rows · C · s² · u · bytes, with C the model's base channels, s its image
  size and u = (2·num_res_blocks + 2) · Σ_l mult_l / 4^l the feature maps of its levels in units of C·s²
  (rows = 2·batch under classifier-free guidance). Only one stage runs at a time, and each step frees the
  previous step's activations, so the stages' maximum counts, not their sum (CLIP guidance adds the noised
  CLIP's forward-and-backward to the base stage).

The factor k was measured (fp32, CPU, ``VmHWM`` over one forward). The full-size models (docs/benchmarks.md:
pipeline peak 3.96 GiB at batch 1, 3.17 GiB of it after building both models; +0.22 GiB in the base stage on
its CFG-doubled batch, +0.79 GiB in the upsampler) give k = 2.68 for the 64×64 base and 1.96 for the
upsampler; the tiny models of :mod:`glide_edu.pipelines.tiny` (one forward at 256–2048 rows, 0.27–1.3 GB)
give 2.68–2.84 and 1.75–2.08. With k = 2.7 for the base models (they attend at half their resolution) and
2.0 for the upsamplers (at an eighth) the estimate is 3.97 GiB for the full-size pipeline at batch 1 and
within −5 %…+14 % of every tiny measurement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from glide_edu.nn.fp16 import convert_to_fp16
from glide_edu.nn.presets import glide_configs

GIB = 1024**3
CPU_OVERHEAD = int(0.25 * GIB)  # the Python process with torch loaded (3.17 GiB RSS − 2.92 GiB of weights)
K_BASE, K_UPSAMPLER = 2.7, 2.0


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a pipeline run is expected to need at its peak."""

    weights: int
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.activations + self.overhead

    def describe(self) -> str:
        return (
            f"about {self.total / GIB:.1f} GiB ({self.weights / GIB:.1f} GiB of weights + "
            f"{self.activations / GIB:.1f} GiB of activations + {self.overhead / GIB:.2f} GiB for the process)"
        )


def weight_bytes(entry: Any, fp16: bool = False) -> int:
    """Bytes of a registry entry's parameters: 4 per registered parameter in float32, else counted on a build
    on the ``meta`` device (nothing is allocated)."""
    if not fp16 and getattr(entry, "num_parameters", None):
        return 4 * int(entry.num_parameters)
    with torch.device("meta"):
        model = entry.build()
    if fp16 and hasattr(model, "input_blocks"):
        convert_to_fp16(model)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def unet_activation_bytes(options: Mapping[str, Any], rows: int, bytes_per_value: int = 4) -> int:
    """Peak activations of one call of the GLIDE UNet described by ``options`` on ``rows`` rows (see above)."""
    unet, _ = glide_configs(dict(options))
    units = (2 * unet.num_res_blocks + 2) * sum(m / 4**level for level, m in enumerate(unet.resolved_channel_mult()))
    k = K_UPSAMPLER if options.get("super_res") else K_BASE
    return math.ceil(k * rows * unet.model_channels * unet.image_size**2 * units * bytes_per_value)


def clip_activation_bytes(options: Mapping[str, Any], rows: int) -> int:
    """The noised CLIP image encoder's forward and backward (CLIP guidance) on ``rows`` images, float32.

    Per layer: about 15 activations of tokens × width kept for the backward pass (LayerNorms, qkv, MLP) and
    two of heads × tokens² (attention scores and weights).
    """
    tokens = (options["image_size"] // options["patch_size"]) ** 2 + 1
    per_layer = 15 * tokens * options["n_embd"] + 2 * options["n_head_image"] * tokens**2
    return rows * options["n_xf_blocks_image"] * per_layer * 4


def estimate_peak_memory(
    registry: Mapping[str, Any],
    base: str,
    upsampler: str | None,
    batch: int,
    *,
    cfg: bool,
    clip: bool = False,
    fp16: bool = False,
    bf16: bool = False,
    device_type: str = "cpu",
    weights: int | None = None,
) -> MemoryEstimate:
    """The peak of a pipeline run with registry entries ``base`` / ``upsampler`` (None: no upsampling).

    ``cfg``: the base stage runs on the doubled batch; ``clip``: the noised CLIP guides the base stage;
    ``fp16`` / ``bf16``: half-precision weights (fp16) and activations (counted as 3 bytes a value, as norms
    stay float32); ``bf16`` also holds a bfloat16 copy of the sampling network's weights while its stage runs
    (:func:`glide_edu.pipelines.common.bf16_weights`, counted as half its float32 bytes).
    ``weights`` skips the ``meta`` builds when already known (see :func:`models_weight_bytes`).
    """
    if weights is None:
        weights = models_weight_bytes(registry, [base, upsampler], clip=clip, fp16=fp16)
    value = 3 if (fp16 or bf16) else 4
    base_stage = unet_activation_bytes(registry[base].options, batch * (2 if cfg else 1), value)
    if clip:
        base_stage += clip_activation_bytes(registry["clip/image-enc"].options, batch)
    up_stage = unet_activation_bytes(registry[upsampler].options, batch, value) if upsampler else 0
    if bf16 and not fp16:
        base_stage += weight_bytes(registry[base]) // 2
        up_stage += weight_bytes(registry[upsampler]) // 2 if upsampler else 0
    overhead = CPU_OVERHEAD if device_type == "cpu" else 0
    return MemoryEstimate(weights, max(base_stage, up_stage), overhead)


def models_weight_bytes(
    registry: Mapping[str, Any], names: Sequence[str | None], *, clip: bool = False, fp16: bool = False
) -> int:
    """Bytes of the weights of the named entries (None entries skipped), plus both CLIP encoders if ``clip``."""
    total = sum(weight_bytes(registry[name], fp16) for name in names if name is not None)
    if clip:
        total += sum(weight_bytes(registry[name]) for name in ("clip/image-enc", "clip/text-enc"))
    return total


def available_memory(device: torch.device) -> int | None:
    """Free bytes for ``device``: CUDA's free memory, else the system's available RAM (None if unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.virtual_memory().available)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def largest_batch(fits: Any, upper: int) -> int:
    """The largest b in 1…``upper`` with ``fits(b)`` true (``fits`` monotone), or 0 if even 1 does not fit."""
    low, high = 0, upper
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


__all__ = [
    "MemoryEstimate",
    "available_memory",
    "estimate_peak_memory",
    "largest_batch",
    "models_weight_bytes",
]
