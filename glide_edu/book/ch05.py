"""Chapter 5 only: the guidance-scale sweep of classifier guidance on the digits, and the explorer widget.

    python -m glide_edu.book regenerate ch05   # → data/results/classifier_guidance.json

:func:`sweep` guides the shipped unconditional digits model with the noisy and the clean classifier at each
scale and measures the samples; :func:`guidance_view` is the explorer's update (pure: no widget state).
The algorithm itself (the classifier's gradient as ``cond_fn``) is :mod:`glide_edu.guidance`; training the
classifiers is :mod:`glide_edu.train_classifier`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glide_edu.book import chapter_parser
from glide_edu.data import load_digits
from glide_edu.diffusion import GaussianDiffusion
from glide_edu.guidance import check_guidance_scale, guided_samples
from glide_edu.metrics import diversity, fid_proxies, guided_sample_quality, load_feature_net
from glide_edu.nn.classifier import EncoderUNetModel
from glide_edu.pretrained import load_small_checkpoint, shipped_checkpoint
from glide_edu.respace import create_diffusion
from glide_edu.results import (
    RESULTS_DIR,
    checkpoint_provenance,
    initial_noise,
    load_image_views,
    load_results,
    run_provenance,
    save_image_views,
    write_results,
)
from glide_edu.train_classifier import classifier_name, load_classifier

__all__ = [
    "SWEEP_SCALES",
    "RESULTS_PATH",
    "REGENERATE",
    "sweep",
    "class_balance_fid",
    "load_sweep",
    "format_sweep",
    "ExplorerModels",
    "GuidanceView",
    "explorer_models",
    "guidance_view",
    "regenerate",
]

SWEEP_SCALES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
RESULTS_PATH = RESULTS_DIR / "classifier_guidance.json"
SCHEMA = "glide_edu.classifier_guidance/1"
REGENERATE = "python -m glide_edu.book regenerate ch05"


def sweep_labels(n: int) -> Tensor:
    """Balanced targets 0, 1, …, 9, 0, 1, … for ``n`` samples."""
    return torch.arange(n) % 10


def load_sampling_model(steps: int = 25) -> tuple[torch.nn.Module, GaussianDiffusion, Path]:
    """The shipped unconditional L_simple digits model and its process respaced to ``steps`` steps."""
    path = shipped_checkpoint("digits_simple")
    model, _, meta = load_small_checkpoint(path)
    diffusion = create_diffusion(**{**meta["diffusion_config"], "timestep_respacing": str(int(steps))})
    return model, diffusion, path


def sweep(
    scales: Sequence[float] = SWEEP_SCALES,
    n: int = 200,
    steps: int = 25,
    seed: int = 0,
    classifiers: Sequence[str] = ("noisy", "clean"),
    progress: bool = True,
) -> dict[str, Any]:
    """Guide the shipped unconditional digits model with each classifier at each scale; measure the samples.

    Every run starts from the same x_T (``initial_noise(n, seed)``) and sees the same per-step noise (a
    generator seeded with ``seed + 1``), targets :func:`sweep_labels`, ancestral sampling with ``steps``
    respaced steps. Metrics (:func:`glide_edu.metrics.guided_sample_quality`) against the training digits:
    FID-proxy, precision, recall, accuracy of the separately trained evaluation net, within-class
    diversity; plus ``guide_accuracy``, how often the *guiding* classifier (shown the final samples at t = 0)
    agrees with the target, and ``class_counts``, the samples' class histogram as the evaluation net reads it.
    s = 0 is one unguided run shared by both classifiers.
    """
    start = time.perf_counter()
    model, diffusion, model_path = load_sampling_model(steps)
    net = load_feature_net()
    real, _ = load_digits(16, "train")
    labels = sweep_labels(n)
    x_T = initial_noise(n, seed)
    loaded = {name: load_classifier(classifier_name(name == "noisy")) for name in classifiers}
    results: dict[str, dict[str, Any]] = {name: {} for name in classifiers}
    unguided: dict[str, float] | None = None
    for name, (clf, _) in loaded.items():
        clean = name == "clean"
        for s in scales:
            if s == 0 and unguided is not None:
                results[name][f"{s:g}"] = dict(unguided)
                continue
            t0 = time.perf_counter()
            samples = guided_samples(
                model, diffusion, clf, labels, s, noise=x_T, generator=torch.Generator().manual_seed(seed + 1),
                clean=clean,
            )
            row = guided_sample_quality(real, samples, labels, net)
            with torch.no_grad():
                guide_pred = clf(samples, torch.zeros(n, dtype=torch.long)).argmax(1)
                row["guide_accuracy"] = float((guide_pred == labels).float().mean())
                eval_pred = net.logits(samples).argmax(1)
            row = {k: round(v, 4) for k, v in row.items()}
            row["class_counts"] = torch.bincount(eval_pred, minlength=10).tolist()  # as the evaluation net reads them
            results[name][f"{s:g}"] = row
            if s == 0:
                unguided = row
            if progress:
                print(f"{name} s={s:g}: {row} ({time.perf_counter() - t0:.0f} s)", flush=True)
    x_test, y_test = load_digits(16, "test")
    reference = {k: round(v, 4) for k, v in guided_sample_quality(real, x_test, y_test, net).items()}
    return {
        "schema": SCHEMA,
        "provenance": run_provenance(
            REGENERATE + (f" --n-samples {n}" if n != 200 else "") + (f" --steps {steps}" if steps != 25 else ""),
            start,
            checkpoints={
                "digits_simple": checkpoint_provenance(model_path),
                **{name: checkpoint_provenance(meta["path"], meta) for name, (_, meta) in loaded.items()},
            },
        ),
        "config": {
            "scales": [float(s) for s in scales],
            "n_samples": n,
            "labels": "i % 10",
            "sampler": f"ancestral, {steps} respaced steps of the 1000, Σ = β̃ (digits_simple)",
            "steps": steps,
            "seed": seed,
            "real": "training digits (1,438)",
            "metrics": "glide_edu.metrics.guided_sample_quality + guide_accuracy",
        },
        "results": results,
        "reference_test_digits": reference,
    }


def class_balance_fid(
    counts: Sequence[int], n_draws: int = 10, seed: int = 0
) -> tuple[list[float], list[float]]:
    """FID-proxy of *real* test digits drawn with a given class histogram, and of balanced draws of the same size.

    Each draw picks ``counts[c]`` distinct test digits of class c (without replacement) — the other draw
    ``sum(counts) // 10`` of each class — and scores them against the training digits. The difference
    between the two lists is what the class histogram alone costs the FID-proxy, with the images real.
    """
    x_test, y_test = load_digits(16, "test")
    real, _ = load_digits(16, "train")
    net = load_feature_net()
    pools = [(y_test == c).nonzero().flatten() for c in range(10)]
    balanced = [sum(counts) // 10] * 10
    for want in (counts, balanced):
        short = [c for c in range(10) if want[c] > len(pools[c])]
        if short:
            raise ValueError(f"the test set has too few digits of class {short[0]} for this histogram; lower its count")
    g = torch.Generator().manual_seed(seed)
    draws: tuple[list[Tensor], list[Tensor]] = ([], [])
    for _ in range(n_draws):
        for sets, want in zip(draws, (counts, balanced), strict=True):
            idx = torch.cat([pools[c][torch.randperm(len(pools[c]), generator=g)[: want[c]]] for c in range(10)])
            sets.append(x_test[idx])
    scores = fid_proxies(real, draws[0] + draws[1], net)
    return scores[:n_draws], scores[n_draws:]


def load_sweep(path: str | Path = RESULTS_PATH, check_checkpoints: bool = True) -> dict[str, Any]:
    """Read the precomputed sweep; refuse it if it was made with other checkpoints than the shipped ones."""
    return load_results(path, SCHEMA, REGENERATE, check_checkpoints)


def format_sweep(
    results: dict[str, Any], metrics: Sequence[str] = ("fid_proxy", "precision", "recall", "accuracy", "diversity")
) -> str:
    """A markdown table: one row per (classifier, scale), one column per metric."""
    lines = ["| classifier | s | " + " | ".join(metrics) + " |", "|---|---:|" + "---:|" * len(metrics)]
    for name, rows in results["results"].items():
        for s, row in rows.items():
            lines.append(f"| {name} | {s} | " + " | ".join(f"{row[m]:.3g}" for m in metrics) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- the widget
@dataclass
class ExplorerModels:
    """Everything the guidance explorer needs that does not depend on the slider: loaded once."""

    model: torch.nn.Module
    diffusion: GaussianDiffusion
    classifiers: dict[str, EncoderUNetModel]
    net: Any  # the evaluation DigitFeatureNet
    x_T: Tensor  # (n, 1, 16, 16), the same start for every class and scale
    seed: int
    steps: int


def explorer_models(steps: int = 10, n: int = 8, seed: int = 0) -> ExplorerModels:
    """Load the digits model (respaced to ``steps`` ancestral steps), both classifiers and the evaluation net."""
    model, diffusion, _ = load_sampling_model(steps)
    classifiers = {name: load_classifier(classifier_name(name == "noisy"))[0] for name in ("noisy", "clean")}
    return ExplorerModels(model, diffusion, classifiers, load_feature_net(), initial_noise(n, seed), seed, steps)


@dataclass(frozen=True)
class GuidanceView:
    """What the explorer shows for one (class, scale, classifier)."""

    samples: Tensor  # (n, 1, 16, 16)
    label: int
    scale: float
    classifier: str
    eval_accuracy: float  # fraction the evaluation net reads as ``label``
    diversity: float  # mean pairwise feature distance of the n samples
    seconds: float

    def readout(self) -> str:
        return (
            f"digit {self.label}, s = {self.scale:g} ({self.classifier} classifier): "
            f"evaluation accuracy {self.eval_accuracy:.2f}, diversity {self.diversity:.1f}  "
            f"[{self.seconds:.2f} s]"
        )


def guidance_view(models: ExplorerModels, label: int, scale: float, classifier: str = "noisy") -> GuidanceView:
    """Sample ``len(models.x_T)`` digits of class ``label`` with guidance scale ``scale``, and measure them.

    The start x_T and the per-step noise are fixed (seeded by ``models.seed``), so between two calls only
    what you change — the scale, the class or the classifier — differs. Pure: no widget state, no drawing.
    """
    if classifier not in models.classifiers:
        raise ValueError(f"classifier must be one of {', '.join(models.classifiers)}, got {classifier!r}")
    if not 0 <= int(label) <= 9:
        raise ValueError(f"label must be a digit 0–9, got {label!r}")
    scale = check_guidance_scale(scale, "0 = unguided")
    start = time.perf_counter()
    n = models.x_T.shape[0]
    labels = torch.full((n,), int(label), dtype=torch.long)
    samples = guided_samples(
        models.model,
        models.diffusion,
        models.classifiers[classifier],
        labels,
        float(scale),
        noise=models.x_T,
        generator=torch.Generator().manual_seed(models.seed + 1),
        clean=classifier == "clean",
    )
    with torch.no_grad():
        accuracy = float((models.net.logits(samples.clamp(-1, 1)).argmax(1) == labels).float().mean())
    elapsed = time.perf_counter() - start
    spread = diversity(samples, models.net)
    return GuidanceView(samples, int(label), float(scale), classifier, accuracy, spread, elapsed)


VIEWS_PATH = RESULTS_DIR / "classifier_guidance_views.safetensors"
VIEWS_SCHEMA = "glide_edu.classifier_guidance_views/1"
EXPLORER_SCALES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
EXPLORER_CLASSIFIERS = ("noisy", "clean")


def explorer_provenance() -> dict[str, Any]:
    """The shipped files an explorer view depends on: the digits model, both classifiers, the evaluation net."""
    from glide_edu.metrics import FEATURE_NET_PATH

    files = {"digits_simple": shipped_checkpoint("digits_simple"), "fid_digits": FEATURE_NET_PATH,
             **{name: shipped_checkpoint(classifier_name(name == "noisy")) for name in EXPLORER_CLASSIFIERS}}
    return {name: checkpoint_provenance(path) for name, path in files.items()}


def precompute_views(models: ExplorerModels, path: str | Path = VIEWS_PATH) -> Path:
    """Every (digit, scale, classifier) of the explorer, sampled once and stored as 8-bit pictures with their
    readouts, so the widget answers at once (``regenerate ch05 --views``)."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    keys, images = [], []
    jobs = [(d, s, c) for c in EXPLORER_CLASSIFIERS for d in range(10) for s in EXPLORER_SCALES]
    for digit, scale, classifier in tqdm(jobs, desc="explorer views"):
        view = guidance_view(models, digit, scale, classifier)
        keys.append({"label": digit, "scale": scale, "classifier": classifier, "eval_accuracy": view.eval_accuracy,
                     "diversity": view.diversity, "seconds": round(view.seconds, 3)})
        images.append(view.samples.clamp(-1, 1))
    provenance = run_provenance(REGENERATE + " --views", start, checkpoints=explorer_provenance(),
                                steps=models.steps, n=int(models.x_T.shape[0]), seed=models.seed)
    return save_image_views(path, keys, torch.stack(images), VIEWS_SCHEMA, provenance)


def load_views(path: str | Path = VIEWS_PATH) -> dict[tuple[int, float, str], GuidanceView]:
    """The precomputed explorer views by (digit, scale, classifier); refused when made with other files."""
    keys, images, _ = load_image_views(path, VIEWS_SCHEMA, REGENERATE + " --views")
    return {(k["label"], k["scale"], k["classifier"]): GuidanceView(x, k["label"], k["scale"], k["classifier"],
                                                                   k["eval_accuracy"], k["diversity"], k["seconds"])
            for k, x in zip(keys, images, strict=True)}


def regenerate(argv: list[str] | None = None) -> None:
    """``python -m glide_edu.book regenerate ch05 [options]``: the scale sweep → classifier_guidance.json."""
    parser = chapter_parser("ch05", __doc__)
    parser.add_argument("--scales", type=float, nargs="+", default=list(SWEEP_SCALES))
    parser.add_argument("--n-samples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--views", action="store_true", help="instead of the sweep: the explorer's precomputed views")
    args = parser.parse_args(argv)
    if args.views:
        print(f"wrote {precompute_views(explorer_models(steps=10, n=8), args.out or VIEWS_PATH)}")
        return
    args.out = args.out or RESULTS_PATH
    results = sweep(args.scales, args.n_samples, args.steps, args.seed)
    print(format_sweep(results))
    print(f"wrote {write_results(results, args.out)} in {results['provenance']['seconds']} s")
