"""Checkers for the exercises of chapter 15 (scaling up).

* :func:`check_loss_scale_update` — dynamic loss scaling's update rule: after an overflow the scale shrinks by
  ``backoff_factor`` and the count of good steps restarts; after ``growth_interval`` good steps in a row it
  grows by ``growth_factor``. Compared step by step with ``torch.amp.GradScaler`` driven by the same overflows;
* :func:`check_underflow_prediction` — a prediction: which share of the shipped digits model's float32
  gradients lands below float16's smallest normal number, and whether a loss scale of 2^16 makes any of them
  overflow (measured live).

Each checker runs the reader's answer on fresh inputs, compares with PyTorch or a live measurement and, when
the answer is wrong, names the typical slip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import torch

from glide_edu.checks import ExerciseError, call_reader, expect_bool, expect_fraction, passed
from glide_edu.precision import cast_stats, digits_gradients

__all__ = ["check_loss_scale_update", "check_underflow_prediction", "grad_scaler_trace", "underflow_truth"]

# overflow flags of the steps the checker plays (True: this step's gradients held an inf or a NaN)
FLAGS = (False, False, False, False, True, False, False, True, True, False, False, False, False, False, False,
         False, True, False, False, False)


def grad_scaler_trace(flags: Sequence[bool], init_scale: float, growth_factor: float, backoff_factor: float,
                      growth_interval: int) -> list[tuple[float, int]]:
    """(scale, growth tracker) after each step of a CPU ``torch.amp.GradScaler`` whose gradients overflow on
    the steps flagged True (an inf gradient) and are finite otherwise."""
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_factor=growth_factor,
                                  backoff_factor=backoff_factor, growth_interval=growth_interval)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.0)
    scaler.scale(torch.ones(()))  # the scaler starts its state on first use
    out = []
    for flag in flags:
        p.grad = torch.full((1,), float("inf") if flag else 1.0)
        scaler.step(opt)  # finds the inf (and skips the step)
        scaler.update()
        state = scaler.state_dict()
        out.append((float(state["scale"]), int(state["_growth_tracker"])))
    return out


def _variant(kind: str) -> Callable:
    """A typical wrong update rule (for naming the reader's slip)."""

    def update(scale, tracker, found_inf, growth_factor, backoff_factor, growth_interval):
        if found_inf:
            if kind == "no_backoff":
                return scale, 0
            return scale * backoff_factor, (tracker if kind == "no_reset" else 0)
        tracker += 1
        if kind == "grow_every":
            return scale * growth_factor, 0
        if kind == "late" and tracker > growth_interval or kind != "late" and tracker >= growth_interval:
            return scale * growth_factor, (tracker if kind == "keep_count" else 0)
        return scale, tracker

    return update


SLIPS = {
    "no_reset": "after an overflow the count of good steps must restart at 0 — otherwise the scale grows again "
                "soon after it was cut, and overflows again",
    "no_backoff": "an overflow must shrink the scale (scale × backoff_factor); only the skipped step tells the "
                  "scaler its scale is too large",
    "grow_every": "the scale grows only after growth_interval good steps *in a row*, not after every good step",
    "late": "off by one: the scale grows on the growth_interval-th good step in a row (count + 1 == "
            "growth_interval), not one step later",
    "keep_count": "after growing, the count of good steps restarts at 0",
}


def _trace(fn: Callable, flags, init_scale, growth, backoff, interval, name) -> list[tuple[float, int]]:
    scale, tracker, out = init_scale, 0, []
    for found_inf in flags:
        result = call_reader(fn, name, scale, tracker, found_inf, growth, backoff, interval)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise ExerciseError(f"{name}: return the pair (new_scale, new_growth_tracker), got {result!r}")
        try:
            scale, tracker = float(result[0]), int(result[1])
        except (TypeError, ValueError):
            raise ExerciseError(f"{name}: return two numbers (new_scale, new_growth_tracker), got {result!r}") from None
        out.append((scale, tracker))
    return out


def check_loss_scale_update(fn: Callable) -> bool:
    """Check ``fn(scale, growth_tracker, found_inf, growth_factor, backoff_factor, growth_interval)
    -> (new_scale, new_growth_tracker)`` against ``torch.amp.GradScaler`` on a run of overflows and good steps."""
    name = "loss_scale_update"
    for init, growth, backoff, interval in ((2.0**16, 2.0, 0.5, 3), (1024.0, 1.5, 0.25, 4), (8.0, 2.0, 0.5, 1)):
        ref = grad_scaler_trace(FLAGS, init, growth, backoff, interval)
        got = _trace(fn, FLAGS, init, growth, backoff, interval, name)
        if got == ref:
            continue
        for kind, hint in SLIPS.items():
            if got == _trace(_variant(kind), FLAGS, init, growth, backoff, interval, kind):
                raise ExerciseError(f"{name}: {hint}")
        step = next(i for i, (a, b) in enumerate(zip(got, ref, strict=True)) if a != b)
        what = "an overflow" if FLAGS[step] else "a good step"
        raise ExerciseError(
            f"{name} (growth_factor {growth:g}, backoff_factor {backoff:g}, growth_interval {interval}): step "
            f"{step + 1} ({what}) gave (scale, tracker) = {got[step]}, GradScaler has {ref[step]}. Overflows: "
            f"{[i + 1 for i, f in enumerate(FLAGS) if f]}. Hint: overflow → (scale·backoff_factor, 0); a good step "
            "→ count + 1, and when that reaches growth_interval → (scale·growth_factor, 0)")
    return passed(name, f"equal to torch.amp.GradScaler over {len(FLAGS)} steps for three settings")


# ------------------------------------------------------------------ prediction: fp16 gradients of a real model
@lru_cache(maxsize=4)
def underflow_truth(n: int = 32, seed: int = 0) -> dict[str, float]:
    """Live: the share of the digits model's non-zero float32 gradients below float16's smallest normal number
    (subnormal or flushed to zero), the share flushed, and the share overflowing after a loss scale of 2^16."""
    grads = digits_gradients(n, seed)
    plain, scaled = cast_stats(grads, torch.float16), cast_stats(grads, torch.float16, 2.0**16)
    return {"below_normal": plain["subnormal"] + plain["flushed"], "flushed": plain["flushed"],
            "overflow_2_16": scaled["overflow"], "max_log2": float(grads.abs().max().log2())}


def check_underflow_prediction(below_normal_share: object, overflows_at_2_16: object, tolerance: float = 0.15) -> bool:
    """Check two predictions about the float16 cast of the digits model's gradients, against a live measurement.

    ``below_normal_share``: the fraction of the non-zero gradients smaller in size than float16's smallest
    normal number 2^-14 (within ``tolerance``); ``overflows_at_2_16``: whether any gradient × 2^16 overflows."""
    guess = expect_fraction(below_normal_share, "below_normal_share")
    guess_overflow = expect_bool(overflows_at_2_16, "overflows_at_2_16")
    truth = underflow_truth()
    problems = []
    if abs(guess - truth["below_normal"]) > tolerance:
        problems.append(
            f"below_normal_share: you predicted {guess:.2f}, the measurement is {truth['below_normal']:.2f}. A "
            "gradient is the loss's sensitivity to one of 2 million weights; the loss is a mean over a batch and "
            "pixels, and most single weights move it very little — typical sizes are 2^-17, far below float16's "
            "smallest normal 2^-14 ≈ 6.1e-5 (float16 keeps them as subnormals with fewer bits, or flushes them)")
    truth_overflow = truth["overflow_2_16"] > 0
    if guess_overflow != truth_overflow:
        problems.append(
            f"overflows_at_2_16: {'some do' if truth_overflow else 'none does'} — the largest gradient is "
            f"2^{truth['max_log2']:.1f}, so × 2^16 it is 2^{truth['max_log2'] + 16:.1f}, "
            f"{'above' if truth_overflow else 'below'} float16's largest value 65504 ≈ 2^16")
    if problems:
        raise ExerciseError("\n".join(problems))
    return passed("underflow prediction",
                  f"{truth['below_normal']:.2f} of the gradients are below 2^-14, {truth['flushed']:.4f} flush to "
                  f"zero; none overflows at 2^16 (largest 2^{truth['max_log2']:.1f})" if not truth_overflow else
                  f"{truth['below_normal']:.2f} of the gradients are below 2^-14")
