"""GLIDE's text side: the caption transformer and the text-conditional UNets.

The caption (GPT-2 BPE tokens, padded to ``text_ctx``) is embedded (token + learned position; padded
positions *replaced* by a learned padding embedding), run through an unmasked pre-LayerNorm transformer
with exact GELU, and final-LayerNormed. Two things leave it: the projection of the **last** position is
added to the timestep embedding, and the whole sequence (channels first) becomes extra keys/values of every
attention block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glide_edu.nn.unet import UNetConfig, UNetModel


class LayerNorm(nn.LayerNorm):
    """LayerNorm (eps 1e-5) evaluated in float32."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).to(x.dtype)


class MultiheadAttention(nn.Module):
    """Unmasked self-attention with a fused ``c_qkv`` laid out per head as [q | k | v]."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.c_qkv = nn.Linear(width, width * 3)
        self.c_proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:  # (B, L, W)
        bs, n_ctx, width = x.shape
        qkv = self.c_qkv(x).view(bs, n_ctx, self.heads, -1)  # (B, L, H, 3c)
        ch = qkv.shape[-1] // 3
        q, k, v = torch.split(qkv, ch, dim=-1)  # (B, L, H, c)
        scale = 1 / math.sqrt(math.sqrt(ch))
        q, k, v = (q * scale).transpose(1, 2), (k * scale).transpose(1, 2), v.transpose(1, 2)  # (B, H, L, c)
        if q.dtype == torch.float32:
            a = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        else:
            a = torch.softmax((q @ k.transpose(-1, -2)).float(), dim=-1).to(q.dtype) @ v
        return self.c_proj(a.transpose(1, 2).reshape(bs, n_ctx, width))


class MLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, width * 4)
        self.c_proj = nn.Linear(width * 4, width)
        self.gelu = nn.GELU()  # exact (erf) GELU

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """x + attn(LN₁(x)), then x + MLP(LN₂(x))."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = MLP(width)
        self.ln_2 = LayerNorm(width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.width = width
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: Tensor) -> Tensor:
        for block in self.resblocks:
            x = block(x)
        return x


@dataclass
class TextConfig:
    """The caption encoder of GLIDE (names are the reference's options)."""

    text_ctx: int = 128
    xf_width: int = 512
    xf_layers: int = 16
    xf_heads: int = 8
    xf_final_ln: bool = True
    xf_padding: bool = True
    n_vocab: int = 50257


class Text2ImUNet(UNetModel):
    """ε_θ(x_t, t, caption): the ADM UNet conditioned on GLIDE's caption transformer."""

    data_channels = 3  # channels of x_t (the upsampling / inpainting inputs are concatenated to it)

    def __init__(self, config: UNetConfig, text: TextConfig) -> None:
        super().__init__(replace(config, encoder_channels=text.xf_width))
        self.text_config = text
        self.transformer = Transformer(text.xf_width, text.xf_layers, text.xf_heads)
        self.final_ln = LayerNorm(text.xf_width) if text.xf_final_ln else None
        self.token_embedding = nn.Embedding(text.n_vocab, text.xf_width)
        self.positional_embedding = nn.Parameter(torch.zeros(text.text_ctx, text.xf_width))
        nn.init.normal_(self.positional_embedding, std=0.01)
        if text.xf_padding:
            self.padding_embedding = nn.Parameter(torch.zeros(text.text_ctx, text.xf_width))
            nn.init.normal_(self.padding_embedding, std=0.01)
        self.transformer_proj = nn.Linear(text.xf_width, config.model_channels * 4)

    def get_text_emb(self, tokens: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """(xf_proj (B, 4·mc) from the last position, xf_out (B, xf_width, text_ctx) channels first)."""
        ctx = self.text_config.text_ctx
        if tokens.ndim != 2 or tokens.shape[1] != ctx:
            raise ValueError(f"tokens must have shape (B, {ctx}) (pad/truncate to text_ctx), got {tuple(tokens.shape)}")
        xf_in = self.token_embedding(tokens.long()) + self.positional_embedding[None]  # (B, L, W)
        if self.text_config.xf_padding:
            if mask is None or mask.shape != tokens.shape:
                raise ValueError(f"mask must be a bool tensor shaped like tokens {tuple(tokens.shape)}")
            xf_in = torch.where(mask[..., None].bool(), xf_in, self.padding_embedding[None])
        xf_out = self.transformer(xf_in.to(self.dtype))
        if self.final_ln is not None:
            xf_out = self.final_ln(xf_out)
        xf_proj = self.transformer_proj(xf_out[:, -1])  # the LAST position, normally a padding one
        return xf_proj, xf_out.permute(0, 2, 1)

    def forward(self, x: Tensor, timesteps: Tensor, tokens: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        self.check_input(x, timesteps)
        emb = self.conditioning(timesteps)
        if tokens is None:
            raise ValueError("a text-conditional model needs tokens (and mask); use an empty prompt for no text")
        xf_proj, xf_out = self.get_text_emb(tokens, mask)
        emb = emb + xf_proj.to(emb)
        return self.unet_forward(x, emb, xf_out)


def _upsample_low_res(low_res: Tensor | None, x: Tensor) -> Tensor:
    if low_res is None:
        raise ValueError("a super-resolution model needs low_res (B, 3, h, w) in [-1, 1]")
    return F.interpolate(low_res, x.shape[2:], mode="bilinear", align_corners=False)


def _inpaint_inputs(x: Tensor, image: Tensor | None, mask: Tensor | None) -> Tensor:
    if image is None:
        image = torch.zeros_like(x)
    if mask is None:
        mask = torch.zeros_like(x[:, :1])
    return torch.cat([x, image * mask, mask], dim=1)


class SuperResText2ImUNet(Text2ImUNet):
    """Upsampler: input [x_t, bilinear-upsampled low_res] (6 channels)."""

    def forward(self, x: Tensor, timesteps: Tensor, low_res: Tensor | None = None, **kwargs: Tensor) -> Tensor:
        return super().forward(torch.cat([x, _upsample_low_res(low_res, x)], dim=1), timesteps, **kwargs)


class InpaintText2ImUNet(Text2ImUNet):
    """Inpainting: input [x_t, image·mask, mask] (7 channels; mask 1 = known pixel)."""

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        inpaint_image: Tensor | None = None,
        inpaint_mask: Tensor | None = None,
        **kwargs: Tensor,
    ) -> Tensor:
        return super().forward(_inpaint_inputs(x, inpaint_image, inpaint_mask), timesteps, **kwargs)


class SuperResInpaintText2ImUnet(Text2ImUNet):
    """Upsampling inpainter: input [x_t, image·mask, mask, upsampled low_res] (10 channels)."""

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        inpaint_image: Tensor | None = None,
        inpaint_mask: Tensor | None = None,
        low_res: Tensor | None = None,
        **kwargs: Tensor,
    ) -> Tensor:
        h = torch.cat([_inpaint_inputs(x, inpaint_image, inpaint_mask), _upsample_low_res(low_res, x)], dim=1)
        return super().forward(h, timesteps, **kwargs)
