"""The ADM UNet (Dhariwal & Nichol 2021) exactly as GLIDE builds it.

ε_θ(x_t, t) (and v for the learned variance) from a UNet whose ResBlocks are conditioned by FiLM
("scale-shift norm": GroupNorm(h)·(1 + scale) + shift), that resamples inside ResBlocks, and whose
attention blocks can take extra keys/values from an encoder (GLIDE's text). Module names, and so
state-dict keys, are the reference's: ``input_blocks.{i}.{j}``, ``middle_block.{0,1,2}``,
``output_blocks.{i}.{j}``, ``out.{0,2}``, ``time_embed.{0,2}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from glide_edu.nn.layers import (
    ContextBlock,
    Downsample,
    TimestepBlock,
    TimestepEmbedSequential,
    Upsample,
    conv_nd,
    normalization,
    timestep_embedding,
    zero_module,
)

DEFAULT_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}


class ResBlock(TimestepBlock):
    """h = conv(drop(SiLU(GN(conv(SiLU(GN(x))))·(1+scale)+shift))) + skip(x), (scale, shift) = Linear(SiLU(emb)).

    With ``up``/``down`` both paths are resampled (nearest 2× / 2×2 average pool, no parameters) after the
    first norm+activation. ``in_layers.1`` is an Identity placeholder so indices match the reference.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        dims: int = 2,
        up: bool = False,
        down: bool = False,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels, swish=1.0), nn.Identity(), conv_nd(dims, channels, self.out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False, dims), Upsample(channels, False, dims)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False, dims), Downsample(channels, False, dims)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels)
        )
        self.out_layers = nn.Sequential(
            normalization(self.out_channels, swish=0.0 if use_scale_shift_norm else 1.0),
            nn.SiLU() if use_scale_shift_norm else nn.Identity(),
            nn.Dropout(p=dropout),
            zero_module(conv_nd(dims, self.out_channels, self.out_channels, 3, padding=1)),
        )
        if self.out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        elif use_conv:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = conv_nd(dims, channels, self.out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # x: (B, C, H, W), emb: (B, E)
        if self.updown:
            h = self.in_layers[:-1](x)
            h, x = self.h_upd(h), self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)
        emb_out = emb_out.reshape(emb_out.shape + (1,) * (h.ndim - emb_out.ndim))  # (B, 2C, 1, 1)
        if self.use_scale_shift_norm:
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def qkv_attention(qkv: Tensor, num_heads: int, encoder_kv: Tensor | None = None) -> Tensor:
    """Multi-head attention over a fused, head-major qkv tensor (the reference's "legacy" layout).

    qkv: (B, T, H·3·c), the channels laid out per head as [q | k | v]; encoder_kv: (B, L, H·2·c) per head
    [k | v], whose keys/values are *prepended* to the spatial ones. q and k are each scaled by c^(−1/4)
    (the reference's fp16-friendly split of 1/√c) and the softmax runs in float32. Returns (B, T, H·c).
    """
    bs, length, width = qkv.shape
    if width % (3 * num_heads):
        raise ValueError(f"qkv width {width} is not divisible by 3·num_heads = {3 * num_heads}")
    ch = width // (3 * num_heads)
    q, k, v = qkv.view(bs, length, num_heads, 3 * ch).transpose(1, 2).split(ch, dim=-1)  # each (B, H, T, c)
    if encoder_kv is not None:
        if encoder_kv.shape[-1] != num_heads * ch * 2:
            raise ValueError(f"encoder_kv has {encoder_kv.shape[-1]} channels, expected {num_heads * ch * 2}")
        ek, ev = encoder_kv.view(bs, -1, num_heads, 2 * ch).transpose(1, 2).split(ch, dim=-1)  # (B, H, L, c)
        k, v = torch.cat([ek, k], dim=2), torch.cat([ev, v], dim=2)
    scale = 1 / math.sqrt(math.sqrt(ch))
    q, k = q * scale, k * scale
    if q.dtype in (torch.float32, torch.bfloat16):  # bf16: the fused kernel keeps the softmax in float32
        a = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # (B, H, T, c)
    else:  # float16: softmax in float32 written out, as the reference does
        a = torch.softmax((q @ k.transpose(-1, -2)).float(), dim=-1).to(q.dtype) @ v
    return a.transpose(1, 2).reshape(bs, length, num_heads * ch)


def _pointwise(conv: nn.Module, x: Tensor) -> Tensor:
    """A kernel-1 Conv1d applied to channels-last x (B, T, C_in) as a matmul → (B, T, C_out).

    The parameters stay Conv1d-shaped (C_out, C_in, 1) for checkpoint compatibility; the matmul is the
    same map and much faster than a 1-D convolution on CPUs, above all in the backward pass.
    """
    return F.linear(x, conv.weight[..., 0], conv.bias)


class AttentionBlock(ContextBlock):
    """Self-attention over all positions of a feature map, optionally attending to encoder tokens too."""

    def __init__(
        self, channels: int, num_heads: int = 1, num_head_channels: int = -1, encoder_channels: int | None = None
    ) -> None:
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels are not divisible by num_head_channels={num_head_channels}")
            self.num_heads = channels // num_head_channels
        if channels % self.num_heads:
            raise ValueError(f"{channels} channels are not divisible by num_heads={self.num_heads}")
        self.norm = normalization(channels, swish=0.0)
        self.qkv = conv_nd(1, channels, channels * 3, 1)
        if encoder_channels is not None:
            self.encoder_kv = conv_nd(1, encoder_channels, channels * 2, 1)
        self.proj_out = zero_module(conv_nd(1, channels, channels, 1))

    def forward(self, x: Tensor, encoder_out: Tensor | None = None) -> Tensor:
        b, c, *spatial = x.shape
        h = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # (B, HW, C), rows in row-major pixel order
        qkv = _pointwise(self.qkv, h)  # (B, HW, 3C)
        encoder_kv = None
        if encoder_out is not None and hasattr(self, "encoder_kv"):
            encoder_kv = _pointwise(self.encoder_kv, encoder_out.transpose(1, 2))  # (B, L, 2C)
        h = _pointwise(self.proj_out, qkv_attention(qkv, self.num_heads, encoder_kv))  # (B, HW, C)
        return x + h.transpose(1, 2).reshape(b, c, *spatial)


@dataclass
class UNetConfig:
    """Hyper-parameters of the ADM UNet (names follow the reference's options).

    ``attention_resolutions`` are feature-map sizes in pixels (e.g. (32, 16, 8)); ``channel_mult`` defaults
    by image size as in the reference (64 → 1,2,3,4). ``out_channels`` defaults to 2·in (learned Σ) when
    ``learn_sigma`` else to ``in_channels``.
    """

    image_size: int = 64
    in_channels: int = 3
    model_channels: int = 128
    out_channels: int | None = None
    learn_sigma: bool = False
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16, 8)
    channel_mult: tuple[int, ...] | None = None
    dropout: float = 0.0
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    conv_resample: bool = True
    num_classes: int | None = None
    encoder_channels: int | None = None
    dims: int = 2
    extra: dict = field(default_factory=dict)

    def resolved_channel_mult(self) -> tuple[int, ...]:
        if self.channel_mult:
            return tuple(self.channel_mult)
        if self.image_size not in DEFAULT_CHANNEL_MULT:
            raise ValueError(
                f"no default channel_mult for image_size={self.image_size}; pass one, e.g. channel_mult=(1, 2, 2)"
            )
        return DEFAULT_CHANNEL_MULT[self.image_size]

    def resolved_out_channels(self) -> int:
        if self.out_channels is not None:
            return self.out_channels
        return self.in_channels * (2 if self.learn_sigma else 1)

    def attention_ds(self) -> set[int]:
        """Downsample factors at which attention runs (image_size // resolution)."""
        return {self.image_size // r for r in self.attention_resolutions}

    def validate(self) -> None:
        mult = self.resolved_channel_mult()
        if self.image_size % (2 ** (len(mult) - 1)):
            raise ValueError(
                f"image_size={self.image_size} cannot be halved {len(mult) - 1} times (channel_mult={mult})"
            )
        for m in mult:
            if (m * self.model_channels) % 32:
                raise ValueError(
                    f"model_channels·mult = {m * self.model_channels} must be a multiple of 32 (GroupNorm)"
                )
        bad = [r for r in self.attention_resolutions if r <= 0 or self.image_size % r]
        if bad:
            raise ValueError(f"attention_resolutions {bad} must divide image_size={self.image_size}")
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")


class UNetModel(nn.Module):
    """ADM's UNet: ε_θ(x_t, t[, y]) → (B, out_channels, H, W).

    ``y`` (class labels, when ``num_classes`` is set) adds a learned label embedding to the time embedding;
    ``encoder_out`` (B, encoder_channels, L) feeds every attention block's extra keys/values.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        config.validate()
        self.config = cfg = config
        mc, dims = cfg.model_channels, cfg.dims
        mult = cfg.resolved_channel_mult()
        attn_ds = cfg.attention_ds()
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        ted = mc * 4
        self.num_classes = cfg.num_classes
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        if cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes, ted)

        def res(ch_in: int, ch_out: int, **kw: bool) -> ResBlock:
            return ResBlock(
                ch_in, ted, cfg.dropout, ch_out, dims=dims, use_scale_shift_norm=cfg.use_scale_shift_norm, **kw
            )

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, cfg.num_head_channels, cfg.encoder_channels)

        ch = input_ch = int(mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(conv_nd(dims, cfg.in_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], 1
        for level, m in enumerate(mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(m * mc))]
                ch = int(m * mc)
                if ds in attn_ds:
                    layers.append(attn(ch, cfg.num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(mult) - 1:
                down = res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, cfg.conv_resample, dims, ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, cfg.num_heads), res(ch, ch))
        self.output_blocks = nn.ModuleList([])
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(mc * m))]
                ch = int(mc * m)
                if ds in attn_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == cfg.num_res_blocks:
                    up = res(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch, cfg.conv_resample, dims, ch)
                    layers.append(up)
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(
            normalization(ch, swish=1.0),
            nn.Identity(),
            zero_module(conv_nd(dims, input_ch, cfg.resolved_out_channels(), 3, padding=1)),
        )
        self.dtype = torch.float32

    def conditioning(self, timesteps: Tensor, y: Tensor | None = None) -> Tensor:
        """emb = time_embed(sinusoid(t)) [+ label_emb(y)]: the vector every ResBlock is modulated by. (B, 4·mc)"""
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels))
        if self.num_classes is not None:
            if y is None or y.shape != (timesteps.shape[0],):
                raise ValueError(f"this model is class-conditional: pass y with shape ({timesteps.shape[0]},)")
            emb = emb + self.label_emb(y)
        elif y is not None:
            raise ValueError("y was given but the model has no num_classes; build it with num_classes=…")
        return emb

    def check_input(self, x: Tensor, timesteps: Tensor) -> None:
        cfg = self.config
        if x.ndim != 2 + cfg.dims or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"expected x of shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}; "
                f"the model was built with in_channels={cfg.in_channels}"
            )
        if any(s % (2 ** (len(cfg.resolved_channel_mult()) - 1)) for s in x.shape[2:]):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} must be divisible by the total downsampling factor")
        if timesteps.ndim != 1 or timesteps.shape[0] != x.shape[0]:
            raise ValueError(f"timesteps must have shape ({x.shape[0]},), got {tuple(timesteps.shape)}")

    gradient_checkpointing = False  # see enable_gradient_checkpointing

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them (training only):
        less memory for about one more forward pass. Unlike the reference's ``use_checkpoint`` flag, this one
        really recomputes (``torch.utils.checkpoint``, RNG state preserved so dropout masks repeat)."""
        self.gradient_checkpointing = enabled

    def _block(self, module: nn.Module, h: Tensor, emb: Tensor, encoder_out: Tensor | None) -> Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(module, h, emb, encoder_out, use_reentrant=False)
        return module(h, emb, encoder_out)

    def unet_forward(self, h: Tensor, emb: Tensor, encoder_out: Tensor | None = None) -> Tensor:
        """The input blocks, middle and output blocks (with skips) and the output head."""
        hs = []
        x_dtype = h.dtype
        h = h.to(self.dtype)
        for module in self.input_blocks:
            h = self._block(module, h, emb, encoder_out)
            hs.append(h)
        h = self._block(self.middle_block, h, emb, encoder_out)
        for module in self.output_blocks:
            h = self._block(module, torch.cat([h, hs.pop()], dim=1), emb, encoder_out)
        return self.out(h.to(x_dtype))

    def forward(self, x: Tensor, timesteps: Tensor, y: Tensor | None = None) -> Tensor:
        self.check_input(x, timesteps)
        return self.unet_forward(x, self.conditioning(timesteps, y))
