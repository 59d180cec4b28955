"""Compare the JAX results with the pure-Python reference, and the reference with finite differences.

Which points: every point when the grid has at most `verify_points`; above that, the first and last
point and a seeded random sample, `verify_points` in all, checked until a time budget (a fraction of
the run's own time) is spent but never fewer than `verify_min_points`. At each point, every value and
every gradient is compared; the report says how many points were checked.

Tolerance (dtype-aware): |jax - ref| <= factor · bound + factor · tiny, where `bound` is the
reference's first-order rounding-error bound for a backend computing in the job's dtype (see
`reference`), and tiny the dtype's smallest normal number (XLA flushes subnormals). Non-finite numbers
must match exactly (nan with nan, +inf with +inf); a reference value beyond the dtype's range counts as
that dtype's ±inf. Points where a non-finite number appears, where an op sits on a kink, or where the
dtype overflows, are listed with their coordinates: they are reported, never silently passed.

Finite differences check the reference's own derivative rules: central differences in float64 at
steps h, h/2, h/4, ... (Richardson-extrapolated) until two successive estimates agree within fd_rtol;
the converged estimate must match the reference gradient within fd_rtol·|g| + the estimates' spread +
their rounding error. Differences that straddle a kink or touch a non-finite value are skipped, and
ones that never converge (an output oscillating faster than any step resolves) are counted as
inconclusive: all three counts are reported.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .ir import Graph
from .reference import PointResult, branches, forward, run_point

LISTED_POINTS = 20  # points listed per category in reports; counts are always complete
FD_STEP = 6.0554544523933395e-06  # cube root of float64 epsilon: balances truncation and rounding
EPS64 = 2.0 ** -53
FD_LEVELS = 6  # step halvings tried before a finite difference is called inconclusive


@dataclass
class Worst:
    index: int
    coords: dict[str, float]
    quantity: str  # "value z" or "dz/da"
    jax: float
    reference: float
    abs_err: float
    tolerance: float


@dataclass
class VerifyReport:
    ok: bool = True
    checked_points: int = 0
    sampled: bool = False
    compared: int = 0  # numbers compared
    mismatches: int = 0
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    worst: Worst | None = None  # the comparison closest to (or furthest past) its tolerance
    worst_ratio: float = 0.0  # abs_err / tolerance at `worst`; > 1 is a mismatch
    mismatch_points: list[dict] = field(default_factory=list)
    nonfinite_points: list[dict] = field(default_factory=list)
    nonfinite_count: int = 0
    kink_points: list[dict] = field(default_factory=list)
    kink_count: int = 0
    overflow_points: list[dict] = field(default_factory=list)
    overflow_count: int = 0
    # comparisons no tolerance can settle: a value that turns non-finite within rounding error, an
    # infinite error bound, or a quantity computed from a value beyond the dtype's range. They are
    # not held to a tolerance, but counted and listed with a reason, never hidden

    ill_conditioned: int = 0
    ill_conditioned_points: list[dict] = field(default_factory=list)
    fd: dict = field(default_factory=dict)
    tolerance: dict = field(default_factory=dict)


def candidate_points(size: int, cap: int, seed: int) -> tuple[np.ndarray, bool]:
    """Indices to check, in the order to check them, and whether they are a sample.

    Every index (in order) when size <= cap; otherwise the first and last point, then a seeded
    random sample without replacement, `cap` in all, in random order so that stopping early
    (a time budget) still leaves a random sample.
    """
    if size <= cap:
        return np.arange(size), False
    rng = np.random.default_rng(seed)
    sample = rng.choice(size, size=cap, replace=False)
    ends = np.array([0, size - 1])
    rest = sample[~np.isin(sample, ends)][: max(cap - 2, 0)]
    return np.concatenate([ends[:cap], rest]), True


class _Comparer:
    def __init__(self, dtype: str, factor: float):
        info = np.finfo(dtype)
        self.factor = factor
        self.unit = float(info.eps) / 2
        self.floor = factor * float(info.tiny)
        self.max = float(info.max)
        self.report = VerifyReport(tolerance={"dtype": dtype, "unit_roundoff": self.unit,
                                              "factor": factor, "floor": self.floor})

    def in_dtype(self, x: float) -> float:
        return math.copysign(math.inf, x) if (math.isfinite(x) and abs(x) > self.max) else x

    def compare(self, index, coords, quantity, got: float, ref: float, bound: float,
                excuse: str | None = None) -> bool:
        """Within tolerance? `excuse` names why a disagreement may be expected at this point:
        "rounding" (the value can turn non-finite within rounding error) or "overflow" (the
        quantity depends on a value beyond the dtype's range)."""
        rep = self.report
        rep.compared += 1
        ref = self.in_dtype(ref)
        if not (math.isfinite(got) and math.isfinite(ref)):
            same = (math.isnan(got) and math.isnan(ref)) or got == ref
            if not same:
                if excuse:
                    return self._ill(index, coords, quantity, got, ref, excuse)
                self._note(index, coords, quantity, got, ref, math.inf, 0.0)
            return same
        tol = self.factor * bound + self.floor
        if not math.isfinite(tol):
            return self._ill(index, coords, quantity, got, ref, "unbounded error estimate")
        err = abs(got - ref)
        rep.max_abs_err = max(rep.max_abs_err, err)
        rep.max_rel_err = max(rep.max_rel_err, err / max(abs(ref), self.floor))
        ratio = err / tol
        if ratio > rep.worst_ratio or rep.worst is None:
            rep.worst_ratio = ratio
            rep.worst = Worst(index, coords, quantity, got, ref, err, tol)
        if ratio > 1.0:
            if excuse:
                return self._ill(index, coords, quantity, got, ref, excuse)
            self._note(index, coords, quantity, got, ref, err, tol)
            return False
        return True

    def _ill(self, index, coords, quantity, got, ref, reason: str) -> bool:
        """A comparison no tolerance can settle: listed as ill-conditioned, not passed silently."""
        rep = self.report
        rep.ill_conditioned += 1
        if len(rep.ill_conditioned_points) < LISTED_POINTS:
            rep.ill_conditioned_points.append({"index": index, "coords": coords, "quantity": quantity,
                                               "jax": got, "reference": ref, "reason": reason})
        return True

    def _note(self, index, coords, quantity, got, ref, err, tol):
        rep = self.report
        rep.mismatches += 1
        if len(rep.mismatch_points) < LISTED_POINTS:
            rep.mismatch_points.append({"index": index, "coords": coords, "quantity": quantity,
                                        "jax": got, "reference": ref, "abs_err": err,
                                        "tolerance": tol})


def verify(graph: Graph, grid, dtype: str, indices: np.ndarray, kept: tuple[str, ...],
           values: np.ndarray, grads: np.ndarray, *, factor: float, fd_points: int, fd_rtol: float,
           budget_s: float | None = None, min_points: int = 1) -> VerifyReport:
    """Check JAX's results at `indices` (in that order): `values[k]` (the `kept` nodes) and
    `grads[k]` (outputs x wrt) belong to point `indices[k]`.

    With `budget_s`, checking stops once that many seconds are spent and `min_points` are done; the
    report says how many points were checked.
    """
    cmp = _Comparer(dtype, factor)
    rep = cmp.report
    coords_all = grid.coords(indices).astype(dtype).astype(np.float64)  # what JAX saw, exactly
    fd_every = max(1, math.ceil(len(indices) / fd_points)) if fd_points else 0
    fd = _FiniteDifferences(graph, fd_rtol, EPS64 / cmp.unit)
    start = time.perf_counter()
    for k, index in enumerate(indices):
        if budget_s is not None and k >= min_points and time.perf_counter() - start > budget_s:
            break
        index = int(index)
        inputs = dict(zip(graph.inputs, map(float, coords_all[k])))
        result = run_point(graph, inputs, unit=cmp.unit)
        overflowed = _downstream(graph, {n for n, v in result.values.items()
                                         if math.isfinite(v) and abs(v) > cmp.max})
        excuse = {n: "rounding" for n in result.unstable} | {n: "overflow" for n in overflowed}
        for j, name in enumerate(kept):
            cmp.compare(index, inputs, f"value {name}", float(values[k, j]),
                        result.values[name], result.value_err[name], excuse.get(name))
        for o, out in enumerate(graph.outputs):
            for w, name in enumerate(graph.wrt):
                cmp.compare(index, inputs, f"d{out}/d{name}", float(grads[k, o, w]),
                            result.grads[out][name], result.grad_err[out][name], excuse.get(out))
        _classify(rep, cmp, graph, index, inputs, result, kept, values[k], grads[k])
        if fd_every and k % fd_every == 0 and fd.counts["checked_points"] < fd_points:
            fd.check(inputs, result, index)
        rep.checked_points = k + 1
    rep.sampled = rep.checked_points < grid.size
    rep.fd = fd.summary()
    rep.ok = rep.mismatches == 0 and rep.fd["mismatches"] == 0
    return rep


def _downstream(graph: Graph, seeds: set[str]) -> set[str]:
    """`seeds` and every node computed from one of them."""
    if not seeds:
        return seeds
    found = set(seeds)
    for node in graph.nodes:
        if any(a in found for a in node.args):
            found.add(node.name)
    return found


def _classify(rep: VerifyReport, cmp: _Comparer, graph: Graph, index: int, inputs: dict,
              result: PointResult, kept: tuple[str, ...], jax_values: np.ndarray,
              jax_grads: np.ndarray) -> None:
    bad = [n for n, v in zip(kept, jax_values) if not math.isfinite(v)]
    bad += [f"d{o}/d{w}" for oi, o in enumerate(graph.outputs) for wi, w in enumerate(graph.wrt)
            if not math.isfinite(jax_grads[oi, wi])]
    if bad:
        rep.nonfinite_count += 1
        if len(rep.nonfinite_points) < LISTED_POINTS:
            rep.nonfinite_points.append({"index": index, "coords": inputs, "quantities": bad})
    if result.kinks:
        rep.kink_count += 1
        if len(rep.kink_points) < LISTED_POINTS:
            owners = sorted({graph.node(n).owner for n in result.kinks})
            rep.kink_points.append({"index": index, "coords": inputs, "nodes": owners})
    beyond = [graph.node(n).owner for n, v in result.values.items()
              if math.isfinite(v) and abs(v) > cmp.max]
    if beyond:
        rep.overflow_count += 1
        if len(rep.overflow_points) < LISTED_POINTS:
            rep.overflow_points.append({"index": index, "coords": inputs,
                                        "nodes": sorted(set(beyond))})


class _FiniteDifferences:
    def __init__(self, graph: Graph, rtol: float, to_float64: float):
        """`to_float64` rescales the reference's error bounds (first order: linear in the unit
        roundoff) from the job's dtype to float64, the precision the differences are taken in."""
        self.graph, self.rtol, self.to_float64 = graph, rtol, to_float64
        self.counts = {"checked_points": 0, "checked": 0, "mismatches": 0, "skipped_kink": 0,
                       "skipped_nonfinite": 0, "inconclusive": 0}
        self.max_rel_err = 0.0
        self.points: list[dict] = []

    def check(self, inputs: dict, result: PointResult, index: int) -> None:
        self.counts["checked_points"] += 1
        for out in self.graph.outputs:
            for name in self.graph.wrt:
                self._one(inputs, result, index, out, name)

    def _shifted(self, inputs: dict, name: str, value: float) -> dict:
        if name in self.graph.inputs:
            return forward(self.graph, {**inputs, name: value})
        return forward(self.graph, inputs, overrides={name: value})

    def _one(self, inputs, result: PointResult, index: int, out: str, name: str) -> None:
        g = result.grads[out][name]
        x = result.values[name]
        if not (math.isfinite(g) and math.isfinite(x)):
            self.counts["skipped_nonfinite"] += 1
            return
        # where g is zero to within the reference's own rounding bound (in float64), say because
        # it is a difference of O(1) terms (d(sin x - x)/dx at 0 is 1 - 1), so is its finite
        # difference, whose rounding the outputs' tiny magnitude alone would understate
        # (only for an output whose value is itself accurate: sin(exp(6) ** 6) is all rounding, and
        # a finite difference there says nothing, "zero" included)
        floor = self.to_float64 * result.grad_err[out][name]
        accurate = self.to_float64 * result.value_err[out] <= 1e-6 * (1.0 + abs(result.values[out]))
        outcome = self._converged_difference(inputs, result, out, name, x,
                                             floor if abs(g) <= floor and accurate else 0.0)
        if isinstance(outcome, str):
            self.counts[outcome] += 1
            return
        estimate, spread, rounding = outcome
        tol = self.rtol * abs(g) + spread + rounding + 1e-300
        err = abs(estimate - g)
        self.counts["checked"] += 1
        self.max_rel_err = max(self.max_rel_err, err / abs(g) if g else err)
        if err > tol:
            self.counts["mismatches"] += 1
            if len(self.points) < LISTED_POINTS:
                self.points.append({"index": index, "coords": inputs, "quantity": f"d{out}/d{name}",
                                    "reference": g, "finite_difference": estimate, "tolerance": tol})

    def _converged_difference(self, inputs, result, out, name, x, floor: float):
        """Richardson-extrapolated central differences at shrinking steps until two agree.

        Returns (estimate, spread between the last two, rounding error) or the name of the counter
        for why there is no trustworthy estimate: a kink or non-finite value within the step, or no
        convergence (a function oscillating faster than any usable step resolves).
        """
        base_branch = branches(self.graph, result.values)
        previous = None
        h = FD_STEP * max(1.0, abs(x))
        central = None
        for _ in range(FD_LEVELS):
            runs = [self._shifted(inputs, name, x + s * h) for s in (1.0, -1.0)]
            if any(branches(self.graph, v) != base_branch for v in runs):
                return "skipped_kink"
            f_plus, f_minus = runs[0][out], runs[1][out]
            if not (math.isfinite(f_plus) and math.isfinite(f_minus)):
                return "skipped_nonfinite"
            finer = (f_plus - f_minus) / (2 * h)
            # rounding in f±: relative to |f|, and what the bound says upstream rounding leaves
            # (log(tanh(9)) is tiny, but carries the rounding of tanh(9) ~ 1)
            f_err = 2 * EPS64 * max(abs(f_plus), abs(f_minus)) + \
                self.to_float64 * result.value_err[out]
            rounding = 4 * f_err / h + floor
            if central is not None:
                estimate = (4 * finer - central) / 3  # cancels the h**2 error term
                if previous is not None:
                    spread = abs(estimate - previous)
                    # agreement only counts above the rounding noise: estimates that all drown in
                    # it (a step far wider than the output's oscillation) agree by accident
                    resolved = (rounding <= 0.1 * abs(estimate) or estimate == previous == 0.0
                                or max(abs(estimate), abs(previous)) <= floor)  # zero, to rounding
                    if resolved and spread <= self.rtol * abs(estimate) + rounding:
                        return estimate, spread, rounding
                previous = estimate
            central = finer
            h /= 2
        return "inconclusive"

    def summary(self) -> dict:
        return {**self.counts, "max_rel_err": self.max_rel_err, "mismatch_points": self.points,
                "step": FD_STEP, "rtol": self.rtol}
