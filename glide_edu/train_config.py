"""Options of a training run (:class:`TrainConfig`), the rules for changing them on resume, and the EMA.

Used by :class:`glide_edu.train.Trainer` (and re-exported there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class TrainConfig:
    """Hyper-parameters of :class:`Trainer` (defaults: Improved DDPM's recipe, scaled for a CPU)."""

    steps: int = 1000
    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.0
    ema_rate: float = 0.999
    # Warm-up of the EMA decay: min(ema_rate, (1 + n) / (10 + n)) after n updates (the num_updates rule of
    # tf.train.ExponentialMovingAverage, diffusers' EMAModel without use_ema_warmup). Without it, a 0.999 EMA
    # still gives the initial weights 0.999**n of the average (13 % after 2000 steps): fine for long runs,
    # a large lag for short CPU runs. Off by default so the shipped digits recipes reproduce bit for bit.
    ema_warmup: bool = False
    # Further EMAs beside ``ema_rate`` (improved-diffusion's comma list, e.g. [0.9999, 0.99995]): each is updated
    # every step, kept in the checkpoints (``ema.safetensors``, keys prefixed ``ema_<rate>.``) and written as
    # ``snapshots/ema-<rate>-step-<step>.safetensors``; ``ema_rate``'s EMA stays the one recipes ship.
    extra_ema_rates: list = field(default_factory=list)
    grad_clip: float | None = 1.0
    loss_type: str | None = None  # None: "simple" for a fixed Σ, "hybrid" for a learned one
    lambda_vlb: float = 0.001
    schedule_sampler: str = "uniform"  # or "loss-second-moment"
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 0  # 0: only at the end (when a run_dir is given)
    keep_checkpoints: int = 2
    sample_every: int = 0  # 0: no sample grids during training
    sample_count: int = 16  # images per grid
    sample_steps: int = 50  # respaced ancestral steps per grid
    snapshot_every: int = 0  # 0: no EMA snapshots (they need a run_dir)
    progress: bool = True
    # A blow-up guard: while the mean loss of the last ``blowup_window`` steps exceeds ``blowup_factor`` times
    # the best such mean so far, no checkpoint is written — so "the last good checkpoint" a NaN falls back to
    # dates from before the loss started to climb, not merely from before it became NaN.
    blowup_window: int = 50
    blowup_factor: float = 3.0
    # Where and how: "cpu", "cuda", "cuda:1", "mps" or "auto" (CUDA, else MPS, else CPU; under torchrun each
    # rank takes its LOCAL_RANK's GPU). precision "bf16": autocast to bfloat16; "fp16": autocast to float16 with
    # dynamic loss scaling (a step whose gradients overflow is skipped, EMA included); the weights, the
    # optimiser and the loss maths stay float32 either way (GroupNorm and attention softmax run in float32).
    device: str = "cpu"
    precision: str = "fp32"
    micro_batch: int = 0  # > 0: accumulate gradients over chunks of this many examples (per process)
    warmup_steps: int = 0  # linear lr warm-up over this many steps
    lr_anneal_steps: int = 0  # > 0: lr decays linearly to 0 at this step (improved-diffusion's lr_anneal_steps)
    grad_checkpointing: bool = False  # recompute block activations in the backward pass (less memory)
    parallel: str = "ddp"  # with several processes: "ddp" replicates the weights, "fsdp" shards them
    extra: dict = field(default_factory=dict)


    def __post_init__(self) -> None:
        # a list of floats, whatever sequence was given: checkpoints store JSON lists, and resume compares them
        if isinstance(self.extra_ema_rates, (list, tuple)) and all(
                isinstance(r, (int, float)) and not isinstance(r, bool) for r in self.extra_ema_rates):
            self.extra_ema_rates = [float(r) for r in self.extra_ema_rates]

    def validate(self) -> None:
        """One clear error for options no run can use (checked before anything is trained or written)."""
        bad = []
        if not (isinstance(self.steps, int) and self.steps >= 1):
            bad.append(f"steps={self.steps} (need ≥ 1)")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            bad.append(f"batch_size={self.batch_size} (need ≥ 1)")
        if not (math.isfinite(self.lr) and self.lr > 0):
            bad.append(f"lr={self.lr} (need a finite value > 0, e.g. 1e-4)")
        if not 0.0 <= self.ema_rate < 1.0:
            bad.append(f"ema_rate={self.ema_rate} (need 0 ≤ rate < 1, e.g. 0.9999)")
        rates = list(self.extra_ema_rates)
        if (any(not isinstance(r, (int, float)) or not 0.0 <= r < 1.0 for r in rates)
                or len(set(rates)) != len(rates) or self.ema_rate in rates):
            bad.append(f"extra_ema_rates={rates} (need distinct rates in [0, 1), none equal to ema_rate)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            bad.append(f"weight_decay={self.weight_decay} (need ≥ 0)")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            bad.append(f"grad_clip={self.grad_clip} (need > 0, or None for no clipping)")
        if self.keep_checkpoints < 1 or self.checkpoint_every < 0 or self.snapshot_every < 0:
            bad.append("keep_checkpoints ≥ 1, checkpoint_every ≥ 0 and snapshot_every ≥ 0 are needed")
        if self.parallel not in ("ddp", "fsdp"):
            bad.append(f"parallel={self.parallel!r} (ddp or fsdp)")
        if self.precision not in PRECISIONS:
            bad.append(f"precision={self.precision!r} (choose one of {', '.join(PRECISIONS)})")
        if not (isinstance(self.micro_batch, int) and self.micro_batch >= 0):
            bad.append(f"micro_batch={self.micro_batch} (need ≥ 0; 0 = the whole batch at once)")
        if self.warmup_steps < 0 or self.lr_anneal_steps < 0:
            bad.append(f"warmup_steps={self.warmup_steps}, lr_anneal_steps={self.lr_anneal_steps} (need ≥ 0)")
        try:
            if self.device != "auto":
                torch.device(self.device)
        except (RuntimeError, TypeError):
            bad.append(f"device={self.device!r} (use auto, cpu, cuda, cuda:N or mps)")
        if self.blowup_window < 1 or not self.blowup_factor > 1:
            bad.append(f"blowup_window={self.blowup_window} (≥ 1), blowup_factor={self.blowup_factor} (> 1)")
        if bad:
            raise ValueError("bad training options: " + "; ".join(bad))


# Options that define a run: resuming with another value would silently train a different model, so it is
# refused. Every other option (steps, lr, batch size, EMA rate, clipping, logging…) may change on resume: the
# new value applies from the resumed step and is recorded in trainer.json's "option_history".
PRECISIONS = ("fp32", "bf16", "fp16")


def lr_at(config: TrainConfig, step: int) -> float:
    """The learning rate of update number ``step`` (0-based): linear warm-up, then constant or linear anneal."""
    lr = config.lr
    if config.warmup_steps:
        lr *= min(1.0, (step + 1) / config.warmup_steps)
    if config.lr_anneal_steps:
        lr *= max(0.0, 1.0 - step / config.lr_anneal_steps)
    return lr


def resolve_training_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA (this rank's GPU), else MPS, else CPU; anything else as given, checked it exists."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but this PyTorch sees no CUDA GPU; use device='auto' or 'cpu'")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


FIXED_OPTIONS = ("seed", "loss_type", "lambda_vlb", "schedule_sampler", "ema_warmup", "extra_ema_rates")


def option_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The training options that differ between a checkpoint's ``old`` and the ``new`` config (``progress``
    and ``extra`` aside); raises for a change of a :data:`FIXED_OPTIONS` entry."""
    changes = [(k, old.get(k), new.get(k)) for k in sorted(new) if k not in ("progress", "extra")
               and k in old and old.get(k) != new.get(k)]
    fixed = [f"{k}: {a!r} → {b!r}" for k, a, b in changes if k in FIXED_OPTIONS]
    if fixed:
        raise ValueError(f"cannot resume with another {', '.join(fixed)}: these options define the run; resume "
                         "with the old value or train into another run_dir")
    return changes


def ema_decay(rate: float, n_updates: int, warmup: bool) -> float:
    """Decay of the EMA update after ``n_updates`` earlier ones: ``rate``, or min(rate, (1 + n) / (10 + n))."""
    return min(rate, (1 + n_updates) / (10 + n_updates)) if warmup else rate


def ema_update_fn(rate: float, warmup: bool = False):
    """``multi_avg_fn`` for :class:`~torch.optim.swa_utils.AveragedModel`: θ_ema ← d·θ_ema + (1 − d)·θ.

    AveragedModel copies the weights on its first update and calls this with the number of updates so far.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"ema_rate must be in [0, 1), got {rate}; typical values are 0.995–0.9999")

    @torch.no_grad()
    def update(ema_params: list[Tensor], params: list[Tensor], num_averaged: Tensor | int) -> None:
        decay = ema_decay(rate, int(num_averaged), warmup)
        for e, p in zip(ema_params, params, strict=True):
            e.lerp_(p.to(e.dtype), 1.0 - decay)

    return update


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def divergence_hint(config: TrainConfig) -> str:
    """What to change, for this configuration, after the loss became NaN/inf."""
    if not config.grad_clip:
        return "enable gradient clipping (grad_clip=1.0, --grad-clip 1)"
    return f"lower the learning rate (lr={config.lr:g} now; try {config.lr / 2:g}); clipping is already on"


def _config_diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Leaf-level differences between two JSON-like configs: [(dotted key, a value, b value)]."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[tuple[str, Any, Any]] = []
        for k in sorted(set(a) | set(b)):
            out += _config_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [(prefix.rstrip("."), a, b)]
