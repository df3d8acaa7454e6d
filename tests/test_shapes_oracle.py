"""The shapes dataset and the oracle that reads it back."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from glide_edu import oracle, shapes
from glide_edu.oracle import Claim, caption_accuracy, check, parse_caption, read_picture
from glide_edu.shapes import HELDOUT_PAIRS, Scene, Shape, load_shapes, make_scenes, render_scene


@pytest.fixture(scope="module")
def train() -> shapes.ShapesData:
    return load_shapes(600, seed=3)


def test_scenes_are_a_function_of_the_seed() -> None:
    assert make_scenes(50, 7) == make_scenes(50, 7)
    assert make_scenes(50, 7) != make_scenes(50, 8)
    a, b = load_shapes(20, 7), load_shapes(20, 7)
    assert torch.equal(a.images, b.images) and a.captions == b.captions


def test_heldout_pairs_never_in_training_but_each_word_is(train: shapes.ShapesData) -> None:
    pairs = [(s.colour, s.shape) for scene in make_scenes(3000, 0) for s in scene.shapes]
    assert not set(pairs) & HELDOUT_PAIRS
    colours, kinds = {c for c, _ in pairs}, {k for _, k in pairs}
    for colour, shape in HELDOUT_PAIRS:
        assert colour in colours and shape in kinds
    for scene in make_scenes(300, 0, "heldout"):
        assert (scene.shapes[0].colour, scene.shapes[0].shape) in HELDOUT_PAIRS
        assert scene.kind in ("single", "relation")


def test_caption_grammar_round_trip(train: shapes.ShapesData) -> None:
    kinds = set()
    for scene in train.scenes:
        claim = parse_caption(scene.caption)
        first = scene.shapes[0]
        assert (claim.colour, claim.shape) == (first.colour, first.shape)
        assert claim.count == (len(scene.shapes) if scene.kind == "count" else 1)
        assert claim.position == scene.position and claim.relation == scene.relation
        assert claim.size == (first.size if scene.name_size and scene.kind != "count" else None)
        kinds.add(scene.kind)
    assert kinds == {"single", "count", "relation"}
    assert parse_caption("A small red circle above a blue square.") == Claim(
        "red", "circle", 1, "small", relation="above", colour2="blue", shape2="square")
    assert parse_caption("a red circle in the center").position == "in the centre"
    assert parse_caption("three green triangles").count == 3


@pytest.mark.parametrize("bad", ["a red apple", "a pink circle", "four red circles", ""])
def test_unknown_caption_is_one_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="not a shapes caption: write"):
        parse_caption(bad)


def test_oracle_reads_true_pictures_perfectly(train: shapes.ShapesData) -> None:
    acc = caption_accuracy(train.images, train.captions)
    assert set(acc) == {*oracle.ATTRIBUTES, "caption"}
    assert acc["caption"] == 1.0, acc
    held = load_shapes(200, seed=3, split="heldout")
    assert caption_accuracy(held.images, held.captions)["caption"] == 1.0


def test_oracle_rejects_wrong_captions(train: shapes.ShapesData) -> None:
    captions = list(train.captions)
    random.Random(0).shuffle(captions)
    acc = caption_accuracy(train.images, captions)
    assert acc["caption"] < 0.05 and acc["relation"] < 0.05 and acc["colour"] < 0.4


def test_oracle_is_robust_to_noise_and_blur(train: shapes.ShapesData) -> None:
    g = torch.Generator().manual_seed(0)
    noisy = (train.images + 0.1 * torch.randn(train.images.shape, generator=g)).clamp(-1, 1)
    assert caption_accuracy(noisy, train.captions)["caption"] >= 0.99
    blurred = torch.nn.functional.avg_pool2d(
        torch.nn.functional.interpolate(train.images, scale_factor=2, mode="bilinear"), 2)
    assert caption_accuracy(blurred, train.captions)["caption"] >= 0.99


def test_each_attribute_is_checked_on_its_own() -> None:
    picture = render_scene(Scene("single", (Shape("red", "circle", "large", 8, 16),), position="on the left"))
    assert check(picture, "a large red circle on the left")["caption"]
    assert check(picture, "a small red circle on the left") == {
        "colour": True, "shape": True, "size": False, "count": True, "position": True, "caption": False}
    assert not check(picture, "a large red circle on the right")["position"]
    assert not check(picture, "a large blue circle")["colour"]
    assert not check(picture, "a large red square")["shape"]
    assert not check(picture, "two red circles")["count"]
    above = (Shape("red", "circle", "small", 16, 6), Shape("blue", "square", "small", 16, 24))
    pair = render_scene(Scene("relation", above, relation="above"))
    assert check(pair, "a red circle above a blue square")["caption"]
    assert not check(pair, "a red circle below a blue square")["relation"]
    assert not check(pair, "a blue square above a red circle")["relation"]
    # an extra object makes a single-object caption wrong (count), the rest stays right
    verdict = check(pair, "a small red circle")
    assert not verdict["count"] and verdict["colour"] and verdict["shape"] and not verdict["caption"]


def test_blank_picture_fails_everything() -> None:
    white = np.full((32, 32, 3), 255, np.uint8)
    assert read_picture(white) == []
    assert not any(check(white, "a red circle").values())
    assert not any(check(white, "two red circles").values())


def test_shapes_classified_from_their_masks() -> None:
    for shape in shapes.SHAPES:
        for size in shapes.SIZES:
            for x in (10, 15, 21):
                blobs = read_picture(render_scene(Scene("single", (Shape("green", shape, size, x, 15),))))
                assert [(b.shape, b.size) for b in blobs] == [(shape, size)]


def test_bad_inputs_are_one_clear_error() -> None:
    with pytest.raises(ValueError, match="choose 'train' or 'heldout'"):
        make_scenes(3, split="test")
    with pytest.raises(ValueError, match="one caption per image"):
        caption_accuracy(torch.zeros(2, 3, 32, 32), ["a red circle"])
    with pytest.raises(ValueError, match=r"give \(H, W, 3\) uint8"):
        read_picture(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"give one \(3, H, W\) picture"):
        read_picture(torch.zeros(1, 3, 32, 32))
