"""Verification of a graph with tensors, Hessians or forward mode, through its scalar view.

The reference sees a tensor graph as the scalar graph of its elements (`reference.scalarize`): every
element of a tensor node is a scalar node, every tensor op its expansion into scalar ops. So the
scalar verification (`verify.verify`: propagated rounding bounds, kinks, non-finite values, finite
differences, the time budget) checks tensor results unchanged, element by element: a Jacobian entry
d out[i] / d W[j] is the gradient of the scalar output `out[i]` with respect to the scalar `W[j]`.

Large tensors are checked on a seeded sample: at most SAMPLED_ELEMENTS elements of each kept node,
output and wrt name (every element of smaller ones); the report's `elements` says how many numbers
were compared out of how many. Hessians are compared with the reference's forward-over-reverse
Hessian (dual numbers through its own tape) within its running error bound, at the first
HESSIAN_POINTS points (the first only under a time budget), and checked against central differences
of the reference gradient; the report's `hessians` counts both.

JAX's tangents and cotangents are whole arrays (see `reference.scalarize`): where an infinite partial
meets an element that no path connects, JAX computes 0 * inf = nan, where element by element there
is nothing to multiply. Forward mode goes further: it perturbs every wrt name at once, and a
select (relu, where) drops the tangent of the branch it does not pick where reverse mode passes
0 * inf back. So at a point with an infinite (or nan) partial, each Jacobian entry is also
computed as JAX's mode computes it (`reference.backprop.backward` with `zeros`, `reference.hessian.forward_jacobian`);
where that differs from the element-by-element reference in kind (nan where the reference has a
number, or the other way), JAX's entry is held to it (the same non-finite value, or within
WHOLE_ARRAY_RTOL unit roundoffs of a number), the element-by-element check is not repeated for it,
and the report counts it (`elements["whole_array"]`) and lists its point among the non-finite
ones when JAX's entry is. Hessians follow the same conventions (`hessian(dense=, zeros=, groups=)`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from . import limits
from .core.ir import Graph
from .job.grid import Grid
from .reference.backprop import _kind, backward, forward
from .reference.hessian import forward_jacobian, hessian
from .reference.scalarize import scalar_size, scalarize
from .verify import (EPS64, FD_STEP, LISTED_POINTS, Comparer, VerifyReport, checks_in_full,
                     no_differences, verify)

SAMPLED_ELEMENTS = 64  # elements of one name compared, at most (a seeded sample beyond)
HESSIAN_POINTS = 4  # points whose Hessians are compared with the reference
HESSIAN_FD_PAIRS = 8  # Hessian entries per point checked by differences of the reference gradient
HESSIAN_FD_RTOL = 1e-4  # central differences of a gradient: O(h**2) truncation at h ~ 1e-4
# a finite JAX entry that the whole-array convention makes finite where the element-by-element
# reference is not (a select dropping a nan tangent): held to this many unit roundoffs of it
WHOLE_ARRAY_RTOL = 1024


def verify_jacobians(graph: Graph, grid: Grid, dtype: str, indices: np.ndarray,
                     kept: tuple[str, ...], values: list[np.ndarray], derivatives: list[np.ndarray],
                     *, factor: float, fd_points: int, fd_rtol: float, budget_s: float | None = None,
                     sampled: bool = False, min_points: int = 1, seed: int = 0) -> VerifyReport:
    """Check JAX's arrays at `indices`: `values[i]` is kept node i at each checked point,
    `derivatives` the Jacobians (outputs x wrt) then the Hessians, as the kernel returns them.
    `budget_s` applies unless the scalar view's check is small work (`verify.checks_in_full`)
    and the points are not a sample. A graph whose scalar view would exceed
    `limits.MAX_REFERENCE_NODES` is not checked: the report says so (`unchecked`)."""
    size = scalar_size(graph)
    if size > limits.MAX_REFERENCE_NODES:
        return _too_big(graph, grid, dtype, factor, size)
    view = scalarize(graph, {name: t.tolist() for name, t in grid.tensors.items()})
    sample = _Sample(view.elements, seed)
    outputs = sample.names(graph.outputs)
    wrt = sample.names(graph.wrt)
    scalar_graph = dataclasses.replace(view.graph, outputs=outputs, wrt=wrt)
    n = len(indices)
    kept_columns = [v.reshape(n, -1)[:, sample.positions[name]] for name, v in zip(kept, values)]
    jacobians = iter(derivatives)
    grads = _sampled_jacobians(graph, sample, jacobians, n, dtype)
    if not sampled and checks_in_full(scalar_graph, n, fd_points):
        budget_s = None
    scalar_grid = _scalar_grid(grid, view)
    whole = _WholeArrays(graph, view, sample, scalar_graph, scalar_grid, dtype)
    checked_grads = whole.reconcile(indices, grads)
    report = verify(scalar_graph, scalar_grid, dtype, indices, sample.names(kept),
                    np.concatenate(kept_columns, axis=1) if kept_columns else np.empty((n, 0)),
                    checked_grads, factor=factor, fd_points=fd_points, fd_rtol=fd_rtol,
                    budget_s=budget_s, min_points=min_points, seed=seed)
    whole.amend(report)
    if graph.hessian_outputs:
        hessians = list(jacobians)
        points = HESSIAN_POINTS if budget_s is None else 1  # under a budget: the first only
        report.hessians = _check_hessians(graph, scalar_graph, grid, scalar_grid, view, sample,
                                          indices[:points], hessians, dtype, factor)
    report.elements = sample.summary(graph, kept)
    report.elements["whole_array"] = whole.count
    report.ok = report.ok and not report.hessians.get("mismatches", 0) \
        and not report.hessians.get("fd_mismatches", 0)
    _grid_coords_only(report, set(grid.names))
    return report


def _sampled_jacobians(graph: Graph, sample: "_Sample", jacobians, n: int, dtype) -> np.ndarray:
    """JAX's Jacobians (taken from `jacobians` in the kernel's order) as the scalar verification
    takes gradients: (points, sampled output elements, sampled wrt elements)."""
    outputs, wrt = sample.names(graph.outputs), sample.names(graph.wrt)
    grads = np.empty((n, len(outputs), len(wrt)), dtype)
    row = 0
    for out in graph.outputs:
        rows, col = sample.positions[out], 0
        for w in graph.wrt:
            block = next(jacobians).reshape(n, math.prod(graph.shape_of(out)), -1)
            cols = sample.positions[w]
            grads[:, row:row + len(rows), col:col + len(cols)] = block[:, rows][:, :, cols]
            col += len(cols)
        row += len(rows)
    return grads


def _too_big(graph: Graph, grid: Grid, dtype: str, factor: float, size: int) -> VerifyReport:
    """The report of a job the reference does not check: too many scalar nodes for it."""
    report = Comparer(dtype, factor).report
    report.unchecked = (f"its scalar view would have about {size:,} scalar nodes, more than "
                        f"{limits.MAX_REFERENCE_NODES:,} (MAX_REFERENCE_NODES); a smaller version "
                        "of the job is checked in full")
    report.fd = no_differences(graph, grid.size)
    return report


class _Sample:
    """The elements of each name that are compared: all, or a seeded sample in C order."""

    def __init__(self, elements: dict, seed: int):
        self.elements = elements
        self.rng = np.random.default_rng(seed)
        self.positions: dict[str, list[int]] = {}
        for name, (shape, names) in elements.items():
            size = len(names)
            chosen = (range(size) if size <= SAMPLED_ELEMENTS else
                      sorted(self.rng.choice(size, SAMPLED_ELEMENTS, replace=False).tolist()))
            self.positions[name] = list(chosen)

    def names(self, names) -> tuple[str, ...]:
        return tuple(self.elements[n][1][i] for n in names for i in self.positions[n])

    def summary(self, graph: Graph, kept: tuple[str, ...]) -> dict:
        size = {n: len(self.elements[n][1]) for n in self.elements}
        got = {n: len(p) for n, p in self.positions.items()}
        pairs = [(o, w) for o in graph.outputs for w in graph.wrt]
        return {"values_checked": sum(got[n] for n in kept),
                "values_total": sum(size[n] for n in kept),
                "derivatives_checked": sum(got[o] * got[w] for o, w in pairs),
                "derivatives_total": sum(size[o] * size[w] for o, w in pairs)}


@dataclass(frozen=True)
class _ScalarGrid:
    """The grid as the scalar view's inputs see it: each point's grid coordinates, then every
    tensor-input element (the same at every point), in the scalar graph's input order."""
    grid: Grid
    columns: tuple[int, ...]  # for each scalar input: its column in [grid coords, constants]
    constants: np.ndarray

    @property
    def size(self) -> int:
        return self.grid.size

    def coords(self, indices: np.ndarray) -> np.ndarray:
        varying = self.grid.coords(indices)
        fixed = np.broadcast_to(self.constants, (len(varying), len(self.constants)))
        return np.concatenate([varying, fixed], axis=1)[:, list(self.columns)]


def _scalar_grid(grid: Grid, view) -> _ScalarGrid:
    position = {name: j for j, name in enumerate(grid.names)}
    constants = []
    for name, tensor in grid.tensors.items():
        for element, value in zip(view.elements[name][1], tensor.ravel().tolist()):
            position[element] = len(grid.names) + len(constants)
            constants.append(value)
    return _ScalarGrid(grid, tuple(position[n] for n in view.graph.inputs),
                       np.array(constants, dtype=np.float64))


def _check_hessians(graph: Graph, scalar_graph: Graph, grid: Grid, scalar_grid: _ScalarGrid, view,
                    sample: _Sample, indices: np.ndarray, hessians: list[np.ndarray], dtype: str,
                    factor: float) -> dict:
    """JAX's Hessians against the reference's at the points `indices` (the first ones checked),
    and the reference's against central differences of its own gradient."""
    cmp = Comparer(dtype, factor)
    wrt = sample.names(graph.wrt)
    n = len(indices)
    counts = {"points": 0, "compared": 0, "mismatches": 0, "fd_checked": 0, "fd_mismatches": 0,
              "fd_skipped_kink": 0, "mismatch_points": []}
    blocks = iter(hessians)
    by_output = {o: {(a, b): next(blocks) for a in graph.wrt for b in graph.wrt}
                 for o in graph.hessian_outputs}
    for k in range(n):
        index = int(indices[k])
        at = scalar_grid.coords(np.array([index])).astype(dtype).astype(np.float64)  # as JAX saw it
        inputs = dict(zip(scalar_graph.inputs, at[0].tolist()))
        values = forward(scalar_graph, inputs)
        coords = {name: inputs[name] for name in grid.names}
        for out in graph.hessian_outputs:
            reference, bounds = hessian(scalar_graph, values, out, wrt,
                                        unit=cmp.unit, dense=view.forward_dense,
                                        zeros=view.reverse_dense(out), groups=view.groups)
            for (a, b), block in by_output[out].items():
                got = block[k].reshape(math.prod(graph.shape_of(a)), -1)
                for i in sample.positions[a]:
                    for j in sample.positions[b]:
                        ea, eb = view.elements[a][1][i], view.elements[b][1][j]
                        ok = cmp.compare(index, coords, f"d2{out}/d{ea}d{eb}", float(got[i, j]),
                                         reference[ea][eb], bounds[ea][eb])
                        counts["compared"] += 1
                        counts["mismatches"] += not ok
            _difference_check(scalar_graph, inputs, out, wrt, reference, counts, k)
        counts["points"] += 1
    counts["mismatch_points"] = cmp.report.mismatch_points
    return counts


class _WholeArrays:
    """Jacobian entries where JAX's whole arrays make it differ from the element-by-element
    reference (see the module docstring): looked for at points where JAX gave a non-finite entry
    or, for forward mode, where a partial is infinite or nan; checked against the reference's
    emulation of JAX's mode, and handed to `verify` as the element-by-element reference has them."""

    def __init__(self, graph: Graph, view, sample: _Sample, scalar_graph: Graph, scalar_grid,
                 dtype: str):
        from .engine.jacobians import reverse_mode  # loaded already: JAX computed the numbers
        self.graph, self.view, self.sample, self.scalar = graph, view, sample, scalar_graph
        self.scalar_grid, self.dtype = scalar_grid, dtype
        self.reverse = {out: reverse_mode(graph, out) for out in graph.outputs}
        self.rows, start = {}, 0
        for out in graph.outputs:
            self.rows[out] = slice(start, start + len(sample.positions[out]))
            start += len(sample.positions[out])
        self.unit = float(np.finfo(dtype).eps) / 2
        self.count = 0
        self.jax_nonfinite: dict[int, list[str]] = {}  # point index -> quantities JAX has non-finite
        self.stand_in_nonfinite: dict[int, set[str]] = {}  # ... and those only the stand-ins have

    def reconcile(self, indices: np.ndarray, grads: np.ndarray) -> np.ndarray:
        """`grads` with each entry JAX's convention explains replaced by the element-by-element
        reference's number (a copy where anything is replaced)."""
        forward_mode = [o for o in self.graph.outputs if not self.reverse[o]]
        out = grads
        coords = self.scalar_grid.coords(indices).astype(self.dtype).astype(np.float64)
        for k, index in enumerate(indices.tolist()):
            suspect = [o for o in self.graph.outputs if not np.isfinite(grads[k, self.rows[o]]).all()]
            values = None
            if set(forward_mode) - set(suspect):
                values = forward(self.scalar, dict(zip(self.scalar.inputs, coords[k].tolist())))
                if _singular(self.scalar, values):
                    suspect = list(self.graph.outputs)
            if not suspect:
                continue
            if values is None:
                values = forward(self.scalar, dict(zip(self.scalar.inputs, coords[k].tolist())))
            if out is grads:
                out = grads.copy()
            for o in suspect:
                self._entries(k, index, o, values, grads, out)
        return out

    def _entries(self, k: int, index: int, output: str, values: dict, grads: np.ndarray,
                 out: np.ndarray) -> None:
        elements = self.sample.names([output])
        wrt = self.sample.names(self.graph.wrt)
        if self.reverse[output]:
            zeros = self.view.reverse_dense(output)
            jax_way = {o: backward(self.scalar, values, o, zeros=zeros) for o in elements}
        else:
            jax_way = forward_jacobian(self.scalar, values, elements, wrt, self.view.forward_dense)
        for i, o in enumerate(elements, start=self.rows[output].start):
            by_element = backward(self.scalar, values, o)
            for j, w in enumerate(wrt):
                expected, reference = jax_way[o].get(w, 0.0), by_element.get(w, 0.0)
                if _kind(expected) == _kind(reference):
                    continue  # the same but for rounding: `verify` compares it
                got = float(grads[k, i, j])
                if _kind(got) != _kind(expected) or (math.isfinite(got) and abs(got - expected)
                                                     > WHOLE_ARRAY_RTOL * self.unit
                                                     * max(1.0, abs(expected))):
                    continue  # JAX follows neither: `verify` reports it against the reference
                self.count += 1
                out[k, i, j] = reference
                quantity = f"d{o}/d{w}"
                if not math.isfinite(got):
                    self.jax_nonfinite.setdefault(index, []).append(quantity)
                if not math.isfinite(reference):
                    self.stand_in_nonfinite.setdefault(index, set()).add(quantity)

    def amend(self, report: VerifyReport) -> None:
        """The report's non-finite points as JAX's numbers have them, not the stand-ins."""
        listed = {p["index"]: p for p in report.nonfinite_points}
        for index, quantities in self.stand_in_nonfinite.items():
            point = listed.get(index)
            if point is None:
                continue
            point["quantities"] = [q for q in point["quantities"] if q not in quantities]
            if not point["quantities"] and index not in self.jax_nonfinite:
                report.nonfinite_points.remove(point)
                report.nonfinite_count -= 1
                del listed[index]
        for index, quantities in self.jax_nonfinite.items():
            point = listed.get(index)
            if point is not None:
                point["quantities"] += [q for q in quantities if q not in point["quantities"]]
                continue
            report.nonfinite_count += 1
            if len(report.nonfinite_points) < LISTED_POINTS:
                coords = self.scalar_grid.coords(np.array([index]))[0].tolist()
                report.nonfinite_points.append({"index": index, "quantities": quantities,
                                                "coords": dict(zip(self.scalar.inputs, coords))})


def _singular(graph: Graph, values: dict) -> bool:
    """Whether a partial at this point is infinite or nan (where JAX's modes can differ)."""
    for node in graph.nodes:
        if node.args and not node.primitive.no_gradient:
            args = tuple(values[a] for a in node.args)
            if not all(math.isfinite(p) for p in node.primitive.partials(args, values[node.name])):
                return True
    return False


def _difference_check(graph: Graph, inputs: dict, output: str, wrt: tuple,
                      reference: dict, counts: dict, seed: int) -> None:
    """d2 out / da db against (g_a(b + h) - g_a(b - h)) / 2h of the reference gradient g_a, at
    HESSIAN_FD_PAIRS entries chosen by a seeded rotation, each at two steps: the estimate that
    agrees best counts, within its truncation (the two estimates' spread) and rounding.

    b is moved as an input (the Hessian is symmetric, so a pair with one input is turned that way):
    moving an intermediate node's value would also move its own op's partial, which reads the
    node's value (tanh' = 1 - tanh²), while a perturbation added after the op does not."""
    rng = np.random.default_rng(seed)
    pairs = [(a, b) if b in inputs else (b, a) for a in wrt for b in wrt
             if a in inputs or b in inputs]
    kinks = _branches(graph, forward(graph, inputs))
    for p in rng.permutation(len(pairs))[:HESSIAN_FD_PAIRS]:
        a, b = pairs[int(p)]
        expected = reference[a][b]
        step = FD_STEP * 16 * max(1.0, abs(inputs[b]))  # a gradient's difference: a wider step
        differences = [_gradient_difference(graph, inputs, output, a, b, h) for h in (step, step / 2)]
        if any(branches != kinks for _, branches in differences):
            counts["fd_skipped_kink"] += 1  # a kink within the step: no derivative to difference
            continue
        estimates = [estimate for estimate, _ in differences]
        if not all(math.isfinite(x) for x in (expected, *estimates)):
            continue
        counts["fd_checked"] += 1
        scale = max(abs(expected), *map(abs, estimates), 1.0)
        spread = abs(estimates[0] - estimates[1])
        noise = 64 * EPS64 * scale / (step / 2)
        if abs(estimates[1] - expected) > HESSIAN_FD_RTOL * scale + spread + noise:
            counts["fd_mismatches"] += 1


def _gradient_difference(graph: Graph, inputs: dict, output: str, a: str, b: str,
                         step: float) -> tuple[float, tuple]:
    """The central difference, and the side of its kink each kinked op is on at b + step and b -
    step (they must be the point's own: abs'(x) differenced across 0 is 2 / 2h, not abs'')."""
    shifted, branches = [], ()
    for sign in (1.0, -1.0):
        values = forward(graph, {**inputs, b: inputs[b] + sign * step})
        shifted.append(backward(graph, values, output).get(a, 0.0))
        moved = _branches(graph, values)
        branches = moved if not branches or moved == branches else (None,)
    return (shifted[0] - shifted[1]) / (2 * step), branches


def _branches(graph: Graph, values: dict) -> tuple:
    """Which side of its kink each kinked op is on (0: exactly on it)."""
    return tuple(node.primitive.branch(*(values[a] for a in node.args)) for node in graph.nodes
                 if node.primitive is not None and node.primitive.branch is not None)


def _grid_coords_only(report: VerifyReport, grid_names: set[str]) -> None:
    """Points are reported by their grid coordinates, not by every tensor element."""
    def trim(coords: dict) -> dict:
        return {k: v for k, v in coords.items() if k in grid_names}
    for listing in (report.mismatch_points, report.nonfinite_points, report.kink_points,
                    report.overflow_points, report.ill_conditioned_points,
                    report.hessians.get("mismatch_points", [])):
        for point in listing:
            if "coords" in point:
                point["coords"] = trim(point["coords"])
    if report.worst is not None:
        report.worst.coords = trim(report.worst.coords)
