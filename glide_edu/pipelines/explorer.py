"""The prompt explorer behind the text-to-image widgets of chapters 7, 8, 11 and 12.

A reader types a prompt, picks a guidance method and moves the scale; :class:`PromptExplorer` samples a few
pictures with the miniature (or any 32×32 GLIDE base model) and, when the prompt is a shapes caption, lets the
oracle (:mod:`glide_edu.oracle`) judge each picture against it:

    explorer = PromptExplorer(mini_text2im(), clip=noised_clip)      # clip: optional, enables "clip"
    view = explorer("a red circle above a blue square", "cfg", 3.0)
    view.images      # (n, 3, 32, 32) in [−1, 1]
    view.verdicts    # one dict per picture (oracle attributes → True/False), or None for a free prompt

Methods: ``"cfg"`` — classifier-free guidance ε̂ = ε(∅) + s·(ε(c) − ε(∅)); ``"clip"`` — CLIP guidance
μ̂ = μ + s·Σ·∇ f(x_t, t)·g(c) with the conditional model (no CFG); ``"clip-clean"`` — the same with a CLIP
trained on clean pictures (shown t = 0: chapter 8's control); ``"none"`` — the conditional model alone
(s ignored). Every view of one prompt starts from the same noise (``seed``), so moving the slider changes
the guidance only. Views are cached, so revisiting a setting is instant; a fresh one is ``n`` pictures ×
``num_inference_steps`` respaced ancestral steps (the update time is in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from glide_edu.oracle import check, parse_caption
from glide_edu.results import load_image_views, save_image_views

METHODS = ("cfg", "clip", "clip-clean", "none")


@dataclass(frozen=True)
class ExplorerView:
    """What one widget update shows: the pictures, the oracle's verdicts and how long sampling took."""

    prompt: str
    method: str
    scale: float
    images: Tensor  # (n, 3, H, W) in [−1, 1]
    verdicts: list[dict[str, bool]] | None  # None: not a shapes caption, the oracle cannot judge it
    seconds: float

    @property
    def caption_accuracy(self) -> float | None:
        """The share of pictures whose whole caption the oracle confirms (None for a free prompt)."""
        if self.verdicts is None:
            return None
        return sum(v["caption"] for v in self.verdicts) / len(self.verdicts)

    def title(self) -> str:
        """A one-line figure title: method, scale and the oracle's score."""
        how = {"cfg": f"CFG s = {self.scale:g}", "clip": f"CLIP guidance s = {self.scale:g}",
               "clip-clean": f"clean-CLIP guidance s = {self.scale:g}", "none": "no guidance"}[self.method]
        judged = "" if self.verdicts is None else \
            f" — oracle: {sum(v['caption'] for v in self.verdicts)}/{len(self.verdicts)} right"
        return f"“{self.prompt}”, {how}{judged}"


def is_shapes_caption(prompt: str) -> bool:
    """True when the oracle can read ``prompt`` (a caption of the book's shapes grammar)."""
    try:
        parse_caption(prompt)
    except ValueError:
        return False
    return True


class PromptExplorer:
    """Prompt + method + scale → an :class:`ExplorerView`; ``cfg_pipe`` a Text2ImPipeline on a base model,
    ``clip`` an optional noised CLIP for the ``"clip"`` method, ``clean_clip`` an optional clean one for
    ``"clip-clean"`` (same image size)."""

    def __init__(self, cfg_pipe: Any, clip: nn.Module | None = None, n: int = 4, num_inference_steps: int = 20,
                 seed: int = 0, cache_size: int = 1024, precomputed: Iterable[ExplorerView] = (),
                 progress: bool = False, clean_clip: nn.Module | None = None) -> None:
        if n < 1 or num_inference_steps < 1:
            raise ValueError(f"n={n}, num_inference_steps={num_inference_steps}: both must be at least 1")
        self.cfg_pipe, self.n, self.steps, self.seed = cfg_pipe, n, num_inference_steps, seed
        self.progress = progress  # a tqdm bar while a view is sampled live (a widget's fresh prompt)
        from glide_edu.pipelines.clip_guided import ClipGuidedPipeline

        self.clip_pipes = {method: ClipGuidedPipeline(cfg_pipe.base, model, None, cfg_pipe.tokenizer, cfg_pipe.device)
                           for method, model in (("clip", clip), ("clip-clean", clean_clip)) if model is not None}
        self.cache: dict[tuple[str, str, float], ExplorerView] = {}
        self.cache_size = cache_size
        for view in precomputed:  # views sampled ahead of time (same n, steps and seed): instant to show
            if view.images.shape[0] != n:
                raise ValueError(f"a precomputed view has {view.images.shape[0]} pictures, the explorer shows {n}; "
                                 "precompute with the same n")
            self.cache[(view.prompt, view.method, view.scale)] = view

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods this explorer offers ("clip" and "clip-clean" only with their CLIP models)."""
        return tuple(m for m in METHODS if m in ("cfg", "none") or m in self.clip_pipes)

    def __call__(self, prompt: str, method: str = "cfg", scale: float = 3.0) -> ExplorerView:
        if method not in self.methods:
            needs = {"clip": "a noised CLIP: PromptExplorer(pipe, clip=…)",
                     "clip-clean": "a clean CLIP: PromptExplorer(pipe, clean_clip=…)"}
            hint = f" (give the explorer {needs[method]})" if method in needs else ""
            raise ValueError(f"unknown guidance method {method!r}; choose one of {', '.join(self.methods)}{hint}")
        prompt = " ".join(prompt.split())
        key = (prompt, method, 0.0 if method == "none" else float(scale))
        if key in self.cache:
            return self.cache[key]
        start = time.perf_counter()
        common = {"batch_size": self.n, "num_inference_steps": self.steps, "seed": self.seed, "upsample": False,
                  "progress": self.progress}
        if method in self.clip_pipes:
            out = self.clip_pipes[method](prompt, guidance_scale=scale, **common)
        else:
            out = self.cfg_pipe(prompt, guidance_scale=1.0 if method == "none" else scale, **common)
        images = out.samples  # (n, 3, H, W)
        verdicts = [check(img, prompt) for img in images] if is_shapes_caption(prompt) else None
        view = ExplorerView(prompt, method, key[2], images, verdicts, time.perf_counter() - start)
        if len(self.cache) >= self.cache_size:
            self.cache.pop(next(iter(self.cache)))
        self.cache[key] = view
        return view


def precompute_views(explorer: PromptExplorer, prompts: Sequence[str], grid: dict[str, Sequence[float]],
                     progress: bool = True) -> list[ExplorerView]:
    """Every (prompt, method, scale) of ``grid`` (method → scales; "none" needs no scales) sampled once, under one
    progress bar (give an explorer made with ``progress=False``, or each view adds its own)."""
    from tqdm.auto import tqdm

    jobs = [(p, m, s) for p in prompts for m, scales in grid.items() for s in (scales if m != "none" else [0.0])]
    return [explorer(p, m, s) for p, m, s in tqdm(jobs, desc="explorer views", disable=not progress)]


VIEWS_SCHEMA = "glide_edu.explorer_views/1"


def save_views(path: str | os.PathLike, views: Sequence[ExplorerView], provenance: dict[str, Any]) -> Path:
    """The views as 8-bit pictures with their (prompt, method, scale) keys and ``provenance`` (atomic write)."""
    keys = [{"prompt": v.prompt, "method": v.method, "scale": v.scale, "seconds": round(v.seconds, 3)}
            for v in views]
    return save_image_views(path, keys, torch.stack([v.images for v in views]), VIEWS_SCHEMA, provenance)


def load_views(path: str | os.PathLike, regenerate: str = "its regeneration command",
               check_checkpoints: bool = True) -> tuple[list[ExplorerView], dict[str, Any]]:
    """(views with the oracle's verdicts recomputed from the stored pictures, provenance); refused when the
    views were sampled with another checkpoint than the shipped one (``check_checkpoints``)."""
    keys, images, provenance = load_image_views(path, VIEWS_SCHEMA, regenerate, check_checkpoints)
    views = []
    for key, x in zip(keys, images, strict=True):  # x: (n, 3, H, W)
        verdicts = [check(img, key["prompt"]) for img in x] if is_shapes_caption(key["prompt"]) else None
        views.append(ExplorerView(key["prompt"], key["method"], float(key["scale"]), x, verdicts, key["seconds"]))
    return views, provenance


def scales_follow_method(method_control: Any, scale_control: Any, grids: Mapping[str, Sequence[float]]) -> None:
    """Keep a scale slider's options to the scales ``grids`` stores for the selected method, so that every step of
    the slider shows another view ("none" and a method without scales get the single option 1.0).

    ``method_control``: an ipywidgets ToggleButtons or Dropdown of methods; ``scale_control``: a SelectionSlider.
    On a method change the slider keeps the scale nearest to the one it showed.
    """
    def update(change: Any = None) -> None:
        options = tuple(grids.get(method_control.value) or (1.0,))  # "none": s is ignored
        old = scale_control.value
        nearest = min(options, key=lambda v: abs(v - old)) if old is not None else options[0]
        if tuple(scale_control.options) != options:
            scale_control.options = options
        scale_control.value = nearest

    method_control.observe(update, names="value")
    update()


def explorer_controls(prompts: Sequence[str], grids: Mapping[str, Sequence[float]], methods: Sequence[str],
                      method: str, scale: float, prompt: str = "a red circle above a blue square") -> dict[str, Any]:
    """The explorer widget's controls, for ``ipywidgets.interact(show, **controls)`` with ``show(prompt, method,
    s)``: a prompt box offering ``prompts`` (other text is sampled live), buttons for ``methods`` and a scale slider
    that offers the selected method's ``grids`` scales (:func:`scales_follow_method`)."""
    import ipywidgets as widgets  # the book's widget toolkit; the library itself imports without it

    if method not in methods:
        raise ValueError(f"method {method!r} is not among the buttons {list(methods)}: pick one of them")
    method_control = widgets.ToggleButtons(options=list(methods), value=method)
    scale_control = widgets.SelectionSlider(options=(scale,), value=scale, description="s")
    scales_follow_method(method_control, scale_control, grids)  # the method's scales, the nearest one selected
    prompt_control = widgets.Combobox(value=prompt, options=list(prompts), description="prompt",
                                      continuous_update=False)
    return {"prompt": prompt_control, "method": method_control, "s": scale_control}
