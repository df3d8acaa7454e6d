"""The book's shipped CLIPs (chapter 8): the recipes' configs, trained to a plateau, and reading captions as a
noised / clean CLIP should. Each test skips while its file is not shipped yet."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from glide_edu.book.ch08 import chance_level, training_curve
from glide_edu.pretrained import CHECKPOINT_DIR, read_metadata
from glide_edu.shapes import load_shapes
from glide_edu.train_clip import CLIP_RECIPES, retrieval_accuracy, shipped_clip

KINDS = ("noised", "clean", "eval")


def _shipped(kind: str) -> bool:
    return (CHECKPOINT_DIR / f"clip_{kind}.safetensors").exists()


def needs(kind: str):
    return pytest.mark.skipif(not _shipped(kind), reason=f"clip_{kind}.safetensors is not shipped yet")


@pytest.fixture(scope="module")
def pool() -> tuple[torch.Tensor, list[str]]:
    """128 shapes scenes of a seed the CLIPs never trained on (chapter 8 uses the larger validation_pool)."""
    data = load_shapes(128, seed=77)
    return data.images, list(data.captions)


@pytest.mark.parametrize("kind", [pytest.param(k, marks=needs(k)) for k in KINDS])
def test_shipped_clip_is_its_recipe_trained_to_a_plateau(kind: str) -> None:
    clip = shipped_clip(kind)  # strict load
    config, train = CLIP_RECIPES[kind]
    assert replace(clip.config, logit_scale=config.logit_scale) == config  # the scale is learned
    assert clip.trained_on_noise == train.noised
    info = read_metadata(CHECKPOINT_DIR / f"clip_{kind}.safetensors")["info"]
    assert info["train"]["steps"] == train.steps
    curve = training_curve(CHECKPOINT_DIR / f"clip_{kind}.safetensors")
    last = curve["t=0"][-3:]
    assert curve["step"][-1] == train.steps and max(last) - min(last) < 0.05  # flat over its last 1000 steps
    assert last[-1] > curve["t=0"][0] + 0.3  # and it did learn (its first evaluation is at step 500)


@needs("noised")
def test_the_noised_clip_still_reads_captions_in_noisy_pictures(pool) -> None:
    images, captions = pool
    clip = shipped_clip("noised")
    chance = chance_level(captions)
    at = {t: retrieval_accuracy(clip, images, captions, t=t) for t in (0, 600, 999)}
    assert at[0] > chance + 0.5 and at[600] > chance + 0.2  # reads the caption through t = 600's noise
    assert at[999] < chance + 0.1  # and nothing is left to read at the top of the schedule


@needs("clean")
def test_the_clean_clip_loses_captions_that_the_noised_one_keeps(pool) -> None:
    images, captions = pool
    clean = shipped_clip("clean")
    chance = chance_level(captions)
    assert retrieval_accuracy(clean, images, captions, t=0) > chance + 0.5
    if _shipped("noised"):
        noised = shipped_clip("noised")
        assert retrieval_accuracy(noised, images, captions, t=600) > retrieval_accuracy(clean, images, captions,
                                                                                         t=600) + 0.1


@needs("noised")
@needs("clean")
def test_chapter_8s_retrieval_curve_is_the_shipped_clips() -> None:
    from glide_edu.book.ch08 import load_retrieval

    result = load_retrieval()  # refuses a file measured with other CLIPs
    assert set(result["clips"]) == {"noised", "clean"} and result["config"]["n_pictures"] == 256


@needs("eval")
def test_the_evaluation_clip_is_another_model_that_reads_clean_captions(pool) -> None:
    images, captions = pool
    judge = shipped_clip("eval")
    assert retrieval_accuracy(judge, images, captions, t=0) > chance_level(captions) + 0.5
    assert judge.config.patch_size != CLIP_RECIPES["noised"][0].patch_size  # another architecture
    assert CLIP_RECIPES["eval"][1].seed != CLIP_RECIPES["noised"][1].seed and not judge.trained_on_noise
