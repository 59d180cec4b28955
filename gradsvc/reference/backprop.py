"""The reference: reverse-mode backprop over the IR in pure Python (standard library only).

It shares nothing with the JAX backend but the IR and the op table's pure-Python column, so agreement
between the two is evidence, not tautology. Its shape is micrograd's: a forward pass fills in values,
then one reversed loop over the tape accumulates adjoints with each op's local partials.

Alongside each value and gradient it propagates a first-order bound on the rounding error a backend
working in a given precision could make (`unit` = unit roundoff, 2**-24 for float32, 2**-53 for
float64): values  err(v) ≈ unit·|v| + Σ |∂v/∂a|·err(a);  gradients  err(ḡ_a) ≈ unit·|ḡ_a| + Σ
(|∂v/∂a|·err(ḡ_v) + |ḡ_v|·err(∂v/∂a)), where err(∂v/∂a) is measured by re-evaluating the partial with
the arguments (and the op's own result) moved by their error bounds. `verify` scales these bounds
into tolerances, so cancellation and ill-conditioning widen the tolerance exactly where they should
and nowhere else.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from ..core.ir import Graph
from ..core.ops import op_for

LIBM_ULPS = 4.0  # transcendental functions are accurate to a few units in the last place
INSTABILITY_WINDOW = 8.0  # error bounds widened this much when looking for nearby domain edges


@dataclass
class PointResult:
    values: dict[str, float]  # every IR node
    grads: dict[str, dict[str, float]]  # grads[output][name], for every visible name
    value_err: dict[str, float] | None = None
    grad_err: dict[str, dict[str, float]] | None = None
    kinks: tuple[str, ...] = ()  # nodes whose arguments sit exactly on a kink
    # nodes whose value could turn non-finite (or finite) within rounding error, and every node
    # downstream of one: e.g. (-1) ** tanh(8) is nan in float64 but -1 where tanh(8) rounds to 1
    unstable: frozenset[str] = frozenset()


def forward(graph: Graph, inputs: dict[str, float], overrides: dict[str, float] | None = None
            ) -> dict[str, float]:
    """Every node's value; `overrides` replaces a node's computed value (for finite differences).
    Tensor graphs are written out in scalars first (`scalarize`)."""
    if getattr(graph, "has_tensors", False):
        raise ValueError("the reference runs scalar graphs: write a tensor graph out with scalarize()")
    values: dict[str, float] = {}
    for node in graph.nodes:
        if node.op == "input":
            value = float(inputs[node.name])
        elif node.op == "const":
            value = float(node.const)
        else:
            value = op_for(node.op, node.param).value(*(values[a] for a in node.args))
        if overrides and node.name in overrides:
            value = overrides[node.name]
        values[node.name] = value
    return values


def backward(graph: Graph, values: dict[str, float], output: str, within: str | None = None,
             zeros: frozenset[str] = frozenset()) -> dict[str, float]:
    """d(output)/d(node) for every node on a path to `output` (others are absent: no dependence).

    With `within`, only the operations of that name's own formula are walked: the result holds
    d(within)/d(name) for each name the formula uses, the others held fixed (a local derivative).
    The nodes in `zeros` start from an adjoint of 0 rather than none, as JAX's cotangents do
    (whole arrays: `ScalarView.reverse_dense`), so that a 0 passed back through an infinite
    partial is nan, as in JAX.
    """
    adjoint: dict[str, float] = {output: 1.0}
    for node in reversed(graph.nodes):
        bar = adjoint.get(node.name)
        if bar is None and node.name in zeros:
            bar = adjoint[node.name] = 0.0
        if bar is None or not node.args or node.primitive.no_gradient:
            continue
        if within is not None and node.owner != within:
            continue
        op = node.primitive
        arg_values = tuple(values[a] for a in node.args)
        for arg, contribution in zip(node.args, _contributions(op, bar, arg_values, values[node.name])):
            adjoint[arg] = adjoint[arg] + contribution if arg in adjoint else contribution
    return adjoint


def _contributions(op, bar: float, args: tuple, out: float) -> tuple:
    """What one node passes back to its arguments, the way JAX's transposed rule computes it."""
    if op.vjp is not None:
        return op.vjp(bar, args, out)
    return tuple(0.0 if (op.zero_blocks and partial == 0.0) else bar * partial
                 for partial in op.partials(args, out))


def run_point(graph: Graph, inputs: dict[str, float], unit: float | None = None) -> PointResult:
    """Values and gradients at one point; with `unit`, also their rounding-error bounds.

    >>> from gradsvc.job.spec import job_from_text
    >>> job = job_from_text("inputs: {a: 2, b: 3}\\ngraph: {z: a * b}\\noutputs: [z]")
    >>> run_point(job.graph, {"a": 2.0, "b": 3.0}).grads["z"]["a"]
    3.0
    """
    values = forward(graph, inputs)
    visible = graph.visible
    grads = {}
    adjoints = {}
    for out in graph.outputs:
        adjoints[out] = backward(graph, values, out)
        grads[out] = {name: adjoints[out].get(name, 0.0) for name in visible}
    kinks = tuple(n.name for n in graph.nodes
                  if n.primitive is not None and n.primitive.at_kink(*(values[a] for a in n.args)))
    result = PointResult(values, grads, kinks=kinks)
    if unit is not None:
        result.value_err, result.unstable, partials = _value_errors(graph, values, unit)
        partial_errs: dict[str, list] = {}  # the same for every output: computed once
        result.grad_err = {out: _grad_errors(graph, values, adjoints[out], result.value_err, out, unit,
                                             partials, partial_errs)
                           for out in graph.outputs}
    return result


def _times(a: float, b: float) -> float:
    """a·b for error bounds, where a zero bound times an infinite factor adds nothing."""
    return 0.0 if a == 0.0 or b == 0.0 else a * b


def _ulps(op) -> float:
    return 1.0 if op.name in ("add", "sub", "mul", "div", "neg", "id") else LIBM_ULPS


def _value_errors(graph: Graph, values: dict[str, float], unit: float
                  ) -> tuple[dict[str, float], frozenset[str], dict[str, tuple]]:
    """Each value's error bound, the nodes that could turn non-finite within it, and each
    operation's local partials (computed on the way; the gradient bounds reuse them)."""
    err: dict[str, float] = {}
    unstable: set[str] = set()
    partials: dict[str, tuple] = {}
    for node in graph.nodes:
        value = values[node.name]
        if node.op == "input":
            err[node.name] = 0.0  # both backends read the same rounded input
            continue
        if node.op == "const":
            err[node.name] = unit * abs(value)  # the backend rounds the literal to its dtype
            continue
        op = node.primitive
        args = tuple(values[a] for a in node.args)
        args_err = tuple(err[a] for a in node.args)
        total = _ulps(op) * unit * abs(value)
        local = partials[node.name] = op.partials(args, value)
        for arg, partial in zip(node.args, local):
            total += _times(abs(partial), err[arg])
        err[node.name] = total
        if any(a in unstable for a in node.args) or _crosses_domain(op, args, args_err, value):
            unstable.add(node.name)
    return err, frozenset(unstable), partials


def _crosses_domain(op, args: tuple, args_err: tuple, value: float) -> bool:
    """Could arguments within (a widened) rounding error make this op's value non-finite, finite,
    or an infinity of the other sign ((-0.0) ** -1 is -inf, (-0.0) ** -0.9999 is +inf)?

    Besides the interval ends it tries the integers inside each interval: domain edges of the
    table's ops sit at integers (0 for log, sqrt and division; every integer for a negative base's
    real exponent).
    """
    if not any(args_err):
        return False
    choices = []
    for a, e in zip(args, args_err):
        if not (math.isfinite(a) and math.isfinite(e)):
            choices.append({a})  # an overflowed or nan argument is not a rounding question
            continue
        width = INSTABILITY_WINDOW * e
        options = {a - width, a + width}
        if width < 1.0:
            options.update(k for k in (math.floor(a + width), math.ceil(a - width))
                           if abs(k - a) <= width)
        choices.append(options)
    for moved in itertools.product(*choices):
        if _kind(op.value(*moved)) != _kind(value):
            return True
    return False


def _kind(x: float) -> str:
    """What rounding must not change: finite, nan, +inf or -inf."""
    if math.isfinite(x):
        return "finite"
    return "nan" if math.isnan(x) else ("+inf" if x > 0 else "-inf")


def _partial_errors(op, args: tuple, out: float, args_err: tuple, unit: float, base: tuple
                    ) -> list[float]:
    """How much each local partial (`base`) can move when its arguments move within their error
    bounds and the op's own result (which many partials are computed from, e.g. tanh' = 1 - tanh**2)
    moves by its rounding error."""
    worst = [_ulps(op) * unit * abs(p) for p in base]
    if op.affine == "sum":  # constant partials (±1): moving the arguments cannot move them
        return worst
    out_err = _ulps(op) * unit * abs(out)
    for arg_sign, out_sign in ((1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)):
        moved = tuple(a + arg_sign * e for a, e in zip(args, args_err))
        moved_out = op.value(*moved) + out_sign * out_err
        for i, (p, q) in enumerate(zip(base, op.partials(moved, moved_out))):
            if math.isnan(q) and math.isnan(p) or q == p:
                continue
            shift = abs(q - p)
            worst[i] = max(worst[i], _ulps(op) * unit * abs(p) + (shift if shift == shift else math.inf))
    return worst


def _grad_errors(graph: Graph, values, adjoint, value_err, output: str, unit: float,
                 partials: dict, partial_errs: dict) -> dict:
    err = _adjoint_errors(graph, values, adjoint, value_err, output, unit, partials, partial_errs)
    return {name: err.get(name, 0.0) for name in graph.visible}


def _adjoint_errors(graph: Graph, values, adjoint, value_err, output: str, unit: float,
                    partials: dict, partial_errs: dict) -> dict[str, float]:
    """The gradient error bound of every node with an adjoint (`partial_errs` is filled in as a
    cache shared between outputs)."""
    err: dict[str, float] = {output: 0.0}
    for node in reversed(graph.nodes):
        if node.name not in adjoint or not node.args or node.primitive.no_gradient:
            continue
        op = node.primitive
        bar, bar_err = adjoint[node.name], err.get(node.name, 0.0)
        local = partials[node.name]
        if node.name not in partial_errs:
            args = tuple(values[a] for a in node.args)
            args_err = tuple(value_err[a] for a in node.args)
            partial_errs[node.name] = _partial_errors(op, args, values[node.name], args_err, unit,
                                                      local)
        for arg, p, p_err in zip(node.args, local, partial_errs[node.name]):
            if op.zero_blocks and p == 0.0:
                continue
            term = _times(abs(p), bar_err) + _times(abs(bar), p_err) + unit * abs(bar * p)
            err[arg] = err.get(arg, 0.0) + term
    return err
