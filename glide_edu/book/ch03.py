"""Chapter 3 only: the training curve of the shipped digits models — sample quality against training steps.

    python -m glide_edu.recipes digits --loss simple --run-dir runs/simple --snapshot-every 1000 --steps N
    python -m glide_edu.book regenerate ch03 --run simple=runs/simple --run hybrid=runs/hybrid

The trainer keeps the EMA weights every ``--snapshot-every`` steps (``<run>/snapshots/ema-step-*.safetensors``);
:func:`training_curve` samples each snapshot with its own Σ (``n`` images, ``sampling_steps`` respaced ancestral
steps) from the same noise for every snapshot (seeded ``1000 + seed``, a stream of its own), once per seed, and
measures the FID-proxy against the training digits and against the held-out test digits, k-NN precision and
recall, and how close the samples come to copying training images (:func:`copy_ratio`). The spread over seeds
is the noise of the measurement: a difference between two steps smaller than it is not a difference.
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
from glide_edu.metrics import fid_proxy, load_feature_net, sample_quality
from glide_edu.pretrained import load_small_checkpoint, shipped_checkpoint, snapshots
from glide_edu.respace import create_diffusion
from glide_edu.results import (  # noqa: F401  (curve_summary, plateau_step: re-exported for chapter 3)
    RESULTS_DIR,
    checkpoint_provenance,
    curve_summary,
    load_results,
    plateau_step,
    run_provenance,
    write_results,
)

__all__ = [
    "EMA_PATH",
    "EMA_SCHEMA",
    "ema_comparison",
    "eps_slope",
    "load_ema_comparison",
    "CURVE_PATH",
    "SCHEMA",
    "REGENERATE",
    "copy_ratio",
    "real_reference",
    "snapshot_quality",
    "training_curve",
    "load_curve",
    "curve_summary",
    "plateau_step",
    "regenerate",
]

CURVE_PATH = RESULTS_DIR / "digits_convergence.json"
SCHEMA = "glide_edu.digits_convergence/1"
REGENERATE = "python -m glide_edu.book regenerate ch03"
EMA_PATH = RESULTS_DIR / "digits_ema.json"
EMA_SCHEMA = "glide_edu.digits_ema/1"


def copy_ratio(samples: Tensor, train: Tensor, test: Tensor) -> float:
    """Median pixel distance of ``samples`` to their nearest training image, over the same median for held-out
    ``test`` images: ≈ 1 for a model that generalises like real data, ≪ 1 for one that copies its training set."""

    def nearest(a: Tensor) -> Tensor:
        return torch.cdist(a.flatten(1).double(), train.flatten(1).double()).min(1).values  # (N,)

    return float(nearest(samples.clamp(-1, 1)).median() / nearest(test).median())


@torch.no_grad()
def snapshot_quality(path: str | Path, n: int = 500, sampling_steps: int = 50, seed: int = 0) -> dict[str, float]:
    """Quality of one small checkpoint: ``n`` samples, ``sampling_steps`` respaced ancestral steps, its own Σ."""
    model, _, meta = load_small_checkpoint(path)
    diffusion = create_diffusion(**meta["diffusion_config"], timestep_respacing=str(sampling_steps))
    gen = torch.Generator().manual_seed(1000 + seed)
    noise = torch.randn(n, model.config.in_channels, model.config.image_size, model.config.image_size, generator=gen)
    samples = diffusion.p_sample_loop(model, noise.shape, noise=noise, generator=gen)  # (n, C, H, W)
    train, test = load_digits(16, "train")[0], load_digits(16, "test")[0]
    net = load_feature_net()
    out = sample_quality(train, samples, net)
    out["fid_proxy_test"] = fid_proxy(test, samples, net)
    out["copy_ratio"] = copy_ratio(samples, train, test)
    return out


def real_reference(n: int = 500, seeds: Sequence[int] = (0, 1, 2)) -> dict[str, list[float]]:
    """What real data scores at the same sample size: ``n`` random *training* digits measured like the samples
    (FID-proxy against the held-out test digits, and against all training digits — which they are part of)."""
    train, test = load_digits(16, "train")[0], load_digits(16, "test")[0]
    net = load_feature_net()
    out: dict[str, list[float]] = {"fid_proxy_test": [], "fid_proxy": []}
    for seed in seeds:
        subset = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]]
        out["fid_proxy_test"].append(round(fid_proxy(test, subset, net), 4))
        out["fid_proxy"].append(round(fid_proxy(train, subset, net), 4))
    return out


def training_curve(
    runs: Mapping[str, str | Path],
    every: int = 2000,
    n: int = 500,
    sampling_steps: int = 50,
    seeds: Sequence[int] = (0, 1),
    progress: bool = True,
) -> dict[str, Any]:
    """The results dictionary of ``digits_convergence.json``: for each run and each snapshot step divisible by
    ``every`` (and the first one), the metrics of :func:`snapshot_quality` for every seed."""
    start = time.perf_counter()
    curves: dict[str, list[dict[str, Any]]] = {}
    for name, run_dir in runs.items():
        rows = []
        for step, path in snapshots(run_dir).items():
            if step % every and step != min(snapshots(run_dir)):
                continue
            for seed in seeds:
                q = snapshot_quality(path, n, sampling_steps, seed)
                rows.append({"step": step, "seed": seed, **{k: round(v, 4) for k, v in q.items()}})
                if progress:
                    print(f"{name} step {step} seed {seed}: {rows[-1]}", flush=True)
        curves[name] = rows
    shipped = {name: shipped_checkpoint(f"digits_{name}") for name in runs}
    return {
        "schema": SCHEMA,
        "config": {"n_samples": n, "sampling_steps": sampling_steps, "seeds": list(seeds), "every": every,
                   "sampler": "ancestral with the model's own Σ, respaced", "real": "training digits (1,438)",
                   "weights": "EMA snapshots of the recipe's run"},
        "curves": curves,
        "reference_training_digits": real_reference(n),
        "provenance": run_provenance(
            REGENERATE + " " + " ".join(f"--run {k}=<run dir>" for k in runs), start,
            checkpoints={name: checkpoint_provenance(path) for name, path in shipped.items()},
        ),
    }


def load_curve(path: str | Path = CURVE_PATH, check_checkpoints: bool = True) -> dict[str, Any]:
    """Read ``digits_convergence.json``; refuse it if its final models are not the shipped ones."""
    return load_results(path, SCHEMA, REGENERATE, check_checkpoints)


@torch.no_grad()
def eps_slope(model: torch.nn.Module, diffusion: Any, images: Tensor, t: int, seed: int = 0) -> float:
    """The least-squares slope of ε_θ(x_t, t) on the true ε over ``images``: 1 for an unbiased predictor,
    < 1 when the network under-predicts the noise (a network whose output layer starts at zero does)."""
    eps = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    t_vec = torch.full((len(images),), int(t))
    out = model(diffusion.q_sample(images, t_vec, noise=eps), t_vec)[:, : images.shape[1]]
    return float((out * eps).sum() / (eps * eps).sum())


@torch.no_grad()
def ema_comparison(paths: Mapping[str, str | Path], n: int = 500, sampling_steps: int = 25, seed: int = 0,
                   timesteps: Sequence[int] = (1, 10, 50, 200, 500)) -> dict[str, Any]:
    """For each labelled checkpoint: the ε-slope at ``timesteps`` on 256 test digits, and the FID-proxy of
    ``n`` samples with ``sampling_steps`` ancestral and DDIM (η = 0) steps from the same noise."""
    start = time.perf_counter()
    train, test = load_digits(16, "train")[0], load_digits(16, "test")[0]
    net = load_feature_net()
    rows: dict[str, Any] = {}
    for label, path in paths.items():
        model, diffusion, meta = load_small_checkpoint(path)
        spaced = create_diffusion(**meta["diffusion_config"], timestep_respacing=str(sampling_steps))
        row: dict[str, Any] = {"eps_slope": {str(t): round(eps_slope(model, diffusion, test[:256], t), 4)
                                             for t in timesteps}}
        for method in ("ancestral", "ddim"):
            gen = torch.Generator().manual_seed(seed)
            noise = torch.randn(n, 1, 16, 16, generator=gen)
            loop = spaced.p_sample_loop if method == "ancestral" else spaced.ddim_sample_loop
            samples = loop(model, noise.shape, noise=noise, generator=gen)
            row[method] = {k: round(v, 4) for k, v in sample_quality(train, samples, net).items()}
        rows[label] = row
    inputs = {label: {"file": Path(p).name, "sha256": checkpoint_provenance(p)["sha256"]} for label, p in paths.items()}
    return {"schema": EMA_SCHEMA, "config": {"n_samples": n, "sampling_steps": sampling_steps, "seed": seed,
                                             "timesteps": list(timesteps)},
            "results": rows,
            "provenance": run_provenance(REGENERATE + " --ema " + " ".join(f"{k}=<file>" for k in paths), start,
                                         inputs=inputs)}


def load_ema_comparison(path: str | Path = EMA_PATH) -> dict[str, Any]:
    """Read ``digits_ema.json`` (its inputs are training snapshots, not shipped files: no checkpoint check)."""
    return load_results(path, EMA_SCHEMA, REGENERATE + " --ema …", check_checkpoints=False)


def regenerate(argv: list[str] | None = None) -> None:
    """``python -m glide_edu.book regenerate ch03 --run simple=<dir> --run hybrid=<dir> [options]``."""
    parser = chapter_parser("ch03", __doc__)
    parser.add_argument("--run", action="append", default=[], metavar="NAME=DIR",
                        help="a run folder of the recipe (with snapshots), e.g. simple=runs/simple; repeat per model")
    parser.add_argument("--ema", action="append", default=[], metavar="LABEL=FILE",
                        help="instead of the curve: compare these checkpoints (e.g. the EMA variants of one step)")
    parser.add_argument("--every", type=int, default=2000)
    parser.add_argument("--n-samples", type=int, default=500)
    parser.add_argument("--sampling-steps", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--out", type=Path, default=CURVE_PATH)
    args = parser.parse_args(argv)
    if args.ema:
        paths = dict(item.partition("=")[::2] for item in args.ema)
        results = ema_comparison(paths)
        print(f"wrote {write_results(results, args.out if args.out != CURVE_PATH else EMA_PATH)}")
        return
    if not args.run:
        parser.error("give --run simple=<dir> --run hybrid=<dir> (the training curve) or --ema LABEL=FILE …")
    runs = {}
    for item in args.run:
        name, sep, folder = item.partition("=")
        if not sep or name not in ("simple", "hybrid"):
            parser.error(f"--run takes simple=<dir> or hybrid=<dir>, got {item!r}")
        runs[name] = folder
    results = training_curve(runs, args.every, args.n_samples, args.sampling_steps, args.seeds)
    print(f"wrote {write_results(results, args.out)} in {results['provenance']['seconds']} s")
