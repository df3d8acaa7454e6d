"""Plotting helpers for the chapters: image grids, trajectories as animations.

All functions take images in the book's convention (float tensors in [−1, 1], NCHW).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def to_uint8(images: Tensor) -> np.ndarray:
    """[−1, 1] NCHW (or CHW) tensor → uint8 NHWC (or HWC) array, rounding as 8-bit quantisation does."""
    x = images.detach().float().cpu()
    x = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(*range(x.ndim - 3), -2, -1, -3).numpy()


def to_pil(images: Tensor) -> list:
    """[−1, 1] NCHW tensor → list of PIL images (grayscale when C = 1)."""
    from PIL import Image

    arr = to_uint8(images if images.ndim == 4 else images[None])
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arr]


def make_grid(images: Tensor, nrow: int = 8, pad: int = 1, pad_value: float = 1.0) -> Tensor:
    """Tile (N, C, H, W) images into one (C, H', W') image, ``nrow`` per row."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    nrows = (n + ncol - 1) // ncol
    grid = torch.full((c, nrows * (h + pad) + pad, ncol * (w + pad) + pad), pad_value, dtype=images.dtype)
    for i in range(n):
        r, q = divmod(i, ncol)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[:, top : top + h, left : left + w] = images[i].detach().cpu()
    return grid


def show_images(images: Tensor, nrow: int = 8, title: str | None = None, ax=None, figsize_per: float = 0.9):
    """Show (N, C, H, W) images in [−1, 1] as one grid; returns the matplotlib Axes."""
    import matplotlib.pyplot as plt

    grid = make_grid(images.detach().cpu().clamp(-1, 1), nrow=nrow)
    if ax is None:
        n = images.shape[0]
        cols, rows = min(nrow, n), (n + nrow - 1) // nrow
        _, ax = plt.subplots(figsize=(max(2.0, figsize_per * cols), max(1.5, figsize_per * rows)))
    img = to_uint8(grid)
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None, vmin=0, vmax=255)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def show_row(images: Sequence[Tensor], titles: Sequence[str] | None = None, size: float = 1.8):
    """One figure, one image per panel (each (C, H, W) or (1, C, H, W)); returns the Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size * 1.15))
    axes = np.atleast_1d(axes)
    for i, (ax, im) in enumerate(zip(axes, images, strict=False)):
        show_images(im if im.ndim == 4 else im[None], nrow=1, ax=ax, title=titles[i] if titles else None)
    fig.tight_layout()
    return fig


def animate_frames(frames: Sequence[Tensor], interval: int = 80, nrow: int = 8, titles: Sequence[str] | None = None):
    """An animation of image batches (one (N, C, H, W) tensor per frame) as embeddable HTML (jshtml)."""
    import matplotlib.pyplot as plt
    from IPython.display import HTML
    from matplotlib import animation

    grids = [to_uint8(make_grid(f.detach().cpu().clamp(-1, 1), nrow=nrow)) for f in frames]
    grids = [g[..., 0] if g.shape[-1] == 1 else g for g in grids]
    fig, ax = plt.subplots(figsize=(4, 4 * grids[0].shape[0] / grids[0].shape[1] + 0.3))
    ax.set_axis_off()
    im = ax.imshow(grids[0], cmap="gray" if grids[0].ndim == 2 else None, vmin=0, vmax=255)

    def update(i: int):
        im.set_data(grids[i])
        if titles:
            ax.set_title(titles[i])
        return (im,)

    anim = animation.FuncAnimation(fig, update, frames=len(grids), interval=interval, blit=False)
    html = HTML(anim.to_jshtml())
    plt.close(fig)
    return html
