"""The chapter-15 checkers accept correct answers and reject the typical wrong ones with a specific message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glide_edu.checks import ExerciseError
from glide_edu.checks.ch15 import (
    FLAGS,
    check_loss_scale_update,
    check_underflow_prediction,
    grad_scaler_trace,
    underflow_truth,
)
from glide_edu.precision import cast_stats, cpu_has_native_bf16, cpu_name, format_table


@pytest.fixture(autouse=True)
def one_thread():
    """The live gradient measurement is a small model: a second thread only adds contention on a busy box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------- exercise 1: the loss-scale update rule
def update(scale, tracker, found_inf, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000, *, mode="right"):
    if found_inf:
        if mode == "no_backoff":
            return scale, 0
        return scale * backoff_factor, (tracker if mode == "no_reset" else 0)
    tracker += 1
    if mode == "grow_every":
        return scale * growth_factor, 0
    if (tracker > growth_interval) if mode == "late" else (tracker >= growth_interval):
        return scale * growth_factor, (tracker if mode == "keep_count" else 0)
    if mode == "hard_coded":
        return (scale * 2.0, 0) if tracker == growth_interval else (scale, tracker)
    return scale, tracker


def test_grad_scaler_trace_is_torch_behaviour() -> None:
    # three good steps with growth_interval 3 grow the scale, an overflow halves it and restarts the count
    trace = grad_scaler_trace([False, False, False, True, False], 8.0, 2.0, 0.5, 3)
    assert trace == [(8.0, 1), (8.0, 2), (16.0, 0), (8.0, 0), (8.0, 1)]


def test_loss_scale_update_accepts_correct(capsys) -> None:
    assert check_loss_scale_update(update)
    assert "✅" in capsys.readouterr().out
    # a tensor scale and a NumPy tracker are fine too
    assert check_loss_scale_update(lambda s, k, f, g, b, i: tuple(
        (torch.tensor(v[0]), np.int64(v[1])) for v in [update(s, k, f, g, b, i)])[0])


@pytest.mark.parametrize(("mode", "message"), [
    ("no_reset", "must restart at 0"),
    ("no_backoff", "must shrink the scale"),
    ("grow_every", "in a row"),
    ("late", "off by one"),
    ("keep_count", "after growing"),
])
def test_loss_scale_update_rejects_typical_mistakes(mode, message) -> None:
    with pytest.raises(ExerciseError, match=message):
        check_loss_scale_update(lambda *a: update(*a, mode=mode))


def test_loss_scale_update_names_a_hard_coded_factor_and_a_stub_and_a_crash() -> None:
    with pytest.raises(ExerciseError, match="growth_factor 1.5"):  # ignores the arguments: GradScaler's defaults
        check_loss_scale_update(lambda s, k, f, g, b, i: (s * 0.5, 0) if f else
                                ((s * 2.0, 0) if k + 1 >= i else (s, k + 1)))
    with pytest.raises(ExerciseError, match="return the pair"):
        check_loss_scale_update(lambda *a: None)
    with pytest.raises(ExerciseError, match="raised ZeroDivisionError"):
        check_loss_scale_update(lambda *a: 1 / 0)
    assert sum(FLAGS) >= 3 and not FLAGS[0]


# --------------------------------------------------------------------- exercise 2: the underflow prediction
def test_underflow_prediction_accepts_the_measurement_within_tolerance(capsys) -> None:
    truth = underflow_truth()
    assert 0.5 < truth["below_normal"] < 1 and truth["overflow_2_16"] == 0  # what the chapter states
    assert check_underflow_prediction(truth["below_normal"] - 0.1, False)
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize(("answer", "message"), [
    ((0.05, False), "the measurement is"),
    ((0.9, True), "none does"),
    ((..., False), "replace the placeholder"),
    ((90, False), "write a percentage as a fraction"),
    ((0.9, ...), "replace the placeholder"),
    ((0.9, "no"), "expected True or False"),
])
def test_underflow_prediction_rejects_wrong_answers(answer, message) -> None:
    with pytest.raises(ExerciseError, match=message):
        check_underflow_prediction(*answer)


# ------------------------------------------------------------------------------------- the numerics helpers
def test_format_table_and_cast_stats() -> None:
    table = format_table()
    assert [(r["exponent_bits"], r["mantissa_bits"]) for r in table.values()] == [(8, 23), (5, 10), (8, 7)]
    assert table["float16"]["smallest_normal"] == 2.0**-14 and table["float16"]["smallest_subnormal"] == 2.0**-24
    g = torch.tensor([0.0, 2.0**-30, 2.0**-20, 2.0**-10, 2.0**10])
    assert cast_stats(g, torch.float16) == {"flushed": 0.25, "subnormal": 0.25, "overflow": 0.0}
    assert cast_stats(g, torch.float16, 2.0**8)["overflow"] == 0.25
    assert cast_stats(g, torch.bfloat16) == {"flushed": 0.0, "subnormal": 0.0, "overflow": 0.0}


def test_cpu_readouts_answer_on_any_machine() -> None:
    assert isinstance(cpu_name(), str) and cpu_name()
    assert isinstance(cpu_has_native_bf16(), bool)
