"""Toy data and the *exact* optimal denoiser of a finite dataset (no training needed).

For a dataset {x^(1), …, x^(N)} taken as the data distribution, the posterior over which point produced
x_t under q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I) is

    w_i(x_t) ∝ exp(−‖x_t − √ᾱ_t x^(i)‖² / (2(1−ᾱ_t))),

so the minimum-MSE denoiser is E[x_0 | x_t] = Σ_i w_i x^(i) and the optimal noise prediction is
ε*(x_t, t) = (x_t − √ᾱ_t E[x_0 | x_t]) / √(1−ᾱ_t). :class:`OptimalDenoiser` is that ε* as a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

TOY_NAMES = ("moons", "gaussians8", "spiral", "rings")


def make_toy_2d(name: str = "moons", n: int = 512, seed: int = 0, noise: float = 0.03) -> Tensor:
    """n points of a 2-D toy distribution as a float32 tensor (n, 2).

    The sets lie within about [−1.3, 1.3]² (the moons reach ``|x| ≈ 1.3``): sample them with
    ``clip_denoised=False``, since clipping x̂_0 to [−1, 1] is meant for images.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    key = name.strip().lower()
    if key == "moons":
        from sklearn.datasets import make_moons

        pts, _ = make_moons(n_samples=n, noise=noise, random_state=seed)
        pts = (pts - np.array([0.5, 0.25])) / np.array([1.2, 0.8])
    elif key == "gaussians8":
        angles = 2 * np.pi * rng.integers(0, 8, size=n) / 8
        pts = 0.8 * np.stack([np.cos(angles), np.sin(angles)], 1) + noise * rng.standard_normal((n, 2))
    elif key == "spiral":
        s = np.sqrt(rng.uniform(0.05, 1.0, size=n))
        theta = 3.5 * np.pi * s
        pts = 0.9 * s[:, None] * np.stack([np.cos(theta), np.sin(theta)], 1) + noise * rng.standard_normal((n, 2))
    elif key == "rings":
        r = np.where(rng.random(n) < 0.5, 0.4, 0.85)
        angles = rng.uniform(0, 2 * np.pi, size=n)
        pts = r[:, None] * np.stack([np.cos(angles), np.sin(angles)], 1) + noise * rng.standard_normal((n, 2))
    else:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {', '.join(TOY_NAMES)}")
    return torch.from_numpy(pts.astype(np.float32))


class OptimalDenoiser:
    """ε*(x_t, t) of a finite dataset, usable as ``model(x_t, t)`` with a fixed-variance diffusion.

    Args:
        data: the dataset (N, ...) — points (N, 2) or images (N, C, H, W).
        alphas_cumprod: ᾱ of the *original* process indexed by the timesteps the model receives
            (``diffusion.alphas_cumprod`` of the un-respaced process; respaced diffusions hand models the
            original timesteps).
    """

    def __init__(self, data: Tensor, alphas_cumprod: np.ndarray) -> None:
        if data.ndim < 2 or data.shape[0] < 1:
            raise ValueError(f"data must be (N, ...) with N >= 1, got shape {tuple(data.shape)}")
        self.data = data.float()
        self.flat = self.data.reshape(len(data), -1)  # (N, D)
        self.alphas_cumprod = torch.as_tensor(np.asarray(alphas_cumprod, dtype=np.float64))

    def posterior_weights(self, x_t: Tensor, t: Tensor) -> Tensor:
        """w_i(x_t): (B, N) posterior probabilities of each data point given x_t."""
        abar = self.alphas_cumprod[t.cpu()].to(x_t.device, torch.float64)  # (B,)
        x = x_t.reshape(x_t.shape[0], -1).double()  # (B, D)
        data = self.flat.to(x.device).double()  # (N, D)
        # ‖x − √ᾱ y‖² = ‖x‖² − 2√ᾱ x·y + ᾱ‖y‖², without materialising (B, N, D)
        d2 = (
            (x**2).sum(1, keepdim=True)
            - 2 * abar.sqrt()[:, None] * (x @ data.T)
            + abar[:, None] * (data**2).sum(1)[None]
        )
        logits = -d2 / (2 * (1 - abar)[:, None])
        return torch.softmax(logits, dim=1)

    def predict_xstart(self, x_t: Tensor, t: Tensor) -> Tensor:
        """E[x_0 | x_t] = Σ_i w_i x^(i), shaped like x_t."""
        w = self.posterior_weights(x_t, t)  # (B, N)
        return (w @ self.flat.to(x_t.device).double()).reshape(x_t.shape).to(x_t.dtype)

    def __call__(self, x_t: Tensor, t: Tensor, **_: object) -> Tensor:
        """ε*(x_t, t) = (x_t − √ᾱ_t·E[x_0|x_t]) / √(1−ᾱ_t)."""
        t = torch.as_tensor(t, device=x_t.device).long().expand(x_t.shape[0])
        abar = self.alphas_cumprod[t.cpu()].to(x_t.device, torch.float64)
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        x0 = self.predict_xstart(x_t, t).double()
        eps = (x_t.double() - abar.sqrt().view(shape) * x0) / (1 - abar).sqrt().view(shape)
        return eps.to(x_t.dtype)


def nearest_distance(samples: Tensor, data: Tensor) -> Tensor:
    """Euclidean distance from each sample to its nearest data point: (B,)."""
    a = samples.reshape(samples.shape[0], -1).double()
    b = data.reshape(data.shape[0], -1).double()
    return torch.cdist(a, b).min(dim=1).values


def gaussian_log_prob(x: Tensor, mean: Tensor, var: float) -> Tensor:
    """log N(x; mean, var·I) summed over all but the batch dimension."""
    d = x[0].numel()
    sq = ((x - mean) ** 2).reshape(x.shape[0], -1).sum(1)
    return -0.5 * (sq / var + d * math.log(2 * math.pi * var))


# ------------------------------------------------------------------------ chapter 2: metrics and samplers
def sharpness(images: Tensor) -> Tensor:
    """Mean absolute difference between neighbouring pixels (total variation per pixel pair), (B,).

    ``images`` is (B, C, H, W); horizontal and vertical differences count equally. A blurred image has
    small neighbour differences, so a lower value means a blurrier image.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    x = images.double()
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3))
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))
    return (dx + dy) / 2


def mean_pairwise_distance(samples: Tensor) -> float:
    """Average Euclidean distance between two different samples of a batch (a simple diversity score)."""
    n = samples.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 samples to measure diversity, got {n}")
    flat = samples.reshape(n, -1).double()
    return float(torch.cdist(flat, flat).sum() / (n * (n - 1)))


def noisy_log_density(x_t: Tensor, data: Tensor, alpha_bar: float) -> Tensor:
    """log q_t(x_t) for the finite dataset: log (1/N) Σ_i N(x_t; √ᾱ x^(i), (1−ᾱ) I), shape (B,).

    Differentiable in ``x_t``; its gradient is the score ∇ log q_t(x_t) = −ε*(x_t, t)/√(1−ᾱ_t).
    """
    if not 0.0 < alpha_bar < 1.0:
        raise ValueError(f"alpha_bar must lie strictly between 0 and 1, got {alpha_bar}")
    x = x_t.reshape(x_t.shape[0], -1)
    y = data.reshape(data.shape[0], -1).to(x.dtype)
    d = x.shape[1]
    var = 1.0 - alpha_bar
    # ‖x − √ᾱ y‖² expanded (no (B, N, D) tensor; differentiable everywhere, unlike cdist at 0)
    d2 = (x**2).sum(1, keepdim=True) - 2 * math.sqrt(alpha_bar) * (x @ y.T) + alpha_bar * (y**2).sum(1)[None]
    log_norm = -0.5 * d * math.log(2 * math.pi * var) - math.log(y.shape[0])
    return torch.logsumexp(-d2 / (2 * var), dim=1) + log_norm


def denoise_renoise_sample(
    predict_xstart,
    alphas_cumprod: np.ndarray,
    timesteps,
    x_T: Tensor,
    generator: torch.Generator | None = None,
    return_all: bool = False,
):
    """The "predict x̂_0, re-noise to the next lower level" sampler (cold-diffusion style, Langevin-like).

    For the decreasing ``timesteps`` τ_1 > … > τ_K: x̂_0 = predict_xstart(x, τ_k), then
    x ← √ᾱ_{τ_{k+1}}·x̂_0 + √(1−ᾱ_{τ_{k+1}})·z with fresh z ~ N(0, I) (drawn from ``generator``); the
    result is the last x̂_0. K = 1 is one-shot denoising. With ``return_all`` also returns the list of
    the K predictions x̂_0.
    """
    ts = [int(s) for s in timesteps]
    if not ts:
        raise ValueError("timesteps is empty; give at least one noise level")
    if any(a <= b for a, b in zip(ts[:-1], ts[1:], strict=True)):
        raise ValueError(f"timesteps must be strictly decreasing, got {ts}")
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    x = x_T
    preds = []
    for k, t in enumerate(ts):
        x0 = predict_xstart(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        preds.append(x0)
        if k + 1 < len(ts):
            a = float(abar[ts[k + 1]])
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = math.sqrt(a) * x0 + math.sqrt(1 - a) * z
    return (preds[-1], preds) if return_all else preds[-1]


# ------------------------------------------------------------------------ chapter 6: a labelled Gaussian mixture
class LabelledGaussianMixture:
    """A mixture of isotropic Gaussians whose components belong to classes, with *exact* noised scores.

    x_0 ~ Σ_k w_k N(μ_k, σ_k² I) and component k has class c_k. Under q(x_t | x_0) = N(√ᾱ x_0, (1−ᾱ) I)
    every component stays Gaussian, N(√ᾱ μ_k, (ᾱσ_k² + 1 − ᾱ) I), so p(x_t), p(x_t | y), the class
    posterior p(y | x_t) (Bayes) and the optimal noise predictions ε*(x_t) = −√(1−ᾱ) ∇ log p(x_t) and
    ε*(x_t | y) are all closed form. Computations are in float64.

    Args:
        means: (K, D) component means μ_k; stds: (K,) σ_k; weights: (K,) w_k (normalised here);
        classes: (K,) class index c_k of each component, in 0…C−1 with every class used.
    """

    def __init__(self, means: Tensor, stds: Tensor, weights: Tensor, classes: Tensor) -> None:
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        w = torch.as_tensor(weights, dtype=torch.float64)
        self.classes = torch.as_tensor(classes, dtype=torch.long)
        k = self.means.shape[0]
        if self.means.ndim != 2 or self.stds.shape != (k,) or w.shape != (k,) or self.classes.shape != (k,):
            raise ValueError("means must be (K, D) and stds, weights, classes (K,)")
        if (self.stds <= 0).any() or (w <= 0).any():
            raise ValueError("stds and weights must be positive")
        self.num_classes = int(self.classes.max()) + 1
        if sorted(self.classes.unique().tolist()) != list(range(self.num_classes)):
            raise ValueError(f"classes must use every index 0…{self.num_classes - 1}")
        self.weights = w / w.sum()

    @classmethod
    def example(cls) -> LabelledGaussianMixture:
        """Three classes in 2-D, two overlapping components each (the chapter-6 demonstration)."""
        means = [[-0.6, 0.5], [-0.1, 0.9], [0.6, 0.5], [0.1, -0.1], [0.0, -0.7], [-0.7, -0.3]]
        return cls(torch.tensor(means), torch.full((6,), 0.18), torch.ones(6), torch.tensor([0, 0, 1, 1, 2, 2]))

    @property
    def class_weights(self) -> Tensor:
        """p(y) = Σ_{k: c_k = y} w_k, (C,)."""
        return torch.zeros(self.num_classes, dtype=torch.float64).index_add_(0, self.classes, self.weights)

    def _component_terms(self, x_t: Tensor, alpha_bar: float) -> tuple[Tensor, Tensor, Tensor]:
        """(log w_k + log N(x_t; √ᾱ μ_k, v_k I)  (B, K),  x_t − √ᾱ μ_k  (B, K, D),  v_k  (K,))."""
        if not 0.0 < float(alpha_bar) <= 1.0:
            raise ValueError(f"alpha_bar must lie in (0, 1], got {alpha_bar}")
        x = x_t.double()
        var = alpha_bar * self.stds**2 + (1.0 - alpha_bar)  # (K,)
        diff = x[:, None, :] - math.sqrt(alpha_bar) * self.means[None]  # (B, K, D)
        d = x.shape[1]
        logn = -0.5 * (diff**2).sum(-1) / var - 0.5 * d * torch.log(2 * math.pi * var)
        return torch.log(self.weights) + logn, diff, var

    def _mask(self, logits: Tensor, y: Tensor | None) -> Tensor:
        if y is None:
            return logits
        y = torch.as_tensor(y, dtype=torch.long).reshape(-1, 1)
        return logits.masked_fill(self.classes[None, :] != y, float("-inf"))

    def log_prob(self, x_t: Tensor, alpha_bar: float, y: Tensor | None = None) -> Tensor:
        """log p(x_t) or, with labels ``y`` (B,), log p(x_t | y): (B,). Differentiable in x_t."""
        logits, _, _ = self._component_terms(x_t, alpha_bar)
        out = torch.logsumexp(self._mask(logits, y), dim=1)
        if y is not None:
            out = out - torch.log(self.class_weights)[torch.as_tensor(y, dtype=torch.long)]
        return out

    def log_class_posterior(self, x_t: Tensor, alpha_bar: float) -> Tensor:
        """log p(y | x_t) for every class by Bayes, log p(x_t | y) + log p(y) − log p(x_t): (B, C)."""
        logits, _, _ = self._component_terms(x_t, alpha_bar)
        per_class = torch.stack([torch.logsumexp(logits[:, self.classes == c], 1) for c in range(self.num_classes)], 1)
        return per_class - torch.logsumexp(logits, dim=1, keepdim=True)

    def eps(self, x_t: Tensor, alpha_bar: float, y: Tensor | None = None) -> Tensor:
        """ε*(x_t) or ε*(x_t | y) = −√(1−ᾱ)·∇ log p, in closed form (responsibility-weighted): (B, D)."""
        logits, diff, var = self._component_terms(x_t, alpha_bar)
        resp = torch.softmax(self._mask(logits, y), dim=1)  # p(k | x_t[, y])
        score = -(resp[:, :, None] * diff / var[None, :, None]).sum(1)
        return -math.sqrt(1.0 - alpha_bar) * score

    def sample(self, n: int, y: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """n draws of x_0 (from p(x_0), or from p(x_0 | y) with labels ``y`` (n,)): (n, D) float64."""
        probs = self._mask(torch.log(self.weights).expand(n, -1), y).softmax(1)
        k = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * z

    def as_model(self, alphas_cumprod: np.ndarray) -> Callable[..., Tensor]:
        """``model(x_t, t, y)`` returning ε*(x_t | y), with y = C (num_classes) meaning no label, ε*(x_t).

        ``alphas_cumprod`` indexes the timesteps the model receives (the un-respaced process). The output has
        the dtype of x_t, so the mixture plugs into :func:`glide_edu.guidance.class_conditional_cfg` with
        ``null_label = num_classes`` and into the samplers.
        """
        abar = np.asarray(alphas_cumprod, dtype=np.float64)

        def model(x_t: Tensor, t: Tensor, y: Tensor) -> Tensor:
            out = torch.empty_like(x_t, dtype=torch.float64)
            for tv in t.unique().tolist():
                for yv in torch.as_tensor(y).unique().tolist():
                    rows = (t == tv) & (torch.as_tensor(y) == yv)
                    label = None if yv == self.num_classes else torch.full((int(rows.sum()),), yv)
                    out[rows] = self.eps(x_t[rows], float(abar[tv]), label)
            return out.to(x_t.dtype)

        return model
