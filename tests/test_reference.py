"""The reference backprop: standard library only, micrograd-sized, and right on its own."""
import math
import subprocess
import sys

from gradsvc.reference.backprop import backward, forward, run_point
from gradsvc.job.spec import job_from_text
from conftest import ROOT


def test_reference_runs_with_numpy_and_jax_unimportable():
    """Proves independence: the reference path imports neither numpy nor jax."""
    code = (
        "import sys\n"
        "for banned in ('jax', 'jaxlib', 'numpy'):\n"
        "    sys.modules[banned] = None\n"
        "from gradsvc.core.ir import build_graph\n"
        "from gradsvc.core.expr import parse_formula\n"
        "from gradsvc.errors import Location\n"
        "from gradsvc.reference.backprop import run_point\n"
        "where = Location('x', 1, 1)\n"
        "nodes = {'x': parse_formula('x', 'a + b', where, {'a','b','c','d','x','y','z'}),\n"
        "         'y': parse_formula('y', 'c * d', where, {'a','b','c','d','x','y','z'}),\n"
        "         'z': parse_formula('z', 'x * y', where, {'a','b','c','d','x','y','z'})}\n"
        "g = build_graph(['a', 'b', 'c', 'd'], nodes, ['z'], 'all', {})\n"
        "r = run_point(g, {'a': 2.0, 'b': 3.0, 'c': 4.0, 'd': 5.0})\n"
        "print(r.grads['z'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str({"a": 20.0, "b": 20.0, "c": 25.0, "d": 20.0, "x": 20.0,
                                      "y": 5.0, "z": 1.0})


def test_shared_subexpression_gradients_add_up():
    g = job_from_text("inputs: {x: 3.0}\ngraph: {s: x * x, z: s + s * x}\noutputs: [z]").graph
    r = run_point(g, {"x": 3.0})
    assert r.values["z"] == 9 + 27 and r.grads["z"]["x"] == 2 * 3 + 3 * 9  # d(x^2 + x^3)/dx
    assert r.grads["z"]["s"] == 1 + 3


def test_nodes_off_the_output_path_have_no_adjoint():
    g = job_from_text("inputs: {x: 1.0, y: 0.0}\ngraph: {z: x * 2, w: sqrt(y)}\n"
                      "outputs: [z, w]").graph
    values = forward(g, {"x": 1.0, "y": 0.0})
    assert "y" not in backward(g, values, "z")
    assert run_point(g, {"x": 1.0, "y": 0.0}).grads["z"]["y"] == 0.0


def test_error_bounds_grow_with_cancellation():
    g = job_from_text("inputs: {a: 1.0, b: 1.0}\ngraph: {z: (a + 1e8) - 1e8 + b}\n"
                      "outputs: [z]").graph
    r = run_point(g, {"a": 1.0, "b": 1.0}, unit=2.0 ** -24)
    assert r.value_err["z"] > 1e8 * 2.0 ** -24  # the bound sees |1e8| behind a result of 2
    tight = run_point(g, {"a": 1.0, "b": 1.0}, unit=2.0 ** -53)
    assert math.isclose(r.value_err["z"] / tight.value_err["z"], 2.0 ** 29)


def test_domain_edge_within_rounding_marks_the_value_unstable():
    g = job_from_text("inputs: {x: 8.0}\ngraph: {t: tanh(x), p: (-1.0) ** t}\noutputs: [p]").graph
    assert "p" in run_point(g, {"x": 8.0}, unit=2.0 ** -24).unstable
    assert "p" not in run_point(g, {"x": 0.5}, unit=2.0 ** -24).unstable


def test_infinity_whose_sign_rounding_can_flip_is_unstable():
    """Found by the fuzzer: (-0.0) ** tanh(-19.5) is -inf when tanh rounds to -1, +inf when it
    stops a hair short; the reference must not hold JAX to either sign."""
    g = job_from_text("inputs: {x: -0.0, y: -6.5}\ngraph: {t: tanh(3.0 * y), p: x ** t}\n"
                      "outputs: [p]").graph
    assert "p" in run_point(g, {"x": -0.0, "y": -6.5}, unit=2.0 ** -53).unstable
