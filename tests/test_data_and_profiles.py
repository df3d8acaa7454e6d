"""Embedded datasets, the toy denoiser and the run-profile switch."""

from __future__ import annotations

import pytest
import torch

from glide_edu import by_profile, current_profile
from glide_edu.data import load_digits, load_photo
from glide_edu.profiles import ENV_VAR, Profile


def test_digits_split_is_deterministic_disjoint_and_complete() -> None:
    train, ytr = load_digits(16, "train")
    test, yte = load_digits(16, "test")
    full, _ = load_digits(16, "all")
    assert train.shape[1:] == (1, 16, 16) and len(train) + len(test) == len(full) == 1797
    assert float(train.min()) >= -1 and float(train.max()) <= 1 and train.dtype == torch.float32
    assert set(ytr.tolist()) == set(range(10)) and set(yte.tolist()) == set(range(10))
    again, _ = load_digits(16, "train")
    assert torch.equal(again, train)
    small, _ = load_digits(8, "all")
    assert small.shape[-1] == 8 and set(torch.unique(small * 8 + 8).round().tolist()) <= set(range(17))


def test_digit_and_photo_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        load_digits(16, "validation")
    with pytest.raises(ValueError, match="size"):
        load_digits(4)
    with pytest.raises(ValueError, match="unknown photo"):
        load_photo("dog")


def test_photo() -> None:
    cat = load_photo("cat", 32)
    assert cat.shape == (1, 3, 32, 32) and -1 <= float(cat.min()) < float(cat.max()) <= 1
    assert load_photo("camera", 16).shape == (1, 3, 16, 16)


def test_profile_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "fast")
    assert current_profile() is Profile.FAST and by_profile(fast=1, full=2) == 1
    monkeypatch.setenv(ENV_VAR, "FULL")
    assert by_profile(fast=1, full=2) == 2
    monkeypatch.delenv(ENV_VAR)
    assert current_profile() is Profile.FULL
    monkeypatch.setenv(ENV_VAR, "quick")
    with pytest.raises(ValueError, match="GLIDE_EDU_PROFILE='quick'"):
        current_profile()
