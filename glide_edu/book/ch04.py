"""Chapter 4 only: sample quality against the number of sampling steps, and bits/dim, on the digits.

    python -m glide_edu.book regenerate ch04   # → data/results/digits_sampling*.json

The table reproduces, on the 16×16 digits, the comparison of Improved DDPM (Nichol & Dhariwal
2021, fig. 8): sample quality against the number of sampling steps for

* ``simple_fixed_small`` — the L_simple model, ancestral sampling with Σ = β̃_t (``fixed_small``);
* ``simple_fixed_large`` — the same model with Σ = β_t (``fixed_large``);
* ``hybrid_learned``     — the hybrid-loss model with its learned Σ_θ (``learned_range``);
* ``hybrid_fixed_small`` — the hybrid model's ε with Σ = β̃_t instead (same network: isolates the effect of Σ);
* ``ddim_simple``        — deterministic DDIM (η = 0) with the L_simple model's ε;
* ``ddim_hybrid``        — DDIM with the hybrid model's ε (optional; not in the default run).

Every sampler runs on the same respaced process (``timestep_respacing=str(K)``: K steps evenly spread over
the 1000, so only the update rule differs), from the same initial noise x_T, and the ancestral samplers
share the per-step noise stream (common random numbers). With respacing, the fixed variances are those of
the *respaced* process (β̃'_i and β'_i of the kept steps), which is what :func:`create_diffusion` builds.
Quality is the offline FID-proxy and k-NN precision/recall of :mod:`glide_edu.metrics` against the training
digits — an FID-*proxy* on a small digit CNN, not Inception-FID.

The same run measures the negative log-likelihood (the full 1000-step variational bound,
:meth:`calc_bpd_loop`) of both models in bits/dim on 8-bit-quantised test digits. The digits are
bilinearly upsampled 8×8 scans with 17 grey levels, quantised to 256 levels: the bits/dim are those of that
quantised data, not comparable with CIFAR-10 numbers.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from glide_edu.book import chapter_parser
from glide_edu.data import load_digits, quantize_8bit
from glide_edu.pretrained import load_small_checkpoint, shipped_checkpoint
from glide_edu.respace import SpacedDiffusion, create_diffusion
from glide_edu.results import (
    RESULTS_DIR,
    checkpoint_provenance,
    initial_noise,
    load_results,
    run_provenance,
    write_results,
)

__all__ = [
    "SAMPLERS",
    "DEFAULT_SAMPLERS",
    "RESULTS_PATH",
    "SCHEMA",
    "SamplerSpec",
    "LoadedModel",
    "format_table",
    "load_models",
    "sampler_diffusion",
    "generate_samples",
    "nll_bits_per_dim",
    "sampling_steps_table",
    "load_table",
    "regenerate",
]

RESULTS_PATH = RESULTS_DIR / "digits_sampling.json"
T_NLL_COST = 1000  # network calls per image of a full-chain bound (to schedule the work)
SCHEMA = "glide_edu.digits_sampling/1"
REGENERATE = "python -m glide_edu.book regenerate ch04"


@dataclass(frozen=True)
class SamplerSpec:
    """One line of the table: which model, which update rule, which Σ."""

    name: str
    model: str  # "simple" or "hybrid"
    method: str  # "ancestral" or "ddim"
    model_var_type: str | None  # override of the checkpoint's Σ (None: keep it)
    label: str  # for tables and plots


SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        SamplerSpec("simple_fixed_small", "simple", "ancestral", "fixed_small", "L_simple, Σ = β̃_t"),
        SamplerSpec("simple_fixed_large", "simple", "ancestral", "fixed_large", "L_simple, Σ = β_t"),
        SamplerSpec("hybrid_learned", "hybrid", "ancestral", None, "L_hybrid, learned Σ_θ"),
        SamplerSpec("hybrid_fixed_small", "hybrid", "ancestral", "fixed_small", "L_hybrid ε, Σ = β̃_t"),
        SamplerSpec("ddim_simple", "simple", "ddim", None, "DDIM η=0, L_simple ε"),
        SamplerSpec("ddim_hybrid", "hybrid", "ddim", None, "DDIM η=0, L_hybrid ε"),
    )
}
DEFAULT_SAMPLERS = ("simple_fixed_small", "simple_fixed_large", "hybrid_learned", "hybrid_fixed_small", "ddim_simple")
# The NLL rows: (model, Σ used in the bound)
NLL_ROWS: dict[str, tuple[str, str | None]] = {
    "simple_fixed_small": ("simple", "fixed_small"),
    "simple_fixed_large": ("simple", "fixed_large"),
    "hybrid_learned": ("hybrid", None),
}


@dataclass
class LoadedModel:
    """A checkpoint loaded once: the network, its diffusion config and provenance."""

    key: str
    model: torch.nn.Module
    diffusion_config: dict[str, Any]
    meta: dict[str, Any]
    path: Path

    def provenance(self) -> dict[str, Any]:
        return {**checkpoint_provenance(self.path, self.meta), "diffusion_config": self.diffusion_config}


def load_models(checkpoints: Mapping[str, str | os.PathLike] | None = None) -> dict[str, LoadedModel]:
    """Load ``{"simple": path, "hybrid": path}`` (default: the shipped digits checkpoints)."""
    paths = dict(checkpoints or {})
    out = {}
    for key in ("simple", "hybrid"):
        path = Path(paths[key]) if key in paths else shipped_checkpoint(f"digits_{key}")
        model, _, meta = load_small_checkpoint(path)
        out[key] = LoadedModel(key, model, dict(meta["diffusion_config"]), meta, path)
    if out["simple"].diffusion_config.get("model_var_type") not in ("fixed_small", "fixed_large"):
        raise ValueError("the 'simple' checkpoint must have a fixed Σ (fixed_small / fixed_large)")
    if out["hybrid"].diffusion_config.get("model_var_type") not in ("learned_range", "learned"):
        raise ValueError("the 'hybrid' checkpoint must have a learned Σ (learned_range)")
    return out


def sampler_diffusion(loaded: LoadedModel, spec: SamplerSpec, steps: int) -> SpacedDiffusion:
    """The diffusion for ``spec`` with ``steps`` evenly spread steps (``timestep_respacing=str(steps)``)."""
    cfg = dict(loaded.diffusion_config)
    if spec.model_var_type is not None:
        cfg["model_var_type"] = spec.model_var_type
    cfg["timestep_respacing"] = str(int(steps))
    return create_diffusion(**cfg)


def _spec(sampler: str | SamplerSpec) -> SamplerSpec:
    if isinstance(sampler, SamplerSpec):
        return sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler]


@torch.no_grad()
def generate_samples(
    models: Mapping[str, LoadedModel], sampler: str | SamplerSpec, steps: int, n: int, seed: int = 0
) -> Tensor:
    """``n`` samples (n, 1, 16, 16) from ``sampler`` with ``steps`` steps.

    x_T comes from ``seed`` (:func:`initial_noise`), the per-step noise from a generator seeded with
    ``seed + 1``: two samplers given the same seed start from the same x_T and see the same noise stream.
    """
    spec = _spec(sampler)
    loaded = models[spec.model]
    size = int(loaded.meta["model_config"]["image_size"])
    channels = int(loaded.meta["model_config"]["in_channels"])
    noise = initial_noise(n, seed, size, channels)
    diffusion = sampler_diffusion(loaded, spec, steps)
    model = loaded.model
    learned_net = loaded.diffusion_config.get("model_var_type") in ("learned", "learned_range")
    if learned_net and not diffusion.model_var_type.is_learned:
        model = _EpsilonOnly(model, channels)  # a learned-Σ network used with a fixed Σ: drop its v channel
    gen = torch.Generator().manual_seed(seed + 1)
    if spec.method == "ddim":
        return diffusion.ddim_sample_loop(model, noise.shape, noise=noise, eta=0.0, generator=gen)
    return diffusion.p_sample_loop(model, noise.shape, noise=noise, generator=gen)


class _EpsilonOnly:
    """The first ``channels`` output channels (ε) of a network that also outputs the variance values."""

    def __init__(self, model: torch.nn.Module, channels: int) -> None:
        self.model, self.channels = model, channels

    def __call__(self, x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        return self.model(x, t, **kwargs)[:, : self.channels]


class _ReusedOutputs:
    """Wraps a network so that a second bound over the *same* chain reuses its outputs.

    The L_simple model's bound with Σ = β̃_t and with Σ = β_t differ only in Σ: with the same images and
    seed, calc_bpd_loop draws the same x_t at every t, so the network needs to run only once per t.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.cache: dict[int, tuple[Tensor, Tensor, Tensor]] = {}

    def __call__(self, x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        key = int(t[0])
        hit = self.cache.get(key)
        if hit is not None and not kwargs and hit[0].shape == x.shape and torch.equal(hit[0], x) and torch.equal(
            hit[1], t
        ):
            return hit[2]
        out = self.model(x, t, **kwargs)
        self.cache[key] = (x.clone(), t.clone(), out)
        return out


@torch.no_grad()
def nll_bits_per_dim(
    loaded: LoadedModel,
    images: Tensor,
    seed: int = 0,
    model_var_type: str | None = None,
    steps: int | None = None,
    model: Any = None,
) -> dict[str, Any]:
    """The variational bound in bits/dim of ``images`` (already quantised) under one model.

    ``steps=None`` uses the full chain of the checkpoint; a number K uses the respaced K-step process (a
    bound on the NLL of the K-step model: valid, and usually looser). ``model_var_type`` overrides the
    checkpoint's Σ; ``model`` replaces the network (e.g. a wrapper that reuses outputs). Returns per-image
    totals and the per-step terms averaged over images.
    """
    cfg = dict(loaded.diffusion_config)
    if model_var_type is not None:
        cfg["model_var_type"] = model_var_type
    if steps is not None:
        cfg["timestep_respacing"] = str(int(steps))
    diffusion = create_diffusion(**cfg)
    out = diffusion.calc_bpd_loop(model or loaded.model, images, generator=torch.Generator().manual_seed(seed))
    total = out["total_bpd"].double()
    n = total.numel()
    return {
        "num_timesteps": diffusion.num_timesteps,
        "n_images": n,
        "bpd_mean": float(total.mean()),
        "bpd_sem": float(total.std() / math.sqrt(n)) if n > 1 else float("nan"),
        "bpd_per_image": [round(float(v), 5) for v in total],
        "prior_bpd": float(out["prior_bpd"].double().mean()),
        "decoder_bpd": float(out["vb"][:, 0].double().mean()),  # L_0 = −log p(x_0 | x_1)
        "vb_per_step": [float(f"{float(v):.5g}") for v in out["vb"].double().mean(0)],  # L_t, t = 0…T−1
    }


def _reference_row(real: Tensor, net: Any) -> dict[str, Any]:
    from glide_edu.metrics import sample_quality

    test, _ = load_digits(16, "test")
    q = sample_quality(real, test, net)
    return {"what": "held-out test digits against the training digits", "n": len(test), **q}


# ------------------------------------------------------------------------------ the table, cell by cell
_MODEL_CACHE: dict[tuple, dict[str, LoadedModel]] = {}


def _cached_models(checkpoints: Mapping[str, str | os.PathLike] | None) -> dict[str, LoadedModel]:
    key = tuple(sorted((k, str(v)) for k, v in (checkpoints or {}).items()))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = load_models(checkpoints)
    return _MODEL_CACHE[key]


def _run_task(
    task: tuple, checkpoints: Mapping[str, str | os.PathLike] | None, n_samples: int, seed: int, n_nll: int,
    threads: int | None = None,
) -> tuple[tuple, dict[str, Any]]:
    """One unit of work: ("sample", sampler, steps) → quality metrics; ("nll", model key) → NLL rows.

    Seeded from ``seed`` alone, so the result does not depend on which process runs it, or in what order.
    """
    from glide_edu.metrics import load_feature_net, sample_quality

    if threads:
        torch.set_num_threads(threads)
    models = _cached_models(checkpoints)
    t0 = time.perf_counter()
    if task[0] == "sample":
        _, name, k = task
        real, _ = load_digits(16, "train")
        fake = generate_samples(models, name, k, n_samples, seed)
        q = sample_quality(real, fake, load_feature_net())
        return task, {**q, "seconds": round(time.perf_counter() - t0, 2)}
    _, key = task
    test, _ = load_digits(16, "test")
    images = quantize_8bit(test[:n_nll])
    wrapped = _ReusedOutputs(models[key].model)  # the two fixed-Σ bounds share one pass of the network
    out = {}
    for row, (model_key, var) in NLL_ROWS.items():
        if model_key == key:
            t1 = time.perf_counter()
            out[row] = nll_bits_per_dim(models[key], images, seed=seed, model_var_type=var, model=wrapped)
            out[row]["seconds"] = round(time.perf_counter() - t1, 2)
    return task, out


def sampling_steps_table(
    steps: Sequence[int] = (10, 25, 50, 100, 1000),
    n_samples: int = 200,
    seed: int = 0,
    samplers: Iterable[str] = DEFAULT_SAMPLERS,
    n_nll: int = 64,
    checkpoints: Mapping[str, str | os.PathLike] | None = None,
    progress: bool = False,
    jobs: int = 1,
) -> dict[str, Any]:
    """FID-proxy / precision / recall for every (sampler, steps), and the full-chain NLL of both models.

    Args:
        steps: sampling step counts (each is a respacing of the 1000-step process).
        n_samples: samples per (sampler, steps); every cell starts from the same x_T (``seed``).
        samplers: names from :data:`SAMPLERS`.
        n_nll: how many quantised test digits the NLL is measured on (0: skip the NLL).
        checkpoints: ``{"simple": path, "hybrid": path}``; default the shipped ones.
        jobs: worker processes (each with one torch thread); ``1`` runs everything here. The results do
            not depend on it.

    Returns the JSON-ready dict written by :func:`write_results` (see ``SCHEMA``).
    """
    from glide_edu.metrics import load_feature_net

    start = time.perf_counter()
    steps = [int(s) for s in steps]
    samplers = [_spec(s).name for s in samplers]
    if n_samples < 4:
        raise ValueError(f"n_samples must be >= 4 for precision/recall (k = 3), got {n_samples}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    models = load_models(checkpoints)
    checkpoints = {key: m.path for key, m in models.items()}
    net = load_feature_net()
    real, _ = load_digits(16, "train")

    tasks: list[tuple] = [("sample", name, k) for name in samplers for k in steps]
    if n_nll > 0:
        tasks += [("nll", key) for key in ("simple", "hybrid")]
    # longest first (cost ~ network calls × batch), so that parallel workers finish together
    tasks.sort(key=lambda t: -(t[2] * n_samples if t[0] == "sample" else T_NLL_COST * n_nll))
    done: dict[tuple, dict[str, Any]] = {}

    def report(task: tuple, value: dict[str, Any]) -> None:
        done[task] = value
        if not progress:
            return
        if task[0] == "sample":
            print(f"{task[1]:20s} {task[2]:5d} steps: " + ", ".join(f"{a} {b:.4g}" for a, b in value.items()),
                  flush=True)
        else:
            for row, r in value.items():
                print(f"NLL {row:20s}: {r['bpd_mean']:.4f} ± {r['bpd_sem']:.4f} bits/dim", flush=True)

    if jobs == 1:
        for task in tasks:
            report(*_run_task(task, checkpoints, n_samples, seed, n_nll))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_run_task, task, checkpoints, n_samples, seed, n_nll, 1) for task in tasks]
            for fut in as_completed(futures):
                report(*fut.result())

    results = {name: {str(k): done[("sample", name, k)] for k in steps} for name in samplers}
    nll: dict[str, Any] = {}
    for task, value in done.items():
        if task[0] == "nll":
            nll.update(value)
    nll = {row: nll[row] for row in NLL_ROWS if row in nll}

    return {
        "schema": SCHEMA,
        "config": {
            "steps": steps,
            "n_samples": n_samples,
            "seed": seed,
            "samplers": {name: SAMPLERS[name].label for name in samplers},
            "respacing": "timestep_respacing=str(K): K steps evenly spread over the 1000 (same for every sampler)",
            "reference_set": f"training digits (load_digits(16, 'train'), n = {len(real)})",
            "metric": "FID-proxy (torchmetrics FID on a digit-CNN's 64-d features; not Inception-FID), "
            "k-NN precision/recall (k = 3)",
            "nll_images": f"first {n_nll} test digits, quantised to 8 bits: round((x+1)*127.5)/127.5 - 1",
        },
        "reference": _reference_row(real, net),
        "results": results,
        "nll_bits_per_dim": nll,
        "provenance": run_provenance(
            f"{REGENERATE} --steps {' '.join(map(str, steps))} --n-samples {n_samples} --n-nll {n_nll} "
            f"--seed {seed} --samplers {' '.join(samplers)} --jobs {jobs}",
            start,
            threads=torch.get_num_threads() if jobs == 1 else f"{jobs} processes × 1 thread",
            checkpoints={key: m.provenance() for key, m in models.items()},
        ),
    }


def load_table(path: str | os.PathLike = RESULTS_PATH, check_checkpoints: bool = True) -> dict[str, Any]:
    """Read a table written by :func:`regenerate`; refuse it if it belongs to other checkpoints."""
    return load_results(path, SCHEMA, REGENERATE, check_checkpoints)


def format_table(results: Mapping[str, Any], metric: str = "fid_proxy") -> str:
    """A markdown table of ``metric`` with one row per sampler and one column per step count."""
    steps = [str(s) for s in results["config"]["steps"]]
    labels = results["config"]["samplers"]
    lines = [
        "| sampler | " + " | ".join(f"{s} steps" for s in steps) + " |",
        "|---|" + "---:|" * len(steps),
    ]
    for name, row in results["results"].items():
        cells = " | ".join(f"{row[s][metric]:.3g}" if s in row else "–" for s in steps)
        lines.append(f"| {labels.get(name, name)} | {cells} |")
    return "\n".join(lines)


def regenerate(argv: list[str] | None = None) -> None:
    """``python -m glide_edu.book regenerate ch04 [options]``: the sampler table (and bits/dim)."""
    parser = chapter_parser("ch04", __doc__)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50, 100, 1000])
    parser.add_argument("--n-samples", type=int, default=200)
    parser.add_argument("--n-nll", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samplers", nargs="+", default=list(DEFAULT_SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--simple", type=Path, default=None, help="default: the shipped digits_simple")
    parser.add_argument("--hybrid", type=Path, default=None, help="default: the shipped digits_hybrid")
    parser.add_argument("--out", type=Path, default=RESULTS_PATH)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes with one thread each (1: no workers)")
    args = parser.parse_args(argv)
    checkpoints = {k: v for k, v in (("simple", args.simple), ("hybrid", args.hybrid)) if v is not None}
    results = sampling_steps_table(
        args.steps, args.n_samples, args.seed, args.samplers, args.n_nll, checkpoints, progress=True, jobs=args.jobs
    )
    print(format_table(results))
    print(f"wrote {write_results(results, args.out)} in {results['provenance']['seconds']} s")
