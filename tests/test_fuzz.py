"""Differential fuzzing: random well-formed graphs, JAX vs the reference vs finite differences.

Scalar graphs (`graphs`) and tensor graphs (`tensor_jobs`: shapes, broadcasting, reductions,
indexing, Jacobians, Hessians, forward and reverse mode). CI runs a bounded number of examples
(GRADSVC_FUZZ_EXAMPLES, default 30, for each; GRADSVC_FUZZ_TENSOR_EXAMPLES, when set, for the
tensor graphs alone: each compiles its own kernels, a few a second); `make fuzz` runs a campaign
and, through GRADSVC_FUZZ_LOG, logs each example for tests/fuzz_report.py to count. Every
disagreement found becomes a named regression test (test_ops.py, test_verify.py, or at the end of
this file for what the tensor fuzzer found).
"""
import json
import math
import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import gradsvc
from gradsvc.errors import GradsvcError, GraphError

EXAMPLES = int(os.environ.get("GRADSVC_FUZZ_EXAMPLES", "30"))
UNARY = ["exp", "log", "sin", "cos", "tan", "tanh", "sigmoid", "relu", "sqrt", "abs", "-"]
BINARY = ["+", "-", "*", "/", "**", "max", "min", ">", ">=", "<", "<=", "where"]


@st.composite
def graphs(draw):
    n_inputs = draw(st.integers(1, 3))
    inputs = [f"x{i}" for i in range(n_inputs)]
    names = list(inputs)
    top = {}  # node -> its outermost op, to steer clear of XLA's rewrites (test_xla_rewrites.py)
    graph = {}
    for k in range(draw(st.integers(1, 6))):
        def operand():
            if draw(st.integers(0, 5)) == 0:
                return repr(draw(st.sampled_from([0.5, 2.0, 3.0, -1.5])))
            return draw(st.sampled_from(names))
        if draw(st.booleans()):
            fn = draw(st.sampled_from(UNARY))
            arg = operand()
            if fn == "log" and top.get(arg) in ("exp", "**"):
                fn = "sin"
            formula, top[f"n{k}"] = (f"-({arg})" if fn == "-" else f"{fn}({arg})"), fn
        else:
            op = draw(st.sampled_from(BINARY))
            right = str(draw(st.integers(-3, 4))) if op == "**" and draw(st.booleans()) else operand()
            left = operand()
            if op in ("*", "/") and top.get(left) == top.get(right) == "exp":
                op = "+"
            if op in ("max", "min"):
                formula = f"{op}({left}, {right})"
            elif op == "where":
                test = draw(st.sampled_from([">", ">=", "<", "<="]))
                formula = f"where(({left}) {test} ({right}), {operand()}, {operand()})"
            else:
                formula = f"({left}) {op} ({right})"
            top[f"n{k}"] = op
        name = f"n{k}"
        graph[name] = formula
        names.append(name)
    values = st.floats(-3, 3, allow_nan=False).map(lambda v: round(v, 3))
    grid = {name: draw(st.lists(values, min_size=1, max_size=3)) for name in inputs}
    outputs = draw(st.lists(st.sampled_from(list(graph)), min_size=1, max_size=2, unique=True))
    return {"inputs": grid, "graph": graph, "outputs": outputs}


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(graphs(), st.sampled_from(["float64", "float32"]))
def test_random_graphs_agree(job, dtype):
    r = gradsvc.run(job, dtype=dtype)
    if LOG:
        _log(job, dtype, r)
    assert r.ok, (job, r.verify.mismatch_points[:3], r.verify.fd["mismatch_points"][:3])


LOG = os.environ.get("GRADSVC_FUZZ_LOG")
_OPS = re.compile(r"[a-z]+(?=\()|\*\*|[-+*/]|[<>]=?")


def _log(job: dict, dtype: str, r) -> None:
    v = r.verify
    entry = {"dtype": dtype, "ok": bool(r.ok), "points": r.points, "nodes": len(job["graph"]),
             "ops": sorted({m for f in job["graph"].values() for m in _OPS.findall(f)}),
             "compared": v.compared, "checked_points": v.checked_points,
             "nonfinite_points": v.nonfinite_count, "kink_points": v.kink_count,
             "ill_conditioned": v.ill_conditioned, "fd_checked": v.fd["checked"],
             "fd_skipped": v.fd["skipped_kink"] + v.fd["skipped_nonfinite"],
             "fd_inconclusive": v.fd["inconclusive"]}
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


# --- tensor graphs ---
# Random small tensors (nested lists, up to 4 per axis), a grid axis or two, and graphs mixing
# elementwise ops (broadcasting, scalar-tensor) with @, dot, transpose, reshape, stack, concat,
# reductions with and without axis=, cumsum, trapz and integer indexing. Shapes are tracked by an
# independent model (numpy's own rules on arrays of zeros, with the language's documented
# restrictions); an op drawn "wild" may take any operands, and a job whose shapes the model finds
# invalid must be refused with one clear GradsvcError at a place in the job, never run.

TENSOR_EXAMPLES = int(os.environ.get("GRADSVC_FUZZ_TENSOR_EXAMPLES", EXAMPLES))
T_UNARY = ["exp", "log", "sin", "cos", "tanh", "sigmoid", "relu", "sqrt", "abs", "-"]
T_BINARY = ["+", "-", "*", "/", "**", "max", "min", "where"]
REDUCTIONS = {"sum": np.sum, "mean": np.mean, "prod": np.prod, "max": np.max, "min": np.min}
BIG = 2 ** 63 - 1  # the largest integer literal formulas take
SHAPE_TEXT = re.compile(r"\((\d+, )*\d+,?\)|\(\)|axis|index|subscript")
STRUCTURAL = ["@", "dot", "transpose", "reshape", "stack", "concat", "reduce", "cumsum", "trapz",
              "index"]


def model_shape(op: str, shapes: list, param=None):
    """The result's shape by numpy's rules and the language's restrictions, or None: invalid."""
    arrays = [np.zeros(s) for s in shapes]
    try:
        if op == "elementwise":
            return tuple(np.broadcast_shapes(*shapes))
        if op in ("@", "dot"):
            ok = all(len(s) in (1, 2) for s in shapes)
            return tuple(np.matmul(*arrays).shape) if ok else None
        if op == "transpose":
            return tuple(np.transpose(arrays[0]).shape)
        if op == "reshape":
            return tuple(np.reshape(arrays[0], param).shape)
        if op == "stack":
            return tuple(np.stack(arrays).shape)
        if op == "concat":
            ok = all(shapes)
            return tuple(np.concatenate(arrays).shape) if ok else None
        if op in REDUCTIONS:
            ok = param is None or bool(shapes[0])  # numpy takes axis=0 of a number; formulas do not
            return tuple(np.shape(REDUCTIONS[op](arrays[0], axis=param))) if ok else None
        if op == "cumsum":
            ok = bool(shapes[0])
            return tuple(np.cumsum(arrays[0], axis=-1 if param is None else param).shape) \
                if ok else None
        if op == "trapz":
            y, x = shapes
            ok = bool(y) and len(x) == 1 and x[0] == y[-1] >= 2
            return y[:-1] if ok else None
        if op == "index":
            picked = arrays[0][param]
            return tuple(picked.shape) if picked.size else None  # an empty slice is refused
    except (ValueError, IndexError, TypeError):
        return None
    raise AssertionError(op)


def _subscript_text(param: tuple) -> str:
    def one(item):
        if isinstance(item, int):
            return str(item)
        start, stop, step = item.start, item.stop, item.step
        text = f"{'' if start is None else start}:{'' if stop is None else stop}"
        return text + (f":{step}" if step is not None else "")
    return ", ".join(map(one, param))


@st.composite
def tensor_jobs(draw):
    """A tensor job as a dict, and whether the shape model finds it invalid."""
    values = st.floats(-3, 3, allow_nan=False).map(lambda v: round(v, 2))
    inputs: dict = {}
    pool: list[tuple[str, tuple]] = []  # (text, shape): names and unnamed expressions
    for i in range(draw(st.integers(1, 3))):
        shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
        flat = draw(st.lists(values, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        inputs[f"T{i}"] = {"tensor": np.reshape(flat, shape).tolist()}
        pool.append((f"T{i}", shape))
    for i in range(draw(st.integers(0, 2))):  # grid axes (one value: a scalar input)
        inputs[f"g{i}"] = draw(st.lists(values, min_size=1, max_size=2 if i else 3))
        pool.append((f"g{i}", ()))
    graph: dict = {}
    invalid = False

    def pick(shapes=None, ndims=None) -> tuple[str, tuple] | None:
        choices = [p for p in pool if (shapes is None or p[1] in shapes)
                   and (ndims is None or len(p[1]) in ndims)]
        return draw(st.sampled_from(choices)) if choices else None

    def constant() -> tuple[str, tuple]:
        return repr(draw(st.sampled_from([0.5, 2.0, 3.0, -1.5, 0.0, 1.0]))), ()

    def coordinate(n: int) -> tuple[str, tuple]:
        """A 1-D node of length n for trapz: an existing one, or a new sorted input."""
        have = pick(shapes=[(n,)])
        if have is not None and draw(st.booleans()):
            return have
        name = f"s{n}"
        if name not in inputs:
            start = draw(st.sampled_from([0.0, -1.0, 0.5]))
            stop = start + draw(st.sampled_from([1.0, 2.0]))
            inputs[name] = {"tensor": {"linspace": [start, stop, n]}}
            pool.append((name, (n,)))
        return name, (n,)

    def elementwise(a):
        if draw(st.booleans()):
            fn = draw(st.sampled_from(T_UNARY))
            return (f"-({a[0]})" if fn == "-" else f"{fn}({a[0]})"), [a[1]]
        op = draw(st.sampled_from(T_BINARY))
        if draw(st.integers(0, 3)) == 0:
            b = constant()
        else:
            compatible = [p for p in pool if model_shape("elementwise", [a[1], p[1]]) is not None]
            b = draw(st.sampled_from(compatible))
        if draw(st.booleans()):
            a, b = b, a
        if op == "**" and draw(st.booleans()):
            return f"({a[0]}) ** {draw(st.integers(-2, 3))}", [a[1]]
        if op in ("max", "min"):
            return f"{op}({a[0]}, {b[0]})", [a[1], b[1]]
        if op == "where":
            c = draw(st.sampled_from(pool))
            test = draw(st.sampled_from([">", "<="]))
            return f"where(({a[0]}) {test} ({c[0]}), {a[0]}, {b[0]})", [a[1], b[1], c[1]]
        return f"({a[0]}) {op} ({b[0]})", [a[1], b[1]]

    def structural(kind, a, wild):
        """(text, model op, argument shapes, param), or None when nothing fits."""
        if kind in ("@", "dot"):
            if wild:
                b = draw(st.sampled_from(pool))
            elif len(a[1]) not in (1, 2):
                return None
            else:
                fits = [p for p in pool if len(p[1]) in (1, 2) and p[1][0] == a[1][-1]]
                b = draw(st.sampled_from(fits)) if fits else (f"transpose({a[0]})", a[1][::-1])
            text = f"({a[0]}) @ ({b[0]})" if kind == "@" else f"dot({a[0]}, {b[0]})"
            return text, kind, [a[1], b[1]], None
        if kind == "transpose":
            return f"transpose({a[0]})", kind, [a[1]], None
        if kind == "reshape":
            size = int(np.prod(a[1]))
            pairs = [[p, size // p] for p in range(1, size + 1) if size % p == 0]
            target = draw(st.sampled_from([[size], *pairs, [size, 1, 1]] + ([[]] if size == 1 else [])))
            if wild:
                target = [draw(st.integers(1, 5)) for _ in range(draw(st.integers(1, 2)))]
            if target and draw(st.integers(0, 2)) == 0:
                target[draw(st.integers(0, len(target) - 1))] = -1
            return f"reshape({a[0]}, {target})", kind, [a[1]], tuple(target)
        if kind == "stack":
            others = [p for p in pool if p[1] == a[1] or wild]
            args = [a] + draw(st.lists(st.sampled_from(others), min_size=0, max_size=2))
            return f"stack({', '.join(t for t, _ in args)})", kind, [s for _, s in args], None
        if kind == "concat":
            if not a[1] and not wild:
                return None
            others = [p for p in pool if (p[1] and p[1][1:] == a[1][1:]) or wild]
            args = [a] + draw(st.lists(st.sampled_from(others), min_size=0, max_size=2))
            return f"concat({', '.join(t for t, _ in args)})", kind, [s for _, s in args], None
        if kind == "reduce":
            fn = draw(st.sampled_from(sorted(REDUCTIONS)))
            ndim = len(a[1])
            axis = None
            if (ndim or wild) and draw(st.booleans()):
                axis = draw(st.integers(-ndim - 1, ndim) if wild else st.integers(-ndim, ndim - 1))
            text = f"{fn}({a[0]})" if axis is None else f"{fn}({a[0]}, axis={axis})"
            return text, fn, [a[1]], axis
        if kind == "cumsum":
            ndim = len(a[1])
            if not ndim and not wild:
                return None
            axis = None
            if draw(st.booleans()):
                axis = draw(st.integers(-ndim - 1, ndim) if wild else st.integers(-ndim, ndim - 1))
            text = f"cumsum({a[0]})" if axis is None else f"cumsum({a[0]}, axis={axis})"
            return text, kind, [a[1]], axis
        if kind == "trapz":
            if wild:
                x = draw(st.sampled_from(pool))
            elif not a[1] or a[1][-1] < 2:
                return None
            else:
                x = coordinate(a[1][-1])
            return f"trapz({a[0]}, {x[0]})", kind, [a[1], x[1]], None
        if kind == "index":
            shape = a[1]
            if not shape and not wild:
                return None
            items = []
            for axis, n in enumerate(shape[:draw(st.integers(1, max(1, len(shape))))]):
                if draw(st.booleans()):
                    items.append(draw(st.integers(-n, n - 1)))
                else:  # bounds near int64's limit too (JAX's slicing overflowed on them)
                    start = draw(st.none() | st.integers(-n, n - 1) | st.sampled_from([-BIG, BIG]))
                    stop = draw(st.none() | st.integers(-n, n) | st.sampled_from([-BIG, BIG]))
                    step = draw(st.sampled_from([None, None, 1, 2, -1, BIG, -BIG]))
                    items.append(slice(start, stop, step))
            if wild or not items:
                items = [draw(st.integers(-6, 6)) for _ in range(draw(st.integers(1, 3)))]
            param = tuple(items)
            if not wild and model_shape("index", [shape], param) is None:
                param = tuple(0 if isinstance(i, slice) else i for i in items)  # never empty
            return f"{a[0]}[{_subscript_text(param)}]", kind, [shape], param
        raise AssertionError(kind)

    for k in range(draw(st.integers(2, 7))):
        wild = draw(st.integers(0, 11)) == 0
        if draw(st.integers(0, 2)) == 0:
            text, shapes = elementwise(draw(st.sampled_from(pool)))
            shape = model_shape("elementwise", shapes)
        else:
            tensors = [p for p in pool if p[1]]
            a = draw(st.sampled_from(tensors if tensors and draw(st.integers(0, 4)) else pool))
            built = structural(draw(st.sampled_from(STRUCTURAL)), a, wild)
            if built is None:
                text, shapes = elementwise(a)
                shape = model_shape("elementwise", shapes)
            else:
                text, op, shapes, param = built
                shape = model_shape(op, shapes, param)
        if shape is None:  # invalid: named, so that the job holds it, and used by nothing else
            invalid = True
            graph[f"n{k}"] = text
            continue
        if draw(st.integers(0, 3)) == 0 and k:  # an unnamed expression: used inside a later formula
            pool.append((f"({text})", shape))
            continue
        graph[f"n{k}"] = text
        pool.append((f"n{k}", shape))
    if not graph:  # every expression was left unnamed: name the last one
        text, shape = pool.pop()
        graph["n0"] = text
        pool.append(("n0", shape))
    shapes = dict(pool)
    named = list(graph)
    outputs = draw(st.lists(st.sampled_from(named), min_size=1, max_size=2, unique=True))
    candidates = list(inputs) + named
    job = {"inputs": inputs, "graph": graph, "outputs": outputs}
    if draw(st.booleans()):
        job["wrt"] = draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=3, unique=True))
    if any(not shapes.get(o, ()) for o in outputs) and draw(st.integers(0, 2)) == 0:
        job["order"] = 2
    mode = draw(st.sampled_from(["auto", "auto", "forward", "reverse", "both"]))
    if mode != "auto":
        job["mode"] = mode
    return job, invalid


def _modes(job: dict) -> list[dict]:
    """The job as run: `mode: both` runs it in forward and in reverse mode, to compare them."""
    if job.get("mode") != "both":
        return [job]
    return [{**job, "mode": "forward"}, {**job, "mode": "reverse"}]


@settings(max_examples=TENSOR_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(tensor_jobs(), st.sampled_from(["float64", "float32"]))
def test_random_tensor_graphs_agree(case, dtype):
    job, invalid = case
    results = []
    for one in _modes(job):
        try:
            r = gradsvc.run(one, dtype=dtype)
        except GradsvcError as error:
            if LOG:
                _log_tensor(job, dtype, [], error, invalid=invalid)
            assert invalid, f"a valid job was refused: {error}\n{job}"
            for problem in getattr(error, "problems", [error]):  # each shape problem at its formula
                assert isinstance(problem, GraphError), problem
                assert problem.where is not None and problem.where.line, problem
                assert SHAPE_TEXT.search(problem.message), problem  # naming the shapes
            return
        assert not invalid, f"a job with invalid shapes ran: {job}"
        results.append(r)
    compared = _compare_modes(*results) if len(results) == 2 else 0
    if LOG:
        _log_tensor(job, dtype, results, None, compared)
    for r in results:
        v = r.verify
        assert r.ok, (job, r.job.graph.mode, v.mismatch_points[:3], v.fd["mismatch_points"][:3],
                      v.hessians.get("mismatch_points", [])[:3])


def _compare_modes(forward, reverse) -> int:
    """Forward and reverse mode give the same Jacobians and Hessians, where both are finite (at a
    point where a partial is infinite JAX's forward mode gives nan where reverse mode gives a
    number: 0 * inf in a tangent; verification checks each against the reference). Returns how
    many entries were compared."""
    rtol = 1e-12 if forward.dtype == "float64" else 1e-4
    pairs = [(forward.grads[o][w], reverse.grads[o][w]) for o in forward.grads
             for w in forward.grads[o]]
    pairs += [(forward.hessians[o][a][b], reverse.hessians[o][a][b]) for o in forward.hessians
              for a in forward.hessians[o] for b in forward.hessians[o][a]]
    compared = 0
    for f, r in pairs:
        f, r = np.asarray(f, np.float64), np.asarray(r, np.float64)
        both = np.isfinite(f) & np.isfinite(r)
        scale = max(1.0, float(np.max(np.abs(r[both]), initial=0.0)))
        np.testing.assert_allclose(f[both], r[both], rtol=rtol, atol=rtol * scale)
        compared += int(both.sum())
    return compared


_TENSOR_OPS = re.compile(r"[a-z]+(?=\()|\*\*|@|\[|[-+*/]")


def _log_tensor(job: dict, dtype: str, results: list, error, compared: int = 0,
                invalid: bool = False) -> None:
    """One line per example: what it used, and (summed over its runs: two for `mode: both`) what
    was compared."""
    ops = sorted({"index" if m == "[" else m for f in job["graph"].values()
                  for m in _TENSOR_OPS.findall(f)})
    entry = {"kind": "tensor", "dtype": dtype, "ops": ops, "nodes": len(job["graph"]),
             "order": job.get("order", 1), "mode": job.get("mode", "auto"), "refused": None,
             "ok": all(r.ok for r in results), "runs": len(results), "modes_compared": compared}
    if error is not None:  # counted as agreeing only where the shape model found them invalid
        entry.update(refused=type(error).__name__, ok=invalid)
    for r in results:
        v = r.verify
        counts = {
            "points": r.points, "compared": v.compared, "checked_points": v.checked_points,
            "values_checked": v.elements.get("values_checked", 0),
            "derivatives_checked": v.elements.get("derivatives_checked", 0),
            "derivatives_total": v.elements.get("derivatives_total", 0),
            "hessian_compared": v.hessians.get("compared", 0),
            "hessian_fd_checked": v.hessians.get("fd_checked", 0),
            "nonfinite_points": v.nonfinite_count, "kink_points": v.kink_count,
            "ill_conditioned": v.ill_conditioned, "fd_checked": v.fd["checked"],
            "fd_skipped": v.fd["skipped_kink"] + v.fd["skipped_nonfinite"],
            "fd_inconclusive": v.fd["inconclusive"],
            "whole_array": v.elements.get("whole_array", 0)}
        for key, value in counts.items():
            entry[key] = entry.get(key, 0) + value
        entry["max_ndim"] = max(np.ndim(a) - 1 for a in r.values.values())
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


# --- what the tensor fuzzer found: one regression test each ---

def _jax_f64(fn, *args):
    import jax
    with jax.enable_x64(True):
        return np.asarray(fn(*(np.asarray(a, np.float64) for a in args)))


def _same(got, want) -> bool:
    """Equal, nan where nan, to a few ulps."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return got.shape == want.shape and bool(np.all(
        np.isnan(got) == np.isnan(want)) and np.allclose(got[~np.isnan(got)], want[~np.isnan(want)],
                                                           rtol=1e-14, atol=0))


@pytest.mark.parametrize("point", [(0.0, 1.0), (0.0, 0.5), (0.0, 1.5), (0.0, 0.0), (0.0, 2.0),
                                   (0.0, 3.0), (0.0, -1.0), (0.0, 2.5), (-1.0, 2.0), (2.0, 1.0),
                                   (-2.0, 3.0)])
def test_pow_hessian_at_a_zero_base_is_jaxs(point):
    """x ** y where x is 0: the reference's Hessian is jax.hessian of lax.pow (float64), nans and
    all: at (0, 1) d2/dxdy is nan (and d2/dydx 0), at (0, 0.5) every entry is nan."""
    import jax
    x, y = point
    r = gradsvc.run({"inputs": {"x": x, "y": y}, "graph": {"z": "x ** y"}, "outputs": ["z"],
                     "wrt": ["x", "y"], "order": 2})
    want = _jax_f64(jax.hessian(lambda v: jax.lax.pow(v[0], v[1])), [x, y])
    got = [[r.hessians["z"][a][b][0] for b in "xy"] for a in "xy"]
    assert r.ok and r.verify.hessians["compared"] == 4, r.verify.hessians
    assert _same(got, want), (got, want.tolist())


def test_pow_second_derivatives_at_a_zero_base():
    """The op table's entries themselves: rows are the partials' derivatives, as JAX forms them."""
    from gradsvc.core.ops import OPS
    second = OPS["pow"].second
    (xx, xy), (yx, yy) = second((0.0, 1.0), 0.0)
    assert math.isnan(xx) and (xy, yx, yy) == (1.0, 0.0, 0.0)  # x's 0 tangent makes xy nan
    assert all(math.isnan(s) for s in (second((0.0, 0.5), 0.0)[0][1], second((0.0, 0.5), 0.0)[1][0]))
    assert second((2.0, 1.0), 2.0)[0][1] == second((2.0, 1.0), 2.0)[1][0]  # symmetric elsewhere


def test_reverse_mode_cotangents_are_whole_arrays():
    """sqrt(u)[0] with u = [1, 0]: JAX passes a 0 back to u[1] through sqrt'(0) = inf, so
    d/du[1] is nan; the reference follows, and says how many entries this explains."""
    import jax
    job = {"inputs": {"u": {"tensor": [1.0, 0.0]}}, "graph": {"z": "sqrt(u)[0]", "h": "sqrt(u)"},
           "outputs": ["z", "h"], "wrt": ["u"]}
    r = gradsvc.run(job)
    assert r.ok, r.verify.mismatch_points
    assert _same(r.grads["z"]["u"][0], _jax_f64(jax.grad(lambda u: jax.numpy.sqrt(u)[0]), [1.0, 0.0]))
    assert r.verify.elements["whole_array"] >= 1 and r.verify.nonfinite_count == 1
    # the Jacobian of sqrt(u): jax.jacrev alone gives [[.5, nan], [0, inf]]; compiled into the
    # kernel XLA may give 0 for 0 * inf there: either is checked, each against its own reference
    h = r.grads["h"]["u"][0]
    assert (h[0, 0], h[1, 0], h[1, 1]) == (0.5, 0.0, math.inf)
    assert h[0, 1] == 0.0 or math.isnan(h[0, 1])


def test_forward_mode_perturbs_every_wrt_name_at_once():
    """sqrt(x) + y at x = 0 by forward mode: x's tangent is 0 in y's direction, times inf: nan."""
    r = gradsvc.run({"inputs": {"x": 0.0, "y": 2.0}, "graph": {"z": "sqrt(x) + y"},
                     "outputs": ["z"], "wrt": ["x", "y"], "mode": "forward"})
    assert r.ok and r.grads["z"]["x"][0] == math.inf and math.isnan(r.grads["z"]["y"][0])
    reverse = gradsvc.run({"inputs": {"x": 0.0, "y": 2.0}, "graph": {"z": "sqrt(x) + y"},
                           "outputs": ["z"], "wrt": ["x", "y"], "mode": "reverse"})
    assert reverse.ok and reverse.grads["z"]["y"][0] == 1.0


def test_forward_mode_select_drops_the_tangent_it_does_not_pick():
    """where(u > 0.5, sqrt(u), 0) at u = 0: forward mode's select drops sqrt's inf tangent (0),
    where reverse mode passes 0 * inf = nan back."""
    import jax
    job = {"inputs": {"u": {"tensor": [1.0, 0.0]}}, "graph": {"z": "where(u > 0.5, sqrt(u), 0)"},
           "outputs": ["z"], "wrt": ["u"]}
    f = lambda u: jax.numpy.where(u > 0.5, jax.numpy.sqrt(u), 0.0)  # noqa: E731
    for mode, jac in (("forward", jax.jacfwd), ("reverse", jax.jacrev)):
        r = gradsvc.run({**job, "mode": mode})
        assert r.ok and _same(r.grads["z"]["u"][0], _jax_f64(jac(f), [1.0, 0.0])), mode


def test_hessian_tangents_are_whole_through_a_select():
    """sqrt(relu(x)) * y at x = -1: relu's tangent is a 0, not none, and sqrt'(0) = inf makes the
    row of y nan in JAX's Hessian; the reference's too."""
    import jax
    r = gradsvc.run({"inputs": {"x": -1.0, "y": 2.0}, "graph": {"z": "sqrt(relu(x)) * y"},
                     "outputs": ["z"], "wrt": ["x", "y"], "order": 2})
    want = _jax_f64(jax.hessian(lambda v: jax.numpy.sqrt(jax.nn.relu(v[0])) * v[1]), [-1.0, 2.0])
    assert r.ok and _same([[r.hessians["z"][a][b][0] for b in "xy"] for a in "xy"], want)


def test_hessian_second_derivative_zero_only_here_meets_a_nan_tangent():
    """sqrt(u) with u = x ** -2 = inf: sqrt'' at inf is -0.0, a number, not a structural zero: times
    u's nan tangent (0 * inf from x) it is nan, as in JAX."""
    r = gradsvc.run({"inputs": {"x": 0.0, "y": 1.0}, "graph": {"u": "x ** -2", "z": "sqrt(u)"},
                     "outputs": ["z"], "wrt": ["x", "u", "y"], "order": 2})
    assert r.ok, r.verify.hessians["mismatch_points"]
    assert math.isnan(r.hessians["z"]["u"]["x"][0])


def test_sums_start_from_zero_like_xla():
    """cumsum, sum, @ and trapz of -0.0s are +0.0 in JAX (its reductions start from 0), so
    1 / cumsum([-0.0, 1])[0] is +inf; the reference's expansions agree."""
    r = gradsvc.run({"inputs": {"v": {"tensor": [-0.0, 1.0]}, "w": {"tensor": [-0.0, -0.0]},
                                "o": {"tensor": [1.0, 1.0]}},
                     "graph": {"c": "1 / cumsum(v)", "s": "1 / sum(w)", "d": "1 / (w @ o)",
                               "t": "1 / trapz(w, o + v)", "m": "1 / mean(w)",
                               "one": "1 / sum(w[0:1])"},
                     "outputs": ["c", "s", "d", "t", "m", "one"], "wrt": ["v", "w"]})
    assert r.ok, r.verify.mismatch_points
    assert [float(r.values[n][0]) for n in "sdtm"] == [math.inf] * 4
    assert r.values["c"][0].tolist() == [math.inf, 1.0] and r.values["one"][0] == -math.inf


def test_pow_broadcasts_like_the_other_elementwise_ops():
    """v ** M with v (4,) and M (2, 4): jax.lax.pow does not broadcast as numpy does (it raised
    a TypeError, an internal error); its arguments are broadcast first."""
    r = gradsvc.run({"inputs": {"v": {"tensor": [1.5, 2.0, 0.5, 3.0]},
                                "M": {"tensor": [[1.0, 2.0, 0.5, -1.0], [0.0, 1.5, 2.0, 3.0]]}},
                     "graph": {"z": "v ** M", "w": "M ** v"}, "outputs": ["z", "w"]})
    v, M = np.array([1.5, 2.0, 0.5, 3.0]), np.array([[1.0, 2.0, 0.5, -1.0], [0.0, 1.5, 2.0, 3.0]])
    assert r.ok and np.allclose(r.values["z"][0], v ** M) and np.allclose(r.values["w"][0], M ** v)


def test_sqrt_second_derivative_at_negative_zero_is_jaxs():
    """sqrt'' at -0.0 is +inf in JAX (its rule divides by sqrt(-0.0) = -0.0): so is the reference's."""
    import jax
    r = gradsvc.run({"inputs": {"x": [-0.0, 0.0, 2.0]}, "graph": {"z": "sqrt(x)"}, "outputs": ["z"],
                     "order": 2})
    assert r.ok and r.hessians["z"]["x"]["x"].tolist() == [
        float(_jax_f64(jax.hessian(jax.numpy.sqrt), x)) for x in (-0.0, 0.0, 2.0)]


def test_hessian_differences_skip_a_kink_within_the_step():
    """abs(x) at x = -0.0: its gradient jumps from -1 to 1 within any step, so the central difference
    of the gradient (1 / h) is no second derivative: skipped and counted, not a mismatch."""
    r = gradsvc.run({"inputs": {"x": -0.0, "y": 1.5}, "graph": {"z": "abs(x) * y + relu(x)"},
                     "outputs": ["z"], "wrt": ["x", "y"], "order": 2})
    h = r.verify.hessians
    assert r.ok and h["fd_skipped_kink"] > 0 and h["fd_mismatches"] == 0


def test_max_and_min_of_a_tie_split_the_gradient_evenly():
    """max(v) of a three-way tie: JAX gives each 1/3 (a fold of two-argument max gave 1/4, 1/4,
    1/2); min of 0.0 and -0.0 is -0.0, as XLA's; at a nan, reverse mode 0 and forward mode nan."""
    job = {"inputs": {"v": {"tensor": [1.0, 2.0, 2.0, 2.0]}, "z": {"tensor": [0.0, -0.0]},
                      "n": {"tensor": [1.0, 1.0, 1.0]}},
           "graph": {"hi": "max(v)", "lo": "min(v[1:])", "zero": "1 / min(z)",
                     "w": "log(n - 2)", "nan": "max(w)"},
           "outputs": ["hi", "lo", "zero", "nan"], "wrt": ["v", "w"]}
    r = gradsvc.run(job)
    assert r.ok, r.verify.mismatch_points
    assert r.grads["hi"]["v"][0].tolist() == [0.0, 1 / 3, 1 / 3, 1 / 3]
    assert r.grads["lo"]["v"][0].tolist() == [0.0, 1 / 3, 1 / 3, 1 / 3]
    assert r.values["zero"][0] == -math.inf
    assert r.grads["nan"]["w"][0].tolist() == [0.0, 0.0, 0.0]
    forward = gradsvc.run({**job, "mode": "forward"})
    assert forward.ok and np.isnan(forward.grads["nan"]["w"][0]).all()
