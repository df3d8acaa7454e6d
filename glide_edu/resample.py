"""Timestep samplers for training: which t each image of a batch is noised to.

A sampler draws t ~ p_t and returns the importance weights w_t = 1/(T·p_t), so that the weighted loss
E_{t∼p}[w_t·L_t] = (1/T)·Σ_t L_t stays an unbiased estimate of the uniform objective.

:class:`LossSecondMomentResampler` (Improved DDPM §3.3) sets p_t ∝ √E[L_t²] from the last 10 losses seen
at each t (uniform until every t has 10), mixed with 0.1 % uniform. It works in one process; when
``torch.distributed`` is initialised it all-gathers the (t, loss) pairs of every rank first.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor


class ScheduleSampler:
    """Base class: subclasses define :meth:`weights` (unnormalised p_t, shape (T,))."""

    def __init__(self, num_timesteps: int) -> None:
        if num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
        self.num_timesteps = num_timesteps

    def weights(self) -> np.ndarray:
        raise NotImplementedError

    def probabilities(self) -> np.ndarray:
        w = np.asarray(self.weights(), dtype=np.float64)
        return w / w.sum()

    def sample(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(t (B,) int64, weights (B,) float32) with t ~ p and weights 1/(T·p_t)."""
        p = torch.from_numpy(self.probabilities())
        t = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        weights = 1.0 / (self.num_timesteps * p[t])
        return t.to(device), weights.float().to(device)


class UniformSampler(ScheduleSampler):
    """t ~ Uniform{0, …, T−1}; every weight is 1."""

    def weights(self) -> np.ndarray:
        return np.ones(self.num_timesteps)


class LossSecondMomentResampler(ScheduleSampler):
    """p_t ∝ √E[L_t²] over the last ``history_per_term`` losses at t, mixed with ``uniform_prob`` uniform."""

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001) -> None:
        super().__init__(num_timesteps)
        if history_per_term < 1 or not 0.0 <= uniform_prob <= 1.0:
            raise ValueError("history_per_term must be >= 1 and uniform_prob in [0, 1]")
        self.history_per_term = history_per_term
        self.uniform_prob = uniform_prob
        self._history = np.zeros((num_timesteps, history_per_term), dtype=np.float64)
        self._counts = np.zeros(num_timesteps, dtype=np.int64)

    def warmed_up(self) -> bool:
        return bool((self._counts == self.history_per_term).all())

    def weights(self) -> np.ndarray:
        if not self.warmed_up():
            return np.ones(self.num_timesteps)
        w = np.sqrt(np.mean(self._history**2, axis=-1))
        w = w / w.sum()
        return w * (1 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def update_with_local_losses(self, timesteps: Tensor, losses: Tensor) -> None:
        """Record this process's (t, loss) pairs; gathers from every rank when torch.distributed is up."""
        ts, ls = timesteps.detach().reshape(-1), losses.detach().float().reshape(-1)
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            sizes = [torch.zeros(1, dtype=torch.long, device=ts.device) for _ in range(world)]
            dist.all_gather(sizes, torch.tensor([ts.numel()], device=ts.device))
            max_n = int(max(s.item() for s in sizes))
            pad_t = torch.zeros(max_n, dtype=ts.dtype, device=ts.device)
            pad_l = torch.zeros(max_n, dtype=ls.dtype, device=ls.device)
            pad_t[: ts.numel()], pad_l[: ls.numel()] = ts, ls
            all_t = [torch.zeros_like(pad_t) for _ in range(world)]
            all_l = [torch.zeros_like(pad_l) for _ in range(world)]
            dist.all_gather(all_t, pad_t)
            dist.all_gather(all_l, pad_l)
            ts = torch.cat([a[: int(n.item())] for a, n in zip(all_t, sizes, strict=True)])
            ls = torch.cat([a[: int(n.item())] for a, n in zip(all_l, sizes, strict=True)])
        self.update_with_all_losses(ts.cpu().tolist(), ls.cpu().tolist())

    def update_with_all_losses(self, timesteps: list[int], losses: list[float]) -> None:
        for t, loss in zip(timesteps, losses, strict=True):
            if self._counts[t] == self.history_per_term:  # drop the oldest
                self._history[t, :-1] = self._history[t, 1:]
                self._history[t, -1] = loss
            else:
                self._history[t, self._counts[t]] = loss
                self._counts[t] += 1


def create_named_schedule_sampler(name: str, num_timesteps: int) -> ScheduleSampler:
    """``"uniform"`` or ``"loss-second-moment"``."""
    if name == "uniform":
        return UniformSampler(num_timesteps)
    if name == "loss-second-moment":
        return LossSecondMomentResampler(num_timesteps)
    raise ValueError(f"unknown schedule sampler {name!r}; choose 'uniform' or 'loss-second-moment'")
