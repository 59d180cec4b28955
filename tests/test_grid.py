"""Grids: product order, zip broadcasting, coordinates from indices, chunks, limits."""
import warnings

import numpy as np
import pytest

from gradsvc import limits
from gradsvc.errors import JobFileError, JobProblems, LimitError, UsageError
from gradsvc.job.grid import parse_at
from gradsvc.job.spec import job_from_text


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
    with pytest.raises(LimitError, match="max_grid_points"):
        grid_of("{a: {linspace: [0, 1, 1000000]}, b: {linspace: [0, 1, 1000000]}, "
                "c: {linspace: [0, 1, 1000000]}, d: {linspace: [0, 1, 1000000]}}")


def test_huge_axis_is_refused_before_allocation():
    with pytest.raises(LimitError, match="MAX_AXIS_POINTS"):
        grid_of(f"{{a: {{uniform: [0, 1], n: {limits.MAX_AXIS_POINTS + 1}}}}}")


def place_of(error) -> tuple:
    return (error.where.file, error.where.line, error.where.col)


def test_an_arange_too_long_to_count_is_a_limit_error_with_its_place():
    """(stop - start) / step overflowed to inf and math.ceil raised OverflowError: exit 70."""
    for arange in ("[0, 1e300, 1e-300]", "[-1e308, 1e308, 1e-10]", "[0, 1e9, 1]"):
        with pytest.raises(LimitError) as info:
            job_from_text(f"inputs:\n  a: {{arange: {arange}}}\ngraph: {{z: a}}\noutputs: [z]\n",
                          file="j.yaml")
        assert place_of(info.value) == ("j.yaml", 2, 15)
        assert "MAX_AXIS_POINTS" in info.value.hint and "the limit is 10,000,000" in info.value.message


@pytest.mark.parametrize("spec, words", [
    ("{linspace: [-1e308, 1e308, 3]}", "linspace from -1e+308 to 1e+308 spans a range beyond "
     "float64's range"),
    ("{logspace: [0, 400, 3]}", "logspace up to 10**400 is beyond float64's range"),
    ("{uniform: [-1e308, 1e308], n: 4}", "uniform from -1e+308 to 1e+308 spans a range beyond"),
    ("{normal: [0, 1e308], n: 100}", "produces values beyond float64's range"),
])
def test_ranges_beyond_float64_are_refused_before_numpy_warns(spec, words):
    """numpy's RuntimeWarning (overflow in linspace) leaked to the user; uniform raised."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(JobFileError) as info:
            grid_of(f"{{a: {spec}}}")
    assert words in info.value.message


def test_every_input_with_a_problem_is_reported():
    with pytest.raises(JobProblems) as info:
        grid_of("{a: {arange: [0, 1, 0]}, b: {logspace: [0, 999, 2]}, c: 1.0}")
    assert [p.message for p in info.value.problems] == [
        "input 'a': arange needs a non-zero step",
        "input 'b': logspace up to 10**999 is beyond float64's range (at most about 1.8e308)"]


def test_index_at_picks_a_product_point_by_its_coordinates():
    grid = grid_of("{a: [1, 2], b: 7, c: {linspace: [0, 1, 5]}}")
    assert grid.index_at({"a": 2.0, "c": 0.75}) == 8
    assert grid.point(8) == {"a": 2.0, "b": 7.0, "c": 0.75}


def test_index_at_on_a_zip_grid_needs_one_input_where_that_is_enough():
    grid = grid_of("{a: [1, 2, 3], b: 5, c: [7, 8, 7]}", "zip")
    assert grid.index_at({"a": 3.0}) == 2 and grid.index_at({"c": 7.0, "a": 3.0}) == 2
    with pytest.raises(UsageError, match="2 points of the zip grid have these coordinates: 0, 2"):
        grid.index_at({"c": 7.0})


def test_index_at_without_an_exact_match_names_the_nearest_values():
    grid = grid_of("{a: {linspace: [0, 1, 11]}, b: [1, 2]}")
    with pytest.raises(UsageError) as info:
        grid.index_at({"a": 0.3, "b": 1.0})  # linspace's value is 0.30000000000000004
    assert info.value.message == ("input 'a' has no value 0.3; the nearest are 0.2, "
                                  "0.30000000000000004, 0.4")
    assert grid.index_at({"a": 0.30000000000000004, "b": 2.0}) == 7


def test_index_at_names_what_is_wrong_with_the_names():
    grid = grid_of("{a: [1, 2], b: 5, c: [3, 4]}")
    for at, words in (({"a": 1.0}, "missing: c"), ({"a": 1.0, "c": 3.0, "q": 1.0}, "'q', which is "
                      "not an input"), ({"a": 1.0, "c": 3.0, "b": 5.0}, "'b', which does not vary")):
        with pytest.raises(UsageError, match=words) as info:
            grid.index_at(at)
        assert info.value.hint.startswith("inputs that vary: a (2 values, 1.0 to 2.0), c")


def test_index_at_compares_in_the_jobs_dtype():
    """A float32 job's results show coordinates rounded to float32: those pick the point too."""
    grid = grid_of("{a: {linspace: [0, 1, 11]}}")
    assert grid.index_at({"a": float(np.float32(0.3))}, "float32") == 3


def test_coordinates_are_read_as_written_and_a_wrong_part_is_shown_the_users_way():
    assert parse_at("v=20, 𝐚 = -0.5,") == {"v": 20.0, "a": -0.5}  # NFKC, as names in job files
    for written in ("--at ", "at="):  # the CLI's option, the service's query parameter
        with pytest.raises(UsageError) as info:
            parse_at("v=20,theta", written)
        assert info.value.message == f"{written}'v=20,theta': 'theta' is not NAME=NUMBER"
        assert info.value.hint == f"write it like {written}v=20,theta=0.8"


# --- the grid-size limit: a setting of the deployment (its config file), not of a job ---

SMALL = "inputs:\n  a: [1, 2, 3, 4]\n  b: [1, 2, 3]\ngraph: {z: a * b}\noutputs: [z]\n"  # 12 points


def config_file(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_a_config_file_lowers_the_grid_limit(tmp_path):
    assert job_from_text(SMALL, file="j.yaml").grid.size == 12  # remembered, under its limit
    with pytest.raises(LimitError) as info:
        job_from_text(SMALL, file="j.yaml", config=config_file(tmp_path, "max_grid_points: 11\n"))
    assert info.value.message == "the grid has 12 points, more than 11"
    assert (info.value.where.file, info.value.where.line) == ("j.yaml", 2)  # the inputs
    assert "max_grid_points" in info.value.hint and "config file" in info.value.hint
    limited = config_file(tmp_path, "max_grid_points: 12\n")
    assert job_from_text(SMALL, config=limited).grid.size == 12


def test_a_config_file_raises_the_grid_limit(tmp_path, monkeypatch):
    big = ("inputs: {a: {linspace: [0, 1, 100000]}, b: {linspace: [0, 1, 20000]}}\n"
           "graph: {z: a * b}\noutputs: [z]\n")  # 2e9 points, above the shipped 1e9
    assert limits.MAX_GRID_POINTS == 1_000_000_000
    with pytest.raises(LimitError, match="more than 1,000,000,000"):
        job_from_text(big)
    monkeypatch.setenv("GRADSVC_CONFIG", str(config_file(tmp_path, "max_grid_points: 2e9\n")))
    assert job_from_text(big).grid.size == 2_000_000_000


def test_a_loaded_job_run_under_a_config_with_a_lower_limit_is_refused(tmp_path):
    import gradsvc
    job = job_from_text(SMALL, file="j.yaml")
    with pytest.raises(LimitError, match="has 12 points, more than the 5 of"):
        gradsvc.run(job, config=config_file(tmp_path, "max_grid_points: 5\n"))


def test_a_job_may_not_set_the_grid_limit():
    text = SMALL + "settings:\n  dtype: float32\n  max_grid_points: 1e12\n"
    with pytest.raises(JobFileError) as info:
        job_from_text(text, file="j.yaml")
    assert place_of(info.value) == ("j.yaml", 8, 3)
    assert info.value.message == "'max_grid_points' is a setting of the deployment, not of a job"
    assert "config file" in info.value.hint


def test_the_shipped_config_sets_the_limit_apart_from_job_settings():
    from gradsvc.job.spec import Settings, load_config, max_grid_points
    assert max_grid_points("configs/default.yaml") == limits.MAX_GRID_POINTS
    assert "max_grid_points" not in load_config("configs/default.yaml")
    assert "max_grid_points" not in Settings.model_fields
