"""Chapter 5's book code: what the class histogram alone costs the FID-proxy."""

from __future__ import annotations

import pytest

from glide_edu.book import ch05


def test_class_balance_fid_measures_the_histogram_cost() -> None:
    skewed, balanced = ch05.class_balance_fid([28, 5, 33, 5, 33, 5, 32, 5, 41, 13], n_draws=3)
    assert len(skewed) == len(balanced) == 3
    assert min(skewed) > max(balanced) + 10  # a lopsided histogram of real digits costs the FID-proxy a lot
    with pytest.raises(ValueError, match="too few digits of class 0"):
        ch05.class_balance_fid([500, 0, 0, 0, 0, 0, 0, 0, 0, 0])
