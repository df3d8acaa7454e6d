"""Inpainting helpers: the known-region clamp and mask preparation, as GLIDE's inpainting notebook uses them.

GLIDE's inpainting models see [x_t, image·mask, mask] (mask 1 = known pixel, 0 = to generate). At sampling
time the notebook also *clamps* every prediction of x̂_0 to the known pixels before the usual [−1, 1] clip:

    x̂_0 ← x̂_0·(1 − m) + image·m,

so the posterior mean μ̃_t(x_t, x̂_0) pulls x_t towards the given pixels at every step and the final sample
reproduces them exactly (up to the last step's x̂_0 clip). This is :func:`known_region_clamp`, passed to the
samplers as ``denoised_fn``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def check_inpaint_inputs(image: Tensor, mask: Tensor, size: int | None = None) -> None:
    """Raise a one-line ValueError unless image is (B, 3, H, W) and mask (B, 1, H, W) (or (1, 1, H, W))."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"inpaint image must have shape (B, 3, H, W) with values in [-1, 1], got {tuple(image.shape)}")
    if size is not None and tuple(image.shape[2:]) != (size, size):
        raise ValueError(f"inpaint image must be {size}×{size}, got {tuple(image.shape[2:])}; resize it first")
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"inpaint mask must have shape (B, 1, {image.shape[2]}, {image.shape[3]}) like the image "
            f"(1 = keep, 0 = generate), got {tuple(mask.shape)}"
        )
    if mask.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"inpaint mask has batch {mask.shape[0]} but the image has {image.shape[0]}; use 1 or equal")


def known_region_clamp(image: Tensor, mask: Tensor) -> Callable[[Tensor], Tensor]:
    """``denoised_fn`` replacing the known pixels of x̂_0 by ``image``: x̂_0·(1 − mask) + image·mask.

    ``image`` (B, 3, H, W) and ``mask`` (B or 1, 1, H, W) must broadcast against x̂_0 (under classifier-free
    guidance, pass them repeated to the doubled batch).
    """

    def denoised_fn(x_start: Tensor) -> Tensor:
        return x_start * (1 - mask) + image * mask

    return denoised_fn


def resize_mask(mask: Tensor, size: int) -> Tensor:
    """Nearest-neighbour resize of a (B, 1, h, w) mask to size × size (how the notebook makes the 256 mask)."""
    return F.interpolate(mask.float(), (size, size), mode="nearest")


def resize_image(image: Tensor, size: int) -> Tensor:
    """Bicubic resize of a (B, 3, h, w) image in [−1, 1] to size × size, clamped back into [−1, 1]."""
    if tuple(image.shape[2:]) == (size, size):
        return image
    out = F.interpolate(image.float(), (size, size), mode="bicubic", align_corners=False, antialias=True)
    return out.clamp(-1, 1)


def top_rows_mask(size: int, keep_rows: int, batch: int = 1, device: torch.device | str = "cpu") -> Tensor:
    """A (batch, 1, size, size) mask keeping the top ``keep_rows`` rows (the notebook keeps 20 of 64)."""
    mask = torch.zeros(batch, 1, size, size, device=device)
    mask[:, :, :keep_rows] = 1
    return mask


def random_inpaint_masks(n: int, size: int, generator: torch.Generator | None = None) -> Tensor:
    """(n, 1, size, size) training masks, 1 = known pixel, 0 = erased (the model fills it in).

    GLIDE's paper fine-tunes for inpainting by erasing "random regions" of training images; the exact
    distribution was not published. Ours: half the masks erase one axis-aligned rectangle (sides uniform in
    [size/8, 3·size/4], anywhere), half erase free-form brush strokes (1–4 strokes, each a 4-point random walk
    with steps up to size/3 per axis, drawn with a round brush of radius size/32…size/12), the two region kinds
    of the inpainting literature. Every random number is drawn from ``generator`` up front, on the CPU.
    """
    g, strokes, vertices = generator, 4, 4
    rect_kind = torch.rand(n, generator=g) < 0.5  # (n,)
    lo, hi = max(1, size // 8), max(2, 3 * size // 4)
    sides = torch.randint(lo, hi + 1, (n, 2), generator=g)  # (n, 2) height, width
    corner = (torch.rand(n, 2, generator=g) * (size - sides + 1)).floor().long()  # (n, 2) top, left
    n_strokes = torch.randint(1, strokes + 1, (n,), generator=g)
    start = torch.rand(n, strokes, 1, 2, generator=g) * size
    steps = (torch.rand(n, strokes, vertices - 1, 2, generator=g) * 2 - 1) * (size / 3)
    verts = torch.cat([start, start + steps.cumsum(2)], dim=2).clamp(0, size - 1)  # (n, S, V, 2) as (y, x)
    radius = size / 32 + torch.rand(n, strokes, 1, generator=g) * (size / 12 - size / 32)  # (n, S, 1)

    pos = torch.arange(size)
    rect = (((pos[None] >= corner[:, :1]) & (pos[None] < corner[:, :1] + sides[:, :1]))[:, :, None]
            & ((pos[None] >= corner[:, 1:]) & (pos[None] < corner[:, 1:] + sides[:, 1:]))[:, None, :])  # (n, S, S)
    yy, xx = torch.meshgrid(pos.float(), pos.float(), indexing="ij")
    pixels = torch.stack([yy, xx], -1).reshape(1, 1, 1, -1, 2)  # (1, 1, 1, P, 2) pixel centres
    used = (torch.arange(strokes)[None] < n_strokes[:, None])[:, :, None, None]  # (n, S, 1, 1)
    drawn = torch.zeros(n, size * size, dtype=torch.bool)
    chunk = max(1, 2**22 // (strokes * (vertices - 1) * size * size))  # bounded memory at 256 px
    for i in range(0, n, chunk):
        a, b = verts[i:i + chunk, :, :-1, None], verts[i:i + chunk, :, 1:, None]  # (c, S, V-1, 1, 2)
        ab = b - a
        along = (((pixels - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-6)).clamp(0, 1)  # (c, S, V-1, P)
        dist = (pixels - a - along[..., None] * ab).norm(dim=-1)  # distance of each pixel to each segment
        near = (dist <= radius[i:i + chunk, :, :, None]) & used[i:i + chunk]
        drawn[i:i + chunk] = near.flatten(1, 2).any(1)
    erased = torch.where(rect_kind[:, None, None], rect, drawn.view(n, size, size))
    return (~erased).float()[:, None]  # (n, 1, size, size)
