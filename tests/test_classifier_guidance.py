"""The noisy classifier (ADM's encoder half) and classifier guidance."""

from __future__ import annotations

import pytest
import torch

from glide_edu import guidance
from glide_edu import train_classifier as tc
from glide_edu.nn.classifier import ClassifierConfig, EncoderUNetModel
from glide_edu.pretrained import shipped_checkpoint
from glide_edu.respace import create_diffusion

TINY = ClassifierConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,))


def _tiny(pool: str = "attention", seed: int = 0, dtype: torch.dtype = torch.float32) -> EncoderUNetModel:
    torch.manual_seed(seed)
    model = EncoderUNetModel(ClassifierConfig(**{**TINY.__dict__, "pool": pool}))
    for p in model.parameters():  # zero-initialised layers would give a zero gradient
        p.data.normal_(0, 0.1)
    return model.to(dtype).eval()


@pytest.mark.parametrize("pool", ["attention", "adaptive"])
def test_classifier_shapes_names_and_time_dependence(pool: str) -> None:
    model = _tiny(pool)
    x, t = torch.randn(3, 1, 16, 16), torch.tensor([0, 500, 999])
    logits = model(x, t)
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    assert not torch.allclose(model(x, t), model(x, torch.tensor([999, 0, 500])))  # t matters
    roots = {k.split(".")[0] for k in model.state_dict()}
    assert roots == {"time_embed", "input_blocks", "middle_block", "out"}  # the reference's module names
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16\)"):
        model(torch.randn(2, 3, 16, 16), t[:2])
    with pytest.raises(ValueError, match="timesteps must have shape"):
        model(x, t[:2])


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown pool"):
        EncoderUNetModel(ClassifierConfig(pool="max"))
    with pytest.raises(ValueError, match="multiple of 32"):
        EncoderUNetModel(ClassifierConfig(model_channels=20))
    with pytest.raises(ValueError, match="cannot be halved"):
        EncoderUNetModel(ClassifierConfig(image_size=12, channel_mult=(1, 2, 2, 2)))


def test_cond_fn_equals_scaled_finite_difference_gradient() -> None:
    clf = _tiny()  # float32 (GroupNorm runs in float32), so a moderate step and tolerance
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 16, 16, generator=gen)
    t, y = torch.tensor([30, 700]), torch.tensor([3, 8])
    scale = 2.5
    grad = guidance.classifier_cond_fn(clf, scale)(x, t, y=y)
    assert grad.shape == x.shape
    eps = 1e-2
    for _ in range(4):  # directional derivatives along random unit directions, per sample
        v = torch.randn(x.shape, generator=gen)
        v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        with torch.no_grad():
            log_p = guidance.classifier_log_prob
            fd = (log_p(clf, x + eps * v, t, y) - log_p(clf, x - eps * v, t, y)) / (2 * eps)
        torch.testing.assert_close((grad * v).sum((1, 2, 3)), scale * fd, rtol=1e-2, atol=1e-3)
    clean = guidance.classifier_cond_fn(clf, 1.0, clean=True)(x, t, y=y)  # a clean classifier is shown t = 0
    torch.testing.assert_close(clean, guidance.classifier_cond_fn(clf, 1.0)(x, torch.zeros_like(t), y=y))
    with pytest.raises(ValueError, match="target labels"):
        guidance.classifier_cond_fn(clf, 1.0)(x, t)


class _SpyClassifier(torch.nn.Module):
    """Records the timesteps it is called with; logits depend smoothly on x."""

    def __init__(self) -> None:
        super().__init__()
        self.config = ClassifierConfig()
        self.w = torch.nn.Parameter(torch.randn(10, 256, generator=torch.Generator().manual_seed(0)) * 0.05)
        self.seen: list[list[int]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.seen.append(t.tolist())
        return x.flatten(1) @ self.w.T


def _eps_model(x: torch.Tensor, t: torch.Tensor, **kw) -> torch.Tensor:
    return 0.3 * x + 1e-4 * t.float().view(-1, 1, 1, 1)


@pytest.mark.parametrize("method", ["ancestral", "ddim"])
def test_classifier_sees_original_timesteps_under_respacing(method: str) -> None:
    diffusion = create_diffusion(1000, "cosine", "10", model_var_type="fixed_small")
    spy = _SpyClassifier()
    labels = torch.tensor([1, 7])
    guidance.guided_samples(_eps_model, diffusion, spy, labels, 1.0, method, generator=torch.Generator().manual_seed(0))
    expected = [[int(s)] * 2 for s in diffusion.timestep_map[::-1]]
    assert spy.seen == expected and max(max(s) for s in spy.seen) > 10  # 999 … 0, not 9 … 0


@pytest.mark.parametrize("method", ["ancestral", "ddim"])
def test_scale_zero_reproduces_unguided_sampling(method: str) -> None:
    diffusion = create_diffusion(1000, "cosine", "8", model_var_type="fixed_small")
    clf, labels = _tiny(), torch.tensor([0, 4, 9])
    shape = (3, 1, 16, 16)
    loop = diffusion.p_sample_loop if method == "ancestral" else diffusion.ddim_sample_loop
    plain = loop(_eps_model, shape, generator=torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    guided0 = guidance.guided_samples(_eps_model, diffusion, clf, labels, 0.0, method, generator=gen)
    assert torch.equal(plain, guided0)
    # a zero-scaled cond_fn through the sampler changes nothing but rounding (DDIM goes ε → x̂_0 → ε,
    # multiplying float32 rounding by 1/√ᾱ_t ≈ 10² at the noisiest steps)
    zero_fn = guidance.classifier_cond_fn(clf, 0.0)
    gen = torch.Generator().manual_seed(5)
    via = loop(_eps_model, shape, generator=gen, cond_fn=zero_fn, model_kwargs={"y": labels})
    torch.testing.assert_close(via, plain, rtol=0, atol=1e-6 if method == "ancestral" else 1e-3)


def test_guidance_shifts_the_mean_by_sigma_times_gradient_and_ddim_eps() -> None:
    diffusion = create_diffusion(1000, "cosine", "20", model_var_type="fixed_small")
    clf, y = _tiny(), torch.tensor([2, 5])
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([12, 12])
    cond_fn = guidance.classifier_cond_fn(clf, 3.0)
    orig_t = torch.full((2,), int(diffusion.timestep_map[12]))
    grad = cond_fn(x, orig_t, y=y)
    plain = diffusion.p_sample(_eps_model, x, t, noise=torch.zeros_like(x))
    guided = diffusion.p_sample(_eps_model, x, t, cond_fn=cond_fn, model_kwargs={"y": y}, noise=torch.zeros_like(x))
    torch.testing.assert_close(guided["mean"], plain["mean"] + plain["variance"] * grad, rtol=1e-5, atol=1e-6)
    # DDIM: ε' = ε − √(1−ᾱ_t)·grad, then x̂_0 from ε'
    abar = float(diffusion.alphas_cumprod[12])
    eps = _eps_model(x, orig_t)
    x0_guided = (x - (1 - abar) ** 0.5 * (eps - (1 - abar) ** 0.5 * grad)) / abar**0.5
    ddim = diffusion.ddim_sample(_eps_model, x, t, clip_denoised=False, cond_fn=cond_fn, model_kwargs={"y": y})
    torch.testing.assert_close(ddim["pred_xstart"], x0_guided, rtol=1e-4, atol=1e-5)


def test_classifier_checkpoint_round_trip(tmp_path) -> None:
    clf = _tiny()
    path = tc.save_classifier(tmp_path / "c.safetensors", clf, {"steps": 1000, "noise_schedule": "cosine"}, {"a": 1})
    loaded, meta = tc.load_classifier(path)
    assert meta["kind"] == "classifier" and meta["info"] == {"a": 1}
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([5, 600])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), clf(x, t), atol=5e-2, rtol=5e-2)  # float16 storage
    with pytest.raises(ValueError, match="not a classifier"):
        tc.load_classifier(shipped_checkpoint("digits_simple"))


def test_short_training_learns_something() -> None:
    torch.manual_seed(0)
    model, history = tc.train_classifier(True, steps=30, batch_size=32, config=TINY, progress=False, log_every=10)
    assert [h["step"] for h in history] == [10, 20, 30] and history[-1]["loss"] < history[0]["loss"] + 0.1
    assert not model.training
