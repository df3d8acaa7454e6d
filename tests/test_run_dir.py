"""Nothing is lost, nothing is silently wrong: the run folder's lock, crash leftovers, damaged checkpoints,
changed options on resume, option validation and up-front checks (tried as a new user would)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from glide_edu.data import load_digits
from glide_edu.nn.unet import UNetConfig, UNetModel
from glide_edu.respace import create_diffusion
from glide_edu.run_dir import RunDirBusy, check_writable, is_intact
from glide_edu.train import TrainConfig, Trainer, latest_checkpoint

CFG = UNetConfig(image_size=16, in_channels=1, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                 attention_resolutions=(8,))
TRAIN = TrainConfig(steps=2, batch_size=4, progress=False, log_every=1)


def _trainer(run_dir: Path | None, config: TrainConfig = TRAIN) -> Trainer:
    torch.manual_seed(0)
    images = load_digits(16, "train")[0][:16]
    diffusion = create_diffusion(100, "cosine", model_var_type="fixed_small")
    return Trainer(UNetModel(CFG), diffusion, images, config, run_dir=run_dir, model_config={"unet": asdict(CFG)},
                   diffusion_config={"steps": 100})


def test_a_second_trainer_on_a_busy_run_folder_is_refused(tmp_path: Path) -> None:
    first = _trainer(tmp_path)  # holds the lock from construction until train() returns
    with pytest.raises(RunDirBusy, match=r"in use by trainer pid \d+; wait for it to finish or give another"):
        _trainer(tmp_path)
    first.train()
    second = _trainer(tmp_path)  # free again: resumes
    assert second.step == 2


def test_the_lock_is_refused_across_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    holder = _trainer(tmp_path)
    code = ("import sys; from glide_edu.run_dir import RunLock, RunDirBusy\n"
            f"try:\n    RunLock({str(tmp_path)!r})\nexcept RunDirBusy as e:\n    print(e); sys.exit(3)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3 and f"trainer pid {os.getpid()}" in result.stdout
    holder.train()


def test_leftover_temporary_folders_are_cleaned_with_a_warning(tmp_path: Path) -> None:
    _trainer(tmp_path).train(steps=1)
    leftover = tmp_path / ".ckpt-0000002.abc123"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"\0" * 1000)
    with pytest.warns(UserWarning, match="removed 1 half-written checkpoint folder"):
        trainer = _trainer(tmp_path)
    assert not leftover.exists() and trainer.step == 1


@pytest.mark.parametrize("damage", ["truncate-optimizer", "truncate-weights", "dangling-latest", "no-latest"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path: Path, damage: str) -> None:
    config = replace(TRAIN, steps=2, checkpoint_every=1, keep_checkpoints=3)
    _trainer(tmp_path, config).train()
    newest = tmp_path / "ckpt-0000002"
    if damage == "truncate-optimizer":
        data = (newest / "optimizer.pt").read_bytes()
        (newest / "optimizer.pt").write_bytes(data[: len(data) // 2])
    elif damage == "truncate-weights":
        data = (newest / "ema.safetensors").read_bytes()
        (newest / "ema.safetensors").write_bytes(data[:100])
    elif damage == "dangling-latest":
        shutil.rmtree(newest)
    else:
        (tmp_path / "latest").unlink()
        shutil.rmtree(newest)
    assert not is_intact(newest)
    with pytest.warns(UserWarning, match="resuming from ckpt-0000001, the newest intact checkpoint"):
        assert latest_checkpoint(tmp_path).name == "ckpt-0000001"
    with pytest.warns(UserWarning):
        resumed = _trainer(tmp_path, config)
    assert resumed.step == 1


def test_no_intact_checkpoint_left_is_one_clear_error(tmp_path: Path) -> None:
    _trainer(tmp_path).train(steps=1)
    (tmp_path / "ckpt-0000001" / "trainer.json").write_text("{")
    with pytest.raises(FileNotFoundError, match="no other checkpoint .* is intact; delete"):
        latest_checkpoint(tmp_path)


def test_changed_options_on_resume_are_applied_and_recorded(tmp_path: Path) -> None:
    _trainer(tmp_path).train(steps=1)
    faster = replace(TRAIN, lr=5e-4, batch_size=8)
    trainer = _trainer(tmp_path, faster)
    assert all(g["lr"] == 5e-4 for g in trainer.optimizer.param_groups)  # applied, not the checkpoint's 2e-4
    trainer.train()
    saved = json.loads((tmp_path / "ckpt-0000002" / "trainer.json").read_text())
    assert saved["train_config"]["lr"] == 5e-4
    assert saved["option_history"] == [{"step": 1, "changed": {"batch_size": [4, 8], "lr": [2e-4, 5e-4]}}]


@pytest.mark.parametrize("key, value", [("seed", 1), ("loss_type", "hybrid"),
                                        ("schedule_sampler", "loss-second-moment")])
def test_run_defining_options_cannot_change_on_resume(tmp_path: Path, key: str, value) -> None:
    _trainer(tmp_path).train(steps=1)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match=f"cannot resume with another {key}"):
        _trainer(tmp_path, replace(TRAIN, **{key: value}))
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("bad, message", [
    ({"steps": 0}, r"steps=0 \(need ≥ 1\)"),
    ({"steps": -1}, r"steps=-1 \(need ≥ 1\)"),
    ({"batch_size": 0}, r"batch_size=0 \(need ≥ 1\)"),
    ({"lr": float("nan")}, r"lr=nan \(need a finite value > 0"),
    ({"lr": 0.0}, r"lr=0.0 \(need a finite value > 0"),
    ({"ema_rate": 1.0}, r"ema_rate=1.0 \(need 0 ≤ rate < 1"),
    ({"grad_clip": -1.0}, r"grad_clip=-1.0"),
])
def test_bad_options_are_refused_before_anything_is_written(tmp_path: Path, bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _trainer(tmp_path / "run", replace(TRAIN, **bad))
    assert not (tmp_path / "run").exists()


def test_unwritable_or_full_destination_is_refused_up_front(tmp_path: Path, monkeypatch) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        _trainer(a_file / "run")
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(OSError, match="MB free but a checkpoint needs about"):
        _trainer(tmp_path / "run")
    assert not (tmp_path / "run").exists()
    check_writable(tmp_path, need_bytes=500)  # enough: no error


def test_a_blow_up_keeps_a_checkpoint_from_before_the_loss_rose(tmp_path: Path) -> None:
    from glide_edu.train import TrainingDiverged

    config = replace(TRAIN, steps=200, checkpoint_every=5, keep_checkpoints=2, blowup_window=5, lr=1e-3)
    trainer = _trainer(tmp_path, config)
    losses: list[float] = []

    def sabotage(t: Trainer, logs: dict) -> None:
        losses.append(logs["loss"])
        if t.step == 40:  # the learning rate jumps: the loss climbs
            for group in t.optimizer.param_groups:
                group["lr"] = 0.1
        if t.step == 60:  # …and then the weights become NaN
            with torch.no_grad():
                next(t.model.parameters()).fill_(float("nan"))

    with pytest.warns(UserWarning, match="no checkpoint is written until it recovers"):
        with pytest.raises(TrainingDiverged, match=r"at step 61; .*the last good checkpoint, ckpt-0000040, is kept"
                                                   r".* lower the learning rate \(lr=0.001 now; try 0.0005\)"):
            trainer.train(callback=sabotage)
    assert max(losses[40:60]) > 3 * min(losses[30:40])  # the loss did climb before the NaN
    assert latest_checkpoint(tmp_path).name == "ckpt-0000040"  # not 45…60: written while the loss climbed


def test_the_divergence_hint_follows_the_configuration() -> None:
    from glide_edu.train_config import divergence_hint

    assert "enable gradient clipping" in divergence_hint(replace(TRAIN, grad_clip=None))
    assert "lower the learning rate (lr=0.0002 now; try 0.0001)" in divergence_hint(TRAIN)


def test_the_blow_up_window_is_resumed_with_the_run(tmp_path: Path) -> None:
    config = replace(TRAIN, steps=12, checkpoint_every=4, blowup_window=5)
    trainer = _trainer(tmp_path, config)
    trainer.train()
    assert len(trainer._recent) == 5
    resumed = _trainer(tmp_path, config)
    assert resumed.step == 12 and resumed._recent == trainer._recent
    assert resumed._best_recent == trainer._best_recent
