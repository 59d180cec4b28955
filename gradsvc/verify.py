"""Compare the JAX results with the pure-Python reference, and the reference with finite differences.

Which points. Verification costs the reference's time per point (linear in the graph) and is held to
a budget: `verify_budget` (10%) of the job's own compile + run time.
  - A grid of at most `verify_points` points whose full check is small work (points x nodes, the
    finite differences included, at most FULL_CHECK_WORK node evaluations: a few tenths of a second)
    is checked at every point, whatever the budget: small jobs are always checked in full.
  - Any other grid is checked in a seeded random order that starts with its first and last point
    (a larger grid: at most `verify_points` candidates), until the budget is spent. The first point
    (and one finite difference there) is always checked; so are `verify_min_points` points when one
    point's check is cheap enough for them to fit in the budget, and otherwise as many as fit (the
    report says so).
The report says how many points were checked. A full check depends on nothing but the graph (and
its op table entries), the points, JAX's numbers and the settings: when all of them match a check
this process already made (a warm rerun), that check's report is returned again, marked `repeated`.

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
inconclusive: all three counts are reported. Each is taken at one (point, output, wrt) triple; at most
`fd_points` points get them, and at each at most FD_PAIRS_PER_POINT (output, wrt) pairs, a seeded
rotation through all pairs when there are more (a graph differentiated with respect to each of its
1,000 nodes would otherwise need 1,000 differences, each a pass over the graph, per point). Under a
budget they get at most half of it, and at least one is taken. The report counts the triples taken
against every triple of the job.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .core.ir import Graph
from .reference.backprop import PointResult, run_point

LISTED_POINTS = 20  # points listed per category in reports; counts are always complete
FD_STEP = 6.0554544523933395e-06  # cube root of float64 epsilon: balances truncation and rounding
EPS64 = 2.0 ** -53
FD_LEVELS = 6  # step halvings tried before a finite difference is called inconclusive
FD_PAIRS_PER_POINT = 16  # (output, wrt) pairs differenced at one point; more are rotated through
FD_SHARE = 0.5  # under a budget, finite differences stop once they took this share of it
# Small jobs are checked in full whatever the budget: up to this many reference node evaluations
# (checked points x graph nodes, each finite difference counted as one more point): a few tenths
# of a second, and every shipped job fits (benchmarks/README.md).
FULL_CHECK_WORK = 20_000
ALWAYS_CHECKED = 1  # the first point (and a finite difference there): checked whatever the budget
REMEMBERED_CHECKS = 256  # full checks remembered per process (see `verify`)


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
    budget_s: float | None = None  # None: every candidate point checked, whatever it took
    floor_points: int = 0  # points checked whatever the budget
    floor_note: str = ""  # why fewer than verify_min_points points were checked, when they were
    # this very check (same graph and op table, points, JAX numbers and settings) was done before
    # in this process: its outcome, which cannot differ, is what this report holds
    repeated: bool = False
    # tensor jobs only (verify_jacobians): how many numbers were compared out of how many, and the
    # Hessian comparisons
    elements: dict = field(default_factory=dict)
    hessians: dict = field(default_factory=dict)
    unchecked: str = ""  # why the reference checked nothing (a tensor job too big for it)


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


class Comparer:
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


def checks_in_full(graph: Graph, n_points: int, fd_points: int) -> bool:
    """Whether checking `n_points` points (and their finite differences) is small work: such a
    check is done in full, whatever the budget."""
    pairs = len(graph.outputs) * len(graph.wrt)
    differences = min(n_points, fd_points) * min(pairs, FD_PAIRS_PER_POINT)
    return (n_points + differences) * len(graph.nodes) <= FULL_CHECK_WORK


def verify(graph: Graph, grid, dtype: str, indices: np.ndarray, kept: tuple[str, ...],
           values: np.ndarray, grads: np.ndarray, *, factor: float, fd_points: int, fd_rtol: float,
           budget_s: float | None = None, min_points: int = 1, seed: int = 0) -> VerifyReport:
    """Check JAX's results at `indices`: `values[k]` (the `kept` nodes) and `grads[k]` (outputs x
    wrt) belong to point `indices[k]`.

    Without `budget_s`, every index is checked, in order, and finite differences are spread evenly
    over them. With it, indices are checked in a seeded order starting with the first and last
    point of the grid until that many seconds are spent (see `_Budget` for the floor), and finite
    differences are taken at the points checked first. The report says how many.
    """
    coords_all = grid.coords(indices).astype(dtype).astype(np.float64)  # what JAX saw, exactly
    memo = None
    if budget_s is None:  # a full check is a pure function of these: a warm rerun repeats it
        memo = _check_digest(graph, dtype, kept, grid.size, (indices, coords_all, values, grads),
                             (factor, fd_points, fd_rtol, min_points, seed))
        with _CHECKS_LOCK:
            remembered = _CHECKS.get(memo)
            if remembered is not None:
                _CHECKS.move_to_end(memo)
        if remembered is not None:
            return _own_copy(remembered[1], repeated=True)
    rep = _check(graph, grid, dtype, indices, coords_all, kept, values, grads, factor=factor,
                 fd_points=fd_points, fd_rtol=fd_rtol, budget_s=budget_s,
                 min_points=min_points, seed=seed)
    if memo is not None:
        ops = tuple(node.primitive for node in graph.nodes)  # alive while remembered: ids hold
        with _CHECKS_LOCK:
            _CHECKS[memo] = (ops, _own_copy(rep))
            while len(_CHECKS) > REMEMBERED_CHECKS:
                _CHECKS.popitem(last=False)
    return rep


# digest of a full check's inputs -> (the op objects it used, its report)
_CHECKS: OrderedDict[bytes, tuple] = OrderedDict()
_CHECKS_LOCK = threading.Lock()  # runs in several threads (a service) share it


def _own_copy(rep: VerifyReport, **changes) -> VerifyReport:
    """A report sharing no list or dict with `rep` (its numbers and strings are immutable);
    copy.deepcopy took longer than a warm small job's kernel."""
    def fresh(x):
        if isinstance(x, dict):
            return {k: fresh(v) for k, v in x.items()}
        return [fresh(v) for v in x] if isinstance(x, list) else x
    fields = {f.name: fresh(getattr(rep, f.name)) for f in dataclasses.fields(rep)}
    if rep.worst is not None:
        fields["worst"] = dataclasses.replace(rep.worst, coords=dict(rep.worst.coords))
    return VerifyReport(**{**fields, **changes})


def _check_digest(graph: Graph, dtype: str, kept: tuple, size: int, arrays: tuple,
                  settings: tuple) -> bytes:
    """Everything a full check's outcome depends on: the graph, the op table entries it uses
    (by identity: a replaced op is another check), the points, JAX's numbers and the settings."""
    digest = hashlib.blake2b(digest_size=20)
    ops = tuple(id(node.primitive) for node in graph.nodes)
    digest.update(repr((graph.structure_key(), ops, dtype, kept, size, settings,
                        [(a.dtype.str, a.shape) for a in arrays])).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()


def _check(graph: Graph, grid, dtype: str, indices: np.ndarray, coords_all: np.ndarray,
           kept: tuple[str, ...], values: np.ndarray, grads: np.ndarray, *, factor: float,
           fd_points: int, fd_rtol: float, budget_s: float | None, min_points: int,
           seed: int) -> VerifyReport:
    cmp = Comparer(dtype, factor)
    rep = cmp.report
    budget = _Budget(budget_s, len(indices), min_points)
    order = _check_order(indices, seed) if budget_s is not None else range(len(indices))
    if budget_s is None:  # spread over every point
        fd_every = max(1, math.ceil(len(indices) / fd_points)) if fd_points else 0
    else:  # at the points checked first
        fd_every = 1 if fd_points else 0
    fd = _FiniteDifferences(graph, fd_rtol, EPS64 / cmp.unit, seed)
    for done, k in enumerate(order):
        if not budget.more_points(done):
            break
        index = int(indices[k])
        inputs = dict(zip(graph.inputs, map(float, coords_all[k])))
        point_start = time.perf_counter()
        result = run_point(graph, inputs, unit=cmp.unit)
        _check_point(rep, cmp, graph, index, inputs, result, kept, values[k], grads[k])
        budget.point_checked(time.perf_counter() - point_start)
        if fd_every and done % fd_every == 0 and fd.counts["checked_points"] < fd_points:
            fd.check(inputs, result, index, budget)
        rep.checked_points = done + 1
    rep.sampled = rep.checked_points < grid.size
    rep.budget_s, rep.floor_points = budget_s, budget.floor
    rep.floor_note = budget.floor_note(rep.checked_points)
    rep.fd = fd.summary(grid.size)
    rep.ok = rep.mismatches == 0 and rep.fd["mismatches"] == 0
    return rep


def _check_order(indices: np.ndarray, seed: int) -> list[int]:
    """Positions into `indices`: the grid's first and last point first (when among them), then
    the rest in seeded random order, so that stopping anywhere leaves a random sample."""
    ends = [int(np.argmin(indices)), int(np.argmax(indices))] if len(indices) else []
    ends = list(dict.fromkeys(ends))
    rest = np.setdiff1d(np.arange(len(indices)), ends)
    return ends + np.random.default_rng(seed).permutation(rest).tolist()


class _Budget:
    """How long verification may take, and what it checks whatever that is.

    Without seconds every point is checked. With them: the first point always; then `min_points`
    (the last point first) if one point's check (timed on the first) is cheap enough for them to
    fit in the reference's share of the budget, else as many as fit; then more until it is spent.
    Finite differences stop once they took FD_SHARE of it, after at least one.
    """

    def __init__(self, seconds: float | None, n_points: int, min_points: int):
        self.seconds, self.wanted = seconds, min(min_points, n_points)
        self.floor = n_points if seconds is None else min(ALWAYS_CHECKED, n_points)
        self.per_point = 0.0
        self.start = time.perf_counter()
        self.points_s, self.points, self.fd_s = 0.0, 0, 0.0

    def more_points(self, done: int) -> bool:
        """Check another point, `done` being checked already? Beyond the floor, only if one more
        (as long as the points so far took on average) still ends within the budget."""
        if self.seconds is None or done < self.floor:
            return done < self.floor
        expected = self.points_s / self.points if self.points else 0.0
        return time.perf_counter() - self.start + expected <= self.seconds

    def point_checked(self, seconds: float) -> None:
        self.points_s += seconds
        self.points += 1
        if self.seconds is not None and self.points == self.floor < self.wanted:
            self._settle_floor()

    def _settle_floor(self) -> None:
        per_point = self.points_s / self.points
        fits = int((1.0 - FD_SHARE) * self.seconds / per_point) if per_point > 0 else self.wanted
        self.floor = max(self.floor, min(self.wanted, fits))
        self.per_point = per_point

    def floor_note(self, checked: int) -> str:
        """Why fewer than `verify_min_points` were checked, when they were."""
        if self.seconds is None or checked >= self.wanted:
            return ""
        return (f"{checked} points checked instead of verify_min_points = {self.wanted}: one "
                f"point's check takes {self.per_point * 1e3:.3g} ms, the budget is "
                f"{self.seconds * 1e3:.3g} ms (the first point is always checked)")

    def difference_allowed(self, taken: int) -> bool:
        """Take another finite difference, `taken` being taken? The first always; another only if
        it (as long as those so far took on average) still ends within FD_SHARE of the budget,
        and within the budget."""
        if self.seconds is None or taken == 0:
            return True
        expected = self.fd_s / taken
        return (self.fd_s + expected <= FD_SHARE * self.seconds
                and time.perf_counter() - self.start + expected <= self.seconds)


def _check_point(rep: VerifyReport, cmp: Comparer, graph: Graph, index: int, inputs: dict,
                 result: PointResult, kept: tuple[str, ...], values: np.ndarray,
                 grads: np.ndarray) -> None:
    """Every kept value and every gradient at one point against the reference."""
    overflowed = _downstream(graph, {n for n, v in result.values.items()
                                     if math.isfinite(v) and abs(v) > cmp.max})
    excuse = {n: "rounding" for n in result.unstable} | {n: "overflow" for n in overflowed}
    for j, name in enumerate(kept):
        cmp.compare(index, inputs, f"value {name}", float(values[j]),
                    result.values[name], result.value_err[name], excuse.get(name))
    for o, out in enumerate(graph.outputs):
        for w, name in enumerate(graph.wrt):
            cmp.compare(index, inputs, f"d{out}/d{name}", float(grads[o, w]),
                        result.grads[out][name], result.grad_err[out][name], excuse.get(out))
    _classify(rep, cmp, graph, index, inputs, result, kept, values, grads)


def _downstream(graph: Graph, seeds: set[str]) -> set[str]:
    """`seeds` and every node computed from one of them."""
    if not seeds:
        return seeds
    found = set(seeds)
    for node in graph.nodes:
        if any(a in found for a in node.args):
            found.add(node.name)
    return found


def _classify(rep: VerifyReport, cmp: Comparer, graph: Graph, index: int, inputs: dict,
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
    def __init__(self, graph: Graph, rtol: float, to_float64: float, seed: int = 0):
        """`to_float64` rescales the reference's error bounds (first order: linear in the unit
        roundoff) from the job's dtype to float64, the precision the differences are taken in."""
        self.graph, self.rtol, self.to_float64 = graph, rtol, to_float64
        self.counts = {"checked_points": 0, "taken": 0, "checked": 0, "mismatches": 0,
                       "skipped_kink": 0, "skipped_nonfinite": 0, "inconclusive": 0}
        self.max_rel_err = 0.0
        self.points: list[dict] = []
        self.pairs = [(out, name) for out in graph.outputs for name in graph.wrt]
        if len(self.pairs) > FD_PAIRS_PER_POINT:  # a seeded rotation through every pair
            rotation = np.random.default_rng(seed).permutation(len(self.pairs)).tolist()
            self.pairs = [self.pairs[i] for i in rotation]
        self.next_pair = 0
        self.recompute: dict[str, list] = {}  # name -> the steps a shift of it changes
        self.stopped = False  # the budget's share for differences is spent

    def check(self, inputs: dict, result: PointResult, index: int, budget: "_Budget") -> None:
        """Differences at one point: every (output, wrt) pair, or the next FD_PAIRS_PER_POINT of
        the rotation, while the budget allows."""
        if self.stopped:
            return
        self.counts["checked_points"] += 1
        for _ in range(min(len(self.pairs), FD_PAIRS_PER_POINT)):
            if not budget.difference_allowed(self.counts["taken"]):
                self.stopped = True
                return
            out, name = self.pairs[self.next_pair]
            self.next_pair = (self.next_pair + 1) % len(self.pairs)
            start = time.perf_counter()
            self.counts["taken"] += 1
            self._one(inputs, result, index, out, name)
            budget.fd_s += time.perf_counter() - start

    def _steps(self, name: str) -> list:
        """What moving `name` changes: every node computed from it, in order, as (name, op,
        args); an upstream node keeps its value, so only these are recomputed (a pass over the
        whole graph per difference made differences of every node cost the graph's square)."""
        steps = self.recompute.get(name)
        if steps is None:
            graph, moved, steps = self.graph, {name}, []
            for node in graph.nodes[graph.position[name] + 1:]:
                if any(a in moved for a in node.args):
                    moved.add(node.name)
                    steps.append((node.name, node.primitive, node.args))
            self.recompute[name] = steps
        return steps

    def _shifted(self, base: dict, name: str, value: float) -> dict:
        """Every node's value with `name`'s replaced by `value` (what the reference's forward pass
        gives with that input, or with that node's value overridden)."""
        values = dict(base)
        values[name] = value
        for node, op, args in self._steps(name):
            values[node] = op.value(*(values[a] for a in args))
        return values

    def _branches(self, name: str, values: dict) -> tuple:
        """Which side of its kink each kinked op that a shift of `name` can move is on."""
        return tuple(op.branch(*(values[a] for a in args))
                     for _, op, args in self._steps(name) if op.branch is not None)

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
        outcome = self._converged_difference(result, out, name, x,
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

    def _converged_difference(self, result, out, name, x, floor: float):
        """Richardson-extrapolated central differences at shrinking steps until two agree.

        Returns (estimate, spread between the last two, rounding error) or the name of the counter
        for why there is no trustworthy estimate: a kink or non-finite value within the step, or no
        convergence (a function oscillating faster than any usable step resolves).
        """
        base_branch = self._branches(name, result.values)
        previous = None
        h = FD_STEP * max(1.0, abs(x))
        central = None
        for _ in range(FD_LEVELS):
            runs = [self._shifted(result.values, name, x + s * h) for s in (1.0, -1.0)]
            if any(self._branches(name, v) != base_branch for v in runs):
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

    def summary(self, grid_size: int) -> dict:
        """The counts; `taken` differences of `possible` (every point, output and wrt name)."""
        return {**self.counts, "possible": grid_size * len(self.pairs),
                "max_rel_err": self.max_rel_err, "mismatch_points": self.points,
                "step": FD_STEP, "rtol": self.rtol}


def no_differences(graph: Graph, grid_size: int) -> dict:
    """The finite-difference summary of a check that took none."""
    return _FiniteDifferences(graph, 0.0, 1.0, 0).summary(grid_size)
