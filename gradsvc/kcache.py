"""The compiled-kernel cache: JAX's persistent compilation cache, plus gradsvc's own cache of
serialized executables, which lets a later process skip tracing and lowering too.

An entry is keyed by everything that shapes a kernel: the graph's structure, the op table's JAX
functions, the grid's shape, dtype, device, chunk size, kept values, fast math, the source of the
modules that build kernels, and the versions of JAX, jaxlib and gradsvc. An entry is stored only
after a reloaded copy has computed exactly what the original did. Loading an executable runs code
from the cache folder: like JAX's own cache, it must be a folder only you can write to.
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import jax
import numpy as np
from jax.experimental import serialize_executable

from . import fastmath, ops
from .grid import Grid
from .ir import Graph
from .ops import op_for


def _kernel_source_hash() -> str:
    """Digest of the code that shapes a kernel: a cached executable from other code is stale."""
    digest = hashlib.sha256()
    for path in (Path(ops.__file__), Path(fastmath.__file__), Path(__file__),
                 Path(__file__).with_name("jaxrun.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


KERNEL_SOURCE = _kernel_source_hash()


_cache_dir: list = [None]  # the persistent cache folder this process uses


def cache_folder() -> str | None:
    return _cache_dir[0]


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


@contextmanager
def jax_cache_off():
    """JAX's persistent cache out of the way for one compilation (its state is read once, so
    the cache is reset and pointed nowhere, then back)."""
    from jax.experimental.compilation_cache import compilation_cache as cc
    folder = _cache_dir[0]
    cc.reset_cache()
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        yield
    finally:
        cc.reset_cache()
        jax.config.update("jax_compilation_cache_dir", folder)


def executable_key(graph: Graph, grid: Grid, dtype: str, dev, chunk_size: int,
                   kept: tuple[str, ...], fast: bool) -> str:
    from . import __version__
    import jaxlib
    implementations = sorted({(n.op, n.param, op_for(n.op, n.param).jax)
                              for n in graph.nodes if n.primitive is not None})
    identity = repr((graph.structure_key(), implementations, grid.mode,
                     tuple(len(a.values) for a in grid.axes), dtype, dev.platform,
                     dev.client.platform_version, chunk_size, kept, fast, KERNEL_SOURCE,
                     jax.__version__, jaxlib.__version__, __version__))
    return hashlib.sha256(identity.encode()).hexdigest()


def executable_path(key: str) -> Path | None:
    return None if _cache_dir[0] is None else Path(_cache_dir[0]) / f"gradsvc-exec-{key}.bin"


def result_trees(n_axes: int, n_arrays: int, flagged: bool):
    """The argument and result structure of a chunk function (rebuilt, so nothing is unpickled
    beyond the executable itself); the range flag is absent without fast sin/cos."""
    return (jax.tree_util.tree_structure(((0, (0,) * n_axes), {})),
            jax.tree_util.tree_structure(((0,) * n_arrays, 0 if flagged else None)))


def _deserialize(payload: bytes, trees, dev):
    # on the device's own client: gradsvc runs one-chunk jobs on a CPU client of its own
    return serialize_executable.deserialize_and_load(payload, *trees, backend=dev.client,
                                                     execution_devices=[dev])


def load_executable(key: str, dev, n_axes: int, flagged: bool):
    """(executable, layout) from the cache folder, or None. The layout travels beside it."""
    path = executable_path(key)
    if path is None or not path.is_file():
        return None
    try:
        layout = tuple(json.loads(path.with_suffix(".json").read_text())["layout"])
        trees = result_trees(n_axes, max(layout, default=-1) + 1, flagged)
        return _deserialize(path.read_bytes(), trees, dev), layout
    except Exception:  # a stale, partial or damaged entry only costs a recompilation
        return None


def store_executable(key: str, compiled, dev, probe_args: tuple, n_axes: int,
                     layout: tuple[int, ...], flagged: bool) -> bool:
    """Keep the executable only if a reloaded copy computes exactly what the original does: an
    executable that JAX itself loaded from its cache does not serialize completely. Returns
    whether it was kept (False also when there is no cache folder)."""
    path = executable_path(key)
    if path is None:
        return False
    try:
        payload, _, _ = serialize_executable.serialize(compiled)
        trees = result_trees(n_axes, max(layout, default=-1) + 1, flagged)
        reloaded = _deserialize(payload, trees, dev)
        for a, b in zip(jax.tree_util.tree_leaves(compiled(*probe_args)),
                        jax.tree_util.tree_leaves(reloaded(*probe_args))):
            if not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True):
                return False
        path.parent.mkdir(parents=True, exist_ok=True)
        sidecar = path.with_suffix(".json")
        for target, data in ((sidecar, json.dumps({"layout": list(layout)}).encode()),
                             (path, payload)):  # the executable last: it marks a whole entry
            tmp = target.with_name(f".{target.name}.{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return True
    except Exception:  # caching is an optimisation; never fail a run over it
        return False
