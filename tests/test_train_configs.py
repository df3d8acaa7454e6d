"""Every model of GLIDE from one command: the shipped configs build their networks (the official presets exactly
the released ones, counted on the meta device) and the book-scale ones train; the upsampler and inpainting
batches are what the reference feeds; the noisy classifier of chapter 5 is a config too."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from glide_edu import train_run
from glide_edu.cli import main
from glide_edu.inpaint import random_inpaint_masks
from glide_edu.nn.presets import create_glide_model
from glide_edu.train import TrainConfig
from glide_edu.train_text import GlideTask, text_trainer

OFFICIAL = {"glide-base": "base", "glide-upsample": "upsample", "glide-base-inpaint": "base-inpaint",
            "glide-upsample-inpaint": "upsample-inpaint"}
SMALL = sorted(set(train_run.shipped_configs()) - set(OFFICIAL))
TINY_TRAIN = ["--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "train.progress=false"]


@pytest.mark.parametrize("name, kind", sorted(OFFICIAL.items()))
def test_official_presets_are_the_released_networks(name, kind) -> None:
    from glide_edu.hub.registry import CHECKPOINTS

    config = train_run.check_config(train_run.read_config(name))
    options, task, p_uncond = train_run.glide_parts(config)
    released = CHECKPOINTS[kind]
    network_options = {k: v for k, v in released.options.items() if k not in train_run.SAMPLING_OPTIONS}
    assert {k: options[k] for k in network_options} == network_options
    assert options["tokenizer"] == "gpt2" and options["n_vocab"] == 50257
    assert task.kind == kind and p_uncond == (0.0 if task.super_res else 0.2)
    assert task.low_res_size == (64 if task.super_res else 0)
    with torch.device("meta"):  # 385 M parameters without allocating 1.5 GB
        network = create_glide_model(options)
    assert sum(p.numel() for p in network.parameters()) == released.num_parameters
    assert len(network.state_dict()) == (797 if task.super_res else 783)
    train = config["train"]
    assert (train["batch_size"], config["data"]["source"]) == ((512 if task.super_res else 2048), "webdataset")


@pytest.mark.parametrize("name", SMALL)
def test_every_book_scale_config_trains_two_steps(name, tmp_path, capsys) -> None:
    from glide_edu.pretrained import load_glide_checkpoint, read_metadata

    kind = train_run.read_config(name)["kind"]
    extra = {"glide": ["--set", "data.n_shapes=64"], "clip": ["--set", "train.n_shapes=64", "--set",
                                                               "train.eval_every=0"]}.get(kind, [])
    out = tmp_path / "m.safetensors"
    assert main(["train", name, *TINY_TRAIN, *extra, "--out", str(out)]) == 0, capsys.readouterr().err
    meta = read_metadata(out)
    if kind == "glide":
        network, options = load_glide_checkpoint(out)[:2]
        task = GlideTask.from_options(options)
        assert meta["kind"] == f"glide-{task.kind}" and type(network).__name__ == {
            "base": "Text2ImUNet", "upsample": "SuperResText2ImUNet", "base-inpaint": "InpaintText2ImUNet",
            "upsample-inpaint": "SuperResInpaintText2ImUnet"}[task.kind]
        assert network.input_blocks[0][0].in_channels == {"base": 3, "upsample": 6, "base-inpaint": 7,
                                                          "upsample-inpaint": 10}[task.kind]
    elif kind == "classifier":
        from glide_edu.train_classifier import load_classifier

        assert load_classifier(out)[1]["info"]["steps"] == 2
    else:
        assert meta["info"].get("steps", meta["info"].get("train", {}).get("steps")) == 2


def _tiny_options(**task) -> dict:
    from glide_edu.train_text import MINI_OPTIONS

    return {**MINI_OPTIONS, "num_channels": 32, "num_res_blocks": 1, "xf_layers": 1, "text_ctx": 64, **task}


def test_upsampler_and_inpainting_batches_are_the_references() -> None:
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    captions = ["a red square", "a blue circle", "two green triangles"] * 2
    config = TrainConfig(steps=1, batch_size=4, progress=False)
    options = _tiny_options(super_res=True, inpaint=True, noise_schedule="linear")
    trainer = text_trainer(options, images, captions, config, p_uncond=0.0, task=GlideTask.from_options(options, 8))
    x0, kwargs = trainer.batch()
    assert set(kwargs) == {"tokens", "mask", "low_res", "inpaint_image", "inpaint_mask"}
    torch.testing.assert_close(kwargs["low_res"], F.interpolate(x0, size=8, mode="area"))  # (4, 3, 8, 8)
    mask = kwargs["inpaint_mask"]  # (4, 1, 32, 32), 1 = known
    assert mask.shape == (4, 1, 32, 32) and set(mask.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(kwargs["inpaint_image"], x0 * mask) and kwargs["mask"].any(1).all()  # no empty caption
    # the network sees [x_t, x_0·mask, mask, low_res↑] — the released models' channel order
    seen = {}

    def keep_input(module, args) -> None:
        seen["h"] = args[0]

    trainer.model.input_blocks[0].register_forward_pre_hook(keep_input)
    x_t, t = torch.randn_like(x0), torch.zeros(4, dtype=torch.long)
    trainer.model(x_t, t, **kwargs)
    h = seen["h"]
    assert torch.equal(h[:, :3], x_t) and torch.equal(h[:, 3:6], x0 * mask) and torch.equal(h[:, 6:7], mask)
    torch.testing.assert_close(h[:, 7:], F.interpolate(kwargs["low_res"], size=32, mode="bilinear"))
    grid = trainer.grid_kwargs(2)  # fixed rows: the top half kept, the low-res of the first images
    assert torch.equal(grid["inpaint_mask"][0, 0, :16], torch.ones(16, 32)) and grid["low_res"].shape == (2, 3, 8, 8)


def test_random_inpaint_masks_erase_rectangles_and_strokes() -> None:
    masks = random_inpaint_masks(200, 32, torch.Generator().manual_seed(0))  # (200, 1, 32, 32)
    assert torch.equal(masks, random_inpaint_masks(200, 32, torch.Generator().manual_seed(0)))
    kept = masks.mean((1, 2, 3))
    assert (kept > 0.2).all() and (kept < 1).all()  # something erased, most of the picture known
    erased = masks[:, 0] == 0
    rows, cols = erased.any(2), erased.any(1)
    box = rows.sum(1) * cols.sum(1)  # the erased region's bounding box area
    rectangles = (box == erased.sum((1, 2))).float().mean()
    assert 0.3 < rectangles < 0.8  # about half are rectangles (a short stroke can be one too)


def test_the_classifier_configs_are_the_recipe(tmp_path, capsys) -> None:
    from safetensors.torch import load_file

    from glide_edu.train_classifier import (
        CLASSIFIER_STEPS,
        CLEAN_CLASSIFIER_STEPS,
        DIGITS_CLASSIFIER,
        ClassifierTrainConfig,
        train_and_save_classifier,
    )

    for name, noised, steps in (("classifier-noisy", True, CLASSIFIER_STEPS),
                                ("classifier-clean", False, CLEAN_CLASSIFIER_STEPS)):
        model, train, diffusion = train_run.classifier_parts(train_run.read_config(name))
        assert model == DIGITS_CLASSIFIER and diffusion is None
        assert train == ClassifierTrainConfig(steps=steps, noised=noised)
    ours, run = tmp_path / "ours.safetensors", tmp_path / "run"
    assert main(["train", "classifier-noisy", "--set", "train.steps=2", "--set", "train.progress=false",
                 "--set", "train.log_every=1", "--run-dir", str(run), "--out", str(ours)]) == 0
    theirs = train_and_save_classifier(True, steps=2, out=tmp_path / "recipe.safetensors", progress=False)
    a, b = load_file(ours), load_file(theirs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (run / "metrics.csv").read_text().splitlines()[0] == "step,loss,accuracy"
    assert main(["train", "classifier-noisy", "--resume", "--out", str(ours)]) == 1
    assert "keeps no checkpoints to resume" in capsys.readouterr().err


@pytest.mark.parametrize("kind, change, message", [
    ("glide", {"model": {"superres": True}}, "[model] has unknown GLIDE option(s) superres"),
    ("glide", {"model": {"use_fp16": True}}, "[model] use_fp16: sampling-time options do not belong"),
    ("glide", {"data": {"low_res_size": 8}}, "low_res_size is for upsamplers; set [model] super_res = true"),
    ("glide", {"model": {"super_res": True}, "data": {"low_res_size": 32}}, "must be smaller than its image_size 32"),
    ("glide", {"data": {"p_uncond": 1.0}}, "p_uncond = 1.0: give a probability in [0, 1)"),
    ("glide", {"data": {"path": "x"}}, "[data] has unknown key(s) path for source = 'book-captions'"),
    ("classifier", {"model": {"in_channels": 3}}, "in_channels = 3, num_classes = 10: the digits are grey"),
    ("classifier", {"train": {"lr": 0}}, "lr = 0 (> 0)"),
    ("classifier", {"data": {"source": "folder"}}, "a classifier model trains on digits"),
])
def test_bad_glide_and_classifier_configs_are_one_line_errors(tmp_path, capsys, kind, change, message) -> None:
    config = train_run.read_config("glide-mini" if kind == "glide" else "classifier-noisy")
    for section, values in change.items():
        config[section] = {**config.get(section, {}), **values}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    assert main(["train", str(path), "--out", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_the_list_names_every_config_and_its_kind(capsys) -> None:
    assert main(["train", "--list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    listed = {row.split()[0]: row.split()[1] for row in rows[1:]}
    assert listed == {name: train_run.read_config(name)["kind"] for name in train_run.shipped_configs()}
    assert {"glide-base", "glide-upsample-inpaint", "glide-mini-upsample", "classifier-noisy"} <= set(listed)
