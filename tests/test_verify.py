"""Verification catches a wrong backend and a wrong derivative rule; tolerances follow the dtype."""
import dataclasses

import numpy as np
import pytest

import gradsvc
from gradsvc.engine import jax_backend
from gradsvc.core import ops
from gradsvc.verify import candidate_points

JOB = {"inputs": {"x": {"linspace": [-2.0, 2.0, 9]}}, "graph": {"f": "sin(x) * x"}, "outputs": ["f"]}


@pytest.fixture
def patched_op(monkeypatch):
    """Replace one op in THE table for a test, and forget compiled functions made with it."""
    def patch(name: str, **changes):
        monkeypatch.setitem(ops.OPS, name, dataclasses.replace(ops.OPS[name], **changes))
        monkeypatch.setattr(jax_backend, "_COMPILED", {})
    yield patch
    jax_backend._COMPILED.clear()


def test_correct_run_is_ok():
    r = gradsvc.run(JOB)
    assert r.ok and r.verify.checked_points == 9 and r.verify.mismatches == 0


def test_a_wrong_jax_implementation_is_caught(patched_op):
    patched_op("sin", jax="jax.numpy.cos")
    r = gradsvc.run(JOB, fast_math=False)
    assert not r.ok and r.verify.mismatches > 0
    assert r.verify.fd["mismatches"] == 0  # the reference itself is still right
    first = r.verify.mismatch_points[0]
    assert first["quantity"] in ("value f", "df/dx") and "x" in first["coords"]


def test_a_wrong_fast_sin_is_caught(monkeypatch, fast_math_everywhere):
    from gradsvc.engine import fastmath, jaxrun, kcache
    monkeypatch.setitem(jaxrun.FAST_OPS, "sin", fastmath.cos)
    monkeypatch.setattr(jax_backend, "_COMPILED", {})
    monkeypatch.setattr(kcache, "_cache_dir", [None])  # no executable cache: really recompile
    r = gradsvc.run(JOB, compile_cache="off")
    assert not r.ok and r.verify.mismatches > 0


def test_a_wrong_reference_rule_is_caught_by_jax_and_finite_differences(patched_op):
    patched_op("sin", partials=lambda a, o: (1.001 * ops.ieee_cos(a[0]),))
    r = gradsvc.run(JOB)
    assert not r.ok
    assert r.verify.mismatches > 0 and r.verify.fd["mismatches"] > 0


def test_float32_is_checked_with_float32_tolerance():
    r32 = gradsvc.run(JOB, dtype="float32")
    r64 = gradsvc.run(JOB, dtype="float64")
    assert r32.ok and r64.ok
    assert r32.values["f"].dtype == np.float32 and r64.values["f"].dtype == np.float64
    assert r32.verify.tolerance["unit_roundoff"] == 2.0 ** -24
    assert r64.verify.tolerance["unit_roundoff"] == 2.0 ** -53
    assert r64.verify.max_rel_err < 1e-14 < r32.verify.max_rel_err < 1e-5


def test_sampling_is_seeded_and_starts_with_the_first_and_last_point():
    a, sampled = candidate_points(10_000, 50, seed=3)
    b, _ = candidate_points(10_000, 50, seed=3)
    assert sampled and len(a) == 50 and list(a[:2]) == [0, 9_999] and np.array_equal(a, b)
    assert len(set(a.tolist())) == 50
    everything, sampled = candidate_points(40, 50, seed=3)
    assert not sampled and list(everything) == list(range(40))


def test_fd_steps_that_straddle_a_kink_are_skipped_not_failed():
    r = gradsvc.run({"inputs": {"x": [0.0, 1e-7, 1.0]}, "graph": {"f": "abs(x) * 3"},
                     "outputs": ["f"]})
    assert r.ok and r.verify.fd["skipped_kink"] >= 2  # x=0 and x=1e-7 (within one step)
    assert r.verify.kink_count == 1


def test_fd_inconclusive_for_fast_oscillation_is_counted():
    r = gradsvc.run({"inputs": {"x": 6.0}, "graph": {"f": "sin(exp(x) ** 6)"}, "outputs": ["f"],
                     "wrt": "inputs"})
    assert r.ok and r.verify.fd["inconclusive"] == 1 and r.verify.fd["checked"] == 0


def test_float32_overflow_is_reported_not_a_mismatch():
    r = gradsvc.run({"inputs": {"x": 91.0}, "graph": {"f": "sin(exp(x))"}, "outputs": ["f"]},
                    dtype="float32")
    assert r.ok and r.verify.overflow_count == 1
    assert r.verify.overflow_points[0]["nodes"] == ["f"]
    assert {p["reason"] for p in r.verify.ill_conditioned_points} == {"overflow"}


def test_a_gradient_that_is_zero_by_cancellation_passes_its_finite_difference():
    """Found by `make fuzz`: d(sin(x) - x)/dx at 0 is 1 - 1 = 0, and the finite difference is
    -4.7e-17, rounding of the O(1) terms, which the outputs' tiny values did not show: the check
    now allows the reference's own rounding bound on the gradient when both are zero within it."""
    for dtype in ("float64", "float32"):
        r = gradsvc.run({"inputs": {"x": [0.0, 0.5]}, "graph": {"s": "sin(x)", "d": "s - x"},
                         "outputs": ["s", "d"]}, dtype=dtype)
        assert r.ok and r.verify.fd["mismatches"] == 0 and r.verify.fd["inconclusive"] == 0
        assert r.verify.fd["checked"] == 2 * 2 * 3  # 2 points, 2 outputs, 3 names each


# --- verification cost: linear in the graph, within its budget (issue 10) ---

def chain_job(named: int, points: int):
    """A deep graph: ~7 IR nodes per named node, every one differentiated (`wrt: all`)."""
    from gradsvc.job.spec import job_from_dict
    graph = {"n0": "sin(a) + b"}
    for k in range(1, named):
        graph[f"n{k}"] = f"tanh(n{k - 1}) * 0.5 + cos(n{max(k - 2, 0)}) * 0.25"
    return job_from_dict({"inputs": {"a": {"linspace": [0.1, 1.0, points]}, "b": 0.5},
                          "graph": graph, "outputs": [f"n{named - 1}"], "wrt": "all"})


def reference_rows(job, indices):
    """What a correct backend returns at `indices`: every named node's value, every gradient."""
    from gradsvc.reference.backprop import run_point
    graph = job.graph
    values = np.empty((len(indices), len(graph.named)))
    grads = np.empty((len(indices), len(graph.outputs), len(graph.wrt)))
    for k, coords in enumerate(job.grid.coords(indices)):
        r = run_point(graph, dict(zip(graph.inputs, map(float, coords))))
        values[k] = [r.values[n] for n in graph.named]
        grads[k] = [[r.grads[o][w] for w in graph.wrt] for o in graph.outputs]
    return values, grads


@pytest.fixture
def counted(monkeypatch):
    """Counts reference evaluations: points checked, and forward passes of finite differences."""
    from gradsvc import verify as verify_module
    counts = {"points": 0, "shifted": 0}
    run_point, shifted = verify_module.run_point, verify_module._FiniteDifferences._shifted

    def counting_run_point(*args, **kwargs):
        counts["points"] += 1
        return run_point(*args, **kwargs)

    def counting_shifted(self, *args):
        counts["shifted"] += 1
        return shifted(self, *args)
    monkeypatch.setattr(verify_module, "run_point", counting_run_point)
    monkeypatch.setattr(verify_module._FiniteDifferences, "_shifted", counting_shifted)
    return counts


def test_a_300_node_graph_verifies_in_a_bounded_number_of_reference_evaluations(counted):
    """Issue 10: finite differences for every wrt name at every checked point made verification
    grow as the square of the graph, and a floor of 32 points cost more than a cached job. Under
    a budget that is already spent, the first point and one difference there are all."""
    from gradsvc.verify import FD_LEVELS, verify
    job = chain_job(50, 5000)
    graph = job.graph
    assert len(graph.nodes) >= 300 and len(graph.wrt) > 50
    indices, sampled = candidate_points(job.grid.size, 50, seed=0)
    values, grads = reference_rows(job, indices)
    counted.update(points=0, shifted=0)
    rep = verify(graph, job.grid, "float64", indices, graph.named, values, grads, factor=32,
                 fd_points=50, fd_rtol=1e-5, budget_s=0.0, min_points=32)
    assert rep.ok and rep.checked_points == 1 and counted["points"] == 1
    assert rep.floor_points == 1 and "verify_min_points = 32" in rep.floor_note
    assert rep.fd["taken"] == 1 and counted["shifted"] <= 2 * FD_LEVELS
    assert rep.fd["possible"] == 5000 * len(graph.wrt)


def test_finite_differences_rotate_through_the_pairs_at_most_16_per_point(counted):
    """Checked in full (no budget), a graph with 104 wrt names gets 16 differences per point, not
    104, each recomputing only what its name feeds (not the whole graph)."""
    from gradsvc.verify import FD_LEVELS, FD_PAIRS_PER_POINT, verify
    job = chain_job(100, 3)
    graph = job.graph
    indices = np.arange(3)
    values, grads = reference_rows(job, indices)
    counted.update(points=0, shifted=0)
    rep = verify(graph, job.grid, "float64", indices, graph.named, values, grads, factor=32,
                 fd_points=50, fd_rtol=1e-5)
    assert rep.ok and rep.checked_points == 3 and not rep.sampled and rep.budget_s is None
    assert FD_PAIRS_PER_POINT == 16 and rep.fd["taken"] == 3 * 16 and rep.fd["checked_points"] == 3
    assert rep.fd["possible"] == 3 * len(graph.wrt) and rep.fd["mismatches"] == 0
    assert counted["shifted"] <= rep.fd["taken"] * 2 * FD_LEVELS


def test_small_jobs_are_checked_in_full_and_big_graphs_under_the_budget():
    from gradsvc.verify import checks_in_full
    rosenbrock = gradsvc.load_job("jobs/rosenbrock_grid.yaml").graph
    assert checks_in_full(rosenbrock, 1271, 50)  # every shipped job: see test_jobs.py
    assert not checks_in_full(chain_job(50, 2).graph, 100, 50)


def test_a_budgeted_small_grid_is_checked_in_seeded_random_order_from_its_ends():
    """A small grid that is not small work is checked like a sample: stopping early must leave
    the first and last point and a random sample, not the grid's first rows."""
    from gradsvc.verify import _check_order
    order = _check_order(np.arange(10), seed=0)
    assert order[:2] == [0, 9] and sorted(order) == list(range(10))
    assert order[2:] != list(range(1, 9))  # not the grid's own order
    assert _check_order(np.arange(10), seed=0) == order


def test_a_warm_rerun_repeats_the_full_check_it_already_did(patched_op):
    """The warm path (issue 10): a job run again with the same kernel, points and numbers has
    the same check; its report is remembered, marked `repeated`, and is a copy of its own."""
    first = gradsvc.run(JOB)
    again = gradsvc.run(JOB)
    assert again.verify.repeated and again.ok
    assert (again.verify.compared, again.verify.fd["taken"]) == (first.verify.compared,
                                                                   first.verify.fd["taken"])
    again.verify.fd["mismatch_points"].append("changed")
    assert gradsvc.run(JOB).verify.fd["mismatch_points"] == []
    other_points = gradsvc.run({**JOB, "inputs": {"x": {"linspace": [-2.0, 2.0, 7]}}})
    assert not other_points.verify.repeated
    patched_op("sin", partials=lambda a, o: (1.001 * ops.ieee_cos(a[0]),))
    r = gradsvc.run(JOB)  # a replaced op is another check, even with the same JAX numbers
    assert not r.ok and r.verify.fd["mismatches"] > 0


def test_the_budget_starts_nothing_that_would_end_past_it(monkeypatch):
    """Beyond the floor a point (or a finite difference) is started only if, at the average so
    far, it ends within the budget: checking until the budget was passed overshot it by one."""
    from gradsvc import verify as verify_module
    clock = [0.0]
    monkeypatch.setattr(verify_module.time, "perf_counter", lambda: clock[0])
    budget = verify_module._Budget(1.0, 100, 1)

    def spend(seconds: float, difference: bool = False) -> None:
        clock[0] += seconds
        if difference:
            budget.fd_s += seconds
        else:
            budget.point_checked(seconds)
    assert budget.more_points(0)  # the floor: the first point
    spend(0.3)
    assert budget.difference_allowed(0)  # the first difference, whatever the budget
    spend(0.2, difference=True)
    assert budget.difference_allowed(1)  # 0.2 + 0.2 within FD_SHARE (0.5) of the budget
    spend(0.2, difference=True)
    assert not budget.difference_allowed(2)  # 0.4 + 0.2 would not be
    assert budget.more_points(1)  # 0.7 spent + 0.3 expected: just within
    spend(0.3)
    assert not budget.more_points(2)  # 1.0 spent is within the budget, 1.0 + 0.3 is not
