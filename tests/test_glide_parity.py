"""GLIDE networks against the reference: manifests (structure) and recorded fixtures (numbers)."""

from __future__ import annotations

import json

import pytest
import torch

from glide_edu.guidance import classifier_free_guidance
from glide_edu.inpaint import known_region_clamp
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


@pytest.mark.parametrize("kind", KINDS)
def test_intermediates_match_reference(kind: str) -> None:
    """Every ``debug.*`` tensor: embeddings, the conditioning vector, the UNet input and (base) each block."""
    model, t, meta = _model(kind)
    from glide_edu.nn.layers import timestep_embedding

    seen: dict[str, torch.Tensor] = {}

    def pre_hook(module: torch.nn.Module, args: tuple) -> None:
        seen["debug.unet_input.0"], seen["debug.emb"] = args[0][:1], args[1]

    def out_hook(name: str):
        return lambda module, args, out: seen.__setitem__(name, out[:1])

    handles = [model.input_blocks[0].register_forward_pre_hook(pre_hook)]
    for group in ("input_blocks", "output_blocks"):
        for i, block in enumerate(getattr(model, group)):
            handles.append(block.register_forward_hook(out_hook(f"debug.{group}.{i}.0")))
    handles.append(model.middle_block.register_forward_hook(out_hook("debug.middle_block.0")))
    kwargs = {k: t[k] for k in ("tokens", "mask", "low_res", "inpaint_image", "inpaint_mask") if k in t}
    with torch.no_grad():
        emb_t = timestep_embedding(t["timesteps"], model.config.model_channels)
        assert_matches(emb_t, "debug.timestep_embedding", t, meta)
        assert_matches(model.time_embed(emb_t), "debug.time_embed", t, meta)
        xf_proj, xf_out = model.get_text_emb(t["tokens"], t["mask"])
        assert_matches(xf_proj, "debug.xf_proj", t, meta)
        assert_matches(xf_out, "debug.xf_out", t, meta)
        model(t["x_t"], t["timesteps"], **kwargs)
    for handle in handles:
        handle.remove()
    recorded = [k for k in t if k.startswith("debug.") and k not in ("debug.timestep_embedding", "debug.time_embed")]
    assert {"debug.emb", "debug.unet_input.0"} <= set(recorded)
    for key in recorded:
        if key not in ("debug.xf_proj", "debug.xf_out"):
            assert_matches(seen[key], key, t, meta)


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


def test_base_inpaint_ancestral_loop_with_known_region_clamp_matches_reference() -> None:
    model, t, meta = _model("base-inpaint")
    cfg = classifier_free_guidance(model, guidance_scale=5.0)
    image, mask = t["p_sample.inpaint_image"], t["p_sample.inpaint_mask"]
    kwargs = {"tokens": t["p_sample.tokens"], "mask": t["p_sample.mask"], "inpaint_image": image, "inpaint_mask": mask}
    diffusion = create_diffusion(1000, meta["options"]["noise_schedule"], "10")
    stream = [t[f"p_sample.noise_stream.{i}"] for i in range(diffusion.num_timesteps)]
    sample = diffusion.p_sample_loop(
        cfg,
        t["p_sample.noise"].shape,
        noise=t["p_sample.noise"],
        denoised_fn=known_region_clamp(image, mask),
        model_kwargs=kwargs,
        noise_fn=replay_noise_fn(stream),
    )
    assert_matches(sample, "p_sample.sample", t, meta)


def test_upsample_fast27_ddim_loop_with_temperature_matches_reference() -> None:
    model, t, meta = _model("upsample")
    diffusion = create_diffusion(1000, meta["options"]["noise_schedule"], "fast27")
    assert diffusion.num_timesteps == int(t["ddim.num_steps"]) == 27
    assert_matches(t["ddim.noise_raw"] * 0.997, "ddim.noise", t, meta)  # temperature scales x_T only
    kwargs = {"tokens": t["ddim.tokens"], "mask": t["ddim.mask"], "low_res": t["ddim.low_res"]}
    steps = list(
        diffusion.ddim_sample_loop_progressive(
            model, t["ddim.noise_raw"].shape, noise=t["ddim.noise_raw"], model_kwargs=kwargs, temperature=0.997
        )
    )
    assert len(steps) == 27 and steps[0].timestep == 997
    assert_matches(steps[0].sample, "ddim.step.0.sample", t, meta)
    assert_matches(steps[0].pred_xstart, "ddim.step.0.pred_xstart", t, meta)
    assert_matches(steps[-1].sample, "ddim.sample", t, meta)


def test_upsample_inpaint_ancestral_fast27_loop_matches_reference() -> None:
    model, t, meta = _model("upsample-inpaint")
    diffusion = create_diffusion(1000, meta["options"]["noise_schedule"], "fast27")
    assert_matches(t["p_sample.noise_raw"] * 0.997, "p_sample.noise", t, meta)
    image, mask = t["p_sample.inpaint_image"], t["p_sample.inpaint_mask"]
    kwargs = {
        "tokens": t["p_sample.tokens"],
        "mask": t["p_sample.mask"],
        "low_res": t["p_sample.low_res"],
        "inpaint_image": image,
        "inpaint_mask": mask,
    }
    stream = [t[f"p_sample.noise_stream.{i}"] for i in range(27)]
    sample = diffusion.p_sample_loop(
        model,
        t["p_sample.noise_raw"].shape,
        noise=t["p_sample.noise_raw"],
        temperature=0.997,
        denoised_fn=known_region_clamp(image, mask),
        model_kwargs=kwargs,
        noise_fn=replay_noise_fn(stream),
    )
    assert_matches(sample, "p_sample.sample", t, meta)
