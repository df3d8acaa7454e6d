"""Run profiles: one documented switch between the readers' book and the fast test run.

The profile is read from the environment variable ``GLIDE_EDU_PROFILE``:

* ``full`` (default) — what a reader gets in JupyterLab: more samples, more steps, longer training.
* ``fast`` — what ``make test`` / CI uses: the *same cells* with smaller numbers so every chapter
  executes in about a minute on two CPU cores.

Chapters never branch on the profile themselves; they ask for a number with :func:`by_profile`::

    n_samples = by_profile(fast=256, full=4096)
"""

from __future__ import annotations

import enum
import os
from typing import TypeVar

ENV_VAR = "GLIDE_EDU_PROFILE"

T = TypeVar("T")


class Profile(str, enum.Enum):
    """The two run profiles of the book."""

    FAST = "fast"
    FULL = "full"


def current_profile() -> Profile:
    """The active :class:`Profile`, read from ``$GLIDE_EDU_PROFILE`` (default ``full``)."""
    raw = os.environ.get(ENV_VAR, Profile.FULL.value).strip().lower()
    try:
        return Profile(raw)
    except ValueError:
        allowed = ", ".join(p.value for p in Profile)
        raise ValueError(f"{ENV_VAR}={raw!r} is not a known profile; set it to one of: {allowed}") from None


def is_fast() -> bool:
    """True when the fast (test) profile is active."""
    return current_profile() is Profile.FAST


def by_profile(*, fast: T, full: T) -> T:
    """Pick the value for the active profile: ``fast`` under ``GLIDE_EDU_PROFILE=fast``, else ``full``."""
    return fast if is_fast() else full
