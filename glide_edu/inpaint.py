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
