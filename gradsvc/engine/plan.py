"""Which kernel a run gets: the one place that weighs a kernel's compile time against its run time.

A kernel can be compiled three ways: `QUICK`, LLVM's optimisation off (a faster compile, a slightly
slower run); `FULL`, optimised; `FULL_FAST`, optimised, with the fused polynomial sin/cos of
`fastmath` (a much faster run, a longer compile). A job gets the cheapest kernel that its work
repays (benchmarks/README.md, "Which kernel a run gets", has the measurements):

- a kernel of this job's shape already compiled, in this process or in the executable cache, is
  used as it is, the best one first: its compile is paid for;
- a hot shape, whose grids in this process add up to `HOT_POINTS` (a big grid is hot at once), gets
  `FULL_FAST` (`FULL` without sin/cos or with `fast_math: false`): a long-running process recompiles
  a job it keeps running, as a JIT compiler tiers up;
- any other job gets `QUICK` up to `QUICK_MAX_POINTS` points, else `FULL`.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from .. import limits
from .jaxrun import uses_fast_ops
from ..job.spec import Job

HOT_POINTS = 3_000_000  # about where a fresh fast kernel's longer compile is repaid
QUICK_MAX_POINTS = 100_000  # up to here an unoptimised kernel's slower run costs less than it saves


@dataclass(frozen=True)
class KernelPlan:
    fast: bool  # the fused polynomial sin/cos
    quick: bool  # compiled without LLVM's optimisation


FULL_FAST, FULL, QUICK = KernelPlan(True, False), KernelPlan(False, False), KernelPlan(False, True)

# points run per job shape in this process, least recently used first (bounded like the kernels)
_POINTS_RUN: OrderedDict[tuple, int] = OrderedDict()
_POINTS_LOCK = threading.Lock()


def shape_key(job: Job, chunk_size: int, kept: tuple[str, ...]) -> tuple:
    """Everything that shapes a job's kernel except the plan: equal keys compile identically."""
    s, grid = job.settings, job.grid
    return (job.graph.structure_key(), grid.mode, tuple(len(a.values) for a in grid.axes),
            s.dtype, s.device, chunk_size, kept)


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
    ready = list(dict.fromkeys((best, FULL, QUICK)))
    for where in (in_process, on_disk):
        for plan in ready:
            if where(plan):
                return plan
    return QUICK if job.grid.size <= QUICK_MAX_POINTS else FULL
