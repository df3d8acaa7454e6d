"""GLIDE in miniature: the book's own text-to-image model, run by the same pipeline as the released one.

The shipped file ``data/checkpoints/glide_mini_base.safetensors`` is a GLIDE base network in the official
format (same classes and parameter names, loaded with ``strict=True``) at 32×32, trained on the book's emoji
and shapes (:mod:`glide_edu.train_text`). Its options name its tokenizer (bytes, or CLIP's BPE from the
open-clip-torch wheel: nothing to download), so

    pipe = mini_text2im()                      # a Text2ImPipeline, base model only
    out = pipe("a red apple", batch_size=4, guidance_scale=3.0, num_inference_steps=50, seed=0)

works offline in seconds on a CPU; ``glide-edu sample --model mini "a red apple"`` is the same from a shell.

:func:`mini_explorer` is the prompt explorer of the book's text-to-image widgets (chapters 7, 8, 11, 12) on
the miniature, seeded with the views precomputed in ``data/results/glide_mini_explorer.safetensors``
(``python -m glide_edu.book regenerate ch07 --explorer``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from glide_edu.pipelines.models import GlideModel

MINI_CHECKPOINT = "glide_mini_base"
EXPLORER_PROMPTS = ("a red circle", "a large green square", "two blue squares", "three red circles",
                    "a yellow triangle", "a blue circle", "a red circle above a blue square",
                    "a small purple triangle to the left of a green circle",
                    "red apple", "a grinning face", "a red heart", "a cat face")
EXPLORER_GRID: dict[str, tuple[float, ...]] = {"cfg": (1.5, 2.0, 3.0, 4.0, 6.0, 8.0), "none": ()}
EXPLORER_CLIP_GRID: dict[str, tuple[float, ...]] = {"clip": (1.0, 2.0, 4.0, 8.0, 16.0),
                                                    "clip-clean": (1.0, 2.0, 4.0, 8.0, 16.0)}
REGENERATE_VIEWS = "python -m glide_edu.book regenerate ch07 --explorer"
REGENERATE_CLIP_VIEWS = "python -m glide_edu.book regenerate ch08 --explorer"


def sample_prompts(pipe: Any, prompts: Sequence[str], scale: float, steps: int = 25, seed: int = 0,
                   batch: int = 50) -> torch.Tensor:
    """One picture per prompt from ``pipe`` (a Text2Im or CLIP-guided pipeline) at guidance scale ``scale``,
    (N, 3, S, S) in [−1, 1]; batches are seeded ``seed + first index``. Chapters 7 and 12's sweeps use it."""
    rows = []
    for i in range(0, len(prompts), batch):
        out = pipe(list(prompts[i: i + batch]), batch_size=1, guidance_scale=scale, num_inference_steps=steps,
                   seed=seed + i, upsample=False)
        rows.append(out.samples)
    return torch.cat(rows)


def mini_views_path(clips: bool = False) -> Path:
    """Where the miniature's precomputed explorer views are shipped (``clips``: the CLIP-guided ones)."""
    from glide_edu.results import RESULTS_DIR

    return RESULTS_DIR / ("glide_mini_explorer_clip.safetensors" if clips else "glide_mini_explorer.safetensors")



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


def mini_explorer(precomputed: bool = True, path: str | os.PathLike | None = None, progress: bool = True,
                  clips: bool = False):
    """A :class:`~glide_edu.pipelines.explorer.PromptExplorer` on the shipped miniature, seeded with its
    precomputed views (refused, with the command to regenerate them, when they were sampled with other
    models); ``precomputed=False`` samples every view live. ``clips``: add CLIP guidance with the book's noised
    CLIP ("clip") and its clean control ("clip-clean"), and their precomputed views."""
    from glide_edu.pipelines.explorer import PromptExplorer, load_views

    guides = {}
    if clips:
        from glide_edu.train_clip import shipped_clip

        guides = {"clip": shipped_clip("noised"), "clean_clip": shipped_clip("clean")}
    views = []
    if precomputed:
        views, _ = load_views(path if path is not None else mini_views_path(), REGENERATE_VIEWS)
        if clips:
            views += load_views(mini_views_path(clips=True), REGENERATE_CLIP_VIEWS)[0]
    return PromptExplorer(mini_text2im(), precomputed=views, progress=progress, **guides)


def regenerate_mini_views(path: str | os.PathLike | None = None, clips: bool = False) -> Path:
    """Sample every view of :data:`EXPLORER_PROMPTS` × :data:`EXPLORER_GRID` (``clips``: ×
    :data:`EXPLORER_CLIP_GRID`) with the shipped models and store them (with the checkpoints' sha256) for
    :func:`mini_explorer`."""
    import time

    from glide_edu.pipelines.explorer import precompute_views, save_views
    from glide_edu.pretrained import shipped_checkpoint
    from glide_edu.results import checkpoint_provenance, run_provenance

    start = time.perf_counter()
    explorer = mini_explorer(precomputed=False, progress=False, clips=clips)
    views = precompute_views(explorer, EXPLORER_PROMPTS, EXPLORER_CLIP_GRID if clips else EXPLORER_GRID)
    names = [MINI_CHECKPOINT, *(["clip_noised", "clip_clean"] if clips else [])]
    shipped = {name: checkpoint_provenance(shipped_checkpoint(name)) for name in names}
    provenance = run_provenance(REGENERATE_CLIP_VIEWS if clips else REGENERATE_VIEWS, start, checkpoints=shipped)
    return save_views(path if path is not None else mini_views_path(clips), views, provenance)
