"""A queued job's result read back from its store: the run JSON (`gradsvc run --format json`'s
object, built from the stored arrays and summary.json), and the store's files, confined to it."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..storage.names import stays_inside


def result_json(job, store: Path) -> dict:
    """The object `to_json` makes of a run of `job`, from its finished store; for a
    `keep: stats` job, that object with its statistics in place of `values` and `grads`."""
    from ..api import Result
    from ..teaching.report import to_json
    graph = job.graph
    if job.settings.keep == "stats":
        from ..storage.load import finished_summary
        from ..storage.place import Place
        summary = finished_summary(Place.of(str(store)))
        doc = to_json(_result(Result, job, summary, {}, {o: {} for o in graph.outputs}, {}))
        for per_point in ("values", "grads", "hessians"):
            doc.pop(per_point, None)
        return {**doc, "stats": summary["stats"]}
    from ..storage.load import load_result
    ds = load_result(str(store))
    values = input_values(job)
    values.update({node: _per_point(job, ds[node]) for node in ds.attrs["nodes"]})
    grads = {out: {w: _per_point(job, ds[f"d{out}.d{w}"]) for w in graph.wrt}
             for out in graph.outputs}
    hessians = {out: {a: {b: _per_point(job, ds[f"d2{out}.d{a}.d{b}"]) for b in graph.wrt}
                      for a in graph.wrt} for out in graph.hessian_outputs}
    return to_json(_result(Result, job, ds.attrs, values, grads, hessians))


def _result(Result, job, summary: dict, values: dict, grads: dict, hessians: dict):
    """A Result of stored numbers: its verification and timings are summary.json's (already
    as JSON, which `to_json` passes through)."""
    return Result(job, values, grads, summary["verify"], summary["timings"], summary["dtype"],
                  summary["device"], hessians)


def input_values(job) -> dict[str, np.ndarray]:
    """Every input's values over the grid in the file's order, as `gradsvc.run` gives them: a
    grid input's coordinates, a tensor input the same at every point."""
    from ..engine.jaxrun import DTYPES
    grid, dtype = job.grid, DTYPES[job.settings.dtype]
    coords = grid.coords(np.arange(grid.size)).astype(dtype)
    values = {name: coords[:, j] for j, name in enumerate(grid.names)}
    for name, tensor in grid.tensors.items():
        values[name] = np.broadcast_to(tensor.astype(dtype), (grid.size, *tensor.shape))
    return {name: values[name] for name in job.graph.inputs}


def _per_point(job, variable) -> np.ndarray:
    """A stored variable (grid dimensions first) as (points, *its own shape), in grid order."""
    array = np.asarray(variable.values)
    return array.reshape(job.grid.size, *array.shape[len(job.grid.shape):])


def store_files(store: Path) -> list[tuple[str, int]]:
    """(relative path, size) of every plain file in the store, sorted; links are not followed."""
    found = []
    for folder, _, names in os.walk(store, followlinks=False):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                found.append((path.relative_to(store).as_posix(), path.stat().st_size))
    return sorted(found)


def confined(store: Path, path: str) -> Path | None:
    """The file `path` names inside `store`, or None: a path that climbs (`..`), is absolute,
    or leads outside the store through a link names no file here."""
    if not stays_inside(path):
        return None
    try:
        root = store.resolve()
        found = (root / path).resolve()
        if not found.is_relative_to(root) or not found.is_file():
            return None
    except (OSError, RuntimeError):  # a name too long, a loop of links: no such file here
        return None
    return found
