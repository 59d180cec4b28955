"""Grid specs -> axes, point count, and the coordinates of any point, chunk by chunk.

Each input has one axis (a 1-D array of its values; a scalar is an axis of length 1). A `product` grid
visits every combination with the first input varying slowest (C order, like nested for-loops in the
order the inputs are written); a `zip` grid pairs the i-th values of all axes (axes of length 1
broadcast). The grid itself is never materialised: `coords(indices)` computes points from indices.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from . import limits
from .errors import JobFileError, LimitError, Location


@dataclass(frozen=True)
class Axis:
    name: str
    values: np.ndarray  # float64, 1-D
    kind: str  # scalar, list, linspace, arange, logspace, uniform, normal


@dataclass(frozen=True)
class Grid:
    axes: tuple[Axis, ...]
    mode: str  # "product" or "zip"
    size: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """The grid's shape: one dimension per input for product grids, (size,) for zip grids."""
        if self.mode == "zip":
            return (self.size,)
        return tuple(len(a.values) for a in self.axes)

    def coords(self, indices: np.ndarray) -> np.ndarray:
        """Input values at the given point indices: shape (len(indices), n_inputs), float64."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), len(self.axes)), dtype=np.float64)
        if self.mode == "product":
            per_axis = np.unravel_index(indices, self.shape)
        else:
            per_axis = [indices if len(a.values) > 1 else np.zeros_like(indices) for a in self.axes]
        for j, (axis, idx) in enumerate(zip(self.axes, per_axis)):
            out[:, j] = axis.values[idx]
        return out

    def point(self, index: int) -> dict[str, float]:
        """The coordinates of one point, by input name."""
        return dict(zip(self.names, (float(v) for v in self.coords(np.array([index]))[0])))

    def chunks(self, chunk_size: int) -> Iterator[tuple[int, int]]:
        """(start, stop) index ranges of at most `chunk_size` points covering the grid in order."""
        for start in range(0, self.size, chunk_size):
            yield start, min(start + chunk_size, self.size)


def _axis_length(name: str, spec, where: Callable) -> int:
    kind = kind_of(spec)
    if kind == "scalar":
        return 1
    if kind == "list":
        return len(spec)
    if kind in ("linspace", "logspace"):
        _, _, num = getattr(spec, kind)
        return num
    if kind == "arange":
        start, stop, step = spec.arange
        if step == 0 or not all(map(math.isfinite, spec.arange)):
            raise JobFileError(f"input '{name}': arange needs finite numbers and a non-zero step",
                               where=where((name, "arange")))
        return max(0, math.ceil((stop - start) / step))
    return spec.n


def _axis_values(spec) -> tuple[np.ndarray, str]:
    kind = kind_of(spec)
    if kind == "scalar":
        return np.array([float(spec)]), kind
    if kind == "list":
        return np.array(spec, dtype=np.float64), kind
    if kind == "linspace":
        return np.linspace(*spec.linspace), kind
    if kind == "logspace":
        return np.logspace(*spec.logspace), kind
    if kind == "arange":
        return np.arange(*spec.arange, dtype=np.float64), kind
    rng = np.random.default_rng(spec.seed)
    if kind == "uniform":
        return rng.uniform(*spec.uniform, size=spec.n), kind
    return rng.normal(*spec.normal, size=spec.n), kind


def build_grid(inputs: dict, mode: str, where: Callable[[tuple], Location]) -> Grid:
    """Check every size against the limits (in exact integers, before allocating), then build axes."""
    lengths = {}
    for name, spec in inputs.items():
        n = _axis_length(name, spec, where)
        if n < 1:
            raise JobFileError(f"input '{name}' has no values", where=where((name,)),
                               hint="every input needs at least one value")
        if n > limits.MAX_AXIS_POINTS:
            raise LimitError(f"input '{name}' has {n:,} values, more than {limits.MAX_AXIS_POINTS:,}",
                             where=where((name,)), hint="use fewer values (MAX_AXIS_POINTS)")
        if kind_of(spec) == "normal" and spec.normal[1] < 0:
            raise JobFileError(f"input '{name}': the standard deviation must be >= 0",
                               where=where((name, "normal")))
        lengths[name] = n
    size = _grid_size(lengths, mode, where)
    if size > limits.MAX_GRID_POINTS:
        raise LimitError(f"the grid has {size:,} points, more than {limits.MAX_GRID_POINTS:,}",
                         where=where(()), hint="shrink the inputs' ranges (MAX_GRID_POINTS)")
    axes = tuple(Axis(name, *_axis_values(spec)) for name, spec in inputs.items())
    for axis in axes:
        if not np.all(np.isfinite(axis.values)):
            raise JobFileError(f"input '{axis.name}' produces non-finite values",
                               where=where((axis.name,)), hint="keep the range within float64")
    return Grid(axes, mode, size)


def kind_of(spec) -> str:
    if isinstance(spec, (int, float)):
        return "scalar"
    return "list" if isinstance(spec, list) else type(spec).__name__.lower()


def _grid_size(lengths: dict[str, int], mode: str, where) -> int:
    if mode == "product":
        return math.prod(lengths.values())
    longer = {name: n for name, n in lengths.items() if n > 1}
    if len(set(longer.values())) > 1:
        detail = ", ".join(f"{name}: {n}" for name, n in longer.items())
        raise JobFileError(f"a zip grid needs inputs of equal length, got {detail}",
                           where=where(()), hint="give every non-scalar input the same number of "
                           "values, or use `grid: product`")
    return max(lengths.values())
