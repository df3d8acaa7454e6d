"""Checkers for the exercises of chapter 6 (classifier-free guidance).

* :func:`check_guided_output` — combine the two halves of a doubled batch into the guided model output:
  ε̂ = ε_u + s·(ε_c − ε_u) on the ε channels, the conditional branch's variance channels unchanged;
* :func:`check_implicit_classifier_grad` — the gradient of the implicit classifier from two noise
  predictions, ∇ log p(y | x_t) = −(ε*(x_t|y) − ε*(x_t)) / √(1 − ᾱ_t), checked on a Gaussian mixture whose
  class posterior is exact;
* :func:`check_drop_labels` — label dropout for training: each label replaced by the null label with
  probability p_uncond, the randomness drawn from the given generator only;
* :func:`check_cfg_toy_prediction` — a prediction: which share of exact-score guided samples of a Gaussian
  mixture falls in the target class at s = 0, and whether all of them do at s = 1 (sampled live).

Each checker runs the reader's function on fresh inputs, compares with the library (or a closed form) and,
when the answer is wrong, names the typical slip.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from glide_edu.checks import (
    ExerciseError,
    call_reader,
    expect_bool,
    expect_close,
    expect_fraction,
    expect_shape,
    expect_tensor,
    passed,
    raise_if_matches,
    values_close,
)
from glide_edu.guidance import class_conditional_cfg, sample_cfg
from glide_edu.respace import create_diffusion
from glide_edu.toy import LabelledGaussianMixture

__all__ = [
    "check_guided_output",
    "check_implicit_classifier_grad",
    "check_drop_labels",
    "check_cfg_toy_prediction",
    "toy_class_shares",
]

ATOL = 1e-5
RTOL = 1e-5


# ------------------------------------------------------------------------- exercise 1: guided output
def check_guided_output(fn: Callable) -> bool:
    """Check ``fn(out_cond, out_uncond, s, eps_channels) -> guided output`` (same shape as ``out_cond``)."""
    name = "guided_output"
    gen = torch.Generator().manual_seed(606)
    for s in (3.0, 7.5, 0.0, 1.0):  # distinctive scales first: at s = 0 several slips coincide
        for c, channels in ((1, 2), (3, 6)):
            cond = torch.randn(4, channels, 5, 5, generator=gen)
            uncond = torch.randn(4, channels, 5, 5, generator=gen)
            where = f"{name} (s = {s:g}, {c} ε channel{'s' if c > 1 else ''} of {channels})"
            out = expect_tensor(call_reader(fn, name, cond.clone(), uncond.clone(), s, c), name)
            expect_shape(out, cond.shape, where, "(B,C,H,W)")

            def fake_net(x, t, y, cond=cond, uncond=uncond):  # the doubled batch the library builds
                return torch.cat([cond, uncond])

            ref = class_conditional_cfg(fake_net, s, 1, c)(cond[:, :c], torch.zeros(4), y=torch.zeros(4).long())
            if values_close(out, ref, ATOL, RTOL):
                continue
            ec, eu, vc, vu = cond[:, :c], uncond[:, :c], cond[:, c:], uncond[:, c:]
            guided = eu + s * (ec - eu)
            raise_if_matches(
                out,
                {
                    "the variance channels were guided too; only the first eps_channels (ε) are extrapolated — "
                    "the rest is the conditional branch's variance, unchanged": uncond + s * (cond - uncond),
                    "the variance channels come from the unconditional branch; GLIDE keeps the conditional "
                    "branch's": torch.cat([guided, vu], 1),
                    "the branches are swapped: start from the unconditional ε and move towards the conditional one, "
                    "ε_u + s·(ε_c − ε_u)": torch.cat([ec + s * (eu - ec), vc], 1),
                    "that is Ho & Salimans' (1 + w)·ε_c − w·ε_u with w = s; in GLIDE's convention s = 1 + w, "
                    "so s = 1 must give ε_c": torch.cat([(1 + s) * ec - s * eu, vc], 1),
                    "s·ε_c alone drops the unconditional term: ε̂ = ε_u + s·(ε_c − ε_u)": torch.cat([s * ec, vc], 1),
                },
                where,
                ATOL,
                RTOL,
            )
            expect_close(
                out,
                ref,
                where,
                ATOL,
                RTOL,
                hint="cat([ε_u + s·(ε_c − ε_u), v_c], dim=1) with ε = the first eps_channels channels",
            )
    return passed(name, "ε_u + s·(ε_c − ε_u) on the ε channels, the conditional variance kept (s = 0, 1, 3, 7.5)")


# ------------------------------------------------------------- exercise 2: the implicit classifier
def check_implicit_classifier_grad(fn: Callable) -> bool:
    """Check ``fn(eps_cond, eps_uncond, alpha_bar) -> ∇_x log p(y | x_t)`` on a mixture with exact scores."""
    name = "implicit_classifier_grad"
    mix = LabelledGaussianMixture.example()
    gen = torch.Generator().manual_seed(66)
    for alpha_bar in (0.9, 0.4, 0.05):
        x = (0.9 * torch.randn(24, 2, generator=gen, dtype=torch.float64)).requires_grad_()
        y = torch.arange(24) % mix.num_classes
        (ref,) = torch.autograd.grad(mix.log_class_posterior(x, alpha_bar).gather(1, y[:, None]).sum(), x)
        x = x.detach()
        ec, eu = mix.eps(x, alpha_bar, y), mix.eps(x, alpha_bar)
        out = expect_tensor(call_reader(fn, name, ec.clone(), eu.clone(), alpha_bar), name)
        where = f"{name} (ᾱ_t = {alpha_bar})"
        expect_shape(out, ref.shape, where, "(B,D)")
        if values_close(out, ref, 1e-8, 1e-6):
            continue
        diff = ec - eu
        raise_if_matches(
            out,
            {
                "the sign is flipped: ε points *away* from the data (ε = −√(1−ᾱ)·score), so the gradient is "
                "−(ε_c − ε_u)/√(1−ᾱ_t)": diff / math.sqrt(1 - alpha_bar),
                "the scale is missing: ε = −√(1−ᾱ_t)·∇log p, so divide the difference by √(1−ᾱ_t)": -diff,
                "multiplied by √(1−ᾱ_t) instead of dividing by it": -diff * math.sqrt(1 - alpha_bar),
                "divided by √ᾱ_t; the score scale is √(1−ᾱ_t), the noise level, not the signal level": -diff
                / math.sqrt(alpha_bar),
                "divided by (1−ᾱ_t), the variance; ε carries one factor of the standard deviation √(1−ᾱ_t)": -diff
                / (1 - alpha_bar),
            },
            where,
            1e-8,
            1e-6,
        )
        hint = "∇ log p(y|x_t) = ∇ log p(x_t|y) − ∇ log p(x_t) with ∇ log p = −ε/√(1−ᾱ_t)"
        expect_close(out, ref, where, 1e-8, 1e-6, hint=hint)
    return passed(name, "matches autograd of Bayes' log p(y|x_t) on a Gaussian mixture at three noise levels")


# ------------------------------------------------------------------------ exercise 3: label dropout
def check_drop_labels(fn: Callable) -> bool:
    """Check ``fn(labels, p_uncond, null_label, generator) -> labels`` (a new tensor; input untouched)."""
    name = "drop_labels"
    n, null = 20000, 10
    labels = torch.arange(n) % 10
    for p in (0.0, 0.1, 0.5, 1.0):
        where = f"{name} (p_uncond = {p})"
        before = labels.clone()
        out = expect_tensor(call_reader(fn, name, labels, p, null, torch.Generator().manual_seed(7)), name)
        expect_shape(out, labels.shape, where, "(N,)")
        if not torch.equal(labels, before):
            raise ExerciseError(f"{where}: the input labels were modified in place; clone them first")
        if out.is_floating_point():
            raise ExerciseError(f"{where}: labels must stay integers (an embedding index), got {out.dtype}")
        kept = out != null
        changed = kept & (out != labels)
        if changed.any():
            if bool((out[changed] == 0).all()):
                raise ExerciseError(f"{where}: dropped labels must become the null label {null}, not 0")
            raise ExerciseError(f"{where}: a label that is not dropped must stay as it was")
        frac = float((~kept).float().mean())
        tol = 4 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-9
        if abs(frac - p) > tol:
            if abs(frac - (1 - p)) <= tol:
                raise ExerciseError(
                    f"{where}: {frac:.3f} of the labels were dropped — that is 1 − p_uncond; drop where rand < p_uncond"
                )
            raise ExerciseError(f"{where}: {frac:.3f} of the labels were dropped, expected about {p}")
    # The drops must come from `generator` alone: equal seeds give equal drops whatever the global RNG holds,
    # different seeds give different drops. The reader's global RNG state is restored afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(101)
        a = call_reader(fn, name, labels, 0.3, null, torch.Generator().manual_seed(1))
        torch.manual_seed(202)
        a_again = call_reader(fn, name, labels, 0.3, null, torch.Generator().manual_seed(1))
        torch.manual_seed(101)
        b = call_reader(fn, name, labels, 0.3, null, torch.Generator().manual_seed(2))
    if not torch.equal(expect_tensor(a, name), expect_tensor(a_again, name)):
        raise ExerciseError(
            f"{name}: two calls with equally seeded generators gave different drops — the randomness does not "
            "come from `generator` (the global torch RNG or NumPy's?); pass it on: torch.rand(..., generator=generator)"
        )
    if torch.equal(a, b):
        raise ExerciseError(f"{name}: two generators gave the same drops — draw the randomness from `generator`")
    return passed(name, "each label becomes the null label with probability p_uncond, the others are untouched")


# ------------------------------------------- prediction: what does guidance at s = 0 and s = 1 sample?
def toy_class_shares(n: int = 300, steps: int = 50, seed: int = 1, target: int = 1) -> dict[float, tuple[float, int]]:
    """Guided sampling of :meth:`LabelledGaussianMixture.example` towards ``target`` with exact scores, s = 0 and 1.

    For each scale: (the fraction of the ``n`` samples whose most likely class under the exact classifier
    p(y | x_0) is ``target``, the number of samples that are not). The set-up is that of chapter 6 § 2.2: the
    same x_T (``seed``) and per-step noise (``seed + 1``) for both scales, ``steps`` respaced ancestral steps.
    """
    mix = LabelledGaussianMixture.example()
    sampler = create_diffusion(1000, "cosine", str(steps), model_var_type="fixed_small")
    model = mix.as_model(create_diffusion(1000, "cosine").alphas_cumprod)
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    labels = torch.full((n,), target)
    out = {}
    for s in (0.0, 1.0):
        pts = sample_cfg(model, sampler, labels, s, mix.num_classes, x_T,
                         generator=torch.Generator().manual_seed(seed + 1), clip_denoised=False)
        is_target = mix.log_class_posterior(pts, 1.0).argmax(1) == target
        out[s] = (float(is_target.double().mean()), int((~is_target).sum()))
    return out


def check_cfg_toy_prediction(share_s0: object, all_class1_at_s1: object, tolerance: float = 0.1) -> bool:
    """Check two predictions about guiding the chapter-6 mixture towards class 1, against live sampling.

    ``share_s0``: the fraction of the s = 0 samples that the exact classifier calls class 1 (within
    ``tolerance`` of the live value); ``all_class1_at_s1``: whether every s = 1 sample is called class 1.
    """
    guess_share = expect_fraction(share_s0, "share_s0")
    guess_all = expect_bool(all_class1_at_s1, "all_class1_at_s1")
    shares = toy_class_shares()
    (live_s0, _), (live_s1, n_other) = shares[0.0], shares[1.0]
    n = 300
    prior = float(LabelledGaussianMixture.example().class_weights[1])
    problems = []
    if abs(guess_share - live_s0) > tolerance:
        problems.append(
            f"share_s0: you predicted {guess_share:.2f}, the exact classifier calls {live_s0:.2f} of the s = 0 "
            "samples class 1. At s = 0 the guided prediction is ε(x_t | ∅) + 0·(ε(x_t | y) − ε(x_t | ∅)): the label "
            "is not used at all, so the samples follow the whole mixture p(x_0) — and class 1 holds its prior weight "
            f"p(y = 1) = {prior:.2f} of that mass"
        )
    truth_all = n_other == 0
    if guess_all != truth_all:
        if truth_all:
            problems.append(f"all_class1_at_s1: every one of the {n} samples at s = 1 is called class 1")
        else:
            problems.append(
                f"all_class1_at_s1: not every one — {n_other} of the {n} samples at s = 1 land where another class is "
                "more likely. s = 1 samples p(x_0 | y = 1) as it is, tails included, and class 1's central component "
                "overlaps its neighbours (the shaded regions of § 2.2); only s > 1 pushes those samples out"
            )
    if problems:
        raise ExerciseError("\n".join(problems))
    return passed(
        "guidance prediction",
        f"class 1 gets {live_s0:.2f} of the samples at s = 0 (its prior weight is {prior:.2f}) and {live_s1:.2f} at "
        f"s = 1 ({n_other} of {n} samples are called another class)",
    )
