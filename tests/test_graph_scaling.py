"""Cost that grows with the graph: the structure of the kernels, never timings.

XLA's fusion counts sin and cos (its own, and the fast polynomials) as cheap and duplicates each
into every consumer fusion with the chain that made its argument; from
jaxrun.SIN_COS_BOUNDARY_FROM sin/cos nodes on, every sin/cos value goes through an exact division
by a runtime 1, which XLA never duplicates (benchmarks/README.md, "Cost against graph size").
"""
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from gradsvc.engine import jaxrun
from gradsvc.job.spec import job_from_dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import graph_size  # noqa: E402  (the benchmark's seeded random graphs)

POINTS = 64


def sin_cos_count(graph) -> int:
    return sum(op in ("sin", "cos") for _, op, _ in graph.nodes)


def kernel(n_nodes: int, fast: bool):
    """The jitted chunk function of the benchmark's random graph, and its arguments (no cache)."""
    job = job_from_dict(graph_size.job_dict(graph_size.random_graph(n_nodes), fast, POINTS))
    chunk = jaxrun.chunk_function(job.graph, job.grid, np.float64, (), fast, POINTS, [])
    axes = tuple(jaxrun.device_axes(job.grid, np.float64, POINTS))
    return jax.jit(chunk), (np.int64(0), axes)


def compiled_text(n_nodes: int, fast: bool) -> str:
    fn, args = kernel(n_nodes, fast)
    with jax.enable_x64(True):
        return fn.lower(*args).compile().as_text()


def lowered_text(n_nodes: int, fast: bool) -> str:
    fn, args = kernel(n_nodes, fast)
    with jax.enable_x64(True):
        return fn.lower(*args).as_text()


@pytest.mark.parametrize("fast", [True, False])
def test_a_big_graph_divides_each_sin_cos_value_by_a_runtime_one(fast):
    n = sin_cos_count(graph_size.random_graph(200))
    assert n >= jaxrun.SIN_COS_BOUNDARY_FROM  # the random graphs have no division of their own
    # one in the forward pass per node, one more in the backward pass where the output depends on it
    assert lowered_text(200, fast).count("stablehlo.divide") >= n


def test_a_small_graph_has_no_boundary():
    assert sin_cos_count(graph_size.random_graph(60)) < jaxrun.SIN_COS_BOUNDARY_FROM
    assert "stablehlo.divide" not in lowered_text(60, fast=True)


def test_xla_computes_each_sin_and_cos_about_once_in_a_big_graph():
    """Each sin node needs a sin (its value) and a cos (its derivative): about two per node. Without
    the boundaries XLA duplicated them into consumer fusions (4.6 per node on this graph, and
    ~8 sines alone per node on a 1,000-node one)."""
    n = sin_cos_count(graph_size.random_graph(200))
    text = compiled_text(200, fast=False)
    assert text.count(" sine(") + text.count(" cosine(") <= 3 * n


@pytest.mark.parametrize("fast", [True, False])
def test_the_boundaries_keep_the_results(fast, monkeypatch):
    """x / 1 is x, and so is its gradient: with fast math every result is bit for bit the same.
    XLA's own sin/cos round differently in the last bit once the fusions around them change
    (seen: 1.1e-15 relative), so those are compared to a few units in the last place."""
    fn, args = kernel(200, fast)
    with jax.enable_x64(True):
        bounded, _ = fn(*args)
    monkeypatch.setattr(jaxrun, "SIN_COS_BOUNDARY_FROM", 10**9)
    fn, args = kernel(200, fast)
    with jax.enable_x64(True):
        plain, _ = fn(*args)
    assert "divide" not in lowered_text(200, fast)
    assert len(bounded) == len(plain)
    for a, b in zip(bounded, plain):
        if fast:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        else:
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=0)


@pytest.mark.parametrize("n", [10, 300])
def test_random_graphs_are_seeded_and_finite(n):
    assert graph_size.random_graph(n, seed=3) == graph_size.random_graph(n, seed=3)
    graph = graph_size.random_graph(n)
    x = [np.linspace(0.5, 2.0, 7)] * len(graph_size.INPUTS)
    with jax.enable_x64(True):
        out = np.asarray(graph.evaluate(jax.numpy, *x))
    assert np.isfinite(out).all()
