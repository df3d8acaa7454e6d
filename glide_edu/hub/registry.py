"""The registry of OpenAI's six released GLIDE (filtered) checkpoints, and how a state dict's kind is told.

====================  =======================  ==============================================
name                  file                     what it holds
====================  =======================  ==============================================
``base``              ``base.pt``              64×64 text-conditional UNet (385 M parameters)
``upsample``          ``upsample.pt``          64→256 super-resolution UNet (398 M)
``base-inpaint``      ``base_inpaint.pt``      inpainting version of ``base``
``upsample-inpaint``  ``upsample_inpaint.pt``  inpainting version of ``upsample``
``clip/image-enc``    ``clip_image_enc.pt``    noised CLIP image encoder (86 M)
``clip/text-enc``     ``clip_text_enc.pt``     noised CLIP text encoder (72 M)
====================  =======================  ==============================================

A :class:`Checkpoint` names a file, its URL, its kind (one of :data:`KINDS`) and the model options its
state dict must fit. :func:`detect_kind` reads the kind off a state dict's keys and shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import Tensor, nn

from glide_edu.hub.errors import CheckpointError
from glide_edu.nn.clip import ImageEncoder, TextEncoder
from glide_edu.nn.presets import GLIDE_KINDS, create_glide_model

__all__ = ["BASE_URL", "CHECKPOINTS", "CLIP_KINDS", "KINDS", "Checkpoint", "detect_kind"]

BASE_URL = "https://openaipublic.blob.core.windows.net/diffusion/dec-2021/"
CLIP_KINDS = ("clip/image-enc", "clip/text-enc")
KINDS = (*GLIDE_KINDS, *CLIP_KINDS)
# A GLIDE UNet's kind follows from its input convolution's channel count (x, then conditioning channels).
_KIND_BY_IN_CHANNELS = {in_channels: kind for kind, (_, in_channels) in GLIDE_KINDS.items()}


@dataclass(frozen=True)
class Checkpoint:
    """One downloadable checkpoint: where it lives and the preset its state dict must fit.

    ``kind`` is one of :data:`KINDS`; ``options`` are the reference's model options (GLIDE kinds, as in
    ``model_and_diffusion_defaults``) or its ``clip_config`` (CLIP kinds). ``sha256`` is None when unknown.
    A malformed entry (unknown kind, options of another kind, a sha256 that is not 64 lowercase hex digits)
    is a programming error and raises ``ValueError`` when it is created.
    """

    name: str
    file: str
    url: str
    kind: str
    options: Mapping[str, Any]
    sha256: str | None = None
    num_parameters: int | None = None
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))  # read-only, not shared
        if self.kind not in KINDS:
            raise ValueError(f"checkpoint {self.name!r}: unknown kind {self.kind!r}; expected one of {list(KINDS)}")
        if self.kind in GLIDE_KINDS:
            implied = _glide_kind(self.options)
            if implied != self.kind:
                raise ValueError(f"checkpoint {self.name!r}: options describe a {implied} model, not {self.kind}")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"checkpoint {self.name!r}: sha256 must be 64 lowercase hex digits")

    def build(self) -> nn.Module:
        """The (randomly initialised) model this checkpoint's state dict fits; honours ``torch.device``."""
        if self.kind in GLIDE_KINDS:
            return create_glide_model(dict(self.options))
        if self.kind == "clip/image-enc":
            return ImageEncoder(dict(self.options))
        return TextEncoder(dict(self.options))


def _glide_kind(options: Mapping[str, Any]) -> str:
    return {
        (False, False): "base",
        (True, False): "upsample",
        (False, True): "base-inpaint",
        (True, True): "upsample-inpaint",
    }[(bool(options.get("super_res")), bool(options.get("inpaint")))]


# The official options, as the reference's notebooks set them (model_and_diffusion_defaults() and
# model_and_diffusion_defaults_upsampler(), use_fp16 False). timestep_respacing only affects sampling.
_BASE_OPTIONS: dict[str, Any] = {
    "image_size": 64,
    "num_channels": 192,
    "num_res_blocks": 3,
    "channel_mult": "",
    "num_heads": 1,
    "num_head_channels": 64,
    "num_heads_upsample": -1,
    "attention_resolutions": "32,16,8",
    "dropout": 0.1,
    "text_ctx": 128,
    "xf_width": 512,
    "xf_layers": 16,
    "xf_heads": 8,
    "xf_final_ln": True,
    "xf_padding": True,
    "diffusion_steps": 1000,
    "noise_schedule": "squaredcos_cap_v2",
    "timestep_respacing": "100",
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "use_fp16": False,
    "cache_text_emb": False,
    "inpaint": False,
    "super_res": False,
}
_UPSAMPLE_OPTIONS: dict[str, Any] = {
    **_BASE_OPTIONS,
    "image_size": 256,
    "num_res_blocks": 2,
    "noise_schedule": "linear",
    "timestep_respacing": "fast27",
    "super_res": True,
}
# The noised CLIP's config.yaml.
_CLIP_CONFIG: dict[str, Any] = {
    "logit_scale": 100.0,
    "beta_schedule": "squaredcos_cap_v2",
    "n_timesteps": 1000,
    "image_size": 64,
    "patch_size": 4,
    "n_vocab": 65536,
    "max_text_len": 77,
    "n_embd": 512,
    "n_head_state_text": 64,
    "n_head_text": 8,
    "n_xf_blocks_text": 12,
    "n_head_state_image": 64,
    "n_head_image": 12,
    "n_xf_blocks_image": 12,
}


def _official(name: str, file: str, options: Mapping[str, Any], num_parameters: int, description: str) -> Checkpoint:
    return Checkpoint(name, file, BASE_URL + file, name, options, None, num_parameters, description)


CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        _official("base", "base.pt", _BASE_OPTIONS, 385_030_726, "64×64 text-conditional diffusion model"),
        _official("upsample", "upsample.pt", _UPSAMPLE_OPTIONS, 398_361_286, "64→256 text-conditional upsampler"),
        _official(
            "base-inpaint", "base_inpaint.pt", {**_BASE_OPTIONS, "inpaint": True}, 385_037_638, "64×64 inpainting"
        ),
        _official(
            "upsample-inpaint",
            "upsample_inpaint.pt",
            {**_UPSAMPLE_OPTIONS, "inpaint": True},
            398_368_198,
            "64→256 inpainting upsampler",
        ),
        _official("clip/image-enc", "clip_image_enc.pt", _CLIP_CONFIG, 86_443_776, "noised CLIP image encoder"),
        _official("clip/text-enc", "clip_text_enc.pt", _CLIP_CONFIG, 71_679_488, "noised CLIP text encoder"),
    )
}


def names_hint(registry: Mapping[str, Checkpoint]) -> str:
    """The registry's names for an error message (and a note that ``"clip"`` loads both CLIP encoders)."""
    names = ", ".join(registry)
    if all(k in registry for k in CLIP_KINDS) and "clip" not in registry:
        names += "; load_checkpoint also takes 'clip' for both CLIP encoders"
    return names


def entry_for(kind: str, registry: Mapping[str, Checkpoint]) -> Checkpoint:
    """The registry entry named ``kind``, else the first entry of that kind; :class:`CheckpointError` if none."""
    if kind in registry:
        return registry[kind]
    for entry in registry.values():
        if entry.kind == kind:
            return entry
    raise CheckpointError(f"no registered checkpoint of kind {kind!r}; known names: {names_hint(registry)}")


def detect_kind(state_dict: Mapping[str, Tensor]) -> tuple[str | None, str]:
    """(kind or None, the evidence) of a state dict: one of :data:`KINDS`, ``"clip"`` (both encoders), or None."""
    keys = set(state_dict)
    parts = {k.split(".", 1)[0] for k in keys if k != "logit_scale"}
    if parts == {"image_encoder", "text_encoder"}:
        return "clip", "image_encoder.* and text_encoder.* keys (a whole NoisedClip)"
    if "blocks.input.w_t" in keys or "blocks.input.patch_proj" in keys:
        return "clip/image-enc", "CLIP image-encoder keys (blocks.input.w_t, patch_proj)"
    if "blocks.input.w_voc" in keys:
        return "clip/text-enc", "CLIP text-encoder keys (blocks.input.w_voc)"
    weight = state_dict.get("input_blocks.0.0.weight")
    if isinstance(weight, Tensor) and weight.ndim == 4:
        in_channels = int(weight.shape[1])
        if "token_embedding.weight" not in keys:
            return None, f"a UNet without GLIDE's text transformer (input conv of {in_channels} channels)"
        kind = _KIND_BY_IN_CHANNELS.get(in_channels)
        return kind, f"its input convolution takes {in_channels} channels"
    sample = ", ".join(sorted(keys)[:3]) or "no keys"
    return None, f"no GLIDE or CLIP keys ({sample}…)"
