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
    grid's held axes, then its tensor inputs (see `device_axes`).

    The coordinates are made on the device from the point index (product grids: digit j of the
    index in the mixed radix of the axis lengths, looked up in the axis; zip grids: a slice of the
    axis, padded on the host to whole chunks; a zip grid's random input: its sample at the index,
    generated here, so nothing of it is held or copied), so no coordinates cross from the host
    per chunk. Indices past the end repeat the last point (padding). Tensor inputs are the same
    at every point: they are not vmapped.

    Results that are the very same traced value (the seed's dz/da and dz/db are both c*d) are
    returned once: distinct outputs would make XLA copy one into a second buffer. `layout` is
    filled while tracing with, for each kept value, then gradient (then Hessian), the index of its
    array.
    """
    per_point = _per_point(graph, grid, dtype, kept, fast)
    lengths = [len(axis) for axis in grid.axes]
    strides = [int(np.prod(lengths[j + 1:])) for j in range(len(lengths))]
    last = grid.size - 1
    flagged = uses_fast_ops(graph, fast)
    n_held = len(grid.held_axes)

    def chunk(start, arrays):
        held, tensors = iter(arrays[:n_held]), arrays[n_held:]
        index = jnp.minimum(start + jnp.arange(chunk_size, dtype=jnp.int64), last)
        columns = []
        for axis, length, stride in zip(grid.axes, lengths, strides):
            if axis.held is None:  # made from the index, in float64 (as the host makes it)
                columns.append(axis.sample.traced(index).astype(dtype))
            elif length == 1:
                columns.append(jnp.broadcast_to(next(held)[0], (chunk_size,)))
            elif grid.mode == "zip":
                columns.append(jax.lax.dynamic_slice_in_dim(next(held), start, chunk_size))
            else:
                columns.append(next(held)[(index // stride) % length])
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
    return _devices_of(kind)[0]


def _devices_of(kind: str) -> list:
    try:
        return jax.devices(kind)
    except RuntimeError:
        have = sorted({d.platform for d in jax.devices()})
        raise DeviceError(f"no JAX {kind} device on this machine (have: {', '.join(have)})",
                          hint=f"install a JAX build with {kind} support, or use --device cpu") from None


def device_count(kind: str, wanted) -> int:
    """How many local devices of `kind` a job's chunks are sharded over: the setting `devices`
    (a count, or "all"). One device asks nothing of JAX."""
    if wanted == 1:
        return 1
    have = len(_devices_of(kind))
    if wanted == "all":
        return have
    if wanted > have:
        more = (" (on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N set before gradsvc "
                "starts makes N host devices)") if kind == "cpu" else ""
        raise DeviceError(f"devices: {wanted} needs {wanted} {kind} devices; this machine has "
                          f"{have}",
                          hint=f"use --devices all, or a count up to {have}{more}")
    return wanted


@dataclass(frozen=True)
class Placement:
    """Where a kernel runs: one device, or a 1-D mesh of devices along the points."""
    device: object  # the (first) device
    inputs: object  # the inputs' sharding: on the device, or replicated over the mesh
    mesh: object | None  # None: one device


def placement(kind: str, count: int, inline: bool = False) -> Placement:
    """`count` devices of `kind`; one device may be the inline CPU one (see `get_device`)."""
    if count == 1:
        dev = get_device(kind, inline)
        return Placement(dev, jax.sharding.SingleDeviceSharding(dev), None)
    mesh = jax.sharding.Mesh(np.array(_devices_of(kind)[:count]), ("points",))
    return Placement(mesh.devices.flat[0],
                     jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), mesh)


def on_every_device(chunk: Callable, mesh, share: int) -> Callable:
    """A chunk function of `share` points run on every device of `mesh` at once, device k on
    the points from start + k * share: f(start, arrays) -> (results split along the devices,
    one range flag per device or None). Each device runs one device's program, on the points
    that one device's chunk there would hold (see plan.per_device_chunk): the same numbers."""
    spec = jax.sharding.PartitionSpec

    def chunk_on_device(start, arrays):
        results, flag = chunk(start + jax.lax.axis_index("points") * share, arrays)
        return results, (None if flag is None else flag[None])
    # check_vma off: a device's program is one device's, whose gradients with respect to values
    # the same on every device (the per-point zeros of intermediates) stay its own, not summed
    # over the devices as a replicated value's must be
    return jax.shard_map(chunk_on_device, mesh=mesh, in_specs=(spec(), spec()),
                         out_specs=(spec("points"), spec("points")), check_vma=False)


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
    inputs_at: object  # the sharding its inputs take (one device, or replicated over a mesh)
    devices: int  # how many devices each chunk's points are sharded over
    exact: "Compiled | None" = None  # the same function with XLA's sin/cos, compiled on first need
    quick: bool = False  # compiled without LLVM's optimisation (QUICK_COMPILE)


def compile_graph(graph: Graph, grid: Grid, dtype: str, device: str, chunk_size: int,
                  kept: tuple[str, ...], fast: bool, fresh: bool = False,
                  quick: bool = False, devices: int = 1) -> Compiled:
    """Trace, lower and compile the chunk function for one job shape (ahead of time).

    With a cache folder, the finished executable is also kept there under a key of everything that
    shapes it: a later process skips tracing and lowering (which JAX's own cache cannot skip).
    `fresh`: nothing comes from a cache, ours or JAX's (for a kernel whose results failed
    verification, which may have come from a damaged entry); the new kernel replaces the entry.
    `quick`: compiled without LLVM's optimisation (see `plan`). `devices`: each chunk's points
    are sharded over this many local devices of the `device` kind (`chunk_size` a multiple of
    it); such a kernel comes from JAX's compile cache only, since gradsvc's executable cache
    loads an entry onto one device.
    """
    with _x64():
        return _compile_graph(graph, grid, dtype, device, chunk_size, kept, fast, fresh, quick,
                              devices)


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
                   kept: tuple[str, ...], fast: bool, fresh: bool, quick: bool,
                   devices: int) -> Compiled:
    fresh = fresh or kcache.cache_folder() is None  # no cache to come from: fresh all the same
    place = placement(device, devices, inline=devices == 1 and grid.size <= chunk_size)
    start = time.perf_counter()
    key = kcache.executable_key(graph, grid, dtype, place.device, chunk_size, kept, fast, quick,
                                devices)
    n_grads = len(derivative_shapes(graph))
    fast_ops = uses_fast_ops(graph, fast)
    made = partial(Compiled, chunk_size=chunk_size, dtype=dtype, device=place.device, fast=fast,
                   n_grads=n_grads, fast_ops=fast_ops, key=key, fresh=fresh,
                   inputs_at=place.inputs, devices=devices, quick=quick)
    on_disk = devices == 1  # see compile_graph
    n_arrays = len(grid.held_axes) + len(grid.tensors)
    loaded = None if fresh or not on_disk else kcache.load_executable(
        key, place.device, n_arrays, fast_ops, len(kept) + n_grads)
    if loaded is not None:
        return made(call=loaded[0], layout=loaded[1], source="executable cache",
                    compile_s=time.perf_counter() - start)
    build, traced_layout, axes = _builder(graph, grid, DTYPES[dtype], kept, fast, chunk_size,
                                          quick, place)
    try:
        executable = build(jax_cache=not fresh)
    except Exception:
        if fresh:
            raise
        executable = build(jax_cache=False)  # an entry of JAX's cache it could not use
    layout = tuple(traced_layout)
    if on_disk:
        executable = _keep_on_disk(key, executable, build, place.device, axes, layout, fast_ops,
                                   fresh)
    return made(call=executable, layout=layout, source="compiled",
                compile_s=time.perf_counter() - start)


def _builder(graph: Graph, grid: Grid, np_dtype, kept: tuple[str, ...], fast: bool,
             chunk_size: int, quick: bool, place: Placement):
    """build(jax_cache) -> the compiled chunk function; the layout list tracing fills; the input
    arrays it takes (as `device_axes` makes them)."""
    traced_layout: list = []
    axes = device_axes(grid, np_dtype, chunk_size)
    specs = (jax.ShapeDtypeStruct((), np.int64, sharding=place.inputs),
             tuple(jax.ShapeDtypeStruct(a.shape, np_dtype, sharding=place.inputs) for a in axes))
    devices = 1 if place.mesh is None else place.mesh.size

    def build(jax_cache: bool):
        with kcache.jax_compile_cache(jax_cache):
            fn = chunk_function(graph, grid, np_dtype, kept, fast, chunk_size // devices,
                                traced_layout)
            if place.mesh is not None:
                fn = on_every_device(fn, place.mesh, chunk_size // devices)
            return jax.jit(fn).lower(*specs).compile(
                compiler_options=compile_options(graph, place.device.platform, quick))
    return build, traced_layout, axes


def _keep_on_disk(key: str, executable, build: Callable, dev, axes: list, layout: tuple,
                  fast_ops: bool, fresh: bool):
    """Store the executable in gradsvc's cache; returns the executable to run (compiled again
    past JAX's cache when the one it served would not serialize)."""
    probe = (np.int64(0), tuple(jax.device_put(a, dev) for a in axes))
    stored = kcache.store_executable(key, executable, dev, probe, len(axes), layout, fast_ops)
    if not stored and not fresh:
        # JAX's own cache served this compile, and such an executable does not serialize whole:
        # compile once more past that cache, so that later processes load ours and skip tracing
        executable = build(jax_cache=False)
        kcache.store_executable(key, executable, dev, probe, len(axes), layout, fast_ops)
    return executable


def device_axes(grid: Grid, np_dtype, chunk_size: int) -> list[np.ndarray]:
    """The arrays the chunk function takes: the held axes (zip axes padded with their last value
    to whole chunks, so every chunk is a plain slice; product axes as they are; a zip grid's
    random inputs are made in the kernel), then the tensor inputs, in the job's dtype."""
    out = []
    for axis in grid.held_axes:
        values = axis.held.astype(np_dtype)
        if grid.mode == "zip" and len(values) > 1:
            padded = -(-len(values) // chunk_size) * chunk_size
            values = np.concatenate([values, np.repeat(values[-1:], padded - len(values))])
        out.append(values)
    return out + [tensor.astype(np_dtype) for tensor in grid.tensors.values()]


_AXES_ON_DEVICE: dict = {}  # (grid, dtype, chunk, sharding) -> device arrays, for repeated runs


def _axes_on_device(compiled: Compiled, grid: Grid) -> tuple:
    # the inputs' sharding names the device (or every device of a mesh) the arrays live on
    key = (id(grid), compiled.dtype, compiled.chunk_size, compiled.inputs_at)
    cached = _AXES_ON_DEVICE.get(key)
    if cached is None or cached[0] is not grid:
        arrays = tuple(jax.device_put(a, compiled.inputs_at)
                       for a in device_axes(grid, DTYPES[compiled.dtype], compiled.chunk_size))
        # the first chunk's start, already on the device: a one-chunk job then copies nothing in
        zero = jax.device_put(np.int64(0), compiled.inputs_at)
        if len(_AXES_ON_DEVICE) > 8:
            _AXES_ON_DEVICE.clear()
        cached = _AXES_ON_DEVICE[key] = (grid, arrays, zero)
    return cached[1], cached[2]


def run_chunks(compiled: Compiled, grid: Grid, on_chunk: Callable, recompile_exact: Callable,
               ranges=None) -> int:
    """Evaluate every point chunk by chunk, calling on_chunk(start, stop, values, grads) with one
    array per kept node and one per (output, wrt) pair.

    Chunk k+1 is dispatched before chunk k's results are handed over, so the host writes results
    while the device computes. A chunk whose fast sin/cos saw an argument beyond its accurate range
    is recomputed with XLA's own (`recompile_exact()` builds that function once); on several
    devices, only the shares of the devices that saw one. `ranges`: only these (start, stop) point
    ranges, each at most a chunk long (default: the whole grid). Returns how many chunks (one
    device's) were recomputed.
    """
    with _x64():
        return _run_chunks(compiled, grid, on_chunk, recompile_exact, ranges)


def _run_chunks(compiled: Compiled, grid: Grid, on_chunk: Callable, recompile_exact: Callable,
                ranges=None) -> int:
    axes, zero = _axes_on_device(compiled, grid)
    n, recomputed, pending = compiled.chunk_size, 0, None
    for start, stop in (grid.chunks(n) if ranges is None else ranges):
        dispatched = (start, stop, compiled.call(np.int64(start) if start else zero, axes))
        if pending is not None:
            recomputed += _deliver(pending, on_chunk, compiled, axes, recompile_exact)
        pending = dispatched
    if pending is not None:
        recomputed += _deliver(pending, on_chunk, compiled, axes, recompile_exact)
    return recomputed


def _deliver(pending, on_chunk, compiled: Compiled, axes, recompile_exact) -> int:
    """Hand a computed chunk on; the shares of it (one per device) whose fast sin/cos saw an
    argument beyond its accurate range are taken from XLA's own. Returns how many shares."""
    start, stop, (arrays, beyond) = pending
    count = stop - start
    # without fast sin/cos there is no flag (None); with it, one per device
    redo = np.atleast_1d(np.asarray(beyond)) if compiled.fast_ops else np.zeros(1, bool)
    share = compiled.chunk_size // len(redo)
    redo = redo[:-(-count // share)]  # the shares of padding only are never handed on
    if not redo.any():
        results = _results(compiled, arrays, count)
    else:
        if compiled.exact is None:
            compiled.exact = recompile_exact()
        results = _results(compiled.exact, compiled.exact.call(np.int64(start), axes)[0], count)
        if not redo.all():
            results = _shares_from(_results(compiled, arrays, count), results, redo, share)
    n_values = len(results) - compiled.n_grads
    on_chunk(start, stop, results[:n_values], results[n_values:])
    return int(redo.sum())


def _results(compiled: Compiled, arrays, count: int) -> list[np.ndarray]:
    host = [_on_host(a, count, compiled.devices) for a in arrays]
    return [host[i] for i in compiled.layout]  # a shared result is one array, named twice


def _shares_from(results: list, exact: list, redo: np.ndarray, share: int) -> list:
    """`results` with the shares that `redo` marks taken from `exact`."""
    merged = [np.array(r) for r in results]
    for k in np.flatnonzero(redo):
        for into, source in zip(merged, exact):
            into[k * share:(k + 1) * share] = source[k * share:(k + 1) * share]
    return merged


def _on_host(array, count: int, devices: int) -> np.ndarray:
    """A result's first `count` points (the rest is padding) as a host array: one device's a
    view where it can be (CPU), a sharded one copied shard by shard into one array (shards of
    padding only are not copied at all)."""
    if devices == 1:
        return np.asarray(array)[:count]
    shards = [(s.index[0].start or 0, s.data) for s in array.addressable_shards]
    shards = [(lo, data) for lo, data in shards if lo < count]
    for _, data in shards:
        data.copy_to_host_async()  # every device's copy at once (a GPU's), then one by one
    out = np.empty((count, *array.shape[1:]), array.dtype)
    for lo, data in shards:
        hi = min(lo + data.shape[0], count)
        out[lo:hi] = np.asarray(data)[:hi - lo]
    return out
