"""``glide-edu train --init-from FILE``: a run that starts from a file's weights (glide_edu.warm_start)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glide_edu.cli import main
from glide_edu.fileio import sha256_file
from glide_edu.pretrained import read_metadata, shipped_checkpoint
from glide_edu.train_kinds import glide_parts
from glide_edu.train_run import build, read_config
from glide_edu.warm_start import check_options, warm_start


def _config(tmp_path: Path, name: str = "tiny.json", channels: int = 32, **train) -> Path:
    config = {"kind": "unet", "data": {"source": "digits", "labels": False},
              "model": {"image_size": 16, "in_channels": 1, "model_channels": channels, "channel_mult": [1, 2],
                        "num_res_blocks": 1, "attention_resolutions": [8], "learn_sigma": True},
              "train": {"steps": 2, "batch_size": 4, "progress": False, "log_every": 1, **train}}
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def trained(tmp_path: Path) -> Path:
    """A tiny UNet trained for 3 steps at a large learning rate (weights far from a fresh network's)."""
    out = tmp_path / "a.safetensors"
    assert main(["train", str(_config(tmp_path, steps=3, lr=1e-2)), "--out", str(out)]) == 0
    return out


def test_the_network_and_its_ema_start_from_the_file(tmp_path: Path, trained: Path) -> None:
    config = read_config(_config(tmp_path, seed=7))
    fresh, _ = build(config, None)
    file = load_file(trained)
    far = max((fresh.model.state_dict()[k] - v.float()).abs().max().item() for k, v in file.items())
    assert far > 1e-3  # another seed's fresh network differs from the file
    kept = warm_start(fresh, trained)
    assert kept == {"file": "a.safetensors", "sha256": sha256_file(trained), "step": 3}
    for state in (fresh.model.state_dict(), fresh.ema.module.state_dict()):
        assert all(torch.equal(state[k], v.float()) for k, v in file.items())


def test_a_warm_started_run_trains_from_the_file_and_records_it(tmp_path: Path, trained: Path, capsys) -> None:
    run, out = tmp_path / "run", tmp_path / "b.safetensors"
    config = _config(tmp_path, "slow.json", lr=1e-9, steps=1)  # a step this small leaves the weights in place
    assert main(["train", str(config), "--init-from", str(trained), "--run-dir", str(run), "--out", str(out)]) == 0
    a, b = load_file(trained), load_file(out)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)
    info = read_metadata(out)["info"]
    assert info["init_from"]["sha256"] == sha256_file(trained) and info["steps"] == 1
    # continuing: --resume alone keeps the record; --init-from on a run that has steps is refused
    assert main(["train", str(config), "--init-from", str(trained), "--run-dir", str(run), "--resume",
                 "--set", "train.steps=2", "--out", str(out)]) == 1
    assert "continue it with --resume alone" in capsys.readouterr().err
    assert main(["train", str(config), "--run-dir", str(run), "--resume", "--set", "train.steps=2",
                 "--out", str(out)]) == 0
    assert read_metadata(out)["info"]["init_from"]["file"] == "a.safetensors"


def test_a_torch_state_dict_file_works_too(tmp_path: Path, trained: Path) -> None:
    pt = tmp_path / "a.pt"
    torch.save({k: v.float() for k, v in load_file(trained).items()}, pt)
    fresh, _ = build(read_config(_config(tmp_path)), None)
    assert warm_start(fresh, pt)["step"] is None
    assert torch.equal(fresh.model.state_dict()["out.2.weight"], load_file(trained)["out.2.weight"].float())


@pytest.mark.parametrize("make, message", [
    (lambda d, t: d / "nothing.safetensors", "no such file"),
    (lambda d, t: (d / "x.pt", torch.save([1, 2], d / "x.pt"))[0], "not a state dict"),
    (lambda d, t: (d / "w.bin", (d / "w.bin").write_bytes(b"0"))[0], "expected a .safetensors or .pt"),
])
def test_bad_files_are_one_line_errors(tmp_path: Path, trained: Path, capsys, make, message) -> None:
    argv = ["train", str(_config(tmp_path)), "--init-from", str(make(tmp_path, trained)), "--out",
            str(tmp_path / "o.safetensors")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_file_of_another_network_is_refused_by_name_and_shape(tmp_path: Path, trained: Path, capsys) -> None:
    argv = ["train", str(_config(tmp_path, "wide.json", channels=64)), "--init-from", str(trained),
            "--out", str(tmp_path / "o.safetensors")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "does not fit this network" in err and "of another shape" in err and "vs model (256, 64)" in err


def test_a_started_run_without_checkpoint_asks_for_its_file_again(tmp_path: Path, trained: Path) -> None:
    fresh, _ = build(read_config(_config(tmp_path)), tmp_path / "run")
    warm_start(fresh, trained)
    again, _ = build(read_config(_config(tmp_path)), tmp_path / "run2")
    again.run_dir = tmp_path / "run"  # the same folder, reopened before any checkpoint was written
    with pytest.raises(ValueError, match="was started from a.safetensors but holds no checkpoint yet"):
        warm_start(again, None)


def test_options_must_agree_and_the_shipped_miniature_fits_its_config() -> None:
    options = glide_parts(read_config("glide-mini"))[0]
    check_options("glide_mini_base.safetensors", read_metadata(shipped_checkpoint("glide_mini_base")), options)
    with pytest.raises(ValueError, match=r"trained with tokenizer='bytes' \(config: 'clip'\)"):
        check_options("f", {"options": {**options, "tokenizer": "bytes"}}, options)
    check_options("f", {"options": {**options, "x0_prior_mean": [0.5, 0.5, 0.5]}}, options)  # set after training


def test_continue_steps_takes_over_the_files_step(tmp_path: Path, trained: Path, capsys) -> None:
    run, out = tmp_path / "run", tmp_path / "c.safetensors"
    config = _config(tmp_path, "more.json", steps=5, snapshot_every=1)
    assert main(["train", str(config), "--continue-steps", "--out", str(out)]) == 1
    assert "--continue-steps goes with --init-from" in capsys.readouterr().err
    assert main(["train", str(config), "--init-from", str(trained), "--continue-steps", "--run-dir", str(run),
                 "--out", str(out)]) == 0
    assert read_metadata(out)["info"]["steps"] == 5  # steps 4 and 5 after the file's 3
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
        "ema-step-0000004.safetensors", "ema-step-0000005.safetensors"]
    assert [r.split(",")[0] for r in (run / "metrics.csv").read_text().splitlines()[1:]] == ["4", "5"]


def test_a_continued_ema_keeps_averaging_into_the_files_weights(tmp_path: Path, trained: Path) -> None:
    trainer, _ = build(read_config(_config(tmp_path, steps=4, lr=1e-2, ema_rate=0.99)), None)
    warm_start(trainer, trained, continue_steps=True)
    assert trainer.step == 3 and int(trainer.ema.n_averaged) == 3
    start = {k: v.float() for k, v in load_file(trained).items()}
    trainer.train()  # one step: 3 → 4
    model, ema = trainer.model.state_dict(), trainer.ema.module.state_dict()
    moved = sum((model[k] - v).abs().sum().item() for k, v in start.items())
    ema_moved = sum((ema[k] - v).abs().sum().item() for k, v in start.items())
    assert 0 < ema_moved < 0.05 * moved  # averaged in with weight 0.01, not copied from the network


def test_the_shipped_miniature_continues_its_recipe_through_the_cli(tmp_path: Path) -> None:
    """The command chapter 7 and docs/checkpoints.md give, one step long on a small slice of the data."""
    shipped = shipped_checkpoint("glide_mini_base")
    step = read_metadata(shipped)["info"]["step"]  # the shipped EMA's training step
    out = tmp_path / "more.safetensors"
    assert main(["train", "glide-mini", "--init-from", str(shipped), "--continue-steps", "--run-dir",
                 str(tmp_path / "run"), "--out", str(out), "--set", "data.n_shapes=64", "--set", "train.batch_size=2",
                 "--set", f"train.steps={step + 1}", "--set", "train.progress=false"]) == 0
    meta = read_metadata(out)
    assert meta["info"]["steps"] == step + 1 and meta["info"]["init_from"]["sha256"] == sha256_file(shipped)
    assert meta["info"]["init_from"]["step"] == step
    assert meta["options"]["tokenizer"] == "clip"
