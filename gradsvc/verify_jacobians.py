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
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .core.ir import Graph
from .job.grid import Grid
from .reference.backprop import backward, forward
from .reference.hessian import hessian
from .reference.scalarize import scalarize
from .verify import EPS64, FD_STEP, VerifyReport, _Comparer, checks_in_full, verify

SAMPLED_ELEMENTS = 64  # elements of one name compared, at most (a seeded sample beyond)
HESSIAN_POINTS = 4  # points whose Hessians are compared with the reference
HESSIAN_FD_PAIRS = 8  # Hessian entries per point checked by differences of the reference gradient
HESSIAN_FD_RTOL = 1e-4  # central differences of a gradient: O(h**2) truncation at h ~ 1e-4


def verify_jacobians(graph: Graph, grid: Grid, dtype: str, indices: np.ndarray,
                     kept: tuple[str, ...], values: list[np.ndarray], derivatives: list[np.ndarray],
                     *, factor: float, fd_points: int, fd_rtol: float, budget_s: float | None = None,
                     sampled: bool = False, min_points: int = 1, seed: int = 0) -> VerifyReport:
    """Check JAX's arrays at `indices`: `values[i]` is kept node i at each checked point,
    `derivatives` the Jacobians (outputs x wrt) then the Hessians, as the kernel returns them.
    `budget_s` applies unless the scalar view's check is small work (`verify.checks_in_full`)
    and the points are not a sample."""
    view = scalarize(graph, {name: t.tolist() for name, t in grid.tensors.items()})
    sample = _Sample(view.elements, seed)
    outputs = sample.names(graph.outputs)
    wrt = sample.names(graph.wrt)
    scalar_graph = dataclasses.replace(view.graph, outputs=outputs, wrt=wrt)
    n = len(indices)
    kept_columns = [v.reshape(n, -1)[:, sample.positions[name]] for name, v in zip(kept, values)]
    jacobians = iter(derivatives)
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
    if not sampled and checks_in_full(scalar_graph, n, fd_points):
        budget_s = None
    report = verify(scalar_graph, _scalar_grid(grid, view), dtype, indices, sample.names(kept),
                    np.concatenate(kept_columns, axis=1) if kept_columns else np.empty((n, 0)),
                    grads, factor=factor, fd_points=fd_points, fd_rtol=fd_rtol, budget_s=budget_s,
                    min_points=min_points, seed=seed)
    if graph.hessian_outputs:
        hessians = list(jacobians)
        points = HESSIAN_POINTS if budget_s is None else 1  # under a budget: the first only
        report.hessians = _check_hessians(graph, scalar_graph, grid, view, sample,
                                          indices[:points], hessians, dtype, factor)
    report.elements = sample.summary(graph, kept)
    report.ok = report.ok and not report.hessians.get("mismatches", 0) \
        and not report.hessians.get("fd_mismatches", 0)
    _grid_coords_only(report, set(grid.names))
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


def _check_hessians(graph: Graph, scalar_graph: Graph, grid: Grid, view, sample: _Sample,
                    indices: np.ndarray, hessians: list[np.ndarray], dtype: str,
                    factor: float) -> dict:
    """JAX's Hessians against the reference's at the points `indices` (the first ones checked),
    and the reference's against central differences of its own gradient."""
    cmp = _Comparer(dtype, factor)
    scalar_grid = _scalar_grid(grid, view)
    n = len(indices)
    counts = {"points": 0, "compared": 0, "mismatches": 0, "fd_checked": 0, "fd_mismatches": 0,
              "mismatch_points": []}
    blocks = iter(hessians)
    by_output = {o: {(a, b): next(blocks) for a in graph.wrt for b in graph.wrt}
                 for o in graph.hessian_outputs}
    for k in range(n):
        index = int(indices[k])
        inputs = dict(zip(scalar_graph.inputs, scalar_grid.coords(np.array([index]))[0].tolist()))
        values = forward(scalar_graph, inputs)
        coords = {name: inputs[name] for name in grid.names}
        for out in graph.hessian_outputs:
            reference, bounds = hessian(scalar_graph, values, out, sample.names(graph.wrt),
                                        unit=cmp.unit)
            for (a, b), block in by_output[out].items():
                got = block[k].reshape(math.prod(graph.shape_of(a)), -1)
                for i in sample.positions[a]:
                    for j in sample.positions[b]:
                        ea, eb = view.elements[a][1][i], view.elements[b][1][j]
                        ok = cmp.compare(index, coords, f"d2{out}/d{ea}d{eb}", float(got[i, j]),
                                         reference[ea][eb], bounds[ea][eb])
                        counts["compared"] += 1
                        counts["mismatches"] += not ok
            _difference_check(scalar_graph, inputs, out, sample.names(graph.wrt),
                              reference, counts, k)
        counts["points"] += 1
    counts["mismatch_points"] = cmp.report.mismatch_points
    return counts


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
    for p in rng.permutation(len(pairs))[:HESSIAN_FD_PAIRS]:
        a, b = pairs[int(p)]
        expected = reference[a][b]
        step = FD_STEP * 16 * max(1.0, abs(inputs[b]))  # a gradient's difference: a wider step
        estimates = [_gradient_difference(graph, inputs, output, a, b, h) for h in (step, step / 2)]
        if not all(math.isfinite(x) for x in (expected, *estimates)):
            continue
        counts["fd_checked"] += 1
        scale = max(abs(expected), *map(abs, estimates), 1.0)
        spread = abs(estimates[0] - estimates[1])
        noise = 64 * EPS64 * scale / (step / 2)
        if abs(estimates[1] - expected) > HESSIAN_FD_RTOL * scale + spread + noise:
            counts["fd_mismatches"] += 1


def _gradient_difference(graph: Graph, inputs: dict, output: str, a: str, b: str,
                         step: float) -> float:
    shifted = [backward(graph, forward(graph, {**inputs, b: inputs[b] + sign * step}),
                        output).get(a, 0.0) for sign in (1.0, -1.0)]
    return (shifted[0] - shifted[1]) / (2 * step)


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
