"""Classifier guidance (Dhariwal & Nichol 2021): steer an unconditional diffusion model with ∇ log p_φ(y | x_t).

The pieces, in the order chapter 5 uses them:

* :func:`train_classifier` — cross-entropy on x_t = q_sample(x_0, t) with t uniform over the *same*
  diffusion as the digits model (the **noisy** classifier), or on clean x_0 with t = 0 (the **clean**
  control); :func:`accuracy_vs_t` measures either on noised test digits.
* :func:`save_classifier` / :func:`load_classifier` — small safetensors checkpoints with provenance
  (``python -m glide_edu.recipes classifier --noised`` / ``--clean``).
* :func:`classifier_cond_fn` — the gradient s·∇_{x_t} log p_φ(y | x_t, t). :class:`GaussianDiffusion` adds it
  to the mean as μ + Σ·grad (ancestral steps, ``condition_mean``) or to the noise as ε − √(1−ᾱ_t)·grad
  (DDIM, ``condition_score``); under respacing the diffusion hands it the *original* timesteps.
* :func:`guided_samples` — one call that samples class ``y`` with a given scale and classifier.

A clean classifier never saw t ≠ 0, so its time input carries no information: guiding with it always
passes t = 0 (it sees x_t as if it were a clean image, which is what "a classifier trained on clean images"
means). Scale convention: s = 0 is unguided (ADM's ``classifier_scale``), unlike classifier-free guidance,
where s = 1 is unguided.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor

from glide_edu.data import load_digits
from glide_edu.diffusion import GaussianDiffusion
from glide_edu.metrics import diversity, guided_sample_quality, load_feature_net
from glide_edu.nn.classifier import ClassifierConfig, EncoderUNetModel
from glide_edu.pretrained import (
    CHECKPOINT_DIR,
    DATA_DIR,
    load_small_checkpoint,
    read_metadata,
    save_small_checkpoint,
    shipped_checkpoint,
)
from glide_edu.respace import create_diffusion

__all__ = [
    "DIGITS_CLASSIFIER",
    "CLASSIFIER_STEPS",
    "CLEAN_CLASSIFIER_STEPS",
    "EVAL_TIMESTEPS",
    "classifier_name",
    "digits_diffusion_config",
    "train_classifier",
    "accuracy_vs_t",
    "save_classifier",
    "load_classifier",
    "train_and_save_classifier",
    "classifier_log_prob",
    "classifier_cond_fn",
    "guided_samples",
    "SWEEP_SCALES",
    "sweep",
    "load_sweep",
    "format_sweep",
    "ExplorerModels",
    "GuidanceView",
    "explorer_models",
    "guidance_view",
    "main",
]

DIGITS_CLASSIFIER = ClassifierConfig()  # 16×16, widths 32/64/64, 1 ResBlock per level, attention pool
CLASSIFIER_STEPS = 2000  # the noisy classifier; the clean task converges in half (train accuracy 1.0 by step 800)
CLEAN_CLASSIFIER_STEPS = 1000
EVAL_TIMESTEPS = (0, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999)


def classifier_name(noised: bool) -> str:
    """``digits_classifier_noisy`` / ``digits_classifier_clean``: the shipped checkpoint names."""
    return f"digits_classifier_{'noisy' if noised else 'clean'}"


def digits_diffusion_config() -> dict[str, Any]:
    """The diffusion config of the shipped unconditional digits model (the classifier must use the same)."""
    return dict(read_metadata(shipped_checkpoint("digits_simple"))["diffusion_config"])


def _shift(x: Tensor, gen: torch.Generator) -> Tensor:
    """Roll the batch by a random ±1 pixel in each direction (light augmentation, as the feature net)."""
    shift = torch.randint(-1, 2, (2,), generator=gen).tolist()
    return torch.roll(x, shifts=shift, dims=(2, 3))


def train_classifier(
    noised: bool,
    steps: int = CLASSIFIER_STEPS,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 0.05,
    config: ClassifierConfig = DIGITS_CLASSIFIER,
    diffusion: GaussianDiffusion | None = None,
    seed: int = 0,
    log_every: int = 200,
    progress: bool = True,
) -> tuple[EncoderUNetModel, list[dict[str, float]]]:
    """Train a digits classifier; returns (model in eval mode, history of {step, loss, accuracy}).

    ``noised=True``: each batch gets t ~ U{0, …, T−1} and x_t = q_sample(x_0, t) from ``diffusion`` (default:
    the shipped digits model's). ``noised=False``: the control sees clean x_0 with t = 0 only. AdamW with
    the learning rate annealed linearly to 0 (ADM's ``anneal_lr``), random ±1 px shifts.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    diffusion = diffusion or create_diffusion(**digits_diffusion_config())
    x, y = load_digits(config.image_size, "train")
    model = EncoderUNetModel(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 - i / steps)
    history: list[dict[str, float]] = []
    run_loss = run_acc = 0.0
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        x0, yb = _shift(x[idx], gen), y[idx]
        if noised:
            t = torch.randint(0, diffusion.num_timesteps, (batch_size,), generator=gen)
            xt = diffusion.q_sample(x0, t, noise=torch.randn(x0.shape, generator=gen))
        else:
            t, xt = torch.zeros(batch_size, dtype=torch.long), x0
        logits = model(xt, t)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        run_loss += float(loss.detach())
        run_acc += float((logits.argmax(1) == yb).float().mean())
        if step % log_every == 0 or step == steps:
            n = log_every if step % log_every == 0 else step % log_every
            history.append({"step": step, "loss": run_loss / n, "accuracy": run_acc / n})
            if progress:
                print(f"step {step}: loss {run_loss / n:.4f}, train accuracy {run_acc / n:.3f}", flush=True)
            run_loss = run_acc = 0.0
    return model.eval(), history


@torch.no_grad()
def accuracy_vs_t(
    model: EncoderUNetModel,
    diffusion: GaussianDiffusion,
    images: Tensor,
    labels: Tensor,
    timesteps: Sequence[int] = EVAL_TIMESTEPS,
    clean: bool = False,
    seed: int = 0,
) -> dict[int, float]:
    """Accuracy of ``model`` on x_t = q_sample(images, t) for each t (the same noise for every t).

    ``clean=True`` treats ``model`` as a clean classifier: it is shown x_t with timestep 0.
    """
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for t in timesteps:
        xt = diffusion.q_sample(images, int(t), noise=noise)
        tt = torch.full((len(images),), 0 if clean else int(t), dtype=torch.long)
        out[int(t)] = float((model(xt, tt).argmax(1) == labels).float().mean())
    return out


def save_classifier(path: str | Path, model: EncoderUNetModel, diffusion_config: dict, info: dict) -> Path:
    """A float16 safetensors checkpoint (kind ``classifier``) with the config and provenance in its metadata."""
    return save_small_checkpoint(path, model, model.config, diffusion_config, info, kind="classifier")


def load_classifier(name_or_path: str | Path = "digits_classifier_noisy") -> tuple[EncoderUNetModel, dict]:
    """(classifier in eval mode, metadata) from a shipped name or a path written by :func:`save_classifier`."""
    path = Path(name_or_path)
    if path.suffix != ".safetensors":
        path = shipped_checkpoint(str(name_or_path))
    meta = read_metadata(path)
    if meta.get("kind") != "classifier":
        raise ValueError(f"{path} holds a {meta.get('kind')!r} network, not a classifier")
    cfg = dict(meta["model_config"])
    for key in ("channel_mult", "attention_resolutions"):
        cfg[key] = tuple(cfg[key])
    model = EncoderUNetModel(ClassifierConfig(**cfg))
    with safe_open(path, framework="pt") as f:
        model.load_state_dict({k: f.get_tensor(k).float() for k in f.keys()}, strict=True)
    meta["path"] = path
    return model.eval(), meta


def train_and_save_classifier(
    noised: bool, steps: int | None = None, out: Path | None = None, seed: int = 0, progress: bool = True
) -> Path:
    """The recipe behind ``python -m glide_edu.recipes classifier --noised|--clean``."""
    diffusion_cfg = digits_diffusion_config()
    diffusion = create_diffusion(**diffusion_cfg)
    steps = steps or (CLASSIFIER_STEPS if noised else CLEAN_CLASSIFIER_STEPS)
    start = time.perf_counter()
    model, history = train_classifier(noised, steps, diffusion=diffusion, seed=seed, progress=progress)
    seconds = time.perf_counter() - start
    x_test, y_test = load_digits(16, "test")
    acc = accuracy_vs_t(model, diffusion, x_test, y_test, clean=not noised)
    flag = "--noised" if noised else "--clean"
    info = {
        "command": f"python -m glide_edu.recipes classifier {flag}",
        "noised": noised,
        "steps": steps,
        "batch_size": 64,
        "train_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "final_loss": history[-1]["loss"],
        "test_accuracy_vs_t": {str(k): round(v, 4) for k, v in acc.items()},
        "diffusion_of": "digits_simple",
        "weights": "stored as float16",
    }
    out = out or CHECKPOINT_DIR / f"{classifier_name(noised)}.safetensors"
    return save_classifier(out, model, diffusion_cfg, info)


# ------------------------------------------------------------------------------------------------ guidance
def classifier_log_prob(classifier: EncoderUNetModel, x: Tensor, t: Tensor, y: Tensor, clean: bool = False) -> Tensor:
    """log p_φ(y | x_t, t) per sample, (B,). ``clean=True``: the classifier is shown t = 0."""
    if clean:
        t = torch.zeros_like(t)
    return classifier(x, t).log_softmax(dim=-1).gather(1, y[:, None])[:, 0]


def classifier_cond_fn(classifier: EncoderUNetModel, scale: float, clean: bool = False) -> Callable[..., Tensor]:
    """``cond_fn(x, t, y=…)`` = scale·∇_{x_t} log p_φ(y | x_t, t) for ``GaussianDiffusion``'s samplers.

    The diffusion calls it with the *original* timesteps (respacing wraps it like the model) and with the
    ``model_kwargs``, which must hold ``y`` (B,) — the target labels. The gradient of the sum of the
    per-sample log-probabilities is each sample's own gradient, since samples do not interact.
    """

    def cond_fn(x: Tensor, t: Tensor, y: Tensor | None = None, **_: Any) -> Tensor:
        if y is None:
            raise ValueError("classifier guidance needs the target labels: pass model_kwargs={'y': labels}")
        with torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)
            log_p = classifier_log_prob(classifier, x_in, t, y, clean)
            (grad,) = torch.autograd.grad(log_p.sum(), x_in)
        return scale * grad

    return cond_fn


class _Unconditional:
    """Lets an unconditional model ignore the ``y`` that guidance puts into ``model_kwargs``."""

    def __init__(self, model: Callable[..., Tensor]) -> None:
        self.model = model

    def __call__(self, x: Tensor, t: Tensor, **_: Any) -> Tensor:
        return self.model(x, t)


def guided_samples(
    model: Callable[..., Tensor],
    diffusion: GaussianDiffusion,
    classifier: EncoderUNetModel,
    labels: Tensor,
    scale: float,
    method: str = "ancestral",
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    clean: bool = False,
    noise_fn: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Samples of the (unconditional) ``model`` guided towards ``labels`` (B,) with scale ``scale``.

    ``method`` is ``"ancestral"`` (μ + s·Σ·∇log p) or ``"ddim"`` (ε − s·√(1−ᾱ_t)·∇log p, η = 0). With
    ``scale == 0`` no cond_fn is passed at all, so the result is exactly the unguided sampler's.
    """
    if method not in ("ancestral", "ddim"):
        raise ValueError(f"method must be 'ancestral' or 'ddim', got {method!r}")
    shape = (len(labels), classifier.config.in_channels, classifier.config.image_size, classifier.config.image_size)
    cond_fn = classifier_cond_fn(classifier, scale, clean) if scale != 0 else None
    loop = diffusion.p_sample_loop if method == "ancestral" else diffusion.ddim_sample_loop
    return loop(
        _Unconditional(model),
        shape,
        noise=noise,
        cond_fn=cond_fn,
        model_kwargs={"y": labels},
        generator=generator,
        noise_fn=noise_fn,
    )



# ------------------------------------------------------------------------------------- the scale sweep
SWEEP_SCALES = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
RESULTS_PATH = DATA_DIR / "results" / "classifier_guidance.json"
SCHEMA = "glide_edu.classifier_guidance/1"
SWEEP_COMMAND = "python -m glide_edu.classifier_guidance sweep"


def sweep_labels(n: int) -> Tensor:
    """Balanced targets 0, 1, …, 9, 0, 1, … for ``n`` samples."""
    return torch.arange(n) % 10


def load_sampling_model(steps: int = 25) -> tuple[torch.nn.Module, GaussianDiffusion, Path]:
    """The shipped unconditional L_simple digits model and its process respaced to ``steps`` steps."""
    path = shipped_checkpoint("digits_simple")
    model, _, meta = load_small_checkpoint(path)
    diffusion = create_diffusion(**{**meta["diffusion_config"], "timestep_respacing": str(int(steps))})
    return model, diffusion, path


def _provenance_entry(path: Path, meta: dict | None = None) -> dict[str, Any]:
    from glide_edu.experiments import file_sha256

    entry = {"file": f"data/checkpoints/{Path(path).name}", "sha256": file_sha256(path)}
    if meta is not None:
        entry["info"] = meta.get("info", {})
    return entry


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
    agrees with the target. s = 0 is one unguided run shared by both classifiers.
    """
    from glide_edu.experiments import initial_noise

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
            row = {k: round(v, 4) for k, v in row.items()}
            results[name][f"{s:g}"] = row
            if s == 0:
                unguided = row
            if progress:
                print(f"{name} s={s:g}: {row} ({time.perf_counter() - t0:.0f} s)", flush=True)
    x_test, y_test = load_digits(16, "test")
    reference = {k: round(v, 4) for k, v in guided_sample_quality(real, x_test, y_test, net).items()}
    return {
        "schema": SCHEMA,
        "provenance": {
            "command": SWEEP_COMMAND,
            "date": _dt.date.today().isoformat(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "seconds": round(time.perf_counter() - start, 1),
            "checkpoints": {
                "digits_simple": _provenance_entry(model_path),
                **{name: _provenance_entry(meta["path"], meta) for name, (_, meta) in loaded.items()},
            },
        },
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


def write_sweep(results: dict[str, Any], path: str | Path = RESULTS_PATH) -> Path:
    """Write the sweep as indented JSON, atomically."""
    from glide_edu.experiments import write_results

    return write_results(results, path)


def load_sweep(path: str | Path = RESULTS_PATH, check_checkpoints: bool = True) -> dict[str, Any]:
    """Read the precomputed sweep; refuse it if it was made with other checkpoints than the shipped ones."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no results at {path}; regenerate with: {SWEEP_COMMAND}")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path} has schema {data.get('schema')!r}, expected {SCHEMA!r}")
    if check_checkpoints:
        from glide_edu.experiments import file_sha256

        for entry in data["provenance"]["checkpoints"].values():
            shipped = CHECKPOINT_DIR / Path(entry["file"]).name
            if file_sha256(shipped) != entry["sha256"]:
                raise ValueError(f"{path} was computed with another {shipped.name}; regenerate with: {SWEEP_COMMAND}")
    return data


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
    from glide_edu.experiments import initial_noise

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
    if scale < 0:
        raise ValueError(f"the guidance scale must be >= 0 (0: unguided), got {scale}")
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m glide_edu.classifier_guidance", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sw = sub.add_parser("sweep", help="chapter 5: guidance scale sweep for the noisy and clean classifiers")
    sw.add_argument("--scales", type=float, nargs="+", default=list(SWEEP_SCALES))
    sw.add_argument("--n-samples", type=int, default=200)
    sw.add_argument("--steps", type=int, default=25)
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--out", type=Path, default=RESULTS_PATH)
    sw.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = sweep(args.scales, args.n_samples, args.steps, args.seed)
    print(format_sweep(results))
    print(f"wrote {write_sweep(results, args.out)} in {results['provenance']['seconds']} s")


if __name__ == "__main__":
    main()
