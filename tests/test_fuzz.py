"""Differential fuzzing: random well-formed graphs, JAX vs the reference vs finite differences.

CI runs a bounded number of examples (GRADSVC_FUZZ_EXAMPLES, default 30); `make fuzz` runs a
campaign of 10,000 and, through GRADSVC_FUZZ_LOG, logs each example for tests/fuzz_report.py to
count. Every disagreement found becomes a named regression test in test_ops.py or test_verify.py.
"""
import json
import os
import re

from hypothesis import HealthCheck, given, settings, strategies as st

import gradsvc

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
