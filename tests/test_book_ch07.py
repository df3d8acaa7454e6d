"""Chapter 7's measurement of the miniature: oracle scores and the training curve (on a 2-step toy run)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from glide_edu.book import ch07
from glide_edu.shapes import HELDOUT_PAIRS
from glide_edu.train_text import MINI_OPTIONS, MINI_TRAIN, train_mini

SMALL = {**MINI_OPTIONS, "num_channels": 32, "num_head_channels": 32, "num_res_blocks": 1, "xf_width": 32,
         "xf_layers": 1}


def test_evaluation_prompts_are_fixed_and_heldout_ones_use_unseen_pairs() -> None:
    assert ch07.shapes_prompts(20) == ch07.shapes_prompts(20)
    held = ch07.shapes_prompts(20, "heldout")
    assert all(any(f"{c} {s}" in p for c, s in HELDOUT_PAIRS) for p in held)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    cfg = replace(MINI_TRAIN, batch_size=4, checkpoint_every=0)
    train_mini(run / "final.safetensors", run, steps=2, n_shapes=32, snapshot_every=1, options=SMALL, config=cfg,
               progress=False)
    return run


def test_curve_has_a_row_per_snapshot_scale_seed_and_split(toy_run: Path) -> None:
    curve = ch07.mini_training_curve(toy_run, every=1, n=3, seeds=(0,), scales=(1.0, 3.0), steps=2)
    rows = curve["rows"]
    assert len(rows) == 2 * 2 * 1 * 2  # snapshots × scales × seeds × splits
    assert {r["step"] for r in rows} == {1, 2} and {r["split"] for r in rows} == {"train", "heldout"}
    assert all(0.0 <= r["caption"] <= 1.0 for r in rows)
    assert curve["schema"] == ch07.CURVE_SCHEMA and curve["config"]["every"] == 1


def test_oracle_scores_repeat_with_the_seed(toy_run: Path) -> None:
    from glide_edu.pipelines.mini import mini_text2im

    pipe = mini_text2im(toy_run / "final.safetensors")
    prompts = ch07.shapes_prompts(3)
    a = ch07.sample_prompts(pipe, prompts, 3.0, steps=2, seed=5)
    b = ch07.sample_prompts(pipe, prompts, 3.0, steps=2, seed=5)
    assert a.shape == (3, 3, 32, 32) and (a == b).all()


def test_curve_extension_measures_only_new_snapshots(toy_run: Path, monkeypatch) -> None:
    first = ch07.mini_training_curve(toy_run, every=2, n=2, seeds=(0,), scales=(3.0,), steps=2)
    assert {r["step"] for r in first["rows"]} == {2}
    measured = []
    real = ch07.oracle_scores
    monkeypatch.setattr(ch07, "oracle_scores", lambda *a, **k: measured.append(1) or real(*a, **k))
    again = ch07.mini_training_curve(toy_run, every=1, n=2, seeds=(0,), scales=(3.0,), steps=2, extend=first)
    assert [r["step"] for r in again["rows"]] == [1, 1, 2, 2]  # step 1 measured now, step 2 kept, sorted
    assert len(measured) == 2  # two splits of the one new snapshot
    assert again["provenance"]["extends"] == first["provenance"] and "extends" not in first["provenance"]
    with pytest.raises(ValueError, match="measure it anew"):
        ch07.mini_training_curve(toy_run, every=1, n=3, seeds=(0,), scales=(3.0,), steps=2, extend=first)


def test_regenerate_needs_exactly_one_product(capsys) -> None:
    with pytest.raises(SystemExit):
        ch07.regenerate([])
    with pytest.raises(SystemExit):
        ch07.regenerate(["--sweep", "--explorer"])
    assert "one of the arguments" in capsys.readouterr().err


def test_caption_use_curve_has_a_row_per_snapshot_and_seed(toy_run: Path) -> None:
    curve = ch07.caption_use_curve(toy_run, every=1, n=8, seeds=(0, 1))
    _, _, source = ch07.held_out_pictures(8)
    name = max(("emoji", "shapes"), key=source.count)
    rows = [r for r in curve["rows"] if r["source"] == name]
    assert [(r["step"], r["seed"]) for r in rows] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert all(r["own"] > 0 and r["other_over_own"] > 0 for r in rows)
    assert rows[0]["own"] != rows[1]["own"]  # another noise seed, another estimate
    assert {r["source"] for r in curve["rows"]} <= {"emoji", "shapes"}
    for name in ("emoji", "shapes"):  # each source on its own, when it has two pictures or more
        part = [r for r in curve["rows"] if r["source"] == name]
        assert len(part) == (4 if source.count(name) >= 2 else 0) and all(r["n"] == source.count(name) for r in part)
    assert curve["schema"] == ch07.CAPTION_USE_SCHEMA


def test_caption_use_extension_measures_only_new_snapshots(toy_run: Path, monkeypatch) -> None:
    first = ch07.caption_use_curve(toy_run, every=2, n=8, seeds=(0,))
    assert {r["step"] for r in first["rows"]} == {2}
    loaded = []
    import glide_edu.pipelines.mini as mini

    monkeypatch.setattr(mini, "load_mini_model", lambda path, _real=mini.load_mini_model: loaded.append(path.name)
                        or _real(path))
    again = ch07.caption_use_curve(toy_run, every=1, n=8, seeds=(0,), extend=first)
    assert loaded == [ch07.snapshots(toy_run)[1].name]  # only the snapshot the first result lacks
    assert [r for r in again["rows"] if r["step"] == 2] == first["rows"]
    assert sorted({r["step"] for r in again["rows"]}) == [1, 2]
    assert again["provenance"]["extends"] == first["provenance"]
    with pytest.raises(ValueError, match="measure it anew"):
        ch07.caption_use_curve(toy_run, every=1, n=8, seeds=(0, 1), extend=first)


def test_top_of_schedule_measures_why_the_miniature_needs_the_prior() -> None:
    top = ch07.top_of_schedule(ch07.mini_text2im(), n=4)
    mu = top["data_mean"]
    gap = {k: sum(abs(a - b) for a, b in zip(v, mu, strict=True)) / 3 for k, v in top["sample_mean"].items()}
    assert abs(top["raw_x0_at_T"]) > 1.0
    assert top["x0_mean_real"] > top["x0_mean_zero"] + 0.2
    assert gap["plain"] > 0.3 and gap["prior"] < 0.1, gap
