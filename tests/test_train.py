"""The training loop: it learns, is deterministic, resumes exactly, and refuses bad input."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from glide_edu.data import load_digits
from glide_edu.nn.unet import UNetConfig, UNetModel
from glide_edu.respace import create_diffusion
from glide_edu.train import TrainConfig, Trainer, TrainingDiverged, latest_checkpoint


def _setup(learn_sigma: bool = False, **train_kw):
    cfg = UNetConfig(
        image_size=16,
        in_channels=1,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        learn_sigma=learn_sigma,
    )
    torch.manual_seed(0)
    model = UNetModel(cfg)
    var = "learned_range" if learn_sigma else "fixed_small"
    diffusion = create_diffusion(100, "cosine", model_var_type=var)
    images, _ = load_digits(16, "train")
    kw = dict(steps=4, batch_size=8, progress=False, log_every=1) | train_kw
    return model, diffusion, images[:64], TrainConfig(**kw), {"unet": asdict(cfg)}, {"steps": 100, "var": var}


def test_loss_decreases_on_digits() -> None:
    model, diffusion, images, config, mc, dc = _setup(steps=60, batch_size=16, lr=1e-3)
    trainer = Trainer(model, diffusion, images, config, model_config=mc, diffusion_config=dc)
    history = trainer.train()
    first = sum(h["loss"] for h in history[:10]) / 10
    last = sum(h["loss"] for h in history[-10:]) / 10
    assert last < 0.7 * first


def test_deterministic_and_resume_is_exact(tmp_path) -> None:
    runs = []
    for _ in range(2):
        model, diffusion, images, config, mc, dc = _setup(learn_sigma=True, schedule_sampler="loss-second-moment")
        trainer = Trainer(model, diffusion, images, config, model_config=mc, diffusion_config=dc)
        runs.append([h["loss"] for h in trainer.train()])
        final = {k: v.clone() for k, v in trainer.ema_model.state_dict().items()}
    assert runs[0] == runs[1]
    # 2 steps, save, new process-like Trainer resumes, 2 more steps → same as 4 uninterrupted
    model, diffusion, images, config, mc, dc = _setup(learn_sigma=True, schedule_sampler="loss-second-moment")
    Trainer(model, diffusion, images, config, run_dir=tmp_path, model_config=mc, diffusion_config=dc).train(steps=2)
    assert latest_checkpoint(tmp_path).name == "ckpt-0000002"
    model, diffusion, images, config, mc, dc = _setup(learn_sigma=True, schedule_sampler="loss-second-moment")
    resumed = Trainer(model, diffusion, images, config, run_dir=tmp_path, model_config=mc, diffusion_config=dc)
    assert resumed.step == 2
    resumed.train()
    for k, v in resumed.ema_model.state_dict().items():
        torch.testing.assert_close(v, final[k], rtol=0, atol=0)
    assert latest_checkpoint(tmp_path).name == "ckpt-0000004"


def test_resume_refuses_another_config_and_overwrites_nothing(tmp_path) -> None:
    model, diffusion, images, config, mc, dc = _setup()
    Trainer(model, diffusion, images, config, run_dir=tmp_path, model_config=mc, diffusion_config=dc).train(steps=1)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="different diffusion_config"):
        Trainer(model, diffusion, images, config, run_dir=tmp_path, model_config=mc, diffusion_config={"steps": 50})
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path) -> None:
    model, diffusion, images, config, mc, dc = _setup()
    trainer = Trainer(model, diffusion, images, config, run_dir=tmp_path, model_config=mc, diffusion_config=dc)
    trainer.train(steps=1)
    good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        trainer.train(steps=3)
    assert latest_checkpoint(tmp_path).name == "ckpt-0000001"
    fresh, *_ = _setup()
    resumed = Trainer(fresh, diffusion, images, config, run_dir=tmp_path, model_config=mc, diffusion_config=dc)
    for k, v in resumed.model.state_dict().items():
        torch.testing.assert_close(v, good[k])


def test_bad_datasets_are_refused() -> None:
    model, diffusion, images, config, mc, dc = _setup()
    with pytest.raises(ValueError, match="empty"):
        Trainer(model, diffusion, images[:0], config)
    with pytest.raises(ValueError, match="model expects"):
        Trainer(model, diffusion, torch.zeros(4, 3, 16, 16), config)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        Trainer(model, diffusion, images * 255, config)
    with pytest.raises(ValueError, match="labels"):
        Trainer(model, diffusion, images, config, labels=torch.zeros(3, dtype=torch.long))


def _averaged_sequence(avg_fn, snapshots: list[torch.Tensor]) -> torch.Tensor:
    """Run AveragedModel over a sequence of weight snapshots of a one-parameter module."""
    from torch.optim.swa_utils import AveragedModel

    module = torch.nn.Linear(1, 3, bias=False)
    avg = AveragedModel(module, multi_avg_fn=avg_fn, use_buffers=True)
    for w in snapshots:
        with torch.no_grad():
            module.weight.copy_(w)
        avg.update_parameters(module)
    return avg.module.weight.detach()


def test_ema_without_warmup_is_torchs_ema_bit_for_bit() -> None:
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    from glide_edu.train import ema_update_fn

    snaps = [torch.randn(3, 1, generator=torch.Generator().manual_seed(i)) for i in range(30)]
    ours = _averaged_sequence(ema_update_fn(0.9), snaps)
    torchs = _averaged_sequence(get_ema_multi_avg_fn(0.9), snaps)
    assert torch.equal(ours, torchs)  # the shipped recipes (no warm-up) are unchanged


def test_ema_warmup_matches_the_closed_form_weights() -> None:
    from glide_edu.train import ema_decay, ema_update_fn

    snaps = [torch.randn(3, 1, generator=torch.Generator().manual_seed(i)).double() for i in range(40)]
    got = _averaged_sequence(ema_update_fn(0.95, warmup=True), [s.float() for s in snaps])
    # θ_ema after n snapshots = Σ_i w_i θ_i with w from the decays d_1..d_{n-1} (the first update copies)
    weights = [1.0]
    for n in range(1, len(snaps)):
        d = min(0.95, (1 + n) / (10 + n))
        assert ema_decay(0.95, n, warmup=True) == d
        weights = [w * d for w in weights] + [1 - d]
    expected = sum(w * s for w, s in zip(weights, snaps, strict=True))
    assert abs(sum(weights) - 1) < 1e-12
    torch.testing.assert_close(got, expected.float(), atol=1e-6, rtol=1e-6)
    # early on the warm-up forgets the start far faster than the plain rate would
    assert weights[0] < 1e-6 < 0.95 ** 39
    assert ema_decay(0.95, 1000, warmup=True) == 0.95 and ema_decay(0.95, 0, warmup=False) == 0.95


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_ema_rate_outside_unit_interval_is_refused(rate: float) -> None:
    model, diffusion, images, config, mc, dc = _setup(ema_rate=rate)
    with pytest.raises(ValueError, match=r"ema_rate=.* \(need 0 ≤ rate < 1"):
        Trainer(model, diffusion, images, config)


def test_ema_warmup_in_the_trainer_tracks_the_young_model() -> None:
    dists = {}
    for warmup in (False, True):
        model, diffusion, images, config, mc, dc = _setup(steps=20, batch_size=8, lr=1e-3, ema_warmup=warmup)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        trainer = Trainer(model, diffusion, images, config)
        trainer.train()
        ema, raw = trainer.ema_model.state_dict(), trainer.model.state_dict()
        dists[warmup] = sum(float((ema[k] - raw[k]).norm()) for k in start if start[k].is_floating_point())
    assert dists[True] < 0.5 * dists[False]


def test_periodic_sample_grids_are_written_and_leave_training_unchanged(tmp_path) -> None:
    from PIL import Image

    model, diffusion, images, config, mc, dc = _setup(steps=4, sample_every=2, sample_count=6, sample_steps=5)
    trainer = Trainer(model, diffusion, images, config, run_dir=tmp_path, model_config=mc, diffusion_config=dc)
    losses = [h["loss"] for h in trainer.train()]
    grids = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert grids == ["step-0000002.png", "step-0000004.png"]  # no temporary files left behind
    with Image.open(tmp_path / "samples" / grids[-1]) as im:
        assert im.size == (3 * 17 + 1, 2 * 17 + 1)  # 6 images of 16×16, 3 per row, 1-pixel padding
    samples = trainer.last_samples
    assert samples.shape == (6, 1, 16, 16) and samples.abs().max() <= 1 and torch.isfinite(samples).all()
    assert torch.equal(trainer.sample_grid(), samples)  # the same fixed noise at every call
    # drawing grids uses its own generator: the training run is the same without them
    model, diffusion, images, config, mc, dc = _setup(steps=4)
    assert [h["loss"] for h in Trainer(model, diffusion, images, config).train()] == losses


def test_sample_grids_of_a_class_conditional_run_cycle_through_the_labels() -> None:
    cfg = UNetConfig(image_size=16, in_channels=1, model_channels=32, channel_mult=(1,), num_res_blocks=1,
                     attention_resolutions=(), num_classes=3)
    model = UNetModel(cfg)
    seen = []
    original = model.forward
    model.forward = lambda x, t, y=None: (seen.append(y), original(x, t, y=y))[1]
    diffusion = create_diffusion(20, "cosine", model_var_type="fixed_small")
    images, labels = load_digits(16, "train")
    keep = labels < 3
    config = TrainConfig(steps=1, batch_size=4, progress=False, sample_every=1, sample_count=5, sample_steps=2)
    trainer = Trainer(model, diffusion, images[keep][:32], config, labels=labels[keep][:32])
    trainer.train()
    assert trainer.last_samples.shape == (5, 1, 16, 16)
    assert seen[-1].tolist() == [0, 1, 2, 0, 1]


@pytest.mark.parametrize("bad", [{"sample_every": -1}, {"sample_every": 5, "sample_count": 0},
                                 {"sample_every": 5, "sample_steps": 0}, {"sample_every": 5, "sample_steps": 101}])
def test_bad_sampling_options_are_refused(bad: dict) -> None:
    model, diffusion, images, config, mc, dc = _setup(**bad)
    with pytest.raises(ValueError, match="need sample_every ≥ 0"):
        Trainer(model, diffusion, images, config)


def test_grid_settings_are_not_checked_when_no_grids_are_drawn() -> None:
    model, diffusion, images, config, mc, dc = _setup(sample_steps=500)  # > the 100-step process, but grids are off
    Trainer(model, diffusion, images, config).train()


def test_ema_snapshots_are_loadable_small_checkpoints(tmp_path) -> None:
    from glide_edu.pretrained import load_small_checkpoint

    model, diffusion, images, config, mc, _ = _setup(snapshot_every=2, ema_warmup=True)
    dc = {"steps": 100, "noise_schedule": "cosine", "model_var_type": "fixed_small"}
    trainer = Trainer(model, diffusion, images, config, run_dir=tmp_path / "run", model_config=mc, diffusion_config=dc)
    trainer.train()
    snaps = sorted((tmp_path / "run" / "snapshots").glob("*.safetensors"))
    assert [p.name for p in snaps] == ["ema-step-0000002.safetensors", "ema-step-0000004.safetensors"]
    loaded, loaded_diffusion, meta = load_small_checkpoint(snaps[-1])
    assert meta["info"] == {"step": 4, "ema_rate": config.ema_rate, "ema_warmup": True}
    assert loaded_diffusion.num_timesteps == 100
    for key, value in trainer.ema_model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, atol=2e-3, rtol=2e-3)  # stored as float16
    with pytest.raises(ValueError, match="snapshots need a run_dir"):
        Trainer(*_setup()[:3], TrainConfig(steps=1, progress=False)).save_snapshot()
