"""Code that only one chapter uses: ``glide_edu.book.chNN`` holds chapter NN's experiments, sweeps, the
regeneration of its precomputed results and its widgets' view models (see docs/architecture.md).

One command regenerates any chapter's precomputed results::

    python -m glide_edu.book regenerate ch04 [options]     # options: ... regenerate ch04 --help
    python -m glide_edu.book list                          # chapters with precomputed results

The core library (everything outside ``glide_edu.book`` and ``glide_edu.checks``) never imports this package.
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["REGENERABLE", "chapter_parser", "regenerate"]

# chapter → what its regeneration writes (each module defines ``regenerate(argv)``)
REGENERABLE = {
    "ch03": "data/results/digits_convergence.json (training curves; --ema: digits_ema.json, the EMA comparison)",
    "ch04": "data/results/digits_sampling.json (samplers × steps × seeds, bits/dim; --grids: the widget's samples)",
    "ch05": "data/results/classifier_guidance.json — the guidance-scale sweep (--views: the explorer's views)",
    "ch06": "data/results/digits_cfg.json — the classifier-free guidance sweep (--views: the explorer's views)",
    "ch07": "data/results/glide_mini_curve.json (--curve RUN: the miniature's training curve), "
            "glide_mini_guidance.json (--sweep: oracle accuracy vs s), "
            "glide_mini_explorer.safetensors (--explorer: the widgets' views)",
    "ch08": "data/results/clip_retrieval_by_noise.json (--retrieval: both CLIPs' caption retrieval vs t), "
            "glide_mini_explorer_clip.safetensors (--explorer: the CLIP-guided views of the widgets)",
    "ch12": "data/results/glide_mini_fronts.json (--sweep: CFG and CLIP guidance vs scale, six metrics), "
            "glide_mini_guides_by_step.json (--by-step RUN: both guides along the training run), "
            "glide_mini_background.json (--background: the metrics with backgrounds set to white)",
}


def chapter_parser(chapter: str, doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of ``python -m glide_edu.book regenerate <chapter>`` (first docstring line as help)."""
    description = (doc or "").strip().split("\n")[0]
    return argparse.ArgumentParser(prog=f"python -m glide_edu.book regenerate {chapter}", description=description)


def regenerate(chapter: str, argv: list[str] | None = None) -> None:
    """Run chapter ``chapter``'s regeneration (e.g. ``"ch04"``) with its own command-line options ``argv``."""
    if chapter not in REGENERABLE:
        raise ValueError(f"chapter {chapter!r} has no precomputed results; choose one of {', '.join(REGENERABLE)}")
    importlib.import_module(f"glide_edu.book.{chapter}").regenerate(argv or [])
