"""Datasets users have: a folder of captioned images, and tar shards in the webdataset layout (what img2dataset
writes for LAION-style sets), streamed. Images are prepared as the reference prepares them
(:func:`center_crop_arr`); an unreadable image or a sample without a caption is skipped and counted — never a
crash in the middle of an epoch.

Captions of a folder come from, in this order: ``captions.jsonl`` (one ``{"file": …, "caption": …}`` per
line; ``image`` / ``text`` also accepted), ``captions.csv`` (columns ``file`` and ``caption``), or a sidecar
``<image stem>.txt`` beside each image.

A webdataset shard is a tar whose members ``<key>.<ext>`` are grouped by key: the image (``jpg``, ``jpeg``,
``png``, ``webp``) and its caption (``txt``, or ``json`` with a ``caption``/``text`` field).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tarfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def center_crop_arr(image: Image.Image, size: int) -> np.ndarray:
    """The reference's preparation: halve with a box filter while the short side is ≥ 2·size, resize bicubic
    so the short side is ``size``, then crop the centre. Returns (size, size[, C]) uint8."""
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.Resampling.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top:top + size, left:left + size]


def to_tensor(arr: np.ndarray) -> Tensor:
    """uint8 (H, W[, C]) → float (C, H, W) in [−1, 1]."""
    x = torch.from_numpy(np.array(arr, dtype=np.float32)) / 127.5 - 1.0  # (a copy: PIL arrays are read-only)
    return x[None] if x.ndim == 2 else x.permute(2, 0, 1)


def decode_image(data: bytes, size: int, channels: int = 3) -> Tensor:
    """Bytes of an image file → (channels, size, size) in [−1, 1]; raises on a damaged file."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return to_tensor(center_crop_arr(im.convert("RGB" if channels == 3 else "L"), size))


@dataclass
class CaptionedImages:
    """Images (N, C, S, S) in [−1, 1], their captions, and the files that were skipped (with why)."""

    images: Tensor
    captions: list[str]
    skipped: list[str] = field(default_factory=list)


def read_captions(root: str | os.PathLike) -> list[tuple[Path, str]]:
    """(image path, caption) pairs of a folder, from its manifest or sidecar ``.txt`` files."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no folder at {root}; pass the folder that holds your captioned images")
    if (root / "captions.jsonl").exists():
        pairs = []
        for n, line in enumerate((root / "captions.jsonl").read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                pairs.append((root / (row.get("file") or row["image"]), str(row.get("caption", row.get("text")))))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"captions.jsonl line {n} is not {{\"file\": …, \"caption\": …}}; fix it") from None
        return pairs
    if (root / "captions.csv").exists():
        with (root / "captions.csv").open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"file", "caption"} <= set(reader.fieldnames or ()):
                raise ValueError("captions.csv needs the columns file and caption")
            return [(root / row["file"], row["caption"]) for row in reader]
    images = sorted(p for p in root.rglob("*") if p.suffix.lower().lstrip(".") in IMAGE_EXTS)
    return [(p, p.with_suffix(".txt").read_text(encoding="utf-8").strip() if p.with_suffix(".txt").exists()
             else "") for p in images]


def load_captioned_folder(root: str | os.PathLike, size: int, channels: int = 3) -> CaptionedImages:
    """Every captioned image of a folder, prepared like the reference; damaged or uncaptioned ones skipped
    (with a warning that counts them). Raises when nothing usable is left."""
    pairs = read_captions(root)
    images, captions, skipped = [], [], []
    for path, caption in pairs:
        if not caption.strip():
            skipped.append(f"{path.name}: no caption")
            continue
        try:
            images.append(decode_image(path.read_bytes(), size, channels))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            skipped.append(f"{path.name}: {type(err).__name__}")
            continue
        captions.append(caption.strip())
    if skipped:
        warnings.warn(f"skipped {len(skipped)} of {len(pairs)} images (e.g. {skipped[0]})", stacklevel=2)
    if not images:
        raise ValueError(f"{Path(root).name} has no readable captioned image ({len(skipped)} skipped); see the "
                         "module docs for the caption formats")
    return CaptionedImages(torch.stack(images), captions, skipped)


def expand_shards(spec: str | Sequence[str]) -> list[str]:
    """``"data/{00000..00003}.tar"`` (img2dataset's brace notation) → the four paths; lists pass through."""
    if not isinstance(spec, str):
        return [s for item in spec for s in expand_shards(item)]
    match = re.search(r"\{(\d+)\.\.(\d+)\}", spec)
    if not match:
        return [spec]
    lo, hi = match.group(1), match.group(2)
    width = len(lo)
    return [p for i in range(int(lo), int(hi) + 1)
            for p in expand_shards(spec[:match.start()] + str(i).zfill(width) + spec[match.end():])]


class WebDataset(torch.utils.data.IterableDataset):
    """(image (C, S, S) in [−1, 1], caption) pairs streamed from webdataset tar shards.

    Shards are split between torchrun ranks and DataLoader workers (shard i goes to reader i mod the number
    of readers), so no example is read twice in an epoch. ``skipped`` counts the samples this reader dropped
    (damaged image, no caption, damaged tar); a warning reports the count at the end of each shard.
    """

    def __init__(self, shards: str | Sequence[str], size: int, channels: int = 3,
                 rank: int | None = None, world_size: int | None = None) -> None:
        from glide_edu import distributed as ddp

        self.shards = expand_shards(shards)
        if not self.shards:
            raise ValueError("no shards given; pass e.g. 'data/{00000..00099}.tar'")
        self.size, self.channels = size, channels
        r, w = ddp.rank_and_world()
        self.rank, self.world_size = (r if rank is None else rank), (w if world_size is None else world_size)
        self.skipped = 0

    def my_shards(self) -> list[str]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        reader, readers = self.rank * workers + worker, self.world_size * workers
        return self.shards[reader::readers]

    def __iter__(self) -> Iterator[tuple[Tensor, str]]:
        for shard in self.my_shards():
            before = self.skipped
            for parts in read_shard(shard):
                sample = decode_sample(parts, self.size, self.channels)
                if sample is None:
                    self.skipped += 1
                else:
                    yield sample
            if self.skipped > before:
                warnings.warn(f"{Path(shard).name}: skipped {self.skipped - before} sample(s) (damaged or "
                              "uncaptioned)", stacklevel=2)


DAMAGED = "__damaged__"  # the parts of a "sample" standing for the unreadable rest of a damaged shard


def read_shard(shard: str) -> Iterator[dict[str, bytes]]:
    """The raw samples of one webdataset shard, in file order: ``{ext: bytes}`` per key (nothing decoded).

    A truncated or damaged tar ends the shard with one ``{DAMAGED: b""}`` entry (what was read before is kept),
    so a consumer counts it as one skipped sample wherever it lands — never an exception mid-epoch.
    """
    key, parts = None, {}
    try:
        with tarfile.open(shard, mode="r|*") as tar:  # streamed: members in order, nothing seeks
            for member in tar:
                if not member.isfile():
                    continue
                base = os.path.basename(member.name)
                stem, _, ext = base.partition(".")
                sample_key = os.path.join(os.path.dirname(member.name), stem)
                if sample_key != key and key is not None:
                    yield parts
                    parts = {}
                key = sample_key
                parts[ext.lower()] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError):
        if parts:
            yield parts
        yield {DAMAGED: b""}
        return
    if parts:
        yield parts


def sample_caption(parts: dict[str, bytes]) -> str:
    """The caption of a raw sample: its ``txt``, else its ``json``'s ``caption``/``text`` ("" when none)."""
    caption = parts["txt"].decode("utf-8", "replace").strip() if "txt" in parts else ""
    if not caption and "json" in parts:
        try:
            meta = json.loads(parts["json"])
            caption = str(meta.get("caption") or meta.get("text") or "").strip()
        except (json.JSONDecodeError, AttributeError):
            caption = ""
    return caption


def decode_sample(parts: dict[str, bytes], size: int, channels: int = 3) -> tuple[Tensor, str] | None:
    """(image (channels, size, size) in [−1, 1], caption) of a raw sample, or None when it has no image, no
    caption, or an image that does not decode (the caller counts it as skipped)."""
    data = next((parts[e] for e in IMAGE_EXTS if e in parts), None)
    caption = sample_caption(parts)
    if data is None or not caption:
        return None
    try:
        return decode_image(data, size, channels), caption
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
