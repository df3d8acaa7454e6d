"""Floating-point formats for training: what float16 and bfloat16 keep of a float32 gradient.

The trainer's ``precision = "fp16"`` / ``"bf16"`` (:mod:`glide_edu.train`) runs the network under autocast with
float32 master weights; fp16 adds dynamic loss scaling (``torch.amp.GradScaler``). This module measures why:

* :func:`format_table` — bits, range and resolution of float32 / float16 / bfloat16, from ``torch.finfo``;
* :func:`cast_stats` — the share of a gradient's non-zero entries that a cast to a format flushes to zero,
  leaves subnormal (fewer significant bits) or turns into ``inf``, optionally after multiplying by a loss scale;
* :func:`flat_gradients` / :func:`digits_gradients` — the parameter gradients of one hybrid-loss batch of a
  real model (the shipped digits model), optionally computed under autocast.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["FORMATS", "cast_stats", "cpu_has_native_bf16", "cpu_name", "digits_gradients", "flat_gradients",
           "format_table"]

FORMATS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def format_table() -> dict[str, dict[str, float]]:
    """{name: bits, exponent_bits, mantissa_bits, max, smallest_normal, smallest_subnormal, eps} per format."""
    rows = {}
    for name, dtype in FORMATS.items():
        info = torch.finfo(dtype)
        mantissa = round(-math.log2(info.eps))  # stored fraction bits (eps = 2^-mantissa)
        rows[name] = {
            "bits": info.bits,
            "exponent_bits": info.bits - 1 - mantissa,
            "mantissa_bits": mantissa,
            "max": info.max,
            "smallest_normal": info.smallest_normal,
            "smallest_subnormal": info.smallest_normal * info.eps,
            "eps": info.eps,
        }
    return rows


def cast_stats(grads: Tensor, dtype: torch.dtype, scale: float = 1.0) -> dict[str, float]:
    """What casting ``grads * scale`` (float32) to ``dtype`` does to the non-zero entries, as fractions of them:
    ``flushed`` (became 0), ``subnormal`` (kept with fewer significant bits), ``overflow`` (became ±inf)."""
    g = grads.detach().float().flatten()
    g = g[g != 0]
    if g.numel() == 0:
        return {"flushed": 0.0, "subnormal": 0.0, "overflow": 0.0}
    cast = (g * scale).to(dtype)
    tiny = torch.finfo(dtype).smallest_normal
    n = g.numel()
    return {
        "flushed": float((cast == 0).sum()) / n,
        "subnormal": float(((cast != 0) & (cast.abs() < tiny)).sum()) / n,
        "overflow": float(torch.isinf(cast).sum()) / n,
    }


def flat_gradients(model: nn.Module, diffusion, x0: Tensor, t: Tensor, noise: Tensor,
                   autocast_dtype: torch.dtype | None = None, loss_type: str = "hybrid",
                   loss_scale: float = 1.0) -> Tensor:
    """All parameter gradients of the mean ``loss_type`` loss of one batch, flattened to one float32 vector.

    With ``autocast_dtype`` the network runs under CPU autocast (its output cast back to float32 for the loss
    maths, as the trainer does), so the backward pass through it runs in that format. With ``loss_scale`` the
    backward pass starts from ``loss × loss_scale`` and the gradients are divided by it afterwards (in float32),
    which is what ``torch.amp.GradScaler`` does."""
    model.zero_grad(set_to_none=True)

    def net(x: Tensor, ts: Tensor, **kwargs: Tensor) -> Tensor:
        with torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
            return model(x, ts, **kwargs).float()

    terms = diffusion.training_losses(net, x0, t, noise=noise, loss_type=loss_type)
    (terms["loss"].mean() * loss_scale).backward()
    out = torch.cat([p.grad.detach().float().flatten() / loss_scale if p.grad is not None
                     else torch.zeros(p.numel())
                     for p in model.parameters()])
    model.zero_grad(set_to_none=True)
    return out


def digits_gradients(n: int = 32, seed: int = 0, autocast_dtype: torch.dtype | None = None,
                     model_and_diffusion: tuple | None = None, loss_scale: float = 1.0) -> Tensor:
    """The flat gradients of the shipped ``digits_hybrid`` model (eval mode: no dropout) on the first ``n``
    training digits, with timesteps and noise drawn from ``seed`` — the same numbers for every caller."""
    from glide_edu.data import load_digits
    from glide_edu.pretrained import load_small_checkpoint, shipped_checkpoint

    if model_and_diffusion is None:
        model, diffusion, _ = load_small_checkpoint(shipped_checkpoint("digits_hybrid"))
    else:
        model, diffusion = model_and_diffusion[:2]
    model.eval()
    x0 = load_digits()[0][:n]
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(0, diffusion.num_timesteps, (n,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    return flat_gradients(model, diffusion, x0, t, noise, autocast_dtype, loss_scale=loss_scale)


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read()
    except OSError:  # not Linux
        return ""


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), read from /proc/cpuinfo (Linux only;
    False elsewhere)."""
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what ``platform`` knows)."""
    import platform

    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"
