"""Every op, over a sweep with domain edges, 0 and negative values, three ways:
JAX (through gradsvc) vs the pure-Python reference (gradsvc's verify), vs a closed form written here
with numpy, vs a central finite difference computed here. Like tinygrad's one-line-per-op tests."""
import math

import numpy as np
import pytest

import gradsvc
from gradsvc.core.ops import CALLABLE, OPS

SWEEP = [-5.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 5.0]
POSITIVE = [1e-3, 0.1, 0.5, 1.0, 2.0, 5.0, 40.0]

# name: (formula, value(x[, y]), partials(x[, y]) closed forms, sweep)
UNARY = {
    "neg": ("-x", lambda x: -x, lambda x: -np.ones_like(x)),
    "exp": ("exp(x)", np.exp, np.exp),
    "log": ("log(x)", np.log, lambda x: 1 / x),
    "sin": ("sin(x)", np.sin, np.cos),
    "cos": ("cos(x)", np.cos, lambda x: -np.sin(x)),
    "tan": ("tan(x)", np.tan, lambda x: 1 / np.cos(x) ** 2),
    "tanh": ("tanh(x)", np.tanh, lambda x: 1 / np.cosh(x) ** 2),
    "sigmoid": ("sigmoid(x)", lambda x: 1 / (1 + np.exp(-x)),
                lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
    "relu": ("relu(x)", lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(float)),
    "sqrt": ("sqrt(x)", np.sqrt, lambda x: 0.5 / np.sqrt(x)),
    "abs": ("abs(x)", np.abs, lambda x: np.where(x >= 0, 1.0, -1.0)),
    "ipow": ("x ** 3", lambda x: x**3, lambda x: 3 * x**2),
}
BINARY = {
    "add": ("x + y", lambda x, y: x + y, (lambda x, y: 1 + 0 * x, lambda x, y: 1 + 0 * y)),
    "sub": ("x - y", lambda x, y: x - y, (lambda x, y: 1 + 0 * x, lambda x, y: -1 + 0 * y)),
    "mul": ("x * y", lambda x, y: x * y, (lambda x, y: y, lambda x, y: x)),
    "div": ("x / y", lambda x, y: x / y, (lambda x, y: 1 / y, lambda x, y: -x / y**2)),
    "pow": ("x ** y", lambda x, y: x**y, (lambda x, y: y * x ** (y - 1), lambda x, y: np.log(x) * x**y)),
    # max/min: JAX splits a tie 0.5/0.5
    "max": ("max(x, y)", np.maximum, (lambda x, y: np.where(x > y, 1.0, np.where(x == y, 0.5, 0.0)),
                                      lambda x, y: np.where(y > x, 1.0, np.where(x == y, 0.5, 0.0)))),
    "min": ("min(x, y)", np.minimum, (lambda x, y: np.where(x < y, 1.0, np.where(x == y, 0.5, 0.0)),
                                      lambda x, y: np.where(y < x, 1.0, np.where(x == y, 0.5, 0.0)))),
    # comparisons are 1 or 0 and pass no gradient back
    "gt": ("x > y", lambda x, y: (x > y) * 1.0, (lambda x, y: 0 * x, lambda x, y: 0 * y)),
    "ge": ("x >= y", lambda x, y: (x >= y) * 1.0, (lambda x, y: 0 * x, lambda x, y: 0 * y)),
    "lt": ("x < y", lambda x, y: (x < y) * 1.0, (lambda x, y: 0 * x, lambda x, y: 0 * y)),
    "le": ("x <= y", lambda x, y: (x <= y) * 1.0, (lambda x, y: 0 * x, lambda x, y: 0 * y)),
}
TERNARY = {
    "where": ("where(x > y, x * y, x - y)", lambda x, y: np.where(x > y, x * y, x - y),
              (lambda x, y: np.where(x > y, y, 1.0), lambda x, y: np.where(x > y, x, -1.0))),
}


def test_every_op_has_a_test_here():
    tested = set(UNARY) | set(BINARY) | set(TERNARY) | {"id"}
    assert set(OPS) | {"ipow"} == tested
    assert set(CALLABLE) <= tested


def _job(formula: str, inputs: dict, dtype: str) -> dict:
    return {"name": "op", "inputs": inputs, "graph": {"f": formula}, "outputs": ["f"],
            "wrt": "inputs", "settings": {"dtype": dtype}}


def _fd(fn, x, h=1e-6):
    return (fn(x + h) - fn(x - h)) / (2 * h)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_op(name, dtype):
    formula, value, partial = UNARY[name]
    r = gradsvc.run(_job(formula, {"x": SWEEP}, dtype))
    assert r.ok, (r.verify.mismatch_points, r.verify.fd)
    x = np.array(SWEEP)
    with np.errstate(all="ignore"):
        expected_value, expected_grad = value(x), partial(x)
    rtol = 1e-12 if dtype == "float64" else 2e-6
    np.testing.assert_allclose(r.values["f"], expected_value, rtol=rtol, atol=rtol, equal_nan=True)
    finite = np.isfinite(expected_grad)
    got = r.grads["f"]["x"]
    np.testing.assert_allclose(got[finite], expected_grad[finite], rtol=rtol, atol=rtol)
    # at domain edges: the same non-finite number (inf where the closed form says so)
    if name in ("log", "sqrt"):
        assert np.isinf(got[x == 0]).all() and np.isnan(r.values["f"][x < 0]).all()
    smooth = finite & (x != 0) & np.isfinite(expected_value)
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(got[smooth], _fd(value, x[smooth]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(BINARY) + sorted(TERNARY))
def test_binary_op(name, dtype):
    formula, value, (d_dx, d_dy) = {**BINARY, **TERNARY}[name]
    ys = [-2.0, -1.0, 0.0, 0.5, 1.0, 2.5] if name != "pow" else [-1.0, 0.0, 0.5, 1.0, 2.0, 2.5]
    r = gradsvc.run(_job(formula, {"x": SWEEP, "y": ys}, dtype))
    assert r.ok, (r.verify.mismatch_points, r.verify.fd)
    x, y = np.meshgrid(SWEEP, ys, indexing="ij")
    x, y = x.ravel(), y.ravel()
    with np.errstate(all="ignore"):
        expected = value(x, y), d_dx(x, y), d_dy(x, y)
    rtol = 1e-12 if dtype == "float64" else 2e-6
    for got, want in zip([r.values["f"], r.grads["f"]["x"], r.grads["f"]["y"]], expected):
        finite = np.isfinite(want) & (x != 0)  # at x = 0 JAX's conventions differ from the algebra
        np.testing.assert_allclose(got[finite], want[finite], rtol=rtol, atol=rtol)


def test_pow_conventions_match_jax_at_zero_and_negative_base():
    """d(x**y)/dy reads log(0) as 0; a negative base with a non-integer exponent is nan."""
    r = gradsvc.run(_job("x ** y", {"x": [0.0, -2.0, -2.0], "y": [2.0, 2.0, 0.5]}, "float64")
                    | {"grid": "zip"})
    assert r.ok
    assert list(r.values["f"][:2]) == [0.0, 4.0] and math.isnan(r.values["f"][2])
    assert list(r.grads["f"]["x"][:2]) == [0.0, -4.0]
    assert r.grads["f"]["y"][0] == 0.0 and math.isnan(r.grads["f"]["y"][1])


def test_kink_conventions_abs_relu_sqrt():
    r = gradsvc.run({"inputs": {"x": 0.0}, "graph": {"a": "abs(x)", "r": "relu(x)", "s": "sqrt(x)"},
                     "outputs": ["a", "r", "s"], "wrt": "inputs"})
    assert r.ok
    assert r.grads["a"]["x"][0] == 1.0 and r.grads["r"]["x"][0] == 0.0
    assert r.grads["s"]["x"][0] == math.inf
    assert r.verify.kink_count == 1 and r.verify.kink_points[0]["nodes"] == ["a", "r"]


def test_nan_and_inf_propagate_the_same_in_both_backends():
    r = gradsvc.run({"inputs": {"x": [-1.0, 0.0, 800.0]},
                     "graph": {"l": "log(x)", "big": "exp(x)", "q": "l * big"}, "outputs": ["q"]})
    assert r.ok
    assert math.isnan(r.values["q"][0]) and r.values["big"][2] == math.inf
    assert r.verify.nonfinite_count == 3


def test_relu_blocks_an_infinite_gradient_like_jax():
    """relu'(x<0) is a select in JAX: sqrt'(0)=inf arriving from the output side gives 0, not
    inf*0=nan; a plain product (x*0 below) does give nan, in both backends."""
    r = gradsvc.run({"inputs": {"x": -1.0}, "graph": {"f": "sqrt(relu(x))", "g": "sqrt(x * 0)"},
                     "outputs": ["f", "g"], "wrt": "inputs"})
    assert r.ok
    assert r.grads["f"]["x"][0] == 0.0 and math.isnan(r.grads["g"]["x"][0])


def test_max_and_min_split_a_tie_like_jax_and_flag_it_as_a_kink():
    r = gradsvc.run({"inputs": {"x": [1.0, 2.0], "y": 1.0}, "graph": {"hi": "max(x, y)",
                     "lo": "min(x, y)"}, "outputs": ["hi", "lo"], "wrt": "inputs"})
    assert r.ok
    assert list(r.grads["hi"]["x"]) == [0.5, 1.0] and list(r.grads["hi"]["y"]) == [0.5, 0.0]
    assert list(r.grads["lo"]["x"]) == [0.5, 0.0] and list(r.grads["lo"]["y"]) == [0.5, 1.0]
    assert r.verify.kink_count == 1 and r.verify.kink_points[0]["coords"] == {"x": 1.0, "y": 1.0}


def test_where_switch_points_are_kinks_and_finite_differences_skip_them():
    r = gradsvc.run({"inputs": {"x": {"linspace": [-1, 1, 21]}},
                     "graph": {"leaky": "where(x > 0, x, 0.1 * x)"}, "outputs": ["leaky"]})
    assert r.ok
    g = r.grads["leaky"]["x"]
    assert list(g[:10]) == pytest.approx([0.1] * 10) and list(g[11:]) == [1.0] * 10
    assert g[10] == pytest.approx(0.1)  # x = 0: the condition is false, the other branch's slope
    assert r.verify.kink_count == 1 and r.verify.kink_points[0]["coords"] == {"x": 0.0}
    assert r.verify.fd["skipped_kink"] >= 1


def test_where_does_not_hide_the_nan_of_the_branch_not_taken():
    """The classic trap: where(x > 0, sqrt(x), 0) at x <= 0 has a nan (or 0*inf) gradient in JAX,
    because the cotangent 0 still meets sqrt's partial there. gradsvc reports it, and the
    reference agrees point by point."""
    r = gradsvc.run({"inputs": {"x": [-1.0, 0.0, 4.0]}, "graph": {"s": "where(x > 0, sqrt(x), 0)"},
                     "outputs": ["s"]})
    assert r.ok
    g = r.grads["s"]["x"]
    assert math.isnan(g[0]) and math.isnan(g[1]) and g[2] == 0.25
    assert r.verify.nonfinite_count == 2
    assert [p["coords"]["x"] for p in r.verify.nonfinite_points] == [-1.0, 0.0]


def test_a_comparison_cuts_the_edge_instead_of_multiplying_by_zero():
    """(sqrt(x) > 0) passes nothing back: at x = 0, sqrt'(0) = inf never meets a zero."""
    r = gradsvc.run({"inputs": {"x": 0.0}, "graph": {"f": "(sqrt(x) > 0) + x"}, "outputs": ["f"],
                     "wrt": "inputs"})
    assert r.ok and r.grads["f"]["x"][0] == 1.0


def test_a_comparison_times_infinity_is_nan_as_ieee_says():
    """XLA would rewrite convert(a > b) * y into select(a > b, y, 0), giving 0 where 0 * inf is
    nan (the fuzz found it with 0/0); gradsvc keeps IEEE arithmetic, like the reference."""
    r = gradsvc.run({"inputs": {"x": [0.0, 1.0]}, "graph": {"n0": "0.5 < x", "n2": "n0 / x",
                     "n3": "(x > 2) * exp(1000 * x)"}, "outputs": ["n2", "n3"]})
    assert r.ok
    assert math.isnan(r.values["n2"][0]) and r.values["n2"][1] == 1.0
    assert r.values["n3"][0] == 0.0 and math.isnan(r.values["n3"][1])
