import numpy as np
import pytest

from lmplay.stats.series import (
    Series,
    align_to_grid,
    difference,
    moving_average,
    series_from_records,
)


def test_moving_average_is_trailing_and_keeps_length() -> None:
    out = moving_average(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 2)
    np.testing.assert_allclose(out, [1.0, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(moving_average(np.array([3.0, 1.0]), 1), [3.0, 1.0])
    np.testing.assert_allclose(moving_average(np.array([2.0, 4.0]), 20), [2.0, 3.0])
    assert moving_average(np.array([]), 3).shape == (0,)
    with pytest.raises(ValueError):
        moving_average(np.array([1.0]), 0)


def test_align_interpolates_linearly_and_never_extrapolates() -> None:
    tokens = np.array([100.0, 200.0, 400.0])
    values = np.array([1.0, 3.0, 7.0])
    grid = np.array([50.0, 100.0, 150.0, 300.0, 400.0, 500.0])
    out = align_to_grid(tokens, values, grid)
    np.testing.assert_allclose(out, [np.nan, 1.0, 2.0, 5.0, 7.0, np.nan])
    assert np.isnan(align_to_grid(np.array([]), np.array([]), grid)).all()


def test_difference_is_on_the_target_grid_over_the_overlap() -> None:
    target = Series("t", None, np.array([100.0, 200.0, 300.0, 400.0]), np.array([4.0] * 4))
    other = Series("o", None, np.array([150.0, 350.0]), np.array([1.0, 5.0]))
    diff = difference(other, target)
    np.testing.assert_array_equal(diff.tokens, [200.0, 300.0])
    np.testing.assert_allclose(diff.values, [2.0 - 4.0, 4.0 - 4.0])
    self_diff = difference(target, target)
    np.testing.assert_array_equal(self_diff.values, np.zeros(4))


def test_series_from_records_sorts_and_skips_unplottable_points() -> None:
    records = [
        {"tokens": 300, "loss": 3.0},
        {"tokens": 0, "loss": 9.0},  # step 0: drawn on the linear part of the symlog axis
        {"tokens": 100, "loss": 1.0},
        {"tokens": 200, "loss": None},  # a non-finite loss, stored as null
        {"tokens": 250},  # metric absent
    ]
    s = series_from_records("r", "v", records, "loss")
    np.testing.assert_array_equal(s.tokens, [0.0, 100.0, 300.0])
    np.testing.assert_array_equal(s.values, [9.0, 1.0, 3.0])
    assert len(series_from_records("r", None, records, "accuracy")) == 0
