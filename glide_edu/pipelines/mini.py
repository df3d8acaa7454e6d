"""GLIDE in miniature: the book's own text-to-image model, run by the same pipeline as the released one.

The shipped file ``data/checkpoints/glide_mini_base.safetensors`` is a GLIDE base network in the official
format (same classes and parameter names, loaded with ``strict=True``) at 32×32, trained on the book's emoji
and shapes (:mod:`glide_edu.train_text`). Its options name its tokenizer (bytes: nothing to download), so

    pipe = mini_text2im()                      # a Text2ImPipeline, base model only
    out = pipe("a red apple", batch_size=4, guidance_scale=3.0, num_inference_steps=50, seed=0)

works offline in seconds on a CPU; ``glide-edu sample --model mini "a red apple"`` is the same from a shell.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from glide_edu.pipelines.models import GlideModel

MINI_CHECKPOINT = "glide_mini_base"


def mini_checkpoint_path(path: str | os.PathLike | None = None) -> Path:
    """``path``, or the shipped miniature's file."""
    from glide_edu.pretrained import shipped_checkpoint

    return Path(path) if path is not None else shipped_checkpoint(MINI_CHECKPOINT)


def load_mini_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> GlideModel:
    """The miniature base model (or another GLIDE file in the small format) as a :class:`GlideModel`."""
    from glide_edu.pretrained import load_glide_checkpoint

    network, options, meta = load_glide_checkpoint(mini_checkpoint_path(path), device)
    return GlideModel.from_options(network, options, meta["kind"].removeprefix("glide-"))


def mini_text2im(path: str | os.PathLike | None = None, device: str | torch.device | None = "cpu"):
    """A :class:`~glide_edu.pipelines.text2im.Text2ImPipeline` on the miniature (no upsampler), with the
    tokenizer its options name."""
    from glide_edu.pipelines.text2im import Text2ImPipeline
    from glide_edu.pretrained import read_metadata
    from glide_edu.train_text import tokenizer_for

    file = mini_checkpoint_path(path)
    tokenizer = tokenizer_for(read_metadata(file)["options"])
    return Text2ImPipeline(load_mini_model(file), None, tokenizer, device)
