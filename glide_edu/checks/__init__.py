"""Exercise checkers for the chapters.

Each ``check_*`` function runs the reader's answer on fresh inputs, compares it with the library (or a
known closed form) and either prints a short "correct" message or raises :class:`ExerciseError` (an
``AssertionError``, so an executed chapter with a wrong solution fails) with friendly, specific feedback.
Chapter-specific checkers live in ``glide_edu.checks.chNN`` and are re-exported here.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


class ExerciseError(AssertionError):
    """A wrong exercise answer; the message says what was expected and what was found."""


def passed(name: str, detail: str = "") -> bool:
    """Print the success line and return True (so a cell can ``assert check_…(...)``)."""
    print(f"✅ {name}: correct{' — ' + detail if detail else ''}")
    return True


def expect_tensor(value: object, name: str) -> Tensor:
    """Fail kindly unless ``value`` is a torch tensor."""
    if not isinstance(value, Tensor):
        raise ExerciseError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def expect_shape(value: Tensor, shape: Sequence[int], name: str, axes: str = "") -> None:
    """Fail kindly unless ``value.shape == shape``; ``axes`` names the dimensions, e.g. "(B,C,H,W)"."""
    if tuple(value.shape) != tuple(shape):
        label = f"{axes} = " if axes else ""
        raise ExerciseError(f"{name}: shape {label}{tuple(shape)} expected, got {tuple(value.shape)}")


def expect_close(
    actual: Tensor, expected: Tensor, name: str, atol: float = 1e-5, rtol: float = 1e-5, hint: str = ""
) -> None:
    """Fail kindly unless ``actual`` ≈ ``expected`` (shapes first, then values)."""
    expect_tensor(actual, name)
    expect_shape(actual, expected.shape, name)
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.isfinite(actual).all():
        raise ExerciseError(f"{name}: the result contains NaN or inf{' — ' + hint if hint else ''}")
    err = (actual - expected).abs()
    tol = atol + rtol * expected.abs()
    if (err > tol).any():
        worst = int(err.argmax())
        raise ExerciseError(
            f"{name}: values differ from the expected ones (largest error {float(err.max()):.3g} at flat index "
            f"{worst}: got {float(actual.flatten()[worst]):.5g}, expected {float(expected.flatten()[worst]):.5g})"
            + (f". Hint: {hint}" if hint else "")
        )


def expect_number(
    actual: object, expected: float, name: str, rel: float = 1e-3, abs_: float = 1e-6, hint: str = ""
) -> None:
    """Fail kindly unless a scalar answer is within tolerance."""
    try:
        value = float(actual)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ExerciseError(f"{name}: expected a number, got {actual!r}") from None
    if abs(value - expected) > abs_ + rel * abs(expected):
        raise ExerciseError(
            f"{name}: got {value:.6g}, expected about {expected:.6g}" + (f". Hint: {hint}" if hint else "")
        )


def values_close(actual: Tensor, expected: Tensor, atol: float = 1e-5, rtol: float = 1e-5) -> bool:
    """True when shapes agree and every value is finite and within ``atol + rtol·|expected|`` (no message)."""
    if actual.shape != expected.shape:
        return False
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    return bool(torch.isfinite(a).all() and ((a - e).abs() <= atol + rtol * e.abs()).all())


def raise_if_matches(
    actual: Tensor, candidates: dict[str, Tensor], name: str, atol: float = 1e-5, rtol: float = 1e-5
) -> None:
    """Raise with the hint of the first typical wrong answer (hint → its value) that ``actual`` equals."""
    for hint, candidate in candidates.items():
        if values_close(actual, candidate, atol, rtol):
            raise ExerciseError(f"{name}: {hint}")


def call_reader(fn, what: str, *args):
    """Call the reader's function; a crash becomes an ExerciseError that keeps the original message."""
    try:
        return fn(*args)
    except ExerciseError:
        raise
    except Exception as err:
        raise ExerciseError(f"{what} raised {type(err).__name__}: {err}") from err


# ------------------------------------------------------------------------- answers that are predictions
def expect_filled(value: object, name: str) -> object:
    """Fail kindly while a prediction still holds the stub's placeholder (``...`` or ``None``)."""
    if value is ... or value is None:
        raise ExerciseError(f"{name}: replace the placeholder ... with your prediction, then run the cell again")
    return value


def expect_choice(value: object, choices: Sequence[str], name: str) -> str:
    """The reader's answer as one of ``choices`` (case and surrounding spaces ignored)."""
    expect_filled(value, name)
    options = " or ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise ExerciseError(f"{name}: expected one of the strings {options}, got {value!r}")
    key = value.strip().lower()
    for choice in choices:
        if key == choice.lower():
            return choice
    raise ExerciseError(f"{name}: expected one of {options}, got {value!r}")


def expect_integer(value: object, name: str) -> int:
    """The reader's answer as a Python int (an int-valued float, a NumPy scalar or a 1-element tensor is accepted)."""
    expect_filled(value, name)
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ExerciseError(f"{name}: expected one integer, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    elif not isinstance(value, (bool, int, float)) and hasattr(value, "item"):
        try:
            value = value.item()  # NumPy scalars and 1-element arrays
        except (TypeError, ValueError):
            raise ExerciseError(f"{name}: expected one integer, got {value!r}") from None
    if isinstance(value, bool):
        raise ExerciseError(f"{name}: expected an integer, got the boolean {value}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ExerciseError(f"{name}: expected an integer, got {value!r}") from None


def expect_bool(value: object, name: str) -> bool:
    """The reader's answer as True or False (NumPy booleans accepted; not 0/1 or strings)."""
    expect_filled(value, name)
    if isinstance(value, bool):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise ExerciseError(f"{name}: expected True or False, got {value!r}")


def expect_fraction(value: object, name: str) -> float:
    """The reader's answer as a float in [0, 1] (a percentage like 35 is refused with a hint)."""
    expect_filled(value, name)
    if isinstance(value, bool):
        raise ExerciseError(f"{name}: expected a number between 0 and 1, got the boolean {value}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ExerciseError(f"{name}: expected a number between 0 and 1, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        hint = f" — write a percentage as a fraction ({number:g} % is {number / 100:g})" if 1 < number <= 100 else ""
        raise ExerciseError(f"{name}: expected a number between 0 and 1, got {number:g}{hint}")
    return number


# Chapter checkers, re-exported (imported last: they use the helpers above).
from glide_edu.checks.ch01 import check_cosine_betas, check_q_sample, check_snr_crossing  # noqa: E402
from glide_edu.checks.ch02 import (  # noqa: E402
    check_mu_from_eps,
    check_one_shot_limit,
    check_p_step,
    check_posterior_mean_variance,
)
from glide_edu.checks.ch03 import check_elbo_weight, check_l_simple, check_timestep_embedding  # noqa: E402
from glide_edu.checks.ch04 import check_ddim_step, check_learned_log_variance, check_respace_betas  # noqa: E402
from glide_edu.checks.ch06 import check_drop_labels, check_guided_output, check_implicit_classifier_grad  # noqa: E402

__all__ = [
    "ExerciseError",
    "check_cosine_betas",
    "check_elbo_weight",
    "check_l_simple",
    "check_timestep_embedding",
    "check_ddim_step",
    "check_learned_log_variance",
    "check_respace_betas",
    "check_drop_labels",
    "check_guided_output",
    "check_implicit_classifier_grad",
    "check_mu_from_eps",
    "check_one_shot_limit",
    "check_p_step",
    "check_posterior_mean_variance",
    "check_q_sample",
    "check_snr_crossing",
    "expect_close",
    "expect_number",
    "expect_shape",
    "expect_tensor",
    "passed",
    "call_reader",
    "expect_bool",
    "expect_choice",
    "expect_filled",
    "expect_fraction",
    "expect_integer",
    "raise_if_matches",
    "values_close",
]
from glide_edu.checks.ch05 import check_classifier_gradient, check_guided_eps, check_guided_mean  # noqa: E402

__all__ += ["check_classifier_gradient", "check_guided_eps", "check_guided_mean"]

# The prediction and experiment exercises (the truth is computed live from the library).
from glide_edu.checks.ch01 import check_forgetting_prediction  # noqa: E402
from glide_edu.checks.ch02 import check_variance_prediction  # noqa: E402
from glide_edu.checks.ch03 import check_weight_prediction  # noqa: E402
from glide_edu.checks.ch04 import check_respacing_prediction  # noqa: E402
from glide_edu.checks.ch05 import check_classifier_timestep, check_half_accuracy_steps  # noqa: E402
from glide_edu.checks.ch06 import check_cfg_toy_prediction  # noqa: E402

__all__ += [
    "check_forgetting_prediction",
    "check_variance_prediction",
    "check_weight_prediction",
    "check_respacing_prediction",
    "check_classifier_timestep",
    "check_half_accuracy_steps",
    "check_cfg_toy_prediction",
]
from glide_edu.checks.ch11 import check_glide_cfg, check_known_region_clamp, check_quantize_8bit  # noqa: E402

__all__ += ["check_glide_cfg", "check_known_region_clamp", "check_quantize_8bit"]
from glide_edu.checks.ch07 import check_bpe_merge, check_guidance_prediction, check_text_conditioning  # noqa: E402

__all__ += ["check_guidance_prediction", "check_text_conditioning", "check_bpe_merge"]
from glide_edu.checks.ch12 import check_method_prediction, check_precision_recall  # noqa: E402

__all__ += ["check_method_prediction", "check_precision_recall"]
from glide_edu.checks.ch15 import check_loss_scale_update, check_underflow_prediction  # noqa: E402

__all__ += ["check_loss_scale_update", "check_underflow_prediction"]
