"""IR -> one jitted, vmapped JAX function giving every node's value and d(output)/d(wrt) per point.

JAX has no `retain_grad`: to differentiate an output with respect to an intermediate node, the
per-point function takes one extra zero argument per intermediate in `wrt`, adds it to that node's
value, and differentiates with respect to it. One reverse pass (`jax.grad`) per output gives its
gradients (XLA shares the forward pass between them); `jax.vmap` over points and `jax.jit` make it
one XLA computation per chunk of points. Chunks have a fixed size (the last is padded) so a job
compiles once.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import time
from pathlib import Path
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import serialize_executable

from .errors import DeviceError
from .ir import Graph
from .ops import op_for

jax.config.update("jax_enable_x64", True)  # float64 jobs need it; float32 jobs cast explicitly

DTYPES = {"float32": np.float32, "float64": np.float64}


@lru_cache(maxsize=None)
def _resolve(dotted: str) -> Callable:
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def jax_function(node) -> Callable:
    op = op_for(node.op, node.param)
    if not op.jax:  # the identity op
        return lambda x: x
    fn = _resolve(op.jax)
    return partial(fn, **dict(op.jax_params)) if op.jax_params else fn


def point_function(graph: Graph, dtype) -> Callable:
    """f(x) for one point: x holds the inputs in grid order; returns (values, grads).

    values: every visible name (inputs, then named nodes); grads: (n_outputs, n_wrt).
    """
    visible = graph.visible
    perturbed = [n for n in graph.wrt if n in set(graph.named)]
    perturb_slot = {name: i for i, name in enumerate(perturbed)}
    input_slot = {name: i for i, name in enumerate(graph.inputs)}
    steps = [(node.name, node.op, node.const, node.args,
              None if node.op in ("input", "const") else jax_function(node)) for node in graph.nodes]

    def evaluate(x, eps, output: int):
        env = {}
        for name, op, const, args, fn in steps:
            if op == "input":
                value = x[input_slot[name]]
            elif op == "const":
                value = jnp.asarray(const, dtype)
            else:
                value = fn(*(env[a] for a in args))
            if name in perturb_slot:
                value = value + eps[perturb_slot[name]]
            env[name] = value
        return env[graph.outputs[output]], jnp.stack([env[n] for n in visible])

    def per_point(x):
        eps = jnp.zeros((len(perturbed),), dtype)
        rows = []
        for k in range(len(graph.outputs)):
            # One gradient per output, not a vjp vmapped over one-hot cotangents: a zero cotangent
            # still multiplies the other outputs' partials (0 * inf = nan at sqrt(0)), while a
            # separate grad never visits them, like PyTorch's backward() on that output.
            (grad_x, grad_eps), values = jax.grad(evaluate, argnums=(0, 1), has_aux=True)(x, eps, k)
            rows.append([grad_x[input_slot[w]] if w in input_slot else grad_eps[perturb_slot[w]]
                         for w in graph.wrt])
        grads = jnp.array(rows, dtype) if graph.wrt else jnp.zeros((len(graph.outputs), 0), dtype)
        return values, grads

    return per_point


def get_device(kind: str):
    try:
        return jax.devices(kind)[0]
    except RuntimeError:
        have = sorted({d.platform for d in jax.devices()})
        raise DeviceError(f"no JAX {kind} device on this machine (have: {', '.join(have)})",
                          hint=f"install a JAX build with {kind} support, or use --device cpu") from None


@dataclass
class Compiled:
    """A job's compiled chunk function and how it was built."""
    call: Callable  # (chunk of coords, shape (chunk_size, n_inputs)) -> (values, grads)
    chunk_size: int
    dtype: str
    device: object
    compile_s: float


_cache_dir: list = [None]  # the persistent cache folder this process uses


def use_compile_cache(folder: str) -> None:
    """Point JAX's persistent compilation cache at `folder` ("off": none). Every compilation is
    cached, however quick: even small graphs take a sizeable share of a cold run to compile."""
    from jax.experimental.compilation_cache import compilation_cache as cc
    path = None if folder == "off" else str(Path(folder).expanduser())
    if path == _cache_dir[0]:
        return
    cc.reset_cache()
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _cache_dir[0] = path


def compile_graph(graph: Graph, dtype: str, device: str, chunk_size: int) -> Compiled:
    """Trace, lower and compile the batched function for one chunk shape (ahead of time).

    With a cache folder, the finished executable is also kept there under a key of the graph's
    structure, dtype, device, chunk size and versions: a later process skips tracing and lowering
    (which JAX's own cache cannot skip) and just loads it.
    """
    np_dtype = DTYPES[dtype]
    dev = get_device(device)
    start = time.perf_counter()
    key = _executable_key(graph, dtype, dev, chunk_size)
    compiled = _load_executable(key, dev)
    if compiled is None:
        batched = jax.jit(jax.vmap(point_function(graph, np_dtype)))
        sharding = jax.sharding.SingleDeviceSharding(dev)
        shape = jax.ShapeDtypeStruct((chunk_size, len(graph.inputs)), np_dtype, sharding=sharding)
        compiled = batched.lower(shape).compile()
        _store_executable(key, compiled, dev, (chunk_size, len(graph.inputs)), np_dtype)
    return Compiled(compiled, chunk_size, dtype, dev, time.perf_counter() - start)


def _executable_key(graph: Graph, dtype: str, dev, chunk_size: int) -> str:
    from . import __version__
    import jaxlib
    implementations = sorted({(n.op, n.param, op_for(n.op, n.param).jax)
                              for n in graph.nodes if n.primitive is not None})
    identity = repr((graph.structure_key(), implementations, dtype, dev.platform,
                     dev.client.platform_version, chunk_size, jax.__version__, jaxlib.__version__,
                     __version__))
    return hashlib.sha256(identity.encode()).hexdigest()


def _executable_path(key: str) -> Path | None:
    return None if _cache_dir[0] is None else Path(_cache_dir[0]) / f"gradsvc-exec-{key}.bin"


_TREES = (jax.tree_util.tree_structure(((0,), {})), jax.tree_util.tree_structure((0, 0)))


def _load_executable(key: str, dev):
    path = _executable_path(key)
    if path is None or not path.is_file():
        return None
    try:
        return serialize_executable.deserialize_and_load(path.read_bytes(), *_TREES,
                                                         execution_devices=[dev])
    except Exception:  # a stale or damaged entry only costs a recompilation
        return None


def _store_executable(key: str, compiled, dev, shape: tuple, np_dtype) -> None:
    """Keep the executable only if a reloaded copy computes exactly what the original does: an
    executable that JAX itself loaded from its cache does not serialize completely."""
    path = _executable_path(key)
    if path is None:
        return
    try:
        payload, _, _ = serialize_executable.serialize(compiled)
        reloaded = serialize_executable.deserialize_and_load(payload, *_TREES,
                                                             execution_devices=[dev])
        probe = jax.device_put(np.linspace(0.5, 1.5, int(np.prod(shape)), dtype=np_dtype)
                               .reshape(shape), dev)
        for a, b in zip(jax.tree_util.tree_leaves(compiled(probe)),
                        jax.tree_util.tree_leaves(reloaded(probe))):
            if not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True):
                return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    except Exception:  # caching is an optimisation; never fail a run over it
        return


def run_chunks(compiled: Compiled, coords_for: Callable[[int, int], np.ndarray], size: int,
               on_chunk: Callable[[int, int, np.ndarray, np.ndarray], None]) -> None:
    """Evaluate `size` points chunk by chunk, calling on_chunk(start, stop, values, grads).

    The last chunk is padded with copies of its last point (same shape: no recompilation). Chunk
    k+1 is dispatched before chunk k's results are copied out, so the host prepares coordinates and
    writes results while the device computes.
    """
    np_dtype = DTYPES[compiled.dtype]
    n = compiled.chunk_size
    pending = None
    for start in range(0, size, n):
        stop = min(start + n, size)
        chunk = coords_for(start, stop).astype(np_dtype, copy=False)
        if stop - start < n:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], n - (stop - start), axis=0)])
        dispatched = (start, stop, compiled.call(jax.device_put(chunk, compiled.device)))
        if pending is not None:
            _deliver(pending, on_chunk)
        pending = dispatched
    if pending is not None:
        _deliver(pending, on_chunk)


def _deliver(pending, on_chunk) -> None:
    start, stop, (values, grads) = pending
    count = stop - start
    on_chunk(start, stop, np.asarray(values)[:count], np.asarray(grads)[:count])
