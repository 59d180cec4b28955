"""Results on disk: one folder per job, written atomically, streamed chunk by chunk.

A result folder holds
  values/<node>.npy           each kept node's value: (points, *its shape)
  grads/<output>/<name>.npy   d output / d name for every wrt name: (points, *output shape, *name
                              shape), the gradient or the Jacobian
  hessians/<out>/<a>/<b>.npy  with `order: 2`, for every scalar output: (points, *a shape, *b shape)
  axes/<input>.npy            each grid input's axis in the job's dtype, as the kernel saw it
                              (reshape product-grid arrays' points axis to `grid.shape`)
  tensors/<input>.npy         each tensor input, once (it is the same at every point)
  results.csv                 the grid inputs, scalar values and scalar gradients as a table, when
                              the grid is small
  summary.json                verification, timings, versions, dtype, device, the job's hash, and
                              every other file's size and CRC-32 (`files`)

Arrays are plain .npy files: `np.load("results/job/values/z.npy")` (add `mmap_mode="r"` for big
ones), or `gradsvc.load_result("results/job")` for everything at once.

Atomicity: a job is written into a hidden temporary folder next to its final place and renamed into
place only after summary.json is written and flushed. A killed run leaves only a temporary folder,
which the next batch removes; a folder without the `.tmp-` mark was complete when it was written.

Integrity: what happens to a folder afterwards (a deleted or truncated file, values overwritten)
is caught by the sizes and checksums in summary.json (`integrity`): `gradsvc batch` recomputes a
damaged result instead of skipping it, and `load_result` refuses one.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import Location, ResultError
from .integrity import ChecksummedFile, find_damage, record_of, wants_checksums
from ..job.spec import Job

CSV_MAX_POINTS = 10_000  # grids up to this many points also get results.csv
FORMAT_VERSION = 2  # 2: summary.json records each file's size and CRC-32; axes in the job's dtype
TMP_MARK = ".tmp-"


def _versions() -> dict:
    import jax
    import jaxlib

    from .. import __version__
    return {"gradsvc": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def result_key(job: Job) -> dict:
    """What must match for an existing result to count as this job's: the job text, the resolved
    settings and the gradsvc version."""
    from .. import __version__
    return {"content_hash": job.content_hash, "settings": job.settings.model_dump(),
            "gradsvc_version": __version__, "format": FORMAT_VERSION}


def safe_folder_name(name: str) -> str:
    cleaned = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in name).strip(".")
    return cleaned or "job"


def existing_summary(folder: Path) -> dict | None:
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


@dataclass
class Stored:
    """What a result folder holds for a job: its finished result (`summary`), and `damage`, what
    is wrong with that result's files (or with the folder, when it has no readable summary)."""
    summary: dict | None
    damage: str | None

    @property
    def complete(self) -> bool:
        return self.summary is not None and self.damage is None


def stored_result(folder: Path, job: Job, verify: bool | None = None) -> Stored:
    """Whether `folder` holds this job's finished result intact. A result of another job text,
    settings or gradsvc version is no damage: it is simply not this job's (Stored(None, None)).
    Sizes are always checked; checksums when `verify` (None: when cheap, see `integrity`)."""
    summary = existing_summary(folder)
    if summary is None:
        try:
            unreadable = folder.is_dir() and any(folder.iterdir())
        except OSError:  # cannot even be listed: writing the result will say why
            unreadable = False
        return Stored(None, _summary_unreadable(folder) if unreadable else None)
    if not (summary.get("complete") and summary.get("key") == result_key(job)):
        return Stored(None, None)
    return Stored(summary, summary_damage(summary) or files_damage(folder, summary, verify))


def _summary_unreadable(folder: Path) -> str:
    path = folder / "summary.json"
    return "summary.json is missing" if not path.exists() else "summary.json is not readable JSON"


def files_damage(folder: Path, summary: dict, verify: bool | None) -> str | None:
    """What is wrong with the files of a finished result (whose summary is well formed: see
    `summary_damage`), or None. Every array the summary names must be recorded, so that a
    record removed together with its file is damage too."""
    records = summary.get("files")
    if not isinstance(records, dict) or not records:
        return "summary.json records no files"
    named = [f"values/{n}.npy" for n in summary["nodes"]]
    named += [f"grads/{o}/{n}.npy" for o in summary["outputs"] for n in summary["wrt"]]
    named += [f"axes/{n}.npy" for n in summary["grid"]["inputs"]]
    named += [f"tensors/{n}.npy" for n in summary.get("tensor_inputs", [])]
    named += [f"hessians/{o}/{a}/{b}.npy" for o in summary.get("hessian_outputs", [])
              for a in summary["wrt"] for b in summary["wrt"]]
    unrecorded = next((name for name in named if name not in records), None)
    if unrecorded:
        return f"summary.json names {unrecorded} but records no such file"
    return find_damage(folder, records, wants_checksums(records, verify))


class _NpyColumn:
    """One .npy file written front to back: header first (the final shape is known), then chunks;
    its size and checksum are counted on the way out."""

    def __init__(self, path: Path, size: int, dtype, copy_of: _NpyColumn | None = None,
                 shape: tuple[int, ...] = ()):
        """An array of (size, *shape); with `copy_of`, the file goes on from a copy of that one
        (header and chunks so far)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        if copy_of is not None:
            copy_of.file.flush()
            shutil.copyfile(copy_of.path, path)
            self.file = ChecksummedFile(path, "ab", crc32=copy_of.file.crc32,
                                        size=copy_of.file.size)
            return
        self.file = ChecksummedFile(path)
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                  "shape": (size, *shape)}
        np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, data: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(data))  # no intermediate copy

    def close(self) -> None:
        self.file.close()


def result_files(graph, kept: tuple[str, ...]) -> list[str]:
    """Each array's file in a result folder, in the kernel's order: the kept values, then each
    derivative (grads/<output>/<name>.npy, hessians/<output>/<a>/<b>.npy)."""
    from ..engine.jacobians import derivative_keys
    return [f"values/{n}.npy" for n in kept] + ["/".join(key) + ".npy"
                                                 for key in derivative_keys(graph)]


class DiskSink:
    """Streams each chunk's values and gradients to .npy files, in grid order.

    Results that are one array (the seed's dz/da and dz/db are both c*d: the kernel returns it
    once) are written once and hard-linked under the second name: at 1e8 points the disk is the
    bottleneck, and the seed graph's batch writes 1.6 GB instead of 2 GB.
    """

    whole = False  # results stream to disk: chunks of bounded size

    def __init__(self, job: Job, folder: Path):
        from ..engine.jaxrun import DTYPES
        from ..engine.plan import result_layout
        self.folder = folder
        self.size, self.dtype = job.grid.size, DTYPES[job.settings.dtype]
        self.layout = result_layout(job)
        self.paths = [folder / name for name in result_files(job.graph, self.layout.kept)]
        self.shapes = self.layout.shapes
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
                self.columns[i] = _NpyColumn(self.paths[i], self.size, self.dtype,
                                             shape=self.shapes[i])

    def _separate(self, i: int, j: int) -> None:
        """Result i stops being result j's array: its file starts as a copy of j's so far."""
        del self.twin_of[i]
        self.columns[i] = _NpyColumn(self.paths[i], self.size, self.dtype,
                                     copy_of=self.columns[j], shape=self.shapes[i])

    def rewind(self) -> None:
        """Forget every chunk written: the job is being computed again (api.execute), and every
        file starts over at its next write."""
        for column in self.columns.values():
            column.close()
        for path in self.paths:
            path.unlink(missing_ok=True)
        self.columns, self.twin_of = {}, {}

    def close(self) -> None:
        for column in self.columns.values():
            column.close()
        for i, j in self.twin_of.items():
            self.paths[i].parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(self.paths[j], self.paths[i])
            except OSError:  # a file system without hard links: a copy of its own
                _NpyColumn(self.paths[i], self.size, self.dtype, copy_of=self.columns[j],
                           shape=self.shapes[i]).close()

    def records(self) -> dict[str, dict]:
        """Size and checksum of every file written, by its path in the folder (twins too)."""
        written = {i: column.file.record() for i, column in self.columns.items()}
        written.update({i: written[j] for i, j in self.twin_of.items()})
        return {self.paths[i].relative_to(self.folder).as_posix(): written[i]
                for i in sorted(written)}


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
        files = sink.records()
        files.update(_write_axes(tmp, job))
        if job.grid.size <= CSV_MAX_POINTS:
            _write_csv(tmp, job, done.kept)
            files["results.csv"] = record_of(tmp / "results.csv")  # small: read back
        summary = _summary(job, done, files)
        _write_json(tmp / "summary.json", summary)
        _swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Written(final, summary)


def _axes_as_run(job: Job) -> list[tuple[str, np.ndarray]]:
    """Each input's axis in the job's dtype: the numbers the kernel computed with (a float32
    job's 0.1 is 0.100000001490116..., not float64's 0.1)."""
    from ..engine.jaxrun import DTYPES
    dtype = DTYPES[job.settings.dtype]
    return [(axis.name, axis.values.astype(dtype)) for axis in job.grid.axes]


def _write_axes(folder: Path, job: Job) -> dict[str, dict]:
    """Each grid input's axis, and each tensor input once (it is the same at every point)."""
    from ..engine.jaxrun import DTYPES
    dtype = DTYPES[job.settings.dtype]
    arrays = [(f"axes/{name}.npy", values) for name, values in _axes_as_run(job)]
    arrays += [(f"tensors/{name}.npy", tensor.astype(dtype))
               for name, tensor in job.grid.tensors.items()]
    records = {}
    for name, values in arrays:
        (folder / name).parent.mkdir(exist_ok=True)
        out = ChecksummedFile(folder / name)
        try:
            np.save(out, values)
        finally:
            out.close()
        records[name] = out.record()
    return records


def _summary(job: Job, done, files: dict[str, dict]) -> dict:
    from ..teaching.report import json_safe, verify_json
    graph, grid = job.graph, job.grid
    return json_safe({
        "complete": True,
        "status": "ok" if done.verify.ok else "mismatch",
        "name": job.name,
        "file": job.file,
        "description": job.description,
        "key": result_key(job),
        "points": grid.size,
        "grid": _grid_summary(job),
        "dtype": job.settings.dtype,
        "device": done.device,
        "outputs": list(graph.outputs),
        "wrt": list(graph.wrt),
        "nodes": list(done.kept),
        **_tensor_summary(graph),
        "formulas": graph.formulas,
        "verify": verify_json(done.verify),
        "timings": done.timings,
        "versions": _versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": files,
    })


def _tensor_summary(graph) -> dict:
    """What a tensor job's summary adds: every name's shape at one point, the tensor inputs and
    the outputs with Hessians (a scalar job's summary is as it was)."""
    if not (graph.has_tensors or graph.hessian_outputs):
        return {}
    return {"shapes": {n: list(graph.shape_of(n)) for n in graph.visible},
            "tensor_inputs": list(graph.tensor_inputs),
            "hessian_outputs": list(graph.hessian_outputs)}


def _grid_summary(job: Job) -> dict:
    """The grid as summary.json holds it (and as PointCoords reads it)."""
    grid = job.grid
    return {"mode": grid.mode, "shape": list(grid.shape), "inputs": list(grid.names)}


def _write_csv(folder: Path, job: Job, kept: tuple[str, ...]) -> None:
    """One row per point, one column per number: the grid inputs, the scalar values and the
    scalar gradients (tensors are in their .npy files; the summary lists their shapes)."""
    graph = job.graph
    shape = graph.shape_of
    coords = PointCoords(_grid_summary(job), dict(_axes_as_run(job)))
    columns = [(n, folder / "values" / f"{n}.npy") for n in kept if not shape(n)]
    columns += [(f"d{o}/d{n}", folder / "grads" / o / f"{n}.npy") for o in graph.outputs
                for n in graph.wrt if not shape(o) + shape(n)]
    arrays = [coords[n] for n in graph.grid_inputs] + [np.load(path) for _, path in columns]
    columns = [(n, None) for n in graph.grid_inputs] + columns
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


def load_result(folder: str | Path, mmap: bool = True, verify: bool | None = None) -> dict:
    """A finished result folder as {"summary", "values", "grads", "axes", "coords"}, and for a
    tensor job (or `order: 2`) "tensors" and "hessians" too.

    `values` and `grads` are the stored arrays; `axes` each input's axis, in the job's dtype as the
    kernel saw it; `coords` each input's value at every point, in grid order, built from the axes
    only when one is first looked up (a product grid's coordinates take a full array per input).

    The folder is checked before anything is trusted: every file's size always, and its checksum
    with `verify=True`, or by default (`verify=None`) when the folder is at most
    `integrity.CHEAP_TO_VERIFY_BYTES`; `verify=False` checks sizes only. A missing, truncated or
    changed file raises `ResultError` naming it.

    >>> r = load_result("results/seed-chain")  # doctest: +SKIP
    >>> r["grads"]["e"]["a"][0]                 # doctest: +SKIP
    12.0
    """
    folder = Path(folder)
    summary = _finished_summary(folder)
    damage = files_damage(folder, summary, verify)
    if damage:
        raise _damaged(folder, damage)
    mode = "r" if mmap else None
    points, dtype = summary["points"], np.dtype(summary["dtype"])

    def load(name: str, shape: tuple, how=mode) -> np.ndarray:
        return _load_array(folder, name, how, shape, dtype)  # a recorded file: size just checked
    shapes = {n: tuple(s) for n, s in summary.get("shapes", {}).items()}

    def shaped(*names: str) -> tuple:
        return tuple(d for n in names for d in shapes.get(n, ()))
    values = {n: load(f"values/{n}.npy", (points, *shaped(n))) for n in summary["nodes"]}
    grads = {o: {n: load(f"grads/{o}/{n}.npy", (points, *shaped(o, n))) for n in summary["wrt"]}
             for o in summary["outputs"]}
    wrt = summary["wrt"]
    hessians = {o: {a: {b: load(f"hessians/{o}/{a}/{b}.npy", (points, *shaped(a, b)))
                        for b in wrt} for a in wrt} for o in summary.get("hessian_outputs", [])}
    grid = summary["grid"]
    lengths = grid["shape"] if grid["mode"] == "product" else [None] * len(grid["inputs"])
    axes = {n: load(f"axes/{n}.npy", (length,), None) for n, length in zip(grid["inputs"], lengths)}
    tensors = {n: load(f"tensors/{n}.npy", shapes[n], None)
               for n in summary.get("tensor_inputs", [])}
    loaded = {"summary": summary, "values": values, "grads": grads, "axes": axes,
              "coords": PointCoords(grid, axes)}
    if tensors or hessians:  # a scalar job's result is as it was
        loaded.update(tensors=tensors, hessians=hessians)
    return loaded


SUMMARY_KEYS = ("complete", "status", "key", "points", "grid", "dtype", "outputs", "wrt", "nodes",
                "files", "verify", "timings")


def summary_damage(summary: dict) -> str | None:
    """What is wrong with a finished result's summary.json (a file a hand or a tool may have
    changed), or None: the fields that loading and resuming read, with the types gradsvc writes."""
    missing = [key for key in SUMMARY_KEYS if key not in summary]
    if missing or summary["complete"] is not True:
        return f"summary.json lacks {', '.join(missing) or 'complete: true'}"
    if not _well_typed(summary):
        return "summary.json's grid, dtype, names or status are not what gradsvc writes"
    return None


def _finished_summary(folder: Path) -> dict:
    """The summary of a finished result in this format, or a ResultError saying why not."""
    if not folder.is_dir():
        raise ResultError(f"{folder} is not a folder", hint="give the folder of one job inside "
                          "a `gradsvc batch` --out folder")
    summary = existing_summary(folder)
    if summary is None:
        why = _summary_unreadable(folder)
        raise ResultError(f"{folder} is not a finished gradsvc result: {why}",
                          hint="run `gradsvc batch` to produce it (a rerun recomputes a damaged "
                          "one)")
    key = summary.get("key")
    written = key.get("format") if isinstance(key, dict) else None
    if written != FORMAT_VERSION:
        raise ResultError(f"{folder} was written in result format {written}, this gradsvc reads "
                          f"format {FORMAT_VERSION}",
                          hint="rerun the `gradsvc batch` that made it: it rewrites the result")
    damage = summary_damage(summary)
    if damage:
        raise _damaged(folder, damage)
    return summary


def _well_typed(summary: dict) -> bool:
    """The fields load_result reads have the types gradsvc writes (summary.json is a file a hand
    or a tool may have changed)."""
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


def _damaged(folder: Path, damage: str) -> ResultError:
    return ResultError(f"damaged result: {damage}", where=Location(str(folder)),
                       hint=f"rerun the `gradsvc batch` that made it (--out {folder.parent}): "
                       "it recomputes damaged results")


def _load_array(folder: Path, name: str, mode, shape: tuple, dtype) -> np.ndarray:
    """One stored array, checked to be what the summary says (a header can be damaged without
    changing the file's size); a None in `shape` is any length."""
    try:
        array = np.load(folder / name, mmap_mode=mode, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise _damaged(folder, f"{name} is not a readable .npy file ({error})") from None
    fits = array.ndim == len(shape) and all(n is None or n == m for n, m in zip(shape, array.shape))
    if not fits or array.dtype != dtype:
        expected = f"({', '.join('n' if n is None else str(n) for n in shape)}{',' * (len(shape) == 1)}) {dtype}"
        raise _damaged(folder, f"{name} holds a {array.shape} {array.dtype} array, "
                       f"expected {expected}")
    return array


class PointCoords(Mapping):
    """Each input's value at every point (a read-only array per input), built on first lookup.

    A product grid's point i sits at `np.unravel_index(i, shape)` in the axes; building all inputs'
    coordinates at once took int64 index arrays as well (benchmarks/README.md has the peak). Here
    one lookup costs one array of the input's own size, made from a broadcast view of its axis.
    """

    def __init__(self, grid: dict, axes: dict[str, np.ndarray]):
        self.mode, self.names = grid["mode"], list(grid["inputs"])
        self.points = int(np.prod(grid["shape"]))
        self.axes, self._built = axes, {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._built:
            if name not in self.axes:
                raise KeyError(name)
            self._built[name] = self._build(name)
        return self._built[name]

    def _build(self, name: str) -> np.ndarray:
        axis = self.axes[name]
        if self.mode == "zip":
            return np.broadcast_to(axis, (self.points,)) if len(axis) == 1 else axis
        shape = tuple(len(self.axes[n]) for n in self.names)
        along = [1] * len(shape)
        along[self.names.index(name)] = len(axis)
        built = np.broadcast_to(axis.reshape(along), shape).reshape(-1)  # one copy, no indices
        built.flags.writeable = False
        return built

    def __iter__(self):
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (f"<coordinates of {', '.join(self.names)} at {self.points:,} points "
                f"({self.mode} grid), built on lookup>")
