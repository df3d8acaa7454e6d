"""Chapter 12's sweep and claims: metrics per (method, scale, seed), curves, fronts, the three claims."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from glide_edu.book import ch12
from glide_edu.nn.clip import NoisedClip
from glide_edu.shapes import load_shapes
from glide_edu.text_metrics import PictureFeatureNet
from glide_edu.tokenizers import ByteClipTokenizer
from glide_edu.train_clip import MINI_CLIP


class BlurPipe:
    """A stand-in pipeline: the real pictures of the prompts, mixed with seeded noise that shrinks as s grows."""

    def __init__(self, lookup: dict[str, torch.Tensor]) -> None:
        self.lookup, self.calls = lookup, []

    def __call__(self, prompts, batch_size, guidance_scale, num_inference_steps, seed, upsample):
        self.calls.append((len(prompts), guidance_scale, num_inference_steps, seed, upsample))
        gen = torch.Generator().manual_seed(seed)
        clean = torch.stack([self.lookup[p] for p in prompts])
        noise = torch.randn(clean.shape, generator=gen)
        weight = 1.0 / (1.0 + guidance_scale)
        return SimpleNamespace(samples=((1 - weight) * clean + weight * noise).clamp(-1, 1))


def tiny_clip() -> NoisedClip:
    """A small untrained CLIP with a byte tokenizer: enough to compute a CLIP score."""
    clip = NoisedClip(replace(MINI_CLIP, n_embd=32, n_head_state_text=16, n_head_text=2, n_xf_blocks_text=1,
                              n_head_state_image=16, n_head_image=2, n_xf_blocks_image=1, patch_size=8)).eval()
    clip.tokenizer = ByteClipTokenizer()
    return clip


@pytest.fixture(scope="module")
def sweep() -> dict:
    data = load_shapes(12, seed=5, split="train")
    lookup = dict(zip(data.captions, data.images, strict=True))
    torch.manual_seed(0)
    clip = tiny_clip()
    pipes = {"cfg": BlurPipe(lookup), "clip-noised": BlurPipe(lookup)}
    scales = {"cfg": (1.0, 9.0), "clip-noised": (0.0, 3.0)}
    other = load_shapes(12, seed=6, split="train")
    result = ch12.method_sweep(pipes, clip, PictureFeatureNet(5).eval(), data.captions, data.images, scales,
                               seeds=(0, 1), steps=7, floor=(other.images, other.captions))
    return {"result": result, "pipes": pipes}


def test_every_method_scale_and_seed_is_one_row_of_six_metrics(sweep) -> None:
    rows = sweep["result"]["rows"]
    assert [(r["method"], r["scale"], r["seed"]) for r in rows] == [
        ("cfg", 1.0, 0), ("cfg", 9.0, 0), ("cfg", 1.0, 1), ("cfg", 9.0, 1),
        ("clip-noised", 0.0, 0), ("clip-noised", 3.0, 0), ("clip-noised", 0.0, 1), ("clip-noised", 3.0, 1)]
    assert all(set(ch12.METRICS) <= set(r) for r in rows)
    calls = sweep["pipes"]["cfg"].calls
    assert {c[2] for c in calls} == {7} and not any(c[4] for c in calls) and {c[3] for c in calls} == {0, 1}
    # less noise (larger s here) → closer to the real pictures: lower FID-proxy, higher oracle accuracy
    by = {(r["method"], r["scale"], r["seed"]): r for r in rows}
    for seed in (0, 1):
        assert by[("cfg", 9.0, seed)]["fid_proxy"] < by[("cfg", 1.0, seed)]["fid_proxy"]
        assert by[("cfg", 9.0, seed)]["oracle"] >= by[("cfg", 1.0, seed)]["oracle"]


def test_the_floor_is_other_real_pictures_scored_like_a_method(sweep) -> None:
    floor = sweep["result"]["floor"]
    assert set(floor) == set(ch12.METRICS)
    assert floor["oracle"] == 1.0  # the oracle reads real scenes right
    assert floor["fid_proxy"] > 0  # two real sets of 12 pictures are not the same distribution estimate
    worst = max(r["fid_proxy"] for r in sweep["result"]["rows"])
    assert floor["fid_proxy"] < worst  # the noisiest stand-in pictures are farther from the real set than real ones


def test_curves_average_over_seeds(sweep) -> None:
    table = ch12.curves(sweep["result"])
    rows = sweep["result"]["rows"]
    want = sum(r["clip_score"] for r in rows if r["method"] == "cfg" and r["scale"] == 9.0) / 2
    assert table["cfg"]["scale"] == [1.0, 9.0] and table["cfg"]["clip_score"][1] == pytest.approx(want)


def _results(curve: dict[str, dict[str, list[float]]]) -> dict:
    rows = [{"method": m, "scale": s, "seed": 0, **{k: v[i] for k, v in c.items() if k != "scale"}}
            for m, c in curve.items() for i, s in enumerate(c["scale"])]
    return {"config": {"scales": {m: c["scale"] for m, c in curve.items()}}, "rows": rows}


def _curve(scales, **metrics) -> dict[str, list[float]]:
    base = {m: [0.5] * len(scales) for m in ch12.METRICS}
    return {"scale": list(scales), **base, **metrics}


def test_claims_hold_exactly_when_their_numbers_say_so() -> None:
    paper_like = _results({
        "cfg": _curve((1, 2), fid_proxy=[5.0, 4.0], precision=[0.6, 0.8], recall=[0.7, 0.6],
                      clip_score=[20.0, 22.0], oracle=[0.5, 0.7]),
        "clip-noised": _curve((0, 4), fid_proxy=[6.0, 7.0], precision=[0.5, 0.55], recall=[0.55, 0.5],
                              clip_score=[20.0, 25.0], oracle=[0.5, 0.55]),
        "clip-clean": _curve((0, 4), clip_score=[20.0, 21.0], oracle=[0.5, 0.45]),
    })
    found = ch12.claims(paper_like)
    assert [found[k]["holds"] for k in ("i_cfg_closer_to_pareto", "ii_clip_score_vs_oracle",
                                        "iii_noised_beats_clean")] == [True, True, True]
    assert found["i_cfg_closer_to_pareto"]["fid_proxy vs precision"] == {"clip-noised_beaten_by_cfg": 1.0,
                                                                          "cfg_beaten_by_clip-noised": 0.0}
    reversed_ = _results({
        "cfg": _curve((1, 2), fid_proxy=[6.0, 7.0], precision=[0.5, 0.55], recall=[0.55, 0.5],
                      clip_score=[20.0, 26.0], oracle=[0.5, 0.5]),
        "clip-noised": _curve((0, 4), fid_proxy=[5.0, 4.0], precision=[0.6, 0.8], recall=[0.7, 0.6],
                              clip_score=[20.0, 25.0], oracle=[0.5, 0.7]),
    })
    found = ch12.claims(reversed_)
    assert not found["i_cfg_closer_to_pareto"]["holds"] and not found["ii_clip_score_vs_oracle"]["holds"]
    assert "iii_noised_beats_clean" not in found  # no clean-CLIP curve, no claim (iii)


def test_bad_inputs_are_one_clear_error(sweep) -> None:
    data = load_shapes(4, seed=5)
    with pytest.raises(ValueError, match="no pipeline for method 'clip-clean'"):
        ch12.draw(sweep["pipes"], "clip-clean", data.captions, 1.0, 0, 5)
    with pytest.raises(ValueError, match="3 real pictures for 4 prompts"):
        ch12.method_sweep(sweep["pipes"], None, None, data.captions, data.images[:3])
    with pytest.raises(ValueError, match="unknown metric"):
        ch12.better("fid")


class TrainedPipe(BlurPipe):
    """A stand-in snapshot: the later its training step, the less noise its pictures carry."""

    def __init__(self, lookup: dict[str, torch.Tensor], step: int) -> None:
        super().__init__(lookup)
        self.step = step

    def __call__(self, prompts, batch_size, guidance_scale, num_inference_steps, seed, upsample):
        return super().__call__(prompts, batch_size, guidance_scale * self.step / 1000, num_inference_steps, seed,
                                upsample)


def test_guides_by_step_measures_every_chosen_snapshot_once_and_extends(tmp_path, monkeypatch, sweep) -> None:
    data, other = load_shapes(12, seed=5, split="train"), load_shapes(12, seed=6, split="train")
    lookup = dict(zip(data.captions, data.images, strict=True))
    clip = object()  # the stand-in pipes never call the guiding CLIP
    eval_clip = tiny_clip()
    kit = ({"noised": clip, "eval": eval_clip}, PictureFeatureNet(5).eval(), data, other, {})
    monkeypatch.setattr(ch12, "_eval_kit", lambda n, with_mini=False: kit)
    monkeypatch.setattr(ch12, "mini_text2im", lambda path: int(path.name[len("ema-step-"):-len(".safetensors")]))
    monkeypatch.setattr(ch12, "guided_pipes", lambda step, clips, names: {
        "cfg": TrainedPipe(lookup, step), "clip-noised": TrainedPipe(lookup, step)})
    (tmp_path / "snapshots").mkdir()
    for step in (1000, 2000, 3000, 4000):
        (tmp_path / "snapshots" / f"ema-step-{step:07d}.safetensors").touch()
    first = ch12.guides_by_step(tmp_path, every=2000, n=12, seeds=(0, 1), steps=5)
    keys = [(r["step"], r["method"], r["scale"], r["seed"]) for r in first["rows"]]
    assert sorted({k[0] for k in keys}) == [2000, 4000]  # only every 2000th snapshot
    assert len(keys) == len(set(keys)) == 2 * 2 * 3  # steps × seeds × (cfg 1, cfg 3, clip 4)
    fid = ch12.by_step_table(first, "fid_proxy")
    assert set(fid) == {("cfg", 1.0), ("cfg", 3.0), ("clip-noised", 4.0)}
    assert all(by[4000] < by[2000] for by in fid.values())  # the stand-ins improve with training
    (tmp_path / "snapshots" / "ema-step-0006000.safetensors").touch()
    calls = []
    monkeypatch.setattr(ch12, "mini_text2im", lambda path: calls.append(path.name) or 6000)
    more = ch12.guides_by_step(tmp_path, every=2000, n=12, seeds=(0, 1), steps=5, extend=first)
    assert calls == ["ema-step-0006000.safetensors"] and more["rows"][:len(first["rows"])] == first["rows"]
    assert sorted({r["step"] for r in more["rows"]}) == [2000, 4000, 6000]
    assert more["provenance"]["extends"] == first["provenance"]  # the earlier run's time and machine stay on record
    with pytest.raises(ValueError, match="measure it anew"):
        ch12.guides_by_step(tmp_path, every=2000, n=12, seeds=(0,), steps=5, extend=first)
    with pytest.raises(ValueError, match="unknown metric"):
        ch12.by_step_table(first, "fid")


def test_whiten_background_turns_a_tinted_background_white_and_leaves_white_alone() -> None:
    real = load_shapes(6, seed=5, split="train").images  # pictures on white
    assert torch.equal(ch12.whiten_background(real), real.clamp(-1, 1))
    assert torch.all(ch12.background_rgb(real) == 255)
    tint = torch.tensor([0.9, 0.8, 0.85])[None, :, None, None]  # a grey-blue-ish cast in 0–1 intensity
    tinted = ((real + 1) / 2 * tint) * 2 - 1
    assert torch.allclose(ch12.background_rgb(tinted), (255 * tint.flatten()).expand(6, 3), atol=1e-3)
    assert torch.allclose(ch12.whiten_background(tinted), real, atol=1e-5)  # the same factor brightens the shapes
    dark = torch.full((1, 3, 4, 4), -0.9)  # median 0.05: the gain stops at max_gain
    assert torch.allclose((ch12.whiten_background(dark, max_gain=2.0) + 1) / 2, torch.full_like(dark, 0.1))


def test_background_experiment_scores_each_set_as_drawn_and_whitened() -> None:
    data = load_shapes(12, seed=5, split="train")
    tint = torch.tensor([0.9, 0.9, 0.8])[None, :, None, None]
    lookup = {c: ((x + 1) / 2 * tint[0]) * 2 - 1 for c, x in zip(data.captions, data.images, strict=True)}
    pipes = {"cfg": BlurPipe(lookup), "clip-noised": BlurPipe(lookup)}  # tinted, less noisy as s grows
    torch.manual_seed(0)
    clip = tiny_clip()
    rows = ch12.background_experiment(pipes, clip, PictureFeatureNet(5).eval(), data.captions, data.images,
                                      {"cfg": (40.0,), "clip-noised": (40.0,)}, seeds=(0,), steps=5)
    assert [(r["method"], r["seed"]) for r in rows] == [("real", 0), ("cfg", 0), ("clip-noised", 0)]
    assert rows[0]["white_share"] == 1.0 and rows[0]["sampled"] == rows[0]["whitened"]  # real: on white already
    fake = rows[1]
    assert set(fake["sampled"]) == set(fake["whitened"]) == set(ch12.METRICS)
    assert fake["white_share"] == 0.0 and fake["background"][2] < 215  # the blue channel's tint: 0.8 × 255
    assert fake["whitened"]["fid_proxy"] < fake["sampled"]["fid_proxy"]  # whitening removes the tint's distance
