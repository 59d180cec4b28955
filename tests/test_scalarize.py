"""Tensor graphs in the reference: written out in scalars (scalarize), differentiated by the scalar
reverse mode and forward over reverse, and compared with closed forms written here in plain Python."""
import math

import pytest

from gradsvc.core.expr import parse_formula
from gradsvc.core.ir import build_graph
from gradsvc.errors import Location
from gradsvc.job.spec import job_from_text
from gradsvc.reference.backprop import run_point
from gradsvc.reference.hessian import hessian
from gradsvc.reference.scalarize import flatten, nest, run_tensor_point, scalarize

AT = Location("test.yaml", 1, 1)


def tensor_graph(inputs: dict, formulas: dict, outputs, wrt, order: int = 1):
    """A graph over `inputs` (name: value; shapes from the values) from `formulas` (name: text)."""
    names = set(inputs) | set(formulas)
    nodes = {name: parse_formula(name, text, AT, names) for name, text in formulas.items()}
    shapes = {name: flatten(value)[0] for name, value in inputs.items()}
    return build_graph(list(inputs), nodes, list(outputs), list(wrt), dict(formulas),
                       input_shapes={n: s for n, s in shapes.items() if s}, order=order)


def run(inputs: dict, formulas: dict, outputs, wrt, order: int = 1) -> dict:
    return run_tensor_point(tensor_graph(inputs, formulas, outputs, wrt, order), inputs, order)


def close(got, want, rel=1e-12, abs_=1e-12):
    """Nested lists equal within rounding."""
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(
            close(g, w, rel, abs_) for g, w in zip(got, want))
    return math.isclose(got, want, rel_tol=rel, abs_tol=abs_)


def delta(i, j):
    return 1.0 if i == j else 0.0


M = [[1.0, -2.0, 0.5], [3.0, 0.25, -1.5]]  # (2, 3)
V = [0.5, -1.0, 2.0]  # (3,)


# --- nest / flatten ---

def test_nest_and_flatten_are_inverses_in_c_order():
    assert flatten(M) == ((2, 3), [1.0, -2.0, 0.5, 3.0, 0.25, -1.5])
    assert nest((2, 3), flatten(M)[1]) == M
    assert nest((), [4.0]) == 4.0 and flatten(4.0) == ((), [4.0])
    assert nest((2, 1, 2), [1, 2, 3, 4]) == [[[1, 2]], [[3, 4]]]
    with pytest.raises(ValueError, match="ragged"):
        flatten([[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match="fill"):
        nest((2, 2), [1.0])


# --- the scalar graph ---

def test_a_scalar_graph_comes_back_as_the_same_computation():
    g = job_from_text("inputs: {a: 2, b: 3, c: 4, d: 5}\ngraph: {x: a + b, y: c * d, z: x * y + 2 ** x}"
                      "\noutputs: [z]\nwrt: all").graph
    view = scalarize(g)
    assert [(n.name, n.op, n.args, n.const, n.param) for n in view.graph.nodes] == \
        [(n.name, n.op, n.args, n.const, n.param) for n in g.nodes]
    assert (view.graph.inputs, view.graph.named, view.graph.outputs, view.graph.wrt) == \
        (g.inputs, g.named, g.outputs, g.wrt)
    point = {"a": 2.0, "b": 3.0, "c": 4.0, "d": 5.0}
    assert run_point(view.graph, view.point(point)).grads == run_point(g, point).grads


def test_elements_are_named_after_their_tensor_and_temporaries_are_not_named():
    g = tensor_graph({"W": M, "v": V, "b": 0.5}, {"h": "tanh(W @ v + b)", "s": "sum(h ** 2)"},
                     ["s"], ["W", "b"])
    view = scalarize(g, {"W": M, "v": V})
    assert view.elements["W"] == ((2, 3), ("W[0,0]", "W[0,1]", "W[0,2]", "W[1,0]", "W[1,1]", "W[1,2]"))
    assert view.elements["h"] == ((2,), ("h[0]", "h[1]")) and view.elements["s"] == ((), ("s",))
    assert view.elements["b"] == ((), ("b",))
    assert view.graph.inputs == view.names("W") + view.names("v") + ("b",)
    assert view.graph.named == ("h[0]", "h[1]", "s")
    assert view.graph.outputs == ("s",) and view.graph.wrt == view.names("W") + ("b",)
    names = {n.name for n in view.graph.nodes}
    assert {"h.1[0]", "h.1[1]"} <= names  # the temporary W @ v, element by element
    assert all(n.owner in ("W", "v", "b", "h", "s") for n in view.graph.nodes)
    assert view.graph.formulas["h[1]"] == "tanh(W @ v + b)"
    assert view.point({"b": 0.5}) == {**dict(zip(view.names("W"), flatten(M)[1])),
                                      **dict(zip(view.names("v"), V)), "b": 0.5}
    with pytest.raises(ValueError, match="shape"):
        view.point({"b": 0.5, "v": [1.0, 2.0]})
    with pytest.raises(ValueError, match="shape"):
        scalarize(g, {"W": [[1.0, 2.0]], "v": V})


def test_a_named_node_owns_its_elements_even_when_the_expansion_only_renames():
    """y: v[0] and c: cumsum(v) as the convention says: a perturbation added to y is not one of v,
    and one added to c[0] does not move c[1] (cumsum's running sum is c's, not c[1]'s input)."""
    inputs = {"v": V}
    r = run(inputs, {"y": "v[0]", "z": "y * v[0]"}, ["z"], ["y", "v"])
    assert r["grads"]["z"]["y"] == V[0] and r["grads"]["z"]["v"] == [2 * V[0], 0.0, 0.0]
    r = run(inputs, {"c": "cumsum(v)", "s": "sum(c)"}, ["s"], ["c", "v"])
    assert r["values"]["c"] == [0.5, -0.5, 1.5]
    assert r["grads"]["s"]["c"] == [1.0, 1.0, 1.0] and r["grads"]["s"]["v"] == [3.0, 2.0, 1.0]
    r = run(inputs, {"p": "stack(v, v)", "s": "sum(p * p)"}, ["s"], ["p", "v"])
    assert r["grads"]["s"]["p"] == [[2 * x for x in V]] * 2
    assert r["grads"]["s"]["v"] == [4 * x for x in V]
    view = scalarize(tensor_graph(inputs, {"y": "v", "w": "reshape(v, [3, 1])"}, ["y"], ["y"]),
                     inputs)
    ops = {n.name: (n.op, n.args) for n in view.graph.nodes}
    assert ops["y[2]"] == ("id", ("v[2]",)) and ops["w[1,0]"] == ("id", ("v[1]",))


# --- each tensor op: values and Jacobians against closed forms ---

def test_matmul_matrix_vector_and_matrix_matrix():
    r = run({"M": M, "v": V}, {"y": "M @ v"}, ["y"], ["M", "v"])
    assert r["values"]["y"] == [sum(M[i][k] * V[k] for k in range(3)) for i in range(2)]
    assert r["grads"]["y"]["v"] == M
    assert r["grads"]["y"]["M"] == [[[delta(i, k) * V[l] for l in range(3)] for k in range(2)]
                                    for i in range(2)]
    B = [[1.0, 2.0], [-1.0, 0.5], [0.0, 3.0]]  # (3, 2)
    r = run({"A": M, "B": B}, {"C": "A @ B"}, ["C"], ["A", "B"])
    assert r["values"]["C"] == [[sum(M[i][k] * B[k][j] for k in range(3)) for j in range(2)]
                                for i in range(2)]
    assert r["shapes"]["C"] == (2, 2)
    assert r["grads"]["C"]["A"] == [[[[delta(i, k) * B[l][j] for l in range(3)] for k in range(2)]
                                     for j in range(2)] for i in range(2)]
    assert r["grads"]["C"]["B"] == [[[[delta(j, m) * M[i][l] for m in range(2)] for l in range(3)]
                                     for j in range(2)] for i in range(2)]
    r = run({"v": V, "A": M}, {"u": "A @ v", "w": "v @ transpose(A)"}, ["u", "w"], ["v"])
    assert r["values"]["u"] == r["values"]["w"] and r["grads"]["w"]["v"] == M


def test_dot_of_vectors_and_transpose():
    U = [2.0, 0.5, -1.0]
    r = run({"a": V, "b": U}, {"d": "dot(a, b)"}, ["d"], ["a", "b"])
    assert r["values"]["d"] == sum(x * y for x, y in zip(V, U))
    assert r["grads"]["d"]["a"] == U and r["grads"]["d"]["b"] == V
    r = run({"M": M}, {"T": "transpose(M)"}, ["T"], ["M"])
    assert r["values"]["T"] == [[M[i][j] for i in range(2)] for j in range(3)]
    assert r["grads"]["T"]["M"] == [[[[delta(k, j) * delta(l, i) for l in range(3)] for k in range(2)]
                                     for j in range(2)] for i in range(3)]


def test_sum_mean_prod_with_and_without_axis():
    r = run({"M": M}, {"a": "sum(M)", "c": "sum(M, axis=0)", "m": "mean(M, axis=1)", "p": "prod(M)"},
            ["a", "c", "m", "p"], ["M"])
    assert r["values"]["a"] == sum(sum(row) for row in M)
    assert r["grads"]["a"]["M"] == [[1.0] * 3] * 2
    assert r["values"]["c"] == [M[0][j] + M[1][j] for j in range(3)]
    assert r["grads"]["c"]["M"] == [[[delta(j, l) for l in range(3)] for _ in range(2)] for j in range(3)]
    assert close(r["values"]["m"], [sum(row) / 3 for row in M])
    assert close(r["grads"]["m"]["M"], [[[delta(i, k) / 3 for _ in range(3)] for k in range(2)]
                                        for i in range(2)])
    flat = flatten(M)[1]
    product = math.prod(flat)
    assert close(r["values"]["p"], product)
    assert close(r["grads"]["p"]["M"], nest((2, 3), [product / x for x in flat]))


def test_amax_and_amin_pick_one_element():
    r = run({"v": V}, {"hi": "max(v)", "lo": "min(v)", "e": "max(v, 1.0)"}, ["hi", "lo", "e"], ["v"])
    assert r["values"]["hi"] == 2.0 and r["grads"]["hi"]["v"] == [0.0, 0.0, 1.0]
    assert r["values"]["lo"] == -1.0 and r["grads"]["lo"]["v"] == [0.0, 1.0, 0.0]
    assert r["values"]["e"] == [1.0, 1.0, 2.0]  # two arguments: elementwise, broadcast
    r = run({"M": M}, {"cols": "max(M, axis=0)"}, ["cols"], ["M"])
    assert r["values"]["cols"] == [3.0, 0.25, 0.5]
    assert r["grads"]["cols"]["M"] == [[[0.0] * 3, [1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                                       [[0.0, 0.0, 1.0], [0.0] * 3]]


def test_trapz_is_the_trapezoid_rule_and_its_gradient_the_quadrature_weights():
    xs = [0.0, 0.5, 1.5, 2.0]
    ys = [1.0, -2.0, 0.5, 3.0]
    r = run({"y": ys, "x": xs}, {"I": "trapz(y, x)"}, ["I"], ["y", "x"])
    n = len(xs)
    assert close(r["values"]["I"], sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(n - 1)))
    weights = [(xs[1] - xs[0]) / 2] + [(xs[i + 1] - xs[i - 1]) / 2 for i in range(1, n - 1)] + \
        [(xs[-1] - xs[-2]) / 2]
    assert close(r["grads"]["I"]["y"], weights)
    d_dx = [-(ys[0] + ys[1]) / 2] + [(ys[i - 1] - ys[i + 1]) / 2 for i in range(1, n - 1)] + \
        [(ys[-1] + ys[-2]) / 2]
    assert close(r["grads"]["I"]["x"], d_dx)
    # a functional: the gradient of the integral of f(s)**2 with respect to the sampled f is 2 f w
    s = [k / 10 for k in range(11)]
    r = run({"s": s}, {"f": "sin(s)", "A": "trapz(f ** 2, s)"}, ["A"], ["f"])
    w = [0.05] + [0.1] * 9 + [0.05]
    assert close(r["grads"]["A"]["f"], [2 * math.sin(x) * wk for x, wk in zip(s, w)])
    # along the last axis of a matrix: one integral per row
    r = run({"Y": [ys, [2 * y for y in ys]], "x": xs}, {"I": "trapz(Y, x)"}, ["I"], ["Y"])
    assert r["shapes"]["I"] == (2,) and close(r["values"]["I"][1], 2 * r["values"]["I"][0])


def test_index_and_slices():
    r = run({"v": V, "M": M}, {"a": "v[1:3]", "b": "M[:, 0]", "c": "M[1, 0]", "d": "v[-1]",
                               "e": "v[::2]", "f": "M[1]"}, ["a", "b", "c", "d", "e", "f"], ["v", "M"])
    assert r["values"]["a"] == V[1:3] and r["grads"]["a"]["v"] == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert r["values"]["b"] == [1.0, 3.0]
    assert r["grads"]["b"]["M"] == [[[1.0, 0.0, 0.0], [0.0] * 3], [[0.0] * 3, [1.0, 0.0, 0.0]]]
    assert r["values"]["c"] == 3.0 and r["grads"]["c"]["M"] == [[0.0] * 3, [1.0, 0.0, 0.0]]
    assert r["values"]["d"] == 2.0 and r["grads"]["d"]["v"] == [0.0, 0.0, 1.0]
    assert r["values"]["e"] == [0.5, 2.0] and r["grads"]["e"]["v"] == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    assert r["values"]["f"] == M[1]


def test_reshape_stack_concat():
    r = run({"M": M}, {"R": "reshape(M, [3, 2])", "F": "reshape(M, [-1])"}, ["R", "F"], ["M"])
    flat = flatten(M)[1]
    assert r["values"]["R"] == nest((3, 2), flat) and r["values"]["F"] == flat
    assert r["grads"]["F"]["M"] == [nest((2, 3), [delta(k, m) for m in range(6)]) for k in range(6)]
    U = [2.0, 0.5, -1.0]
    r = run({"a": V, "b": U}, {"S": "stack(a, b)", "C": "concat(a, b)", "q": "sum(S * S) + sum(C)"},
            ["S", "C", "q"], ["a", "b"])
    assert r["values"]["S"] == [V, U] and r["values"]["C"] == V + U
    assert r["grads"]["S"]["b"] == [[[0.0] * 3] * 3, [[delta(i, j) for j in range(3)] for i in range(3)]]
    assert r["grads"]["C"]["a"] == [[delta(i, j) for j in range(3)] for i in range(3)] + [[0.0] * 3] * 3
    assert r["grads"]["q"]["a"] == [2 * x + 1 for x in V]


def test_cumsum_along_each_axis():
    r = run({"v": V}, {"c": "cumsum(v)"}, ["c"], ["v"])
    assert r["values"]["c"] == [0.5, -0.5, 1.5]
    assert r["grads"]["c"]["v"] == [[1.0 if j <= i else 0.0 for j in range(3)] for i in range(3)]
    r = run({"M": M}, {"c": "cumsum(M, axis=0)", "d": "cumsum(M)"}, ["c", "d"], ["M"])
    assert r["values"]["c"] == [M[0], [M[0][j] + M[1][j] for j in range(3)]]
    assert r["values"]["d"] == [[1.0, -1.0, -0.5], [3.0, 3.25, 1.75]]


def test_elementwise_ops_broadcast_like_numpy():
    r = run({"M": M, "v": V, "c": 2.0}, {"A": "M * v + c", "B": "v[0:1] - M"}, ["A", "B"],
            ["v", "c"])
    assert r["values"]["A"] == [[M[i][j] * V[j] + 2.0 for j in range(3)] for i in range(2)]
    assert r["grads"]["A"]["v"] == [[[delta(j, l) * M[i][j] for l in range(3)] for j in range(3)]
                                    for i in range(2)]
    assert r["grads"]["A"]["c"] == [[1.0] * 3] * 2
    assert r["values"]["B"] == [[V[0] - M[i][j] for j in range(3)] for i in range(2)]


# --- the worked models ---

def test_least_squares_gradient_and_hessian_are_the_closed_forms():
    X = [[1.0, 0.5], [1.0, -1.0], [1.0, 2.0], [1.0, 3.5]]
    y = [1.0, -0.5, 2.5, 4.0]
    w = [0.25, 0.75]
    n, d = len(X), len(w)
    r = run({"X": X, "y": y, "w": w}, {"loss": "mean((X @ w - y) ** 2)"}, ["loss"], ["w"], order=2)
    res = [sum(X[i][k] * w[k] for k in range(d)) - y[i] for i in range(n)]
    assert close(r["values"]["loss"], sum(e * e for e in res) / n)
    assert close(r["grads"]["loss"]["w"], [2 * sum(X[i][k] * res[i] for i in range(n)) / n
                                           for k in range(d)])
    assert close(r["hessians"]["loss"]["w"]["w"],
                 [[2 * sum(X[i][k] * X[i][m] for i in range(n)) / n for m in range(d)] for k in range(d)])


def test_hessians_of_a_layer_with_respect_to_matrices_and_scalars():
    """q = sum(tanh(W @ x + b)): H[W][W] is block diagonal in the rows of W, -2 t (1 - t^2) x x^T per
    row; H[W][b] = -2 t (1 - t^2) x per row; shapes W.shape + W.shape and so on."""
    W = [[0.5, -0.25], [1.0, 0.75], [-0.5, 0.1]]
    x = [0.8, -0.6]
    r = run({"W": W, "x": x, "b": 0.2}, {"q": "sum(tanh(W @ x + b))"}, ["q"], ["W", "b"], order=2)
    t = [math.tanh(sum(W[i][k] * x[k] for k in range(2)) + 0.2) for i in range(3)]
    c = [-2 * ti * (1 - ti * ti) for ti in t]
    h = r["hessians"]["q"]
    assert close(h["W"]["W"], [[[[delta(i, j) * c[i] * x[k] * x[l] for l in range(2)] for j in range(3)]
                                for k in range(2)] for i in range(3)])
    assert close(h["W"]["b"], [[c[i] * x[k] for k in range(2)] for i in range(3)])
    assert close(h["b"]["W"], h["W"]["b"]) and close(h["b"]["b"], sum(c))
    assert close(r["grads"]["q"]["W"], [[(1 - ti * ti) * xk for xk in x] for ti in t])


@pytest.mark.parametrize("dtype, unit", [("float32", 2.0 ** -24), ("float64", 2.0 ** -53)])
def test_jax_hessian_of_a_small_network_falls_within_the_reference_bounds(dtype, unit):
    """What verify relies on for tensor jobs: JAX's Hessian (in the job's dtype) of a loss with long
    sums in it is within verify's default factor (32) of the scalarized reference's bound."""
    import jax
    import jax.numpy as jnp

    D = [[0.5, -1.0], [1.5, 0.25], [-0.75, 2.0], [0.1, 0.3], [-1.2, -0.4], [0.9, 1.1]]
    W = [[0.3, -0.8, 0.5], [1.1, 0.2, -0.6]]
    inputs = {"D": D, "W": W, "v": [0.7, -1.3, 0.4], "t": [0.5, -0.2, 1.0, 0.0, 0.3, -0.9], "b": 0.1}
    g = tensor_graph(inputs, {"h": "tanh(D @ W + b)", "loss": "mean((h @ v - t) ** 2) + 0.5 * sum(W ** 2)"},
                     ["loss"], ["W", "b"], order=2)
    view = scalarize(g, inputs)
    values = run_point(view.graph, view.point(inputs)).values
    h, err = hessian(view.graph, values, "loss", view.graph.wrt, unit=unit)
    with jax.enable_x64(True):
        a = {k: jnp.array(x, dtype=dtype) for k, x in inputs.items()}

        def loss(W, b):
            hidden = jnp.tanh(a["D"] @ W + b)
            return jnp.mean((hidden @ a["v"] - a["t"]) ** 2) + 0.5 * jnp.sum(W ** 2)

        H = jax.hessian(loss, argnums=(0, 1))(a["W"], a["b"])
        got = {"W": {"W": H[0][0].reshape(6, 6).tolist(), "b": H[0][1].reshape(6).tolist()},
               "b": {"W": H[1][0].reshape(6).tolist(), "b": float(H[1][1])}}
    blocks = {"W": view.names("W"), "b": ("b",)}
    for x, xs in blocks.items():
        for y, ys in blocks.items():
            for i, p in enumerate(xs):
                for j, q in enumerate(ys):
                    want = got[x][y]
                    want = (want if x == y == "b" else want[j] if x == "b" else want[i] if y == "b"
                            else want[i][j])
                    assert abs(want - h[p][q]) <= 32 * err[p][q], (p, q, want, h[p][q], err[p][q])
