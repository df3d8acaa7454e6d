"""Getting a pipeline's parts: the released checkpoints (cached download or a local folder) and the tokenizer."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glide_edu.pipelines.common import attach_schedule, prepare_models, resolve_device


def load_glide_model(
    name: str,
    device: str | torch.device = "cpu",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    registry: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> nn.Module:
    """A GLIDE UNet (``"base"``, ``"upsample"``, ``"base-inpaint"``, ``"upsample-inpaint"``) with its schedule.

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
    model = load_checkpoint(source, device, kind=name, cache_dir=cache_dir, progress=progress, registry=registry)
    options = entry.options
    return attach_schedule(
        model, options.get("noise_schedule", "squaredcos_cap_v2"), options.get("diffusion_steps", 1000)
    )


def load_noised_clip(
    device: str | torch.device = "cpu",
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
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


def default_tokenizer(vocab_dir: str | os.PathLike[str] | None = None, download: bool = True, progress: bool = True):
    """GLIDE's GPT-2 tokenizer from ``vocab_dir`` / the cache; fetched into the cache first if missing."""
    from glide_edu.hub import download_gpt2_vocab
    from glide_edu.tokenizers import glide_tokenizer
    from glide_edu.vocab import VocabError

    try:
        return glide_tokenizer(vocab_dir)
    except VocabError as err:
        if not download or vocab_dir is not None or "not found" not in str(err):
            raise
    download_gpt2_vocab(progress=progress)
    return glide_tokenizer()


class PipelineBase:
    """Device, precision, tokenizer and checkpoint handling shared by the three pipelines.

    Subclasses name the checkpoints they need in ``CHECKPOINTS`` (base first, then the upsampler, then
    ``"clip"`` if any) and take them, in that order, as the first constructor arguments.
    """

    CHECKPOINTS: tuple[str, ...] = ()

    def __init__(
        self,
        models: Sequence[nn.Module | None],
        tokenizer: Any = None,
        device: str | torch.device | None = "cpu",
        fp16: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        if fp16 and self.device.type == "cpu":
            import warnings

            warnings.warn("fp16 on the CPU is slow and only useful for checking; use a GPU or bf16=True", stacklevel=3)
        self.fp16 = bool(fp16)
        prepare_models(models, self.device, self.fp16)
        self._tokenizer = tokenizer

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = default_tokenizer()
        return self._tokenizer

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
    ) -> Any:
        """The released checkpoints this pipeline needs (``CHECKPOINTS``), from the cache (downloaded once,
        ≈1.5 GB per UNet) or from ``checkpoint_dir``; ``upsample=False`` skips the upsampler."""
        kw = {"cache_dir": cache_dir, "checkpoint_dir": checkpoint_dir, "registry": registry, "progress": progress}
        parts: dict[str, nn.Module | None] = {}
        for name in cls.CHECKPOINTS:
            if name == "clip":
                parts[name] = load_noised_clip(**kw)
            elif name.startswith("upsample") and not upsample:
                parts[name] = None
            else:
                parts[name] = load_glide_model(name, **kw)
        return cls(*parts.values(), tokenizer=tokenizer, device=device, fp16=fp16)
