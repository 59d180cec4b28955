"""The JAX backend: kernels compiled per plan shape and kept, in this process and on disk.

Jobs with the same shape (graph structure, grid lengths, dtype, device and device count, chunk
size, kept nodes) compile once per process. Least recently used first, and bounded: each compiled
kernel holds ~18 memory mappings of machine code, and a process that ran thousands of distinct
graphs (a long fuzz campaign did) reached the kernel's limit of 65,530 mappings and XLA crashed.
Evicted kernels come back from the on-disk executable cache (those on one device).
"""
from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from typing import Callable

from .. import limits
from . import jaxrun, plan as plans
from .jaxrun import Compiled, get_device
from .kcache import executable_key, executable_path, remove_entry, use_compile_cache
from .plan import ExecutionPlan, KernelPlan

_COMPILED: OrderedDict[tuple, Compiled] = OrderedDict()
_COMPILED_LOCK = threading.Lock()  # threads of one process (a service) share the kernels
# kernels this process made, by `Compiled.source` (compiled, or loaded from the executable
# cache): the service's /metrics reads it
KERNELS_MADE: Counter[str] = Counter()


class JaxBackend:
    """`backend.Backend` on JAX and XLA (see the module docstring)."""

    def choice(self, plan: ExecutionPlan) -> KernelPlan:
        """Which kernel this run gets (`plan.choose`): one compiled already, or the one its work
        repays."""
        return plans.choose(plan.job, plan.shape,
                            lambda kernel: (*plan.shape, kernel) in _COMPILED,
                            lambda kernel: _on_disk(plan, kernel))

    def kernel(self, plan: ExecutionPlan, fresh: bool = False,
               kind: KernelPlan | None = None) -> tuple[Compiled, bool]:
        """The plan's kernel, compiled the way `choice` says, or as `kind` says (a Dask worker
        takes its client's choice: the fast sin/cos or XLA's must be the same in every task)."""
        key = (*plan.shape, kind or self.choice(plan))  # a kernel of this shape, compiled this way
        with _COMPILED_LOCK:
            have = None if fresh else _COMPILED.get(key)
            if have is not None:
                _COMPILED.move_to_end(key)
        if have is not None:
            return have, True
        compiled = _compile(plan, key[-1], fresh)
        with _COMPILED_LOCK:
            _COMPILED.pop(key, None)
            _COMPILED[key] = compiled
            while len(_COMPILED) > limits.MAX_COMPILED_KERNELS:
                _COMPILED.popitem(last=False)
        return compiled, False

    def run(self, plan: ExecutionPlan, kernel: Compiled, on_chunk: Callable,
            ranges=None) -> int:
        ranges = plan.ranges if ranges is None else ranges
        recomputed = jaxrun.run_chunks(kernel, plan.job.grid, on_chunk, _exact_twin(plan, kernel),
                                       ranges)
        plans.record_run(plan.shape, plan.job.grid.size if ranges is None
                         else plans.points_in(ranges))
        return recomputed

    def forget(self, plan: ExecutionPlan, kernel: Compiled) -> None:
        """Not from this process, not from disk (its exact twin neither)."""
        with _COMPILED_LOCK:
            _COMPILED.pop((*plan.shape, KernelPlan(kernel.fast, kernel.quick)), None)
        use_compile_cache(plan.job.settings.compile_cache)  # the folder it came from
        for compiled in (kernel, kernel.exact):
            if compiled is not None:
                remove_entry(compiled.key)


def _compile(plan: ExecutionPlan, kernel: KernelPlan, fresh: bool) -> Compiled:
    s, job = plan.job.settings, plan.job
    use_compile_cache(s.compile_cache)
    compiled = jaxrun.compile_graph(job.graph, job.grid, s.dtype, s.device, plan.chunk_size,
                                    plan.kept, kernel.fast, fresh=fresh, quick=kernel.quick,
                                    devices=plan.devices)
    with _COMPILED_LOCK:
        KERNELS_MADE[compiled.source] += 1
    return compiled


def kernels_kept() -> int:
    """Compiled kernels this process holds now."""
    return len(_COMPILED)


def _on_disk(plan: ExecutionPlan, kernel: KernelPlan) -> bool:
    s, job = plan.job.settings, plan.job
    if plan.devices > 1:  # sharded kernels are not kept on disk (see jaxrun.compile_graph)
        return False
    use_compile_cache(s.compile_cache)
    device = get_device(s.device, inline=job.grid.size <= plan.chunk_size)
    path = executable_path(executable_key(job.graph, job.grid, s.dtype, device, plan.chunk_size,
                                          plan.kept, kernel.fast, kernel.quick))
    return path is not None and path.is_file()


def _exact_twin(plan: ExecutionPlan, compiled: Compiled) -> Callable[[], Compiled]:
    """Builds the same function with XLA's own sin/cos, for chunks beyond the fast range (past
    every cache too when the kernel itself was)."""
    def build() -> Compiled:
        return _compile(plan, KernelPlan(False, compiled.quick), compiled.fresh)
    return build


JAX = JaxBackend()  # the default backend: its kernels are this process's
