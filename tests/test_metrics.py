"""The offline FID-proxy, k-NN precision/recall, and the small-checkpoint format."""

from __future__ import annotations

import pytest
import torch

from glide_edu.data import load_digits
from glide_edu.metrics import (
    classifier_accuracy,
    fid_proxies,
    fid_proxy,
    load_feature_net,
    precision_recall,
    sample_quality,
)
from glide_edu.nn.unet import UNetConfig, UNetModel
from glide_edu.pretrained import load_small_checkpoint, read_metadata, save_small_checkpoint


def test_precision_recall_on_synthetic_sets() -> None:
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(400, 8, generator=gen)
    same = torch.randn(400, 8, generator=gen)
    p, r = precision_recall(real, same)
    assert p > 0.8 and r > 0.8
    far = torch.randn(400, 8, generator=gen) + 20
    assert precision_recall(real, far) == (0.0, 0.0)
    collapsed = real[:5].repeat(80, 1) + 1e-3 * torch.randn(400, 8, generator=gen)  # high fidelity, no coverage
    p, r = precision_recall(real, collapsed)
    assert p > 0.95 and r < 0.2
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(real[:3], same)


def test_shipped_feature_net_and_fid_proxy_order_sensible_cases() -> None:
    net = load_feature_net()
    test_x, test_y = load_digits(16, "test")
    train_x, _ = load_digits(16, "train")
    assert classifier_accuracy(net, test_x, test_y) > 0.97
    real, held_out = train_x[:500], test_x[:300]
    good = fid_proxy(real, held_out, net)
    blurred = fid_proxy(real, torch.nn.functional.avg_pool2d(held_out, 3, 1, 1), net)
    noise = fid_proxy(real, torch.rand(300, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1, net)
    assert good < blurred < noise
    q = sample_quality(real, held_out, net)
    assert q["fid_proxy"] == pytest.approx(good, rel=1e-4) and q["precision"] > 0.7 and q["recall"] > 0.7
    with pytest.raises(ValueError, match="N >= 2"):
        fid_proxy(real, held_out[:1], net)
    with pytest.raises(ValueError, match=r"\(N, 1, 16, 16\)"):
        net.features(torch.zeros(2, 3, 8, 8))


def test_fid_proxies_equal_one_fid_proxy_per_set() -> None:
    """The real statistics are computed once; every fake set must still get its own, independent score."""
    net = load_feature_net()
    real, _ = load_digits(16, "train")
    test_x, _ = load_digits(16, "test")
    blurred = torch.nn.functional.avg_pool2d(test_x, 3, 1, 1)
    fakes = [test_x[:200], blurred[:200], test_x[100:300]]
    many = fid_proxies(real, fakes, net)
    one = [fid_proxy(real, f, net) for f in fakes]
    assert many == pytest.approx(one, rel=1e-5)
    assert many[1] > many[0] + 5  # the blurred set is not scored with the first set's statistics
    with pytest.raises(ValueError, match="fake images must be"):
        fid_proxies(real, [test_x, test_x[:1]], net)


def test_small_checkpoint_round_trip_and_bad_files(tmp_path) -> None:
    cfg = UNetConfig(
        image_size=16,
        in_channels=1,
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(8,),
        learn_sigma=True,
    )
    model = UNetModel(cfg)
    for p in model.parameters():
        p.data.normal_(0, 0.02)
    path = save_small_checkpoint(
        tmp_path / "m.safetensors",
        model,
        cfg,
        {"steps": 100, "noise_schedule": "cosine", "model_var_type": "learned_range"},
        {"note": "test"},
    )
    loaded, diffusion, meta = load_small_checkpoint(path)
    assert meta["info"] == {"note": "test"} and diffusion.num_timesteps == 100
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 70])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), model.eval()(x, t), atol=2e-3, rtol=2e-3)  # float16 storage
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        read_metadata(truncated)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        read_metadata(tmp_path / "missing.safetensors")


def test_diversity_is_zero_for_copies_and_grows_with_spread() -> None:
    from glide_edu.metrics import diversity

    net = load_feature_net()
    test_x, test_y = load_digits(16, "test")
    same = test_x[:1].repeat(20, 1, 1, 1)
    assert diversity(same, net) == pytest.approx(0.0, abs=1e-5)
    one_class = test_x[test_y == 3][:40]
    all_classes = test_x[:40]
    assert 0 < diversity(one_class, net) < diversity(all_classes, net)
    with pytest.raises(ValueError, match="N >= 2"):
        diversity(test_x[:1], net)


def test_guided_sample_quality_reports_all_five_numbers() -> None:
    from glide_edu.metrics import guided_sample_quality

    net = load_feature_net()
    test_x, test_y = load_digits(16, "test")
    train_x, _ = load_digits(16, "train")
    q = guided_sample_quality(train_x[:400], test_x[:200], test_y[:200], net)
    assert set(q) == {"fid_proxy", "precision", "recall", "accuracy", "diversity"}
    assert q["accuracy"] > 0.95 and q["diversity"] > 0
    wrong = guided_sample_quality(train_x[:400], test_x[:200], (test_y[:200] + 1) % 10, net)
    assert wrong["accuracy"] < 0.1 and wrong["diversity"] == pytest.approx(q["diversity"])  # same groups
    with pytest.raises(ValueError, match="one label per sample"):
        guided_sample_quality(train_x[:400], test_x[:200], test_y[:100], net)
