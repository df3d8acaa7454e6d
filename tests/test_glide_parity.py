"""GLIDE networks against the reference: manifests (structure) and recorded fixtures (numbers)."""

from __future__ import annotations

import json

import pytest
import torch

from glide_edu.guidance import classifier_free_guidance
from glide_edu.nn.presets import create_glide_model
from glide_edu.respace import create_diffusion
from glide_edu.sampling import replay_noise_fn
from tests.reference_data import assert_matches, fixture, shared_path

KINDS = ["base", "upsample", "base-inpaint", "upsample-inpaint"]


@pytest.mark.parametrize("kind", KINDS)
def test_official_preset_has_exactly_the_manifest_keys_and_shapes(kind: str) -> None:
    manifest = json.loads((shared_path() / "reference/glide_text2im/manifests" / f"{kind}.json").read_text())
    with torch.device("meta"):  # allocates nothing
        model = create_glide_model(manifest["options"])
    got = {k: list(v.shape) for k, v in model.state_dict().items()}
    expected = {k: shape for k, shape, _ in manifest["state_dict"]}
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))[:10]
    assert got == expected
    assert sum(p.numel() for p in model.parameters()) == manifest["total_parameters"]


def _model(kind: str) -> tuple[torch.nn.Module, dict, dict]:
    tensors, meta = fixture(kind)
    model = create_glide_model(meta["options"]).eval()
    state = {k[len("state_dict.") :]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    model.load_state_dict(state, strict=True)
    return model, tensors, meta


@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_reference(kind: str) -> None:
    model, t, meta = _model(kind)
    kwargs = {k: t[k] for k in ("tokens", "mask", "low_res", "inpaint_image", "inpaint_mask") if k in t}
    with torch.no_grad():
        out = model(t["x_t"], t["timesteps"], **kwargs)
    assert_matches(out, "output", t, meta)


def test_base_intermediates_match_reference() -> None:
    model, t, meta = _model("base")
    from glide_edu.nn.layers import timestep_embedding

    with torch.no_grad():
        emb_t = timestep_embedding(t["timesteps"], model.config.model_channels)
        assert_matches(emb_t, "debug.timestep_embedding", t, meta)
        assert_matches(model.time_embed(emb_t), "debug.time_embed", t, meta)
        xf_proj, xf_out = model.get_text_emb(t["tokens"], t["mask"])
        assert_matches(xf_proj, "debug.xf_proj", t, meta)
        assert_matches(xf_out, "debug.xf_out", t, meta)


def test_cfg_ddim_and_ancestral_loops_match_reference() -> None:
    model, t, meta = _model("base")
    cfg = classifier_free_guidance(model, guidance_scale=3.0)
    with torch.no_grad():
        out = cfg(t["cfg.x"], t["cfg.timesteps"], tokens=t["cfg.tokens"], mask=t["cfg.mask"])
    assert_matches(out, "cfg.output", t, meta)
    diffusion = create_diffusion(1000, "squaredcos_cap_v2", "10")
    kwargs = {"tokens": t["cfg.tokens"], "mask": t["cfg.mask"]}
    steps = list(
        diffusion.ddim_sample_loop_progressive(
            cfg, t["ddim.noise"].shape, noise=t["ddim.noise"], model_kwargs=kwargs, eta=0.0
        )
    )
    assert len(steps) == int(t["ddim.num_steps"])
    for i in (0, 1):
        assert_matches(steps[i].sample, f"ddim.step.{i}.sample", t, meta)
        assert_matches(steps[i].pred_xstart, f"ddim.step.{i}.pred_xstart", t, meta)
    assert_matches(steps[-1].sample, "ddim.sample", t, meta)
    stream = [t[f"p_sample.noise_stream.{i}"] for i in range(10)]
    sample = diffusion.p_sample_loop(
        cfg, t["p_sample.noise"].shape, noise=t["p_sample.noise"], model_kwargs=kwargs, noise_fn=replay_noise_fn(stream)
    )
    assert_matches(sample, "p_sample.sample", t, meta)
