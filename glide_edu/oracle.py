"""The shapes oracle: read a picture back (colour segmentation, no learning) and check it against a caption.

GLIDE's strongest evidence is human raters' judgements of photorealism and caption similarity. In the
book's shapes world (:mod:`glide_edu.shapes`) an oracle stands in for them: it segments a picture by colour,
describes every blob it finds (colour, shape, size, centre) and checks each claim of a caption —
per attribute and for the caption as a whole.

Reading a picture:

1. every pixel is given the palette colour that best explains it as that colour mixed with white, and is
   background when it is less than half that colour (:func:`pixel_colours`); pixels of a colour form blobs
   (4-connected components, :func:`scipy.ndimage.label`); blobs under ``MIN_AREA`` pixels are specks;
2. a blob's **shape** from how full the top and bottom rows of its bounding box are (square: both full;
   upright triangle: the bottom full, the top nearly empty; circle: both about half); its **size** from the
   bounding box; its **position** and **relations** from its bounding box's centre, with the
   rules that generated the data (:func:`glide_edu.shapes.region`, :func:`glide_edu.shapes.relation_holds`).

Checking a caption (:func:`check`): the caption is parsed (:func:`parse_caption`); each attribute it
names — colour, shape, size, count, position, relation — is True when the picture bears it out, and
``caption`` is True when all of them are. The ``count`` attribute also catches extra objects: "a red
circle" beside a stray blue square is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import regex
from scipy import ndimage
from torch import Tensor

from glide_edu.shapes import (
    COLOURS,
    COUNT_WORDS,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZE_THRESHOLD,
    region,
    relation_holds,
)

MIN_AREA = 6  # pixels; smaller blobs are specks
SQUARE_FILL = 0.8  # the top and bottom rows of a square's bounding box are (nearly) full
TRIANGLE_GAP = 0.3  # an upright triangle's bottom rows are fuller than its top rows by at least this
ATTRIBUTES = ("colour", "shape", "size", "count", "position", "relation")


@dataclass(frozen=True)
class Blob:
    """One object the oracle sees."""

    colour: str
    shape: str
    size: str
    x: float  # centre of the bounding box, pixels (a triangle's centroid lies lower)
    y: float
    area: int


@dataclass(frozen=True)
class Claim:
    """What a caption says: ``count`` shapes of ``colour``/``shape`` (``size`` if named), at ``position`` or
    in ``relation`` to a second shape ``colour2``/``shape2``."""

    colour: str
    shape: str
    count: int = 1
    size: str | None = None
    position: str | None = None
    relation: str | None = None
    colour2: str | None = None
    shape2: str | None = None


# ------------------------------------------------------------------------------------------ captions
_COLOUR = "|".join(COLOURS)
_SHAPE = "|".join(SHAPES)
_REL = "|".join(regex.escape(r) for r in RELATIONS)
_POS = "|".join(regex.escape(p) for p in POSITIONS)
_COUNT = "|".join(COUNT_WORDS.values())
_SINGLE = regex.compile(rf"an? (?:(small|large) )?({_COLOUR}) ({_SHAPE})(?: ({_POS}))?")
_RELATION = regex.compile(
    rf"an? (?:(small|large) )?({_COLOUR}) ({_SHAPE}) ({_REL}) an? (?:small )?({_COLOUR}) ({_SHAPE})")
_COUNTED = regex.compile(rf"({_COUNT}) (?:small )?({_COLOUR}) ({_SHAPE})s")


def parse_caption(text: str) -> Claim:
    """The claims of a shapes caption ("a small red circle above a blue square").

    Accepts the captions :mod:`glide_edu.shapes` writes, in any case, with "center" for "centre" and a
    trailing full stop. Anything else raises ValueError naming the grammar.
    """
    t = " ".join(text.lower().replace("center", "centre").strip().rstrip(".").split())
    if m := _RELATION.fullmatch(t):
        size, c1, s1, rel, c2, s2 = m.groups()
        return Claim(c1, s1, 1, size, relation=rel, colour2=c2, shape2=s2)
    if m := _SINGLE.fullmatch(t):
        size, colour, shape, position = m.groups()
        return Claim(colour, shape, 1, size, position=position)
    if m := _COUNTED.fullmatch(t):
        word, colour, shape = m.groups()
        return Claim(colour, shape, {v: k for k, v in COUNT_WORDS.items()}[word])
    raise ValueError(
        f"caption {text!r} is not a shapes caption: write 'a [small|large] <colour> <shape> [<position>]', "
        f"'<two|three> <colour> <shape>s' or 'a <colour> <shape> <relation> a <colour> <shape>' "
        f"(colours {', '.join(COLOURS)}; shapes {', '.join(SHAPES)})"
    )


# ------------------------------------------------------------------------------------------ reading
def _as_pixels(image: np.ndarray | Tensor) -> np.ndarray:
    """(32, 32, 3) uint8 from a uint8 HWC array or a (3, H, W) float tensor in [−1, 1]."""
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"image tensor of shape {tuple(image.shape)}: give one (3, H, W) picture in [−1, 1]")
        arr = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        return arr
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"image array of shape {arr.shape} and dtype {arr.dtype}: give (H, W, 3) uint8")
    return arr


_INK = np.array([[255.0 - v for v in c] for c in COLOURS.values()], dtype=np.float32)  # (C, 3): white − colour
FOREGROUND_ALPHA = 0.5  # a pixel belongs to a shape when it is at least half its colour


def pixel_colours(pixels: np.ndarray) -> np.ndarray:
    """(H, W) index into COLOURS of each pixel's colour, −1 for background.

    A pixel of an anti-aliased edge is a mix ``α·colour + (1 − α)·white``; each palette colour c explains it
    with the α that best fits (least squares along the line white → c) and a residual. The pixel takes the
    colour with the smallest residual and is foreground when that α ≥ ½ — so a half-covered green edge stays
    green instead of turning into whichever colour is nearest to pale green.
    """
    d = 255.0 - pixels.astype(np.float32)  # (H, W, 3): how far below white
    alpha = d @ _INK.T / (_INK**2).sum(-1)  # (H, W, C)
    residual = ((d[:, :, None, :] - alpha[..., None] * _INK) ** 2).sum(-1)  # (H, W, C)
    best = residual.argmin(-1)
    a = np.take_along_axis(alpha, best[..., None], -1)[..., 0]
    return np.where(a >= FOREGROUND_ALPHA, best, -1)


_NAMES = list(COLOURS)


def classify_shape(mask: np.ndarray) -> str:
    """circle / square / triangle for one blob's boolean mask, from how full the top two and bottom two rows
    of its bounding box are: both full — a square; the bottom much fuller than the top — an upright
    triangle; otherwise a circle (both rounded off)."""
    ys, xs = np.nonzero(mask)
    box = mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    rows = min(2, box.shape[0] // 3 or 1)
    top, bottom = box[:rows].mean(), box[-rows:].mean()
    if min(top, bottom) >= SQUARE_FILL:
        return "square"
    return "triangle" if bottom - top >= TRIANGLE_GAP else "circle"


def read_picture(image: np.ndarray | Tensor) -> list[Blob]:
    """Every object in the picture, largest first."""
    nearest = pixel_colours(_as_pixels(image))  # (H, W)
    blobs = []
    for k, name in enumerate(_NAMES):
        labels, n = ndimage.label(nearest == k)
        for i in range(1, n + 1):
            mask = labels == i
            area = int(mask.sum())
            if area < MIN_AREA:
                continue
            ys, xs = np.nonzero(mask)
            extent = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
            size = "large" if extent > SIZE_THRESHOLD else "small"
            x, y = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2  # the bounding box's centre, as drawn
            blobs.append(Blob(name, classify_shape(mask), size, float(x), float(y), area))
    return sorted(blobs, key=lambda b: -b.area)


# ------------------------------------------------------------------------------------------ checking
def _matches(b: Blob, colour: str, shape: str) -> bool:
    return b.colour == colour and b.shape == shape


def check(image: np.ndarray | Tensor, caption: str | Claim) -> dict[str, bool]:
    """Per-attribute verdicts of a picture against a caption, and ``caption``: all of them.

    Only the attributes the caption names appear (a caption without a position has no ``position`` key).
    """
    claim = parse_caption(caption) if isinstance(caption, str) else caption
    blobs = read_picture(image)
    out: dict[str, bool] = {}
    if claim.relation is not None:
        firsts = [b for b in blobs if _matches(b, claim.colour, claim.shape)]
        seconds = [b for b in blobs if _matches(b, claim.colour2, claim.shape2)]
        colours, shapes = {b.colour for b in blobs}, {b.shape for b in blobs}
        out["colour"] = claim.colour in colours and claim.colour2 in colours
        out["shape"] = claim.shape in shapes and claim.shape2 in shapes
        if claim.size is not None:
            out["size"] = any(b.size == claim.size for b in firsts)
        out["count"] = len(blobs) == 2
        out["relation"] = any(relation_holds(claim.relation, (a.x, a.y), (b.x, b.y))
                              for a in firsts for b in seconds if a is not b)
    elif claim.count > 1:
        out["colour"] = bool(blobs) and all(b.colour == claim.colour for b in blobs)
        out["shape"] = bool(blobs) and all(b.shape == claim.shape for b in blobs)
        out["count"] = len(blobs) == claim.count
    else:
        best = next((b for b in blobs if _matches(b, claim.colour, claim.shape)), None)
        out["colour"] = any(b.colour == claim.colour for b in blobs)
        out["shape"] = any(b.shape == claim.shape for b in blobs if b.colour == claim.colour)
        if claim.size is not None:
            out["size"] = best is not None and best.size == claim.size
        out["count"] = len(blobs) == 1
        if claim.position is not None:
            out["position"] = best is not None and region(best.x, best.y) == claim.position
    out["caption"] = all(out.values())
    return out


def caption_accuracy(images: np.ndarray | Tensor | Sequence, captions: Sequence[str]) -> dict[str, float]:
    """Mean verdict per attribute over the captions that name it, and ``caption`` (whole-caption accuracy).

    ``images``: (N, 3, H, W) tensor in [−1, 1], (N, H, W, 3) uint8 array, or a sequence of single pictures.
    """
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images for {len(captions)} captions: give one caption per image")
    tallies: dict[str, list[bool]] = {}
    for image, caption in zip(images, captions, strict=True):
        for key, ok in check(image, caption).items():
            tallies.setdefault(key, []).append(ok)
    return {key: float(np.mean(v)) for key, v in tallies.items()}
