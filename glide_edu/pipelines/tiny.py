"""Tiny random-weight GLIDE models in the official format, for tests, the book's CI and quick experiments.

They have the released models' structure (same classes, module names, text transformer, learned-range
output, schedules) at toy widths — the configurations of the reference fixtures — so every pipeline runs on
them in seconds. Their pictures are noise-like: the weights are random. The caption context is 48 (not
128) — long enough for short prompts even with the byte-level stand-in tokenizer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from glide_edu.nn.clip import NoisedClip
from glide_edu.nn.presets import create_glide_model
from glide_edu.pipelines.models import GlideModel

_TEXT = {"text_ctx": 48, "xf_width": 8, "xf_layers": 2, "xf_heads": 2, "xf_final_ln": True, "xf_padding": True}
_COMMON = {
    "num_channels": 32,
    "num_res_blocks": 1,
    "num_heads": 1,
    "num_head_channels": 16,
    "num_heads_upsample": -1,
    "attention_resolutions": "16,8",
    "dropout": 0.1,
    **_TEXT,
    "diffusion_steps": 1000,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
}
# base: 16×16; upsample: 16 → 32 (the released pair is 64 → 256).
TINY_OPTIONS: dict[str, dict[str, Any]] = {
    "base": {**_COMMON, "image_size": 16, "channel_mult": "1,2", "noise_schedule": "squaredcos_cap_v2"},
    "upsample": {
        **_COMMON,
        "image_size": 32,
        "channel_mult": "1,1,1",
        "noise_schedule": "linear",
        "super_res": True,
    },
    "base-inpaint": {
        **_COMMON,
        "image_size": 16,
        "channel_mult": "1,1",
        "noise_schedule": "squaredcos_cap_v2",
        "inpaint": True,
    },
    "upsample-inpaint": {
        **_COMMON,
        "image_size": 32,
        "channel_mult": "1,1,1",
        "noise_schedule": "linear",
        "inpaint": True,
        "super_res": True,
    },
}
TINY_CLIP_CONFIG: dict[str, Any] = {
    "logit_scale": 100.0,
    "beta_schedule": "squaredcos_cap_v2",
    "n_timesteps": 1000,
    "image_size": 16,
    "patch_size": 4,
    "n_vocab": 65536,
    "max_text_len": 77,
    "n_embd": 16,
    "n_head_state_text": 4,
    "n_head_text": 2,
    "n_xf_blocks_text": 2,
    "n_head_state_image": 12,
    "n_head_image": 2,
    "n_xf_blocks_image": 2,
}


def _perturb(model: nn.Module, seed: int, std: float = 0.02) -> None:
    """Add std·N(0, 1) to every parameter, so the layers GLIDE initialises to zero contribute too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)


def tiny_glide_model(kind: str, seed: int = 0) -> GlideModel:
    """A tiny random-weight model of ``kind`` ("base", "upsample", "base-inpaint", "upsample-inpaint"), with its
    diffusion (the released models' schedules: cosine at the base size, linear for the upsamplers)."""
    if kind not in TINY_OPTIONS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(TINY_OPTIONS)}")
    options = TINY_OPTIONS[kind]
    torch.manual_seed(seed)
    model = create_glide_model(options)
    _perturb(model, seed + 1)
    return GlideModel.from_options(model.eval(), options, kind)


def tiny_clip(seed: int = 0) -> NoisedClip:
    """A tiny random-weight noised CLIP for 16×16 images."""
    torch.manual_seed(seed)
    model = NoisedClip(TINY_CLIP_CONFIG)
    _perturb(model, seed + 1)
    return model.eval()


def tiny_registry() -> dict[str, Any]:
    """A checkpoint registry (like :data:`glide_edu.hub.CHECKPOINTS`) whose presets are the tiny options."""
    from glide_edu.hub import CHECKPOINTS, Checkpoint

    registry = {}
    for name, entry in CHECKPOINTS.items():
        options = TINY_OPTIONS.get(name, TINY_CLIP_CONFIG)
        registry[name] = Checkpoint(name, entry.file, entry.url, entry.kind, options, description="tiny " + name)
    return registry
