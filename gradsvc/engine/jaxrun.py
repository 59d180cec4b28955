"""IR -> one jitted, vmapped JAX function giving every node's value and d(output)/d(wrt) per point.

JAX has no `retain_grad`: to differentiate an output with respect to an intermediate node, the
per-point function takes one extra zero argument per intermediate in `wrt`, adds it to that node's
value, and differentiates with respect to it. One reverse pass (`jax.grad`) per output gives its
gradients (XLA shares the forward pass between them); `jax.vmap` over points and `jax.jit` make it
one XLA computation per chunk of points. Chunks have a fixed size (the last is padded) so a job
compiles once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxlib import xla_client

from . import fastmath, kcache
from .jaxops import resolve
from .jacobians import derivative_shapes, jacobian_point_function, uses_jacobians
from ..errors import DeviceError
from ..job.grid import Grid
from ..core.ir import Graph
from ..core.ops import op_for

DTYPES = {"float32": np.float32, "float64": np.float64}


def _x64():
    """JAX's 64-bit mode for gradsvc's own tracing, compiling, copies and calls: float64 jobs need
    it (float32 jobs cast explicitly). Scoped to this thread and block, so the user's JAX keeps
    its own setting and their arrays their dtype."""
    return jax.enable_x64(True)


def jax_function(node) -> Callable:
    op = op_for(node.op, node.param)
    if not op.jax:  # the identity op
        return lambda x: x
    fn = resolve(op.jax)
    return partial(fn, **dict(op.jax_params)) if op.jax_params else fn


def point_function(graph: Graph, dtype, kept: tuple[str, ...], fast: bool) -> Callable:
    """f(one, *x) for one point: a runtime 1 (see sin_cos_boundaries), then one scalar per input,
    in grid order; returns (values, grads, flag).

    values: the `kept` nodes' values; grads: d output/d wrt for every (output, wrt) pair, output
    major; flag: whether a fast sin/cos saw an argument beyond its accurate range (the chunk is
    then recomputed with XLA's own). Both are tuples of scalars, not stacked arrays: vmapped, each
    becomes its own output array, and XLA computes each once in a multi-output fusion (stacking
    the gradients into one array made XLA CPU recompute the whole backward pass per element:
    benchmarks/README.md has the measurement).
    """
    bounded = sin_cos_boundaries(graph)
    perturbed = [n for n in graph.wrt if n in set(graph.named)]
    perturb_slot = {name: i for i, name in enumerate(perturbed)}
    input_slot = {name: i for i, name in enumerate(graph.inputs)}
    dtype_name = np.dtype(dtype).name
    steps = [(node.name, node.op, node.const, node.args, _implementation(node, fast))
             for node in graph.nodes]

    def evaluate(x, eps, one, output: int):
        env, flags = {}, []
        for name, op, const, args, fn in steps:
            if op == "input":
                value = x[input_slot[name]]  # x and eps are tuples of scalars: see per_point
            elif op == "const":
                value = jnp.asarray(const, dtype)
            else:
                arguments = [env[a] for a in args]
                if fast and op in FAST_OPS:
                    flags.append(fastmath.beyond_accurate_range(arguments[0], dtype_name))
                value = fn(*arguments)
                if bounded and op in FAST_OPS:
                    value = value / one  # exact: a fusion boundary, see sin_cos_boundaries
            if name in perturb_slot:
                value = value + eps[perturb_slot[name]]
            env[name] = value
        flag = jnp.any(jnp.stack(flags)) if flags else jnp.asarray(False)
        return env[graph.outputs[output]], (tuple(env[n] for n in kept), flag)

    def per_point(one, *x):
        # Tuples of scalars, not vectors: the gradient with respect to a vector element is a
        # scatter into a zero vector per use, which XLA CPU materialises (slower on every graph)
        eps = tuple(jnp.zeros((), dtype) for _ in perturbed)
        grads = []
        for k in range(len(graph.outputs)):
            # One gradient per output, not a vjp vmapped over one-hot cotangents: a zero cotangent
            # still multiplies the other outputs' partials (0 * inf = nan at sqrt(0)), while a
            # separate grad never visits them, like PyTorch's backward() on that output.
            (grad_x, grad_eps), (values, flag) = jax.grad(evaluate, argnums=(0, 1),
                                                          has_aux=True)(x, eps, one, k)
            grads += [grad_x[input_slot[w]] if w in input_slot else grad_eps[perturb_slot[w]]
                      for w in graph.wrt]
        return values, tuple(grads), flag

    return per_point


FAST_OPS = {"sin": fastmath.sin, "cos": fastmath.cos}

# From this many sin/cos nodes on, each sin/cos value is divided by a 1 that XLA cannot see is 1
# (benchmarks/README.md, "Cost against graph size", has the curve that set it).
SIN_COS_BOUNDARY_FROM = 32


def sin_cos_boundaries(graph: Graph) -> bool:
    """Whether each sin/cos value goes through an exact division by a runtime 1: the one place
    that decides it. XLA's fusion counts sin and cos (its own, and the fast polynomials, which are
    cheap ops) as cheap, so it duplicates each into every consumer fusion together with the cheap
    chain that made its argument, and in a big graph the same sines are computed again and again.
    A floating-point division is an op XLA counts as expensive and never duplicates: x / 1 is x
    (bit for bit, and so is its gradient), but the value is computed once. Small graphs are
    faster without it: the division costs more than the little duplication there."""
    return sum(1 for n in graph.nodes if n.op in FAST_OPS) >= SIN_COS_BOUNDARY_FROM


def uses_fast_ops(graph: Graph, fast: bool) -> bool:
    """Whether the kernel holds a fast sin/cos (else its beyond-range flag is always False); the
    Jacobian kernels (tensors, Hessians, forward mode) have XLA's own."""
    return fast and not uses_jacobians(graph) and any(n.op in FAST_OPS for n in graph.nodes)


def _implementation(node, fast: bool) -> Callable | None:
    if node.op in ("input", "const"):
        return None
    if fast and node.op in FAST_OPS:
        return FAST_OPS[node.op]
    return jax_function(node)


def chunk_function(graph: Graph, grid: Grid, dtype, kept: tuple[str, ...], fast: bool,
                   chunk_size: int, layout: list) -> Callable:
    """f(start, arrays) for the chunk of points start .. start + chunk_size - 1; `arrays` are the
    grid's axes, then its tensor inputs (see `device_arrays`).

    The coordinates are made on the device from the point index (product grids: digit j of the
    index in the mixed radix of the axis lengths, looked up in the axis; zip grids: a slice of the
    axis, padded on the host to whole chunks), so no coordinates cross from the host per chunk.
    Indices past the end repeat the last point (padding). Tensor inputs are the same at every
    point: they are not vmapped.

    Results that are the very same traced value (the seed's dz/da and dz/db are both c*d) are
    returned once: distinct outputs would make XLA copy one into a second buffer. `layout` is
    filled while tracing with, for each kept value, then gradient (then Hessian), the index of its
    array.
    """
    per_point = _per_point(graph, grid, dtype, kept, fast)
    lengths = [len(axis.values) for axis in grid.axes]
    strides = [int(np.prod(lengths[j + 1:])) for j in range(len(lengths))]
    last = grid.size - 1
    flagged = uses_fast_ops(graph, fast)
    n_axes = len(grid.axes)

    def chunk(start, arrays):
        axes, tensors = arrays[:n_axes], arrays[n_axes:]
        index = jnp.minimum(start + jnp.arange(chunk_size, dtype=jnp.int64), last)
        columns = []
        for axis, length, stride in zip(axes, lengths, strides):
            if length == 1:
                columns.append(jnp.broadcast_to(axis[0], (chunk_size,)))
            elif grid.mode == "zip":
                columns.append(jax.lax.dynamic_slice_in_dim(axis, start, chunk_size))
            else:
                columns.append(axis[(index // stride) % length])
        one = jnp.where(start >= 0, 1.0, 2.0).astype(dtype)  # always 1: start is never < 0
        in_axes = (None, *[0] * len(columns), *[None] * len(tensors))
        values, grads, flags = jax.vmap(per_point, in_axes=in_axes, axis_size=chunk_size)(
            one, *columns, *tensors)
        unique: list = []
        layout[:] = [_index_of(unique, result) for result in (*values, *grads)]
        # without fast sin/cos the flag is a constant that XLA would still copy out on every call
        return tuple(unique), (jnp.any(flags) if flagged else None)

    return chunk


def _per_point(graph: Graph, grid: Grid, dtype, kept: tuple[str, ...], fast: bool) -> Callable:
    """The per-point function: (one, *args) -> (values, derivatives, flag)."""
    if not uses_jacobians(graph):
        return point_function(graph, dtype, kept, fast)
    names = grid.names + tuple(grid.tensors)
    general = jacobian_point_function(graph, dtype, kept, names, lambda n: jax_function(n))

    def per_point(one, *args):
        values, jacobians, hessians, flag = general(one, *args)
        return values, jacobians + hessians, flag
    return per_point


def _index_of(unique: list, result) -> int:
    for i, seen in enumerate(unique):
        if seen is result:
            return i
    unique.append(result)
    return len(unique) - 1


@lru_cache(maxsize=None)
def _inline_cpu_device():
    """The CPU device of a client of our own that runs each call on the calling thread.

    JAX's default CPU client hands every execution to a worker thread and wakes the caller when it
    is done; the two wake-ups cost more than a small kernel's work. For a job of several chunks
    the hand-off pays: chunk k+1 computes while the host takes chunk k, so only one-chunk jobs run
    here (benchmarks/README.md has both measurements).
    Our own client leaves the user's JAX (and its default client) as it is.
    """
    return xla_client.make_cpu_client(asynchronous=False).devices()[0]


def get_device(kind: str, inline: bool = False):
    """The device of that kind; with `inline`, a CPU device that runs each call on the caller's
    thread (for jobs of one chunk: nothing to overlap, and no thread hand-off to pay)."""
    if kind == "cpu" and inline:
        return _inline_cpu_device()
    try:
        return jax.devices(kind)[0]
    except RuntimeError:
        have = sorted({d.platform for d in jax.devices()})
        raise DeviceError(f"no JAX {kind} device on this machine (have: {', '.join(have)})",
                          hint=f"install a JAX build with {kind} support, or use --device cpu") from None


@dataclass
class Compiled:
    """A job's compiled chunk function and how it was built."""
    call: Callable  # (start index, axes) -> (distinct result arrays, any argument beyond range)
    chunk_size: int
    dtype: str
    device: object
    compile_s: float
    fast: bool
    layout: tuple[int, ...]  # for each kept value, then each gradient: which returned array
    source: str  # "compiled", or "executable cache": loaded from disk, nothing traced
    n_grads: int
    fast_ops: bool  # whether any fast sin/cos is in the kernel (else its flag needs no reading)
    key: str  # its key in the executable cache
    fresh: bool  # compiled past every cache (ours and JAX's)
    exact: "Compiled | None" = None  # the same function with XLA's sin/cos, compiled on first need
    quick: bool = False  # compiled without LLVM's optimisation (QUICK_COMPILE)


def compile_graph(graph: Graph, grid: Grid, dtype: str, device: str, chunk_size: int,
                  kept: tuple[str, ...], fast: bool, fresh: bool = False,
                  quick: bool = False) -> Compiled:
    """Trace, lower and compile the chunk function for one job shape (ahead of time).

    With a cache folder, the finished executable is also kept there under a key of everything that
    shapes it: a later process skips tracing and lowering (which JAX's own cache cannot skip).
    `fresh`: nothing comes from a cache, ours or JAX's (for a kernel whose results failed
    verification, which may have come from a damaged entry); the new kernel replaces the entry.
    `quick`: compiled without LLVM's optimisation (see `plan`).
    """
    with _x64():
        return _compile_graph(graph, grid, dtype, device, chunk_size, kept, fast, fresh, quick)


# XLA's options for a quick compile: its graph optimisations (fusion) still run, LLVM's do not
QUICK_COMPILE = {"xla_backend_optimization_level": 0}
# XLA CPU's YNNPACK fusions take the elementwise products of small tensor products (tensor_ops)
# back into library calls made per point, as slow as the products were (benchmarks/README.md)
NO_LIBRARY_FUSIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compile_options(graph: Graph, platform: str, quick: bool) -> dict | None:
    """The XLA options a kernel of `graph` is compiled with: only gradsvc's own compiles get them."""
    options = dict(QUICK_COMPILE) if quick else {}
    if platform == "cpu" and graph.has_tensors:
        options.update(NO_LIBRARY_FUSIONS)
    return options or None


def _compile_graph(graph: Graph, grid: Grid, dtype: str, device: str, chunk_size: int,
                   kept: tuple[str, ...], fast: bool, fresh: bool, quick: bool) -> Compiled:
    fresh = fresh or kcache.cache_folder() is None  # no cache to come from: fresh all the same
    np_dtype = DTYPES[dtype]
    dev = get_device(device, inline=grid.size <= chunk_size)
    start = time.perf_counter()
    key = kcache.executable_key(graph, grid, dtype, dev, chunk_size, kept, fast, quick)
    n_grads = len(derivative_shapes(graph))
    n_arrays = len(grid.axes) + len(grid.tensors)
    fast_ops = uses_fast_ops(graph, fast)
    loaded = None if fresh else kcache.load_executable(key, dev, n_arrays, fast_ops,
                                                       len(kept) + n_grads)
    if loaded is not None:
        executable, layout = loaded
        return Compiled(executable, chunk_size, dtype, dev, time.perf_counter() - start, fast,
                        layout, "executable cache", n_grads, fast_ops, key, fresh, quick=quick)
    traced_layout: list = []
    axes = device_axes(grid, np_dtype, chunk_size)
    sharding = jax.sharding.SingleDeviceSharding(dev)
    specs = (jax.ShapeDtypeStruct((), np.int64, sharding=sharding),
             tuple(jax.ShapeDtypeStruct(a.shape, np_dtype, sharding=sharding) for a in axes))

    def build(jax_cache: bool):
        with kcache.jax_compile_cache(jax_cache):
            fn = jax.jit(chunk_function(graph, grid, np_dtype, kept, fast, chunk_size,
                                        traced_layout))
            return fn.lower(*specs).compile(
                compiler_options=compile_options(graph, dev.platform, quick))
    try:
        executable = build(jax_cache=not fresh)
    except Exception:
        if fresh:
            raise
        executable = build(jax_cache=False)  # an entry of JAX's cache it could not use
    layout = tuple(traced_layout)
    probe = (np.int64(0), tuple(jax.device_put(a, dev) for a in axes))
    stored = kcache.store_executable(key, executable, dev, probe, n_arrays, layout, fast_ops)
    if not stored and not fresh:
        # JAX's own cache served this compile, and such an executable does not serialize whole:
        # compile once more past that cache, so that later processes load ours and skip tracing
        executable = build(jax_cache=False)
        kcache.store_executable(key, executable, dev, probe, n_arrays, layout, fast_ops)
    return Compiled(executable, chunk_size, dtype, dev, time.perf_counter() - start, fast, layout,
                    "compiled", n_grads, fast_ops, key, fresh, quick=quick)


def device_axes(grid: Grid, np_dtype, chunk_size: int) -> list[np.ndarray]:
    """The arrays the chunk function takes: the axes (zip axes padded with their last value to
    whole chunks, so every chunk is a plain slice; product axes as they are), then the tensor
    inputs, in the job's dtype."""
    out = []
    for axis in grid.axes:
        values = axis.values.astype(np_dtype)
        if grid.mode == "zip" and len(values) > 1:
            padded = -(-len(values) // chunk_size) * chunk_size
            values = np.concatenate([values, np.repeat(values[-1:], padded - len(values))])
        out.append(values)
    return out + [tensor.astype(np_dtype) for tensor in grid.tensors.values()]


_AXES_ON_DEVICE: dict = {}  # (grid, dtype, chunk, device) -> device arrays, for repeated runs


def _axes_on_device(compiled: Compiled, grid: Grid) -> tuple:
    key = (id(grid), compiled.dtype, compiled.chunk_size, id(compiled.device))
    cached = _AXES_ON_DEVICE.get(key)
    if cached is None or cached[0] is not grid:
        arrays = tuple(jax.device_put(a, compiled.device)
                       for a in device_axes(grid, DTYPES[compiled.dtype], compiled.chunk_size))
        # the first chunk's start, already on the device: a one-chunk job then copies nothing in
        zero = jax.device_put(np.int64(0), compiled.device)
        if len(_AXES_ON_DEVICE) > 8:
            _AXES_ON_DEVICE.clear()
        cached = _AXES_ON_DEVICE[key] = (grid, arrays, zero)
    return cached[1], cached[2]


def run_chunks(compiled: Compiled, grid: Grid, on_chunk: Callable, recompile_exact: Callable
               ) -> int:
    """Evaluate every point chunk by chunk, calling on_chunk(start, stop, values, grads) with one
    array per kept node and one per (output, wrt) pair.

    Chunk k+1 is dispatched before chunk k's results are handed over, so the host writes results
    while the device computes. A chunk whose fast sin/cos saw an argument beyond its accurate range
    is recomputed with XLA's own (`recompile_exact()` builds that function once). Returns how many
    chunks were recomputed.
    """
    with _x64():
        return _run_chunks(compiled, grid, on_chunk, recompile_exact)


def _run_chunks(compiled: Compiled, grid: Grid, on_chunk: Callable, recompile_exact: Callable
                ) -> int:
    axes, zero = _axes_on_device(compiled, grid)
    n, recomputed, pending = compiled.chunk_size, 0, None
    for start, stop in grid.chunks(n):
        dispatched = (start, stop, compiled.call(np.int64(start) if start else zero, axes))
        if pending is not None:
            recomputed += _deliver(pending, on_chunk, compiled, axes, recompile_exact)
        pending = dispatched
    if pending is not None:
        recomputed += _deliver(pending, on_chunk, compiled, axes, recompile_exact)
    return recomputed


def _deliver(pending, on_chunk, compiled: Compiled, axes, recompile_exact) -> int:
    start, stop, (arrays, beyond) = pending
    redo = compiled.fast_ops and bool(beyond)  # without fast sin/cos there is no flag (None)
    layout = compiled.layout
    if redo:
        if compiled.exact is None:
            compiled.exact = recompile_exact()
        arrays, _ = compiled.exact.call(np.int64(start), axes)
        layout = compiled.exact.layout
    count = stop - start
    host = [np.asarray(a)[:count] for a in arrays]
    results = [host[i] for i in layout]  # a shared result is one array, named twice
    n_values = len(results) - compiled.n_grads
    on_chunk(start, stop, results[:n_values], results[n_values:])
    return int(redo)
