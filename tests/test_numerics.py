"""Numerical traps are reported, not hidden: log of <= 0, sqrt at and below 0, division by zero,
exp overflow (float64 and float32), kinks of abs, relu, max and where. Each point with a non-finite
value or gradient, past the dtype's range, or on a kink is listed with its grid coordinates in the
table, the JSON and a batch's summary.json; JAX and the reference agree at every one of them."""
import json
import math

import pytest

import gradsvc
from conftest import cli
from gradsvc.reference.backprop import run_point

TRAPS = """name: traps
inputs:
  x: [-1.0, 0.0, 2.0, 800.0]
graph:
  lg: log(x)
  rt: sqrt(x)
  inv: 1 / x
  big: exp(x)
  kinks: abs(x) + relu(x) + max(x, 0) + where(x > 0, x, 0)
outputs: [lg, rt, inv, big, kinks]
wrt: inputs
"""
NONFINITE = {  # point -> what is not finite there
    0: ["lg", "rt", "drt/dx"],  # log(-1) = nan, sqrt(-1) = nan (and its slope)
    1: ["lg", "inv", "dlg/dx", "drt/dx", "dinv/dx"],  # log(0) = -inf, 1/0 = inf, sqrt'(0) = inf
    3: ["big", "dbig/dx"],  # exp(800) overflows float64
}


@pytest.fixture
def traps(write_job):
    return write_job(TRAPS, "traps.yaml")


def test_every_trap_is_listed_with_its_coordinates_and_both_backends_agree(traps):
    r = gradsvc.run(traps)
    assert r.ok  # agreement, not silence: the lists below say where the trouble is
    v = r.verify
    assert {p["index"]: p["quantities"] for p in v.nonfinite_points} == NONFINITE
    assert [p["coords"] for p in v.nonfinite_points] == [{"x": -1.0}, {"x": 0.0}, {"x": 800.0}]
    assert v.nonfinite_count == 3
    assert v.kink_points == [{"index": 1, "coords": {"x": 0.0}, "nodes": ["kinks"]}]
    for i, x in enumerate([-1.0, 0.0, 2.0, 800.0]):  # the same non-finite numbers, point by point
        ref = run_point(r.job.graph, {"x": x})
        for out in r.job.graph.outputs:
            got, want = float(r.grads[out]["x"][i]), ref.grads[out]["x"]
            if math.isfinite(want):
                assert got == pytest.approx(want, rel=1e-14), (out, x)
            else:
                assert got == want or (math.isnan(got) and math.isnan(want)), (out, x)


def test_the_table_lists_the_same_points(traps):
    result = cli("run", traps)
    assert result.exit_code == 0
    assert "3 points non-finite:" in result.stdout
    assert "point 0 (x=-1): lg, rt, drt/dx" in result.stdout
    assert "point 1 (x=0): lg, inv, dlg/dx, drt/dx, dinv/dx" in result.stdout
    assert "point 3 (x=800): big, dbig/dx" in result.stdout
    assert "1 point on a kink:" in result.stdout and "point 1 (x=0): kinks" in result.stdout


def test_the_json_and_the_batch_summary_list_them(traps, tmp_path):
    doc = json.loads(cli("run", traps, "-f", "json").stdout)
    assert doc["verify"]["nonfinite_count"] == 3 and doc["verify"]["kink_count"] == 1
    assert doc["grads"]["rt"]["x"][1] == "inf" and doc["values"]["lg"][0] == "nan"
    assert cli("batch", traps, "--out", tmp_path / "out").exit_code == 0
    summary = json.loads((tmp_path / "out" / "traps" / "summary.json").read_text())
    assert [p["coords"] for p in summary["verify"]["nonfinite_points"]] == \
        [{"x": -1.0}, {"x": 0.0}, {"x": 800.0}]
    assert summary["verify"]["kink_points"][0]["coords"] == {"x": 0.0}


@pytest.mark.parametrize("formula, x, gradient", [
    ("abs(x)", 0.0, 1.0),           # JAX: abs'(0) = 1
    ("relu(x)", 0.0, 0.0),          # relu'(0) = 0
    ("max(x, 0)", 0.0, 0.5),        # a tie splits the gradient
    ("min(x, 0)", 0.0, 0.5),
    ("where(x > 0, x, 0)", 0.0, 0.0),   # the condition is false at the switch point
    ("where(x >= 0, x, 0)", 0.0, 1.0),  # ... and true here
])
def test_each_kind_of_kink_is_flagged_at_its_switch_point(formula, x, gradient):
    r = gradsvc.run({"inputs": {"x": [-1.0, x, 1.0]}, "graph": {"f": formula}, "outputs": ["f"],
                     "wrt": "inputs"})
    assert r.ok and r.grads["f"]["x"][1] == gradient
    assert [p["coords"] for p in r.verify.kink_points] == [{"x": x}]


def test_float32_overflow_is_its_own_list():
    """exp(100) is finite in float64 (the reference) but past float32's range: listed as overflow,
    and the comparison is excused only there."""
    r = gradsvc.run({"inputs": {"x": [1.0, 100.0]}, "graph": {"f": "exp(x)"}, "outputs": ["f"]},
                    dtype="float32")
    assert r.ok
    assert r.values["f"][1] == math.inf
    assert [p["coords"] for p in r.verify.overflow_points] == [{"x": 100.0}]
    assert r.verify.nonfinite_count == 1


def test_zero_over_zero_and_inf_minus_inf_are_nan_in_both():
    r = gradsvc.run({"inputs": {"x": [0.0, 800.0]},
                     "graph": {"q": "x / x", "d": "exp(x) - exp(x)"}, "outputs": ["q", "d"]})
    assert r.ok
    assert math.isnan(r.values["q"][0]) and math.isnan(r.values["d"][1])
    assert {p["index"] for p in r.verify.nonfinite_points} == {0, 1}
