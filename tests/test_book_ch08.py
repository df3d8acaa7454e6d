"""Chapter 8's experiments: caption retrieval of noised and clean CLIPs on noised pictures, training curves."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import matplotlib
import pytest

from glide_edu.book import ch08
from glide_edu.shapes import load_shapes
from glide_edu.train_clip import MINI_CLIP, ClipTrainConfig, load_clip_file, train_clip

matplotlib.use("Agg")
TINY = replace(MINI_CLIP, n_embd=32, n_head_state_text=16, n_head_text=2, n_xf_blocks_text=1, n_head_state_image=16,
               n_head_image=2, n_xf_blocks_image=1, patch_size=8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("clips")
    data = load_shapes(64, seed=1)
    out = {}
    for name, noised in (("noised", True), ("clean", False)):
        cfg = ClipTrainConfig(steps=60, batch_size=32, lr=2e-3, warmup=5, noised=noised, progress=False,
                              eval_every=30, n_shapes=64, seed=1)
        out[name] = load_clip_file(train_clip(folder / f"{name}.safetensors", TINY, cfg, data.images, data.captions))
    return out


def test_chance_level_counts_repeated_captions() -> None:
    assert ch08.chance_level(["a", "b", "c", "d"]) == pytest.approx(0.25)
    assert ch08.chance_level(["a", "a", "b", "c"]) == pytest.approx((0.5 + 0.5 + 0.25 + 0.25) / 4)


def test_retrieval_falls_to_chance_as_the_noise_takes_over(clips) -> None:
    data = load_shapes(64, seed=1)
    result = ch08.retrieval_by_noise(clips, data.images, data.captions, timesteps=(0, 999), seeds=(0, 1))
    assert result["t"] == [0, 999] and set(result["clips"]) == {"noised", "clean"}
    chance = result["chance"]
    clean = result["clips"]["clean"]
    assert clean["trained_on_noise"] is False and result["clips"]["noised"]["trained_on_noise"] is True
    assert clean["mean"][0] > chance + 0.3  # it reads clean pictures…
    for row in result["clips"].values():  # …and at t = 999 (√ᾱ ≈ 0.003) nobody can
        assert row["mean"][1] < chance + 0.1
        assert all(lo <= m <= hi for lo, m, hi in zip(row["min"], row["mean"], row["max"], strict=True))


def test_plot_and_bad_timesteps(clips) -> None:
    import matplotlib.pyplot as plt

    data = load_shapes(8, seed=2)
    result = ch08.retrieval_by_noise(clips, data.images, data.captions, timesteps=(0, 500), seeds=(0,))
    fig, ax = plt.subplots()
    ch08.plot_retrieval_by_noise(result, ax)
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() and len(ax.get_legend().texts) == 3
    plt.close(fig)
    with pytest.raises(ValueError, match="0..999"):
        ch08.retrieval_by_noise(clips, data.images, data.captions, timesteps=(1000,))
    with pytest.raises(ValueError, match="at least one"):
        ch08.retrieval_by_noise(clips, data.images, data.captions, seeds=())


def test_training_curve_is_the_recorded_history(clips, tmp_path: Path) -> None:
    data = load_shapes(32, seed=3)
    cfg = ClipTrainConfig(steps=4, batch_size=8, lr=2e-3, warmup=2, progress=False, eval_every=2, n_shapes=32)
    path = train_clip(tmp_path / "c.safetensors", TINY, cfg, data.images, data.captions)
    curve = ch08.training_curve(path)
    assert curve["step"] == [2, 4] and set(curve) == {"step", "t=0", "t=300", "t=600"}
    assert all(0 <= a <= 1 for a in curve["t=0"])
    bare = train_clip(tmp_path / "d.safetensors", TINY, replace(cfg, eval_every=0), data.images, data.captions)
    with pytest.raises(ValueError, match="no retrieval curve"):
        ch08.training_curve(bare)


def test_unknown_clip_name_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="the book ships noised, clean, eval"):
        ch08.shipped_clips(["big"])
