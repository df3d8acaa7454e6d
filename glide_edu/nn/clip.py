"""GLIDE's noised CLIP: a text encoder and a timestep-aware image encoder, and CLIP guidance.

CLIP maps a caption and an image to unit vectors z_text, z_image whose dot product (times the logit
scale, 100) says how well they match. GLIDE's CLIP was trained on *noisy* images x_t: its image encoder
also sees the diffusion timestep t, so it can steer sampling at every step (CLIP guidance):

    μ' = μ + Σ · s · ∇_{x_t} [ 100 · z_text · z_image(x_t, t) ].

Both encoders are pre-LayerNorm transformers with module and parameter names chosen so that the
released ``clip_image_enc.pt`` / ``clip_text_enc.pt`` load with ``strict=True``:

* ``blocks.input``: the text side adds a token table ``w_voc`` and positions ``w_pos``; the image side
  maps pixels (0..255) to CLIP's normalised units, cuts non-overlapping patches with a bias-free
  convolution ``patch_proj``, prepends the row ``w_t[t]`` of a per-timestep table as the first token,
  adds ``w_pos`` and applies a LayerNorm ``ln``.
* ``blocks.block_{i}``: ``x + f_attn(x)`` then ``x + f_mlp(x)``, each sub-layer starting with its own
  LayerNorm ``ln``. Attention has separate ``f_q`` (with bias), ``f_k`` (no bias), ``f_v`` projections,
  heads are contiguous slices, q and k are each scaled by head_width^(−1/4), and the sequence is
  zero-padded to a multiple of 32 with a −1e10 score bias on padded keys (text: also causal); padded
  rows are dropped before the output projection ``f_c``.
* ``blocks.output``: LayerNorm ``ln`` and a bias-free projection ``f`` of one position: token 0 (the
  timestep token) for images, the end token (index len−1) for text.

LayerNorms hold ``g``/``b`` (eps 1e-5); linear maps hold ``w`` as (out, in) and ``b``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glide_edu.nn.clip_blocks import (  # noqa: F401  (re-exported: the blocks are part of this model's API)
    BLOCK_SIZE,
    MLP,
    Affine,
    Attention,
    LayerNorm,
    TransformerBlock,
    attention_bias,
    padded_length,
)

NORM_EPS = 1e-12  # z / (‖z‖ + 1e-12)
# CLIP's per-channel pixel statistics, in 0..255 units.
PIXEL_MEAN = (122.77093945, 116.74601272, 104.09373519)
PIXEL_STD = (68.50053285, 66.63215831, 70.32316309)


@dataclass(frozen=True)
class ClipConfig:
    """The noised CLIP's ``config.yaml`` (the reference's keys; defaults = the released model)."""

    logit_scale: float = 100.0
    beta_schedule: str = "squaredcos_cap_v2"
    n_timesteps: int = 1000
    image_size: int = 64
    patch_size: int = 4
    n_vocab: int = 65536
    max_text_len: int = 77
    n_embd: int = 512  # joint embedding width
    n_head_state_text: int = 64
    n_head_text: int = 8
    n_xf_blocks_text: int = 12
    n_head_state_image: int = 64
    n_head_image: int = 12
    n_xf_blocks_image: int = 12

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> ClipConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown CLIP config keys {unknown}; expected some of {sorted(known)}")
        return cls(**options)

    @property
    def text_width(self) -> int:
        return self.n_head_text * self.n_head_state_text

    @property
    def image_width(self) -> int:
        return self.n_head_image * self.n_head_state_image

    @property
    def image_context(self) -> int:
        """1 timestep token + (image_size / patch_size)² patches."""
        return 1 + (self.image_size // self.patch_size) ** 2


def _as_config(config: ClipConfig | Mapping[str, Any] | None) -> ClipConfig:
    if config is None:
        return ClipConfig()
    return config if isinstance(config, ClipConfig) else ClipConfig.from_dict(config)


# ------------------------------------------------------------------------------------------------ layers
class TextEmbedding(nn.Module):
    """Token table ``w_voc`` plus positions ``w_pos`` (no LayerNorm on the text side)."""

    def __init__(self, n_vocab: int, n_ctx: int, width: int) -> None:
        super().__init__()
        self.w_voc = nn.Parameter(torch.empty(n_vocab, width))
        self.w_pos = nn.Parameter(torch.empty(n_ctx, width))
        nn.init.normal_(self.w_voc, std=0.02)
        nn.init.normal_(self.w_pos, std=0.01)

    def forward(self, tokens: Tensor) -> Tensor:
        return F.embedding(tokens, self.w_voc) + self.w_pos[None, : tokens.shape[1]]  # (B, L, W)


class TextOutput(nn.Module):
    """LayerNorm and bias-free projection of the feature at index ``len − 1`` (the end token)."""

    def __init__(self, width: int, n_embd: int) -> None:
        super().__init__()
        self.ln = LayerNorm(width)
        self.f = Affine(width, n_embd, bias=False)

    def forward(self, x: Tensor, lens: Tensor) -> Tensor:
        last = x[torch.arange(x.shape[0], device=x.device), lens - 1]
        return self.f(self.ln(last))


class TextEncoder(nn.Module):
    """Caption (CLIP tokens, zero-padded to ``max_text_len``, and lengths) → unnormalised (B, n_embd)."""

    def __init__(self, config: ClipConfig | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = c = _as_config(config)
        width = c.text_width
        blocks: dict[str, nn.Module] = {"input": TextEmbedding(c.n_vocab, c.max_text_len, width)}
        blocks.update({f"block_{i}": TransformerBlock(width, c.n_head_text) for i in range(c.n_xf_blocks_text)})
        blocks["output"] = TextOutput(width, c.n_embd)
        self.blocks = nn.ModuleDict(blocks)

    def check_input(self, tokens: Tensor, lens: Tensor) -> None:
        ctx, n_vocab = self.config.max_text_len, self.config.n_vocab
        if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.shape[1] != ctx:
            shape = tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__
            raise ValueError(f"CLIP tokens must be an integer tensor of shape (B, {ctx}), got {shape}")
        if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise ValueError(f"CLIP tokens must be integers, got dtype {tokens.dtype}")
        if not isinstance(lens, Tensor) or lens.shape != tokens.shape[:1] or lens.dtype.is_floating_point:
            shape = tuple(lens.shape) if isinstance(lens, Tensor) else type(lens).__name__
            raise ValueError(f"CLIP lens must be an integer tensor of shape ({tokens.shape[0]},), got {shape}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= n_vocab):
            raise ValueError(
                f"CLIP token ids must lie in 0..{n_vocab - 1}, got {int(tokens.min())}..{int(tokens.max())}"
            )
        if lens.numel() and (int(lens.min()) < 1 or int(lens.max()) > ctx):
            raise ValueError(f"CLIP lens must lie in 1..{ctx} (start and end token included), got {lens.tolist()}")

    def forward(self, tokens: Tensor, lens: Tensor) -> Tensor:
        self.check_input(tokens, lens)
        # causal attention: the feature at len − 1 never sees later positions, so the padding after the
        # longest caption is dropped (exact, and faster for short captions in a long context)
        x = self.blocks["input"](tokens[:, : int(lens.max())].long() if lens.numel() else tokens.long())
        bias = attention_bias(x.shape[1], causal=True, device=x.device)
        for i in range(self.config.n_xf_blocks_text):
            x = self.blocks[f"block_{i}"](x, bias)
        return self.blocks["output"](x, lens.long())


# ------------------------------------------------------------------------------------------------ image
class ImageEmbedding(nn.Module):
    """Normalised pixels → [w_t[t], patch_1, …, patch_N] + ``w_pos``, then ``ln``."""

    def __init__(self, config: ClipConfig) -> None:
        super().__init__()
        width, p = config.image_width, config.patch_size
        self.patch_size = p
        self.w_t = nn.Parameter(torch.empty(config.n_timesteps, width))
        self.patch_proj = nn.Parameter(torch.empty(width, 3, p, p))
        self.w_pos = nn.Parameter(torch.empty(config.image_context, width))
        self.ln = LayerNorm(width)
        nn.init.normal_(self.w_t, std=0.02)
        nn.init.normal_(self.patch_proj, std=1 / math.sqrt(3 * p * p))
        nn.init.normal_(self.w_pos, std=0.01)

    def forward(self, pixels: Tensor, t: Tensor) -> Tensor:  # pixels (B, 3, S, S) in 0..255; t (B,)
        mean = torch.tensor(PIXEL_MEAN, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        std = torch.tensor(PIXEL_STD, device=pixels.device, dtype=pixels.dtype).view(1, 3, 1, 1)
        x = (pixels - mean) / std
        x = F.conv2d(x, self.patch_proj, stride=self.patch_size)  # (B, W, S/p, S/p)
        x = x.flatten(2).transpose(1, 2)  # patches row-major: (B, N, W)
        x = torch.cat([self.w_t[t][:, None].to(x.dtype), x], dim=1) + self.w_pos[None]
        return self.ln(x)


class ImageOutput(nn.Module):
    """LayerNorm of token 0, then a bias-free projection to the joint width."""

    def __init__(self, width: int, n_embd: int) -> None:
        super().__init__()
        self.ln = LayerNorm(width)
        self.f = Affine(width, n_embd, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.f(self.ln(x[:, 0]))


class ImageEncoder(nn.Module):
    """Noisy image (pixels 0..255) and ORIGINAL timestep (0..n_timesteps−1) → unnormalised (B, n_embd)."""

    def __init__(self, config: ClipConfig | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = c = _as_config(config)
        width = c.image_width
        blocks: dict[str, nn.Module] = {"input": ImageEmbedding(c)}
        blocks.update({f"block_{i}": TransformerBlock(width, c.n_head_image) for i in range(c.n_xf_blocks_image)})
        blocks["output"] = ImageOutput(width, c.n_embd)
        self.blocks = nn.ModuleDict(blocks)

    def check_input(self, pixels: Tensor, t: Tensor) -> Tensor:
        """Validate and return ``t`` as a (B,) int64 tensor (a 0-d or python int is broadcast)."""
        size = self.config.image_size
        if not isinstance(pixels, Tensor) or pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            shape = tuple(pixels.shape) if isinstance(pixels, Tensor) else type(pixels).__name__
            raise ValueError(
                f"the CLIP image encoder takes (B, 3, {size}, {size}) images (image_size {size} in its config), "
                f"got {shape}"
            )
        t = torch.as_tensor(t, device=pixels.device)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(
                f"CLIP timesteps must be integers (original 0..{self.config.n_timesteps - 1}), got {t.dtype}"
            )
        if t.ndim == 0:
            t = t.expand(pixels.shape[0])
        if t.shape != pixels.shape[:1]:
            raise ValueError(f"CLIP timesteps must have shape ({pixels.shape[0]},), got {tuple(t.shape)}")
        n = self.config.n_timesteps
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
            raise ValueError(
                f"CLIP timesteps must be ORIGINAL diffusion steps in 0..{n - 1}, got {int(t.min())}..{int(t.max())}"
            )
        return t.long()

    def forward(self, pixels: Tensor, t: Tensor | int) -> Tensor:
        t = self.check_input(pixels, t)
        x = self.blocks["input"](pixels, t)
        bias = attention_bias(x.shape[1], causal=False, device=x.device)
        for i in range(self.config.n_xf_blocks_image):
            x = self.blocks[f"block_{i}"](x, bias)
        return self.blocks["output"](x)


# ------------------------------------------------------------------------------------------------ model
def normalize(z: Tensor) -> Tensor:
    """z / (‖z‖₂ + 1e-12) along the last axis."""
    return z / (z.norm(dim=-1, keepdim=True) + NORM_EPS)


class NoisedClip(nn.Module):
    """GLIDE's noised CLIP: ``text_encoder``, ``image_encoder`` and the (log) logit scale.

    The two encoders load their released state dicts separately (``clip_text_enc.pt`` and
    ``clip_image_enc.pt``, strict). ``logit_scale`` is a plain float holding log(100) rounded to float32,
    as the reference keeps it; it is not part of any state dict.
    """

    def __init__(self, config: ClipConfig | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.config = c = _as_config(config)
        self.text_encoder = TextEncoder(c)
        self.image_encoder = ImageEncoder(c)
        self.logit_scale = float(np.float32(math.log(c.logit_scale)))  # log(100) rounded to float32
        self.tokenizer: Any = None  # None: CLIP's BPE (the released model); the book's miniatures use bytes
        self.trained_on_noise = True  # GLIDE's CLIP saw x_t at every t; False: a control trained on clean pictures

    def load_state_dicts(
        self,
        image_state: Mapping[str, Tensor],
        text_state: Mapping[str, Tensor],
        logit_scale: float | Tensor | None = None,
    ) -> None:
        """Load both encoders strictly (and the log logit scale if given)."""
        self.image_encoder.load_state_dict(image_state, strict=True)
        self.text_encoder.load_state_dict(text_state, strict=True)
        if logit_scale is not None:
            self.logit_scale = float(logit_scale)

    def text_embeddings(self, tokens: Tensor, lens: Tensor) -> Tensor:
        """Unit text vectors (B, n_embd)."""
        return normalize(self.text_encoder(tokens, lens))

    def shown_timesteps(self, t: Tensor, clean: bool | None = None) -> Tensor:
        """The timesteps the image encoder is given for x_t at ``t``: ``t`` itself for a CLIP trained on noise,
        zeros for one trained on clean pictures only (it never saw t ≠ 0: x_t is shown as if it were a picture).
        ``clean`` overrides the choice; None: from :attr:`trained_on_noise`."""
        clean = not self.trained_on_noise if clean is None else clean
        return torch.zeros_like(t) if clean else t

    def image_embeddings(self, x: Tensor, t: Tensor | int) -> Tensor:
        """Unit image vectors (B, n_embd) of noisy images x_t in [−1, 1] at ORIGINAL timesteps t."""
        return normalize(self.image_encoder((x + 1) * 127.5, t))

    def encode_prompts(self, prompts: str | Sequence[str], vocab_dir: Any = None) -> tuple[Tensor, Tensor]:
        """CLIP tokens (B, max_text_len) and lengths (B,) of ``prompts`` (on this model's device)."""
        from glide_edu.tokenizers import clip_tokenizer

        tokenizer = self.tokenizer if self.tokenizer is not None else clip_tokenizer(vocab_dir)
        tokens, lens = tokenizer.tokens_and_lens(prompts, self.config.max_text_len)
        device = self.image_encoder.blocks["input"].w_pos.device
        return tokens.to(device), lens.to(device)

    def logits(self, z_text: Tensor, z_image: Tensor) -> Tensor:
        """exp(logit_scale) · z_text · z_image per row (100 × cosine similarity)."""
        scale = torch.tensor(self.logit_scale, dtype=torch.float32, device=z_image.device).exp()
        return scale * (z_text * z_image).sum(-1)

    def cond_fn(
        self, prompts: str | Sequence[str] | tuple[Tensor, Tensor], guidance_scale: float, clean: bool | None = None
    ) -> Callable[..., Tensor]:
        """CLIP guidance for ``p_sample``: ``fn(x_t, t, **model_kwargs)`` → s · ∇_{x_t} Σ_b 100·z_text·z_image.

        ``prompts`` is a list of captions (one per batch row, or one for all) or ``(tokens, lens)`` from
        :meth:`encode_prompts`. The text side is computed once, here. ``t`` must be ORIGINAL timesteps
        (the respaced diffusions pass them); ``fn`` enables autograd itself, as samplers run under
        ``torch.no_grad()``. Extra keywords (the UNet's ``tokens``/``mask``) are ignored.
        ``clean``: a CLIP trained on clean pictures only never saw t ≠ 0, so it is shown t = 0 (x_t as if it
        were a picture — the "clean CLIP guidance" GLIDE compares against); None: :attr:`trained_on_noise`.
        """
        if isinstance(prompts, tuple) and len(prompts) == 2 and all(isinstance(p, Tensor) for p in prompts):
            tokens, lens = prompts
        else:
            tokens, lens = self.encode_prompts(prompts)
        with torch.no_grad():
            z_text = self.text_embeddings(tokens, lens)

        def fn(x: Tensor, t: Tensor, **_: Any) -> Tensor:
            if z_text.shape[0] not in (1, x.shape[0]):
                raise ValueError(f"cond_fn has {z_text.shape[0]} prompts but x_t has batch {x.shape[0]}")
            shown_t = self.shown_timesteps(t, clean)
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(True)
                loss = self.logits(z_text, self.image_embeddings(x_in, shown_t)).sum()
                (grad,) = torch.autograd.grad(loss, x_in)
            return grad * guidance_scale

        return fn


def create_clip_model(config: ClipConfig | Mapping[str, Any] | None = None) -> NoisedClip:
    """A :class:`NoisedClip` from a config (a :class:`ClipConfig` or the reference's ``clip_config`` dict)."""
    return NoisedClip(config)
