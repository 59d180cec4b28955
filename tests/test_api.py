"""The Python API: gradsvc.run from paths, text, dicts; results as numpy arrays."""
import numpy as np
import pytest

import gradsvc
from gradsvc.errors import LimitError, UsageError

TEXT = "inputs: {a: [1.0, 2.0], b: 3.0}\ngraph: {x: a * b, z: x + a}\noutputs: [z]\n"


def test_run_from_text_dict_and_path_agree(write_job):
    from_text = gradsvc.run(TEXT)
    from_path = gradsvc.run(write_job(TEXT))
    from_dict = gradsvc.run({"inputs": {"a": [1.0, 2.0], "b": 3.0},
                             "graph": {"x": "a * b", "z": "x + a"}, "outputs": ["z"]})
    for r in (from_text, from_path, from_dict):
        assert r.ok and r.points == 2
        np.testing.assert_array_equal(r.values["z"], [4.0, 8.0])
        np.testing.assert_array_equal(r.grads["z"]["a"], [4.0, 4.0])  # b + 1
        np.testing.assert_array_equal(r.grads["z"]["b"], [1.0, 2.0])  # a


def test_gradients_that_are_one_value_share_one_array():
    """dz/da and dz/db of z = (a+b)*(c*d) are both c*d: computed and stored once."""
    r = gradsvc.run("jobs/seed_sum_product.yaml")
    assert r.grads["z"]["a"] is r.grads["z"]["b"] and float(r.grads["z"]["a"][0]) == 20.0
    assert r.grads["z"]["a"] is not r.grads["z"]["d"]


def test_point_and_shape():
    r = gradsvc.run("jobs/rosenbrock_grid.yaml")
    assert r.shape == (41, 31)
    p = r.point(31)
    assert p["values"]["x"] == pytest.approx(-1.9) and p["values"]["y"] == pytest.approx(-1.0)
    assert set(p["grads"]["f"]) == {"x", "y", "valley", "f"}


def test_settings_as_keyword_arguments():
    r = gradsvc.run(TEXT, dtype="float32", verify_points=1, fd_points=0)
    assert r.dtype == "float32" and r.values["z"].dtype == np.float32
    assert r.verify.sampled and r.verify.checked_points == 1  # the cap, even under min_points


def test_not_a_job_is_a_usage_error():
    with pytest.raises(UsageError):
        gradsvc.run(42)


def test_results_too_big_for_memory_point_to_batch(monkeypatch):
    from gradsvc import limits
    monkeypatch.setattr(limits, "MAX_RESULT_BYTES", 100)
    with pytest.raises(LimitError, match="gradsvc batch"):
        gradsvc.run(TEXT)
