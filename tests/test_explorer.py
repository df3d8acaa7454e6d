"""The prompt explorer behind the text-to-image widgets: methods, caching, precomputed views, oracle verdicts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from glide_edu.nn.clip import NoisedClip
from glide_edu.pipelines.explorer import PromptExplorer, is_shapes_caption, load_views, precompute_views, save_views
from glide_edu.pipelines.mini import mini_text2im
from glide_edu.tokenizers import ByteClipTokenizer
from glide_edu.train_clip import MINI_CLIP
from glide_edu.train_text import MINI_OPTIONS, MINI_TRAIN, train_mini

SMALL = {**MINI_OPTIONS, "num_res_blocks": 1, "xf_width": 32, "xf_layers": 1}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mini")
    cfg = replace(MINI_TRAIN, batch_size=4, checkpoint_every=0)
    path = train_mini(folder / "mini.safetensors", steps=2, n_shapes=32, options=SMALL, config=cfg, progress=False)
    return mini_text2im(path)


def test_shapes_captions_are_judged_and_free_prompts_are_not(pipe) -> None:
    ex = PromptExplorer(pipe, n=2, num_inference_steps=2)
    shapes = ex("a red circle", "cfg", 3.0)
    assert shapes.images.shape == (2, 3, 32, 32) and len(shapes.verdicts) == 2
    assert set(shapes.verdicts[0]) >= {"colour", "shape", "caption"}
    assert 0.0 <= shapes.caption_accuracy <= 1.0 and "oracle" in shapes.title()
    free = ex("red apple", "cfg", 3.0)
    assert free.verdicts is None and free.caption_accuracy is None and "oracle" not in free.title()
    assert is_shapes_caption("two blue squares") and not is_shapes_caption("a grinning face")


def test_views_are_cached_and_the_scale_only_changes_guidance(pipe) -> None:
    ex = PromptExplorer(pipe, n=2, num_inference_steps=3)
    a = ex("a red  circle", "cfg", 3.0)
    assert ex("a red circle", "cfg", 3.0) is a  # whitespace normalised, cached
    assert ex("a red circle", "none", 7.0) is ex("a red circle", "none", 1.0)  # "none" ignores s
    plain = ex("a red circle", "none")
    at1 = ex("a red circle", "cfg", 1.0)
    assert torch.equal(plain.images, at1.images)  # CFG at s = 1 is the conditional model: same noise, same pictures
    assert not torch.equal(a.images, plain.images)


def test_clip_method_needs_a_clip_and_uses_it(pipe) -> None:
    ex = PromptExplorer(pipe, n=2, num_inference_steps=2)
    assert ex.methods == ("cfg", "none")
    with pytest.raises(ValueError, match="noised CLIP"):
        ex("a red circle", "clip", 3.0)
    with pytest.raises(ValueError, match="unknown guidance method 'cgf'"):
        ex("a red circle", "cgf", 3.0)
    torch.manual_seed(0)
    clip = NoisedClip(MINI_CLIP).eval()
    clip.tokenizer = ByteClipTokenizer()  # what load_clip_file gives the book's CLIPs
    ex = PromptExplorer(pipe, clip=clip, n=2, num_inference_steps=2)
    guided, plain = ex("a red circle", "clip", 50.0), ex("a red circle", "clip", 0.0)
    assert torch.equal(plain.images, ex("a red circle", "none").images)  # s = 0: no CLIP gradient
    assert not torch.equal(guided.images, plain.images)
    assert ex.methods == ("cfg", "clip", "none")
    with pytest.raises(ValueError, match="clean CLIP"):
        ex("a red circle", "clip-clean", 3.0)


def test_the_clean_clip_method_guides_with_t_zero(pipe) -> None:
    torch.manual_seed(0)
    clip = NoisedClip(MINI_CLIP).eval()
    clip.tokenizer = ByteClipTokenizer()
    clean = NoisedClip(MINI_CLIP).eval()
    clean.load_state_dict(clip.state_dict())
    clean.tokenizer, clean.trained_on_noise = ByteClipTokenizer(), False
    ex = PromptExplorer(pipe, clip=clip, clean_clip=clean, n=2, num_inference_steps=2)
    assert ex.methods == ("cfg", "clip", "clip-clean", "none")
    as_clean, as_noised = ex("a red circle", "clip-clean", 50.0), ex("a red circle", "clip", 50.0)
    assert "clean-CLIP guidance s = 50" in as_clean.title()
    assert not torch.equal(as_clean.images, as_noised.images)  # same weights; only the timestep shown differs


def test_precomputed_views_round_trip_and_are_served_without_sampling(pipe, tmp_path: Path) -> None:
    ex = PromptExplorer(pipe, n=2, num_inference_steps=2)
    views = precompute_views(ex, ["a red circle", "red apple"], {"cfg": (2.0, 3.0), "none": ()}, progress=False)
    assert len(views) == 2 * 3
    path = save_views(tmp_path / "views.safetensors", views, {"command": "test"})
    loaded, provenance = load_views(path, check_checkpoints=False)
    assert provenance == {"command": "test"} and len(loaded) == len(views)
    for a, b in zip(views, loaded, strict=True):
        assert (a.prompt, a.method, a.scale) == (b.prompt, b.method, b.scale)
        assert torch.allclose(a.images, b.images, atol=1 / 127.5)  # stored as 8-bit
        assert (a.verdicts is None) == (b.verdicts is None)
    class NoSampling:
        def __call__(self, *args, **kwargs):
            raise AssertionError("a precomputed view was sampled again")

    fresh = PromptExplorer(NoSampling(), n=2, num_inference_steps=2, precomputed=loaded)
    assert fresh("a red circle", "cfg", 3.0) is loaded[1]
    with pytest.raises(AssertionError, match="sampled again"):
        fresh("a red circle", "cfg", 5.0)
    with pytest.raises(ValueError, match="precompute with the same n"):
        PromptExplorer(pipe, n=3, precomputed=loaded)


def test_the_scale_slider_offers_only_the_selected_methods_scales() -> None:
    import ipywidgets as widgets

    from glide_edu.pipelines.explorer import scales_follow_method

    grids = {"cfg": (1.5, 3.0, 6.0), "clip": (1.0, 4.0, 16.0), "none": ()}
    method = widgets.ToggleButtons(options=list(grids), value="clip")
    s = widgets.SelectionSlider(options=sorted({v for g in grids.values() for v in g}), value=6.0)
    seen = []
    s.observe(lambda change: seen.append(change.new), names="value")
    scales_follow_method(method, s, grids)
    assert tuple(s.options) == (1.0, 4.0, 16.0) and s.value == 4.0  # nearest to 6 among the CLIP scales
    s.value = 16.0
    method.value = "cfg"
    assert tuple(s.options) == (1.5, 3.0, 6.0) and s.value == 6.0
    method.value = "none"
    assert tuple(s.options) == (1.0,) and s.value == 1.0
    assert seen[-1] == 1.0  # every change reached the slider's observers (the widget redraws)


def test_explorer_controls_wire_prompt_method_and_a_following_slider() -> None:
    from glide_edu.pipelines.explorer import explorer_controls

    grids = {"cfg": (1.5, 3.0, 6.0), "clip": (1.0, 4.0, 16.0), "none": ()}
    controls = explorer_controls(["a red circle", "red apple"], grids, ["clip", "cfg", "none"], "clip", 5.0)
    assert set(controls) == {"prompt", "method", "s"}  # show(prompt, method, s)'s arguments
    assert list(controls["prompt"].options) == ["a red circle", "red apple"]
    assert controls["prompt"].value == "a red circle above a blue square" and not controls["prompt"].continuous_update
    assert tuple(controls["s"].options) == (1.0, 4.0, 16.0) and controls["s"].value == 4.0  # nearest stored scale
    controls["method"].value = "cfg"
    assert tuple(controls["s"].options) == (1.5, 3.0, 6.0) and controls["s"].value == 3.0
    with pytest.raises(ValueError, match="not among the buttons"):
        explorer_controls([], grids, ["cfg", "none"], "clip", 4.0)
