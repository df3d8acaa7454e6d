"""Chapter 8 only: GLIDE's noised CLIP against a CLIP trained on clean pictures.

    python -m glide_edu.book regenerate ch08 --retrieval  # → data/results/clip_retrieval_by_noise.json
    python -m glide_edu.book regenerate ch08 --explorer   # → data/results/glide_mini_explorer_clip.safetensors

:func:`retrieval_by_noise` asks each CLIP to pick every picture's caption from a fixed pool after the pictures
were noised to timestep t (``q_sample``, several noise seeds). A clean CLIP sees x_t as if it were a picture
(t = 0, as it would when guiding); the noised CLIP is told t. Where the clean CLIP's accuracy has fallen to
chance, its gradient ∇_{x_t} f(x_t)·g(c) says nothing about the caption — and those are the early, large-t
steps of sampling, where the picture's layout is decided. :func:`training_curve` reads the retrieval a CLIP
file recorded while it trained (:func:`glide_edu.train_clip.train_clip`), the curve that says whether it was
trained to a plateau.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from glide_edu.book import chapter_parser
from glide_edu.nn.clip import NoisedClip
from glide_edu.results import RESULTS_DIR, checkpoint_provenance, load_results, run_provenance, write_results
from glide_edu.train_clip import retrieval_accuracy, same_caption, shipped_clip

TIMESTEPS = (0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999)  # of the 1000-step cosine schedule
RETRIEVAL_PATH = RESULTS_DIR / "clip_retrieval_by_noise.json"
RETRIEVAL_SCHEMA = "glide_edu.clip_retrieval_by_noise/1"
REGENERATE = "python -m glide_edu.book regenerate ch08"


def shipped_clips(names: Sequence[str] = ("noised", "clean")) -> dict[str, NoisedClip]:
    """The book's CLIPs by name (``noised``, ``clean``, ``eval``): :func:`glide_edu.train_clip.shipped_clip`."""
    return {name: shipped_clip(name) for name in names}


def chance_level(captions: Sequence[str]) -> float:
    """Retrieval accuracy of a random guess: the mean share of the pool that carries each picture's caption."""
    return float(same_caption(list(captions)).float().mean(1).mean())


def retrieval_by_noise(clips: Mapping[str, NoisedClip], images: torch.Tensor, captions: Sequence[str],
                       timesteps: Sequence[int] = TIMESTEPS, seeds: Sequence[int] = (0, 1)) -> dict[str, Any]:
    """Top-1 caption retrieval of each CLIP on ``images`` (N, 3, H, W) noised to each t, over noise ``seeds``:
    ``{"t": [...], "chance": c, "clips": {name: {"mean": [...], "min": [...], "max": [...]}}}``."""
    if not timesteps or not seeds:
        raise ValueError("give at least one timestep and one noise seed")
    out: dict[str, Any] = {"t": [int(t) for t in timesteps], "chance": chance_level(captions), "clips": {}}
    for name, clip in clips.items():
        top = clip.config.n_timesteps - 1
        if any(not 0 <= t <= top for t in timesteps):
            raise ValueError(f"timesteps must lie in 0..{top} (the {name} CLIP's schedule); got {list(timesteps)}")
        per_t = [[retrieval_accuracy(clip, images, list(captions), t=int(t), seed=s) for s in seeds]
                 for t in timesteps]
        out["clips"][name] = {"mean": [sum(a) / len(a) for a in per_t], "min": [min(a) for a in per_t],
                              "max": [max(a) for a in per_t], "trained_on_noise": clip.trained_on_noise}
    return out


def plot_retrieval_by_noise(result: Mapping[str, Any], ax: Any) -> None:
    """Accuracy vs t, one line per CLIP with its seed range shaded, and the chance level."""
    for name, row in result["clips"].items():
        line, = ax.plot(result["t"], row["mean"], marker="o", ms=3, label=f"{name} CLIP")
        ax.fill_between(result["t"], row["min"], row["max"], color=line.get_color(), alpha=0.2)
    ax.axhline(result["chance"], color="grey", ls="--", lw=1, label="chance")
    ax.set(xlabel="timestep t of the noised pictures", ylabel="top-1 caption retrieval",
           title="Which CLIP still reads the caption in $x_t$?", ylim=(0, 1))
    ax.legend()


def training_curve(path: str | Path) -> dict[str, list]:
    """The retrieval a CLIP file recorded during training: ``{"step": [...], "t=0": [...], "t=300": [...], …}``."""
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("glide_edu", "{}"))
    rows = [r for r in meta.get("info", {}).get("history", []) if "retrieval" in r]
    if not rows:
        raise ValueError(f"{path} recorded no retrieval curve (train it with eval_every > 0)")
    curve: dict[str, list] = {"step": [r["step"] for r in rows]}
    for t in rows[-1]["retrieval"]:
        curve[f"t={t}"] = [r["retrieval"].get(t) for r in rows]
    return curve


def book_retrieval(seeds: Sequence[int] = (0, 1)) -> dict[str, Any]:
    """:func:`retrieval_by_noise` of the shipped noised and clean CLIPs on the validation pool, with provenance."""
    from glide_edu.pretrained import shipped_checkpoint
    from glide_edu.train_clip import validation_pool

    start = time.perf_counter()
    images, captions = validation_pool()
    result = retrieval_by_noise(shipped_clips(("noised", "clean")), images, captions, seeds=seeds)
    files = {f"clip_{name}": checkpoint_provenance(shipped_checkpoint(f"clip_{name}")) for name in ("noised", "clean")}
    return {"schema": RETRIEVAL_SCHEMA, "config": {"seeds": list(seeds), "n_pictures": len(captions)}, **result,
            "provenance": run_provenance(REGENERATE + " --retrieval", start, checkpoints=files)}


def load_retrieval(path: str | Path = RETRIEVAL_PATH, check_checkpoints: bool = True) -> dict[str, Any]:
    """Read ``clip_retrieval_by_noise.json``; refuse it if it was measured with other CLIPs than the shipped ones."""
    return load_results(path, RETRIEVAL_SCHEMA, REGENERATE + " --retrieval", check_checkpoints)


def regenerate(argv: list[str] | None = None) -> None:
    """``python -m glide_edu.book regenerate ch08 --retrieval | --explorer``: the chapter's precomputed results."""
    from glide_edu.pipelines.mini import mini_views_path, regenerate_mini_views

    parser = chapter_parser("ch08", __doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--retrieval", action="store_true", help="caption retrieval vs noise level, both CLIPs")
    what.add_argument("--explorer", action="store_true", help="the widget's precomputed CLIP-guided views")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.retrieval:
        results = book_retrieval()
        out = write_results(results, args.out or RETRIEVAL_PATH)
        print(f"wrote {out} in {results['provenance']['seconds']} s")
        return
    print(f"wrote {regenerate_mini_views(args.out or mini_views_path(clips=True), clips=True)}")
