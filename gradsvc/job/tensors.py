"""Tensor inputs: arrays that are the same at every grid point (they are not grid axes).

A tensor comes from a nested list of numbers (`{tensor: [[1, 2], [3, 4]]}`), a generator with a
shape (`{tensor: {uniform: [-1, 1], shape: [4], seed: 0}}`; linspace/arange/logspace give 1-D), or
a data file beside the job file (`{file: w0.npy}`, `{file: xy.csv, column: y}`). Every value is
float64 and finite; every problem is reported at its place in the job file.

A data file is untrusted input, like the job file itself:
  - its path is relative and stays inside the job file's folder, symbolic links included;
  - it is read only if the limits allow its size (MAX_DATA_FILE_BYTES), and a tensor is allocated
    only once its shape is known to fit (MAX_TENSOR_ELEMENTS, MAX_TENSOR_DIMS): a .npy file's
    shape is read from its header first;
  - a .npy file is parsed here, never by `np.load`: nothing in it can be unpickled.

The generators' values are shared with grid axes (`check_span`, `arange_length`, `generated`):
the same spec gives the same numbers whether it makes an axis or a tensor (the random ones:
sampling.py's counter-based generator, the element at flat C-order index k being sample k).
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import io
import math
import os
import stat
from array import array
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable

import numpy as np
from numpy.lib import format as npy_format

from .. import limits
from ..core.tensor_ops import shape_text
from ..errors import GradsvcError, JobFileError, JobProblems, LimitError, Location
from .sampling import check_seed, sample_of

Where = Callable[[tuple], Location]  # a data path under `inputs:` -> its place in the job file

_FLOAT64_MAX_LOG10 = math.log10(np.finfo(np.float64).max)  # 308.25...
BEYOND_FLOAT64 = "beyond float64's range (at most about 1.8e308)"
GENERATOR_KEYS = ("linspace", "arange", "logspace", "uniform", "normal")
DATA_SUFFIXES = (".npy", ".csv")
DATA_HINT = "paths are relative to the job file's folder and stay inside it"
MAX_LISTED_NAMES = 1_000  # folder entries or CSV columns searched for a "did you mean"


# --- generators, shared with grid axes ---

def generator_of(spec) -> str:
    """Which generator a spec is (its key: linspace, arange, logspace, uniform, normal)."""
    return next(key for key in GENERATOR_KEYS if hasattr(spec, key))


def check_span(name: str, kind: str, start: float, stop: float, where: Where, at: tuple) -> None:
    """A range whose width, or whose values, are beyond float64 is refused before it is made."""
    if kind in ("linspace", "uniform") and not math.isfinite(stop - start):
        raise JobFileError(f"input '{name}': {kind} from {start:g} to {stop:g} spans a range "
                           f"{BEYOND_FLOAT64}", where=where(at),
                           hint="split the range, or use a list of values")
    if kind == "logspace" and max(start, stop) > _FLOAT64_MAX_LOG10:
        raise JobFileError(f"input '{name}': logspace up to 10**{max(start, stop):g} is "
                           f"{BEYOND_FLOAT64}", where=where(at), hint="keep the exponents at most 308")


def arange_length(name: str, start: float, stop: float, step: float, where: Where, at: tuple,
                  limit: int, limit_name: str) -> int:
    """The number of values of an arange, counted in floats so that a count beyond any limit (or
    beyond float64 itself) is refused rather than overflowing."""
    if step == 0:
        raise JobFileError(f"input '{name}': arange needs a non-zero step", where=where(at))
    count = (stop - start) / step  # inf where the count is beyond float64 itself
    if not count <= limit:  # also nan
        about = f"about {count:.3g} values" if math.isfinite(count) else \
            "more values than float64 can count"
        raise LimitError(f"input '{name}': arange from {start:g} to {stop:g} in steps of {step:g} "
                         f"has {about}; the limit is {limit:,}", where=where(at),
                         hint=f"use a larger step or a smaller range ({limit_name})")
    return max(0, math.ceil(count))


def generated(spec, size) -> np.ndarray:
    """A generator's values (float64); `size` (a count or a shape) is used by the random ones,
    whose element at flat (C-order) index k is the counter-based sample at k (sampling.py), so a
    seed names them, whatever their shape."""
    kind = generator_of(spec)
    if kind == "linspace":
        return np.linspace(*spec.linspace)
    if kind == "logspace":
        return np.logspace(*spec.logspace)
    if kind == "arange":
        return np.arange(*spec.arange, dtype=np.float64)
    shape = (size,) if isinstance(size, int) else tuple(size)
    return sample_of(spec).span(0, math.prod(shape)).reshape(shape)


# --- loading a job's tensor inputs ---

@dataclass(frozen=True)
class DataFile:
    """A data file a job read. `size` and `mtime_ns` tell a later read whether it changed;
    `sha256` (of its bytes) goes into the job's content hash."""
    path: str  # as the job wrote it
    real: str  # where it resolved to
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class Tensors:
    arrays: dict[str, np.ndarray]  # float64, read-only, ndim >= 1
    files: tuple[DataFile, ...]  # each file read, once, in the order first read


def is_tensor(spec) -> bool:
    """Whether an input spec is a tensor (`{tensor: ...}` or `{file: ...}`) rather than an axis."""
    return hasattr(spec, "tensor") or hasattr(spec, "file")


def load_tensors(specs: dict, where: Where, folder: Path | None) -> Tensors:
    """Every tensor input's array; every input's problem raised at once (`JobProblems`).
    Data files are looked for in `folder` (the job file's; None: none may be read)."""
    if not specs:  # a scalar job: nothing to look up
        return Tensors({}, ())
    loader = _Loader(folder, where)
    arrays, problems = {}, []
    for name, spec in specs.items():
        try:
            arrays[name] = _frozen(loader.tensor(name, spec))
        except GradsvcError as error:
            problems.append(error)
    if problems:
        raise JobProblems.of(problems)
    return Tensors(arrays, tuple(loader.files.values()))


def _frozen(values: np.ndarray) -> np.ndarray:
    # a built job is shared (remembered by its text, run by several threads): nobody may change it
    values = np.ascontiguousarray(values, dtype=np.float64)
    values.flags.writeable = False
    return values


def _index_text(name: str, index: tuple) -> str:
    return f"{name}[{', '.join(map(str, index))}]"


class _Loader:
    """Builds one job's tensors, keeping the limits over all of them: the elements allocated
    (MAX_TENSOR_ELEMENTS) and the bytes of data files read (MAX_DATA_FILE_BYTES), each file once."""

    def __init__(self, folder: Path | None, where: Where):
        self.folder = None if folder is None else Path(os.path.abspath(folder))
        self.where = where
        self.elements = 0
        self.bytes_read = 0
        self.files: dict[str, DataFile] = {}  # real path -> the file
        self.data: dict[str, bytes] = {}  # real path -> its bytes, while this job is built

    def tensor(self, name: str, spec) -> np.ndarray:
        if hasattr(spec, "file"):
            return self.from_file(name, spec)
        if isinstance(spec.tensor, list):
            return self.from_list(name, spec.tensor)
        return self.from_generator(name, spec.tensor)

    # -- shapes and the element budget --

    def claim(self, name: str, shape: tuple, at: tuple, what: str = "") -> None:
        """Check a tensor's shape against the limits before anything of that size is allocated."""
        place = self.where((name, *at))
        if len(shape) == 0:
            raise JobFileError(f"input '{name}'{what} is 0-dimensional (one number)", where=place,
                               hint="write a single number as a scalar input, e.g. `b: 0.1`")
        if len(shape) > limits.MAX_TENSOR_DIMS:
            raise LimitError(f"input '{name}'{what} has {len(shape)} dimensions; the limit is "
                             f"{limits.MAX_TENSOR_DIMS}", where=place,
                             hint="use fewer dimensions (MAX_TENSOR_DIMS)")
        if any(n < 1 for n in shape):
            raise JobFileError(f"input '{name}'{what} has shape {shape_text(shape)}: every "
                               "dimension needs at least one value", where=place,
                               hint="give every dimension a length of 1 or more")
        count = math.prod(shape)  # exact: a crafted shape may claim 1e30 elements
        if self.elements + count > limits.MAX_TENSOR_ELEMENTS:
            before = f" (with the {self.elements:,} of the tensors before it)" if self.elements else ""
            raise LimitError(f"input '{name}'{what} has shape {shape_text(shape)}: {count:,} "
                             f"elements{before}; a job's tensor inputs may have "
                             f"{limits.MAX_TENSOR_ELEMENTS:,} in all", where=place,
                             hint="use smaller tensors (MAX_TENSOR_ELEMENTS)")
        self.elements += count

    def finite(self, name: str, values: np.ndarray, at: tuple, cell: Callable[[tuple], str]) -> None:
        bad = np.flatnonzero(~np.isfinite(values.ravel()))
        if len(bad):
            index = np.unravel_index(int(bad[0]), values.shape)
            word = "nan" if np.isnan(values[index]) else BEYOND_FLOAT64
            raise JobFileError(f"input '{name}': {cell(tuple(int(i) for i in index))} is {word}",
                               where=self.where((name, *at)),
                               hint="every value of a tensor must be a finite number")

    # -- nested lists --

    def from_list(self, name: str, rows: list) -> np.ndarray:
        shape = self.list_shape(name, rows, ())
        self.claim(name, shape, ("tensor",))
        return np.array(rows, dtype=np.float64)

    def list_shape(self, name: str, value, index: tuple) -> tuple:
        """The shape of a nested list; a cell that is not a number, or rows of different shapes,
        are errors at their place. Recursion stops at MAX_TENSOR_DIMS levels."""
        at = ("tensor", *index)
        if not isinstance(value, list):
            return self.cell(name, value, index)
        if len(index) >= limits.MAX_TENSOR_DIMS:
            raise LimitError(f"input '{name}' nests lists more than {limits.MAX_TENSOR_DIMS} deep",
                             where=self.where((name, *at)), hint="use fewer dimensions "
                             "(MAX_TENSOR_DIMS)")
        if not value:
            raise JobFileError(f"input '{name}': {_index_text(name, index) if index else name} "
                               "is an empty list", where=self.where((name, *at)),
                               hint="every dimension of a tensor needs at least one value")
        shapes = []
        for i, item in enumerate(value):
            shapes.append(self.list_shape(name, item, (*index, i)))
            if shapes[i] != shapes[0]:
                first, this = _index_text(name, (*index, 0)), _index_text(name, (*index, i))
                raise JobFileError(
                    f"input '{name}' is ragged: {this} has shape {shape_text(shapes[i])} but "
                    f"{first} has shape {shape_text(shapes[0])}", where=self.where((name, *at, i)),
                    hint="a tensor's rows must all have the same shape (the same number of values)")
        return (len(value), *shapes[0])

    def cell(self, name: str, value, index: tuple) -> tuple:
        """One number of a nested list: its shape, (); anything else is an error at its place."""
        place = self.where((name, "tensor", *index))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            shown = "null" if value is None else f"{value!r} ({type(value).__name__})"
            raise JobFileError(f"input '{name}': the cell {_index_text(name, index)} is {shown}, "
                               "not a number", where=place, hint="a tensor's cells are numbers")
        try:
            number = float(value)
        except OverflowError:  # a YAML integer of 400 digits
            number = math.inf
        if not math.isfinite(number):
            word = "nan" if math.isnan(number) else BEYOND_FLOAT64
            raise JobFileError(f"input '{name}': the cell {_index_text(name, index)} is {word}",
                               where=place, hint="every value of a tensor must be a finite number")
        return ()

    # -- generators --

    def from_generator(self, name: str, spec) -> np.ndarray:
        kind = generator_of(spec)
        at = ("tensor", kind)
        if kind in ("uniform", "normal"):
            shape = tuple(spec.shape)
            self.claim(name, shape, ("tensor", "shape"))
            if kind == "uniform":
                check_span(name, kind, *spec.uniform, self.where, (name, *at))
            elif spec.normal[1] < 0:
                raise JobFileError(f"input '{name}': the standard deviation must be >= 0",
                                   where=self.where((name, *at)))
            check_seed(name, spec.seed, self.where, (name, "tensor", "seed"))
        else:
            shape = (self.one_d_length(name, spec, kind, at),)
            self.claim(name, shape, at)
        # samples (or the last steps of a range) may overflow: checked below rather than warned of
        with np.errstate(over="ignore", invalid="ignore"):
            values = generated(spec, shape)
        self.finite(name, values, at, lambda index: _index_text(name, index))
        return values

    def one_d_length(self, name: str, spec, kind: str, at: tuple) -> int:
        if kind == "arange":
            return arange_length(name, *spec.arange, self.where, (name, *at),
                                 limits.MAX_TENSOR_ELEMENTS, "MAX_TENSOR_ELEMENTS")
        start, stop, num = getattr(spec, kind)
        check_span(name, kind, start, stop, self.where, (name, *at))
        return num

    # -- data files --

    def from_file(self, name: str, spec) -> np.ndarray:
        suffix = PurePosixPath(spec.file).suffix.lower()
        if suffix not in DATA_SUFFIXES:
            raise JobFileError(f"input '{name}': '{spec.file}' is not a .npy or .csv file",
                               where=self.where((name, "file")),
                               hint="data files are .npy (numpy.save) or .csv with a header row")
        picked = "column" if spec.column is not None else "columns" if spec.columns else None
        if spec.column is not None and spec.columns is not None:
            raise JobFileError(f"input '{name}' has both column: and columns:",
                               where=self.where((name, "columns")), hint="column: picks one "
                               "column (a vector), columns: several (a matrix): keep one")
        if picked and suffix != ".csv":
            raise JobFileError(f"input '{name}': {picked}: picks columns of a .csv file, and "
                               f"'{spec.file}' is a .npy file", where=self.where((name, picked)),
                               hint=f"leave out {picked}:, or slice the array in a formula")
        data = self.read(name, spec.file)
        if suffix == ".npy":
            return self.npy(name, spec.file, data)
        return self.csv(name, spec, data)

    def read(self, name: str, written: str) -> bytes:
        """The bytes of a data file, read once per job, refused if it is outside the folder, not
        a regular file, or too large (checked before reading)."""
        place = self.where((name, "file"))
        real = self.resolve(name, written, place)
        if real in self.data:
            return self.data[real]
        # resolved, so no link is left to follow; O_NONBLOCK: a FIFO put there is refused below
        # (not waited on), and it changes nothing for a regular file
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(real, flags)
        except OSError as exc:
            raise JobFileError(f"input '{name}': cannot read '{written}': {exc.strerror}",
                               where=place, hint=DATA_HINT) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise JobFileError(f"input '{name}': '{written}' is not a regular file",
                                   where=place, hint="name a .npy or .csv file")
            allowed = limits.MAX_DATA_FILE_BYTES - self.bytes_read
            if info.st_size > allowed:
                raise self.too_large(name, written, info.st_size, place)
            with open(fd, "rb", closefd=False) as stream:
                data = stream.read(allowed + 1)  # the file may have grown since: no more
        finally:
            os.close(fd)
        if len(data) > allowed:
            raise self.too_large(name, written, len(data), place)
        self.bytes_read += len(data)
        self.data[real] = data
        self.files[real] = DataFile(written, real, len(data), info.st_mtime_ns,
                                    hashlib.sha256(data).hexdigest())
        return data

    def too_large(self, name: str, written: str, size: int, place: Location) -> LimitError:
        before = f" (with the {self.bytes_read:,} of the files before it)" if self.bytes_read else ""
        return LimitError(f"input '{name}': '{written}' has {size:,} bytes{before}; a job may "
                          f"read {limits.MAX_DATA_FILE_BYTES:,} bytes of data files in all",
                          where=place, hint="use a smaller file (MAX_DATA_FILE_BYTES)")

    def resolve(self, name: str, written: str, place: Location) -> str:
        """The real path of a data file, which must be inside the job file's folder."""
        def refused(why: str) -> JobFileError:
            return JobFileError(f"input '{name}': the data file '{written}' {why}", where=place,
                                hint=DATA_HINT)
        if self.folder is None:  # a job sent to the service
            raise JobFileError(f"input '{name}': a job sent to the service reads no data files "
                               f"('{written}')", where=place,
                               hint="give the numbers inline: {tensor: [[...]]}")
        if not written or "\0" in written:
            raise refused("is not a file name")
        if PurePosixPath(written).is_absolute() or PureWindowsPath(written).anchor:
            raise refused("is an absolute path: data files are given relative to the job file")
        if _leaves(written):
            raise refused("is outside the job file's folder ('..' climbs out of it)")
        path = self.folder / written
        if not os.path.lexists(path):
            raise JobFileError(f"input '{name}': no such data file '{written}' (looked in "
                               f"{path.parent})", where=place,
                               hint=_near_file(path, written, self.folder) or DATA_HINT)
        real, inside = os.path.realpath(path), os.path.realpath(self.folder)
        if os.path.commonpath([real, inside]) != inside:
            raise refused("is a symbolic link to a file outside the job file's folder")
        if not os.path.exists(real):
            raise refused("is a symbolic link to nothing")
        return real

    def npy(self, name: str, written: str, data: bytes) -> np.ndarray:
        """A .npy file's array, from its header's shape and dtype (checked first) and raw data:
        never np.load, so an object array is refused and never unpickled."""
        place = self.where((name, "file"))
        stream = io.BytesIO(data)
        try:
            version = npy_format.read_magic(stream)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"format version {version[0]}.{version[1]} is not supported")
            read_header = (npy_format.read_array_header_1_0 if version == (1, 0)
                           else npy_format.read_array_header_2_0)
            shape, fortran, dtype = read_header(stream)
        except (ValueError, TypeError, SyntaxError, EOFError) as exc:
            raise JobFileError(f"input '{name}': '{written}' is not a .npy file this can read: "
                               f"{exc}", where=place, hint="write it with numpy.save") from None
        if dtype.hasobject or dtype.kind not in "biuf":
            raise JobFileError(f"input '{name}': '{written}' holds {dtype} values"
                               f"{' (pickled Python objects)' if dtype.hasobject else ''}; "
                               "a tensor is numbers", where=place,
                               hint="save a float, int or bool array (allow_pickle is never used)")
        self.claim(name, tuple(shape), ("file",), f" ('{written}')")
        offset, needed = stream.tell(), math.prod(shape) * dtype.itemsize
        if len(data) - offset != needed:
            raise JobFileError(f"input '{name}': '{written}' holds {len(data) - offset:,} bytes "
                               f"of data, but its header says {shape_text(shape)} {dtype}: "
                               f"{needed:,} bytes", where=place,
                               hint="the file is truncated or damaged: write it again")
        raw = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset)
        values = raw.reshape(shape, order="F" if fortran else "C").astype(np.float64)
        self.finite(name, values, ("file",), lambda index: f"'{written}' at {list(index)}")
        return values

    def csv(self, name: str, spec, data: bytes) -> np.ndarray:
        """A CSV file's numbers (header row first): one column a vector, several a (rows, k)
        matrix, no column: or columns: the whole table."""
        table = _CsvTable(name, spec.file, data, self.where((name, "file")))
        if spec.column is not None:
            picked = [table.column_index(spec.column, self.where((name, "column")))]
        elif spec.columns is not None:
            picked = [table.column_index(c, self.where((name, "columns", k)))
                      for k, c in enumerate(spec.columns)]
        else:
            picked = list(range(len(table.header)))
        values = table.numbers(picked, limits.MAX_TENSOR_ELEMENTS - self.elements)
        self.claim(name, values.shape, ("file",), f" ('{spec.file}')")
        return values[:, 0] if spec.column is not None else values


def _leaves(written: str) -> bool:
    """Whether a relative path climbs above its start with '..' (checked before any lookup)."""
    depth = 0
    for part in PurePosixPath(written.replace("\\", "/")).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return True
    return False


def _near_file(path: Path, written: str, folder: Path) -> str | None:
    """"did you mean" among the files beside a missing one (if that place is inside the folder:
    a hint never lists a folder elsewhere)."""
    inside = os.path.realpath(folder)
    if os.path.commonpath([os.path.realpath(path.parent), inside]) != inside:
        return None
    try:
        with os.scandir(path.parent) as entries:
            names = [entry.name for _, entry in zip(range(MAX_LISTED_NAMES), entries)]
    except OSError:
        return None
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    if not close:
        return None
    return f"did you mean '{PurePosixPath(written).with_name(close[0])}'? ({DATA_HINT})"


def is_number(text: str) -> bool:
    """Whether Python reads `text` as a number (a CSV cell, a formula's literal)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


class _CsvTable:
    """A CSV file's text: a header row of column names, then rows of numbers."""

    def __init__(self, name: str, written: str, data: bytes, place: Location):
        self.name, self.written, self.place = name, written, place
        try:
            text = data.decode("utf-8-sig")  # a byte-order mark, as spreadsheets write, is not data
        except UnicodeDecodeError as exc:
            raise self.error(f"is not UTF-8 text (byte {exc.start})") from None
        self.rows = csv.reader(io.StringIO(text, newline=""))
        try:
            self.header = [cell.strip() for cell in next(self.rows, [])]
        except csv.Error as exc:
            raise self.error(f"line 1: {exc}") from None
        if not any(self.header):
            raise self.error("has no header row", "a CSV input starts with a row of column names")
        if all(is_number(cell) for cell in self.header):  # else its first row would be lost
            raise self.error(f"starts with a row of numbers ({', '.join(self.header[:5])}), not "
                             "a header row", "add a first row naming the columns, e.g. x,y")

    def error(self, why: str, hint: str = "a CSV input is a header row of column names, then "
              "rows of numbers") -> JobFileError:
        return JobFileError(f"input '{self.name}': '{self.written}' {why}", where=self.place,
                            hint=hint)

    def column_index(self, column: str, place: Location) -> int:
        found = [i for i, name in enumerate(self.header) if name == column]
        if len(found) == 1:
            return found[0]
        listed = ", ".join(self.header[:20]) + (", ..." if len(self.header) > 20 else "")
        if found:
            raise JobFileError(f"input '{self.name}': '{self.written}' has {len(found)} columns "
                               f"named '{column}'", where=place, hint="rename one in the header row")
        close = difflib.get_close_matches(column, self.header[:MAX_LISTED_NAMES], n=1, cutoff=0.6)
        raise JobFileError(f"input '{self.name}': '{self.written}' has no column '{column}'; its "
                           f"columns are {listed}", where=place,
                           hint=f"did you mean '{close[0]}'?" if close else
                           "columns are named by the file's header row")

    def numbers(self, picked: list[int], budget: int) -> np.ndarray:
        """The picked columns of every row, as a (rows, len(picked)) array; stops as soon as the
        element budget is passed, so a huge table is never held."""
        values = array("d")
        line = 1
        try:
            for row in self.rows:
                line = self.rows.line_num
                if not any(cell.strip() for cell in row):  # a blank line (often the last) is no row
                    continue
                if len(row) != len(self.header):
                    raise self.error(f"line {line} has {len(row)} cells, but the header row has "
                                     f"{len(self.header)}", "every row needs one cell per column")
                values.extend(self.number(row[i].strip(), line, i) for i in picked)
                if len(values) > budget:
                    raise LimitError(f"input '{self.name}': '{self.written}' has more than "
                                     f"{budget:,} values in the columns used; a job's tensor "
                                     f"inputs may have {limits.MAX_TENSOR_ELEMENTS:,} in all",
                                     where=self.place, hint="use a smaller file "
                                     "(MAX_TENSOR_ELEMENTS)")
        except csv.Error as exc:
            raise self.error(f"line {line}: {exc}") from None
        if not values:
            raise self.error("has a header row but no rows of numbers")
        return np.frombuffer(values, dtype=np.float64).reshape(-1, len(picked)).copy()

    def number(self, cell: str, line: int, column: int) -> float:
        where = f"line {line}, column '{self.header[column]}'"
        try:
            number = float(cell)
        except ValueError:
            shown = "is empty" if not cell else f"is {cell[:40]!r}, not a number"
            raise self.error(f"{where} {shown}", "a CSV input's cells under its header are "
                             "numbers") from None
        if not math.isfinite(number):
            raise self.error(f"{where} is {cell[:40]!r}: not a finite number",
                             "every value of a tensor must be a finite number: fill in or "
                             "leave out that row")
        return number
