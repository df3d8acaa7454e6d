"""Shapes: a procedural captioned dataset with ground truth, for text-to-image models the book can check.

Every picture is 32×32 RGB on white and is drawn from a :class:`Scene` — coloured shapes with a size and a
centre — that also writes its caption. Three kinds of scene, three kinds of caption:

* ``single``   — "a large red circle", "a small blue triangle on the left" (position named half the time);
* ``count``    — "two green squares", "three purple circles" (small shapes of one colour and shape);
* ``relation`` — "a small red circle above a blue square" (above / below / to the left of / to the right of).

Attributes: colour (:data:`COLOURS`), shape (circle, square, triangle), size (small 7 px, large 13 px),
position (:data:`POSITIONS`), count (2–3), relation (:data:`RELATIONS`). Pictures are drawn at 4× and
box-filtered down, so edges are anti-aliased like a photograph's.

Held-out combinations. The colour–shape pairs in :data:`HELDOUT_PAIRS` never occur in a ``"train"`` scene,
although each colour and each shape occurs with others; ``"heldout"`` scenes contain them. A model that
draws "a yellow triangle" having seen only yellow circles and squares and triangles of other colours has
composed the two words — the generalisation test of chapter 7.

Everything is a pure function of a seed: :func:`make_scenes` with the same arguments gives the same scenes.
The regions and relations are decided by the same functions that :mod:`glide_edu.oracle` uses to read a
picture back, so a generated caption is true of its picture by construction (and the oracle's accuracy on
real pictures is a test of the oracle, not of the data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

IMAGE_SIZE = 32
SCALE = 4  # drawn at 4× then box-filtered: anti-aliased edges
BACKGROUND = (255, 255, 255)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 48, 39),
    "yellow": (240, 200, 30),
    "green": (30, 150, 60),
    "blue": (40, 90, 220),
    "purple": (130, 50, 170),
}
SHAPES = ("circle", "square", "triangle")
SIZES: dict[str, int] = {"small": 7, "large": 13}  # side of the bounding box, pixels (odd: see _centre)
SIZE_THRESHOLD = 10  # the oracle calls a shape "large" when its bounding box is wider or taller than this
POSITIONS = ("at the top", "at the bottom", "on the left", "on the right", "in the centre")
RELATIONS = ("above", "below", "to the left of", "to the right of")
COUNT_WORDS = {2: "two", 3: "three"}
HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset({("yellow", "triangle"), ("blue", "circle")})
KINDS = ("single", "count", "relation")
KIND_WEIGHTS = (0.5, 0.2, 0.3)
CENTRE = (IMAGE_SIZE - 1) / 2  # pixel-centre coordinates run 0 … 31
CENTRE_RADIUS = 3.5  # |dx| and |dy| below this: "in the centre"
MIN_RELATION_OFFSET = 4.0  # the oracle's smallest offset along a relation's axis


@dataclass(frozen=True)
class Shape:
    """One drawn shape: its attributes and its centre (x right, y down, in pixels of the 32×32 image)."""

    colour: str
    shape: str
    size: str
    x: float
    y: float

    @property
    def side(self) -> int:
        return SIZES[self.size]


@dataclass(frozen=True)
class Scene:
    """What a picture shows and what its caption says: ``kind`` with its shapes and, where named, the
    single shape's ``position`` or the first shape's ``relation`` to the second."""

    kind: str
    shapes: tuple[Shape, ...]
    position: str | None = None
    relation: str | None = None
    name_size: bool = True  # whether the caption names the (first) shape's size

    @property
    def caption(self) -> str:
        return scene_caption(self)


def region(x: float, y: float) -> str:
    """The position word for a centre: the centre square, else the side the centre is furthest towards."""
    dx, dy = x - CENTRE, y - CENTRE
    if abs(dx) < CENTRE_RADIUS and abs(dy) < CENTRE_RADIUS:
        return "in the centre"
    if abs(dx) >= abs(dy):
        return "on the left" if dx < 0 else "on the right"
    return "at the top" if dy < 0 else "at the bottom"


def relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether centre ``a`` is ``relation`` centre ``b``: mostly along that axis, by ≥ MIN_RELATION_OFFSET px."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    along, across = {"above": (-dy, dx), "below": (dy, dx), "to the left of": (-dx, dy),
                     "to the right of": (dx, dy)}[relation]
    return along >= MIN_RELATION_OFFSET and along > abs(across)


def _noun(shape: str, plural: bool = False) -> str:
    return shape + "s" if plural else shape


def scene_caption(scene: Scene) -> str:
    """The natural caption of a scene ("a small red circle above a blue square")."""
    first = scene.shapes[0]
    size = f"{first.size} " if scene.name_size else ""
    if scene.kind == "count":
        return f"{COUNT_WORDS[len(scene.shapes)]} {first.colour} {_noun(first.shape, True)}"
    text = f"a {size}{first.colour} {first.shape}"
    if scene.kind == "single":
        return f"{text} {scene.position}" if scene.position else text
    second = scene.shapes[1]
    return f"{text} {scene.relation} a {second.colour} {second.shape}"


# ------------------------------------------------------------------------------------------ drawing
def render_scene(scene: Scene) -> np.ndarray:
    """The scene as a (32, 32, 3) uint8 picture on white."""
    big = Image.new("RGB", (IMAGE_SIZE * SCALE,) * 2, BACKGROUND)
    draw = ImageDraw.Draw(big)
    for s in scene.shapes:
        half = s.side * SCALE / 2
        cx, cy = (s.x + 0.5) * SCALE, (s.y + 0.5) * SCALE  # pixel centre → continuous coordinates
        box = (cx - half, cy - half, cx + half - 1, cy + half - 1)
        fill = COLOURS[s.colour]
        if s.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif s.shape == "square":
            draw.rectangle(box, fill=fill)
        else:  # an upright isosceles triangle filling the box
            draw.polygon([(cx, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
    return np.asarray(big.resize((IMAGE_SIZE,) * 2, Image.Resampling.BOX), dtype=np.uint8)


# ------------------------------------------------------------------------------------------ sampling
def _pairs(split: str) -> list[tuple[str, str]]:
    every = [(c, s) for c in COLOURS for s in SHAPES]
    if split == "train":
        return [p for p in every if p not in HELDOUT_PAIRS]
    return sorted(HELDOUT_PAIRS)


def _centre(rng: np.random.Generator, side: int) -> tuple[float, float]:
    """A whole-pixel centre with the shape inside the picture (odd sides: the shape sits on the pixel grid,
    so squares are crisp and only curved and slanted edges are anti-aliased)."""
    lo, hi = side // 2, IMAGE_SIZE - 1 - side // 2
    return float(rng.integers(lo, hi + 1)), float(rng.integers(lo, hi + 1))


def _apart(a: Shape, b: Shape, gap: float = 2.0) -> bool:
    reach = (a.side + b.side) / 2 + gap
    return abs(a.x - b.x) >= reach or abs(a.y - b.y) >= reach


def _stable_region(x: float, y: float) -> str | None:
    """The region of (x, y) if every point within 1 px has the same one (no borderline scenes)."""
    r = region(x, y)
    near = [region(x + dx, y + dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    return r if all(n == r for n in near) else None


def _single(rng: np.random.Generator, pairs: list[tuple[str, str]]) -> Scene:
    colour, shape = pairs[rng.integers(len(pairs))]
    size = str(rng.choice(list(SIZES)))
    named = bool(rng.random() < 0.5)
    while True:
        x, y = _centre(rng, SIZES[size])
        where = _stable_region(x, y)
        if where is not None:
            break
    return Scene("single", (Shape(colour, shape, size, x, y),), position=where if named else None)


def _count(rng: np.random.Generator, pairs: list[tuple[str, str]]) -> Scene:
    colour, shape = pairs[rng.integers(len(pairs))]
    n = int(rng.integers(2, 4))
    while True:
        shapes = tuple(Shape(colour, shape, "small", *_centre(rng, SIZES["small"])) for _ in range(n))
        if all(_apart(a, b, gap=3.0) for i, a in enumerate(shapes) for b in shapes[i + 1:]):
            return Scene("count", shapes, name_size=False)


def _relation(rng: np.random.Generator, pairs: list[tuple[str, str]], split: str) -> Scene:
    every = _pairs("train")
    while True:
        first = pairs[rng.integers(len(pairs))]
        # held-out scenes keep one held-out pair (the first shape) beside a training pair
        second = every[rng.integers(len(every))] if split == "heldout" else pairs[rng.integers(len(pairs))]
        if first != second:
            break
    size = str(rng.choice(list(SIZES)))
    relation = str(rng.choice(RELATIONS))
    while True:
        a = Shape(*first, size, *_centre(rng, SIZES[size]))
        b = Shape(*second, "small", *_centre(rng, SIZES["small"]))
        dx, dy = a.x - b.x, a.y - b.y
        along = abs(dy) if relation in ("above", "below") else abs(dx)
        across = abs(dx) if relation in ("above", "below") else abs(dy)
        clear = along >= MIN_RELATION_OFFSET + 2 and across <= along / 2 - 1
        if clear and relation_holds(relation, (a.x, a.y), (b.x, b.y)) and _apart(a, b):
            return Scene("relation", (a, b), relation=relation, name_size=bool(rng.random() < 0.5))


def make_scenes(n: int, seed: int = 0, split: str = "train") -> list[Scene]:
    """``n`` random scenes from ``seed``: ``"train"`` never shows a pair of HELDOUT_PAIRS, ``"heldout"``
    scenes (single and relation kinds) always show one."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split={split!r}: choose 'train' or 'heldout'")
    if n < 0:
        raise ValueError(f"n={n}: the number of scenes must be ≥ 0")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    pairs = _pairs(split)
    kinds, weights = (KINDS, KIND_WEIGHTS) if split == "train" else (("single", "relation"), (0.5, 0.5))
    scenes = []
    for _ in range(n):
        kind = kinds[rng.choice(len(kinds), p=np.asarray(weights) / sum(weights))]
        if kind == "single":
            scenes.append(_single(rng, pairs))
        elif kind == "count":
            scenes.append(_count(rng, pairs))
        else:
            scenes.append(_relation(rng, pairs, split))
    return scenes


class ShapesData(NamedTuple):
    images: Tensor  # (N, 3, 32, 32) in [−1, 1]
    captions: list[str]
    scenes: list[Scene]


def to_tensor(pictures: np.ndarray) -> Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32 in [−1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pictures)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def load_shapes(n: int = 20000, seed: int = 0, split: str = "train") -> ShapesData:
    """``n`` scenes drawn and captioned (about 0.1 ms a picture)."""
    scenes = make_scenes(n, seed, split)
    pictures = np.stack([render_scene(s) for s in scenes]) if scenes else np.zeros((0, 32, 32, 3), np.uint8)
    return ShapesData(to_tensor(pictures), [s.caption for s in scenes], scenes)
