"""Chapter 12's checkers accept right answers and name the typical slips."""

from __future__ import annotations

import pytest
import torch

from glide_edu.book.ch12 import METHOD_SCALES, METRICS
from glide_edu.checks import ExerciseError
from glide_edu.checks import ch12 as checks


def knn_pr(real, fake, k, kth_shift=1, swap=False, recall_real_balls=False):
    def radii(x):
        return torch.cdist(x, x).kthvalue(k + kth_shift, dim=1).values

    d = torch.cdist(fake, real)
    p = (d <= radii(real)[None]).any(1).double().mean()
    if recall_real_balls:
        r = (d.T <= radii(real)[:, None]).any(1).double().mean()
    else:
        r = (d.T <= radii(fake)[None]).any(1).double().mean()
    return (float(r), float(p)) if swap else (float(p), float(r))


def test_precision_recall_accepts_the_knn_estimate() -> None:
    assert checks.check_precision_recall(knn_pr)


def sorted_pr(real, fake, k):
    """Right too, written with sort instead of kthvalue and with a loop."""
    r_real = torch.cdist(real, real).sort(dim=1).values[:, k]
    r_fake = torch.cdist(fake, fake).sort(dim=1).values[:, k]
    p = sum(any(torch.dist(f, x) <= r for x, r in zip(real, r_real, strict=True)) for f in fake) / len(fake)
    r = sum(any(torch.dist(x, f) <= r for f, r in zip(fake, r_fake, strict=True)) for x in real) / len(real)
    return float(p), float(r)


def test_precision_recall_accepts_a_different_right_answer() -> None:
    assert checks.check_precision_recall(sorted_pr)


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        (lambda a, b, k: knn_pr(a, b, k, kth_shift=0), "itself"),
        (lambda a, b, k: knn_pr(a, b, k, swap=True), "swapped"),
        (lambda a, b, k: knn_pr(a, b, k, recall_real_balls=True), "GENERATED features"),
        (lambda a, b, k: (0.5, 0.5), "expected"),
        (lambda a, b, k: 0.5, "pair"),
    ],
)
def test_precision_recall_names_the_slips(wrong, message: str) -> None:
    with pytest.raises(ExerciseError, match=message):
        checks.check_precision_recall(wrong)


def fake_table(clip_wins_clip_score: bool, cfg_wins_oracle: bool) -> dict:
    """Curves in the chapter's format (method → metric → value per scale) whose best values are known."""
    table = {}
    for method, scales in METHOD_SCALES.items():
        row = {"scale": list(scales), **{m: [0.1 * i for i in range(len(scales))] for m in METRICS}}
        steps = range(len(scales))
        if method == "clip-noised":
            row["clip_score"] = [30.0 + i * (2.0 if clip_wins_clip_score else 0.5) for i in steps]
            row["oracle"] = [0.1 + i * (0.02 if cfg_wins_oracle else 0.1) for i in steps]
        elif method == "cfg":
            row["clip_score"] = [30.0 + i for i in steps]
            row["oracle"] = [0.1 + i * 0.05 for i in steps]
        table[method] = row
    return table


@pytest.mark.parametrize(("clip_wins", "cfg_wins"), [(True, True), (False, True), (True, False)])
def test_method_prediction_follows_the_sweep(clip_wins: bool, cfg_wins: bool) -> None:
    table = fake_table(clip_wins, cfg_wins)
    right = ("clip" if clip_wins else "cfg", "cfg" if cfg_wins else "clip")
    assert checks.check_method_prediction(*right, table)
    wrong = ("cfg" if clip_wins else "clip", right[1])
    with pytest.raises(ExerciseError, match="higher_clip_score"):
        checks.check_method_prediction(*wrong, table)
    with pytest.raises(ExerciseError, match="oracle_prefers"):
        checks.check_method_prediction(right[0], "clip" if cfg_wins else "cfg", table)


def test_method_prediction_refuses_other_words() -> None:
    with pytest.raises(ExerciseError):
        checks.check_method_prediction("CLIP guidance", "cfg", fake_table(True, True))
    with pytest.raises(ExerciseError):
        checks.check_method_prediction(..., "cfg", fake_table(True, True))
