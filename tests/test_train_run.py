"""``glide-edu train CONFIG``: the shipped configs are the recipes' settings (and train bit for bit as the
recipes do), bad configs are one-line errors before any training, runs resume only when asked, torchrun works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glide_edu import train_run
from glide_edu.cli import main
from glide_edu.nn.unet import UNetConfig
from glide_edu.recipes import CFG_STEPS, DIGITS_TRAIN, NULL_LABEL, diffusion_config, digits_configs, train_digits_cfg
from glide_edu.train import TrainConfig
from glide_edu.train_text import MINI_OPTIONS, MINI_TRAIN


def _train_fields(cfg: TrainConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k not in ("extra", "progress")}


@pytest.mark.parametrize("name, loss, classes", [("digits-simple", "simple", None), ("digits-hybrid", "hybrid", None),
                                                 ("digits-cfg-p10", "hybrid", 11), ("digits-cfg-p20", "hybrid", 11)])
def test_shipped_digits_configs_are_the_recipes(name, loss, classes) -> None:
    config = train_run.check_config(train_run.read_config(name))
    unet, diffusion = digits_configs(loss)
    assert train_run._dataclass(UNetConfig, config["model"], "model") == replace(unet, num_classes=classes)
    assert config["diffusion"] == diffusion == diffusion_config(loss)
    ours = train_run._dataclass(TrainConfig, config["train"], "train")
    steps = CFG_STEPS if classes else DIGITS_TRAIN.steps
    assert _train_fields(ours) == _train_fields(replace(DIGITS_TRAIN, loss_type=loss, steps=steps))
    assert config["data"].get("p_uncond", 0) == {"digits-cfg-p10": 0.1, "digits-cfg-p20": 0.2}.get(name, 0)


def test_shipped_glide_mini_config_is_the_recipe() -> None:
    config = train_run.check_config(train_run.read_config("glide-mini"))
    assert config["model"] == MINI_OPTIONS
    assert _train_fields(train_run._dataclass(TrainConfig, config["train"], "train")) == _train_fields(MINI_TRAIN)
    assert config["data"]["p_uncond"] == 0.2


def test_a_config_trains_bit_for_bit_as_the_recipe(tmp_path, capsys) -> None:
    ours = tmp_path / "ours.safetensors"
    code = main(["train", "digits-cfg-p10", "--set", "train.steps=2", "--set", "train.progress=false",
                 "--out", str(ours)])
    assert code == 0, capsys.readouterr().err
    theirs = train_digits_cfg(0.1, steps=2, out=tmp_path / "recipe.safetensors", progress=False)
    a, b = load_file(ours), load_file(theirs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert NULL_LABEL == 10


def _tiny(tmp_path: Path, **train) -> Path:
    config = {"kind": "unet", "data": {"source": "digits", "labels": False},
              "model": {"image_size": 16, "in_channels": 1, "model_channels": 32, "channel_mult": [1, 2],
                        "num_res_blocks": 1, "attention_resolutions": [8], "learn_sigma": True},
              "train": {"steps": 2, "batch_size": 4, "progress": False, "log_every": 1, **train}}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config))
    return path


def test_resume_is_explicit_and_metrics_go_to_csv(tmp_path, capsys) -> None:
    config, run = _tiny(tmp_path), tmp_path / "run"
    assert main(["train", str(config), "--run-dir", str(run), "--out", str(tmp_path / "a.safetensors")]) == 0
    assert main(["train", str(config), "--run-dir", str(run), "--out", str(tmp_path / "b.safetensors")]) == 1
    assert "already holds a run; add --resume" in capsys.readouterr().err
    with (run / "metrics.csv").open("a") as f:  # a run stopped after logging steps its checkpoint does not hold
        f.write("3,9.0,9.0,0.0,1.0,0,\n4,9.0,9.0,0.0,1.0,0,\n")
    assert main(["train", str(config), "--run-dir", str(run), "--resume", "--set", "train.steps=3",
                 "--out", str(tmp_path / "b.safetensors")]) == 0
    assert json.loads((run / "ckpt-0000003" / "trainer.json").read_text())["train_config"]["precision"] == "fp32"
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss") and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3"]
    assert "9.0" not in rows[3]  # step 3 is the resumed run's, not the stopped run's
    assert (run / "ckpt-0000003").is_dir()


@pytest.mark.parametrize("change, message", [
    ({"kind": "vae"}, "kind = 'vae': choose one of unet, glide"),
    ({"data": {"source": "imagenet"}}, "source = 'imagenet': a unet model trains on digits or folder"),
    ({"train": {"stepz": 3}}, "[train] has unknown key(s) stepz"),
    ({"train": {"lr": -1.0}}, "lr=-1.0 (need a finite value > 0"),
    ({"data": {"source": "digits", "labels": True}}, "num_classes = None but the data need 10"),
    ({"data": {"source": "folder"}}, "needs path = 'my_images/'"),
    ({"extra_key": 1}, "unknown top-level key(s) extra_key"),
])
def test_bad_configs_are_one_line_errors(tmp_path, capsys, change, message) -> None:
    config = json.loads(_tiny(tmp_path).read_text())
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(config))
    assert main(["train", str(path), "--out", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("argv, message", [
    (["train", "no-such-config", "--out", "x"], "no config file no-such-config and no shipped config"),
    (["train", "digits-hybrid"], "give a CONFIG and --out FILE"),
    (["train", "digits-hybrid", "--set", "steps=3", "--out", "x"], "write SECTION.KEY=VALUE"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys) -> None:
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_device_and_precision_flags(tmp_path) -> None:
    out = tmp_path / "bf16.safetensors"
    assert main(["train", str(_tiny(tmp_path)), "--device", "auto", "--precision", "bf16", "--out", str(out)]) == 0
    from glide_edu.pretrained import read_metadata

    assert read_metadata(out)["info"]["config"]["train"]["precision"] == "bf16"


def test_invalid_toml_names_the_file(tmp_path, capsys) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("kind = \n")
    assert main(["train", str(path), "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "broken.toml is not valid TOML" in capsys.readouterr().err


def test_torchrun_trains_a_config_data_parallel(tmp_path) -> None:
    config, out = _tiny(tmp_path, batch_size=4), tmp_path / "ddp.safetensors"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "glide_edu.cli", "train", str(config), "--run-dir", str(tmp_path / "run"),
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from glide_edu.pretrained import read_metadata

    assert read_metadata(out)["info"]["world_size"] == 2
    assert proc.stdout.count("wrote") == 1  # rank 0 wrote the file and said so


def test_a_glide_model_trains_on_a_captioned_folder(tmp_path) -> None:
    from PIL import Image

    from glide_edu.pretrained import load_glide_checkpoint

    folder = tmp_path / "pics"
    folder.mkdir()
    for i, colour in enumerate(("red", "blue", "green")):
        Image.new("RGB", (48, 40), colour).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"a {colour} square")
    config = {"kind": "glide", "data": {"source": "caption-folder", "path": str(folder)},
              "train": {"steps": 1, "batch_size": 2, "progress": False}}
    path = tmp_path / "glide.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "g.safetensors"
    assert main(["train", str(path), "--out", str(out)]) == 0
    model, options = load_glide_checkpoint(out)[:2]
    assert options["image_size"] == 32 and sum(p.numel() for p in model.parameters()) > 1e6


def test_tensorboard_event_files(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    config = json.loads(_tiny(tmp_path, checkpoint_every=1, keep_checkpoints=2).read_text()) | {
        "log": {"tensorboard": True}}
    path = tmp_path / "tb.json"
    path.write_text(json.dumps(config))
    run = tmp_path / "run"
    assert main(["train", str(path), "--run-dir", str(run), "--out", str(tmp_path / "x.safetensors")]) == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    shutil.rmtree(run / "ckpt-0000002")  # as if the run had stopped after logging step 2, before its checkpoint
    with pytest.warns(UserWarning, match="missing or damaged; resuming from ckpt-0000001"):
        assert main(["train", str(path), "--run-dir", str(run), "--out", str(tmp_path / "y.safetensors"),
                     "--resume", "--set", "train.steps=3"]) == 0
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]  # step 2 once: the resumed run's


@pytest.mark.parametrize("kind", ["noised", "clean", "eval"])
def test_shipped_clip_configs_are_the_recipes(kind) -> None:
    from glide_edu.train_clip import CLIP_RECIPES

    config = train_run.check_config(train_run.read_config(f"clip-{kind}"))
    arch, train = train_run.clip_parts(config)
    assert (arch, replace(train, progress=True)) == CLIP_RECIPES[kind]


def test_a_clip_config_trains_and_bad_clip_configs_are_one_line_errors(tmp_path, capsys) -> None:
    from glide_edu.pretrained import read_metadata

    config = train_run.read_config("clip-eval")
    config["train"] |= {"steps": 2, "eval_every": 0, "n_shapes": 64, "progress": False}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    assert main(["train", str(path), "--out", str(tmp_path / "c.safetensors"), "--run-dir", str(tmp_path / "r")]) == 0
    assert read_metadata(tmp_path / "c.safetensors")["info"]["train"]["steps"] == 2
    assert main(["train", str(path), "--out", str(tmp_path / "c.safetensors"), "--run-dir", str(tmp_path / "r")]) == 1
    assert "add --resume" in capsys.readouterr().err
    for change, message in (({"model": {"preset": "huge"}}, "a CLIP preset is one of mini, eval"),
                            ({"model": {"widht": 3}}, "[model] has unknown key(s) widht"),
                            ({"train": {"batch_size": 1}}, "batch_size = 1 (≥ 2)")):
        bad = {**config, **{k: {**config[k], **v} for k, v in change.items()}}
        path.write_text(json.dumps(bad))
        assert main(["train", str(path), "--out", str(tmp_path / "x.safetensors")]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
