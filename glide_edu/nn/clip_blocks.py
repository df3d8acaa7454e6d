"""The transformer blocks of GLIDE's noised CLIP (:mod:`glide_edu.nn.clip`), named as the released weights.

LayerNorms hold ``g``/``b`` (eps 1e-5); linear maps (``Affine``) hold ``w`` as (out, in) and ``b``. Attention has
separate ``f_q`` (with bias), ``f_k`` (no bias) and ``f_v`` projections, contiguous heads, q and k each scaled by
head_width^(−1/4), and sequences zero-padded to a multiple of :data:`BLOCK_SIZE` with a −1e10 score bias on padded
keys (text: also causal).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BLOCK_SIZE = 32  # attention sequences are padded to a multiple of this


class Affine(nn.Module):
    """y = x·wᵀ + b with ``w`` stored (out, in); ``bias=False`` leaves out ``b``."""

    def __init__(self, n_in: int, n_out: int, bias: bool = True) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.empty(n_out, n_in))
        nn.init.normal_(self.w, std=1 / math.sqrt(n_in))
        self.b = nn.Parameter(torch.zeros(n_out)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.w, self.b)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis with gain ``g`` and bias ``b`` (eps 1e-5), computed in float32."""

    def __init__(self, width: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(width))
        self.b = nn.Parameter(torch.zeros(width))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x.float(), self.g.shape, self.g.float(), self.b.float(), self.eps).to(x.dtype)


def padded_length(n_ctx: int, block_size: int = BLOCK_SIZE) -> int:
    return -(-n_ctx // block_size) * block_size


def attention_bias(
    n_ctx: int, causal: bool, device: torch.device | str | None = None, block_size: int = BLOCK_SIZE
) -> Tensor:
    """(L', L') additive score bias for a sequence of ``n_ctx`` padded to L': 0 where allowed, −1e10 elsewhere.

    Keys at padded positions are never allowed; with ``causal`` a query also cannot see later keys.
    Built per call (it is tiny), so it always lives on the activations' device, whatever ``.to()`` or
    meta-device construction did to the module.
    """
    n = padded_length(n_ctx, block_size)
    idx = torch.arange(n, device=device)
    allowed = (idx < n_ctx)[None, :].expand(n, n)
    if causal:
        allowed = allowed & (idx[None, :] <= idx[:, None])
    return torch.zeros(n, n, device=device).masked_fill(~allowed, -1e10)


class Attention(nn.Module):
    """Pre-norm multi-head self-attention: ``f_c(attn(f_q(h), f_k(h), f_v(h)))`` with h = ``ln(x)``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln = LayerNorm(width)
        self.f_q = Affine(width, width)
        self.f_k = Affine(width, width, bias=False)
        self.f_v = Affine(width, width)
        self.f_c = Affine(width, width)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:  # x (B, L, W); bias (L', L'), L' ≥ L
        batch, n_ctx, width = x.shape
        n_pad = bias.shape[-1] - n_ctx
        h = self.ln(x)
        head_width = width // self.heads
        scale = head_width**-0.25  # on q and on k: q·k / √d overall

        def split(y: Tensor) -> Tensor:  # (B, L, W) → zero-padded (B, H, L', W/H), contiguous head slices
            y = F.pad(y, (0, 0, 0, n_pad))
            return y.view(batch, n_ctx + n_pad, self.heads, head_width).transpose(1, 2)

        q, k, v = split(self.f_q(h) * scale), split(self.f_k(h) * scale), split(self.f_v(h))
        weights = torch.softmax((q @ k.transpose(-1, -2)).float() + bias, dim=-1).to(v.dtype)
        a = (weights @ v).transpose(1, 2).reshape(batch, n_ctx + n_pad, width)[:, :n_ctx]  # drop padded rows
        return self.f_c(a)


class MLP(nn.Module):
    """Pre-norm ``f_2(GELU(f_1(ln(x))))``, hidden width 4×, exact (erf) GELU."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln = LayerNorm(width)
        self.f_1 = Affine(width, 4 * width)
        self.f_2 = Affine(4 * width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.f_2(F.gelu(self.f_1(self.ln(x))))


class TransformerBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.f_attn = Attention(width, heads)
        self.f_mlp = MLP(width)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        x = x + self.f_attn(x, bias)
        return x + self.f_mlp(x)


# ------------------------------------------------------------------------------------------------ text
