"""Pareto fronts, the picture feature net's interface, CLIP score."""

from __future__ import annotations

import pytest
import torch

from glide_edu.metrics import fid_proxy
from glide_edu.text_metrics import (
    PICTURE_NET_PATH,
    PictureFeatureNet,
    clip_score,
    dominated_fraction,
    dominates,
    pareto_front,
)


def test_pareto_front_and_domination() -> None:
    pts = [(1.0, 5.0), (2.0, 4.0), (1.5, 3.0), (3.0, 1.0), (2.0, 4.0)]
    assert pareto_front(pts) == [0, 1, 3, 4]  # (1.5, 3) is beaten by (2, 4); equal points do not beat each other
    assert dominates((2, 4), (1.5, 3)) and not dominates((2, 4), (2, 4))
    # FID-proxy: lower is better; precision: higher is better
    assert pareto_front([(10.0, 0.8), (12.0, 0.9), (11.0, 0.7)], maximize=(False, True)) == [0, 1]
    assert dominated_fraction([(1.0, 1.0), (5.0, 5.0)], [(2.0, 2.0)]) == 0.5
    with pytest.raises(ValueError, match="no points"):
        dominated_fraction([], [(1.0, 1.0)])


def test_fid_proxy_takes_the_picture_net_and_is_zero_on_itself() -> None:
    torch.manual_seed(0)
    net = PictureFeatureNet(10).eval()
    x = torch.rand(64, 3, 32, 32) * 2 - 1
    assert fid_proxy(x, x, net) == pytest.approx(0.0, abs=1e-3)
    assert fid_proxy(x, (x * 0.3).clamp(-1, 1), net) > 0.01
    with pytest.raises(ValueError, match=r"takes \(N, 3, 32, 32\)"):
        net.features(torch.zeros(2, 1, 16, 16))


def test_clip_score_is_100_cos_of_the_pairs() -> None:
    from glide_edu.nn.clip import NoisedClip
    from glide_edu.tokenizers import ByteClipTokenizer
    from glide_edu.train_clip import MINI_CLIP

    torch.manual_seed(0)
    clip = NoisedClip(MINI_CLIP).eval()
    clip.tokenizer = ByteClipTokenizer()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    caps = ["a red circle", "two blue squares", "red apple"]
    tokens, lens = clip.encode_prompts(caps)
    with torch.no_grad():
        want = float((100 * (clip.text_embeddings(tokens, lens) * clip.image_embeddings(x, 0)).sum(-1)).mean())
    assert clip_score(clip, x, caps, batch=2) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="one caption per image"):
        clip_score(clip, x, caps[:2])


def test_other_captions_never_pairs_a_picture_with_its_own_caption() -> None:
    from glide_edu.text_metrics import other_captions

    tokens = torch.tensor([[1, 2], [1, 2], [1, 2], [3, 4], [5, 6], [7, 8]])  # a caption on half the rows
    for seed in range(20):
        perm = other_captions(tokens, seed)
        assert sorted(perm.tolist()) == list(range(6))
        assert all(not torch.equal(tokens[i], tokens[int(j)]) for i, j in enumerate(perm))
    with pytest.raises(ValueError, match="more than half"):
        other_captions(torch.tensor([[1], [1], [1], [2]]))


def test_caption_use_is_one_for_a_network_that_ignores_text_and_above_one_for_one_that_reads_it() -> None:
    """Two hand-made 'networks' over an exact diffusion: ε̂ from x_t alone, or from x_t and the caption's
    colour (the picture is one flat colour named by the first token), so the caption really helps."""
    from glide_edu.respace import DiffusionConfig
    from glide_edu.text_metrics import caption_use

    diffusion = DiffusionConfig(1000, "squaredcos_cap_v2").create("")
    colours = torch.tensor([[0.9, -0.9, -0.9], [-0.9, -0.9, 0.9], [-0.9, 0.9, -0.9]])  # red, blue, green
    label = torch.arange(12) % 3
    images = colours[label][:, :, None, None].expand(12, 3, 8, 8).clone()
    tokens = torch.stack([label + 1, torch.zeros(12, dtype=torch.long)], dim=1)  # 0 = padding
    mask = torch.tensor([[True, False]] * 12)
    abar = torch.tensor(diffusion.alphas_cumprod, dtype=torch.float32)

    def reads(x_t, t, tokens, mask):  # ε = (x_t − √ᾱ x0)/√(1−ᾱ) with x0 the named colour (grey if none)
        a = abar[t][:, None, None, None]
        x0 = torch.where(mask[:, :1, None, None], colours[(tokens[:, 0] - 1).clamp(min=0)][:, :, None, None], 0.0)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)

    def ignores(x_t, t, tokens, mask):
        return reads(x_t, t, torch.zeros_like(tokens), torch.zeros_like(mask))

    for fn, reads_text in ((reads, True), (ignores, False)):
        net = torch.nn.Module()
        net.forward = fn
        use = caption_use(net, diffusion, images, tokens, mask, timesteps=(200, 600), seed=3, batch=5)
        if reads_text:
            assert use["own"] < 1e-8 and use["other_over_own"] > 100 and use["empty_over_own"] > 100
        else:
            assert use["other_over_own"] == pytest.approx(1.0) and use["empty_over_own"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no padding"):
        caption_use(net, diffusion, images, tokens, torch.ones_like(mask))


@pytest.mark.skipif(not PICTURE_NET_PATH.exists(),
                    reason="the picture feature net is not shipped in this checkout")
def test_the_shipped_picture_net_tells_real_sets_apart() -> None:
    """Two sets of new shapes scenes are close in its feature space; shapes against emoji, or against the same
    scenes with their colours swapped, are far: the FID-proxy of chapter 12 sees content and colour."""
    from glide_edu.emoji import load_emoji
    from glide_edu.shapes import load_shapes
    from glide_edu.text_metrics import load_picture_net

    net = load_picture_net()
    a, b = load_shapes(200, seed=91).images, load_shapes(200, seed=92).images
    emoji = load_emoji().images[:200]
    same = fid_proxy(a, b, net)
    assert fid_proxy(a, emoji, net) > 5 * same
    assert fid_proxy(a, b[:, [2, 0, 1]], net) > 2 * same  # R, G, B rotated: other colours, same layouts
