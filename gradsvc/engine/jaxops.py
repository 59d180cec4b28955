"""JAX implementations of ops that are not one jax.numpy function: comparisons give 0 or 1 in the
arguments' dtype (so they can be multiplied), and `where` selects on a comparison's result.

Their gradients are JAX's own: a comparison passes nothing back (the edge is cut, not multiplied
by zero), and `where` passes the cotangent to the selected branch only, exact zeros elsewhere.

The 0/1 number goes through an optimization barrier: XLA otherwise rewrites `convert(a > b) * y`
into `select(a > b, y, 0)`, which gives 0 where IEEE arithmetic (and the reference) give
0 * inf = nan (found by the differential fuzz; tests/test_ops.py pins it).
"""
import jax
import jax.numpy as jnp


def _number(test, a, b):
    return jax.lax.optimization_barrier(test(a, b).astype(jnp.result_type(a, b)))


def greater(a, b):
    return _number(jnp.greater, a, b)


def greater_equal(a, b):
    return _number(jnp.greater_equal, a, b)


def less(a, b):
    return _number(jnp.less, a, b)


def less_equal(a, b):
    return _number(jnp.less_equal, a, b)


def where(condition, a, b):
    return jnp.where(condition != 0, a, b)
