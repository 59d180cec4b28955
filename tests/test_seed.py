"""The seed notebook's numbers, reproduced exactly (PyTorch's backward() with retain_grad())."""
import pytest

import gradsvc
from conftest import cli_json

SEED_CHAIN = {"values": {"a": 2, "b": 3, "d": 4, "c": 6, "e": 24},
              "grads": {"e": {"c": 4, "d": 6, "a": 12, "b": 8, "e": 1}}}
SEED_SUM_PRODUCT = {"values": {"a": 2, "b": 3, "c": 4, "d": 5, "x": 5, "y": 20, "z": 100},
                    "grads": {"z": {"a": 20, "b": 20, "c": 25, "d": 20, "x": 20, "y": 5, "z": 1}}}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("path, expected", [("jobs/seed_chain.yaml", SEED_CHAIN),
                                            ("jobs/seed_sum_product.yaml", SEED_SUM_PRODUCT)])
def test_seed_numbers_exact_through_api(path, expected, dtype):
    r = gradsvc.run(path, dtype=dtype)
    assert r.ok and r.points == 1 and r.dtype == dtype
    assert {k: float(v[0]) for k, v in r.values.items()} == expected["values"]
    for out, grads in expected["grads"].items():
        assert {k: float(v[0]) for k, v in r.grads[out].items()} == grads


@pytest.mark.parametrize("path, expected", [("jobs/seed_chain.yaml", SEED_CHAIN),
                                            ("jobs/seed_sum_product.yaml", SEED_SUM_PRODUCT)])
def test_seed_numbers_exact_through_cli_json(path, expected):
    result, doc = cli_json(path)
    assert result.exit_code == 0
    assert doc["values"] == expected["values"]
    assert doc["grads"] == expected["grads"]
    assert doc["verify"]["ok"] is True and doc["verify"]["max_abs_err"] == 0.0


def test_seed_lesson_bump_a_by_one_raises_z_by_20():
    """'Change a from 2 to 3 and z grows by 20, to 120': z is affine in a, so the bump is exact."""
    text = open("jobs/seed_sum_product.yaml").read().replace("a: 2.0", "a: 3.0")
    r = gradsvc.run(text)
    assert float(r.values["z"][0]) == 120.0
