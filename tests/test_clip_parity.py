"""The noised CLIP against the reference: manifests (structure) and the recorded clip fixture (numbers)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from glide_edu.nn.clip import ClipConfig, NoisedClip, normalize
from glide_edu.nn.presets import create_glide_model
from glide_edu.respace import create_diffusion
from glide_edu.sampling import replay_noise_fn
from tests.reference_data import assert_matches, fixture, shared_path

ENCODERS = {"clip_image_enc": "image_encoder", "clip_text_enc": "text_encoder"}


def _strip(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _clip() -> tuple[NoisedClip, dict, dict]:
    tensors, meta = fixture("clip")
    model = NoisedClip(meta["clip_config"]).eval()
    model.load_state_dicts(
        _strip(tensors, "image_enc.state_dict."), _strip(tensors, "text_enc.state_dict."), tensors["logit_scale"]
    )
    return model, tensors, meta


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_released_config_has_exactly_the_manifest_keys_and_shapes(name: str) -> None:
    manifest = json.loads((shared_path() / "reference/glide_text2im/manifests" / f"{name}.json").read_text())
    with torch.device("meta"):  # allocates nothing
        model = NoisedClip(manifest["clip_config"])
    encoder = getattr(model, ENCODERS[name])
    got = {k: list(v.shape) for k, v in encoder.state_dict().items()}
    expected = {k: shape for k, shape, _ in manifest["state_dict"]}
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))[:10]
    assert got == expected
    assert len(got) == manifest["num_state_dict_entries"]
    assert sum(p.numel() for p in encoder.parameters()) == manifest["total_parameters"]
    assert model.logit_scale == pytest.approx(manifest["logit_scale_param"]["value_log"], abs=0)


def test_fixture_loads_strictly_and_encoders_match_reference() -> None:
    model, t, meta = _clip()
    with torch.no_grad():
        z_text = model.text_encoder(t["text.tokens"], t["text.lens"])
        z_image = model.image_encoder((t["image.x"] + 1) * 127.5, t["image.t"])
        assert_matches(z_text, "text.z_raw", t, meta)
        assert_matches(z_image, "image.z_raw", t, meta)
        assert_matches(normalize(z_text), "text.z", t, meta)
        assert_matches(normalize(z_image), "image.z", t, meta)
        assert_matches(model.text_embeddings(t["text.tokens"], t["text.lens"]), "text.z", t, meta)
        assert_matches(model.image_embeddings(t["image.x"], t["image.t"]), "image.z", t, meta)


def test_clip_tokenizer_gives_the_fixture_tokens() -> None:
    model, t, meta = _clip()
    tokens, lens = model.encode_prompts(meta["prompts"])
    assert torch.equal(tokens, t["text.tokens"]) and torch.equal(lens, t["text.lens"])


def test_cond_fn_gradient_matches_reference() -> None:
    model, t, meta = _clip()
    cond_fn = model.cond_fn((t["text.tokens"], t["text.lens"]), meta["cond_fn_guidance_scale"])
    with torch.no_grad():  # samplers call it under no_grad; it must enable grad itself
        grad = cond_fn(t["image.x"], t["image.t"], tokens=None, mask=None)
    assert not grad.requires_grad
    assert_matches(grad, "cond_fn.grad", t, meta)
    grad_from_text = model.cond_fn(meta["prompts"], meta["cond_fn_guidance_scale"])(t["image.x"], t["image.t"])
    assert_matches(grad_from_text, "cond_fn.grad", t, meta)


def test_meta_built_model_and_dtype_moves_still_work() -> None:
    """No state hides outside the state dict: meta build + to_empty + load, and .to(float64), give the same z."""
    model, t, meta = _clip()
    with torch.device("meta"):
        fresh = NoisedClip(meta["clip_config"])
    fresh = fresh.to_empty(device="cpu").eval()
    fresh.load_state_dicts(_strip(t, "image_enc.state_dict."), _strip(t, "text_enc.state_dict."), t["logit_scale"])
    with torch.no_grad():
        assert_matches(fresh.image_embeddings(t["image.x"], t["image.t"]), "image.z", t, meta)
        model64 = model.to(torch.float64)
        z64 = model64.text_embeddings(t["text.tokens"], t["text.lens"])
        assert z64.dtype == torch.float64
        torch.testing.assert_close(z64.float(), t["text.z"], rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise_one_line_value_errors() -> None:
    model, t, _ = _clip()
    x, ts, tokens, lens = t["image.x"], t["image.t"], t["text.tokens"], t["text.lens"]
    cases = [
        (lambda: model.image_embeddings(x[:, :, :8, :8], ts), "image_size 16"),
        (lambda: model.image_embeddings(x, torch.full_like(ts, 1000)), r"0\.\.999"),
        (lambda: model.image_embeddings(x, torch.full_like(ts, -1)), r"0\.\.999"),
        (lambda: model.image_embeddings(x, ts.float()), "integers"),
        (lambda: model.image_embeddings(x, ts[:2]), "shape"),
        (lambda: model.text_embeddings(tokens[:, :16], lens), r"\(B, 77\)"),
        (lambda: model.text_embeddings(tokens[0], lens), r"\(B, 77\)"),
        (lambda: model.text_embeddings(tokens, torch.zeros_like(lens)), r"1\.\.77"),
        (lambda: model.text_embeddings(tokens + 70000, lens), "token ids"),
        (lambda: model.cond_fn((tokens, lens), 1.0)(x[:2], ts[:2]), "batch"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match) as err:
            call()
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown CLIP config keys"):
        ClipConfig.from_dict({"image_size": 16, "n_layers": 3})


def test_clip_guided_ancestral_loop_matches_reference() -> None:
    clip, c, cmeta = _clip()
    base, bmeta = fixture("base")
    spec = cmeta["clip_guided"]
    unet = create_glide_model(spec["unet_options"]).eval()
    unet.load_state_dict(_strip(base, "state_dict."), strict=True)
    prompts = [cmeta["prompts"][i] for i in spec["cond_prompt_indices"]]
    # the loop's inputs are what the tokenizers make of the clip_guided notebook's prompts
    assert torch.equal(clip.encode_prompts(prompts)[0], c["clip_guided.clip_tokens"])
    from glide_edu.tokenizers import glide_tokenizer

    vocab_dir = shared_path() / "reference/glide_text2im/vocab"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # prompt 3 is longer than text_ctx 16
        tokens, mask = glide_tokenizer(vocab_dir).tokens_and_mask(prompts, spec["unet_options"]["text_ctx"])
    assert torch.equal(tokens, c["clip_guided.tokens"]) and torch.equal(mask, c["clip_guided.mask"])

    diffusion = create_diffusion(1000, spec["unet_options"]["noise_schedule"], spec["respacing"])
    cond_fn = clip.cond_fn((c["clip_guided.clip_tokens"], c["clip_guided.clip_lens"]), spec["guidance_scale"])
    kwargs = {"tokens": c["clip_guided.tokens"], "mask": c["clip_guided.mask"]}
    x = c["clip_guided.noise"]
    t = torch.full((x.shape[0],), diffusion.num_timesteps - 1, dtype=torch.long)
    with torch.no_grad():
        out = diffusion.p_mean_variance(unet, x, t, clip_denoised=True, model_kwargs=kwargs)
        assert_matches(out.mean, "clip_guided.step0.mean", c, cmeta)
        assert_matches(out.variance, "clip_guided.step0.variance", c, cmeta)
        guided = diffusion.condition_mean(cond_fn, out, x, t, model_kwargs=kwargs)
        assert_matches(guided, "clip_guided.step0.guided_mean", c, cmeta)
        mapped = torch.full_like(t, int(diffusion.timestep_map[-1]))
        assert int(mapped[0]) == 999
        assert_matches(cond_fn(x, mapped, **kwargs), "clip_guided.step0.grad_at_mapped_t", c, cmeta)
    stream = [c[f"clip_guided.noise_stream.{i}"] for i in range(diffusion.num_timesteps)]
    sample = diffusion.p_sample_loop(
        unet, x.shape, noise=x, cond_fn=cond_fn, model_kwargs=kwargs, noise_fn=replay_noise_fn(stream)
    )
    assert_matches(sample, "clip_guided.sample", c, cmeta)
