"""The chapter-6 sweep and widget functions on a tiny untrained class-conditional model (fast, no shipped files)."""

from __future__ import annotations

import json

import pytest
import torch

from glide_edu.book import ch06 as cx
from glide_edu.fileio import sha256_file
from glide_edu.nn.unet import UNetConfig, UNetModel
from glide_edu.pretrained import save_small_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> cx.CfgModel:
    torch.manual_seed(0)
    cfg = UNetConfig(
        image_size=16,
        in_channels=1,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        learn_sigma=True,
        num_classes=11,
    )
    model = UNetModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    diffusion = {"steps": 1000, "noise_schedule": "cosine", "model_var_type": "learned_range"}
    path = tmp_path_factory.mktemp("cfg") / "tiny.safetensors"
    save_small_checkpoint(path, model, cfg, diffusion, {"null_label": 10, "steps": 0})
    return cx.CfgModel(path)


def test_cfg_grid_is_a_pure_function_of_its_settings(tiny) -> None:
    a, read_a = cx.cfg_grid(tiny, 3, 2.0, n=6, steps=3)
    b, read_b = cx.cfg_grid(tiny, 3, 2.0, n=6, steps=3)
    c, _ = cx.cfg_grid(tiny, 3, 5.0, n=6, steps=3)
    assert a.shape == (6, 1, 16, 16) and torch.equal(a, b) and read_a == read_b
    assert not torch.equal(a, c)  # only s changed
    assert 0.0 <= read_a["accuracy"] <= 1.0 and read_a["diversity"] >= 0.0


@pytest.mark.parametrize("digit", [-1, 10, 2.5, True])
def test_cfg_grid_rejects_bad_digits(tiny, digit) -> None:
    with pytest.raises(ValueError, match="digit must be an integer 0…9"):
        cx.cfg_grid(tiny, digit, 1.0, n=2, steps=2)


def test_cfg_grid_rejects_negative_scale(tiny) -> None:
    with pytest.raises(ValueError, match="guidance_scale must be a finite number >= 0"):
        cx.cfg_grid(tiny, 1, -2.0, n=2, steps=2)


def test_sweep_structure_and_results_round_trip(tiny, tmp_path) -> None:
    res = cx.cfg_sweep(
        scales=(0.0, 2.0), p_unconds=(0.1,), n_samples=20, steps=2, checkpoints={0.1: tiny.path}, progress=False
    )
    assert res["schema"] == cx.CFG_SCHEMA
    row = res["results"]["0.1"]
    assert set(row) == {"0", "2"}
    assert set(row["2"]) == {"fid_proxy", "precision", "recall", "accuracy", "diversity"}
    assert res["provenance"]["checkpoints"]["0.1"]["sha256"] == sha256_file(tiny.path)
    assert res["provenance"]["command"].startswith("python -m glide_edu.book regenerate ch06")
    path = tmp_path / "r.json"
    path.write_text(json.dumps(res))
    assert cx.load_cfg_results(path, check_checkpoints=False)["results"] == res["results"]
    path.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="schema"):
        cx.load_cfg_results(path)
    with pytest.raises(FileNotFoundError, match="regenerate"):
        cx.load_cfg_results(tmp_path / "missing.json")


def test_cfg_recipe_writes_a_class_conditional_checkpoint(tmp_path) -> None:
    from glide_edu.pretrained import read_metadata
    from glide_edu.recipes import NULL_LABEL, cfg_checkpoint_name, train_digits_cfg

    assert cfg_checkpoint_name(0.1) == "digits_cfg_p10" and cfg_checkpoint_name(0.2) == "digits_cfg_p20"
    with pytest.raises(ValueError, match="p_uncond must lie strictly between 0 and 1"):
        train_digits_cfg(1.0, steps=1, out=tmp_path / "x.safetensors")
    path = train_digits_cfg(0.2, steps=1, out=tmp_path / "c.safetensors", progress=False)
    meta = read_metadata(path)
    assert meta["model_config"]["num_classes"] == NULL_LABEL + 1 == 11
    assert meta["diffusion_config"]["model_var_type"] == "learned_range"
    assert meta["info"]["p_uncond"] == 0.2 and meta["info"]["command"].endswith("--p-uncond 0.2")


def test_fine_tuning_curve_rows(tiny, tmp_path) -> None:
    import shutil

    (tmp_path / "snapshots").mkdir()
    for step in (1, 2):
        shutil.copy(tiny.path, tmp_path / "snapshots" / f"ema-step-{step:07d}.safetensors")
    res = cx.cfg_training_curve({0.1: tmp_path}, every=2, n=20, steps=2, seeds=(0, 1), scales=(1.0, 3.0))
    rows = res["curves"]["0.1"]
    assert [(r["step"], r["scale"], r["seed"]) for r in rows] == [(2, 1.0, 0), (2, 1.0, 1), (2, 3.0, 0), (2, 3.0, 1)]
    assert {"fid_proxy", "accuracy", "diversity"} <= set(rows[0]) and rows[0]["fid_proxy"] != rows[1]["fid_proxy"]
    assert res["schema"] == cx.CURVE_SCHEMA and "0.1" in res["provenance"]["checkpoints"]


def test_curve_extend_measures_only_new_snapshots(tiny, tmp_path) -> None:
    import shutil

    (tmp_path / "snapshots").mkdir()
    shutil.copy(tiny.path, tmp_path / "snapshots" / "ema-step-0000002.safetensors")
    kw = dict(every=2, n=20, steps=2, seeds=(0,), scales=(1.0,))
    first = cx.cfg_training_curve({0.1: tmp_path}, **kw)
    first["curves"]["0.1"][0]["fid_proxy"] = -1.0  # a marker: a kept row is not measured again
    shutil.copy(tiny.path, tmp_path / "snapshots" / "ema-step-0000004.safetensors")
    both = cx.cfg_training_curve({0.1: tmp_path}, extend=first, **kw)
    rows = both["curves"]["0.1"]
    assert [r["step"] for r in rows] == [2, 4] and rows[0]["fid_proxy"] == -1.0 and rows[1]["fid_proxy"] > 0
    assert both["provenance"]["extends"] == first["provenance"]
    with pytest.raises(ValueError, match="cannot extend a result measured with"):
        cx.cfg_training_curve({0.1: tmp_path}, extend=first, **(kw | {"n": 30}))
