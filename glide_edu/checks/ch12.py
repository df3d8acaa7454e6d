"""Checkers for the exercises of chapter 12 (measuring the miniature).

* :func:`check_precision_recall` — k-NN precision and recall (Kynkäänniemi et al. 2019): each real feature owns
  a ball reaching its k-th nearest *other* real feature; precision is the share of generated features inside some
  real ball, recall the share of real features inside some generated ball (balls of the generated set);
* :func:`check_method_prediction` — a prediction about the chapter's sweep: which guidance method reaches the
  higher CLIP score under the evaluation CLIP, and which one the shapes oracle prefers?

Each checker runs the reader's answer on fresh inputs, compares it with the library and, when it is wrong,
names the typical slip.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from glide_edu.checks import ExerciseError, call_reader, expect_choice, passed

__all__ = ["check_precision_recall", "check_method_prediction", "method_facts"]

METHODS = ("cfg", "clip")


# ------------------------------------------------------------------------- exercise 1: precision and recall
def _knn_variants(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, tuple[float, float]]:
    """Typical wrong answers (hint → (precision, recall))."""

    def radii(x: torch.Tensor, kth: int) -> torch.Tensor:
        return torch.cdist(x, x).kthvalue(kth, dim=1).values

    def pr(r_real: torch.Tensor, r_fake: torch.Tensor) -> tuple[float, float]:
        d = torch.cdist(fake, real)  # (F, R)
        return (float((d <= r_real[None]).any(1).double().mean()), float((d.T <= r_fake[None]).any(1).double().mean()))

    right = pr(radii(real, k + 1), radii(fake, k + 1))
    return {
        "the k-th nearest neighbour of a point must not be the point itself (distance 0): sort the distances and "
        "take position k, counting the point as position 0 (kthvalue(k + 1))": pr(radii(real, k), radii(fake, k)),
        "precision and recall are swapped: precision asks whether GENERATED features fall inside the real balls "
        "(fidelity), recall whether REAL features fall inside the generated balls (coverage)": right[::-1],
        "recall needs balls around the GENERATED features (each reaching its k-th nearest generated neighbour): "
        "a real feature counts when it lies inside some generated ball, not when some generated feature lies "
        "inside its own real ball": (
            right[0],
            float((torch.cdist(real, fake) <= radii(real, k + 1)[:, None]).any(1).double().mean()),
        ),
    }


def check_precision_recall(fn: Callable) -> bool:
    """Check ``fn(real_feats, fake_feats, k) -> (precision, recall)`` against
    :func:`glide_edu.metrics.precision_recall` on feature sets that overlap partly, are disjoint, and are one
    set shifted."""
    from glide_edu.metrics import precision_recall

    name = "precision_recall"
    gen = torch.Generator().manual_seed(12)
    real = torch.randn(60, 8, generator=gen, dtype=torch.float64)
    cases = [
        (real, 0.6 * torch.randn(50, 8, generator=gen, dtype=torch.float64), 3),  # a narrow generator
        (
            real,
            torch.cat(
                [
                    real[:30] + 0.05 * torch.randn(30, 8, generator=gen, dtype=torch.float64),
                    torch.randn(30, 8, generator=gen, dtype=torch.float64) + 4.0,
                ]
            ),
            3,
        ),  # half on, half off
        (real, real[:40] * 1.8, 5),  # spread too wide
        (real, real + 10.0, 3),  # nowhere near
    ]
    for real_f, fake_f, k in cases:
        got = call_reader(fn, name, real_f.clone(), fake_f.clone(), k)
        if not isinstance(got, tuple | list) or len(got) != 2:
            raise ExerciseError(f"{name} must return a pair (precision, recall), got {type(got).__name__}")
        try:
            p, r = (float(v) for v in got)
        except (TypeError, ValueError):
            raise ExerciseError(f"{name} must return two numbers, got {got!r}") from None
        want = precision_recall(real_f, fake_f, k)
        if abs(p - want[0]) < 1e-9 and abs(r - want[1]) < 1e-9:
            continue
        for hint, wrong in _knn_variants(real_f, fake_f, k).items():
            if wrong != want and abs(p - wrong[0]) < 1e-9 and abs(r - wrong[1]) < 1e-9:
                raise ExerciseError(f"{name}: {hint}")
        raise ExerciseError(
            f"{name} gave precision {p:.4f}, recall {r:.4f}; expected {want[0]:.4f}, {want[1]:.4f} "
            f"(k = {k}, {len(real_f)} real and {len(fake_f)} generated features)"
        )
    return passed(
        name,
        "balls to the k-th nearest other point; precision: generated in real balls; recall: real in generated balls",
    )


# ------------------------------------------------------------------------- exercise 2: predict, then run
def method_facts(table: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """method ("cfg", "clip": the noised CLIP) → its best CLIP score and best oracle accuracy over the scales;
    ``table``: the sweep's curves (method → metric → values per scale, ``glide_edu.book.ch12.curves``)."""
    return {short: {metric: max(table[method][metric]) for metric in ("clip_score", "oracle")}
            for short, method in (("cfg", "cfg"), ("clip", "clip-noised"))}


def check_method_prediction(higher_clip_score: object, oracle_prefers: object, table: Mapping[str, Any]) -> bool:
    """Check two predictions ("cfg" or "clip" each) against the sweep's curves ``table``: which method's best CLIP
    score (under the evaluation CLIP) is higher, and which method's best oracle caption accuracy is higher."""
    guess_clip = expect_choice(higher_clip_score, METHODS, "higher_clip_score")
    guess_oracle = expect_choice(oracle_prefers, METHODS, "oracle_prefers")
    f = method_facts(table)
    truth_clip = max(METHODS, key=lambda m: f[m]["clip_score"])
    truth_oracle = max(METHODS, key=lambda m: f[m]["oracle"])
    problems = []
    if guess_clip != truth_clip:
        problems.append(
            f"higher_clip_score: the best CLIP score is {f['cfg']['clip_score']:.1f} with CFG and "
            f"{f['clip']['clip_score']:.1f} with CLIP guidance. "
            + (
                "CLIP guidance climbs a CLIP's similarity directly; even a different CLIP (the evaluator) rewards "
                "pictures pushed that way"
                if truth_clip == "clip"
                else "The evaluator is another CLIP: what the guiding CLIP likes need not transfer to it"
            )
        )
    if guess_oracle != truth_oracle:
        problems.append(
            f"oracle_prefers: the oracle's best whole-caption accuracy is {f['cfg']['oracle']:.2f} with CFG and "
            f"{f['clip']['oracle']:.2f} with CLIP guidance. "
            + (
                "The oracle checks colours and shapes pixel by pixel and cannot be pleased by a picture that only "
                "moves a network's features; CFG changes what the diffusion model itself draws"
                if truth_oracle == "cfg"
                else "Here CLIP guidance's pictures also satisfy the oracle more often: § 4 discusses why"
            )
        )
    if problems:
        raise ExerciseError("\n".join(problems))
    return passed("method prediction", f"best CLIP score: {truth_clip}; the oracle prefers {truth_oracle}")
