"""The Python API: gradsvc.run from paths, text, dicts; results as numpy arrays."""
import numpy as np
import pytest

import gradsvc
from gradsvc.errors import LimitError, UsageError

TEXT = "inputs: {a: [1.0, 2.0], b: 3.0}\ngraph: {x: a * b, z: x + a}\noutputs: [z]\n"


def test_run_from_text_dict_and_path_agree(write_job):
    from_text = gradsvc.run(TEXT)
    from_path = gradsvc.run(write_job(TEXT))
    from_dict = gradsvc.run({"inputs": {"a": [1.0, 2.0], "b": 3.0},
                             "graph": {"x": "a * b", "z": "x + a"}, "outputs": ["z"]})
    for r in (from_text, from_path, from_dict):
        assert r.ok and r.points == 2
        np.testing.assert_array_equal(r.values["z"], [4.0, 8.0])
        np.testing.assert_array_equal(r.grads["z"]["a"], [4.0, 4.0])  # b + 1
        np.testing.assert_array_equal(r.grads["z"]["b"], [1.0, 2.0])  # a


def test_gradients_that_are_one_value_share_one_array():
    """dz/da and dz/db of z = (a+b)*(c*d) are both c*d: computed and stored once."""
    r = gradsvc.run("jobs/seed_sum_product.yaml")
    assert r.grads["z"]["a"] is r.grads["z"]["b"] and float(r.grads["z"]["a"][0]) == 20.0
    assert r.grads["z"]["a"] is not r.grads["z"]["d"]


def test_point_and_shape():
    r = gradsvc.run("jobs/rosenbrock_grid.yaml")
    assert r.shape == (41, 31)
    p = r.point(31)
    assert p["values"]["x"] == pytest.approx(-1.9) and p["values"]["y"] == pytest.approx(-1.0)
    assert set(p["grads"]["f"]) == {"x", "y", "valley", "f"}


def test_settings_as_keyword_arguments():
    r = gradsvc.run(TEXT, dtype="float32", verify_points=1, fd_points=0)
    assert r.dtype == "float32" and r.values["z"].dtype == np.float32
    assert r.verify.sampled and r.verify.checked_points == 1  # the cap, even under min_points


def test_not_a_job_is_a_usage_error():
    with pytest.raises(UsageError):
        gradsvc.run(42)


def test_results_too_big_for_memory_point_to_batch(monkeypatch):
    from gradsvc import limits
    monkeypatch.setattr(limits, "MAX_RESULT_BYTES", 100)
    with pytest.raises(LimitError, match="gradsvc batch"):
        gradsvc.run(TEXT)


def test_compiled_kernels_kept_per_process_are_bounded(monkeypatch):
    """Each compiled kernel holds memory mappings; a fuzz campaign of thousands of distinct graphs
    in one process hit the kernel's 65,530-mapping limit and XLA crashed. The cache is an LRU of
    MAX_COMPILED_KERNELS; an evicted graph compiles again (or loads from disk) with equal results."""
    from gradsvc import limits
    from gradsvc.engine import jax_backend
    monkeypatch.setattr(limits, "MAX_COMPILED_KERNELS", 3)
    monkeypatch.setattr(jax_backend, "_COMPILED", type(jax_backend._COMPILED)())

    def job(k: int) -> dict:
        return {"inputs": {"x": [0.5, 1.5]}, "graph": {"z": f"sin(x) * x ** {k + 2}"},
                "outputs": ["z"], "settings": {"compile_cache": "off"}}
    first = gradsvc.run(job(0)).grads["z"]["x"].copy()
    maps_before = len(open("/proc/self/maps").read().splitlines())
    for k in range(1, 30):
        gradsvc.run(job(k))
    assert len(jax_backend._COMPILED) == 3
    assert len(open("/proc/self/maps").read().splitlines()) - maps_before < 29 * 10
    again = gradsvc.run(job(0))
    assert again.timings["compiled_from"] != "this process"
    assert (again.grads["z"]["x"] == first).all()


def test_one_chunk_jobs_run_inline_on_a_client_of_their_own():
    """A job of one chunk runs on gradsvc's own CPU client, which executes each call on the
    calling thread (no hand-off to a worker: 2-3x faster at 1e4 points); a job of several chunks
    runs on JAX's default client, so that the next chunk computes while the host takes the last.
    The user's JAX keeps its default client, and the numbers are the same bit for bit."""
    import jax

    from gradsvc.engine.jax_backend import JAX
    from gradsvc.engine.plan import plan_run, result_layout
    from gradsvc.job.spec import as_job
    text = ("inputs: {x: {linspace: [-3, 3, 1000]}, y: 0.7}\n"
            "graph: {u: sin(x) * exp(-y * x), z: u * u + tanh(x + y)}\noutputs: [z]\n")
    whole, chunked = as_job(text, {}, None), as_job(text, {"chunk_size": 256}, None)
    one = JAX.kernel(plan_run(whole, result_layout(whole), whole=True))[0]
    several = JAX.kernel(plan_run(chunked, result_layout(chunked), whole=True))[0]
    default = jax.devices("cpu")[0].client
    assert one.device.client is not default and several.device.client is default
    assert jax.numpy.zeros(3).devices() == {jax.devices("cpu")[0]}
    a, b = gradsvc.run(whole), gradsvc.run(chunked)
    for out in ("u", "z"):
        np.testing.assert_array_equal(a.values[out], b.values[out])
    for name in ("x", "y", "u"):
        np.testing.assert_array_equal(a.grads["z"][name], b.grads["z"][name])


def test_runs_in_several_threads_at_once_each_get_their_own_numbers():
    """A service runs jobs in threads: the kernel, job and check caches, the plan's counts and
    gradsvc's scoped JAX settings are shared, and every run still gets its own, right numbers."""
    from concurrent.futures import ThreadPoolExecutor

    def job(k: int) -> str:
        return (f"inputs: {{x: {{linspace: [-2, 2, {50 + k % 3}]}}, y: {k}.5}}\n"
                "graph: {u: sin(x) * y, z: u * x}\noutputs: [z]\nsettings: {compile_cache: off}\n")

    def run(k: int) -> bool:
        r = gradsvc.run(job(k))
        x = r.values["x"]
        expected = (k + 0.5) * (np.cos(x) * x + np.sin(x))  # dz/dx of y*x*sin(x)
        return r.ok and np.allclose(r.grads["z"]["x"], expected, rtol=1e-12, atol=1e-12)
    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(run, range(24)))
