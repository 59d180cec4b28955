"""Grid specs -> axes, point count, and the coordinates of any point, chunk by chunk.

Each input has one axis (its values, in order; a scalar is an axis of length 1). A `product` grid
visits every combination with the first input varying slowest (C order, like nested for-loops in the
order the inputs are written); a `zip` grid pairs the i-th values of all axes (axes of length 1
broadcast). The grid itself is never materialised: `coords(indices)` computes points from indices.
A random input of a zip grid is not held either: its value at point i is made from i (sampling.py),
so its length is bounded by the grid's limit, not MAX_AXIS_POINTS.

Tensor inputs (`{tensor: ...}`, `{file: ...}`, see tensors.py) are not axes: each is one array, the
same at every point, kept in `Grid.tensors`.
"""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np

from .. import limits
from ..errors import (GradsvcError, JobFileError, JobProblems, LimitError, Location,
                     UsageError)
from .sampling import Sample, all_finite, check_seed, sample_of
from .tensors import (BEYOND_FLOAT64, DataFile, arange_length, check_span, generated, is_tensor,
                      load_tensors)

RANDOM_KINDS = ("uniform", "normal")


@dataclass(frozen=True)
class Axis:
    """One input's values along the grid: `held` (float64, 1-D), or None for a random input of a
    zip grid, whose value at point i is `sample.at(i)`, made where it is needed (in the kernel,
    from the point index; on the host, for the points asked). A product grid's random axis is
    held: the sample's values at 0 .. length - 1."""
    name: str
    held: np.ndarray | None
    length: int
    sample: Sample | None = None  # the random input it is, if any

    def __len__(self) -> int:
        return self.length

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The values at these positions along the axis (float64)."""
        return self.held[positions] if self.held is not None else self.sample.at(positions)

    @property
    def values(self) -> np.ndarray:
        """Every value, in order: for an axis that is not held, made now, and refused (a
        LimitError) beyond MAX_AXIS_POINTS, where all of them would not fit in memory."""
        if self.held is not None:
            return self.held
        if self.length > limits.MAX_AXIS_POINTS:
            raise LimitError(f"input '{self.name}' is {self.length:,} random samples, made from "
                             f"the point index; all of them at once are more than "
                             f"{limits.MAX_AXIS_POINTS:,}", hint="ask for points by index "
                             "(--point), or read them from the result store (MAX_AXIS_POINTS)")
        return self.sample.span(0, self.length)


class Spelling(NamedTuple):
    """How the user wrote a point's choice, for messages: the CLI's options or the service's
    query parameters."""
    at: str
    point: str
    values: str  # where the exact values are shown


CLI_SPELLING = Spelling("--at", "--point", "`--format json`'s values")
QUERY_SPELLING = Spelling("at=", "point=", "/v1/run's values")


@dataclass(frozen=True)
class Grid:
    axes: tuple[Axis, ...]
    mode: str  # "product" or "zip"
    size: int
    # the tensor inputs by name (float64, read-only, ndim >= 1), the same at every point; not
    # compared (arrays have no truth value): a grid is its axes
    tensors: dict[str, np.ndarray] = field(default_factory=dict, compare=False)
    files: tuple[DataFile, ...] = field(default=(), compare=False)  # the data files read

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.axes)

    @property
    def held_axes(self) -> tuple[Axis, ...]:
        """The axes whose values are held (and copied to the device): all but zip grids' random
        inputs, which the kernel makes from the point index."""
        return tuple(a for a in self.axes if a.held is not None)

    @property
    def made_in_kernel(self) -> bool:
        """Whether some axis is not held: made by the kernel from the point index."""
        return any(a.held is None for a in self.axes)

    @property
    def kernel_shape(self) -> tuple:
        """What of the axes is compiled into a kernel: each one's length, and for an axis made
        from the point index also its Sample (parameters and seed are constants of the kernel)."""
        return tuple(len(a) if a.held is not None else (len(a), a.sample) for a in self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """The grid's shape: one dimension per input for product grids, (size,) for zip grids."""
        if self.mode == "zip":
            return (self.size,)
        return tuple(len(a) for a in self.axes)

    def coords(self, indices: np.ndarray) -> np.ndarray:
        """Input values at the given point indices: shape (len(indices), n_inputs), float64."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), len(self.axes)), dtype=np.float64)
        if not self.axes:  # only tensor inputs: one point, no coordinates
            return out
        if self.mode == "product":
            per_axis = np.unravel_index(indices, self.shape)
        else:
            per_axis = [indices if len(a) > 1 else np.zeros_like(indices) for a in self.axes]
        for j, (axis, idx) in enumerate(zip(self.axes, per_axis)):
            out[:, j] = axis.take(idx)
        return out

    def point(self, index: int) -> dict[str, float]:
        """The coordinates of one point, by input name."""
        return dict(zip(self.names, (float(v) for v in self.coords(np.array([index]))[0])))

    def index_at(self, at: dict[str, float], dtype: str = "float64",
                 spelled: Spelling | None = None) -> int:
        """The index of the point whose coordinates are `at` ({input: value}, exact values of the
        inputs that vary; the others have one value and need not be named), compared in `dtype`
        (the job's: a float32 job's results show its coordinates rounded to float32). A
        UsageError, listing the nearest values, where none matches."""
        varying = [a for a in self.axes if len(a) > 1]
        spelled = spelled or CLI_SPELLING
        _check_named(at, self.axes, varying, spelled)
        per_axis = {a.name: _matches(a, at[a.name], np.dtype(dtype), spelled) for a in varying
                    if a.name in at}
        if self.mode == "product":
            missing = [a.name for a in varying if a.name not in at]
            if missing:
                raise UsageError(f"{spelled.at} needs a value for every input that varies; "
                                 f"missing: {', '.join(missing)}",
                                 hint=_axes_hint(varying, spelled.point))
            # an axis holds each value once at most (linspace, arange); a list may repeat one
            return int(np.ravel_multi_index(
                [per_axis[a.name][0] if a.name in per_axis else 0 for a in self.axes], self.shape))
        common = set.intersection(*(set(found.tolist()) for found in per_axis.values()))
        if len(common) != 1:
            raise UsageError(f"{len(common)} points of the zip grid have these coordinates: "
                             f"{', '.join(map(str, sorted(common)[:10]))}",
                             hint=f"name more inputs in {spelled.at} to pick one, or use "
                             f"{spelled.point}")
        return common.pop()

    def blocks(self, target: int) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
        """The grid cut into blocks of about `target` points that are both rectangular in the
        grid's shape and contiguous in point order: (block shape, each block's (start, stop)).

        A block spans whole trailing dimensions and a run of one dimension (the last that does
        not fit whole), so a store chunked by the block shape has one chunk per range and
        writers of different ranges never touch one chunk. The last block along the split
        dimension may be shorter."""
        shape = self.shape
        trailing, split = 1, -1
        for j in range(len(shape) - 1, -1, -1):
            if trailing * shape[j] > target:
                split = j
                break
            trailing *= shape[j]
        if split < 0:  # the whole grid is one block
            return shape, [(0, self.size)]
        run = max(1, target // trailing)
        block = (1,) * split + (min(run, shape[split]),) + shape[split + 1:]
        ranges = []
        for lead in range(math.prod(shape[:split])):
            for first in range(0, shape[split], run):
                start = (lead * shape[split] + first) * trailing
                ranges.append((start, start + min(run, shape[split] - first) * trailing))
        return block, ranges

    def chunks(self, chunk_size: int) -> Iterator[tuple[int, int]]:
        """(start, stop) index ranges of at most `chunk_size` points covering the grid in order."""
        for start in range(0, self.size, chunk_size):
            yield start, min(start + chunk_size, self.size)


def parse_at(text: str, written: str = "--at ") -> dict[str, float]:
    """`v=20,theta=0.8` -> {"v": 20.0, "theta": 0.8}, what `Grid.index_at` takes; names
    NFKC-normalized as in job files. `written` is how the user gave the text (the CLI's `--at `,
    the service's `at=`), so that a wrong part is shown, and the hint written, their way."""
    coords: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            number = float(value) if sep and name.strip() else None
        except ValueError:
            number = None
        if number is None:
            raise UsageError(f"{written}{text!r}: '{part}' is not NAME=NUMBER",
                             hint=f"write it like {written}v=20,theta=0.8")
        coords[unicodedata.normalize("NFKC", name.strip())] = number
    return coords


def _check_named(at: dict, axes, varying, spelled: "Spelling") -> None:
    known = {a.name: a for a in axes}
    option, point = spelled.at, spelled.point
    for name in at:
        if name not in known:
            raise UsageError(f"{option} names '{name}', which is not an input",
                             hint=_axes_hint(varying, point))
        if len(known[name]) == 1:
            raise UsageError(f"{option} names '{name}', which does not vary (it is always "
                             f"{float(known[name].take(0))!r})", hint=_axes_hint(varying, point))
    if not at:
        raise UsageError(f"{option} names no input", hint=_axes_hint(varying, point))


def _matches(axis: Axis, value: float, dtype: np.dtype, spelled: "Spelling") -> np.ndarray:
    """Indices along `axis` holding exactly `value`; none: a UsageError naming the nearest."""
    values = axis.values  # an axis made from the index: made now, if it is not too long
    found = np.flatnonzero(values.astype(dtype) == dtype.type(value))
    if len(found):
        return found
    nearest = np.sort(values[np.argsort(np.abs(values - value), kind="stable")[:3]])
    raise UsageError(f"input '{axis.name}' has no value {value!r}; the nearest are "
                     f"{', '.join(repr(float(v)) for v in nearest)}",
                     hint=f"{spelled.at} takes an input's exact values (as in {spelled.values})")


def _axes_hint(varying, point: str) -> str:
    if not varying:
        return f"this job has one point: use {point} 0"
    return "inputs that vary: " + ", ".join(f"{a.name} ({_axis_text(a)})" for a in varying)


def _axis_text(axis: Axis) -> str:
    if axis.held is None:  # not made here: it may be a billion numbers
        return f"{len(axis):,} samples, {axis.sample.describe()}"
    return (f"{len(axis):,} values, {float(axis.held.min())!r} to "
            f"{float(axis.held.max())!r}")


def _axis_length(name: str, spec, where: Callable) -> int:
    """The number of values an input's spec makes, computed before anything is allocated: a spec
    whose values or count are beyond float64 or the limits is refused here, with its place."""
    kind = kind_of(spec)
    if kind == "scalar":
        return 1
    if kind == "list":
        return len(spec)
    if kind in ("linspace", "logspace"):
        start, stop, num = getattr(spec, kind)
        check_span(name, kind, start, stop, where, (name, kind))
        return num
    if kind == "arange":
        return arange_length(name, *spec.arange, where, (name, "arange"), limits.MAX_AXIS_POINTS,
                             "MAX_AXIS_POINTS")
    if kind == "uniform":
        check_span(name, kind, *spec.uniform, where, (name, kind))
    return spec.n


def _axis_values(spec) -> np.ndarray:
    kind = kind_of(spec)
    if kind == "scalar":
        return np.array([float(spec)])
    if kind == "list":
        return np.array(spec, dtype=np.float64)
    return generated(spec, None)  # linspace, arange, logspace: random inputs are _random_axis


def _axis(name: str, spec, mode: str, where: Callable) -> Axis:
    sample = sample_of(spec) if kind_of(spec) in RANDOM_KINDS else None
    if sample is not None:
        return _random_axis(name, sample, spec.n, mode, where)
    # the last steps of a range may overflow: checked below rather than warned of
    with np.errstate(over="ignore", invalid="ignore"):
        values = _axis_values(spec)
    if not np.all(np.isfinite(values)):
        raise _beyond_float64(name, where)
    return Axis(name, values, len(values))


def _random_axis(name: str, sample: Sample, n: int, mode: str, where: Callable) -> Axis:
    """A zip grid's random input is made from the point index wherever it is needed; a product
    grid's is held (at most MAX_AXIS_POINTS values), made here by the same generator."""
    check_seed(name, sample.seed, where, (name, "seed"))
    if not all_finite(sample):
        raise _beyond_float64(name, where)
    if _made_from_index(mode, n):
        return Axis(name, None, n, sample)
    return Axis(name, sample.span(0, n), n, sample)


def _made_from_index(mode: str, n: int) -> bool:
    """Whether a random input of `n` values is made from the point index (not held)."""
    return mode == "zip" and n > 1


def _beyond_float64(name: str, where: Callable) -> JobFileError:
    return JobFileError(f"input '{name}' produces values {BEYOND_FLOAT64}", where=where((name,)),
                        hint="keep the range within float64")


def _input_length(name: str, spec, mode: str, where: Callable) -> int:
    n = _axis_length(name, spec, where)
    if n < 1:
        raise JobFileError(f"input '{name}' has no values", where=where((name,)),
                           hint="every input needs at least one value")
    held = not (kind_of(spec) in RANDOM_KINDS and _made_from_index(mode, n))
    if held and n > limits.MAX_AXIS_POINTS:
        raise LimitError(f"input '{name}' has {n:,} values, more than {limits.MAX_AXIS_POINTS:,}",
                         where=where((name,)), hint="use fewer values (MAX_AXIS_POINTS)")
    if kind_of(spec) == "normal" and spec.normal[1] < 0:
        raise JobFileError(f"input '{name}': the standard deviation must be >= 0",
                           where=where((name, "normal")))
    return n


def build_grid(inputs: dict, mode: str, where: Callable[[tuple], Location],
               folder: Path | None = None, max_points: int = limits.MAX_GRID_POINTS) -> Grid:
    """The axes of the inputs that vary (scalars are axes of one value) and the tensor inputs,
    each checked against the limits (in exact integers, before allocating; `max_points` is the
    deployment's grid-size limit, its config file's `max_grid_points`). Every input's problem is
    reported (`JobProblems`), not only the first. Data files are looked for in `folder` (the
    job file's; None: the job may read none, as one sent to the service)."""
    axis_inputs = {name: spec for name, spec in inputs.items() if not is_tensor(spec)}
    tensor_inputs = {name: spec for name, spec in inputs.items() if is_tensor(spec)}
    problems: list[GradsvcError] = []
    axes, size = _gathered(problems, lambda: _axes(axis_inputs, mode, where, max_points)) or \
        ((), 0)
    tensors = _gathered(problems, lambda: load_tensors(tensor_inputs, where, folder))
    if problems:
        raise JobProblems.of(problems)
    return Grid(axes, mode, size, tensors.arrays, tensors.files)


def _axes(inputs: dict, mode: str, where: Callable, max_points: int
          ) -> tuple[tuple[Axis, ...], int]:
    lengths = _for_each_input(inputs, lambda name, spec: _input_length(name, spec, mode, where))
    size = _grid_size(lengths, mode, where)
    if size > max_points:
        raise LimitError(f"the grid has {size:,} points, more than {max_points:,}",
                         where=where(()), hint="shrink the inputs' ranges; the limit is the "
                         "deployment's max_grid_points (its config file)")
    axes = _for_each_input(inputs, lambda name, spec: _axis(name, spec, mode, where))
    return tuple(axes.values()), size


def _gathered(problems: list, make: Callable):
    """`make()`, or None with its problem (or each of its problems) added to `problems`."""
    try:
        return make()
    except JobProblems as errors:
        problems.extend(errors.problems)
    except GradsvcError as error:
        problems.append(error)
    return None


def _for_each_input(inputs: dict, make: Callable) -> dict:
    """{name: make(name, spec)} for every input; every input's problem raised at once."""
    made, problems = {}, []
    for name, spec in inputs.items():
        try:
            made[name] = make(name, spec)
        except GradsvcError as error:
            problems.append(error)
    if problems:
        raise JobProblems.of(problems)
    return made


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
    return max(lengths.values(), default=1)  # a job of tensor inputs only: one point
