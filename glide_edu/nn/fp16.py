"""Half-precision inference exactly as GLIDE's reference does it (``model.convert_to_fp16()``).

The reference does not simply call ``model.half()``. It converts

* every Conv1d/Conv2d/Conv3d inside ``input_blocks``, ``middle_block`` and ``output_blocks`` (ResBlock and
  skip convolutions, attention ``qkv`` / ``encoder_kv`` / ``proj_out``);
* the text transformer's Linear layers, ``transformer_proj`` and ``token_embedding``;

and sets ``model.dtype = float16`` so activations are cast to half before the input blocks and the text
transformer. Everything else stays float32: GroupNorm and LayerNorm parameters (the norms also compute in
float32), the ResBlocks' ``emb_layers``, ``time_embed``, the output head ``out`` (activations are cast back to
the input dtype first), ``final_ln`` and — because the reference's ``.to(float16)`` on them is a no-op —
``positional_embedding`` and ``padding_embedding``. Attention softmaxes run in float32.
"""

from __future__ import annotations

import torch
from torch import nn

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
UNET_GROUPS = ("input_blocks", "middle_block", "output_blocks")


def _to(module: nn.Module, types: tuple[type[nn.Module], ...], dtype: torch.dtype) -> None:
    for sub in module.modules():
        if isinstance(sub, types):
            sub.to(dtype)


def convert_to_fp16(model: nn.Module) -> nn.Module:
    """Convert ``model`` (a GLIDE / ADM UNet) in place as the reference's ``convert_to_fp16``; returns it."""
    _set_precision(model, torch.float16)
    return model


def convert_to_fp32(model: nn.Module) -> nn.Module:
    """Undo :func:`convert_to_fp16` (every converted layer back to float32); returns ``model``."""
    _set_precision(model, torch.float32)
    return model


def _set_precision(model: nn.Module, dtype: torch.dtype) -> None:
    missing = [g for g in UNET_GROUPS if not hasattr(model, g)]
    if missing:
        raise ValueError(f"{type(model).__name__} is not a GLIDE/ADM UNet (no {missing[0]}); fp16 needs one")
    for group in UNET_GROUPS:
        _to(getattr(model, group), CONV_TYPES, dtype)
    if hasattr(model, "transformer"):
        _to(model.transformer, (nn.Linear, nn.Conv2d), dtype)
        model.transformer_proj.to(dtype)
        model.token_embedding.to(dtype)
    model.dtype = dtype


def parameter_dtypes(model: nn.Module) -> dict[str, torch.dtype]:
    """{parameter name: dtype} — to see which layers a conversion touched."""
    return {name: p.dtype for name, p in model.named_parameters()}
