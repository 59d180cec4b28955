"""The compiled-kernel cache: JAX's persistent compilation cache, plus gradsvc's own cache of
serialized executables, which lets a later process skip tracing and lowering too.

An entry is keyed by everything that shapes a kernel: the graph's structure, the op table's JAX
functions, the grid's shape, dtype, device and device count, chunk size, kept values, fast math,
the source of the modules that build kernels, and the versions of JAX, jaxlib and gradsvc (a
kernel sharded over several devices is not stored: an entry loads onto one device). An entry is
stored only after a reloaded copy has computed exactly what the original did. Beside each
executable a small JSON file holds the key it was made for, its output layout, and one SHA-256
digest of the key, the layout and the executable's bytes: an entry is loaded only when all of them
agree, and any other entry (an edited layout, another job's executable copied over it, a torn or
damaged file) is removed and the kernel compiled again.

Loading an executable runs code from the cache folder: like JAX's own cache, it must be a folder
only you can write to. The digest catches damage and mix-ups, not someone who can write there and
recompute it; what such a kernel computes is caught by verification, and the kernel is then
evicted (api.execute).

JAX's cache settings are global configuration; gradsvc sets them for its own compilations only
(`jax_compile_cache`), so its user's JAX keeps its own cache folder, or none.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import threading
from contextlib import contextmanager
from pathlib import Path

import jax
import numpy as np
from jax._src import config as jax_states  # jax.config's options, as context managers
from jax.experimental import serialize_executable

from . import fastmath
from ..core import ops
from ..job import sampling
from ..job.grid import Grid
from ..core.ir import Graph


def _kernel_source_hash() -> str:
    """Digest of the code that shapes a kernel: a cached executable from other code is stale."""
    digest = hashlib.sha256()
    here = Path(__file__)
    for path in (Path(ops.__file__), Path(ops.__file__).with_name("tensor_ops.py"),
                 Path(fastmath.__file__), here, here.with_name("jaxrun.py"),
                 here.with_name("jacobians.py"), here.with_name("jaxops.py"),
                 Path(sampling.__file__)):  # a zip grid's random inputs are made in the kernel
        digest.update(path.read_bytes())
    return digest.hexdigest()


KERNEL_SOURCE = _kernel_source_hash()


_cache_dir: list = [None]  # the cache folder of gradsvc's compilations in this process
# JAX's cache object is one per process, and is reset on the way into and out of gradsvc's blocks
_JAX_CACHE_LOCK = threading.Lock()


def cache_folder() -> str | None:
    return _cache_dir[0]


def use_compile_cache(folder: str) -> None:
    """Keep gradsvc's compiled kernels in `folder` ("off": nowhere). Only gradsvc's own
    compilations use it: see `jax_compile_cache`."""
    _cache_dir[0] = None if folder == "off" else str(Path(folder).expanduser())


@contextmanager
def jax_compile_cache(enabled: bool = True):
    """JAX's persistent compilation cache in gradsvc's folder (or, not `enabled`, none: nothing
    read from it, nothing written), for the compilations inside this block only.

    Every compilation is cached, however quick: even small graphs take a sizeable share of a cold
    run to compile. The settings change for this thread and this block (a minimum entry size of
    -1 also stops JAX from setting its default globally); JAX builds its cache object once, for the
    folder configured at its first use, so it is reset on the way in and on the way out (one
    gradsvc thread at a time), and the user's own compilations find their own folder (or none)
    again; a user thread compiling at that very moment may still share gradsvc's cache object.
    An entry JAX cannot read or write raises here (JAX would warn the user of it) instead: the
    caller compiles again with `enabled=False`, which is all there is to do.
    """
    from jax.experimental.compilation_cache import compilation_cache as cc
    folder = _cache_dir[0] if enabled else None
    with _JAX_CACHE_LOCK, jax_states.compilation_cache_dir(folder), \
            jax_states.persistent_cache_min_compile_time_secs(0.0), \
            jax_states.persistent_cache_min_entry_size_bytes(-1), \
            jax_states.raise_persistent_cache_errors(True):
        cc.reset_cache()
        try:
            yield
        finally:
            cc.reset_cache()


def executable_key(graph: Graph, grid: Grid, dtype: str, dev, chunk_size: int,
                   kept: tuple[str, ...], fast: bool, quick: bool = False, devices: int = 1) -> str:
    from .. import __version__
    import jaxlib
    implementations = sorted({(n.op, repr(n.param), getattr(n.primitive, "jax", "tensor op"))
                              for n in graph.nodes if n.primitive is not None})
    identity = repr((graph.structure_key(), implementations, grid.mode, grid.kernel_shape,
                     dtype, dev.platform, dev.client.platform_version, _cpu_features(), devices,
                     chunk_size,
                     kept, fast, quick, KERNEL_SOURCE, jax.__version__, jaxlib.__version__, __version__))
    return hashlib.sha256(identity.encode()).hexdigest()


@functools.lru_cache(maxsize=None)
def _cpu_features() -> str:
    """The host CPU's model and instruction-set flags: XLA compiles for the CPU it runs on, and a
    cache on storage shared by a cluster's machines must not hand an AVX-512 kernel to a machine
    without it."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux: the platform's name is all there is
        return platform.machine() + platform.processor()
    wanted = [line for line in lines if line.startswith(("model name", "flags", "Features"))]
    return hashlib.sha256("\n".join(dict.fromkeys(wanted)).encode()).hexdigest()


def executable_path(key: str) -> Path | None:
    return None if _cache_dir[0] is None else Path(_cache_dir[0]) / f"gradsvc-exec-{key}.bin"


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def entry_digest(key: str, layout, payload: bytes) -> str:
    """The digest an entry's sidecar must hold: of the key it was made for, its layout and the
    executable's bytes (a JSON object ends where it ends, so the parts cannot run together)."""
    digest = hashlib.sha256(json.dumps({"key": key, "layout": list(layout)}).encode())
    digest.update(payload)
    return digest.hexdigest()


def result_trees(n_axes: int, n_arrays: int, flagged: bool):
    """The argument and result structure of a chunk function (rebuilt, so nothing is unpickled
    beyond the executable itself); the range flag is absent without fast sin/cos."""
    return (jax.tree_util.tree_structure(((0, (0,) * n_axes), {})),
            jax.tree_util.tree_structure(((0,) * n_arrays, 0 if flagged else None)))


def _deserialize(payload: bytes, trees, dev):
    # on the device's own client: gradsvc runs one-chunk jobs on a CPU client of its own
    return serialize_executable.deserialize_and_load(payload, *trees, backend=dev.client,
                                                     execution_devices=[dev])


class DamagedEntry(Exception):
    """A cache entry that is not what its key says: removed, and the kernel compiled again."""


def _checked_layout(layout, n_results: int) -> tuple[int, ...]:
    """A layout as the kernel makes it: one index per result, numbering its arrays from 0 in
    order of first use (so a forged one cannot ask for a million result arrays)."""
    if (not isinstance(layout, list) or len(layout) != n_results
            or not all(type(i) is int for i in layout)):
        raise DamagedEntry("not a layout of this kernel")
    seen = -1
    for i in layout:
        if not 0 <= i <= seen + 1:
            raise DamagedEntry("not a layout of this kernel")
        seen = max(seen, i)
    return tuple(layout)


def _read_entry(key: str, path: Path, n_results: int) -> tuple[bytes, tuple[int, ...]]:
    meta = json.loads(sidecar_path(path).read_text())
    payload = path.read_bytes()
    if not isinstance(meta, dict) or meta.get("key") != key:
        raise DamagedEntry("made for another key")
    if meta.get("sha256") != entry_digest(key, meta.get("layout") or [], payload):
        raise DamagedEntry("contents do not match their digest")
    return payload, _checked_layout(meta["layout"], n_results)


def load_executable(key: str, dev, n_axes: int, flagged: bool, n_results: int):
    """(executable, layout) from the cache folder, or None. An entry that is not whole and
    exactly what `key` was made for is removed (it only costs a recompilation)."""
    path = executable_path(key)
    if path is None or not path.is_file():
        return None
    try:
        payload, layout = _read_entry(key, path, n_results)
        trees = result_trees(n_axes, max(layout, default=-1) + 1, flagged)
        return _deserialize(payload, trees, dev), layout
    except Exception:  # stale, partial, damaged or not its own
        remove_entry(key)
        return None


def remove_entry(key: str) -> None:
    """Forget a cached kernel (its executable first: that file marks a whole entry)."""
    path = executable_path(key)
    if path is None:
        return
    for target in (path, sidecar_path(path)):
        try:
            target.unlink(missing_ok=True)
        except OSError:  # a folder we cannot write: the digest still refuses a bad entry
            pass


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
        meta = {"key": key, "layout": list(layout), "sha256": entry_digest(key, layout, payload)}
        for target, data in ((sidecar_path(path), json.dumps(meta).encode()),
                             (path, payload)):  # the executable last: it marks a whole entry
            tmp = target.with_name(f".{target.name}.{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return True
    except Exception:  # caching is an optimisation; never fail a run over it
        return False
