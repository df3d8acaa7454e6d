"""EMA at several rates (TrainConfig.extra_ema_rates): each is a true EMA, none changes training, all resume."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from glide_edu.data import load_digits
from glide_edu.nn.unet import UNetConfig, UNetModel
from glide_edu.respace import create_diffusion
from glide_edu.train import TrainConfig, Trainer


def _trainer(run_dir=None, **kw) -> Trainer:
    cfg = UNetConfig(image_size=16, in_channels=1, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                     attention_resolutions=(8,))
    torch.manual_seed(0)
    model = UNetModel(cfg)
    images, _ = load_digits(16, "train")
    config = TrainConfig(**({"steps": 6, "batch_size": 8, "progress": False, "log_every": 1, "ema_rate": 0.9} | kw))
    diffusion = create_diffusion(50, "cosine", model_var_type="fixed_small")
    return Trainer(model, diffusion, images[:32], config, run_dir=run_dir, model_config={"unet": asdict(cfg)},
                   diffusion_config={"steps": 50})


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_each_extra_ema_is_the_exponential_average_of_the_weights_it_saw() -> None:
    trainer = _trainer(extra_ema_rates=(0.5, 0.75))
    assert trainer.config.extra_ema_rates == [0.5, 0.75]  # stored as a JSON-like list
    seen = []
    trainer.train(callback=lambda t, logs: seen.append(_state(t.model)))
    for rate in (0.9, 0.5, 0.75):
        expected = seen[0]  # AveragedModel copies the first weights, then θ_ema ← r·θ_ema + (1 − r)·θ
        for weights in seen[1:]:
            expected = {k: rate * expected[k] + (1 - rate) * weights[k] if v.is_floating_point() else weights[k]
                        for k, v in expected.items()}
        got = trainer.ema_models[rate].state_dict()
        for k, v in expected.items():
            torch.testing.assert_close(got[k], v, atol=1e-6, rtol=1e-5)
    assert not torch.equal(trainer.ema_models[0.5].state_dict()["out.2.weight"],
                           trainer.ema_models[0.9].state_dict()["out.2.weight"])


def test_extra_emas_change_nothing_else() -> None:
    plain, extra = _trainer(), _trainer(extra_ema_rates=[0.99])
    assert [h["loss"] for h in plain.train()] == [h["loss"] for h in extra.train()]
    for k, v in plain.ema_model.state_dict().items():
        assert torch.equal(v, extra.ema_model.state_dict()[k])


def test_stop_and_resume_keeps_every_ema_bit_for_bit(tmp_path) -> None:
    whole = _trainer(extra_ema_rates=[0.5])
    whole.train()
    _trainer(tmp_path / "run", extra_ema_rates=[0.5], snapshot_every=3).train(steps=3)
    resumed = _trainer(tmp_path / "run", extra_ema_rates=[0.5], snapshot_every=3)
    assert resumed.step == 3
    resumed.train()
    for rate in (0.9, 0.5):
        for k, v in whole.ema_models[rate].state_dict().items():
            assert torch.equal(v, resumed.ema_models[rate].state_dict()[k]), (rate, k)
    names = sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir())
    assert names == ["ema-0.5-step-0000003.safetensors", "ema-0.5-step-0000006.safetensors",
                     "ema-step-0000003.safetensors", "ema-step-0000006.safetensors"]
    with pytest.raises(ValueError, match="extra_ema_rates"):  # the set of EMAs defines the run
        _trainer(tmp_path / "run", steps=8, extra_ema_rates=[0.6])


@pytest.mark.parametrize("rates", [[1.0], [0.5, 0.5], [0.9], ["0.5"]])
def test_bad_extra_rates_are_one_clear_error(rates) -> None:
    with pytest.raises(ValueError, match="extra_ema_rates"):
        _trainer(extra_ema_rates=rates)
