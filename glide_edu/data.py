"""Small real datasets that ship inside installed packages (nothing is downloaded).

* handwritten digits — scikit-learn's 1,797 8×8 scans (UCI), upsampled bilinearly, values in [−1, 1];
* photographs — scikit-image's sample images (the cat "chelsea", an astronaut, coffee, a camera man);
* your own images — :func:`load_image_folder` reads a folder (optionally one sub-folder per class), each file
  through :func:`read_image` (which the ``glide-edu`` command uses too).

Images are float32 NCHW tensors in [−1, 1], the book's convention.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from PIL import Image

SPLITS = ("train", "test", "all")


def quantize_8bit(x: Tensor) -> Tensor:
    """Snap images in [−1, 1] onto the 256 levels of 8-bit data: round((x + 1)·127.5)/127.5 − 1 (after clamping).

    The likelihood of chapter 4 is measured on such images, and GLIDE puts its base samples on this grid
    before handing them to the upsampler (which was trained on 8-bit images).
    """
    return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1
PHOTOS = {"cat": "chelsea", "chelsea": "chelsea", "astronaut": "astronaut", "coffee": "coffee", "camera": "camera"}


def load_digits(
    size: int = 16, split: str = "train", test_fraction: float = 0.2, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Handwritten digits as (images (N, 1, size, size) in [−1, 1], labels (N,) int64).

    The train/test split is a fixed permutation (``seed``) so every reader gets the same sets.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"size must be an integer >= 8 (the scans are 8×8), got {size!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)  # (N, 1, 8, 8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    idx = {"test": order[:n_test], "train": order[n_test:], "all": np.arange(len(labels))}[split]
    idx_t = torch.from_numpy(np.sort(idx))
    return images[idx_t].contiguous(), labels[idx_t].contiguous()


def load_photo(name: str = "cat", size: int = 64) -> Tensor:
    """A centre-cropped, resized RGB photograph from scikit-image as (1, 3, size, size) in [−1, 1]."""
    key = name.strip().lower()
    if key not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {', '.join(sorted(PHOTOS))}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    from skimage import data as skdata

    arr = np.asarray(getattr(skdata, PHOTOS[key])())
    if arr.ndim == 2:  # grayscale → RGB
        arr = np.repeat(arr[..., None], 3, axis=-1)
    h, w = arr.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    arr = arr[top : top + s, left : left + s, :3]
    x = torch.from_numpy(arr.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1).unsqueeze(0)  # (1, 3, s, s)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(-1, 1)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # Pillow's modes for 16-bit grayscale (and int32)


class FolderData(NamedTuple):
    """Images (N, C, size, size) in [−1, 1]; labels (N,) int64 and their class names when the images sit in
    one sub-folder per class (torchvision's ImageFolder layout), else None and []."""

    images: Tensor
    labels: Tensor | None
    classes: list[str]


def read_image(path: str | os.PathLike, mode: str = "RGB", fix: str = "give a PNG or JPEG file") -> Image.Image:
    """The picture in file ``path`` as an 8-bit PIL image of ``mode`` ("RGB" or "L"), upright.

    * Files over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) are refused — also in the
      range where Pillow only warns — before their pixels are decoded.
    * A JPEG's EXIF orientation is applied (:func:`PIL.ImageOps.exif_transpose`), as photo viewers do.
    * 16-bit grayscale (modes "I;16…", "I") is scaled by 255/65535 onto the 8-bit levels, not clipped at 255.

    Problems raise a one-line ValueError naming the file and ending in ``fix``.
    """
    from PIL import Image, ImageOps

    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                im = ImageOps.exif_transpose(im)  # a new, upright image: the file can be closed
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        limit = Image.MAX_IMAGE_PIXELS
        raise ValueError(
            f"image {path} is too large to open safely ({' '.join(str(err).split())}); shrink it below "
            f"{limit:,} pixels, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from None
    except (OSError, ValueError, SyntaxError) as err:  # UnidentifiedImageError is an OSError
        raise ValueError(f"cannot read image {path}: {' '.join(str(err).split())}; {fix}") from None
    if im.mode in SIXTEEN_BIT_MODES:
        levels = np.clip(np.asarray(im, dtype=np.float64), 0, 65535) * (255 / 65535)
        im = Image.fromarray(np.round(levels).astype(np.uint8), mode="L")
    return im.convert(mode)


def load_image_folder(path: str | os.PathLike, size: int, channels: int = 3) -> FolderData:
    """Your own images for training: every image file under ``path``, centre-cropped to a square, resized to
    ``size``×``size`` (bicubic) and scaled to [−1, 1]. ``channels`` is 3 (RGB) or 1 (grayscale).
    Files are read by :func:`read_image` (EXIF orientation, 16-bit scaling, decompression-bomb limit)."""
    from PIL import Image

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder at {root}; pass the folder that holds your images")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{root} holds no image files ({', '.join(IMAGE_SUFFIXES)}); the dataset would be empty")
    arrays = []
    for f in files:
        im = read_image(f, "RGB" if channels == 3 else "L", fix="fix or remove the file")
        s = min(im.size)
        left, top = (im.width - s) // 2, (im.height - s) // 2
        im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(im, dtype=np.float32).reshape(size, size, channels))
    images = torch.from_numpy(np.stack(arrays) / 127.5 - 1.0).permute(0, 3, 1, 2).float().contiguous()
    parents = [f.relative_to(root).parts for f in files]
    if all(len(p) == 2 for p in parents):  # root/<class>/<image>
        classes = sorted({p[0] for p in parents})
        labels = torch.tensor([classes.index(p[0]) for p in parents], dtype=torch.int64)
        return FolderData(images, labels, classes)
    return FolderData(images, None, [])
