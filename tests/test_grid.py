"""Grids: product order, zip broadcasting, coordinates from indices, chunks, limits."""
import numpy as np
import pytest

from gradsvc import limits
from gradsvc.errors import LimitError
from gradsvc.spec import job_from_text


def grid_of(inputs: str, mode="product"):
    return job_from_text(f"inputs: {inputs}\ngrid: {mode}\ngraph: {{z: a}}\noutputs: [z]\n").grid


def test_product_first_input_varies_slowest():
    grid = grid_of("{a: [1, 2], b: [10, 20, 30]}")
    assert grid.size == 6 and grid.shape == (2, 3)
    np.testing.assert_array_equal(grid.coords(np.arange(6)),
                                  [[1, 10], [1, 20], [1, 30], [2, 10], [2, 20], [2, 30]])
    assert grid.point(4) == {"a": 2.0, "b": 20.0}


def test_zip_pairs_and_broadcasts_scalars():
    grid = grid_of("{a: [1, 2, 3], b: 5, c: [7, 8, 9]}", "zip")
    assert grid.size == 3 and grid.shape == (3,)
    np.testing.assert_array_equal(grid.coords(np.array([2, 0])), [[3, 5, 9], [1, 5, 7]])


def test_chunks_cover_the_grid_in_order():
    grid = grid_of("{a: {linspace: [0, 1, 10]}}")
    assert list(grid.chunks(4)) == [(0, 4), (4, 8), (8, 10)]


def test_huge_grid_is_refused_before_allocation():
    with pytest.raises(LimitError, match="MAX_GRID_POINTS"):
        grid_of("{a: {linspace: [0, 1, 1000000]}, b: {linspace: [0, 1, 1000000]}, "
                "c: {linspace: [0, 1, 1000000]}, d: {linspace: [0, 1, 1000000]}}")


def test_huge_axis_is_refused_before_allocation():
    with pytest.raises(LimitError, match="MAX_AXIS_POINTS"):
        grid_of(f"{{a: {{uniform: [0, 1], n: {limits.MAX_AXIS_POINTS + 1}}}}}")
