"""The small interface `api.execute` runs a plan through, so that another engine, or a remote
worker, can take the JAX backend's place without anything else changing.

A backend turns an `ExecutionPlan` into a kernel (compiled, or one it kept), runs the plan's chunks
through it, handing each chunk's arrays on as they come, and forgets a kernel whose results failed
verification. Verification, sinks and timings stay with the caller: they are the same whichever
backend computed the numbers.
"""
from __future__ import annotations

from typing import Callable, Protocol

from .plan import ExecutionPlan


class Kernel(Protocol):
    """What the caller reads of a kernel."""
    compile_s: float  # time spent compiling it (0 when loaded)
    source: str  # where it came from: "compiled", "executable cache", ...
    fresh: bool  # compiled past every cache: a mismatch is not a cache's fault
    device: object
    fast: bool  # compiled with the fast sin/cos where the graph has them
    fast_ops: bool  # holds fast sin/cos (timings.fast_math)
    quick: bool  # compiled without optimisation (timings.quick_compile)
    layout: tuple[int, ...]  # for each result of plan.layout, which array it is (equal: one array)


class Backend(Protocol):
    def kernel(self, plan: ExecutionPlan, fresh: bool = False) -> tuple[Kernel, bool]:
        """The plan's kernel and whether it was already at hand; `fresh`: built past every
        cache (after a mismatch)."""

    def run(self, plan: ExecutionPlan, kernel: Kernel,
            on_chunk: Callable[[int, int, list, list], None], ranges=None) -> int:
        """Every chunk of the plan's points through `kernel`, in order:
        on_chunk(start, stop, values, derivatives) with the arrays of `plan.layout`; `ranges`:
        only these (start, stop) chunks of the plan (a resumed or distributed run). Returns how
        many chunks had to be recomputed another way (the report counts them)."""

    def forget(self, plan: ExecutionPlan, kernel: Kernel) -> None:
        """Never use this kernel again (its results disagreed with the reference)."""
