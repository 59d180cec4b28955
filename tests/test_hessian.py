"""Second derivatives: each op's `second` (against central differences of its own partials, one line per
op), and the reference's Hessians by forward over reverse (against closed forms, against central
differences of the reference gradient, and JAX's float32 and float64 Hessians within their bounds)."""
import math
import subprocess
import sys

import pytest

from gradsvc.core.ops import INF, OPS, ipow, op_for
from gradsvc.job.spec import job_from_text
from gradsvc.reference.backprop import backward, forward
from gradsvc.reference.hessian import hessian
from conftest import ROOT

S = [-5.0, -2.0, -0.5, 0.5, 2.0, 5.0]
P = [x for x in S if x > 0]

# op: the values each argument sweeps (P where the op's domain is x > 0)
SWEEPS = {
    "add": (S, S), "sub": (S, S), "mul": (S, S), "div": (S, S), "pow": (P, S),
    "id": (S,), "neg": (S,), "exp": (S,), "log": (P,), "sin": (S,), "cos": (S,), "tan": (S,),
    "tanh": (S,), "sigmoid": (S,), "relu": (S,), "sqrt": (P,), "abs": (S,),
    "max": (S, S), "min": (S, S), "where": (S, S, S), "gt": (S, S), "ge": (S, S), "lt": (S, S),
    "le": (S, S),
    "ipow-2": (S,), "ipow-1": (S,), "ipow0": (S,), "ipow1": (S,), "ipow2": (S,), "ipow3": (S,),
    "ipow5": (S,),
}


def _op(name: str):
    return ipow(int(name[4:])) if name.startswith("ipow") else op_for(name)


def _grid(sweeps):
    points = [()]
    for values in sweeps:
        points = [p + (v,) for p in points for v in values]
    return points


def _partials(op, args):
    return op.partials(args, op.value(*args))


def test_every_op_has_second_derivatives_and_a_sweep_here():
    assert set(OPS) <= set(SWEEPS)
    for name in SWEEPS:
        op = _op(name)
        assert op.second is not None, name


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_second_derivatives_are_central_differences_of_the_partials(name):
    op = _op(name)
    for args in _grid(SWEEPS[name]):
        if name in ("max", "min") and args[0] == args[1]:
            continue  # the tie is a kink
        second = op.second(args, op.value(*args))
        assert len(second) == op.arity and all(len(row) == op.arity for row in second)
        for i in range(op.arity):
            for j in range(op.arity):
                assert second[i][j] == second[j][i], (name, args)
                h = 1e-5 * max(1.0, abs(args[j]))
                up = args[:j] + (args[j] + h,) + args[j + 1:]
                down = args[:j] + (args[j] - h,) + args[j + 1:]
                fd = (_partials(op, up)[i] - _partials(op, down)[i]) / (2 * h)
                assert second[i][j] == pytest.approx(fd, rel=1e-6, abs=1e-6), (name, args, i, j)


def test_second_derivatives_follow_ieee_and_jax_at_edges_and_kinks():
    def d2(name, *args):
        op = _op(name)
        return op.second(args, op.value(*args))

    assert d2("sqrt", 0.0) == ((-INF,),) and d2("log", 0.0) == ((-INF,),)
    assert math.isnan(d2("sqrt", -1.0)[0][0])
    assert d2("log", -1.0) == ((-1.0,),)  # -1/x**2, like the partial 1/x: JAX's rules are algebra
    assert d2("exp", 1000.0) == ((INF,),)
    # kinks: JAX's rules there are selects, whose derivatives are 0
    assert d2("relu", 0.0) == d2("abs", 0.0) == ((0.0,),)
    assert d2("max", 1.0, 1.0) == d2("min", 1.0, 1.0) == ((0.0, 0.0), (0.0, 0.0))
    # pow at a zero base reads log(0) as 0, like its partial: d2/dy2 = 0, d2/dxdy = x**(y-1)
    assert d2("pow", 0.0, 2.0) == ((2.0, 0.0), (0.0, 0.0))
    assert d2("pow", 0.0, 1.0)[0][1] == 1.0
    # a negative base: integer exponents are fine in x, nan where the log of the base enters
    (xx, xy), (_, yy) = d2("pow", -2.0, 3.0)
    assert xx == -12.0 and math.isnan(xy) and math.isnan(yy)
    assert d2("div", 1.0, 0.0)[1][1] == INF and d2("ipow-1", 0.0) == ((INF,),)


# --- Hessians through the reference's tape ---

def _graph(formulas: str, inputs: dict, output: str = "z"):
    """A graph from `name: formula; name: formula` lines."""
    lines = "".join(f"\n  {line}" for line in formulas.split("; "))
    text = "inputs: {%s}\ngraph:%s\noutputs: [%s]" % (
        ", ".join(f"{k}: {v}" for k, v in inputs.items()), lines, output)
    return job_from_text(text).graph


def _hessian(formulas, point, wrt, output="z"):
    g = _graph(formulas, point, output)
    return hessian(g, forward(g, point), output, wrt)


@pytest.mark.parametrize("x, y", [(2.0, 3.0), (-0.5, 1.5), (0.0, -2.0)])
def test_closed_forms(x, y):
    h = _hessian("z: x * y", {"x": x, "y": y}, ["x", "y"])
    assert h == {"x": {"x": 0.0, "y": 1.0}, "y": {"x": 1.0, "y": 0.0}}
    h = _hessian("z: x ** 3 * y", {"x": x, "y": y}, ["x", "y"])
    assert h == {"x": {"x": 6 * x * y, "y": 3 * x ** 2}, "y": {"x": 3 * x ** 2, "y": 0.0}}
    h = _hessian("z: sin(x) * exp(y)", {"x": x, "y": y}, ["x", "y"])
    s, c, e = math.sin(x), math.cos(x), math.exp(y)
    expected = {"x": {"x": -s * e, "y": c * e}, "y": {"x": c * e, "y": s * e}}
    for a in "xy":
        for b in "xy":
            assert h[a][b] == pytest.approx(expected[a][b], rel=1e-15, abs=1e-15)


def test_a_chain_differentiated_with_respect_to_its_intermediate_nodes():
    """u = x*x, v = sin(u), z = v*v + u. With respect to perturbations added to u and v:
    z = v^2 + u, so d2z/dv2 = 2, d2z/dudv = 2 cos(u) (v moves with u), d2z/du2 = 2(cos^2 u - sin^2 u)."""
    x = 0.8
    h = _hessian("u: x * x; v: sin(u); z: v * v + u", {"x": x}, ["x", "u", "v"])
    u = x * x
    expected = {
        "v": {"v": 2.0, "u": 2 * math.cos(u), "x": 2 * math.cos(u) * 2 * x},
        "u": {"u": 2 * (math.cos(u) ** 2 - math.sin(u) ** 2),
              "x": 2 * (math.cos(u) ** 2 - math.sin(u) ** 2) * 2 * x},
        # z(x) = sin(x^2)^2 + x^2: z'' = 2 + (8x^2 cos(2x^2) + 2 sin(2x^2))
        "x": {"x": 2 + 8 * x * x * math.cos(2 * u) + 2 * math.sin(2 * u)},
    }
    for a, row in expected.items():
        for b, want in row.items():
            assert h[a][b] == pytest.approx(want, rel=1e-14), (a, b)
            assert h[b][a] == pytest.approx(want, rel=1e-14), (b, a)


def test_the_seed_graphs():
    """seed_chain: e = (a*b)*d; seed_sum_product: z = (a+b)*(c*d). Their Hessians are the constant
    products' mixed partials, intermediate nodes included."""
    g = job_from_text((ROOT / "jobs" / "seed_chain.yaml").read_text()).graph
    values = forward(g, {"a": 2.0, "b": 3.0, "d": 4.0})
    h = hessian(g, values, "e", ["a", "b", "d", "c"])
    assert h["a"] == {"a": 0.0, "b": 4.0, "d": 3.0, "c": 0.0}
    assert h["b"] == {"a": 4.0, "b": 0.0, "d": 2.0, "c": 0.0}
    assert h["d"] == {"a": 3.0, "b": 2.0, "d": 0.0, "c": 1.0}
    assert h["c"] == {"a": 0.0, "b": 0.0, "d": 1.0, "c": 0.0}
    g = job_from_text((ROOT / "jobs" / "seed_sum_product.yaml").read_text()).graph
    values = forward(g, {"a": 2.0, "b": 3.0, "c": 4.0, "d": 5.0})
    names = ["a", "b", "c", "d", "x", "y"]
    h = hessian(g, values, "z", names)
    expected = {("a", "c"): 5.0, ("a", "d"): 4.0, ("b", "c"): 5.0, ("b", "d"): 4.0,
                ("c", "d"): 5.0, ("a", "y"): 1.0, ("b", "y"): 1.0, ("x", "c"): 5.0, ("x", "d"): 4.0,
                ("x", "y"): 1.0}
    for a in names:
        for b in names:
            assert h[a][b] == expected.get((a, b), expected.get((b, a), 0.0)), (a, b)


GRAPHS = [  # (formulas, point): smooth at the point, every curved op of the table
    ("z: tanh(x * y) + sigmoid(x) ** 2.5 / (1 + y * y)", {"x": 0.3, "y": -0.7}),
    ("u: log(x) * sqrt(y); v: x ** y; z: u * v + cos(u) - tan(v / 4)", {"x": 1.3, "y": 0.6}),
    ("u: exp(-x * x); w: u * y - 1 / (y + 2); z: w * w * sin(x) + abs(w) + relu(x) * x ** 3",
     {"x": 0.4, "y": 1.1}),
    ("u: max(x, y) * min(x, y * 2); z: where(x > 0, u * u, -u) + x ** -2", {"x": 0.9, "y": 0.5}),
]


@pytest.mark.parametrize("formulas, point", GRAPHS)
def test_hessian_is_the_central_difference_of_the_reference_gradient(formulas, point):
    g = _graph(formulas, point)
    names = list(g.visible)
    values = forward(g, point)
    h = hessian(g, values, "z", names)
    for b in names:
        # perturb b through an input added to its formula (`forward`'s overrides would also move
        # the op result that partials like exp' = exp are computed from)
        moved = _graph("; ".join(f"{line} + eps" if line.startswith(f"{b}: ") else line
                                 for line in formulas.split("; ")), {**point, "eps": 0.0})
        wiggle = "eps" if b in g.named else b
        step = 1e-5 * max(1.0, abs(values[b]))

        def grad(shift):
            at = {**point, "eps": 0.0}
            at[wiggle] += shift
            adjoint = backward(moved, forward(moved, at), "z")
            return {a: adjoint.get(a, 0.0) for a in names}

        up, down = grad(step), grad(-step)
        for a in names:
            fd = (up[a] - down[a]) / (2 * step)
            assert h[a][b] == pytest.approx(fd, rel=1e-6, abs=1e-7), (a, b)
            assert h[a][b] == pytest.approx(h[b][a], rel=1e-12, abs=1e-14), (a, b)


def test_names_the_output_does_not_depend_on_have_zero_rows_and_columns():
    g = _graph("z: x * x; w: exp(y)", {"x": 1.5, "y": 2.0}, "z, w")
    h = hessian(g, forward(g, {"x": 1.5, "y": 2.0}), "z", ["x", "y", "w"])
    assert h == {"x": {"x": 2.0, "y": 0.0, "w": 0.0}, "y": {"x": 0.0, "y": 0.0, "w": 0.0},
                 "w": {"x": 0.0, "y": 0.0, "w": 0.0}}
    # a comparison cuts the edge: nothing flows back through it, to first or second order
    g = _graph("z: (x * x > 1) * y + x", {"x": 1.5, "y": 2.0})
    h = hessian(g, forward(g, {"x": 1.5, "y": 2.0}), "z", ["x", "y"])
    assert h == {"x": {"x": 0.0, "y": 0.0}, "y": {"x": 0.0, "y": 0.0}}


def test_directions_compute_a_sample_of_columns():
    g = _graph("z: x * x * y", {"x": 2.0, "y": 3.0})
    values = forward(g, {"x": 2.0, "y": 3.0})
    h = hessian(g, values, "z", ["x", "y"], directions=["y"])
    assert h == {"x": {"y": 4.0}, "y": {"y": 0.0}}


def test_relu_blocks_an_infinite_tangent_like_jax():
    """relu's rules are selects in JAX: at x < 0 neither the adjoint nor its tangent flows back, so
    sqrt''(0) = -inf further down never becomes 0 * inf = nan."""
    g = _graph("z: sqrt(relu(x)) + x * x", {"x": -1.0})
    h = hessian(g, forward(g, {"x": -1.0}), "z", ["x"])
    assert h["x"]["x"] == 2.0


def test_bounds_scale_with_unit_roundoff_and_are_zero_where_nothing_rounds():
    g = _graph("z: x * y", {"x": 2.0, "y": 3.0})
    _, err = hessian(g, forward(g, {"x": 2.0, "y": 3.0}), "z", ["x", "y"], unit=2.0 ** -24)
    assert err["x"]["x"] == 0.0 and 0.0 < err["x"]["y"] <= 4 * 2.0 ** -24
    g = _graph(*GRAPHS[1])
    values = forward(g, GRAPHS[1][1])
    h, e32 = hessian(g, values, "z", ["x", "y", "u"], unit=2.0 ** -24)
    _, e64 = hessian(g, values, "z", ["x", "y", "u"], unit=2.0 ** -53)
    for a in e32:
        for b in e32[a]:
            assert e32[a][b] == pytest.approx(e64[a][b] * 2.0 ** 29, rel=0.05)  # first order
            assert 0.0 < e32[a][b] < 1e-4 * (1.0 + abs(h[a][b]))  # a bound, not a shrug


def test_bounds_carry_the_error_of_a_cancelling_value_into_the_curvature():
    """w = (x + 1e4) - 1e4 is 0.5 with an error of about 1e4 units in float32, so the computed
    Hessian of w ** 3 (6w = 3) can be off by 6 times that, far more than 3 units."""
    g = _graph("w: (x + 1e4) - 1e4; z: w ** 3", {"x": 0.5})
    values = forward(g, {"x": 0.5})
    h, err = hessian(g, values, "z", ["x"], unit=2.0 ** -24)
    assert h["x"]["x"] == 3.0
    assert err["x"]["x"] >= 6 * 1e4 * 2.0 ** -24


@pytest.mark.parametrize("formulas, point", GRAPHS)
@pytest.mark.parametrize("dtype, unit", [("float32", 2.0 ** -24), ("float64", 2.0 ** -53)])
def test_jax_hessians_fall_within_the_bounds(formulas, point, dtype, unit):
    """What verify relies on: a JAX Hessian (jacfwd of jacrev) in the job's dtype is within
    verify's default factor (32) of the bound from the exact reference (float64)."""
    import jax
    import jax.numpy as jnp

    g = _graph(formulas, point)
    names = list(point)
    env = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "log": jnp.log, "sqrt": jnp.sqrt,
           "cos": jnp.cos, "sin": jnp.sin, "tan": jnp.tan, "exp": jnp.exp, "abs": jnp.abs,
           "relu": jax.nn.relu, "max": jnp.maximum, "min": jnp.minimum, "where": jnp.where}

    def f(xs):
        scope = dict(zip(names, xs))
        for line in formulas.split("; "):
            name, text = line.split(": ")
            scope[name] = eval(text, env, scope)  # the test's own formulas
        return scope["z"]

    with jax.enable_x64(True):
        xs = jnp.array([point[n] for n in names], dtype=dtype)
        got = jax.hessian(f)(xs)
        assert got.dtype == dtype
        got = got.tolist()
    h, err = hessian(g, forward(g, point), "z", names, unit=unit)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            assert abs(got[i][j] - h[a][b]) <= 32 * err[a][b], (a, b, got[i][j], h[a][b], err[a][b])


def test_the_hessian_imports_neither_numpy_nor_jax():
    code = ("import sys\n"
            "for banned in ('jax', 'jaxlib', 'numpy'):\n"
            "    sys.modules[banned] = None\n"
            "import gradsvc.reference.hessian, gradsvc.reference.scalarize\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
