"""Hessians by forward over reverse: dual numbers through the reference's own tape (standard library
only, like the rest of the reference).

`hessian(graph, values, output, wrt)[a][b]` is d²(output)/da db for every pair of names in `wrt`
(inputs or intermediate nodes; d/dv is taken w.r.t. a perturbation added to v's value, the convention
of core/ir.py). For each direction b:
  1. a forward tangent pass in tape order: dot(v) = Σ_i p_i·dot(arg_i), where p_i = ∂v/∂arg_i are the
     op's `partials`; the perturbation at b is added after b's own value, so dot(b) = 1 and nodes
     upstream of b have no tangent;
  2. the reverse pass of `backward()`, on duals: a node with adjoint v̄ and adjoint tangent dv̄ passes
     back v̄·p_i (exactly what `backward()` passes) and its tangent  dv̄·p_i + v̄·Σ_j s_ij·dot(arg_j),
     where s_ij = ∂²v/∂arg_i∂arg_j are the op's `second` derivatives;
and H[a][b] is the adjoint tangent reaching a. It shares nothing with JAX's Hessians (jacfwd of
jacrev, by JAX's own rules) but the op table's pure-Python column, so agreement is evidence. Tensor
graphs are written out in scalars first (`scalarize`).

Conventions, chosen to follow JAX's rules where IEEE arithmetic lets the two differ (inf·0):
  - a tangent or adjoint tangent that no perturbation reaches is absent (JAX's symbolic zero), not
    0.0: it contributes nothing, not 0·inf = nan; except that JAX's are whole arrays, and perturbs
    every wrt name at once (`jax.hessian` is jacfwd of jacrev over all of them): a node computed from
    any wrt name has a tangent in every direction, 0 in the others (`dense`), an element of a tensor
    another of whose elements has an adjoint (or adjoint tangent) has one too, 0 where no path
    leads (`zeros`, `groups`); `sqrt(x) + y` at x = 0 has d²/dx dy = 0·(-inf) = nan in JAX. Without
    them (the default) each direction is its own, as mathematics has it;
  - tangents flow along the edges adjoints flow along: an op with `no_gradient` passes neither, and
    an op with `zero_blocks` (a select in JAX: relu, where) passes neither where its partial is 0;
  - a second derivative that is 0 as a function is structural (add, mul's diagonal, relu, max,
    where ...: JAX's rules there have no such term), so it never multiplies an infinite tangent;
    one that is 0 at this point only (sin'' at 0) does, as in JAX.

Error bounds (with `unit`, the unit roundoff of the precision a backend works in): a first-order
running-error bound per entry, propagated alongside the duals the way `backprop` bounds gradients.
Every quantity q = Σ_k (factor·factor) carries a bound e(q) that accumulates, per term, the factors'
own bounds times the other factor's magnitude, plus unit·|term| for the rounding of the product and
the sum:
  e(dot v)  = Σ_i |p_i|·e(dot arg_i) + |dot arg_i|·e(p_i) + unit·|p_i·dot arg_i|
  e(dv̄ → arg_i) = |p_i|·e(dv̄) + |dv̄|·e(p_i) + unit·|dv̄·p_i|
                  + |S_i|·e(v̄) + |v̄|·e(S_i) + unit·|v̄·S_i|,     S_i = Σ_j s_ij·dot(arg_j)
  e(S_i)    = Σ_j |s_ij|·e(dot arg_j) + |dot arg_j|·e(s_ij) + unit·|s_ij·dot arg_j|
where e(v̄) is backprop's gradient bound, e(p_i) backprop's partial bound, and e(s_ij) the same for
second derivatives: the op's ulps (1 for + - * / neg id, LIBM_ULPS for the rest) times unit·|s_ij|,
widened to the largest change of s_ij when its arguments move within their value bounds and the op's
own result (which many rules are written in, e.g. tanh'' = -2t(1 - t²)) moves by its rounding error.
`verify` compares a backend's Hessian with the reference within a factor times this bound.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterable

from ..core.ir import Graph
from .backprop import (_adjoint_errors, _partial_errors, _times, _ulps, _value_errors,
                       backward)

Table = dict[str, dict[str, float]]  # table[a][b]


def hessian(graph: Graph, values: dict[str, float], output: str, wrt: Iterable[str],
            unit: float | None = None, directions: Iterable[str] | None = None, *,
            dense: frozenset[str] = frozenset(), zeros: frozenset[str] = frozenset(),
            groups: tuple[tuple[str, ...], ...] = ()) -> Table | tuple[Table, Table]:
    """d²(output)/da db for a, b in `wrt`, at the point whose node values are `values` (`forward()`).

    Returns hess[a][b]; with `unit`, the pair (hess, err) where err[a][b] bounds the rounding error
    of hess[a][b] in a backend working at that unit roundoff. `directions` (default: `wrt`) limits
    the columns b computed, one tangent pass each (to check a sample of a large Hessian).
    To follow `jax.hessian` where an infinite partial meets a zero (see the module docstring):
    `dense`, the nodes that carry a tangent in every direction (`ScalarView.forward_dense`; a
    scalar graph is its own scalar view); `zeros`, those that carry an adjoint, 0 where no
    path leads (`ScalarView.reverse_dense(output)`); `groups`, the elements of each tensor
    (`ScalarView.groups`).

    >>> from gradsvc.job.spec import job_from_text
    >>> from gradsvc.reference.backprop import forward
    >>> g = job_from_text("inputs: {x: 2, y: 3}\\ngraph: {z: x ** 3 * y}\\noutputs: [z]").graph
    >>> h = hessian(g, forward(g, {"x": 2.0, "y": 3.0}), "z", ["x", "y"])
    >>> h["x"]["x"], h["x"]["y"], h["y"]["y"]
    (36.0, 12.0, 0.0)
    """
    if getattr(graph, "has_tensors", False):
        raise ValueError("hessian() takes a scalar graph: write a tensor graph out with scalarize()")
    wrt = tuple(wrt)
    directions = wrt if directions is None else tuple(directions)
    tape = _Tape(graph, values, output, unit, dense, zeros, groups)
    hess: Table = {a: {} for a in wrt}
    err: Table = {a: {} for a in wrt}
    for b in directions:
        column, column_err = tape.column(b)
        for a in wrt:
            hess[a][b] = column.get(a, 0.0)
            err[a][b] = column_err.get(a, 0.0)
    return hess if unit is None else (hess, err)


class _Tape:
    """One output's reverse pass at one point, and what every direction's dual passes share: the
    nodes on a path to the output, their partials and second derivatives (and their error bounds)."""

    def __init__(self, graph: Graph, values: dict[str, float], output: str, unit: float | None,
                 dense: frozenset[str] = frozenset(), zeros: frozenset[str] = frozenset(),
                 groups: tuple[tuple[str, ...], ...] = ()):
        self.graph, self.values, self.unit, self.dense = graph, values, unit, dense
        self.whole = bool(dense or zeros or groups)  # following JAX's whole arrays
        self.bar = backward(graph, values, output, zeros=zeros)
        # each group's last element in tape order: when the reverse pass gets there, every node
        # that uses one of the group's elements has passed its adjoint tangent back
        self.group_ends: dict[str, list[tuple[str, ...]]] = {}
        for group in groups:
            last = max(group, key=graph.position.__getitem__)
            self.group_ends.setdefault(last, []).append(group)
        # the nodes adjoints flow back through, in tape order (the reverse pass walks them reversed)
        self.active = [n for n in graph.nodes
                       if n.name in self.bar and n.args and not n.primitive.no_gradient]
        self.partials: dict[str, tuple] = {}
        self.seconds: dict[str, tuple] = {}
        self.flat: dict[str, tuple] = {}  # which second derivatives are 0 everywhere
        for node in self.active:
            args, out = tuple(values[a] for a in node.args), values[node.name]
            self.partials[node.name] = node.primitive.partials(args, out)
            self.seconds[node.name] = node.primitive.second(args, out)
            self.flat[node.name] = structural_zeros(node.primitive)
        self.partial_errs: dict[str, list] = {}
        self.second_errs: dict[str, list] = {}
        self.bar_err: dict[str, float] = {}
        if unit is None:
            return
        value_err, _, partials = _value_errors(graph, values, unit)
        for node in self.active:
            args = tuple(values[a] for a in node.args)
            args_err = tuple(value_err[a] for a in node.args)
            out, op = values[node.name], node.primitive
            self.partial_errs[node.name] = _partial_errors(op, args, out, args_err, unit,
                                                           self.partials[node.name])
            self.second_errs[node.name] = _second_errors(op, args, out, args_err, unit,
                                                         self.seconds[node.name])
        self.bar_err = _adjoint_errors(graph, values, self.bar, value_err, output, unit, partials,
                                       self.partial_errs)

    def _edges(self, node):
        """(i, arg, p_i) for every argument an adjoint (and a tangent) flows along."""
        op = node.primitive
        for i, (arg, p) in enumerate(zip(node.args, self.partials[node.name])):
            if not (op.zero_blocks and p == 0.0):
                yield i, arg, p

    def column(self, b: str) -> tuple[dict[str, float], dict[str, float]]:
        """d(adjoint of every node)/db, and its error bounds (all 0 without `unit`)."""
        if b not in self.bar and not self.dense:  # the output does not depend on b: the column
            return {}, {}  # is 0 (JAX's: 0 times what its other tangents meet, 0 * inf = nan)
        dot, dot_err = self._tangents(b)
        return self._adjoint_tangents(dot, dot_err)

    def _tangents(self, b: str) -> tuple[dict[str, float], dict[str, float]]:
        """Step 1: d(value)/db of every node on a path from b to the output, and of every `dense`
        one (0 where b does not reach it); others are absent. A wrt node that is computed gets
        the perturbation added to its value: its tangent is its arguments' plus 1."""
        unit = self.unit or 0.0
        dot: dict[str, float] = {}
        dot_err: dict[str, float] = {}
        active = self.partials
        for node in self.graph.nodes:
            name = node.name
            if name not in self.bar:  # no path to the output: its tangent is never used
                continue
            dense = name in self.dense or (self.whole and _select_reached(node, dot))
            total, err = (0.0, 0.0) if dense else (None, None)
            if name in active:
                for i, arg, p in self._edges(node):
                    if arg in dot:
                        term = p * dot[arg]
                        total = term if total is None else total + term
                        e = _bound(p, self._p_err(node, i), dot[arg], dot_err[arg], term, unit)
                        err = e if err is None else err + e
            if name == b:
                total, err = (1.0 if total is None else total + 1.0), (err or 0.0)
            if total is not None:
                dot[name], dot_err[name] = total, err
        return dot, dot_err

    def _adjoint_tangents(self, dot: dict, dot_err: dict) -> tuple[dict[str, float], dict[str, float]]:
        """Step 2: the reverse pass on duals, from the output's (1, absent)."""
        unit = self.unit or 0.0
        dbar: dict[str, float] = {}
        dbar_err: dict[str, float] = {}
        active = self.partials
        for node in reversed(self.graph.nodes):
            name = node.name
            for group in self.group_ends.get(name, ()):  # JAX: one array, a 0 where none arrived
                if any(e in dbar for e in group):
                    for e in group:
                        if e not in dbar:
                            dbar[e], dbar_err[e] = 0.0, 0.0
            if name not in active:
                continue
            bar, bar_err, d = self.bar[name], self.bar_err.get(name, 0.0), dbar.get(name)
            if self.whole and d is not None and node.primitive.zero_blocks:
                # a select passes back a 0 to the argument it does not pick, and so its tangent
                for arg, p in zip(node.args, self.partials[name]):
                    if p == 0.0 and arg not in dbar:
                        dbar[arg], dbar_err[arg] = 0.0, 0.0
            for i, arg, p in self._edges(node):
                terms = []  # (value, error bound) of dv̄·p_i and of v̄·S_i, where present
                if d is not None:
                    terms.append((d * p, _bound(p, self._p_err(node, i), d, dbar_err[name], d * p, unit)))
                s_total = s_err = None
                for j, arg_j in enumerate(node.args):
                    s = self.seconds[name][i][j]
                    if self.flat[name][i][j] or arg_j not in dot:  # a structural zero, no tangent
                        continue
                    term = s * dot[arg_j]
                    s_total = term if s_total is None else s_total + term
                    e = _bound(s, self._s_err(node, i, j), dot[arg_j], dot_err[arg_j], term, unit)
                    s_err = e if s_err is None else s_err + e
                if s_total is not None:
                    terms.append((bar * s_total, _bound(bar, bar_err, s_total, s_err, bar * s_total, unit)))
                for value, e in terms:
                    dbar[arg] = dbar[arg] + value if arg in dbar else value
                    dbar_err[arg] = dbar_err.get(arg, 0.0) + e
        return dbar, dbar_err

    def _p_err(self, node, i: int) -> float:
        return self.partial_errs[node.name][i] if self.partial_errs else 0.0

    def _s_err(self, node, i: int, j: int) -> float:
        return self.second_errs[node.name][i][j] if self.second_errs else 0.0


def _select_reached(node, dot: dict) -> bool:
    """A select (where, relu) one of whose branches has a tangent: JAX's has one too, 0 where the
    branch it picks has none (it selects between whole tangents, zeros filled in)."""
    op = node.primitive
    if op is None or not op.zero_blocks:
        return False
    branches = node.args[1:] if node.op == "where" else node.args
    return any(a in dot for a in branches)


GENERIC_POINT = (0.7, 1.3, 0.4)  # arguments where no second derivative of the table is 0 by chance


@lru_cache(maxsize=None)
def structural_zeros(op) -> tuple[tuple[bool, ...], ...]:
    """Which second derivatives of `op` are 0 as functions (add, mul's diagonal, relu, max, where:
    JAX's rules have no such term), not only at a point (sin'' at 0 is -0.0, and JAX multiplies it
    by a nan tangent into nan): those that are 0 at a generic point."""
    args = GENERIC_POINT[:op.arity]
    return tuple(tuple(s == 0.0 for s in row) for row in op.second(args, op.value(*args)))


def _bound(x: float, x_err: float, y: float, y_err: float, product: float, unit: float) -> float:
    """The error bound of the computed product x·y (added into a sum): each factor's bound times
    the other factor, plus the rounding of the product and of the addition."""
    return _times(abs(x), y_err) + _times(abs(y), x_err) + unit * abs(product)


def _second_errors(op, args: tuple, out: float, args_err: tuple, unit: float, base: tuple
                   ) -> list[list[float]]:
    """How much each second derivative (`base`) can move: the op's ulps of it, widened to its largest
    change when the arguments move within their error bounds and the op's own result within its
    rounding error (backprop's `_partial_errors`, one order up)."""
    ulps = _ulps(op)
    worst = [[ulps * unit * abs(s) for s in row] for row in base]
    if all(s == 0.0 for row in base for s in row):  # linear or piecewise linear: nothing moves
        return worst
    out_err = ulps * unit * abs(out)
    for arg_sign, out_sign in ((1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)):
        moved = tuple(a + arg_sign * e for a, e in zip(args, args_err))
        moved_out = op.value(*moved) + out_sign * out_err
        for i, row in enumerate(op.second(moved, moved_out)):
            for j, q in enumerate(row):
                s = base[i][j]
                if q == s or (math.isnan(q) and math.isnan(s)):
                    continue
                shift = abs(q - s)
                worst[i][j] = max(worst[i][j], ulps * unit * abs(s) + (shift if shift == shift else math.inf))
    return worst


# --- JAX's whole arrays, first order: what jacrev and jacfwd give where an infinite partial meets 0 ---

def forward_jacobian(graph: Graph, values: dict[str, float], outputs: Iterable[str],
                     directions: Iterable[str], dense: frozenset[str] = frozenset()) -> Table:
    """d(output)/db for each output and direction b by forward mode, as JAX's jacfwd computes it:
    the tangent of every node in `dense` (`ScalarView.forward_dense`) is a number in every
    direction, 0 where b does not reach it, and a select (relu, where) passes the tangent of the
    argument it picks only. Returns jac[output][b]."""
    partials = {node.name: node.primitive.partials(tuple(values[a] for a in node.args),
                                                   values[node.name])
                for node in graph.nodes if node.args and not node.primitive.no_gradient}
    outputs = tuple(outputs)
    jac: Table = {o: {} for o in outputs}
    for b in directions:
        dot: dict[str, float] = {}
        for node in graph.nodes:
            name = node.name
            total = 0.0 if name in dense or _select_reached(node, dot) else None
            if name in partials:
                op = node.primitive
                for arg, p in zip(node.args, partials[name]):
                    if arg in dot and not (op.zero_blocks and p == 0.0):
                        term = p * dot[arg]
                        total = term if total is None else total + term
            if name == b:
                total = 1.0 if total is None else total + 1.0
            if total is not None:
                dot[name] = total
        for o in outputs:
            jac[o][b] = dot.get(o, 0.0)
    return jac
