"""Pareto fronts, the picture feature net's interface, CLIP score."""

from __future__ import annotations

import pytest
import torch

from glide_edu.metrics import fid_proxy
from glide_edu.text_metrics import PictureFeatureNet, clip_score, dominated_fraction, dominates, pareto_front


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
