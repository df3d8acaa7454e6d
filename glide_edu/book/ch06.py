"""Chapter 6 only: classifier-free guidance on the digits, measured, and the pure function behind its widget.

    python -m glide_edu.book regenerate ch06   # → data/results/digits_cfg.json

``sweep`` draws class-balanced samples from the shipped class-conditional digits models
(``digits_cfg_p10`` and ``digits_cfg_p20``: label dropout p_uncond = 0.1 and 0.2, see
``python -m glide_edu.recipes digits-cfg``) at each guidance scale s (GLIDE's convention: s = 1 is the plain
conditional model, s = 0 the unconditional one of the same network) and reports, via
:func:`glide_edu.metrics.guided_sample_quality`, the FID-proxy, k-NN precision and recall against the training
digits, the accuracy of the clean feature classifier on the intended labels, and the within-class diversity.
Every scale starts from the same x_T and sees the same per-step noise (common random numbers), so only s
changes between columns.

:func:`cfg_grid` is the chapter's widget: 8 samples of one digit at one scale with a few ancestral steps.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glide_edu.book import chapter_parser
from glide_edu.data import load_digits
from glide_edu.guidance import check_guidance_scale, sample_cfg
from glide_edu.metrics import DigitFeatureNet, classifier_accuracy, diversity, guided_sample_quality, load_feature_net
from glide_edu.pretrained import load_small_checkpoint, shipped_checkpoint, snapshots
from glide_edu.recipes import NULL_LABEL, cfg_checkpoint_name
from glide_edu.respace import create_diffusion
from glide_edu.results import (
    RESULTS_DIR,
    check_extendable,
    checkpoint_provenance,
    initial_noise,
    load_image_views,
    load_results,
    run_provenance,
    save_image_views,
    write_results,
)

__all__ = [
    "CFG_RESULTS_PATH",
    "CFG_SCALES",
    "CFG_SCHEMA",
    "CfgModel",
    "cfg_grid",
    "cfg_samples",
    "cfg_sweep",
    "load_cfg_model",
    "load_cfg_results",
    "cfg_training_curve",
    "load_cfg_curve",
    "regenerate",
]

CFG_RESULTS_PATH = RESULTS_DIR / "digits_cfg.json"
CFG_SCHEMA = "glide_edu.digits_cfg/1"
REGENERATE = "python -m glide_edu.book regenerate ch06"
CFG_SCALES = (0.0, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)
P_UNCONDS = (0.1, 0.2)


class CfgModel:
    """A shipped class-conditional digits model: the network, its diffusion config and file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.model, _, self.meta = load_small_checkpoint(self.path)
        self.diffusion_config: dict[str, Any] = self.meta["diffusion_config"]
        self.null_label = int(self.meta["info"].get("null_label", NULL_LABEL))
        self._diffusions: dict[int, Any] = {}

    def diffusion(self, steps: int):
        """The respaced process with ``steps`` evenly spread steps (cached)."""
        if steps not in self._diffusions:
            self._diffusions[steps] = create_diffusion(**self.diffusion_config, timestep_respacing=str(steps))
        return self._diffusions[steps]

    def provenance(self) -> dict[str, Any]:
        return checkpoint_provenance(self.path, self.meta)


def load_cfg_model(p_uncond: float = 0.1, path: str | Path | None = None) -> CfgModel:
    """The shipped model trained with label dropout ``p_uncond`` (or the checkpoint at ``path``)."""
    return CfgModel(path or shipped_checkpoint(cfg_checkpoint_name(p_uncond)))


@torch.no_grad()
def cfg_samples(
    cm: CfgModel, labels: Tensor, scale: float, steps: int = 25, method: str = "ancestral", seed: int = 0
) -> Tensor:
    """Samples (N, 1, 16, 16) for ``labels`` at guidance ``scale``; x_T from ``seed``, step noise from seed + 1."""
    scale = check_guidance_scale(scale)
    noise = initial_noise(len(labels), seed)
    gen = torch.Generator().manual_seed(seed + 1)
    return sample_cfg(cm.model, cm.diffusion(steps), labels, scale, cm.null_label, noise, method, gen)


def cfg_sweep(
    scales: Sequence[float] = CFG_SCALES,
    p_unconds: Sequence[float] = P_UNCONDS,
    n_samples: int = 200,
    steps: int = 25,
    seed: int = 0,
    checkpoints: Mapping[float, str | Path] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The results dictionary written to ``data/results/digits_cfg.json`` (see the module docstring)."""
    start = time.perf_counter()
    net = load_feature_net()
    real, _ = load_digits(16, "train")
    test, test_labels = load_digits(16, "test")
    labels = torch.arange(n_samples) % 10
    models = {p: load_cfg_model(p, (checkpoints or {}).get(p)) for p in p_unconds}
    results: dict[str, dict[str, Any]] = {}
    for p, cm in models.items():
        row: dict[str, Any] = {}
        for s in scales:
            t0 = time.perf_counter()
            fake = cfg_samples(cm, labels, s, steps, "ancestral", seed)
            row[f"{s:g}"] = {k: round(v, 4) for k, v in guided_sample_quality(real, fake, labels, net).items()}
            if progress:
                print(f"p_uncond={p} s={s:g}: {row[f'{s:g}']} ({time.perf_counter() - t0:.0f} s)", flush=True)
        results[f"{p:g}"] = row
    ref_n = min(n_samples, len(test))
    reference = guided_sample_quality(real, test[:ref_n], test_labels[:ref_n], net)
    return {
        "schema": CFG_SCHEMA,
        "config": {
            "scales": [float(s) for s in scales],
            "p_unconds": [float(p) for p in p_unconds],
            "n_samples": n_samples,
            "labels": "class-balanced, label i % 10 for sample i",
            "sampler": f"ancestral, learned Σ from the conditional branch, {steps} respaced steps",
            "steps": steps,
            "seed": seed,
            "real": "training digits (load_digits(16, 'train'))",
        },
        "reference_test_digits": {k: round(v, 4) for k, v in reference.items()} | {"n": ref_n},
        "results": results,
        "provenance": run_provenance(
            REGENERATE + (f" --n-samples {n_samples}" if n_samples != 200 else "")
            + (f" --steps {steps}" if steps != 25 else ""),
            start,
            checkpoints={f"{p:g}": cm.provenance() for p, cm in models.items()},
        ),
    }


def load_cfg_results(path: str | Path = CFG_RESULTS_PATH, check_checkpoints: bool = True) -> dict[str, Any]:
    """Read ``digits_cfg.json``; refuse it if its schema or checkpoints differ from the shipped ones."""
    return load_results(path, CFG_SCHEMA, REGENERATE, check_checkpoints)


@torch.no_grad()
def cfg_grid(
    cm: CfgModel,
    digit: int,
    scale: float,
    n: int = 8,
    steps: int = 10,
    seed: int = 0,
    net: DigitFeatureNet | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The widget's update: ``n`` samples of ``digit`` at guidance ``scale`` and their live readouts.

    Ancestral sampling with the learned Σ and ``steps`` respaced steps, x_T and the per-step noise drawn from
    ``seed`` — the same for every scale and digit, so moving the slider changes only s. Readouts: ``accuracy``
    (the clean feature classifier agrees with ``digit``) and ``diversity`` (mean pairwise feature distance).
    """
    if isinstance(digit, bool) or not 0 <= int(digit) <= 9 or int(digit) != digit:
        raise ValueError(f"digit must be an integer 0…9, got {digit!r}")
    labels = torch.full((n,), int(digit))
    samples = cfg_samples(cm, labels, scale, steps, "ancestral", seed)
    net = net or load_feature_net()
    clipped = samples.clamp(-1, 1)
    return samples, {"accuracy": classifier_accuracy(net, clipped, labels), "diversity": diversity(clipped, net)}


CURVE_PATH = RESULTS_DIR / "digits_cfg_convergence.json"
CURVE_SCHEMA = "glide_edu.digits_cfg_convergence/1"


def cfg_training_curve(runs: Mapping[float, str | Path], every: int = 1000, n: int = 500, steps: int = 25,
                       seeds: Sequence[int] = (0, 1), scales: Sequence[float] = (1.0, 3.0),
                       extend: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The training curve of the class-conditional models: for EMA snapshots of each run (p_uncond → run
    folder), class-balanced samples at each guidance scale, measured like the sweep, for every seed.

    ``extend``: an earlier curve (same ``n``, ``steps``, seeds and scales) whose rows are kept; only the
    snapshots it has not measured are measured — for a run that was continued after the curve was drawn.
    """
    start = time.perf_counter()
    config = {"n_samples": n, "steps": steps, "seeds": list(seeds), "scales": list(scales), "every": every}
    done: dict[str, set[int]] = {}
    if extend is not None:
        check_extendable(extend, config)
        done = {p: {r["step"] for r in rows} for p, rows in extend["curves"].items()}
    real = load_digits(16, "train")[0]
    net = load_feature_net()
    labels = torch.arange(n) % 10
    curves: dict[str, list[dict[str, Any]]] = {}
    for p, run_dir in runs.items():
        rows = list(extend["curves"].get(f"{p:g}", [])) if extend is not None else []
        for step, path in snapshots(run_dir).items():
            if step % every or step in done.get(f"{p:g}", ()):
                continue
            cm = CfgModel(path)
            for s in scales:
                for seed in seeds:
                    q = guided_sample_quality(real, cfg_samples(cm, labels, s, steps, "ancestral", seed), labels, net)
                    rows.append({"step": step, "scale": s, "seed": seed, **{k: round(v, 4) for k, v in q.items()}})
        curves[f"{p:g}"] = sorted(rows, key=lambda r: (r["step"], r["scale"], r["seed"]))
    shipped = {f"{p:g}": shipped_checkpoint(cfg_checkpoint_name(p)) for p in runs}
    return {"schema": CURVE_SCHEMA, "config": config, "curves": curves,
            "provenance": run_provenance(REGENERATE + " --curve …", start,
                                         checkpoints={k: checkpoint_provenance(v) for k, v in shipped.items()},
                                         extends=extend)}


def load_cfg_curve(path: str | Path = CURVE_PATH, check_checkpoints: bool = True) -> dict[str, Any]:
    """Read ``digits_cfg_convergence.json``; refuse it if its final models are not the shipped ones."""
    return load_results(path, CURVE_SCHEMA, REGENERATE + " --curve …", check_checkpoints)


VIEWS_PATH = RESULTS_DIR / "digits_cfg_views.safetensors"
VIEWS_SCHEMA = "glide_edu.digits_cfg_views/1"
EXPLORER_SCALES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)


def precompute_views(cm: CfgModel, net: DigitFeatureNet | None = None, path: str | Path = VIEWS_PATH) -> Path:
    """Every (digit, scale) of the explorer (:func:`cfg_grid`, 8 samples, 10 steps, seed 0) sampled once and
    stored as 8-bit pictures with their readouts (``regenerate ch06 --views``)."""
    from tqdm.auto import tqdm

    from glide_edu.metrics import FEATURE_NET_PATH

    start = time.perf_counter()
    net = net or load_feature_net()
    keys, images = [], []
    for digit, scale in tqdm([(d, s) for d in range(10) for s in EXPLORER_SCALES], desc="explorer views"):
        samples, read = cfg_grid(cm, digit, scale, n=8, net=net)
        keys.append({"digit": digit, "scale": scale, **read})
        images.append(samples.clamp(-1, 1))
    checkpoints = {cm.path.stem: cm.provenance(), "fid_digits": checkpoint_provenance(FEATURE_NET_PATH)}
    provenance = run_provenance(REGENERATE + " --views", start, checkpoints=checkpoints, n=8, steps=10, seed=0)
    return save_image_views(path, keys, torch.stack(images), VIEWS_SCHEMA, provenance)


def load_views(path: str | Path = VIEWS_PATH) -> dict[tuple[int, float], tuple[Tensor, dict[str, float]]]:
    """The precomputed explorer views: (digit, scale) → (samples (8, 1, 16, 16), readouts), like :func:`cfg_grid`."""
    keys, images, _ = load_image_views(path, VIEWS_SCHEMA, REGENERATE + " --views")
    return {(k["digit"], k["scale"]): (x, {"accuracy": k["accuracy"], "diversity": k["diversity"]})
            for k, x in zip(keys, images, strict=True)}


def regenerate(argv: list[str] | None = None) -> None:
    """``python -m glide_edu.book regenerate ch06 [options]``: the CFG sweep → digits_cfg.json."""
    parser = chapter_parser("ch06", __doc__)
    parser.add_argument("--scales", type=float, nargs="+", default=list(CFG_SCALES))
    parser.add_argument("--p-unconds", type=float, nargs="+", default=list(P_UNCONDS))
    parser.add_argument("--n-samples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--curve-every", type=int, default=1000,
                        help="measure the snapshots whose step is a multiple of this")
    parser.add_argument("--curve", action="append", default=[], metavar="P=DIR",
                        help="instead of the sweep: the training curve of run DIR (p_uncond P; a run of recipes "
                             "digits-cfg with --snapshot-every), e.g. 0.1=runs/cfg10")
    parser.add_argument("--curve-extend", type=Path, default=None, metavar="JSON",
                        help="keep this earlier curve's rows and measure only the snapshots it lacks")
    parser.add_argument("--views", action="store_true", help="instead of the sweep: the explorer's precomputed views")
    args = parser.parse_args(argv)
    if args.views:
        print(f"wrote {precompute_views(load_cfg_model(0.1), path=args.out or VIEWS_PATH)}")
        return
    if args.curve_extend is not None and not args.curve:
        parser.error("--curve-extend needs --curve P=DIR (the runs whose new snapshots to measure)")
    if args.curve:
        runs = {float(item.partition("=")[0]): item.partition("=")[2] for item in args.curve}
        extend = load_cfg_curve(args.curve_extend, check_checkpoints=False) if args.curve_extend else None
        results = cfg_training_curve(runs, every=args.curve_every, extend=extend)
        print(f"wrote {write_results(results, args.out or CURVE_PATH)}")
        return
    results = cfg_sweep(args.scales, args.p_unconds, args.n_samples, args.steps, args.seed)
    print(f"wrote {write_results(results, args.out or CFG_RESULTS_PATH)} in {results['provenance']['seconds']} s")
