"""A run's plan, decided once before anything runs: what the kernel returns (`ResultLayout`), how
many points each call takes and the shape its kernel is cached under (`ExecutionPlan`), and which
kernel it gets (`choose`).

Which kernel a run gets is the one place that weighs a kernel's compile time against its run time.

A kernel can be compiled three ways: `QUICK`, LLVM's optimisation off (a faster compile, a slightly
slower run); `FULL`, optimised; `FULL_FAST`, optimised, with the fused polynomial sin/cos of
`fastmath` (a much faster run, a longer compile). A job gets the cheapest kernel that its work
repays (benchmarks/README.md, "Which kernel a run gets", has the measurements):

- a kernel of this job's shape already compiled, in this process or in the executable cache, is
  used as it is, the best one first: its compile is paid for;
- a hot shape, whose grids in this process add up to `HOT_POINTS` (a big grid is hot at once), gets
  `FULL_FAST` (`FULL` without sin/cos or with `fast_math: false`): a long-running process recompiles
  a job it keeps running, as a JIT compiler tiers up;
- any other job gets `QUICK` up to `QUICK_MAX_POINTS` points (and, with tensors, up to
  `QUICK_MAX_TENSOR_WORK` tensor elements computed over the grid), else `FULL`.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import limits
from ..errors import LimitError, Location
from ..job.spec import Job
from .jacobians import derivative_shapes
from .jaxrun import DTYPES, device_count, uses_fast_ops

HOT_POINTS = 3_000_000  # about where a fresh fast kernel's longer compile is repaid
QUICK_MAX_POINTS = 100_000  # up to here an unoptimised kernel's slower run costs less than it saves
# tensor graphs: a quick kernel's slower run of the tensors' elements outweighs the compile time it
# saves sooner (benchmarks/README.md, "Tensor workloads"): tensor elements x points, at most
QUICK_MAX_TENSOR_WORK = 100_000


@dataclass(frozen=True)
class KernelPlan:
    fast: bool  # the fused polynomial sin/cos
    quick: bool  # compiled without LLVM's optimisation


FULL_FAST, FULL, QUICK = KernelPlan(True, False), KernelPlan(False, False), KernelPlan(False, True)

# points run per job shape in this process, least recently used first (bounded like the kernels)
_POINTS_RUN: OrderedDict[tuple, int] = OrderedDict()
_POINTS_LOCK = threading.Lock()


def kept_nodes(job: Job) -> tuple[str, ...]:
    """The named nodes whose values the kernel returns (`keep_values`); inputs never need to be:
    their values are the grid coordinates (or the tensor, the same at every point)."""
    keep = job.settings.keep_values
    graph = job.graph
    if keep == "all":
        return graph.named
    if keep == "outputs":
        return tuple(n for n in graph.named if n in graph.outputs)
    return ()


@dataclass(frozen=True)
class ResultLayout:
    """The arrays a kernel returns for a job, in its order: the kept nodes' values, then the
    derivatives (Jacobians output-major, then Hessians), each with its shape at one point."""
    kept: tuple[str, ...]
    value_shapes: tuple[tuple[int, ...], ...]
    derivative_shapes: tuple[tuple[int, ...], ...]

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return self.value_shapes + self.derivative_shapes

    def numbers_per_point(self) -> int:
        return sum(math.prod(shape) for shape in self.shapes)


def result_layout(job: Job) -> ResultLayout:
    kept = kept_nodes(job)
    return ResultLayout(kept, tuple(job.graph.shape_of(n) for n in kept),
                        tuple(derivative_shapes(job.graph)))


SMALL_GRAPH_OPS = 32  # up to this many primitive ops a graph is memory-bound: big chunks win
CACHE_CHUNK = 1 << 16  # graphs with many intermediates: they stay in cache
STREAM_CHUNK = 1 << 20  # small graphs, results streamed (to disk): bounded memory per chunk
WHOLE_CHUNK = 1 << 24  # small graphs, results kept in memory: one chunk is the final array
STREAM_CHUNK_NUMBERS = 1 << 27  # results streamed: numbers one chunk returns, at most (1 GB float64)


def chunk_size_for(job: Job, whole: bool, layout: ResultLayout) -> int:
    """Points per compiled call (benchmarks/README.md has the measurements): a graph with many
    intermediates runs fastest in chunks whose intermediates stay in cache; a small graph is
    bound by memory traffic, and when the results stay in memory (`whole`) one chunk spares the
    per-chunk dispatch and the copy of chunks into one array per result. Streamed, a chunk holds
    at most STREAM_CHUNK_NUMBERS numbers: a tensor job's point may return thousands. An automatic
    chunk may be larger than the grid: `per_device_chunk` fits it to the grid and the devices."""
    if job.settings.chunk_size != "auto":
        return min(job.settings.chunk_size, job.grid.size)
    if sum(1 for n in job.graph.nodes if n.primitive is not None) > SMALL_GRAPH_OPS:
        chunk = CACHE_CHUNK
    else:
        chunk = WHOLE_CHUNK if whole else STREAM_CHUNK
    if not whole:
        chunk = min(chunk, max(1, STREAM_CHUNK_NUMBERS // max(1, layout.numbers_per_point())))
    return chunk


# A grid smaller than a chunk per device is split into shares of a multiple of this many points
SPLIT_MULTIPLE = 8


def per_device_chunk(job: Job, chunk: int, devices: int) -> int:
    """The points each of `devices` computes per call, where one device's chunk is `chunk`.

    A grid that holds a chunk for every device, and any grid whose chunk size is set, gives each
    device one device's chunk: a call computes `devices` consecutive chunks of one device, each
    by one device's program, so every point is computed by the same code at the same place of a
    chunk of the same size, and the numbers are one device's bit for bit. XLA promises nothing
    across chunk sizes: its CPU kernels with fast sin/cos gave the last point of a 5-point chunk
    another last bit than a 6-point chunk gives it. A smaller grid is split into even shares
    rounded up to a multiple of SPLIT_MULTIPLE points, and one device's smaller grid is padded
    alike, so that no kernel of a grid smaller than a chunk has such an odd size.
    """
    size = job.grid.size
    if job.settings.chunk_size != "auto" or size >= chunk * devices:
        return chunk
    share = -(-size // devices)
    return -(-share // SPLIT_MULTIPLE) * SPLIT_MULTIPLE


@dataclass(frozen=True)
class ExecutionPlan:
    """Everything a run of one job needs decided, decided once: what the kernel returns, the
    points per call, and the shape its kernel is kept under (equal shapes compile identically:
    jobs that differ only in their inputs' values share a kernel)."""
    job: Job
    layout: ResultLayout
    chunk_size: int  # points per call of the kernel, on all its devices together
    shape: tuple
    # for a sink that stores blocks (`Grid.blocks`): the block shape and each block's points;
    # None: chunks of chunk_size in order
    block_shape: tuple[int, ...] | None = None
    ranges: list[tuple[int, int]] | None = None
    devices: int = 1  # local devices each chunk's points are sharded over

    @property
    def kept(self) -> tuple[str, ...]:
        return self.layout.kept


def _check_point_size(job: Job, layout: ResultLayout) -> None:
    """One point's results must fit in memory, even streamed: a chunk holds at least one."""
    size = layout.numbers_per_point() * np.dtype(DTYPES[job.settings.dtype]).itemsize
    if size > limits.MAX_RESULT_BYTES:
        raise LimitError(f"one point of '{job.name}' returns {layout.numbers_per_point():,} numbers "
                         f"({size:,} bytes), more than {limits.MAX_RESULT_BYTES:,}",
                         where=Location(job.file),
                         hint="differentiate with respect to fewer or smaller names (`wrt:`), or "
                         "keep fewer values (`keep_values: outputs`) (MAX_RESULT_BYTES)")


def plan_run(job: Job, layout: ResultLayout, whole: bool, blocked: bool = False) -> ExecutionPlan:
    """The plan of one run of `job`, whose results go to a sink that keeps them `whole` in
    memory or streams them; `blocked`: a store chunked by the grid's blocks (each call of the
    kernel computes one block, so no two writers ever share a chunk)."""
    _check_point_size(job, layout)
    s, grid = job.settings, job.grid
    devices = device_count(s.device, s.devices)
    per_device = per_device_chunk(job, chunk_size_for(job, whole, layout), devices)
    block_shape = ranges = None
    if blocked:
        # one device's blocks, `devices` of them at a time: each device computes one of them
        per_device = max(stop - start for start, stop in grid.blocks(per_device)[1])
        block_shape, ranges = grid.blocks(per_device * devices)
    chunk_size = per_device * devices
    shape = (job.graph.structure_key(), grid.mode, grid.kernel_shape,
             s.dtype, s.device, devices, chunk_size, layout.kept)
    return ExecutionPlan(job, layout, chunk_size, shape, block_shape, ranges, devices)


def points_in(ranges) -> int:
    """How many points the (start, stop) ranges hold."""
    return sum(stop - start for start, stop in ranges)


def in_ranges(indices: np.ndarray, ranges) -> np.ndarray:
    """Which of `indices` lie in the (start, stop) ranges (which do not overlap): a mask, in
    their order."""
    bounds = np.array(sorted(ranges), dtype=np.int64).reshape(-1, 2)
    if not len(bounds):
        return np.zeros(len(indices), bool)
    which = np.searchsorted(bounds[:, 0], indices, side="right") - 1  # the last start <= index
    return (which >= 0) & (indices < bounds[np.maximum(which, 0), 1])


def record_run(shape: tuple, points: int) -> None:
    with _POINTS_LOCK:
        _POINTS_RUN[shape] = _POINTS_RUN.pop(shape, 0) + points
        while len(_POINTS_RUN) > limits.MAX_COMPILED_KERNELS:
            _POINTS_RUN.popitem(last=False)


def choose(job: Job, shape: tuple, in_process: Callable[[KernelPlan], bool],
           on_disk: Callable[[KernelPlan], bool]) -> KernelPlan:
    """The kernel this run of `job` gets (see the module's docstring). `in_process(plan)` and
    `on_disk(plan)` say whether that kernel is compiled already; the disk is asked only when
    nothing is in this process."""
    best = FULL_FAST if job.settings.fast_math and uses_fast_ops(job.graph, True) else FULL
    if job.grid.size + _POINTS_RUN.get(shape, 0) >= HOT_POINTS:
        return best
    # a zip grid's random inputs are made in the kernel, and unoptimised code rounds their
    # arithmetic otherwise (no fused multiply-adds) than the host's numbers of them (grid.coords),
    # which verification and the store take for what the kernel saw
    quick = not job.grid.made_in_kernel
    ready = [plan for plan in dict.fromkeys((best, FULL, QUICK)) if quick or not plan.quick]
    for where in (in_process, on_disk):
        for plan in ready:
            if where(plan):
                return plan
    return QUICK if quick and _small_work(job) else FULL


def _small_work(job: Job) -> bool:
    """Whether an unoptimised kernel runs this job in less than the compile time it saves."""
    points = job.grid.size
    elements = sum(math.prod(node.shape) for node in job.graph.nodes if node.shape)
    return points <= QUICK_MAX_POINTS and points * elements <= QUICK_MAX_TENSOR_WORK
