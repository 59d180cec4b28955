"""fast_math: fused polynomial sin/cos, accurate within their range, exact fallback beyond it."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradsvc
from gradsvc.engine import fastmath


@pytest.fixture(autouse=True)
def _float64():
    """These tests call fastmath on float64 arrays themselves: JAX's 64-bit mode for them only
    (gradsvc turns it on around its own kernels, never for its user)."""
    with jax.enable_x64(True):
        yield

# Measured bounds (benchmarks/README.md), with a little room: max abs error over |x| <= bound
ERROR = {"float32": 1.2e-7, "float64": 4.5e-16}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("bound", [1.0, 100.0, "limit"])
def test_accuracy_against_numpy_float64(dtype, bound):
    bound = fastmath.ACCURATE_UP_TO[dtype] if bound == "limit" else bound
    x = np.random.default_rng(1).uniform(-bound, bound, 200_000).astype(dtype)
    exact = x.astype(np.float64)
    assert np.abs(np.asarray(jax.jit(fastmath.sin)(x)) - np.sin(exact)).max() < ERROR[dtype]
    assert np.abs(np.asarray(jax.jit(fastmath.cos)(x)) - np.cos(exact)).max() < ERROR[dtype]


@pytest.mark.parametrize("x", [0.0, -0.0, math.pi / 2, -math.pi, 1e-30, 3 * math.pi / 4])
def test_special_points(x):
    x64 = jnp.float64(x)
    assert float(fastmath.sin(x64)) == pytest.approx(math.sin(x), abs=3e-16)
    assert float(fastmath.cos(x64)) == pytest.approx(math.cos(x), abs=3e-16)
    assert math.copysign(1.0, float(fastmath.sin(jnp.float64(-0.0)))) == -1.0


def test_non_finite_gives_nan():
    for x in (math.inf, -math.inf, math.nan):
        assert math.isnan(float(fastmath.sin(jnp.float32(x))))
        assert math.isnan(float(fastmath.cos(jnp.float64(x))))


def test_derivatives_are_cos_and_minus_sin():
    x = jnp.float64(0.7)
    assert float(jax.grad(fastmath.sin)(x)) == pytest.approx(math.cos(0.7), rel=1e-15)
    assert float(jax.grad(fastmath.cos)(x)) == pytest.approx(-math.sin(0.7), rel=1e-15)


def test_chunks_beyond_the_range_are_recomputed_exactly(fast_math_everywhere):
    job = {"inputs": {"x": {"linspace": [-3.0e4, 3.0e4, 7]}}, "graph": {"f": "sin(x) * cos(x)"},
           "outputs": ["f"], "settings": {"dtype": "float32", "chunk_size": 4}}
    fast = gradsvc.run(job)
    exact = gradsvc.run(job, fast_math=False)
    assert fast.ok and fast.timings["chunks_recomputed_exact"] == 2  # both chunks hold |x| > 8192
    np.testing.assert_array_equal(fast.values["f"], exact.values["f"])
    np.testing.assert_array_equal(fast.grads["f"]["x"], exact.grads["f"]["x"])


def test_chunks_within_the_range_stay_fast():
    r = gradsvc.run({"inputs": {"x": {"linspace": [-10, 10, 101]}}, "graph": {"f": "sin(x)"},
                     "outputs": ["f"]})
    assert r.ok and r.timings["chunks_recomputed_exact"] == 0
    np.testing.assert_allclose(r.values["f"], np.sin(np.linspace(-10, 10, 101)), atol=4.5e-16)


@pytest.mark.parametrize("keep, expected", [("all", ["x", "s", "f"]), ("outputs", ["x", "f"]),
                                            ("none", ["x"])])
def test_keep_values(keep, expected):
    r = gradsvc.run({"inputs": {"x": [0.5, 1.0]}, "graph": {"s": "sin(x)", "f": "s * x"},
                     "outputs": ["f"], "settings": {"keep_values": keep}})
    assert r.ok and list(r.values) == expected
    assert r.grads["f"]["x"][1] == pytest.approx(math.sin(1.0) + math.cos(1.0))


SIN_JOB = {"inputs": {"x": {"linspace": [-3.0, 3.0, 1000]}}, "graph": {"f": "sin(x) * cos(x)"},
           "outputs": ["f"], "settings": {"compile_cache": "off"}}


@pytest.fixture
def fresh_process(monkeypatch):
    """No kernel compiled and no points run in this process yet."""
    from gradsvc.engine import jax_backend
    from gradsvc.engine import plan
    monkeypatch.setattr(jax_backend, "_COMPILED", type(jax_backend._COMPILED)())
    monkeypatch.setattr(plan, "_POINTS_RUN", type(plan._POINTS_RUN)())


def test_a_small_fresh_job_gets_xla_sin_cos(fresh_process):
    """A fresh fast kernel compiles longer than its run saves on 1,000 points: the plan takes
    XLA's sin/cos, and says so; the numbers verify either way."""
    r = gradsvc.run(SIN_JOB)
    assert r.ok and r.timings["fast_math"] is False and r.timings["quick_compile"] is True


def test_a_job_past_the_quick_size_gets_an_optimised_kernel(fresh_process, monkeypatch):
    from gradsvc.engine import plan
    monkeypatch.setattr(plan, "QUICK_MAX_POINTS", 500)
    r = gradsvc.run(SIN_JOB)
    assert r.ok and (r.timings["fast_math"], r.timings["quick_compile"]) == (False, False)


def test_a_better_kernel_compiled_already_is_used(fresh_process, monkeypatch):
    """A fast kernel this process has compiled serves a small job too: its compile is paid."""
    from gradsvc.engine import plan
    monkeypatch.setattr(plan, "HOT_POINTS", 1)
    gradsvc.run(SIN_JOB)
    monkeypatch.setattr(plan, "HOT_POINTS", 10**9)
    again = gradsvc.run(SIN_JOB)
    assert (again.timings["fast_math"], again.timings["compiled_from"]) == (True, "this process")


def test_a_grid_big_enough_gets_fast_sin_cos(fresh_process, monkeypatch):
    from gradsvc.engine import plan
    monkeypatch.setattr(plan, "HOT_POINTS", 1000)
    assert gradsvc.run(SIN_JOB).timings["fast_math"] is True
    assert gradsvc.run(SIN_JOB, fast_math=False).timings["fast_math"] is False  # off is off


def test_a_hot_kernel_is_recompiled_with_fast_sin_cos(fresh_process, monkeypatch):
    """In a long-running process, once the XLA sin/cos kernel has computed enough points, the
    same job gets the fast kernel (tiering up, as a JIT compiler does)."""
    from gradsvc.engine import plan
    monkeypatch.setattr(plan, "HOT_POINTS", 2500)
    runs = [gradsvc.run(SIN_JOB) for _ in range(4)]
    assert [r.timings["fast_math"] for r in runs] == [False, False, True, True]
    assert [r.timings["compiled_from"] for r in runs] == [
        "compiled", "this process", "compiled", "this process"]
    np.testing.assert_allclose(runs[3].grads["f"]["x"], runs[0].grads["f"]["x"], rtol=1e-14,
                               atol=1e-15)


def test_a_fast_kernel_in_the_executable_cache_is_used(fresh_process, monkeypatch, tmp_path):
    """Compiling it was paid for already: a later process loads it, whatever the grid's size."""
    from gradsvc.engine import jax_backend
    from gradsvc.engine import plan
    job = {**SIN_JOB, "settings": {"compile_cache": str(tmp_path)}}
    monkeypatch.setattr(plan, "HOT_POINTS", 1)
    assert gradsvc.run(job).timings["fast_math"] is True
    monkeypatch.undo()
    monkeypatch.setattr(jax_backend, "_COMPILED", type(jax_backend._COMPILED)())  # as a new process would
    monkeypatch.setattr(plan, "_POINTS_RUN", type(plan._POINTS_RUN)())
    again = gradsvc.run(job)
    assert again.timings["fast_math"] is True
    assert again.timings["compiled_from"] == "executable cache"
