"""Chapter 3's training curve (glide_edu.book.ch03) on a tiny run: snapshots found, metrics, seeds, JSON."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from glide_edu.book import ch03
from glide_edu.data import load_digits
from glide_edu.nn.unet import UNetConfig, UNetModel
from glide_edu.pretrained import snapshots
from glide_edu.respace import create_diffusion
from glide_edu.train import TrainConfig, Trainer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    cfg = UNetConfig(image_size=16, in_channels=1, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                     attention_resolutions=(8,))
    torch.manual_seed(0)
    dc = {"steps": 20, "noise_schedule": "cosine", "model_var_type": "fixed_small"}
    out = tmp_path_factory.mktemp("run")
    trainer = Trainer(UNetModel(cfg), create_diffusion(**dc), load_digits(16, "train")[0][:32],
                      TrainConfig(steps=4, batch_size=8, progress=False, snapshot_every=2), run_dir=out,
                      model_config={"unet": asdict(cfg)}, diffusion_config=dc)
    trainer.train()
    return out


def test_copy_ratio_tells_copies_from_new_images() -> None:
    train, test = load_digits(16, "train")[0], load_digits(16, "test")[0]
    assert ch03.copy_ratio(train[:50], train, test) == 0.0  # exact copies
    assert 0.7 < ch03.copy_ratio(test, train, test) <= 1.0 + 1e-9  # held-out data: the reference
    noise = torch.rand(50, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert ch03.copy_ratio(noise, train, test) > 2  # far from any digit


def test_curve_rows_per_snapshot_and_seed(run_dir, tmp_path) -> None:
    assert list(snapshots(run_dir)) == [2, 4]
    res = ch03.training_curve({"simple": run_dir}, every=4, n=8, sampling_steps=2, seeds=(0, 1), progress=False)
    rows = res["curves"]["simple"]
    assert [(r["step"], r["seed"]) for r in rows] == [(2, 0), (2, 1), (4, 0), (4, 1)]  # first snapshot + every 4
    assert {"fid_proxy", "fid_proxy_test", "precision", "recall", "copy_ratio"} <= set(rows[0])
    assert len(res["reference_training_digits"]["fid_proxy_test"]) == 3
    assert rows[0]["fid_proxy"] != rows[1]["fid_proxy"]  # seeds draw different noise
    again = ch03.snapshot_quality(snapshots(run_dir)[2], n=8, sampling_steps=2, seed=0)
    assert round(again["fid_proxy"], 4) == rows[0]["fid_proxy"]  # deterministic
    summary = ch03.curve_summary(rows)
    mean, half = summary[2]
    assert mean == pytest.approx((rows[0]["fid_proxy"] + rows[1]["fid_proxy"]) / 2)
    assert half == pytest.approx(abs(rows[0]["fid_proxy"] - rows[1]["fid_proxy"]) / 2)


def test_plateau_step_is_where_the_curve_stays_within_its_noise() -> None:
    falling = {1000: (20.0, 0.5), 2000: (15.0, 0.5), 3000: (12.0, 0.5), 4000: (10.0, 0.5)}
    assert ch03.plateau_step(falling) is None  # still falling by more than the noise at every step
    flat_late = {1000: (20.0, 0.5), 2000: (12.0, 0.5), 3000: (11.4, 0.5), 4000: (11.8, 0.4), 5000: (11.2, 0.6)}
    assert ch03.plateau_step(flat_late) == 2000  # 2000 → every later mean within 0.5 + their half-range
    noisy = {1000: (20.0, 3.0), 2000: (16.0, 3.0), 3000: (15.0, 0.1)}
    assert ch03.plateau_step(noisy) == 2000  # wide seed spread: 2000 and 3000 cannot be told apart, 1000 and 3000 can
    assert ch03.plateau_step({1000: (5.0, 0.0)}) is None  # one point is not a plateau


def test_missing_snapshots_are_a_one_line_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="--snapshot-every"):
        snapshots(tmp_path)


def test_eps_slope_measures_how_much_of_the_noise_is_predicted() -> None:
    diffusion = create_diffusion(100, "cosine")
    images = load_digits(16, "test")[0][:32]

    def oracle(scale: float):
        def model(x_t, t):  # the exact ε of x_t = √ᾱ x_0 + √(1−ᾱ) ε, times ``scale``
            abar = torch.as_tensor(diffusion.alphas_cumprod)[t].float().view(-1, 1, 1, 1)
            return scale * (x_t - abar.sqrt() * images) / (1 - abar).sqrt()
        return model

    assert ch03.eps_slope(oracle(1.0), diffusion, images, 10) == pytest.approx(1.0, abs=1e-4)
    assert ch03.eps_slope(oracle(0.5), diffusion, images, 50) == pytest.approx(0.5, abs=1e-4)
    assert ch03.eps_slope(lambda x, t: torch.zeros_like(x), diffusion, images, 50) == 0.0


def test_ema_comparison_rows(run_dir) -> None:
    snaps = snapshots(run_dir)
    res = ch03.ema_comparison({"a": snaps[2], "b": snaps[4]}, n=8, sampling_steps=2, timesteps=(1, 10))
    assert set(res["results"]) == {"a", "b"} and set(res["results"]["a"]) == {"eps_slope", "ancestral", "ddim"}
    assert set(res["results"]["a"]["eps_slope"]) == {"1", "10"}
    assert {"fid_proxy", "precision", "recall"} <= set(res["results"]["b"]["ddim"])
    assert res["provenance"]["inputs"]["a"]["file"] == snaps[2].name  # file names only, no machine paths
