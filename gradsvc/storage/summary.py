"""summary.json: what a finished result is (written last: a folder with one is complete), how it
is checked when read back (a file a hand or a tool may have changed), and results.csv."""
from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timezone

import numpy as np

from ..job.spec import Job
from .key import result_key, versions

CSV_MAX_POINTS = 10_000  # grids up to this many points also get results.csv
SUMMARY_KEYS = ("complete", "status", "key", "points", "grid", "dtype", "outputs", "wrt", "nodes",
                "files", "verify", "timings", "variables", "same_as")
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")  # d2f.da.db


def description(job: Job) -> dict:
    """The job as a result describes it (in summary.json and the store's attributes)."""
    graph = job.graph
    described = {"name": job.name, "file": job.file, "description": job.description,
                 "points": job.grid.size, "grid": grid_summary(job), "dtype": job.settings.dtype,
                 "outputs": list(graph.outputs), "wrt": list(graph.wrt),
                 "formulas": graph.formulas}
    if graph.has_tensors or graph.hessian_outputs:
        described.update(shapes={n: list(graph.shape_of(n)) for n in graph.visible},
                         tensor_inputs=list(graph.tensor_inputs),
                         hessian_outputs=list(graph.hessian_outputs))
    return described


def grid_summary(job: Job) -> dict:
    grid = job.grid
    return {"mode": grid.mode, "shape": list(grid.shape), "inputs": list(grid.names)}


def build_summary(job: Job, done, variables: dict, same_as: dict, extra: dict | None) -> dict:
    """Everything but `files`, which the store adds once everything else is written."""
    from ..teaching.report import json_safe, verify_json
    return json_safe({
        "complete": True,
        "status": "ok" if done.verify.ok else "mismatch",
        **description(job),
        "key": result_key(job),
        "device": done.device,
        "nodes": list(done.kept),
        "verify": verify_json(done.verify),
        "timings": done.timings,
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "variables": variables,
        "same_as": same_as,
        **(extra or {}),
    })


def summary_damage(summary: dict) -> str | None:
    """What is wrong with a finished result's summary.json, or None: the fields that loading and
    resuming read, with the types gradsvc writes."""
    missing = [key for key in SUMMARY_KEYS if key not in summary]
    if missing or summary["complete"] is not True:
        return f"summary.json lacks {', '.join(missing) or 'complete: true'}"
    if not (_well_typed(summary) and _variables_well_typed(summary)):
        return "summary.json's grid, dtype, names or status are not what gradsvc writes"
    return None


def _well_typed(summary: dict) -> bool:
    def names(value) -> bool:
        return isinstance(value, list) and all(isinstance(n, str) for n in value)
    grid = summary["grid"]
    if not (isinstance(grid, dict) and names(grid.get("inputs")) and grid.get("mode") in
            ("product", "zip") and isinstance(grid.get("shape"), list)):
        return False
    shape = grid["shape"]
    return (all(isinstance(n, int) and n > 0 for n in shape)
            and isinstance(summary["points"], int)
            and (grid["mode"] == "zip" or (len(shape) == len(grid["inputs"])
                                           and int(np.prod(shape)) == summary["points"]))
            and summary["dtype"] in ("float32", "float64")
            and all(names(summary[key]) for key in ("nodes", "wrt", "outputs"))
            and summary["status"] in ("ok", "mismatch") and isinstance(summary["timings"], dict)
            and isinstance(summary["verify"], dict) and "max_rel_err" in summary["verify"])


def _variables_well_typed(summary: dict) -> bool:
    """Every stored variable a name gradsvc gives (no `/`, no `..`: names become object keys),
    with integer shape and chunks; every twin names a stored variable."""
    variables, same_as = summary["variables"], summary["same_as"]
    if not (isinstance(variables, dict) and isinstance(same_as, dict)):
        return False

    def sizes(value, least: int) -> bool:
        return isinstance(value, list) and all(isinstance(n, int) and n >= least for n in value)
    for name, v in variables.items():
        if not (VARIABLE_NAME.match(name) and isinstance(v, dict) and sizes(v.get("shape"), 0)
                and sizes(v.get("chunks"), 1) and len(v["shape"]) == len(v["chunks"])):
            return False
    return all(isinstance(t, str) and source in variables for t, source in same_as.items())


def csv_text(job: Job, columns: dict[str, np.ndarray]) -> str:
    """results.csv: one row per point, one column per number: the grid inputs, then the scalar
    values and scalar derivatives (`columns`, flat over the points, by their CSV names)."""
    from ..engine.jaxrun import DTYPES
    grid = job.grid
    coords = grid.coords(np.arange(grid.size)).astype(DTYPES[job.settings.dtype])
    names = list(grid.names) + list(columns)
    arrays = [coords[:, j] for j in range(len(grid.names))] + list(columns.values())
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["point"] + names)
    for i in range(grid.size):
        writer.writerow([i] + [repr(float(a[i])) for a in arrays])
    return text.getvalue()
