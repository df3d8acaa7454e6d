"""The noisy classifier p_φ(y | x_t, t) of classifier guidance: ADM's encoder half of the UNet.

Dhariwal & Nichol (2021) guide a diffusion model with the gradient of a classifier that was trained on
*noised* images x_t ~ q(x_t | x_0) at every timestep t. Their classifier is the downsampling half of their
UNet — the same time embedding, ResBlocks (FiLM by the timestep), attention at low resolutions and middle
block — followed by a pooling head that turns the lowest-resolution feature map into logits:

* ``"attention"`` (ADM's default): GroupNorm, SiLU, then *attention pooling* — the spatial mean is prepended
  as an extra token, a learned positional embedding is added, one multi-head attention layer runs and the
  output at the mean token is projected to the logits (CLIP's pooling);
* ``"adaptive"``: GroupNorm, SiLU, global average pooling and a zero-initialised 1×1 convolution.

Module names follow the reference (``time_embed``, ``input_blocks``, ``middle_block``, ``out``); the blocks
themselves are :mod:`glide_edu.nn.unet`'s. There are no skip connections and no decoder: the classifier only
has to *recognise* x_t, not rebuild it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glide_edu.nn.layers import Downsample, TimestepEmbedSequential, conv_nd, normalization, timestep_embedding
from glide_edu.nn.unet import AttentionBlock, ResBlock

POOLS = ("attention", "adaptive")


@dataclass
class ClassifierConfig:
    """Hyper-parameters of :class:`EncoderUNetModel` (names as the reference's classifier options).

    The defaults are the book's digits classifier: 16×16 grey images, widths 32/64/64, one ResBlock per
    level, attention at 4×4, attention pooling, 10 classes.
    """

    image_size: int = 16
    in_channels: int = 1
    model_channels: int = 32
    num_classes: int = 10
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (4,)
    num_head_channels: int = 32
    dropout: float = 0.0
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    pool: str = "attention"

    def validate(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"unknown pool {self.pool!r}; choose one of {', '.join(POOLS)}")
        if self.image_size % (2 ** (len(self.channel_mult) - 1)):
            raise ValueError(
                f"image_size={self.image_size} cannot be halved {len(self.channel_mult) - 1} times "
                f"(channel_mult={self.channel_mult})"
            )
        for m in self.channel_mult:
            if (m * self.model_channels) % 32:
                raise ValueError(
                    f"model_channels·mult = {m * self.model_channels} must be a multiple of 32 (GroupNorm)"
                )
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")
        if self.num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got num_classes={self.num_classes}")

    @property
    def final_resolution(self) -> int:
        return self.image_size // 2 ** (len(self.channel_mult) - 1)


class AttentionPool2d(nn.Module):
    """Attention pooling: (B, C, H, W) → (B, out_dim), read out at a prepended mean token.

    tokens = [mean over positions, every position] + positional embedding; one multi-head self-attention
    (``qkv_proj``), output projection ``c_proj`` at token 0. Projections are kernel-1 Conv1d as in the
    reference, applied as matrix products.
    """

    def __init__(self, spatial_dim: int, embed_dim: int, num_head_channels: int, out_dim: int) -> None:
        super().__init__()
        if embed_dim % num_head_channels:
            raise ValueError(f"{embed_dim} channels are not divisible by num_head_channels={num_head_channels}")
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spatial_dim**2 + 1) / embed_dim**0.5)
        self.qkv_proj = conv_nd(1, embed_dim, 3 * embed_dim, 1)
        self.c_proj = conv_nd(1, embed_dim, out_dim, 1)
        self.num_heads = embed_dim // num_head_channels

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)  # (B, C, HW)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1) + self.positional_embedding.to(x.dtype)  # (B, C, 1+HW)
        qkv = F.linear(x.transpose(1, 2), self.qkv_proj.weight[..., 0], self.qkv_proj.bias)  # (B, 1+HW, 3C)
        q, k, v = (z.reshape(b, -1, self.num_heads, c // self.num_heads).transpose(1, 2) for z in qkv.chunk(3, dim=-1))
        a = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # only token 0 is read out: (B, H, 1, c)
        a = a.transpose(1, 2).reshape(b, c)
        return F.linear(a, self.c_proj.weight[..., 0], self.c_proj.bias)  # (B, out_dim)


class EncoderUNetModel(nn.Module):
    """ADM's classifier: logits(x_t, t) → (B, num_classes). ``t`` are the diffusion's *original* timesteps."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        config.validate()
        self.config = cfg = config
        mc = cfg.model_channels
        ted = 4 * mc
        attn_ds = {cfg.image_size // r for r in cfg.attention_resolutions}
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))

        def res(ch_in: int, ch_out: int, **kw: bool) -> ResBlock:
            return ResBlock(ch_in, ted, cfg.dropout, ch_out, use_scale_shift_norm=cfg.use_scale_shift_norm, **kw)

        def attn(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, num_head_channels=cfg.num_head_channels)

        ch = int(cfg.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(conv_nd(2, cfg.in_channels, ch, 3, padding=1))])
        ds = 1
        for level, m in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(m * mc))]
                ch = int(m * mc)
                if ds in attn_ds:
                    layers.append(attn(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
            if level != len(cfg.channel_mult) - 1:
                down = res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, True, 2, ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                ds *= 2
        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch), res(ch, ch))
        if cfg.pool == "attention":
            head: nn.Module = AttentionPool2d(cfg.final_resolution, ch, cfg.num_head_channels, cfg.num_classes)
        else:
            head = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_nd(2, ch, cfg.num_classes, 1), nn.Flatten())
            nn.init.zeros_(head[1].weight)
            nn.init.zeros_(head[1].bias)
        self.out = nn.Sequential(normalization(ch, swish=0.0), nn.SiLU(), head)

    def forward(self, x: Tensor, timesteps: Tensor) -> Tensor:
        cfg = self.config
        if x.ndim != 4 or x.shape[1:] != (cfg.in_channels, cfg.image_size, cfg.image_size):
            raise ValueError(
                f"the classifier takes (B, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size}) images, "
                f"got {tuple(x.shape)}"
            )
        if timesteps.ndim != 1 or timesteps.shape[0] != x.shape[0]:
            raise ValueError(f"timesteps must have shape ({x.shape[0]},), got {tuple(timesteps.shape)}")
        emb = self.time_embed(timestep_embedding(timesteps, cfg.model_channels).to(self.time_embed[0].weight.dtype))
        h = x.to(self.time_embed[0].weight.dtype)
        for module in self.input_blocks:
            h = module(h, emb)
        h = self.middle_block(h, emb)
        return self.out(h)
