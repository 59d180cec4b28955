"""Differential fuzzing: random well-formed graphs, JAX vs the reference vs finite differences.

Scalar graphs (`graphs`) and tensor graphs (`tensor_jobs`: shapes, broadcasting, reductions,
indexing, Jacobians, Hessians, forward and reverse mode). CI runs a bounded number of examples
(GRADSVC_FUZZ_EXAMPLES, default 30 scalar graphs; GRADSVC_FUZZ_TENSOR_EXAMPLES, default a third of
that: each compiles its own kernel); `make fuzz` runs a campaign and, through GRADSVC_FUZZ_LOG,
logs each example for tests/fuzz_report.py to count. Every disagreement found becomes a named
regression test (test_ops.py, test_verify.py, test_hessian.py, test_tensor_jobs.py).
"""
import json
import os
import re

import numpy as np
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

TENSOR_EXAMPLES = int(os.environ.get("GRADSVC_FUZZ_TENSOR_EXAMPLES", EXAMPLES // 3 or 1))
T_UNARY = ["exp", "log", "sin", "cos", "tanh", "sigmoid", "relu", "sqrt", "abs", "-"]
T_BINARY = ["+", "-", "*", "/", "**", "max", "min", "where"]
REDUCTIONS = {"sum": np.sum, "mean": np.mean, "prod": np.prod, "max": np.max, "min": np.min}
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
            return tuple(np.shape(REDUCTIONS[op](arrays[0], axis=param)))
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
            inputs[name] = {"tensor": {"linspace": [start, start + draw(st.sampled_from([1.0, 2.0])), n]}}
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
                else:
                    start = draw(st.none() | st.integers(-n, n - 1))
                    stop = draw(st.none() | st.integers(-n, n))
                    step = draw(st.sampled_from([None, None, 1, 2, -1]))
                    items.append(slice(start, stop, step))
            if wild or not items:
                items = [draw(st.integers(-6, 6)) for _ in range(draw(st.integers(1, 3)))]
            param = tuple(items)
            if not wild and model_shape("index", [shape], param) is None:
                param = tuple(0 if isinstance(i, slice) else i for i in items)  # never empty
            return f"{a[0]}[{_subscript_text(param)}]", kind, [shape], param
        raise AssertionError(kind)

    for k in range(draw(st.integers(1, 6))):
        a = draw(st.sampled_from(pool))
        wild = draw(st.integers(0, 11)) == 0
        if draw(st.integers(0, 2)) == 0:
            text, shapes = elementwise(a)
            shape = model_shape("elementwise", shapes)
        else:
            built = structural(draw(st.sampled_from(STRUCTURAL)), a, wild)
            if built is None:
                text, shapes = elementwise(a)
                shape = model_shape("elementwise", shapes)
            else:
                text, op, shapes, param = built
                shape = model_shape(op, shapes, param)
        if shape is None:
            invalid = True
            shape = ()
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
                _log_tensor(job, dtype, None, error)
            assert invalid, f"a valid job was refused: {error}\n{job}"
            assert isinstance(error, GraphError), error  # a shape problem, at its formula
            assert error.where is not None and error.where.line, error
            assert "shape" in str(error), error
            return
        assert not invalid, f"a job with invalid shapes ran: {job}"
        results.append(r)
    compared = _compare_modes(*results) if len(results) == 2 else 0
    if LOG:
        for r in results:
            _log_tensor(job, dtype, r, None, compared)
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
    pairs = [(forward.grads[o][w], reverse.grads[o][w]) for o in forward.grads for w in forward.grads[o]]
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


def _log_tensor(job: dict, dtype: str, r, error, compared: int = 0) -> None:
    ops = sorted({"index" if m == "[" else m for f in job["graph"].values()
                  for m in _TENSOR_OPS.findall(f)})
    entry = {"kind": "tensor", "dtype": dtype, "ops": ops, "nodes": len(job["graph"]),
             "order": job.get("order", 1), "mode": job.get("mode", "auto")}
    if error is not None:
        entry.update(ok=True, refused=type(error).__name__)
    else:
        v = r.verify
        entry.update(
            ok=bool(r.ok), refused=None, mode=r.job.graph.mode, points=r.points,
            max_ndim=max(np.ndim(a) - 1 for a in r.values.values()),
            compared=v.compared, checked_points=v.checked_points,
            values_checked=v.elements.get("values_checked", 0),
            derivatives_checked=v.elements.get("derivatives_checked", 0),
            derivatives_total=v.elements.get("derivatives_total", 0),
            hessian_compared=v.hessians.get("compared", 0),
            hessian_fd_checked=v.hessians.get("fd_checked", 0),
            nonfinite_points=v.nonfinite_count, kink_points=v.kink_count,
            ill_conditioned=v.ill_conditioned, fd_checked=v.fd["checked"],
            fd_skipped=v.fd["skipped_kink"] + v.fd["skipped_nonfinite"],
            fd_inconclusive=v.fd["inconclusive"], modes_compared=compared)
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
