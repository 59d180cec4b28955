"""Streamed statistics of every value and derivative (`keep: stats`): no per-point arrays are kept.

For each quantity a kernel returns (a kept node's value, a gradient or Jacobian, a Hessian), over
every point of the grid:

  count            the finite values; NaN, +inf and -inf are counted apart (`nan`, `posinf`,
                   `neginf`) and left out of everything below
  mean, std        of the finite values; std is the population's (ddof=0): every point of the grid
                   is there, nothing is estimated from a sample
  min, max         the smallest and largest finite value, `argmin`/`argmax` the point index where
                   each occurs (ties: the smallest index, as np.argmin); `where` their coordinates
  histogram        scalar quantities only: the counts in BINS equal bins between edges taken from a
                   pilot (below), and the counts below and above those edges

A tensor-valued quantity gets count ... argmax elementwise, arrays of its shape (nested lists in
JSON), and no histogram: one per element would be BINS numbers for each of its numbers.

Parts combine whatever the chunks or workers: count, mean and M2 (the sum of squared deviations
from the mean) by the parallel formula of Chan, Golub and LeVeque (1979), min and max by value then
index, histograms by adding counts. Counts, extremes and histograms are exact; mean and M2 are
exact up to rounding, whose last bits depend on how the points were grouped. Memory is O(quantities x BINS) whatever the number of
points; a chunk's update is vectorized numpy over its points.

Histograms merge only if every part bins with the same edges, so the edges cannot come from the
first chunk (they would change with the chunk size). They come from a pilot: the grid's first
PILOT_POINTS points (all, if fewer): BINS equal bins between the pilot's finite min and max. A sink
buffers rows until it has seen the pilot, or is given the edges (a Dask client computes the pilot
once and hands its edges to every task).

>>> import numpy as np
>>> s = Stats.of([np.array([1.0, 5.0, np.nan])], start=0, edges=(histogram_edges(np.arange(9.)),))
>>> t = Stats.of([np.array([0.0, 5.0])], start=3, edges=(histogram_edges(np.arange(9.)),))
>>> m = s.merge(t).columns[0]
>>> int(m.count), float(m.mean), int(m.argmin), int(m.argmax), int(m.nan)
(4, 2.75, 3, 1, 1)
"""
from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

PILOT_POINTS = 4096  # the points whose range sets every histogram's edges
BINS = 64
_MAX_FLOAT = float(np.finfo(np.float64).max)


def histogram_edges(pilot: np.ndarray) -> np.ndarray:
    """BINS + 1 equal-width edges between the finite min and max of `pilot` (a scalar quantity's
    first points); no finite value at all gives [0, 1], as np.histogram of nothing. A range too
    narrow for BINS distinct edges (zero width, or a few units in the last place) is widened by
    max(0.5, |value| 2^-20) each side (numpy widens a zero width by 0.5, which vanishes in
    rounding beyond 2^52)."""
    finite = pilot[np.isfinite(pilot)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    edges = _equal_bins(low, high)
    if not (np.diff(edges) > 0).all():
        pad = max(0.5, max(abs(low), abs(high)) * 2.0 ** -20)
        edges = _equal_bins(max(low - pad, -_MAX_FLOAT), min(high + pad, _MAX_FLOAT))
    return edges


def _equal_bins(low: float, high: float) -> np.ndarray:
    if np.isfinite(high - low):
        return np.linspace(low, high, BINS + 1)
    return 2.0 * np.linspace(low / 2.0, high / 2.0, BINS + 1)  # a span past the largest float


def _binned(finite: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of finite values: [below edges[0], the BINS bins, above edges[-1]], binned by
    np.histogram (each bin half-open, the last one closed)."""
    low, high = float(edges[0]), float(edges[-1])  # Python floats: an overflow is inf, silently
    below, above = np.count_nonzero(finite < low), np.count_nonzero(finite > high)
    # equal bins given as a range take numpy's arithmetic path, 5x faster than its search over
    # edges and the same counts (it mends rounding against these very linspace edges)
    bins = (BINS, (low, high)) if np.isfinite(high - low) else (edges, None)
    counts, _ = np.histogram(finite, bins=bins[0], range=bins[1])
    return np.concatenate([[below], counts, [above]]).astype(np.int64)


@dataclass(frozen=True, eq=False)  # numpy arrays: compare fields with np.array_equal
class Column:
    """The statistics of one quantity over the points seen so far, each an array of the quantity's
    shape (0-d for a scalar). While `count` is 0, mean and m2 are 0, min/max are +inf/-inf and
    argmin/argmax -1."""
    count: np.ndarray  # int64: finite values
    mean: np.ndarray  # float64
    m2: np.ndarray  # float64: the sum of squared deviations from the mean
    min: np.ndarray  # float64
    argmin: np.ndarray  # int64: a point index
    max: np.ndarray
    argmax: np.ndarray
    nan: np.ndarray  # int64
    posinf: np.ndarray
    neginf: np.ndarray
    edges: np.ndarray | None = None  # (BINS + 1,) float64, scalar quantities, once known
    histogram: np.ndarray | None = None  # (BINS + 2,) int64: below, the bins, above

    @property
    def std(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, np.sqrt(self.m2 / self.count), np.nan)

    @classmethod
    def empty(cls, shape: tuple[int, ...], edges: np.ndarray | None = None) -> Column:
        zeros = np.zeros(shape, np.int64)
        none = np.full(shape, -1, np.int64)
        return cls(zeros, np.zeros(shape), np.zeros(shape), np.full(shape, np.inf), none,
                   np.full(shape, -np.inf), none, zeros, zeros, zeros, edges,
                   None if edges is None else np.zeros(BINS + 2, np.int64))

    @classmethod
    def of(cls, chunk: np.ndarray, start: int, edges: np.ndarray | None = None) -> Column:
        """The statistics of one chunk: `chunk` is (points, *shape), its first point is `start`;
        with `edges`, a scalar quantity's histogram too."""
        x = np.asarray(chunk, dtype=np.float64)
        if edges is not None and x.ndim != 1:
            raise ValueError(f"a histogram is for scalar quantities, not of shape {x.shape[1:]}")
        if len(x) == 0:
            return cls.empty(x.shape[1:], edges)
        finite = np.isfinite(x)
        all_finite = bool(finite.all())
        if all_finite:  # the usual case: no masks to apply
            count = np.full(x.shape[1:], len(x), np.int64)
            mean = x.sum(axis=0) / len(x)
            m2 = np.square(x - mean).sum(axis=0)
            low, high, nan = x, x, np.zeros_like(count)
            posinf = neginf = nan
        else:
            count = finite.sum(axis=0)
            safe_count = np.maximum(count, 1)
            mean = np.where(finite, x, 0.0).sum(axis=0) / safe_count
            m2 = np.square(np.where(finite, x - mean, 0.0)).sum(axis=0)
            low, high = np.where(finite, x, np.inf), np.where(finite, x, -np.inf)
            nan, posinf = np.isnan(x).sum(axis=0), np.isposinf(x).sum(axis=0)
            neginf = len(x) - count - nan - posinf
        argmin, argmax = low.argmin(axis=0), high.argmax(axis=0)  # the first of equal values
        smallest = np.take_along_axis(low, np.expand_dims(argmin, 0), 0)[0]
        largest = np.take_along_axis(high, np.expand_dims(argmax, 0), 0)[0]
        seen = count > 0
        histogram = None
        if edges is not None:
            histogram = _binned(x if all_finite else x[finite], edges)
        return cls(count, np.asarray(mean, np.float64), np.asarray(m2, np.float64),
                   np.where(seen, smallest, np.inf), np.where(seen, argmin + start, -1),
                   np.where(seen, largest, -np.inf), np.where(seen, argmax + start, -1),
                   nan, posinf, neginf, edges, histogram)

    def merge(self, other: Column) -> Column:
        """Both parts' statistics as one (parts of one grid never share a point)."""
        if self.count.shape != other.count.shape:
            raise ValueError(f"cannot merge statistics of shapes {self.count.shape} and "
                             f"{other.count.shape}")
        n_self, n_other = self.count.astype(np.float64), other.count.astype(np.float64)
        total = n_self + n_other  # as floats: n_self * n_other overflows int64 past 3e9 points
        share = np.divide(n_other, total, out=np.zeros_like(total), where=total > 0)
        delta = other.mean - self.mean
        mean = self.mean + delta * share
        m2 = self.m2 + other.m2 + delta * delta * n_self * share
        take_min = (other.min < self.min) | ((other.min == self.min) & (other.argmin < self.argmin))
        take_max = (other.max > self.max) | ((other.max == self.max) & (other.argmax < self.argmax))
        edges, histogram = _merged_histograms(self, other)
        return Column(self.count + other.count, mean, m2,
                      np.where(take_min, other.min, self.min),
                      np.where(take_min, other.argmin, self.argmin),
                      np.where(take_max, other.max, self.max),
                      np.where(take_max, other.argmax, self.argmax),
                      self.nan + other.nan, self.posinf + other.posinf,
                      self.neginf + other.neginf, edges, histogram)


def _merged_histograms(a: Column, b: Column) -> tuple:
    """Both parts' histograms added. A part without edges takes the other's if it saw no point
    (a part whose points were never binned would be missing from the sum)."""
    if a.edges is None and b.edges is None:  # a tensor, or rows still waiting for the pilot
        return None, None
    for lacking, other in ((a, b), (b, a)):
        if lacking.edges is None:
            if _points(lacking):
                raise ValueError("cannot merge a histogram with points that were never binned: "
                                 "give every part the pilot's edges")
            return other.edges, other.histogram
    if not np.array_equal(a.edges, b.edges):
        raise ValueError("cannot merge histograms binned with different edges: give every part "
                         "the pilot's edges")
    return a.edges, a.histogram + b.histogram


def _points(column: Column) -> int:
    return int((column.count + column.nan + column.posinf + column.neginf).sum())


@dataclass(frozen=True, eq=False)
class Stats:
    """The statistics of every quantity a kernel returns, in its order (engine.plan.ResultLayout:
    kept values, then derivatives): numpy arrays only, small, sent between processes as they are.
    Merging the same parts in the same order gives the same bits."""
    columns: tuple[Column, ...]

    @classmethod
    def of(cls, arrays: Sequence[np.ndarray], start: int,
           edges: Sequence[np.ndarray | None] | None = None) -> Stats:
        """One chunk's statistics: `arrays` (points, *shape) each, their first point `start`. An
        array handed twice (the kernel returns one result under two names) is summarised once."""
        edges = edges if edges is not None else (None,) * len(arrays)
        done: dict[int, Column] = {}
        columns = []
        for array, column_edges in zip(arrays, edges):
            key = id(array)
            if key not in done or not _same(done[key].edges, column_edges):
                done[key] = Column.of(array, start, column_edges)
            columns.append(done[key])
        return cls(tuple(columns))

    @classmethod
    def empty(cls, shapes: Sequence[tuple[int, ...]],
              edges: Sequence[np.ndarray | None] | None = None) -> Stats:
        edges = edges if edges is not None else (None,) * len(shapes)
        return cls(tuple(Column.empty(shape, e) for shape, e in zip(shapes, edges)))

    def merge(self, other: Stats) -> Stats:
        if len(self.columns) != len(other.columns):
            raise ValueError(f"cannot merge statistics of {len(self.columns)} and "
                             f"{len(other.columns)} quantities")
        return Stats(tuple(a.merge(b) for a, b in zip(self.columns, other.columns)))


COLUMN_FIELDS = ("count", "mean", "m2", "min", "argmin", "max", "argmax", "nan", "posinf", "neginf",
                 "edges", "histogram")


def stats_bytes(stats: Stats) -> bytes:
    """`stats` as an .npz file's bytes (numbers only: read back without unpickling anything)."""
    arrays = {f"{i}.{name}": getattr(column, name) for i, column in enumerate(stats.columns)
              for name in COLUMN_FIELDS if getattr(column, name) is not None}
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def stats_from_bytes(data: bytes, n_columns: int) -> Stats:
    """What `stats_bytes` wrote (ValueError if it is not that: a torn or foreign file)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return Stats(tuple(Column(**{name: arrays[f"{i}.{name}"] if f"{i}.{name}" in arrays
                                         else None for name in COLUMN_FIELDS})
                               for i in range(n_columns)))
    except (OSError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"not statistics gradsvc wrote: {error}") from None


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is b or (a is not None and b is not None and np.array_equal(a, b))


class StatsSink:
    """Streams each chunk's values and derivatives into `Stats` (the sink protocol of api.execute:
    write, rewind, whole, layout); `partial()` is what it has seen.

    Without `edges`, rows of scalar quantities are buffered until the grid's first
    min(PILOT_POINTS, points) points have arrived, then the edges are set from them (`edges`) and
    the buffer binned: chunks in point order buffer at most one chunk and the pilot. Chunks may
    arrive in any order (never overlapping); a part of the grid that holds no pilot point must be
    given the pilot's edges: `StatsSink(job, edges=pilot_sink.edges)`.
    """

    whole = False  # only statistics are kept: chunks of bounded size

    def __init__(self, job, layout=None, edges: Sequence[np.ndarray | None] | None = None,
                 checkpoints=None):
        """`checkpoints`: the result's folder (a storage Place), where the Dask executor keeps
        each task's statistics so that a killed client's rerun resumes (in this process a run
        is not resumed: it starts over)."""
        self.checkpoints = checkpoints
        from ..engine.plan import result_layout  # loads JAX: not needed to merge or read Stats
        self.layout = layout or result_layout(job)
        self.pilot_stop = min(PILOT_POINTS, job.grid.size)
        self.scalar = [i for i, shape in enumerate(self.layout.shapes) if shape == ()]
        if edges is not None:
            edges = self._checked(edges)
        self.given = edges
        self.rewind()

    def _checked(self, edges) -> tuple:
        shapes = self.layout.shapes
        fits = len(edges) == len(shapes) and all(
            (e is None) if shape != () else (e is not None and np.shape(e) == (BINS + 1,))
            for e, shape in zip(edges, shapes))
        if not fits:
            raise ValueError(f"edges must be one ({BINS + 1},) array per scalar quantity and None "
                             f"per tensor quantity, in the layout's order ({len(shapes)} in all)")
        return tuple(None if e is None else np.asarray(e, np.float64) for e in edges)

    def rewind(self) -> None:
        """Forget every chunk written: the job is being computed again."""
        self.edges = self.given
        self.stats = Stats.empty(self.layout.shapes, self.edges)
        self.pending: list[tuple[int, int, dict[int, np.ndarray]]] = []  # rows awaiting edges

    def write(self, start: int, stop: int, values: list, derivatives: list) -> None:
        arrays = list(values) + list(derivatives)
        self.stats = self.stats.merge(Stats.of(arrays, start, self.edges))
        if self.edges is None:
            rows = {i: arrays[i] for i in self.scalar}
            self.pending.append((start, stop, rows))
            if self._pilot_seen():
                self._bin_pending()
            else:  # the caller's arrays may be reused once write returns
                self.pending[-1] = (start, stop, {i: np.array(a) for i, a in rows.items()})

    def _pilot_seen(self) -> bool:
        covered = sum(max(0, min(stop, self.pilot_stop) - start) for start, stop, _ in self.pending)
        return covered == self.pilot_stop

    def _bin_pending(self) -> None:
        """The pilot is complete: set the edges from it and bin every buffered row."""
        edges: list[np.ndarray | None] = [None] * len(self.layout.shapes)
        for i in self.scalar:
            pilot = [rows[i][:max(0, self.pilot_stop - start)] for start, _, rows in self.pending]
            edges[i] = histogram_edges(np.concatenate(pilot).astype(np.float64))
        self.edges = tuple(edges)
        columns = list(self.stats.columns)
        for i in self.scalar:
            counts = sum(_binned(_finite(rows[i]), edges[i]) for _, _, rows in self.pending)
            columns[i] = replace(columns[i], edges=edges[i], histogram=counts)
        self.stats, self.pending = Stats(tuple(columns)), []

    def add(self, part: Stats, edges) -> None:
        """Merge statistics computed elsewhere (a Dask task's `partial()`, with the pilot's
        `edges`) into this sink's, in the order they are added."""
        self.edges = self.edges or edges
        self.stats = self.stats.merge(part)

    def partial(self) -> Stats:
        """The statistics of every chunk written so far."""
        if self.pending:
            raise RuntimeError(f"the histogram edges wait for the first {self.pilot_stop:,} "
                               "points, which have not all been written: give the sink the "
                               "pilot's edges (edges=)")
        return self.stats


def _finite(rows: np.ndarray) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float64)
    return x[np.isfinite(x)]


def stats_json(job, stats: Stats, coords: Callable[[int], dict] | None = None) -> dict:
    """summary.json's "stats": {"values": {node: {...}}, "grads": {output: {name: {...}}}} and, with
    `order: 2`, "hessians": {output: {a: {b: {...}}}}. Each quantity has count, mean, std, min,
    max, argmin, argmax, where ({"min": coordinates, "max": coordinates}), nan, posinf, neginf and,
    scalar, histogram ({"edges", "counts", "below", "above"}); a tensor's are nested lists of its
    shape. Non-finite numbers are strings (teaching.report.json_safe); a quantity with no finite
    value has mean, std, min and max "nan" and argmin, argmax and where null.

    `coords(index)` gives a point's coordinates ({input: value}); by default the grid's, rounded
    to the job's dtype as the kernel saw them.
    """
    from ..engine.jacobians import derivative_keys
    from ..engine.plan import result_layout
    from ..teaching.report import json_safe
    layout = result_layout(job)
    keys = [("values", n) for n in layout.kept] + derivative_keys(job.graph)
    if len(keys) != len(stats.columns):
        raise ValueError(f"{len(stats.columns)} quantities' statistics for a job whose kernel "
                         f"returns {len(keys)}")
    where = _memo(coords or _coords_as_run(job))
    tree: dict = {"values": {}, "grads": {}}
    for key, column in zip(keys, stats.columns):
        branch = tree.setdefault(key[0], {})
        for name in key[1:-1]:
            branch = branch.setdefault(name, {})
        branch[key[-1]] = _column_json(column, where)
    return json_safe(tree)


def _coords_as_run(job) -> Callable[[int], dict]:
    from ..engine.jaxrun import DTYPES
    dtype = DTYPES[job.settings.dtype]
    return lambda index: {n: float(dtype(v)) for n, v in job.grid.point(index).items()}


def _memo(coords: Callable[[int], dict]) -> Callable[[int], dict]:
    """Many elements of a tensor quantity share their argmin: look each point up once."""
    seen: dict[int, dict] = {}

    def lookup(index: int) -> dict:
        if index not in seen:
            seen[index] = coords(index)
        return seen[index]
    return lookup


def _elementwise(array: np.ndarray, fn: Callable):
    """fn of every element, as a number (0-d) or nested lists."""
    mapped = np.frompyfunc(fn, 1, 1)(array)
    return mapped.tolist() if isinstance(mapped, np.ndarray) else mapped


def _column_json(column: Column, coords: Callable[[int], dict]) -> dict:
    seen = column.count > 0
    nan = np.float64(np.nan)

    def point(index) -> int | None:
        return int(index) if index >= 0 else None

    def place(index) -> dict | None:
        return coords(int(index)) if index >= 0 else None
    data = {"count": column.count.tolist(),
            "mean": np.where(seen, column.mean, nan).tolist(),
            "std": column.std.tolist(),
            "min": np.where(seen, column.min, nan).tolist(),
            "max": np.where(seen, column.max, nan).tolist(),
            "argmin": _elementwise(column.argmin, point),
            "argmax": _elementwise(column.argmax, point),
            "where": {"min": _elementwise(column.argmin, place),
                      "max": _elementwise(column.argmax, place)},
            "nan": column.nan.tolist(), "posinf": column.posinf.tolist(),
            "neginf": column.neginf.tolist()}
    if column.histogram is not None:
        counts = column.histogram.tolist()
        data["histogram"] = {"edges": column.edges.tolist(), "counts": counts[1:-1],
                             "below": counts[0], "above": counts[-1]}
    return data


CHECKPOINTS = ".gradsvc/stats"  # in a result's folder: one .npz per finished span of points
CHECKPOINT_NAME = re.compile(r"(\d+)-(\d+)\.npz")


class Checkpoints:
    """The statistics of each finished span of a `keep: stats` run, kept in the result's folder
    (a storage `Place`) so that a rerun of a killed run computes only the other spans. They are
    kept only for the run they were made for (`identity`: the job's result key and the spans)."""

    def __init__(self, place, identity: dict, n_columns: int):
        self.place, self.identity, self.n_columns = place, identity, n_columns

    def load(self) -> dict[tuple[int, int], Stats]:
        """The spans finished by an earlier run of the same job; any others are removed."""
        try:
            same = self.place.read_json(f"{CHECKPOINTS}/identity.json") == self.identity
        except (OSError, ValueError):
            same = False
        if not same:
            self.place.remove_folder(CHECKPOINTS)
            self.place.write_json(f"{CHECKPOINTS}/identity.json", self.identity)
            return {}
        found = {}
        for key in self.place.sizes(CHECKPOINTS):
            named = CHECKPOINT_NAME.fullmatch(key.rsplit("/", 1)[1])
            if named is None:
                continue
            try:
                found[int(named[1]), int(named[2])] = stats_from_bytes(self.place.read(key),
                                                                      self.n_columns)
            except ValueError:  # torn by a kill: that span runs again
                continue
        return found

    def save(self, start: int, stop: int, stats: Stats) -> None:
        self.place.write(f"{CHECKPOINTS}/{start}-{stop}.npz", stats_bytes(stats))
