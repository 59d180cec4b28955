"""ZarrSink: a job's results written into its Zarr store range by range, resumable.

The protocol `api.execute` drives (and a Dask worker, which re-creates the sink from its folder
URL and job, or unpickles it):
  prepare(block_shape, ranges, twins) -> the ranges still to compute: creates the store, or finds
      the one an interrupted run of the same job left (same result key, blocks and twins) and
      keeps its finished ranges; any other store in the folder is cleared first;
  write(start, stop, values, derivatives): one whole range: its chunk of every array, synced,
      then a done marker (`.gradsvc/done/<start>-<stop>`, with the sizes of the chunks);
  rows(indices) -> (values, derivatives): stored points, for verifying a resumed run;
  rewind(): forget what was written (the job runs again);
  finish(job, execution, extra) -> summary: results.csv, attributes, consolidated metadata, every
      object's size, and summary.json last.
Results that are one array (`twins`: the seed's dz/db is dz/da) are stored once; the second name
is in the attributes (`same_as`).
"""
from __future__ import annotations

import json
import re
import warnings
from contextlib import contextmanager

import numpy as np

from ..errors import ResultError
from ..job.spec import Job
from . import integrity
from .key import FORMAT_VERSION, result_key
from .layout import (chunk_index, coordinate_variables, dtype_of, region, result_names,
                     result_variables, tensor_variables, zip_coordinates)
from .place import Place
from .summary import CSV_MAX_POINTS, build_summary, csv_text, description

DONE = ".gradsvc/done"  # one marker per finished range (zarr ignores what is not its own)
MARKER = re.compile(r"(\d+)-(\d+)")  # a marker's name: its range's first point and end
WRITERS = 4  # arrays of a range written at once
ZSTD_LEVEL = 1  # benchmarks/README.md: faster levels compress worse and run no faster


class ZarrSink:
    whole = False  # results stream to the store: chunks of bounded size

    def __init__(self, folder, job: Job, fresh: bool = False):
        """`folder`: the job's result folder (path, URL or Place); `fresh`: clear whatever is
        there at `prepare` (a result being recomputed), instead of resuming it."""
        from ..engine.plan import result_layout
        self.place = folder if isinstance(folder, Place) else Place.of(folder)
        self.job, self.fresh = job, fresh
        self.layout = result_layout(job)
        self.names = result_names(job)
        self.block_shape: tuple[int, ...] = ()
        self.ranges: list[tuple[int, int]] = []
        self.twins: dict[int, int] = {}
        self._arrays = None  # opened on first use; never pickled (a worker opens its own)
        self._ranges_known: set | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None, "_ranges_known": None}

    @property
    def keeps_arrays(self) -> bool:
        return self.job.settings.keep == "arrays"

    # --- the protocol ---

    def prepare(self, block_shape, ranges, twins: dict[int, int],
                kernel: tuple = ()) -> list[tuple[int, int]]:
        """`kernel`: how the kernel was compiled (fast sin/cos, quick): ranges written by another
        kind of kernel round differently, so a store of another kind is not resumed."""
        self.kernel = list(kernel)
        self.block_shape = tuple(int(n) for n in block_shape)
        self.ranges = [(int(a), int(b)) for a, b in ranges]
        self.twins = {int(i): int(j) for i, j in twins.items()}
        self._arrays = self._ranges_known = None
        identity = self._identity()
        if self.fresh or stored_identity(self.place) != identity:
            self._create(identity)
            self.fresh = False
            return list(self.ranges)
        self._remove_torn_writes()
        done = self._done_ranges()
        return [r for r in self.ranges if r not in done]

    def _remove_torn_writes(self) -> None:
        """A writer killed mid-chunk leaves zarr's temporary `<chunk>.<uuid>.partial` object
        (a local store writes there, then renames): never part of a result."""
        for key in self.place.sizes():
            if key.endswith(".partial"):
                self.place.remove(key)

    def write(self, start: int, stop: int, values: list, derivatives: list) -> None:
        if not self.keeps_arrays:  # `keep: stats`: the executor keeps statistics instead
            return
        if (start, stop) not in self._range_set():  # half a chunk would be read, then rewritten
            raise ValueError(f"points [{start}, {stop}) are not one of the store's ranges")
        block = region(start, stop, tuple(self.job.grid.shape))
        results = list(values) + list(derivatives)
        pieces = [(name, array, self._coordinate(name, start, stop) if source is None
                   else results[source]) for name, (array, source) in self._opened().items()]
        written = list(_pool().map(
            lambda piece: _write_block(*piece[:2], block, self.block_shape, piece[2]), pieces))
        sizes = self.place.settle(written)
        self.place.write_json(f"{DONE}/{start}-{stop}", {"objects": sizes})

    def rows(self, indices) -> tuple[list, list]:
        """The stored rows of `indices` (points of finished ranges): each result an array of
        (len(indices), *its shape), read block by block."""
        indices = np.asarray(indices, dtype=np.int64)
        out = [np.empty((len(indices), *s), dtype_of(self.job)) for s in self.layout.shapes]
        starts = np.array([a for a, _ in self.ranges])
        which = np.searchsorted(starts, indices, side="right") - 1
        opened = self._opened()
        for k in np.unique(which):
            start, stop = self.ranges[k]
            block = region(start, stop, tuple(self.job.grid.shape))
            picked = np.flatnonzero(which == k)
            read = {}  # a twin's block is read once
            for i in range(len(self.names)):
                name = self.names[self.twins.get(i, i)]
                if name not in read:
                    read[name] = self._read_block(opened[name][0], block, name).reshape(
                        stop - start, *self.layout.shapes[i])
                out[i][picked] = read[name][indices[picked] - start]
        n_values = len(self.layout.kept)
        return out[:n_values], out[n_values:]

    def _read_block(self, array, block, name: str) -> np.ndarray:
        try:
            return np.asarray(array[block])
        except ValueError as error:  # zarr's crc32c: the chunk changed since it was written
            raise ResultError(f"a chunk of {name} in the unfinished result at {self.place} is "
                              f"damaged ({error})",
                              hint="rerun with --force: the result is computed from the "
                              "start") from None

    def rewind(self) -> None:
        """Forget every range written: the job is being computed again (every range is rewritten
        before the store is finished)."""
        self.place.remove_folder(DONE)

    def finish(self, job: Job, execution, extra: dict | None = None) -> dict:
        """results.csv (small grids), the summary in the attributes, consolidated metadata, every
        object synced and recorded, then summary.json: from here on the result is complete."""
        if self.fresh or stored_identity(self.place) is None:  # not prepared: no arrays
            self._create(self._identity())
        self._check_every_range_written()
        variables, same_as = self._variables_record()
        summary = build_summary(job, execution, variables, same_as, extra)
        if self.keeps_arrays and job.grid.size <= CSV_MAX_POINTS:
            self.place.write("results.csv", csv_text(job, self._csv_columns()).encode("utf-8"))
        self._finish_group(summary)
        sizes = {k: n for k, n in self.place.sizes().items() if k != "summary.json"}
        small = [k for k in sizes if not integrity.is_chunk(k)]
        self.place.settle(small)  # chunks were synced range by range
        files = {k: {"bytes": n} for k, n in sizes.items()}
        files.update({k: integrity.record(self.place.read(k), checksum=True) for k in small})
        summary["files"] = dict(sorted(files.items()))
        self.place.write_json("summary.json", summary)
        return summary

    def _check_every_range_written(self) -> None:
        """A result is complete only with every range in it: workers that wrote their ranges
        where this process cannot see them (a local --out on a cluster) must not leave a store
        of fill values declared complete."""
        missing = set(self.ranges) - self._done_ranges() if self.keeps_arrays else set()
        if missing:
            raise ResultError(
                f"{len(missing):,} of {len(self.ranges):,} ranges of points are not in the store "
                f"at {self.place}: whoever computed them wrote them elsewhere",
                hint="on a cluster, --out must be storage every worker and this client share (a "
                "shared file system, s3://, gs://); rerun to compute what is missing")

    # --- creating and opening the store ---

    def _identity(self) -> dict:
        """What a store must have been made for to be resumed by this run."""
        return _json({"format": FORMAT_VERSION, "key": result_key(self.job),
                      "block_shape": list(self.block_shape), "ranges": len(self.ranges),
                      "kernel": getattr(self, "kernel", []),
                      "same_as": self._same_as()})

    def _same_as(self) -> dict[str, str]:
        if not self.keeps_arrays:
            return {}
        return {self.names[i]: self.names[j] for i, j in sorted(self.twins.items())}

    def _stored_results(self):
        """(variable, index of its result) of every result stored (twins are not)."""
        if not self.keeps_arrays:
            return []
        return [(v, i) for i, v in enumerate(result_variables(self.job, self.block_shape))
                if i not in self.twins]

    def _create(self, identity: dict) -> None:
        import zarr
        self.place.clear()
        attributes = {"gradsvc": identity, **_json(description(self.job)),
                      "same_as": identity["same_as"]}
        group = zarr.open_group(self.place.opened, mode="w", zarr_format=3, attributes=attributes)
        if self.keeps_arrays:
            coordinates = zip_coordinates(self.job)
            for variable, _ in self._stored_results():
                _create_array(group, variable, self.job, coordinates)
            self._write_constants(group)
        self.place.settle(self.place.sizes())  # a power cut must not lose what resuming trusts

    def _write_constants(self, group) -> None:
        """The product grid's axes, a zip grid's inputs that do not vary, the tensor inputs: all
        known before any point is computed, written once, in the job's dtype."""
        dtype, grid = dtype_of(self.job), self.job.grid
        axes = {a.name: a for a in grid.axes}  # a zip grid's random inputs are not held
        for variable in coordinate_variables(self.job, self.block_shape):
            array = _create_array(group, variable, self.job, None)
            if not variable.per_point:
                array[...] = axes[variable.name].values.astype(dtype).reshape(variable.shape)
        for variable in tensor_variables(self.job):
            _create_array(group, variable, self.job, None)[...] = \
                grid.tensors[variable.name].astype(dtype)

    def _opened(self) -> dict:
        """{variable name: (zarr array, result index or None for a zip coordinate)} of every
        array a range writes."""
        if self._arrays is None:
            import zarr
            group = zarr.open_group(self.place.opened, mode="r+", zarr_format=3)
            arrays = {v.name: (group[v.name], i) for v, i in self._stored_results()}
            if self.keeps_arrays:
                arrays.update({v.name: (group[v.name], None) for v in
                               coordinate_variables(self.job, self.block_shape) if v.per_point})
            self._arrays = arrays
        return self._arrays

    def _range_set(self) -> set[tuple[int, int]]:
        if self._ranges_known is None:
            self._ranges_known = set(self.ranges)
        return self._ranges_known

    def _coordinate(self, name: str, start: int, stop: int) -> np.ndarray:
        """A zip grid's varying input over points [start, stop), as the kernel saw it."""
        grid = self.job.grid
        column = grid.names.index(name)
        return grid.coords(np.arange(start, stop))[:, column].astype(dtype_of(self.job))

    def _done_ranges(self) -> set[tuple[int, int]]:
        """The ranges whose markers are there and whose chunks still have the sizes written."""
        sizes = self.place.sizes()
        done = set()
        for key in sizes:
            if not key.startswith(DONE + "/"):
                continue
            named = MARKER.fullmatch(key.rsplit("/", 1)[1])
            if named is None:  # not gradsvc's (an editor's backup, a .DS_Store)
                continue
            try:
                marker = self.place.read_json(key)
            except ValueError:  # torn by a kill: its range is written again
                continue
            objects = marker.get("objects") if isinstance(marker, dict) else None
            if isinstance(objects, dict) and all(sizes.get(k) == n for k, n in objects.items()):
                done.add((int(named[1]), int(named[2])))
        return done

    # --- finishing ---

    def _variables_record(self) -> tuple[dict, dict]:
        variables = {v.name: {"dims": list(v.dims), "shape": list(v.shape),
                              "chunks": list(v.chunks)} for v in self._all_stored()}
        return variables, self._same_as()

    def _all_stored(self):
        if not self.keeps_arrays:
            return []
        return ([v for v, _ in self._stored_results()]
                + coordinate_variables(self.job, self.block_shape) + tensor_variables(self.job))

    def _csv_columns(self) -> dict[str, np.ndarray]:
        """The scalar values and scalar gradients, flat over the points, by their CSV names
        (`z`, `dz/da`): tensors and Hessians are in the store only."""
        from ..engine.jacobians import derivative_keys
        opened = self._opened()
        labels = list(self.layout.kept) + [f"d{k[1]}/d{k[2]}" if k[0] == "grads" else None
                                           for k in derivative_keys(self.job.graph)]
        columns = {}
        for i, label in enumerate(labels):
            if label is not None and not self.layout.shapes[i]:
                array = opened[self.names[self.twins.get(i, i)]][0]
                columns[label] = np.asarray(array[...]).ravel()
        return columns

    def _finish_group(self, summary: dict) -> None:
        import zarr
        group = zarr.open_group(self.place.opened, mode="r+", zarr_format=3)
        # summary.json alone says complete: it is written last
        group.attrs.update({k: v for k, v in summary.items() if k not in ("variables", "complete")})
        with _quiet_zarr():
            zarr.consolidate_metadata(self.place.opened, zarr_format=3)


def _create_array(group, variable, job: Job, coordinates: str | None):
    from zarr.codecs import Crc32cCodec, ZstdCodec
    attrs = dict(variable.attrs)
    if coordinates and variable.per_point:
        attrs["coordinates"] = coordinates
    return group.create_array(
        variable.name, shape=variable.shape, chunks=variable.chunks if variable.shape else (),
        dtype=dtype_of(job), fill_value=np.nan, dimension_names=list(variable.dims),
        compressors=[ZstdCodec(level=ZSTD_LEVEL), Crc32cCodec()], attributes=attrs,
        config={"write_empty_chunks": True})  # a chunk of zeros is a chunk: missing is damage


def _write_block(name: str, array, block: tuple[slice, ...], block_shape: tuple[int, ...],
                 data) -> str:
    """One range's chunk of one array; returns its key in the store."""
    extra = array.ndim - len(block)
    counts = tuple(s.stop - s.start for s in block)
    array[block] = np.asarray(data).reshape(counts + array.shape[len(block):])
    index = chunk_index(block, block_shape) + (0,) * extra
    return f"{name}/{array.metadata.encode_chunk_key(index)}"


_POOL = None


def _pool():
    """Threads that write a range's arrays at once: each array's chunk is compressed and
    checksummed while the others' are (zstd and crc32c release the GIL)."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor
        _POOL = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="gradsvc-store")
    return _POOL


def stored_identity(place: Place) -> dict | None:
    group = place.read_json("zarr.json")
    attributes = group.get("attributes") if isinstance(group, dict) else None
    return attributes.get("gradsvc") if isinstance(attributes, dict) else None


def _json(data) -> dict:
    """As it reads back from JSON (tuples become lists), so that a stored identity compares."""
    from ..teaching.report import json_safe
    return json.loads(json.dumps(json_safe(data)))


@contextmanager
def _quiet_zarr():
    """zarr warns that consolidated metadata is not in the v3 spec yet, and about the objects
    next to the group (summary.json, the markers) that are not its own: both are known here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="zarr")
        yield
