"""How one job's results are laid out as an xarray Dataset in a Zarr group: variable names,
dimensions, chunks, and the grid block a range of points is.

Names. A kept node's value is named as the node; a derivative `d{output}.d{name}` (the gradient
of a scalar output, the Jacobian of a tensor one); with `order: 2` a Hessian `d2{output}.d{a}.d{b}`.
Graph names are identifiers, so a `.` never clashes with one.

Dimensions. A product grid has one dimension per grid input, named after it, its axis (in the
job's dtype) its coordinate; a zip grid has one dimension, `point`, along which each varying
input is a coordinate (an input that does not vary is a 0-d coordinate). A tensor quantity adds
a dimension per axis of each name it is made of, `{name}_0`, `{name}_1`, ...: a Jacobian
dz.dW has z's then W's, a Hessian d2f.da.db a's then b's. A dimension name that is taken already,
by an earlier dimension of the same variable (dz.dz, d2f.dW.dW), a grid dimension or a name of
the job, gets a prime (`z_0'`), the same way in every variable, so a dimension always has one
length. Tensor inputs are variables of their own dimensions only.

Chunks. The engine computes the grid in blocks rectangular in the grid's shape and contiguous in
point order (`Grid.blocks`); a per-point variable's chunk is the block shape plus its own tensor
dimensions, so each range of points is one chunk of each variable and writers of different ranges
never touch one chunk.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..job.spec import Job

POINT_DIM = "point"  # the one dimension of a zip grid
AXIS_CHUNK = 1 << 20  # a product grid's axis is written once, before the points: big chunks


def derivative_name(key: tuple[str, ...]) -> str:
    """("grads", "z", "a") -> "dz.da"; ("hessians", "f", "a", "b") -> "d2f.da.db"."""
    if key[0] == "grads":
        return f"d{key[1]}.d{key[2]}"
    return f"d2{key[1]}.d{key[2]}.d{key[3]}"


def result_names(job: Job) -> list[str]:
    """Each result's variable name in the kernel's order: kept values, then derivatives."""
    from ..engine.jacobians import derivative_keys
    from ..engine.plan import kept_nodes
    return list(kept_nodes(job)) + [derivative_name(k) for k in derivative_keys(job.graph)]


def dtype_of(job: Job) -> np.dtype:
    from ..engine.jaxrun import DTYPES
    return np.dtype(DTYPES[job.settings.dtype])


@dataclass(frozen=True)
class Variable:
    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    attrs: dict = field(default_factory=dict)
    per_point: bool = False  # runs over the grid's points: written range by range


class _DimNames:
    """Dimension names of a job's Dataset, primed where a name is taken (module docstring)."""

    def __init__(self, job: Job):
        graph = job.graph
        self.taken = set(graph.inputs) | set(graph.named)
        self.point = _unique(POINT_DIM, self.taken - set(graph.grid_inputs))
        self.grid = grid_dims(job, self.point)
        self.taken |= set(self.grid)

    def tensor(self, names: tuple[str, ...], graph) -> tuple[str, ...]:
        dims: list[str] = []
        for name in names:
            for k in range(len(graph.shape_of(name))):
                dims.append(_unique(f"{name}_{k}", self.taken | set(dims)))
        return tuple(dims)


def _unique(name: str, taken: set[str]) -> str:
    while name in taken:
        name += "'"
    return name


def grid_dims(job: Job, point: str = POINT_DIM) -> tuple[str, ...]:
    grid = job.grid
    return (point,) if grid.mode == "zip" else grid.names


def result_variables(job: Job, block_shape: tuple[int, ...]) -> list[Variable]:
    """Every result's variable, in the kernel's order (`result_names`)."""
    from ..engine.jacobians import derivative_keys
    from ..engine.plan import kept_nodes
    graph, names = job.graph, _DimNames(job)
    point_shape = tuple(job.grid.shape)

    def made(name: str, parts: tuple[str, ...], attrs: dict) -> Variable:
        shape = tuple(d for p in parts for d in graph.shape_of(p))
        return Variable(name, names.grid + names.tensor(parts, graph), point_shape + shape,
                        tuple(block_shape) + shape, attrs, per_point=True)
    found = [made(n, (n,), {"quantity": "value", "node": n}) for n in kept_nodes(job)]
    for key in derivative_keys(graph):
        if key[0] == "grads":
            _, out, wrt = key
            kind = "jacobian" if graph.shape_of(out) else "gradient"
            found.append(made(derivative_name(key), (out, wrt),
                              {"quantity": kind, "output": out, "wrt": wrt}))
        else:
            _, out, a, b = key
            found.append(made(derivative_name(key), (a, b),
                              {"quantity": "hessian", "output": out, "wrt": [a, b]}))
    return found


def coordinate_variables(job: Job, block_shape: tuple[int, ...]) -> list[Variable]:
    """Each grid input's coordinate: a product grid's axes (dimension coordinates); a zip grid's
    varying inputs along the points (written range by range), and its inputs that do not vary as
    0-d coordinates."""
    grid, names = job.grid, _DimNames(job)
    if grid.mode == "product":
        return [Variable(a.name, (a.name,), (len(a),), (min(len(a), AXIS_CHUNK),),
                         {"quantity": "input"}) for a in grid.axes]
    return [Variable(a.name, (names.point,), (grid.size,), tuple(block_shape),
                     {"quantity": "input"}, per_point=True) if len(a) > 1
            else Variable(a.name, (), (), (), {"quantity": "input"}) for a in grid.axes]


def tensor_variables(job: Job) -> list[Variable]:
    graph, names = job.graph, _DimNames(job)
    return [Variable(n, names.tensor((n,), graph), graph.shape_of(n), graph.shape_of(n),
                     {"quantity": "tensor input"}) for n in graph.tensor_inputs]


def zip_coordinates(job: Job) -> str | None:
    """For a zip grid, the `coordinates` attribute of its per-point variables: how xarray knows
    that the inputs along `point` are coordinates, not data."""
    grid = job.grid
    return " ".join(grid.names) if grid.mode == "zip" and grid.names else None


def region(start: int, stop: int, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The points [start, stop) as a block of an array of `shape` (C order): one slice per
    dimension. A ValueError when they are not one rectangular block."""
    if not shape:
        if (start, stop) != (0, 1):
            raise ValueError(f"points [{start}, {stop}) of a grid of one point")
        return ()
    first = np.unravel_index(start, shape)
    last = np.unravel_index(stop - 1, shape)
    slices = tuple(slice(int(a), int(b) + 1) for a, b in zip(first, last))
    if math.prod(s.stop - s.start for s in slices) != stop - start:
        raise ValueError(f"points [{start}, {stop}) are not one block of the grid {shape}")
    return slices


def chunk_index(block: tuple[slice, ...], block_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The chunk that a block is, along the grid's dimensions."""
    return tuple(s.start // n for s, n in zip(block, block_shape))
