"""Verification catches a wrong backend and a wrong derivative rule; tolerances follow the dtype."""
import dataclasses

import numpy as np
import pytest

import gradsvc
from gradsvc import api, ops
from gradsvc.verify import candidate_points

JOB = {"inputs": {"x": {"linspace": [-2.0, 2.0, 9]}}, "graph": {"f": "sin(x) * x"}, "outputs": ["f"]}


@pytest.fixture
def patched_op(monkeypatch):
    """Replace one op in THE table for a test, and forget compiled functions made with it."""
    def patch(name: str, **changes):
        monkeypatch.setitem(ops.OPS, name, dataclasses.replace(ops.OPS[name], **changes))
        monkeypatch.setattr(api, "_COMPILED", {})
    yield patch
    api._COMPILED.clear()


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


def test_a_wrong_fast_sin_is_caught(monkeypatch):
    from gradsvc import fastmath, jaxrun, kcache
    monkeypatch.setitem(jaxrun.FAST_OPS, "sin", fastmath.cos)
    monkeypatch.setattr(api, "_COMPILED", {})
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
