"""XLA's algebraic simplifier rewrites some compositions into forms that are better mathematics but
different floating point: log(exp(x)) -> x, exp(a)/exp(b) -> exp(a-b), log(x**y) -> y*log(|x|).
At overflow or outside the real domain they give another answer than evaluating op by op (which the
reference, PyTorch and NumPy do). gradsvc does not hide this: the point is reported as a mismatch
with its coordinates, and the run exits 1. These tests pin that behaviour (found by the fuzzer)."""
import math

import pytest

import gradsvc
from conftest import cli

CASES = [
    ("log(exp(x))", 1000.0, 1000.0, math.inf),
    ("exp(x) / exp(x)", 1000.0, 1.0, math.nan),
    ("log(x ** 0.5)", -1.0, 0.0, math.nan),
]


@pytest.mark.parametrize("formula, x, jax_value, reference_value", CASES)
def test_rewrite_is_reported_as_a_mismatch(formula, x, jax_value, reference_value):
    r = gradsvc.run({"inputs": {"x": [x, 0.5]}, "graph": {"f": formula}, "outputs": ["f"]})
    assert not r.ok
    assert r.values["f"][0] == jax_value
    first = r.verify.mismatch_points[0]
    assert first["index"] == 0 and first["coords"] == {"x": x} and first["quantity"] == "value f"
    assert first["reference"] == reference_value or (math.isnan(reference_value)
                                                     and math.isnan(first["reference"]))
    assert all(p["index"] == 0 for p in r.verify.mismatch_points)  # x = 0.5 agrees


def test_mismatch_exit_code_is_1(write_job):
    path = write_job("inputs: {x: 1000.0}\ngraph: {f: log(exp(x))}\noutputs: [f]\n")
    result = cli("run", path)
    assert result.exit_code == 1
    assert "MISMATCH" in result.stdout and "point 0 (x=1000): value f" in result.stdout
