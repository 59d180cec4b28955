"""A loaded result's variables as gradsvc's in-memory results hold them: one row per point, in
grid order (what plots, tables and comparisons with `gradsvc.run` take)."""
from __future__ import annotations

import numpy as np


def per_point(ds, name: str) -> np.ndarray:
    """Variable `name` as (points, *its shape at one point): a product grid's dimensions
    flattened in C order, the order of the points; a tensor input, the same at every point, as a
    broadcast view (as `gradsvc.run` gives it)."""
    grid_ndim = len(ds.attrs["grid"]["shape"])
    array = ds[name]
    if array.attrs.get("quantity") == "tensor input":
        return np.broadcast_to(array.values, (ds.attrs["points"], *array.shape))
    return np.asarray(array.values).reshape(ds.attrs["points"], *array.shape[grid_ndim:])


def point_coordinate(ds, name: str) -> np.ndarray:
    """Grid input `name`'s value at every point, in grid order (read-only: a product grid's is a
    broadcast of its axis, copied once)."""
    grid, points = ds.attrs["grid"], ds.attrs["points"]
    values = np.asarray(ds[name].values)
    if grid["mode"] == "zip":
        return np.broadcast_to(values, (points,)) if values.size == 1 else values
    along = [1] * len(grid["shape"])
    along[grid["inputs"].index(name)] = len(values)
    built = np.broadcast_to(values.reshape(along), tuple(grid["shape"])).reshape(-1)
    built.flags.writeable = False
    return built
