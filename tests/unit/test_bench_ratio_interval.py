"""`bench/_cold_runs.ratio_interval`: the bootstrap interval the cold-start benches print
beside their ratio of medians."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _cold_runs import ratio_interval


def test_pairs_in_one_proportion_give_that_ratio_and_nothing_else() -> None:
    pairs = [(1.5 * f, f) for f in (400.0, 430.0, 455.0, 610.0, 480.0, 520.0)]
    low, high = ratio_interval(pairs)
    assert low == pytest.approx(1.5)
    assert high == pytest.approx(1.5)


def test_the_interval_holds_the_ratio_of_medians_and_is_the_same_each_time() -> None:
    pairs = [(620.0, 430.0), (700.0, 440.0), (590.0, 450.0), (810.0, 500.0), (640.0, 470.0)]
    pairs += [(655.0, 420.0), (760.0, 480.0), (605.0, 445.0), (690.0, 460.0)]
    ratio = statistics.median(p for p, _ in pairs) / statistics.median(f for _, f in pairs)
    low, high = ratio_interval(pairs)
    assert low < ratio < high
    assert (low, high) == ratio_interval(pairs)  # seeded: one set of runs, one interval
    # a narrower level is inside the wider one
    narrow = ratio_interval(pairs, level=0.5)
    assert low <= narrow[0] <= narrow[1] <= high


def test_no_runs_is_an_error() -> None:
    with pytest.raises(ValueError, match="no runs"):
        ratio_interval([])
