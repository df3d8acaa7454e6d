"""The files of a training run, as a mixin of :class:`glide_edu.train.Trainer`: checkpoints (save and resume),
EMA snapshots for training curves, and sample grids. Layout and crash safety: :mod:`glide_edu.run_dir`."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from glide_edu import distributed as ddp
from glide_edu.diffusion import GaussianDiffusion
from glide_edu.fileio import atomic_write
from glide_edu.resample import LossSecondMomentResampler
from glide_edu.run_dir import read_checkpoint, write_checkpoint
from glide_edu.train_config import _config_diff, option_changes


class TrainerFiles:
    """Checkpoints, snapshots and grids of a :class:`~glide_edu.train.Trainer` (which sets the attributes used)."""

    def grid_kwargs(self, n: int) -> dict[str, Tensor]:
        """The model inputs of a grid's ``n`` rows: class-conditional runs cycle through the dataset's labels."""
        classes = torch.unique(self.labels) if self.labels is not None else None
        return {} if classes is None else {"y": classes[torch.arange(n) % len(classes)]}

    def grid_model(self, model: Any) -> Any:
        """The function a grid samples with (given original timesteps): the EMA network itself here."""
        return model

    @torch.no_grad()
    def sample_grid(self) -> Tensor:
        """x_0 ~ p_θ from the EMA model: ``sample_count`` images, ``sample_steps`` respaced ancestral steps.

        The noise comes from its own generator (seed + 1), the same at every call, so grids of successive steps
        differ only by training (conditioning: :meth:`grid_kwargs`).
        """
        from glide_edu.plotting import make_grid, to_pil

        cfg = self.config
        n, shape = cfg.sample_count, (cfg.sample_count, *self.sample_shape)
        kwargs = {k: v.to(self.device) for k, v in self.grid_kwargs(n).items()}
        model, was_training = self.ema_model, self.ema_model.training
        model.eval()
        gen = torch.Generator().manual_seed(cfg.seed + 1)  # on the CPU: the same grids on every device

        def draw(like: Tensor) -> Tensor:
            return torch.randn(like.shape, generator=gen, dtype=like.dtype).to(like.device)

        samples = self._grid_sampler.p_sample_loop(self.grid_model(model), shape, model_kwargs=kwargs,
                                                   device=self.device, noise_fn=draw).cpu()  # (n, C, H, W)
        model.train(was_training)
        if self.run_dir is not None and self.rank == 0:
            folder = self.run_dir / "samples"
            folder.mkdir(parents=True, exist_ok=True)
            image = to_pil(make_grid(samples, nrow=int(math.ceil(math.sqrt(n))))[None])[0]
            atomic_write(folder / f"step-{self.step:07d}.png", lambda tmp: image.save(tmp, format="PNG"))
        return samples

    @cached_property
    def _grid_sampler(self) -> GaussianDiffusion:
        """The training diffusion respaced to ``sample_steps`` (as is, when it is already respaced)."""
        from glide_edu.respace import SpacedDiffusion, space_timesteps

        base = self.diffusion
        if getattr(base, "original_num_steps", base.num_timesteps) != base.num_timesteps:
            return base
        return SpacedDiffusion(space_timesteps(base.num_timesteps, self.config.sample_steps), base.betas,
                               model_mean_type=base.model_mean_type, model_var_type=base.model_var_type)

    def snapshot_path(self, rate: float | None = None) -> Path:
        """``snapshots/ema-step-<step>.safetensors`` (``ema_rate``) or ``ema-<rate>-step-…`` (an extra rate)."""
        tag = "ema" if rate is None or rate == self.config.ema_rate else f"ema-{rate:g}"
        return self.run_dir / "snapshots" / f"{tag}-step-{self.step:07d}.safetensors"

    def save_snapshot(self) -> Path:
        """The EMA weights now, as ``<run_dir>/snapshots/ema-step-<step>.safetensors``, and one
        ``ema-<rate>-step-<step>.safetensors`` per extra EMA rate; returns the first."""
        write = self.snapshot_writer()  # checked on every rank, before any collective
        paths = []
        for rate in self.ema_models:
            ema = self.full_ema(rate)  # (FSDP: gathered on every rank's call; rank 0 writes)
            paths.append(self.snapshot_path(rate))
            if self.rank == 0:
                write(paths[-1], ema, rate)
        return paths[0]

    def snapshot_writer(self) -> Callable[[Path, nn.Module, float], Path]:
        """``write(path, ema, rate)`` for one EMA network: a small checkpoint (a text trainer: GLIDE's format)."""
        from glide_edu.pretrained import save_small_checkpoint

        config = getattr(self.model, "config", None)
        if self.run_dir is None or config is None:
            raise ValueError("snapshots need a run_dir and a model with a dataclass .config (UNetModel, classifier)")

        def write(path: Path, ema: nn.Module, rate: float) -> Path:
            info = {"step": self.step, "ema_rate": rate, "ema_warmup": self.config.ema_warmup}
            return save_small_checkpoint(path, ema, config, self.diffusion_config, info)

        return write

    def full_ema(self, rate: float | None = None) -> nn.Module:
        """The EMA network (of ``rate``; default ``ema_rate``) for writing: itself, or under FSDP a holder of its
        gathered state (collective)."""
        module = self.ema_models[self.config.ema_rate if rate is None else rate]
        return ddp.StateHolder(ddp.full_state(module)) if self.fsdp else module

    @property
    def ema_models(self) -> dict[float, nn.Module]:
        """Every EMA network by its rate, ``ema_rate``'s first."""
        return {self.config.ema_rate: self.ema.module, **{r: e.module for r, e in self.extra_emas.items()}}

    @property
    def ema_model(self) -> nn.Module:
        """The EMA network (use it for sampling)."""
        return self.ema.module

    # ----------------------------------------------------------------------------------- checkpoints
    def _meta(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "model_config": self.model_config,
            "diffusion_config": self.diffusion_config,
            "train_config": asdict(self.config),
            "option_history": self.option_history,
        }

    def save(self) -> Path:
        """Write ``ckpt-<step>`` atomically, point ``latest`` at it and prune old checkpoints.

        Under DDP every rank must call it (their RNG states are gathered); rank 0 writes, the others wait."""
        if self.run_dir is None:
            raise ValueError("this Trainer has no run_dir; pass run_dir=… to save checkpoints")
        rng = torch.get_rng_state()
        state = {
            "optimizer": (ddp.full_optimizer_state(self.model, self.optimizer) if self.fsdp
                          else self.optimizer.state_dict()),
            "ema_n_averaged": self.ema.n_averaged.detach().clone(),
            "extra_ema_n_averaged": torch.stack([e.n_averaged.detach().clone().reshape(())
                                                 for e in self.extra_emas.values()] or [torch.zeros(())]),
            "torch_rng": rng,
            "generator": self.generator.get_state(),
        }
        # the blow-up guard's window, so a resumed run decides "no checkpoint while climbing" as the original
        state["blowup_recent"] = torch.tensor(self._recent, dtype=torch.float64)
        state["blowup_best"] = torch.tensor(self._best_recent, dtype=torch.float64)
        if self.scaler.is_enabled():  # fp16: the loss scale and its growth tracker
            state["grad_scaler"] = self.scaler.state_dict()
        if self.device.type == "cuda":  # dropout masks drawn on the GPU
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.world_size > 1:  # (world, state bytes): each rank's dropout RNG
            state["torch_rng_ranks"] = ddp.all_gather_cat(rng[None])
            if "cuda_rng" in state:
                state["cuda_rng_ranks"] = ddp.all_gather_cat(state["cuda_rng"][None])
        state.update(self.data_state())  # (collective under DDP: every rank is here)
        if isinstance(self.sampler, LossSecondMomentResampler):
            state["sampler_history"] = torch.from_numpy(self.sampler._history.copy())
            state["sampler_counts"] = torch.from_numpy(self.sampler._counts.copy())
        gather = ddp.full_state if self.fsdp else (lambda m: m.state_dict())  # FSDP: the one-process format
        model_state, ema_state = gather(self.model), gather(self.ema.module)
        for rate, ema in self.extra_emas.items():  # further EMAs in the same file, prefixed by their rate
            ema_state.update({f"ema_{rate!r}.{k}": v for k, v in gather(ema.module).items()})
        path = self.run_dir / f"ckpt-{self.step:07d}"
        if self.rank == 0:
            path = write_checkpoint(self.run_dir, self.step, model_state, ema_state, state, self._meta(),
                                    self.config.keep_checkpoints)
        ddp.barrier()
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Resume from a checkpoint folder; refuses one written for another model or diffusion config, or with
        other run-defining options (:data:`FIXED_OPTIONS`); other changed options are applied and recorded."""
        path = Path(path)
        model_state, ema_state, state, meta = read_checkpoint(path)
        for key, mine in (("model_config", self.model_config), ("diffusion_config", self.diffusion_config)):
            theirs = meta.get(key)
            if theirs != mine:
                diff = ", ".join(f"{k}: {a!r} → {b!r}" for k, a, b in _config_diff(theirs, mine)[:4])
                raise ValueError(
                    f"checkpoint {path} was written for a different {key} ({diff}); "
                    "use another run_dir to train this configuration — nothing was overwritten"
                )
        changes = option_changes(meta.get("train_config", {}), asdict(self.config))
        if self.extra_emas and "extra_ema_n_averaged" not in state:
            raise ValueError(f"checkpoint {path} holds no EMAs at the rates {list(self.extra_emas)}; resume without "
                             "extra_ema_rates or train into another run_dir")
        extra_states = {rate: {k[len(f"ema_{rate!r}."):]: ema_state.pop(k) for k in list(ema_state)
                               if k.startswith(f"ema_{rate!r}.")} for rate in self.extra_emas}
        if self.fsdp:
            ddp.load_full_state(self.model, model_state)
            ddp.load_full_state(self.ema.module, ema_state)
            for rate, ema in self.extra_emas.items():
                ddp.load_full_state(ema.module, extra_states[rate])
            ddp.load_full_optimizer_state(self.model, self.optimizer, state["optimizer"])
        else:
            self.model.load_state_dict(model_state, strict=True)
            self.ema_model.load_state_dict(ema_state, strict=True)
            for rate, ema in self.extra_emas.items():
                ema.module.load_state_dict(extra_states[rate], strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
        for i, ema in enumerate(self.extra_emas.values()):
            ema.n_averaged.copy_(state["extra_ema_n_averaged"][i])
        for group in self.optimizer.param_groups:  # a changed lr / weight decay applies from here on
            group["lr"], group["weight_decay"] = self.config.lr, self.config.weight_decay
        self.ema.n_averaged.copy_(state["ema_n_averaged"])
        ranks = state.get("torch_rng_ranks")
        if self.world_size > 1 and ranks is not None and ranks.shape[0] == self.world_size:
            torch.set_rng_state(ranks[self.rank].clone())
        elif self.world_size > 1:  # another number of processes wrote it: fresh per-rank module randomness
            torch.manual_seed(self.config.seed + 1000 * self.step + self.rank)
        else:
            torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and "cuda_rng" in state:
            cuda = state.get("cuda_rng_ranks")
            mine = cuda[self.rank] if cuda is not None and cuda.shape[0] == self.world_size else state["cuda_rng"]
            torch.cuda.set_rng_state(mine.clone(), self.device)
        self.generator.set_state(state["generator"])
        self.load_data_state(state)
        if "blowup_recent" in state:
            self._recent = state["blowup_recent"].tolist()
            self._best_recent = float(state["blowup_best"])
        if self.scaler.is_enabled() and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        if isinstance(self.sampler, LossSecondMomentResampler) and "sampler_history" in state:
            self.sampler._history = state["sampler_history"].numpy().copy()
            self.sampler._counts = state["sampler_counts"].numpy().copy()
        self.step = int(meta["step"])
        self.option_history = list(meta.get("option_history", []))
        if changes:
            self.option_history.append({"step": self.step, "changed": {k: [a, b] for k, a, b in changes}})
