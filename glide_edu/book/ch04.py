"""Chapter 4 only: sample quality against the number of sampling steps, bits/dim, and the sampler widget.

    python -m glide_edu.book regenerate ch04           # → data/results/digits_sampling.json
    python -m glide_edu.book regenerate ch04 --grids   # → data/results/digits_sampler_grids.safetensors

The table repeats Improved DDPM's comparison (Nichol & Dhariwal 2021, fig. 8) on the 16×16 digits — quality
against the number of sampling steps — for these samplers (:data:`SAMPLERS`):

* ``simple_fixed_small`` / ``simple_fixed_large`` — the L_simple model, ancestral, Σ = β̃_t / Σ = β_t;
* ``hybrid_learned`` — the hybrid-loss model with its learned Σ_θ;
* ``hybrid_fixed_small`` — the same network's ε with Σ = β̃_t (isolates the effect of Σ);
* ``ddim_simple`` / ``ddim_hybrid`` — deterministic DDIM (η = 0) with either model's ε.

Every sampler of one seed starts from the same x_T and the ancestral ones see the same per-step noise
(common random numbers); several seeds give the spread of each cell, which is the noise of the measurement.
With respacing (``timestep_respacing=str(K)``) the fixed variances are those of the respaced process. Quality
is the FID-proxy and k-NN precision/recall of :mod:`glide_edu.metrics` against the training digits. The
same run measures the full 1000-step bound in bits/dim of both models on 8-bit test digits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from glide_edu.book import chapter_parser
from glide_edu.data import load_digits, quantize_8bit
from glide_edu.fileio import atomic_write
from glide_edu.metrics import bits_per_dim, load_feature_net, sample_quality
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
    "SAMPLERS", "SHORT_STEPS", "LONG_STEPS", "LONG_SAMPLERS", "RESULTS_PATH", "GRIDS_PATH", "SCHEMA", "REGENERATE",
    "SamplerSpec", "LoadedModel", "load_models", "sampler_diffusion", "generate_samples", "sampling_steps_table",
    "load_table", "cell", "format_table", "NLL_ROWS", "nll_rows", "precompute_grids", "load_grids", "regenerate",
]

RESULTS_PATH = RESULTS_DIR / "digits_sampling.json"
GRIDS_PATH = RESULTS_DIR / "digits_sampler_grids.safetensors"
SCHEMA = "glide_edu.digits_sampling/2"
REGENERATE = "python -m glide_edu.book regenerate ch04"
SHORT_STEPS = (10, 25, 50, 100)  # every sampler, every seed
LONG_STEPS = (250,)  # a long chain for the samplers below (250 steps cost 1.35× the four short columns together)
LONG_SAMPLERS = ("simple_fixed_small", "simple_fixed_large", "hybrid_learned", "ddim_simple")
GRID_STEPS = (10, 25, 50, 100, 250, 1000)


@dataclass(frozen=True)
class SamplerSpec:
    """One row of the table: which model, which update rule, which Σ."""

    name: str
    model: str  # "simple" or "hybrid"
    method: str  # "ancestral" or "ddim"
    model_var_type: str | None  # override of the checkpoint's Σ (None: keep it)
    label: str  # Markdown, for tables and plots


SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        SamplerSpec("simple_fixed_small", "simple", "ancestral", "fixed_small",
                    r"$L_\mathrm{simple}$, $\Sigma=\tilde\beta_t$"),
        SamplerSpec("simple_fixed_large", "simple", "ancestral", "fixed_large",
                    r"$L_\mathrm{simple}$, $\Sigma=\beta_t$"),
        SamplerSpec("hybrid_learned", "hybrid", "ancestral", None, r"$L_\mathrm{hybrid}$, learned $\Sigma_\theta$"),
        SamplerSpec("hybrid_fixed_small", "hybrid", "ancestral", "fixed_small",
                    r"$L_\mathrm{hybrid}$ $\varepsilon$, $\Sigma=\tilde\beta_t$"),
        SamplerSpec("ddim_simple", "simple", "ddim", None, r"DDIM $\eta=0$, $L_\mathrm{simple}$ $\varepsilon$"),
        SamplerSpec("ddim_hybrid", "hybrid", "ddim", None, r"DDIM $\eta=0$, $L_\mathrm{hybrid}$ $\varepsilon$"),
    )
}
# NLL rows: (model, Σ used in the bound)
NLL_ROWS = {"simple_fixed_small": ("simple", "fixed_small"), "simple_fixed_large": ("simple", "fixed_large"),
            "hybrid_learned": ("hybrid", None)}


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


def load_models(checkpoints: Mapping[str, str | Path] | None = None) -> dict[str, LoadedModel]:
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


def _spec(sampler: str | SamplerSpec) -> SamplerSpec:
    if isinstance(sampler, SamplerSpec):
        return sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler]


def sampler_diffusion(loaded: LoadedModel, spec: SamplerSpec, steps: int) -> SpacedDiffusion:
    """The diffusion for ``spec`` with ``steps`` evenly spread steps (``timestep_respacing=str(steps)``)."""
    cfg = dict(loaded.diffusion_config)
    if spec.model_var_type is not None:
        cfg["model_var_type"] = spec.model_var_type
    return create_diffusion(**{**cfg, "timestep_respacing": str(int(steps))})


class _EpsilonOnly:
    """The first ``channels`` output channels (ε) of a network that also outputs the variance values."""

    def __init__(self, model: torch.nn.Module, channels: int) -> None:
        self.model, self.channels = model, channels

    def __call__(self, x: Tensor, t: Tensor, **kwargs: Any) -> Tensor:
        return self.model(x, t, **kwargs)[:, : self.channels]


@torch.no_grad()
def generate_samples(models: Mapping[str, LoadedModel], sampler: str | SamplerSpec, steps: int, n: int,
                     seed: int = 0) -> Tensor:
    """``n`` samples (n, 1, 16, 16): x_T from ``seed`` (:func:`initial_noise`), step noise from ``seed + 1``."""
    spec = _spec(sampler)
    loaded = models[spec.model]
    size, channels = int(loaded.meta["model_config"]["image_size"]), int(loaded.meta["model_config"]["in_channels"])
    noise = initial_noise(n, seed, size, channels)
    diffusion = sampler_diffusion(loaded, spec, steps)
    model: Any = loaded.model
    if loaded.diffusion_config.get("model_var_type") in ("learned", "learned_range") and \
            not diffusion.model_var_type.is_learned:
        model = _EpsilonOnly(model, channels)  # a learned-Σ network used with a fixed Σ: drop its variance channel
    gen = torch.Generator().manual_seed(seed + 1)
    if spec.method == "ddim":
        return diffusion.ddim_sample_loop(model, noise.shape, noise=noise, eta=0.0, generator=gen)
    return diffusion.p_sample_loop(model, noise.shape, noise=noise, generator=gen)


# ------------------------------------------------------------------------------ the table, cell by cell
_MODELS: dict[tuple, dict[str, LoadedModel]] = {}


def _task(task: tuple, checkpoints: Mapping[str, str], n_samples: int, n_nll: int) -> tuple[tuple, dict]:
    """One unit of work, seeded from the task alone (same result in any process or order):
    ("sample", sampler, steps, seed) → quality; ("nll", model key) → the bound rows of that model."""
    torch.set_num_threads(1)
    key = tuple(sorted(checkpoints.items()))
    models = _MODELS.setdefault(key, load_models(checkpoints))
    t0 = time.perf_counter()
    if task[0] == "sample":
        _, name, k, seed = task
        fake = generate_samples(models, name, k, n_samples, seed)
        q = sample_quality(load_digits(16, "train")[0], fake, load_feature_net())
        return task, {**q, "seconds": round(time.perf_counter() - t0, 1)}
    images = quantize_8bit(load_digits(16, "test")[0][:n_nll])
    return task, nll_rows(models, task[1], images)


def _run_all(tasks: list[tuple], paths: Mapping[str, str], n_samples: int, n_nll: int, jobs: int):
    """Yield (task, result) for every task, in this process (``jobs == 1``) or in ``jobs`` spawned workers."""
    if jobs == 1:
        yield from (_task(t, paths, n_samples, n_nll) for t in tasks)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from (f.result() for f in as_completed([pool.submit(_task, t, paths, n_samples, n_nll) for t in tasks]))


def nll_rows(models: Mapping[str, LoadedModel], key: str, images: Tensor, steps: int | None = None) -> dict:
    """The bound rows of :data:`NLL_ROWS` that belong to model ``key``; ``steps`` respaces the chain."""
    out = {}
    for row, (model_key, var) in NLL_ROWS.items():
        if model_key == key:
            cfg = {**models[key].diffusion_config, **({"model_var_type": var} if var else {})}
            diffusion = create_diffusion(**cfg, timestep_respacing=str(steps) if steps else "")
            out[row] = bits_per_dim(models[key].model, diffusion, images, seed=0)
    return out


def sampling_steps_table(seeds: Sequence[int] = (0, 1, 2), long_seeds: Sequence[int] = (0, 1), n_samples: int = 200,
                         short_steps: Sequence[int] = SHORT_STEPS, long_steps: Sequence[int] = LONG_STEPS,
                         samplers: Iterable[str] = tuple(SAMPLERS), long_samplers: Iterable[str] = LONG_SAMPLERS,
                         n_nll: int = 64, checkpoints: Mapping[str, str | Path] | None = None, jobs: int = 2,
                         progress: bool = True) -> dict[str, Any]:
    """The results dictionary of ``digits_sampling.json`` (schema 2: a list over seeds in every cell)."""
    start = time.perf_counter()
    if n_samples < 4:
        raise ValueError(f"n_samples must be >= 4 for precision/recall (k = 3), got {n_samples}")
    samplers, long_samplers = [_spec(s).name for s in samplers], [_spec(s).name for s in long_samplers]
    models = load_models(checkpoints)
    paths = {key: str(m.path) for key, m in models.items()}
    tasks = [("sample", s, k, seed) for s in samplers for k in short_steps for seed in seeds]
    tasks += [("sample", s, k, seed) for s in long_samplers for k in long_steps for seed in long_seeds]
    tasks += [("nll", key) for key in ("simple", "hybrid")] if n_nll else []
    tasks.sort(key=lambda t: -(t[2] * n_samples if t[0] == "sample" else 1000 * n_nll))  # longest first
    done: dict[tuple, dict] = {}
    for task, value in _run_all(tasks, paths, n_samples, n_nll, jobs):
        done[task] = value
        if progress:
            print(task, {k: v for k, v in value.items() if not isinstance(v, (list, dict))}, flush=True)
    steps = sorted({t[2] for t in tasks if t[0] == "sample"})
    table: dict[str, dict[str, dict[str, list]]] = {}
    for (kind, *rest), value in sorted(done.items(), key=lambda kv: str(kv[0])):
        if kind == "sample":
            name, k, seed = rest
            c = table.setdefault(name, {}).setdefault(str(k), {"seeds": []})
            c["seeds"].append(seed)
            for metric in ("fid_proxy", "precision", "recall", "seconds"):
                c.setdefault(metric, []).append(round(float(value[metric]), 4))
    nll = {row: v for (kind, *_), value in done.items() if kind == "nll" for row, v in value.items()}
    return {
        "schema": SCHEMA,
        "config": {"steps": steps, "seeds": list(seeds), "long_seeds": list(long_seeds), "n_samples": n_samples,
                   "samplers": {s: SAMPLERS[s].label for s in samplers}, "long_samplers": long_samplers,
                   "respacing": "timestep_respacing=str(K): K steps evenly spread over the 1000",
                   "reference_set": "training digits (load_digits(16, 'train'), n = 1438)",
                   "nll_images": f"first {n_nll} test digits, quantised to 8 bits"},
        "reference": {"what": "held-out test digits against the training digits", "n": 359,
                      **sample_quality(load_digits(16, "train")[0], load_digits(16, "test")[0], load_feature_net())},
        "results": {s: table[s] for s in samplers if s in table},
        "nll_bits_per_dim": {row: nll[row] for row in NLL_ROWS if row in nll},
        "provenance": run_provenance(f"{REGENERATE} --seeds {' '.join(map(str, seeds))} --n-samples {n_samples}",
                                     start, threads=f"{jobs} processes × 1 thread",
                                     checkpoints={k: m.provenance() for k, m in models.items()}),
    }


def load_table(path: str | Path = RESULTS_PATH, check_checkpoints: bool = True) -> dict[str, Any]:
    """Read the table written by :func:`regenerate`; refuse it if it belongs to other checkpoints."""
    return load_results(path, SCHEMA, REGENERATE, check_checkpoints)


def cell(results: Mapping[str, Any], sampler: str, steps: int, metric: str = "fid_proxy") -> tuple[float, float, int]:
    """(mean over seeds, half the range over seeds, number of seeds) of one cell of the table."""
    values = results["results"][sampler][str(steps)][metric]
    return sum(values) / len(values), (max(values) - min(values)) / 2, len(values)


def format_table(results: Mapping[str, Any], metric: str = "fid_proxy") -> str:
    """A Markdown table of ``metric``: mean ± half-range over seeds, one row per sampler, one column per K."""
    steps = results["config"]["steps"]
    lines = ["| sampler | " + " | ".join(f"{k} steps" for k in steps) + " |", "|---|" + "---:|" * len(steps)]
    for name, row in results["results"].items():
        cells = []
        for k in steps:
            if str(k) not in row:
                cells.append("–")
                continue
            mean, half, n = cell(results, name, k, metric)
            cells.append(f"{mean:.3g} ± {half:.2g}" if n > 1 else f"{mean:.3g}")
        lines.append(f"| {results['config']['samplers'].get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- the widget's grids
def precompute_grids(models: Mapping[str, LoadedModel], steps: Sequence[int] = GRID_STEPS, n: int = 16,
                     seed: int = 0, path: str | Path = GRIDS_PATH) -> Path:
    """Every sampler × ``steps``: ``n`` samples from one seed, stored so the widget answers instantly."""
    tensors = {f"{s}/{k}": generate_samples(models, s, k, n, seed).half().contiguous() for s in SAMPLERS for k in steps}
    meta = {"steps": list(steps), "n": n, "seed": seed, "checkpoints": {k: m.provenance() for k, m in models.items()}}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"glide_edu": json.dumps(meta)}))


def load_grids(path: str | Path = GRIDS_PATH, check_checkpoints: bool = True) -> tuple[dict[tuple[str, int], Tensor],
                                                                                        dict[str, Any]]:
    """({(sampler, steps): samples (n, 1, 16, 16)}, metadata) of :func:`precompute_grids`; stale files refused."""
    with safe_open(Path(path), framework="pt") as f:
        meta = json.loads(f.metadata()["glide_edu"])
        grids = {(key.split("/")[0], int(key.split("/")[1])): f.get_tensor(key).float() for key in f.keys()}
    if check_checkpoints:
        for key, entry in meta["checkpoints"].items():
            if checkpoint_provenance(shipped_checkpoint(f"digits_{key}"))["sha256"] != entry["sha256"]:
                raise ValueError(f"{Path(path).name} belongs to another digits_{key}; regenerate: {REGENERATE} --grids")
    return grids, meta


def regenerate(argv: list[str] | None = None) -> None:
    """``python -m glide_edu.book regenerate ch04 [--grids] [options]``."""
    parser = chapter_parser("ch04", __doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--long-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-samples", type=int, default=200)
    parser.add_argument("--n-nll", type=int, default=64)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes with one thread each")
    parser.add_argument("--grids", action="store_true", help="only the widget's precomputed sample grids")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.grids:
        print(f"wrote {precompute_grids(load_models(), path=args.out or GRIDS_PATH)}")
        return
    results = sampling_steps_table(args.seeds, args.long_seeds, args.n_samples, n_nll=args.n_nll, jobs=args.jobs)
    print(format_table(results))
    print(f"wrote {write_results(results, args.out or RESULTS_PATH)} in {results['provenance']['seconds']} s")
