"""The three GLIDE pipelines on tiny random-weight models in the official format."""

from __future__ import annotations

from functools import cache

import pytest
import torch
from PIL import Image

from glide_edu.guidance import classifier_free_guidance
from glide_edu.nn.fp16 import convert_to_fp16, convert_to_fp32, parameter_dtypes
from glide_edu.pipelines import ClipGuidedPipeline, InpaintPipeline, Text2ImPipeline, quantize_8bit
from glide_edu.pipelines.common import resolve_device
from glide_edu.pipelines.tiny import tiny_clip, tiny_glide_model
from glide_edu.tokenizers import byte_level_tokenizer

FAST = {"num_inference_steps": 4, "upsample_respacing": "3"}


@cache
def _text2im() -> Text2ImPipeline:
    return Text2ImPipeline(tiny_glide_model("base"), tiny_glide_model("upsample"), byte_level_tokenizer())


@cache
def _inpaint() -> InpaintPipeline:
    return InpaintPipeline(
        tiny_glide_model("base-inpaint"), tiny_glide_model("upsample-inpaint"), byte_level_tokenizer()
    )


def test_text2im_returns_images_and_tensors_and_is_seed_deterministic() -> None:
    pipe = _text2im()
    out = pipe(["a corgi", "a cat"], batch_size=2, seed=3, **FAST)
    assert len(out) == 4 and out.prompts == ["a corgi", "a corgi", "a cat", "a cat"]
    assert all(isinstance(im, Image.Image) and im.size == (32, 32) for im in out.images)
    assert out.samples.shape == (4, 3, 32, 32) and out.low_res.shape == (4, 3, 16, 16)
    assert torch.equal(out.low_res, quantize_8bit(out.low_res))  # the base output sits on the 8-bit grid
    again = pipe(["a corgi", "a cat"], batch_size=2, seed=3, **FAST)
    assert torch.equal(out.samples, again.samples)
    same = pipe(["a corgi", "a cat"], batch_size=2, generator=torch.Generator().manual_seed(3), **FAST)
    assert torch.equal(out.samples, same.samples)
    other = pipe(["a corgi", "a cat"], batch_size=2, seed=4, **FAST)
    assert not torch.equal(out.samples, other.samples)


def test_text2im_equals_the_notebook_procedure_after_manual_seed() -> None:
    """seed=s draws what the reference notebook draws after torch.manual_seed(s): same numbers, same order."""
    pipe = _text2im()
    out = pipe("a corgi", seed=11, guidance_scale=3.0, num_inference_steps=5, upsample_respacing="fast27")
    tok = byte_level_tokenizer()
    tokens, mask = tok.tokens_and_mask(["a corgi", ""], 48)
    torch.manual_seed(11)
    base = pipe.base.diffusion("5")
    x = base.p_sample_loop(
        classifier_free_guidance(pipe.base.network, 3.0), (2, 3, 16, 16), model_kwargs={"tokens": tokens, "mask": mask}
    )[:1]
    low_res = quantize_8bit(x)
    up = pipe.upsampler.diffusion("fast27")
    noise = torch.randn(1, 3, 32, 32) * 0.997
    kwargs = {"tokens": tokens[:1], "mask": mask[:1], "low_res": low_res}
    final = up.ddim_sample_loop(pipe.upsampler.network, (1, 3, 32, 32), noise=noise, model_kwargs=kwargs)
    assert torch.equal(out.low_res, low_res)
    torch.testing.assert_close(out.samples, final, rtol=0, atol=1e-6)


def test_guidance_scale_one_and_unguided_clip_are_the_plain_conditional_model() -> None:
    pipe = _text2im()
    plain = pipe("a corgi", seed=5, guidance_scale=1.0, upsample=False, num_inference_steps=3)
    clip_pipe = ClipGuidedPipeline(pipe.base, tiny_clip(), None, byte_level_tokenizer())
    unguided = clip_pipe("a corgi", seed=5, guidance_scale=0.0, num_inference_steps=3)
    assert torch.equal(plain.samples, unguided.samples)
    guided = clip_pipe("a corgi", seed=5, guidance_scale=3.0, num_inference_steps=3)
    assert guided.samples.shape == (1, 3, 16, 16) and not torch.equal(guided.samples, plain.samples)


def test_inpaint_keeps_the_known_pixels_at_both_sizes() -> None:
    pipe = _inpaint()
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = torch.zeros(16, 16)
    mask[:6] = 1  # keep the top rows, generate the rest
    out = pipe("a corgi", image, mask, batch_size=2, seed=0, **FAST)
    assert out.samples.shape == (2, 3, 32, 32)
    from glide_edu.inpaint import resize_image, resize_mask

    lo_known = mask.bool().expand(2, 3, 16, 16)
    expected_lo = quantize_8bit(resize_image(image, 16)).expand(2, -1, -1, -1)
    torch.testing.assert_close(out.low_res[lo_known], expected_lo[lo_known], rtol=0, atol=1e-5)
    hi_known = resize_mask(mask[None, None], 32).bool().expand(2, 3, 32, 32)
    expected_hi = image.expand(2, -1, -1, -1)
    torch.testing.assert_close(out.samples[hi_known], expected_hi[hi_known], rtol=0, atol=1e-5)
    assert (out.samples[~hi_known] - expected_hi[~hi_known]).abs().max() > 0.1  # the rest was generated
    pil = Image.fromarray(((image[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy())
    from_pil = pipe("a corgi", pil, mask.numpy(), seed=0, upsample=False, num_inference_steps=2)
    assert from_pil.samples.shape == (1, 3, 16, 16)


def test_fp16_converts_exactly_the_reference_layers() -> None:
    model = tiny_glide_model("base").network
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([10, 900])
    tokens, mask = byte_level_tokenizer().tokens_and_mask(["a corgi", ""], 48)
    with torch.no_grad():
        ref = model(x, t, tokens=tokens, mask=mask)
        convert_to_fp16(model)
        half = model(x, t, tokens=tokens, mask=mask)
    dtypes = parameter_dtypes(model)
    fp16 = {k for k, v in dtypes.items() if v == torch.float16}
    for key in dtypes:
        conv_in_blocks = key.split(".")[0] in ("input_blocks", "middle_block", "output_blocks") and (
            model.get_submodule(key.rsplit(".", 1)[0]).__class__.__name__.startswith("Conv")
        )
        text = key.startswith(("transformer.", "transformer_proj.", "token_embedding.")) and ".ln_" not in key
        assert (key in fp16) == (conv_in_blocks or text), key
    for kept in ("positional_embedding", "padding_embedding", "final_ln.weight", "time_embed.0.weight", "out.2.weight"):
        assert dtypes[kept] == torch.float32, kept
    assert dtypes["input_blocks.1.0.emb_layers.1.weight"] == torch.float32
    assert dtypes["input_blocks.1.0.in_layers.0.weight"] == torch.float32  # GroupNorm
    assert dtypes["input_blocks.1.1.qkv.weight"] == dtypes["input_blocks.1.1.encoder_kv.weight"] == torch.float16
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, ref, rtol=0, atol=2e-2)
    convert_to_fp32(model)
    assert all(v == torch.float32 for v in parameter_dtypes(model).values())
    with pytest.raises(ValueError, match="not a GLIDE/ADM UNet"):
        convert_to_fp16(torch.nn.Linear(2, 2))


def test_fp16_and_bf16_pipelines_run() -> None:
    """Tiny random models amplify rounding (pixels flip at the ±1 clip), so compare one forward, then run."""
    model = _text2im().base.network
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    tokens, mask = byte_level_tokenizer().tokens_and_mask(["a corgi", ""], 48)
    with torch.no_grad():
        ref = model(x, t, tokens=tokens, mask=mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x, t, tokens=tokens, mask=mask)
    torch.testing.assert_close(low.float(), ref, rtol=0, atol=0.1)
    bf16 = _text2im()("a corgi", seed=1, num_inference_steps=2, upsample_respacing="2", bf16=True)
    assert bf16.samples.dtype == torch.float32 and bf16.samples.abs().max() <= 1
    with pytest.warns(UserWarning, match="fp16 on the CPU"):
        pipe = Text2ImPipeline(tiny_glide_model("base"), None, byte_level_tokenizer(), fp16=True)
    half = pipe("a corgi", seed=1, num_inference_steps=2, progress=True)
    assert pipe.base.network.input_blocks[0][0].weight.dtype == torch.float16
    assert half.samples.dtype == torch.float32 and torch.isfinite(half.samples).all()


def test_from_pretrained_reads_official_format_files_from_a_folder(tmp_path) -> None:
    from glide_edu.pipelines.tiny import tiny_registry

    registry = tiny_registry()
    for name in ("base", "upsample"):
        torch.save(tiny_glide_model(name).network.state_dict(), tmp_path / registry[name].file)
    pipe = Text2ImPipeline.from_pretrained(checkpoint_dir=tmp_path, registry=registry, tokenizer=byte_level_tokenizer())
    assert pipe.upsampler.kind == "upsample" and pipe.upsampler.diffusion_config.noise_schedule == "linear"
    assert pipe.base.diffusion_config.noise_schedule == "squaredcos_cap_v2" and pipe.base.diffusion_config.steps == 1000
    reference = _text2im()("a corgi", seed=0, **FAST)
    assert torch.equal(pipe("a corgi", seed=0, **FAST).samples, reference.samples)  # same weights, same pictures
    no_up = Text2ImPipeline.from_pretrained(
        checkpoint_dir=tmp_path, registry=registry, tokenizer=byte_level_tokenizer(), upsample=False
    )
    assert no_up.upsampler is None


def test_bad_inputs_raise_one_line_value_errors() -> None:
    pipe, inpaint = _text2im(), _inpaint()
    image = torch.zeros(1, 3, 32, 32)
    cases = [
        (lambda: pipe([], **FAST), "prompt list is empty"),
        (lambda: pipe("a", batch_size=0, **FAST), "batch_size"),
        (lambda: pipe("a", guidance_scale=-1, **FAST), "guidance_scale must be a finite number >= 0"),
        (lambda: pipe("a", num_inference_steps=3, respacing="3"), "not both"),
        (lambda: pipe("a", num_inference_steps=0), "num_inference_steps must be >= 1"),
        (lambda: pipe("a", respacing="fast99"), "respacing"),
        (lambda: pipe("a", seed=1, generator=torch.Generator()), "seed or generator"),
        (lambda: inpaint("a", image, torch.ones(3, 16, 16), **FAST), "mask has shape"),
        (lambda: inpaint("a", image, torch.ones(20, 20), **FAST), r"16×16 or 32×32"),
        (lambda: inpaint("a", image, torch.full((16, 16), 0.5), **FAST), "0 \\(generate\\) or 1"),
        (lambda: inpaint("a", torch.zeros(1, 4, 32, 32), torch.ones(16, 16), **FAST), "image must be"),
        (lambda: inpaint("a", image.expand(3, -1, -1, -1), torch.ones(16, 16), batch_size=2), "image has batch 3"),
        (lambda: resolve_device("tpu"), "unknown device 'tpu'"),
        (lambda: Text2ImPipeline(tiny_glide_model("base"), device="gpu"), "unknown device"),
        (lambda: ClipGuidedPipeline(tiny_glide_model("upsample"), tiny_clip()), "use a matching pair"),
    ]
    if not torch.cuda.is_available():
        cases.append((lambda: resolve_device("cuda"), "no CUDA GPU"))
    for call, match in cases:
        with pytest.raises(ValueError, match=match) as err:
            call()
        assert "\n" not in str(err.value)


def test_glide_model_carries_its_diffusion_and_is_checked_against_the_network() -> None:
    from glide_edu.pipelines import GlideModel
    from glide_edu.respace import DiffusionConfig

    up = tiny_glide_model("upsample")
    assert isinstance(up, GlideModel) and up.kind == "upsample" and up.image_size == 32 and up.text_ctx == 48
    assert not hasattr(up.network, "glide_schedule")  # nothing is parked on the nn.Module
    diffusion = up.diffusion("fast27")
    assert diffusion.num_timesteps == 27 and int(diffusion.timestep_map[-1]) == 997
    linear = DiffusionConfig(1000, "linear").create()
    assert torch.equal(torch.as_tensor(up.diffusion("").betas), torch.as_tensor(linear.betas))
    same = GlideModel(up.network, {"steps": 1000, "noise_schedule": "linear"}, "upsample")
    assert same.diffusion_config == up.diffusion_config
    base = tiny_glide_model("base")
    with pytest.raises(ValueError, match=r"'upsample' model takes 6 input channels but this network takes 3"):
        GlideModel(base.network, base.diffusion_config, "upsample")
    with pytest.raises(ValueError, match="unknown GLIDE kind"):
        GlideModel(base.network, base.diffusion_config, "super")
    with pytest.raises(ValueError, match="bad respacing 'fast99'"):
        base.diffusion("fast99")
    # a pipeline takes GlideModels of the kinds its slots need, and says so otherwise
    with pytest.raises(ValueError, match="base must be a GlideModel"):
        Text2ImPipeline(base.network, tokenizer=byte_level_tokenizer())
    with pytest.raises(ValueError, match="upsampler must be a model of kind 'upsample', got one of kind 'base'"):
        Text2ImPipeline(base, base, tokenizer=byte_level_tokenizer())
    with pytest.raises(ValueError, match="base_inpaint must be a model of kind 'base-inpaint'"):
        InpaintPipeline(base, tokenizer=byte_level_tokenizer())


def test_pipelines_hold_only_their_components() -> None:
    """No per-call state is left on the pipeline: its attributes are the same before and after a call."""
    pipe = _inpaint()
    before = dict(vars(pipe))
    assert set(before) == {"base", "upsampler", "tokenizer", "device"}
    pipe("a", torch.zeros(1, 3, 32, 32), torch.ones(16, 16), seed=0, **FAST)
    assert vars(pipe) == before
    with pytest.raises(TypeError, match="steps"):  # an unknown option is Python's own error
        pipe("a", torch.zeros(1, 3, 32, 32), torch.ones(16, 16), steps=3)
