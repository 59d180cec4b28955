"""Results on disk: one folder per job, written atomically, streamed chunk by chunk.

A result folder holds
  values/<name>.npy           every input (the grid coordinates) and node, one number per point
  grads/<output>/<name>.npy   d output / d name, one number per point, for every wrt name
  axes/<input>.npy            each input's axis (reshape product-grid arrays to `grid.shape`)
  results.csv                 all of the above as a table, when the grid is small
  summary.json                verification, timings, versions, dtype, device, the job's hash

Arrays are plain .npy files: `np.load("results/job/values/z.npy")` (add `mmap_mode="r"` for big
ones), or `gradsvc.load_result("results/job")` for everything at once.

Atomicity: a job is written into a hidden temporary folder next to its final place and renamed into
place only after summary.json is written and flushed. A killed run leaves only a temporary folder,
which the next batch removes; a folder without the `.tmp-` mark is always complete.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import UsageError
from .spec import Job

CSV_MAX_POINTS = 10_000  # grids up to this many points also get results.csv
FORMAT_VERSION = 1
TMP_MARK = ".tmp-"


def _versions() -> dict:
    import jax
    import jaxlib

    from . import __version__
    return {"gradsvc": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def result_key(job: Job) -> dict:
    """What must match for an existing result to count as this job's: the job text, the resolved
    settings and the gradsvc version."""
    from . import __version__
    return {"content_hash": job.content_hash, "settings": job.settings.model_dump(),
            "gradsvc_version": __version__, "format": FORMAT_VERSION}


def safe_folder_name(name: str) -> str:
    cleaned = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in name).strip(".")
    return cleaned or "job"


def existing_summary(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_complete(folder: Path, job: Job) -> bool:
    summary = existing_summary(folder)
    return bool(summary and summary.get("complete") and summary.get("key") == result_key(job))


class _NpyColumn:
    """One .npy file written front to back: header first (the final shape is known), then chunks."""

    def __init__(self, path: Path, size: int, dtype, copy_of: Path | None = None):
        """With `copy_of`, the file goes on from a copy of that one (header and chunks so far)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if copy_of is not None:
            shutil.copyfile(copy_of, path)
            self.file = open(path, "ab")
            return
        self.file = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                  "shape": (size,)}
        np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, data: np.ndarray) -> None:
        self.file.write(memoryview(np.ascontiguousarray(data)).cast("B"))  # no intermediate copy

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


class DiskSink:
    """Streams each chunk's values and gradients to .npy files, in grid order.

    Results that are one array (the seed's dz/da and dz/db are both c*d: the kernel returns it
    once) are written once and hard-linked under the second name: at 1e8 points the disk is the
    bottleneck, and the seed graph's batch writes 1.6 GB instead of 2 GB.
    """

    def __init__(self, job: Job, folder: Path):
        from .api import kept_nodes
        from .jaxrun import DTYPES
        graph = job.graph
        self.size, self.dtype = job.grid.size, DTYPES[job.settings.dtype]
        self.paths = [folder / "values" / f"{n}.npy" for n in kept_nodes(job)]
        self.paths += [folder / "grads" / out / f"{n}.npy" for out in graph.outputs for n in graph.wrt]
        self.columns: dict[int, _NpyColumn] = {}  # opened at the first chunk
        self.twin_of: dict[int, int] = {}  # result index -> the written result it is the same array as

    def write(self, start: int, stop: int, values: list, grads: list) -> None:
        arrays = list(values) + list(grads)
        if not self.columns:
            self._open(arrays)
        for i, j in list(self.twin_of.items()):
            if arrays[i] is not arrays[j]:  # no longer one array: give it a file of its own
                self._separate(i, j)
        for i, column in self.columns.items():
            column.write(arrays[i])

    def _open(self, arrays: list) -> None:
        first: dict[int, int] = {}
        for i, array in enumerate(arrays):
            j = first.setdefault(id(array), i)
            if j != i:
                self.twin_of[i] = j
            else:
                self.columns[i] = _NpyColumn(self.paths[i], self.size, self.dtype)

    def _separate(self, i: int, j: int) -> None:
        """Result i stops being result j's array: its file starts as a copy of j's so far."""
        del self.twin_of[i]
        self.columns[j].file.flush()
        self.columns[i] = _NpyColumn(self.paths[i], self.size, self.dtype, copy_of=self.paths[j])

    def close(self) -> None:
        for column in self.columns.values():
            column.close()
        for i, j in self.twin_of.items():
            self.paths[i].parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self.paths[j], self.paths[i])
            except OSError:  # a file system without hard links: a copy of its own
                _NpyColumn(self.paths[i], self.size, self.dtype, copy_of=self.paths[j]).close()


@dataclass
class Written:
    folder: Path
    summary: dict


def write_result(out: Path, job: Job, execute, progress=None) -> Written:
    """Run `execute(job, sink, progress)` into a temporary folder, then move it into place."""
    final = out / safe_folder_name(job.name)
    tmp = out / f".{final.name}{TMP_MARK}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        sink = DiskSink(job, tmp)
        try:
            done = execute(job, sink, progress)
        finally:
            sink.close()
        for axis in job.grid.axes:
            (tmp / "axes").mkdir(exist_ok=True)
            np.save(tmp / "axes" / f"{axis.name}.npy", axis.values)
        if job.grid.size <= CSV_MAX_POINTS:
            _write_csv(tmp, job, done.kept)
        summary = _summary(job, done)
        _write_json(tmp / "summary.json", summary)
        _swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Written(final, summary)


def _summary(job: Job, done) -> dict:
    from .report import json_safe
    graph, grid = job.graph, job.grid
    return json_safe({
        "complete": True,
        "status": "ok" if done.verify.ok else "mismatch",
        "name": job.name,
        "file": job.file,
        "description": job.description,
        "key": result_key(job),
        "points": grid.size,
        "grid": {"mode": grid.mode, "shape": list(grid.shape), "inputs": list(grid.names)},
        "dtype": job.settings.dtype,
        "device": done.device,
        "outputs": list(graph.outputs),
        "wrt": list(graph.wrt),
        "nodes": list(done.kept),
        "formulas": graph.formulas,
        "verify": done.verify,
        "timings": done.timings,
        "versions": _versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def _write_csv(folder: Path, job: Job, kept: tuple[str, ...]) -> None:
    graph = job.graph
    coords = job.grid.coords(np.arange(job.grid.size))
    columns = [(n, folder / "values" / f"{n}.npy") for n in kept]
    columns += [(f"d{o}/d{n}", folder / "grads" / o / f"{n}.npy") for o in graph.outputs
                for n in graph.wrt]
    arrays = list(coords.T) + [np.load(path) for _, path in columns]
    columns = [(n, None) for n in graph.inputs] + columns
    with open(folder / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["point"] + [name for name, _ in columns])
        for i in range(job.grid.size):
            writer.writerow([i] + [repr(float(a[i])) for a in arrays])


def _write_json(path: Path, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    _write_json(tmp, data)
    os.replace(tmp, path)


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished folder into place; an older result is moved aside first, then removed."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}{TMP_MARK}old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(out: Path) -> list[str]:
    """Delete what killed runs left behind (only `.name.tmp-*` entries; results are untouched).
    Returns the result names they were for (`big` for `.big.tmp-4242`)."""
    removed = []
    for entry in sorted(out.glob(f".*{TMP_MARK}*")):
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name[1:].split(TMP_MARK)[0])
    return list(dict.fromkeys(removed))


def load_result(folder: str | Path, mmap: bool = True) -> dict:
    """A finished result folder as {"summary", "values", "grads", "axes", "coords"}.

    `values` and `grads` are the stored arrays; `axes` each input's axis; `coords` each input's
    value at every point (computed from the axes, in grid order).

    >>> r = load_result("results/seed-chain")  # doctest: +SKIP
    >>> r["grads"]["e"]["a"][0]                 # doctest: +SKIP
    12.0
    """
    folder = Path(folder)
    summary = existing_summary(folder)
    if not summary or not summary.get("complete"):
        raise UsageError(f"{folder} is not a finished gradsvc result (no complete summary.json)",
                         hint="run `gradsvc batch` to produce it")
    mode = "r" if mmap else None
    values = {n: np.load(folder / "values" / f"{n}.npy", mmap_mode=mode) for n in summary["nodes"]}
    grads = {o: {n: np.load(folder / "grads" / o / f"{n}.npy", mmap_mode=mode) for n in summary["wrt"]}
             for o in summary["outputs"]}
    axes = {n: np.load(folder / "axes" / f"{n}.npy") for n in summary["grid"]["inputs"]}
    return {"summary": summary, "values": values, "grads": grads, "axes": axes,
            "coords": _coords(summary["grid"], axes)}


def _coords(grid: dict, axes: dict) -> dict:
    names, points = grid["inputs"], int(np.prod(grid["shape"]))
    if grid["mode"] == "zip":
        return {n: np.broadcast_to(axes[n], (points,)) if len(axes[n]) == 1 else axes[n]
                for n in names}
    digits = np.unravel_index(np.arange(points), tuple(len(axes[n]) for n in names))
    return {n: axes[n][d] for n, d in zip(names, digits)}
