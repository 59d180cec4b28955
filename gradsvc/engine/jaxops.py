"""JAX implementations of ops that are not one jax.numpy function, named by the op tables
(`core.ops`, `core.tensor_ops`): comparisons give 0 or 1 in the arguments' dtype (so they can be
multiplied), `where` selects on a comparison's result, and each tensor op is f(args, param).

Their gradients are JAX's own: a comparison passes nothing back (the edge is cut, not multiplied
by zero), and `where` passes the cotangent to the selected branch only, exact zeros elsewhere.

The 0/1 number goes through an optimization barrier: XLA otherwise rewrites `convert(a > b) * y`
into `select(a > b, y, 0)`, which gives 0 where IEEE arithmetic (and the reference) give
0 * inf = nan (found by the differential fuzz; tests/test_ops.py pins it).
"""
import importlib
from functools import lru_cache
from typing import Callable

import jax
import jax.numpy as jnp


@lru_cache(maxsize=None)
def resolve(dotted: str) -> Callable:
    """The function an op table names ("jax.numpy.sin", "gradsvc.engine.jaxops.products")."""
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


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


# --- tensor ops: f(args, param), param as the parser set it (core.tensor_ops) ---

SMALL_PRODUCT = 16  # operands no longer than this along every axis are multiplied elementwise


def products(args, param):
    """a @ b. Small operands as products summed: vmapped over points, XLA's CPU backend runs one
    tiny matrix product per point, several times slower than the same sums written elementwise
    (benchmarks/README.md, "Tensor workloads"). Big ones at full precision: a GPU's default
    float32 matmul rounds its inputs to TF32 (10-bit mantissas), far outside the rounding bounds
    of float32 arithmetic."""
    a, b = args
    if max(a.shape + b.shape) > SMALL_PRODUCT:
        return jnp.matmul(a, b, precision="highest")
    rows = a if a.ndim == 2 else a[None, :]  # (m, k)
    columns = b if b.ndim == 2 else b[:, None]  # (k, n)
    out = (rows[:, :, None] * columns[None, :, :]).sum(axis=1)
    if a.ndim == 1:
        out = out[0]
    return out[..., 0] if b.ndim == 1 else out


def transpose(args, param):
    return jnp.transpose(args[0])


def reshape(args, param):
    return jnp.reshape(args[0], param)


def stack(args, param):
    return jnp.stack(args)


def concat(args, param):
    return jnp.concatenate(args)


def index(args, param):
    return args[0][_subscript(param, args[0].shape)]


def _subscript(param: tuple, shape: tuple) -> tuple:
    """The subscript for JAX, each slice as the elements it selects (the shape rule refuses empty
    ones): JAX's own slicing overflowed on bounds near the int64 limit (`v[::2**63 - 1]` gave an
    empty sum where numpy and the reference pick v[0])."""
    items = []
    for item, n in zip(param, shape):
        if isinstance(item, int):
            items.append(item)
            continue
        picked = range(*slice(*item[1:]).indices(n))
        if len(picked) == 1:
            items.append(slice(picked[0], picked[0] + 1))
            continue
        stop = picked[-1] + (1 if picked.step > 0 else -1)
        items.append(slice(picked.start, stop if stop >= 0 else None, picked.step))
    return tuple(items)


def sum(args, param):  # noqa: A001 (the op's name)
    return jnp.sum(args[0], axis=param)


def mean(args, param):
    return jnp.mean(args[0], axis=param)


def prod(args, param):
    return jnp.prod(args[0], axis=param)


def amax(args, param):
    return jnp.max(args[0], axis=param)


def amin(args, param):
    return jnp.min(args[0], axis=param)


def cumsum(args, param):
    return jnp.cumsum(args[0], axis=-1 if param is None else param)


def trapz(args, param):
    return jnp.trapezoid(args[0], args[1], axis=-1)
