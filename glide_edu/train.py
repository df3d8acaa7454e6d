"""Training loop for diffusion models: AdamW, EMA, gradient clipping, importance sampling, checkpoints.

Checkpoints are folders ``<run_dir>/ckpt-<step>/`` holding

* ``model.safetensors`` and ``ema.safetensors`` — the raw and EMA weights;
* ``optimizer.pt`` — optimiser, sampler and RNG state (tensors and plain values only: it loads with
  ``torch.load(weights_only=True)``);
* ``trainer.json`` — the model, diffusion and training configs and the step.

With ``sample_every`` set, the EMA model also draws a grid from the same fixed noise every that many steps:
``<run_dir>/samples/step-<step>.png`` (written atomically) and ``Trainer.last_samples``. With
``snapshot_every`` set, the EMA weights are also kept every that many steps as small checkpoints
``<run_dir>/snapshots/ema-step-<step>.safetensors`` (:func:`glide_edu.pretrained.save_small_checkpoint`
format), which is how a training curve (quality against steps) is measured after the fact.

Each is written into a temporary folder that is renamed into place (atomic on POSIX), and the small file
``<run_dir>/latest`` is replaced atomically last, so an interrupted write never damages the previous
checkpoint (:mod:`glide_edu.run_dir`: the folder is locked for one trainer; what a kill leaves behind is
cleaned or skipped on the next start). Resuming refuses a checkpoint whose model or diffusion config, or a
run-defining option (:data:`FIXED_OPTIONS`), differs from the current one; other options may change and
are applied and recorded (``option_history`` in ``trainer.json``). Options are validated before anything runs.

Under ``torchrun`` (an initialised process group) the trainer is one rank of a ``DistributedDataParallel`` job:
``batch_size`` is the global batch, each rank trains on its slice, rank 0 writes every file
(:mod:`glide_edu.distributed`). N processes give the one-process run's weights within float tolerance.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from glide_edu import distributed as ddp
from glide_edu.diffusion import GaussianDiffusion
from glide_edu.resample import LossSecondMomentResampler, create_named_schedule_sampler
from glide_edu.run_dir import (  # noqa: F401  (latest_checkpoint: re-exported, part of this module's API)
    RunLock,
    check_writable,
    clean_temporaries,
    latest_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from glide_edu.train_config import (  # noqa: F401  (re-exported: part of this module's API)
    FIXED_OPTIONS,
    TrainConfig,
    TrainingDiverged,
    _config_diff,
    divergence_hint,
    ema_decay,
    ema_update_fn,
    lr_at,
    option_changes,
    resolve_training_device,
)
from glide_edu.train_io import TrainerFiles


class Trainer(TrainerFiles):
    """Train ``model`` on ``images`` (N, C, H, W) in [−1, 1] (and optional ``labels``) with ``diffusion``.

    Subclasses with ``local_batches = True`` (streamed data, :mod:`glide_edu.train_stream`) return this rank's
    slice from :meth:`batch` and draw its timesteps and noise from a per-rank generator (:meth:`batch_seed`).

    Args:
        model: ε_θ (a ``UNetModel`` or any module called as ``model(x_t, t, **kwargs)``).
        diffusion: the training process (T steps, no respacing).
        images / labels: the dataset; labels are passed to the model as ``y``.
        config: :class:`TrainConfig`.
        run_dir: where checkpoints go; if it holds one, training resumes from it.
        model_config / diffusion_config: JSON-able descriptions stored with checkpoints and compared on resume.
        label_dropout: probability of replacing a label by ``null_label`` (classifier-free guidance training).
    """

    def __init__(
        self,
        model: nn.Module,
        diffusion: GaussianDiffusion,
        images: Tensor,
        config: TrainConfig | None = None,
        labels: Tensor | None = None,
        run_dir: str | os.PathLike | None = None,
        model_config: dict[str, Any] | None = None,
        diffusion_config: dict[str, Any] | None = None,
        label_dropout: float = 0.0,
        null_label: int | None = None,
    ) -> None:
        self.config = cfg = config or TrainConfig()
        cfg.validate()
        self._check_data(model, images, labels)
        self.model, self.diffusion = model, diffusion
        self.images, self.labels = images, labels
        self.label_dropout, self.null_label = label_dropout, null_label
        if label_dropout and null_label is None:
            raise ValueError("label_dropout needs null_label (the index of the learned 'no label' embedding)")
        # JSON round trip so tuples and lists compare equal to what a checkpoint stores
        self.model_config = json.loads(json.dumps(model_config or {}))
        self.diffusion_config = json.loads(json.dumps(diffusion_config or {}))
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.rank, self.world_size = ddp.rank_and_world()
        ddp.check_divisible(cfg.batch_size, self.world_size)
        torch.manual_seed(cfg.seed + self.rank)  # dropout and other module randomness, per rank
        self.generator = torch.Generator().manual_seed(self.batch_seed())  # batches, timesteps, noise (on the CPU)
        self.device = resolve_training_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
        model.to(self.device)
        if cfg.grad_checkpointing:
            if not hasattr(model, "enable_gradient_checkpointing"):
                raise ValueError(f"grad_checkpointing: {type(model).__name__} has no enable_gradient_checkpointing()")
            model.enable_gradient_checkpointing()
        self.ema = AveragedModel(model, multi_avg_fn=ema_update_fn(cfg.ema_rate, cfg.ema_warmup), use_buffers=True)
        self.extra_emas = {rate: AveragedModel(model, multi_avg_fn=ema_update_fn(rate, cfg.ema_warmup),
                                               use_buffers=True) for rate in cfg.extra_ema_rates}
        self.fsdp = self.world_size > 1 and cfg.parallel == "fsdp"
        if self.fsdp:  # rank 0's initial weights everywhere, then weights and EMAs sharded over the ranks
            ddp.broadcast_module(model)
            for ema in (self.ema, *self.extra_emas.values()):
                ema.load_state_dict({**ema.state_dict(), **{f"module.{k}": v for k, v in model.state_dict().items()}})
            ddp.shard_model(model)
            for ema in (self.ema, *self.extra_emas.values()):
                ddp.shard_model(ema.module)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        # the module the loss calls: DDP averages its gradients over ranks (and broadcast rank 0's weights now)
        gpu = [self.device.index] if self.device.type == "cuda" else None
        ddp_wrap = self.world_size > 1 and not self.fsdp
        self.net: nn.Module = DistributedDataParallel(model, device_ids=gpu) if ddp_wrap else model
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
        # fp16: dynamic loss scaling, fp32 master weights (the model's own); disabled = plain steps
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.skipped_steps = 0  # fp16 steps skipped for overflowing gradients
        self.sampler = create_named_schedule_sampler(cfg.schedule_sampler, diffusion.num_timesteps)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.last_samples: Tensor | None = None  # (sample_count, C, H, W), the latest grid's images
        self.option_history: list[dict[str, Any]] = []
        self.lock: RunLock | None = None
        self._recent: list[float] = []  # the last blowup_window losses (not saved: it only decides what is saved)
        self._best_recent, self._warned_climbing = math.inf, False
        self._check_sampling(cfg, diffusion.num_timesteps)
        if self.run_dir is not None:
            if self.rank == 0:
                n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
                check_writable(self.run_dir, need_bytes=4 * n_bytes * (cfg.keep_checkpoints + 1))  # weights, EMA, Adam
                self.lock = RunLock(self.run_dir)  # a second trainer on this folder is refused
                removed = clean_temporaries(self.run_dir)
                if removed:
                    warnings.warn(f"removed {len(removed)} half-written checkpoint folder(s) a stopped run left in "
                                  f"{self.run_dir}: {', '.join(removed)}", stacklevel=2)
            ddp.barrier()  # the other ranks read the folder only once rank 0 has cleaned it
            latest = latest_checkpoint(self.run_dir)
            if latest is not None:
                self.load(latest)

    local_batches = False  # True: batch() returns this rank's examples, not the global batch

    def batch_seed(self) -> int:
        """Seed of ``generator``: the same on every rank, since each draws the global batch and takes its slice."""
        return self.config.seed

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one training image (and of a grid's samples)."""
        return tuple(self.images.shape[1:])

    def data_state(self) -> dict[str, Tensor]:
        """Extra tensors a checkpoint keeps for the data source (collective: every rank calls it); none here."""
        return {}

    def load_data_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`data_state` saved (``state``: the checkpoint's ``optimizer.pt``)."""

    @staticmethod
    def _check_sampling(cfg: TrainConfig, num_timesteps: int) -> None:
        grids = cfg.sample_every > 0  # the grid settings matter only when grids are drawn
        if cfg.sample_every < 0 or (grids and (cfg.sample_count < 1 or not 1 <= cfg.sample_steps <= num_timesteps)):
            raise ValueError(
                f"sample_every={cfg.sample_every}, sample_count={cfg.sample_count}, sample_steps={cfg.sample_steps}: "
                f"need sample_every ≥ 0 (0 = off), sample_count ≥ 1 and 1 ≤ sample_steps ≤ {num_timesteps}"
            )

    # ------------------------------------------------------------------------------------------ data
    @staticmethod
    def _check_data(model: nn.Module, images: Tensor, labels: Tensor | None) -> None:
        if not isinstance(images, Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a (N, C, H, W) tensor, got {shape}")
        if images.shape[0] == 0:
            raise ValueError("the dataset is empty: no images to train on")
        if not torch.isfinite(images).all() or images.min() < -1.0001 or images.max() > 1.0001:
            raise ValueError("images must be finite and scaled to [-1, 1] (x / 127.5 - 1 for 8-bit data)")
        cfg = getattr(model, "config", None)
        if cfg is not None and hasattr(cfg, "image_size"):
            channels = getattr(model, "data_channels", cfg.in_channels)  # (an upsampler's 6 inputs are 3 + 3)
            if images.shape[1] != channels or images.shape[-1] != cfg.image_size:
                raise ValueError(
                    f"images are {tuple(images.shape[1:])} but the model expects "
                    f"({channels}, {cfg.image_size}, {cfg.image_size}); resize the data or change the config"
                )
        if labels is not None and (labels.ndim != 1 or labels.shape[0] != images.shape[0]):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")

    def batch(self) -> tuple[Tensor, dict[str, Tensor]]:
        idx = torch.randint(0, self.images.shape[0], (self.config.batch_size,), generator=self.generator)
        kwargs: dict[str, Tensor] = {}
        if self.labels is not None:
            y = self.labels[idx].clone()
            if self.label_dropout:
                drop = torch.rand(y.shape, generator=self.generator) < self.label_dropout
                y[drop] = self.null_label
            kwargs["y"] = y
        return self.images[idx], kwargs

    # ----------------------------------------------------------------------------------------- train
    def _model_fp32_out(self, x: Tensor, t: Tensor, **kwargs: Tensor) -> Tensor:
        """The network under autocast (bf16/fp16), its output back in float32 so the loss maths is float32."""
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            return self.net(x, t, **kwargs).float()

    def _losses(self, x0: Tensor, t: Tensor, noise: Tensor, kwargs: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.diffusion.training_losses(self._model_fp32_out, x0, t, model_kwargs=kwargs, noise=noise,
                                              loss_type=self.config.loss_type, lambda_vlb=self.config.lambda_vlb)

    def train_step(self) -> dict[str, float]:
        """One optimiser step (of micro-batches, when ``micro_batch`` is set); returns the logged scalars."""
        self.model.train()
        x0, kwargs = self.batch()  # the global batch: the same draw on every rank (local_batches: this rank's)
        t, weights = self.sampler.sample(x0.shape[0], generator=self.generator)
        noise = torch.randn(x0.shape, generator=self.generator)
        if self.world_size > 1 and not self.local_batches:  # this rank's slice of it
            x0, t, weights, noise = (ddp.shard(v, self.rank, self.world_size) for v in (x0, t, weights, noise))
            kwargs = {k: ddp.shard(v, self.rank, self.world_size) for k, v in kwargs.items()}
        x0, t, weights, noise = (v.to(self.device) for v in (x0, t, weights, noise))
        kwargs = {k: v.to(self.device) for k, v in kwargs.items()}
        n = x0.shape[0]
        chunk = self.config.micro_batch or n
        starts = range(0, n, chunk)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, losses, parts = torch.zeros((), device=self.device), [], {"mse": [], "vb": []}
        for i in starts:
            sl = slice(i, i + chunk)
            last = i + chunk >= n
            if self.fsdp:
                self.model.set_requires_gradient_sync(last)
            ddp_accumulating = self.world_size > 1 and not last and not self.fsdp
            sync = self.net.no_sync() if ddp_accumulating else contextlib.nullcontext()
            with sync:  # DDP reduces the gradients once, after the last micro-batch
                terms = self._losses(x0[sl], t[sl], noise[sl], {k: v[sl] for k, v in kwargs.items()})
                size = terms["loss"].shape[0]
                loss = (terms["loss"] * weights[sl]).mean() * (size / n)  # chunks add up to the batch mean
                self.scaler.scale(loss).backward()
            loss_sum += loss.detach()
            losses.append(terms["loss"].detach())
            for key in parts:
                if key in terms:
                    parts[key].append(terms[key].detach())
        if isinstance(self.sampler, LossSecondMomentResampler):
            # under DDP it gathers every rank's (t, loss) in rank order: the one-process sampler state everywhere
            self.sampler.update_with_local_losses(t, torch.cat(losses))
        global_loss = ddp.mean_across(loss_sum)  # the same number on every rank, so all stop together
        if not torch.isfinite(global_loss) and self.scaler.is_enabled() and self.skipped_steps < 20:
            self.scaler.update(self.scaler.get_scale() / 2)  # fp16 overflow in the forward pass: skip, rescale
            return self._skipped(global_loss)
        if not torch.isfinite(global_loss):
            good = latest_checkpoint(self.run_dir) if self.run_dir is not None else None
            kept = f"; the last good checkpoint, {good.name}, is kept and resuming starts there" if good else ""
            raise TrainingDiverged(f"the loss became {global_loss.item()} at step {self.step + 1}; weights were not "
                                   f"updated{kept} — {divergence_hint(self.config)}")
        if self.config.warmup_steps or self.config.lr_anneal_steps:  # else the groups' lr stays as set
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.config, self.step)
        self.scaler.unscale_(self.optimizer)  # true gradients for clipping (no-op unless fp16)
        grad_norm = float("nan")
        if self.config.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # (FSDP: a DTensor)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        self.scaler.step(self.optimizer)  # skipped when fp16 gradients overflowed
        self.scaler.update()
        if self.scaler.is_enabled() and self.scaler.get_scale() < scale:
            return self._skipped(global_loss)
        self.skipped_steps = 0
        self.ema.update_parameters(self.model)
        for ema in self.extra_emas.values():
            ema.update_parameters(self.model)
        self.step += 1
        logs = {"step": self.step, "loss": float(global_loss)}
        for key, values in parts.items():
            if values:
                logs[key] = float(ddp.mean_across(torch.cat(values).mean()))
        if not math.isnan(grad_norm):
            logs["grad_norm"] = grad_norm
        return logs

    def _skipped(self, loss: Tensor) -> dict[str, float]:
        """An fp16 step whose gradients (or loss) overflowed: no update, no EMA; the loss scale was halved."""
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self.step += 1
        return {"step": self.step, "loss": float(loss), "skipped": 1.0, "loss_scale": self.scaler.get_scale()}

    def train(self, steps: int | None = None, callback: Callable[[Trainer, dict], None] | None = None) -> list[dict]:
        """Train until ``steps`` total steps (default: config.steps); checkpoints as configured. The run folder
        stays locked until this returns (or raises)."""
        target = steps if steps is not None else self.config.steps
        if self.run_dir is not None and self.lock is None and self.rank == 0:
            self.lock = RunLock(self.run_dir)
        bar = tqdm(total=target, initial=self.step, desc="training", leave=False,
                   disable=not self.config.progress or self.rank != 0)
        try:
            while self.step < target:
                self._one_step(target, bar, callback)
        finally:
            bar.close()
            if self.lock is not None:
                self.lock.release()
                self.lock = None
        return self.history

    def loss_is_climbing(self, loss: float) -> bool:
        """Record ``loss``; True while the recent mean loss is ``blowup_factor`` × above its best (no saving)."""
        window = self.config.blowup_window
        self._recent.append(loss)
        del self._recent[:-window]
        if len(self._recent) < window:
            return False
        mean = sum(self._recent) / window
        self._best_recent = min(self._best_recent, mean)
        return mean > self.config.blowup_factor * self._best_recent

    def _one_step(self, target: int, bar: Any, callback: Callable[[Trainer, dict], None] | None) -> None:
        logs = self.train_step()
        climbing = self._warned_climbing if "skipped" in logs else self.loss_is_climbing(logs["loss"])
        if climbing and not self._warned_climbing:
            warnings.warn(f"step {self.step}: the mean loss of the last {self.config.blowup_window} steps is more than "
                          f"{self.config.blowup_factor:g}× its best; no checkpoint is written until it recovers",
                          stacklevel=3)
        self._warned_climbing = climbing
        bar.update(1)
        if self.step % max(1, self.config.log_every) == 0 or self.step == target:
            self.history.append(logs)
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
        if callback is not None:
            callback(self, logs)
        every = self.config.checkpoint_every
        if self.run_dir is not None and ((every and self.step % every == 0) or self.step == target) and not climbing:
            self.save()
        everyone = self.rank == 0 or self.fsdp  # a sharded EMA samples and gathers on every rank
        if self.config.sample_every and self.step % self.config.sample_every == 0 and everyone:
            self.last_samples = self.sample_grid()
        if (self.run_dir is not None and self.config.snapshot_every and self.step % self.config.snapshot_every == 0
                and everyone):
            self.save_snapshot()
