"""Training the noisy classifier p_φ(y | x_t, t) of classifier guidance (Dhariwal & Nichol 2021), and its files.

* :func:`train_classifier` — cross-entropy on x_t = q_sample(x_0, t) with t uniform over the *same*
  diffusion as the digits model (the **noisy** classifier), or on clean x_0 with t = 0 (the **clean**
  control); :func:`accuracy_vs_t` measures either on noised test digits.
* :func:`save_classifier` / :func:`load_classifier` — small safetensors checkpoints with provenance;
  :func:`train_and_save_classifier` is the recipe behind ``python -m glide_edu.recipes classifier``, and
  :func:`classifier_run` (a :class:`ClassifierTrainConfig`) behind ``glide-edu train classifier-noisy``.

The gradient that steers sampling, s·∇ log p_φ(y | x_t, t), is :func:`glide_edu.guidance.classifier_cond_fn`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor

from glide_edu.data import load_digits
from glide_edu.diffusion import GaussianDiffusion
from glide_edu.nn.classifier import ClassifierConfig, EncoderUNetModel
from glide_edu.pretrained import read_metadata, save_small_checkpoint, shipped_checkpoint
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
    "ClassifierTrainConfig",
    "classifier_run",
]

DIGITS_CLASSIFIER = ClassifierConfig()  # 16×16, widths 32/64/64, 1 ResBlock per level, attention pool
CLASSIFIER_STEPS = 6000  # the noisy classifier (2000 steps: held-out accuracy 1–3 points lower at t = 500–900);
# the clean task converges much sooner (train accuracy 1.0 by step 800)
CLEAN_CLASSIFIER_STEPS = 1000
EVAL_TIMESTEPS = (0, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 999)


@dataclass
class ClassifierTrainConfig:
    """``[train]`` of a ``kind = "classifier"`` config: :func:`train_classifier`'s arguments (the recipe's
    defaults: AdamW 1e-3, weight decay 0.05, batch 64, lr annealed linearly to 0)."""

    steps: int = CLASSIFIER_STEPS
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    noised: bool = True  # False: the clean control (x_0, t = 0 only)
    seed: int = 0
    log_every: int = 200
    progress: bool = True

    def validate(self) -> None:
        if not (self.steps >= 1 and self.batch_size >= 1 and self.lr > 0 and self.weight_decay >= 0
                and self.log_every >= 1):
            raise ValueError(f"bad classifier training options: steps = {self.steps} (≥ 1), batch_size = "
                             f"{self.batch_size} (≥ 1), lr = {self.lr} (> 0), weight_decay = {self.weight_decay} "
                             f"(≥ 0), log_every = {self.log_every} (≥ 1) are needed")


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


def classifier_run(out: Path, model_config: ClassifierConfig = DIGITS_CLASSIFIER,
                   train: ClassifierTrainConfig | None = None, diffusion_config: dict[str, Any] | None = None,
                   info: dict[str, Any] | None = None) -> tuple[Path, list[dict[str, float]]]:
    """Train a digits classifier (noisy or clean, ``train``) on the diffusion ``diffusion_config`` (default:
    the shipped digits model's), measure its accuracy against t on the test digits, and write it to ``out``
    with ``info`` and that provenance; returns (path, history)."""
    train = train or ClassifierTrainConfig()
    train.validate()
    model_config.validate()
    diffusion_cfg = dict(diffusion_config or digits_diffusion_config())
    diffusion = create_diffusion(**diffusion_cfg)
    start = time.perf_counter()
    model, history = train_classifier(train.noised, train.steps, train.batch_size, train.lr, train.weight_decay,
                                      model_config, diffusion, train.seed, train.log_every, train.progress)
    seconds = time.perf_counter() - start
    x_test, y_test = load_digits(model_config.image_size, "test")
    acc = accuracy_vs_t(model, diffusion, x_test, y_test, clean=not train.noised)
    record = {
        **(info or {}),
        "noised": train.noised,
        "steps": train.steps,
        "batch_size": train.batch_size,
        "train_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "final_loss": history[-1]["loss"],
        "test_accuracy_vs_t": {str(k): round(v, 4) for k, v in acc.items()},
        "diffusion_of": "digits_simple" if diffusion_config is None else "the config's [diffusion]",
        "weights": "stored as float16",
    }
    return save_classifier(out, model, diffusion_cfg, record), history


def train_and_save_classifier(
    noised: bool, steps: int | None = None, out: Path | None = None, seed: int = 0, progress: bool = True
) -> Path:
    """The recipe behind ``python -m glide_edu.recipes classifier --noised|--clean``."""
    steps = steps if steps is not None else (CLASSIFIER_STEPS if noised else CLEAN_CLASSIFIER_STEPS)
    if steps < 1:
        raise ValueError(f"steps={steps}: a classifier needs at least 1 training step")
    if out is None:
        raise ValueError("give out=… (--out): where to write the classifier; recipes never default to a shipped file")
    flag = "--noised" if noised else "--clean"
    train = ClassifierTrainConfig(steps=steps, noised=noised, seed=seed, progress=progress)
    info = {"command": f"python -m glide_edu.recipes classifier {flag}"}
    return classifier_run(out, DIGITS_CLASSIFIER, train, info=info)[0]
