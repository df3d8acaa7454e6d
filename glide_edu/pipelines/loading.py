"""Getting a pipeline's parts: the released checkpoints (cached download or a local folder) and the tokenizer.

:func:`load_glide_model` returns a :class:`~glide_edu.pipelines.models.GlideModel`: the network with the
diffusion it was trained with, both read from the checkpoint registry (:data:`glide_edu.hub.CHECKPOINTS`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glide_edu.pipelines.models import GlideModel

PathLike = str | os.PathLike[str]


def load_glide_model(
    name: str,
    device: str | torch.device = "cpu",
    *,
    cache_dir: PathLike | None = None,
    checkpoint_dir: PathLike | None = None,
    registry: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> GlideModel:
    """A GLIDE UNet (``"base"``, ``"upsample"``, ``"base-inpaint"``, ``"upsample-inpaint"``) with its diffusion.

    From ``checkpoint_dir/<file>`` when a folder is given (e.g. ``base.pt``), else from the cache (downloaded
    on first use). ``registry`` replaces :data:`glide_edu.hub.CHECKPOINTS` (other options, e.g. tiny models).
    """
    from glide_edu.hub import CHECKPOINTS, load_checkpoint

    registry = CHECKPOINTS if registry is None else registry
    if name not in registry:
        raise ValueError(f"unknown checkpoint {name!r}; known: {', '.join(registry)}")
    entry = registry[name]
    source: str | Path = name
    if checkpoint_dir is not None:
        source = Path(checkpoint_dir).expanduser() / entry.file
        if not source.is_file():
            raise ValueError(
                f"{source} not found; put the official {entry.file} there, or leave out the checkpoint folder to "
                "download it into the cache"
            )
    network = load_checkpoint(source, device, kind=name, cache_dir=cache_dir, progress=progress, registry=registry)
    return GlideModel.from_options(network, entry.options, entry.kind)


def load_noised_clip(
    device: str | torch.device = "cpu",
    *,
    cache_dir: PathLike | None = None,
    checkpoint_dir: PathLike | None = None,
    registry: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> nn.Module:
    """The noised CLIP (both encoders) from ``checkpoint_dir`` or the cache."""
    from glide_edu.hub import CHECKPOINTS, load_clip

    registry = CHECKPOINTS if registry is None else registry
    sources: list[str | Path] = ["clip/image-enc", "clip/text-enc"]
    if checkpoint_dir is not None:
        sources = [Path(checkpoint_dir).expanduser() / registry[n].file for n in ("clip/image-enc", "clip/text-enc")]
        for path in sources:
            if not path.is_file():
                raise ValueError(f"{path} not found; put it there, or leave out the checkpoint folder to download it")
    return load_clip(*sources, device=device, cache_dir=cache_dir, progress=progress, registry=registry)


def default_tokenizer(
    vocab_dir: PathLike | None = None,
    *,
    cache_dir: PathLike | None = None,
    download: bool = True,
    progress: bool = True,
) -> Any:
    """GLIDE's GPT-2 tokenizer from ``vocab_dir``, else from ``$GLIDE_EDU_VOCAB_DIR`` or the vocabulary cache,
    fetched into that cache first if missing (unless ``download=False`` or ``vocab_dir`` is given).

    ``cache_dir`` is the download cache the checkpoints use (``from_pretrained(cache_dir=...)``, the command
    line's ``--cache-dir``); the vocabulary lies in its ``vocab`` folder, as in the default cache root.
    """
    from glide_edu import vocab
    from glide_edu.hub import download_gpt2_vocab
    from glide_edu.tokenizers import GlideTokenizer

    vocab_cache = None if cache_dir is None else Path(cache_dir).expanduser() / vocab.VOCAB_FOLDER
    try:
        paths = vocab.gpt2_vocab_paths(vocab_dir, vocab_cache)
    except vocab.VocabNotFoundError:
        if not download or vocab_dir is not None:
            raise
        paths = download_gpt2_vocab(vocab_cache, progress=progress)
    return GlideTokenizer.from_files(paths.encoder_json, paths.vocab_bpe)
