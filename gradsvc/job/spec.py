"""Job files: the schema (pydantic, so `gradsvc schema` is generated, never hand-kept), validation with
`file:line:col` for every problem, settings precedence, and compiling a job into graph + grid.

Settings precedence, lowest first: the defaults in `Settings` < `configs/default.yaml` (or the file
named by `--config` / `GRADSVC_CONFIG`) < the job's `settings:` < command-line flags or API arguments.
A config file also holds the deployment's own settings (`Deployment`: the grid-size limit), which
no job may set.
"""
from __future__ import annotations

import dataclasses
import hashlib
import keyword
import math
import os
import re
import threading
import time
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag,
                      ValidationError, WithJsonSchema)

from .. import limits
from ..errors import (GradsvcError, GraphError, JobFileError, JobProblems, LimitError, Location,
                     UsageError)
from ..core.expr import parse_formula
from . import known_shapes
from .grid import BEYOND_FLOAT64, Grid, build_grid
from .tensors import is_tensor
from ..core.ir import Graph, Node, build_graph, did_you_mean
from ..core.ops import CALLABLE
from .source import Document, load_yaml, read_job_text


def _number(value: Any) -> float:
    # bool is an int in Python and "2" would be coerced by lax validation: both are mistakes here
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError:  # a YAML integer of 400 digits
        number = math.inf
    if not math.isfinite(number):  # YAML reads 1e400 as inf
        raise ValueError("expected a number, got nan" if math.isnan(number) else
                         f"this number is {BEYOND_FLOAT64}")
    return number


def _count(value: Any) -> int:
    # inf (YAML reads 1e400 so) is no whole number: int() of it raised OverflowError, a crash
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or (isinstance(value, float) and not value.is_integer())):
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(value)


Number = Annotated[float, BeforeValidator(_number)]
Count = Annotated[int, BeforeValidator(_count)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Linspace(_Strict):
    """`num` evenly spaced values from `start` to `stop` inclusive."""
    linspace: tuple[Number, Number, Count] = Field(description="[start, stop, num]")


class Arange(_Strict):
    """Values from `start` (inclusive) to `stop` (exclusive) in steps of `step`."""
    arange: tuple[Number, Number, Number] = Field(description="[start, stop, step]")


class Logspace(_Strict):
    """`num` values from 10**start to 10**stop inclusive, evenly spaced in log10."""
    logspace: tuple[Number, Number, Count] = Field(description="[start, stop, num]")


class Uniform(_Strict):
    """`n` seeded uniform samples in [low, high)."""
    uniform: tuple[Number, Number] = Field(description="[low, high]")
    n: Count
    seed: Count = 0


class Normal(_Strict):
    """`n` seeded normal samples."""
    normal: tuple[Number, Number] = Field(description="[mean, std]")
    n: Count
    seed: Count = 0


GENERATORS = {"linspace": Linspace, "arange": Arange, "logspace": Logspace, "uniform": Uniform,
              "normal": Normal}


class TensorUniform(_Strict):
    """Seeded uniform samples in [low, high), in a tensor of this shape."""
    uniform: tuple[Number, Number] = Field(description="[low, high]")
    shape: list[Count] = Field(description="the tensor's shape, e.g. [2, 3]")
    seed: Count = 0


class TensorNormal(_Strict):
    """Seeded normal samples, in a tensor of this shape."""
    normal: tuple[Number, Number] = Field(description="[mean, std]")
    shape: list[Count] = Field(description="the tensor's shape, e.g. [2, 3]")
    seed: Count = 0


# linspace, arange and logspace make 1-D tensors as they make axes
TENSOR_GENERATORS = {"linspace": Linspace, "arange": Arange, "logspace": Logspace,
                     "uniform": TensorUniform, "normal": TensorNormal}


def _tag(kind: str) -> str:
    """A union member's tag. Tags show in pydantic's error locations, where `_data_path` leaves
    them out; they are named unlike any key ("<uniform>", not "uniform"), so that a tag is never
    taken for the key beside it."""
    return f"<{kind}>"


def _one_kind(value: dict, keys) -> str | None:
    kinds = [k for k in value if k in keys]
    return kinds[0] if len(kinds) == 1 else None


def _tensor_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return _tag("nested list")
    kind = _one_kind(value, TENSOR_GENERATORS) if isinstance(value, dict) else None
    return _tag(f"tensor {kind}") if kind else None


# The cells are checked by tensors.py, which names a bad cell's place and a ragged list's shapes
NestedNumbers = Annotated[list, WithJsonSchema({
    "type": "array", "minItems": 1, "items": {"anyOf": [{"type": "number"}, {"type": "array"}]},
    "description": "a nested list of numbers with rows of equal length: [1, 2], [[1, 2], [3, 4]]"})]


class TensorInput(_Strict):
    """A tensor: the same array at every grid point (not a grid axis)."""
    tensor: Annotated[Union[
        Annotated[NestedNumbers, Tag(_tag("nested list"))],
        *(Annotated[model, Tag(_tag(f"tensor {name}"))] for name, model in TENSOR_GENERATORS.items()),
    ], Discriminator(_tensor_kind, custom_error_type="tensor_spec", custom_error_message=(
        "a tensor is a nested list of numbers ([[1, 2], [3, 4]]) or one of {uniform: [low, high], "
        "shape: [..], seed}, {normal: [mean, std], shape: [..], seed}, {linspace: [start, stop, "
        "num]}, {arange: [start, stop, step]}, {logspace: [start, stop, num]}"))]


class FileInput(_Strict):
    """A tensor read from a data file in the job file's folder: a .npy array, or a .csv file's
    columns (its first row names them)."""
    file: str = Field(description="a path relative to the job file's folder: w0.npy, data/xy.csv")
    column: str | None = Field(None, description="a .csv file's column: a vector")
    columns: list[str] | None = Field(None, min_length=1, description="a .csv file's columns: "
                                      "a (rows, k) matrix; with neither, the whole table")


def _input_kind(value: Any) -> str | None:
    if isinstance(value, (int, float, str)):  # a string or bool gets the number validator's message
        return _tag("scalar")
    if isinstance(value, list):
        return _tag("list")
    if isinstance(value, dict):
        kind = _one_kind(value, [*GENERATORS, "tensor", "file"])
        return _tag(kind) if kind else None
    return None


InputSpec = Annotated[Union[
    Annotated[Number, Tag(_tag("scalar"))],
    Annotated[list[Number], Tag(_tag("list"))],
    *(Annotated[model, Tag(_tag(name))] for name, model in GENERATORS.items()),
    Annotated[TensorInput, Tag(_tag("tensor"))],
    Annotated[FileInput, Tag(_tag("file"))],
], Discriminator(_input_kind, custom_error_type="input_spec", custom_error_message=(
    "an input is a number, a list of numbers, or one of {linspace: [start, stop, num]}, "
    "{arange: [start, stop, step]}, {logspace: [start, stop, num]}, {uniform: [low, high], n, seed}, "
    "{normal: [mean, std], n, seed} (grid axes), {tensor: ...}, {file: path} (tensors)"))]
_TAGS = {_tag(kind) for kind in ["scalar", "list", "nested list", "tensor", "file", *GENERATORS,
                                 *(f"tensor {name}" for name in TENSOR_GENERATORS)]}


class Tolerance(_Strict):
    factor: Number = Field(32.0, description="multiple of the propagated rounding-error bound that "
                           "JAX may differ from the reference by")
    fd_rtol: Number = Field(1e-5, description="relative tolerance of the finite-difference check")


class Settings(_Strict):
    """Runtime settings; every field may be set in configs/default.yaml, a job, or on the CLI."""
    dtype: Literal["float32", "float64"] = "float64"
    device: Literal["cpu", "gpu", "tpu"] = "cpu"
    chunk_size: Union[Literal["auto"], Annotated[Count, Field(ge=1, le=1 << 24)]] = Field(
        "auto", description="points per compiled call; auto: 65536 for graphs with many "
        "intermediates (they stay in cache); for small memory-bound graphs 1,048,576 when results "
        "stream to disk, up to 16,777,216 when they are kept in memory")
    verify_points: Count = Field(2000, ge=1, description="the points to check: every point of a "
                                 "grid up to this many; above it, a seeded random sample this size")
    verify_budget: Number = Field(0.1, ge=0, description="stop checking once verification took "
                                  "this fraction of the compile + run time (small jobs are "
                                  "checked in full whatever it is)")
    verify_min_points: Count = Field(32, ge=1, description="check at least this many points when "
                                     "they fit in the budget (the first point always)")
    verify_seed: Count = 0
    fd_points: Count = Field(50, ge=0, description="points given central finite-difference checks "
                             "(at most 16 output/wrt pairs each)")
    tolerance: Tolerance = Tolerance()
    fast_math: bool = Field(True, description="sin/cos by range reduction + polynomials fused "
                            "into the kernel, where their faster run repays their longer compile "
                            "(big grids, kernels already compiled, hot job shapes); chunks with "
                            "arguments beyond their accurate range are recomputed with XLA's")
    keep_values: Literal["all", "outputs", "none"] = Field(
        "all", description="which nodes' values are computed and kept (inputs' values are the "
        "grid coordinates); gradients are always kept")
    devices: Union[Literal["all"], Annotated[Count, Field(ge=1)]] = Field(
        1, description="local devices of the `device` kind each chunk's points are sharded over "
        "(jax.sharding, a mesh along the points): a count, or all")
    keep: Literal["arrays", "stats"] = Field(
        "arrays", description="arrays: every point's values and gradients are stored; stats: only "
        "their count, mean, std, min and max (with where they occur) and a histogram, merged "
        "across chunks and workers (for grids too big to store)")
    # YAML reads a bare `off` (like `no` and `false`) as the boolean false: that means off too
    compile_cache: Annotated[str, BeforeValidator(lambda v: "off" if v is False else v)] = Field(
        "~/.cache/gradsvc/jax", description="folder for JAX's persistent compilation cache, "
        "shared by later processes; 'off' disables it")


def _formula(value: Any) -> Any:
    """A bare number is a constant node; one beyond float64 (YAML reads 1e400 as inf) is refused
    here, with its place, rather than later as the name 'inf'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(_number(value))
    return value


Formula = Annotated[str, BeforeValidator(_formula)]


class JobSpec(_Strict):
    """A job file: inputs and their grid, a graph of formulas, outputs and what to differentiate."""
    name: str | None = Field(None, description="defaults to the file's stem")
    description: str = ""
    inputs: dict[str, InputSpec] = Field(min_length=1)
    grid: Literal["product", "zip"] = "product"
    graph: dict[str, Formula] = Field(min_length=1)
    outputs: Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)] = \
        Field(min_length=1)
    wrt: Union[Literal["all", "inputs"], list[str]] = "all"
    order: Literal[1, 2] = Field(1, description="1: gradients (Jacobians of tensor outputs); 2: "
                                 "also the Hessian of every scalar output w.r.t. the wrt names")
    mode: Literal["auto", "reverse", "forward"] = Field(
        "auto", description="how Jacobians are computed (the same numbers either way): reverse "
        "mode, forward mode, or auto: reverse when an output has no more numbers than the wrt "
        "names together")
    settings: Settings = Settings()


class Deployment(_Strict):
    """Settings of the deployment, not of a job: only its config file sets them."""
    max_grid_points: Count = Field(limits.MAX_GRID_POINTS, ge=1, description="the most points a "
                                   "job's grid may have (checked from the inputs' sizes, before "
                                   "anything is made)")


class ConfigFile(Settings, Deployment):
    """A config file: defaults of every job's settings, and the deployment's own."""


DEPLOYMENT_KEYS = tuple(Deployment.model_fields)

_MODELS_AT = {(): JobSpec, ("settings",): Settings, ("settings", "tolerance"): Tolerance}


@dataclass(frozen=True)
class Job:
    """A validated, compiled job: what the backends run."""
    name: str
    description: str
    file: str
    graph: Graph
    grid: Grid
    settings: Settings
    content_hash: str  # sha256 of the job's text (and data files' bytes): names a result
    notes: tuple[str, ...] = ()  # one line each, for the user: not errors (a name NFKC changed)
    # what `settings` was resolved from (the job's own settings, overrides, config): new
    # overrides for a loaded Job are applied over these, as if given when it was loaded
    setting_layers: tuple = dataclasses.field(default=(), compare=False, repr=False)


# --- loading ---

def load_job(path: str | Path, overrides: dict | None = None, config: str | Path | None = None) -> Job:
    """Read, validate and compile a job file.

    >>> job = load_job("jobs/seed_chain.yaml")
    >>> job.graph.outputs
    ('e',)
    """
    text = read_job_text(path)
    return job_from_text(text, file=str(path), overrides=overrides, config=config,
                         default_name=Path(path).stem)


def job_from_text(text: str, file: str = "<job>", overrides: dict | None = None,
                  config: str | Path | None = None, default_name: str = "job") -> Job:
    """Like `load_job`, from YAML text.

    The job built from a text is kept (settings aside, which are resolved on every call, so an
    edited config file counts): a service or a notebook running the same job again skips
    parsing, and gets the same grid, whose axes then stay on the device. A job that reads data
    files is built afresh every time: the same text may then mean other data.
    """
    limit = max_grid_points(config)
    key = (text, file, default_name, limit)
    with _BUILT_LOCK:
        built = _BUILT.get(key)
        if built is not None:
            _BUILT.move_to_end(key)
    if built is None:  # a JSON text of a job read before, with other inputs: no reading again
        built = known_shapes.known(text, (file, default_name, limit))
    if built is None:
        built = _build(load_yaml(text, file), text, default_name, limit)
        known_shapes.remember(text, (file, default_name, limit), built)
        if _worth_remembering(built, text):
            with _BUILT_LOCK:
                _BUILT[key] = built
                while len(_BUILT) > MAX_REMEMBERED_JOBS:
                    _BUILT.popitem(last=False)
    return _with_settings(built, overrides, config)


def known_job(text: str, file: str = "<job>", default_name: str = "job") -> Job | None:
    """The job `text` is, if it is a JSON text of a job read before with other inputs'
    numbers (see job/known_shapes.py), without reading it; else None (read it in full)."""
    built = known_shapes.known(text, (file, default_name, max_grid_points(None)))
    return None if built is None else _with_settings(built, None, None)


# Jobs built from texts, least recently used first: parsing was most of a warm small job's call.
# Only small jobs are kept (a big job's parse is small beside its run), so that what is kept stays
# small: a short text can still ask for 1e7-value axes.
_BUILT: OrderedDict[tuple, "Job"] = OrderedDict()
_BUILT_LOCK = threading.Lock()
MAX_REMEMBERED_JOBS = 64
MAX_REMEMBERED_TEXT = 100_000  # characters
MAX_REMEMBERED_AXIS_BYTES = 1 << 20  # the job's axes and tensors, in all


def _worth_remembering(built: "Job", text: str) -> bool:
    if built.grid.files:  # an edited data file must be read again
        return False
    held = sum(axis.held.nbytes for axis in built.grid.held_axes) + \
        sum(values.nbytes for values in built.grid.tensors.values())
    return len(text) <= MAX_REMEMBERED_TEXT and held <= MAX_REMEMBERED_AXIS_BYTES


def job_from_dict(data: dict, overrides: dict | None = None, config: str | Path | None = None) -> Job:
    """Like `load_job`, from a dict shaped like a job file (e.g. built in a notebook)."""
    import yaml  # a dict goes through the same path as a file, so it gets the same checks
    sections = [data.get(key) for key in ("inputs", "graph")] if isinstance(data, dict) else []
    entries = sum(len(part) for part in sections if isinstance(part, dict))
    if entries > limits.MAX_GRAPH_NODES:  # refuse before writing a huge dict out as text
        raise LimitError(f"the job dict has {entries:,} inputs and nodes; the limit is "
                         f"{limits.MAX_GRAPH_NODES:,}", hint="split the job (MAX_GRAPH_NODES)")
    try:
        text = yaml.safe_dump(data, sort_keys=False)
    except yaml.YAMLError as exc:
        raise UsageError(f"the job dict holds a value that is not plain data: {exc}") from None
    return job_from_text(text, "<dict>", overrides, config, str(data.get("name", "job")))


def compile_job(doc: Document, text: str, overrides: dict | None, config, default_name: str) -> Job:
    """Validate and compile; every problem found is reported at once (`JobProblems`), stage by
    stage: the schema, then names, formulas and inputs, then the links between nodes; then the
    settings are resolved."""
    return _with_settings(_build(doc, text, default_name, max_grid_points(config)), overrides,
                          config)


def _with_settings(built: Job, overrides: dict | None, config) -> Job:
    """`built` (whose settings are the job's own) with its settings resolved."""
    return _resolved(built, built.setting_layers[0], dict(overrides or {}), config)


def _resolved(job: Job, own: Settings, overrides: dict, config) -> Job:
    """`job` with its settings resolved from these layers, which it keeps (`with_overrides`)."""
    return dataclasses.replace(job, settings=resolve_settings(own, overrides, config),
                               setting_layers=(own, overrides, config))


def _build(doc: Document, text: str, default_name: str, max_points: int) -> Job:
    """The job as its text says, settings not yet resolved (see `compile_job`); a grid of more
    than `max_points` points (the deployment's limit) is refused."""
    if not isinstance(doc.data, dict):
        kind = "a list" if isinstance(doc.data, list) else f"the {type(doc.data).__name__} value"
        raise JobFileError(f"a job file is a mapping of keys, but this one is {kind}",
                           where=Location(doc.file, 1, 1), hint="start with `inputs:`, `graph:`, "
                           "`outputs:` at the left margin")
    spec = _validate(JobSpec, doc.data, doc)
    names = _Names(spec, doc)
    problems = names.problems
    if doc.file == SENT:
        problems.extend(_sent_setting_problems(spec.settings, doc))
    formula_nodes = {}
    for raw, formula in spec.graph.items():
        where = _formula_location(doc, ("graph", raw))
        try:
            formula_nodes[names.of(raw)] = parse_formula(names.of(raw), formula, where, names.all)
        except GradsvcError as error:
            problems.append(error)
        names.note_formula(formula, where)
    _check_op_budget(formula_nodes, doc)  # before any data file is read or tensor made
    grid = _collect(problems, doc, lambda: build_grid(
        {names.of(raw): value for raw, value in spec.inputs.items()}, spec.grid,
        lambda path: doc.where(("inputs", *names.raw_path(path))), data_folder(doc.file),
        max_points))
    has_tensors = any(is_tensor(value) for value in spec.inputs.values())
    graph = None
    if grid is not None or not has_tensors:  # else shapes would be guesses: checked once they load
        shapes = {name: values.shape for name, values in grid.tensors.items()} if grid else {}
        graph = _collect(problems, doc, lambda: _link(spec, doc, names, formula_nodes, shapes))
    if problems:
        raise JobProblems.of(problems)
    notes = names.notes + _hessian_notes(graph, doc)
    return Job(spec.name or default_name, spec.description, doc.file, graph, grid, spec.settings,
               content_hash(text, grid.files), tuple(notes), (spec.settings, {}, None))


def _hessian_notes(graph: Graph, doc: Document) -> list[str]:
    """`order: 2` gives the Hessians of scalar outputs: say which outputs get none."""
    tensors = [o for o in graph.outputs if graph.shape_of(o)] if graph.order == 2 else []
    if not tensors:
        return []
    return [f"{doc.where(('order',))}: note: order 2 gives Hessians of scalar outputs only; "
            + (f"{tensors[0]} is a tensor (its Jacobian is computed)" if len(tensors) == 1 else
               f"{', '.join(tensors)} are tensors (their Jacobians are computed)")]


SENT = "<request>"  # the file name of a job sent to the service: it may read no data files


def data_folder(file: str) -> Path | None:
    """Where a job's data files are: beside its file; for a job that has no file of its own
    ("<dict>", "<stdin>", "<job>"), the working folder; for a job sent to the service (SENT),
    none: the server's files are not the sender's to read."""
    if file == SENT:
        return None
    if file.startswith("<") and file.endswith(">"):
        return Path.cwd()
    return Path(os.path.abspath(file)).parent


# a sent job's settings that may not pass these limits: (setting, limit, its name in limits)
_SENT_SETTING_LIMITS = (("verify_points", limits.SENT_MAX_VERIFY_POINTS, "SENT_MAX_VERIFY_POINTS"),
                        ("fd_points", limits.SENT_MAX_FD_POINTS, "SENT_MAX_FD_POINTS"),
                        ("verify_budget", limits.SENT_MAX_VERIFY_BUDGET, "SENT_MAX_VERIFY_BUDGET"))


def _sent_setting_problems(settings: Settings, doc: Document) -> list[GradsvcError]:
    """What a job sent to the service may not ask: a kernel cache folder (the server would write
    there and load compiled code from there, for every job of the process), or more verification
    than the named limits (it runs while the client waits)."""
    own = settings.model_fields_set
    problems = []
    if "compile_cache" in own:
        problems.append(JobFileError(
            "a job sent to the service may not set compile_cache",
            where=doc.where(("settings", "compile_cache")),
            hint="the server chooses its kernel cache: remove this setting"))
    for name, limit, limit_name in _SENT_SETTING_LIMITS:
        value = getattr(settings, name)
        if name in own and value > limit:
            problems.append(LimitError(
                f"settings.{name} is {value:,}; a job sent to the service may ask at most "
                f"{limit:,} ({limit_name})", where=doc.where(("settings", name)),
                hint=f"lower {name} to {limit:,} or less, or run the job with the CLI"))
    for problem in problems:
        problem.text, problem.caret_col = doc.line_text(problem.where), problem.where.col
    return problems


def content_hash(text: str, files: tuple = ()) -> str:
    """sha256 of the job's text and, in order, each data file's path and sha256: a job whose data
    changed is another job. (A job without data files: the sha256 of its text, as always.)"""
    digest = hashlib.sha256(text.encode("utf-8"))
    for file in files:
        digest.update(f"\0{file.path}\0{file.sha256}".encode("utf-8"))
    return digest.hexdigest()


def _link(spec: JobSpec, doc: Document, names: "_Names", formula_nodes: dict,
          input_shapes: dict[str, tuple]) -> Graph:
    """The graph of the parsed formulas, every node's shape inferred from the tensor inputs'
    `input_shapes`. A node whose formula failed to parse (already reported) stands in as a
    constant, so that the rest still links and its own problems are found too."""
    nodes = {name: formula_nodes.get(name) or [Node(name, "const", const=0.0, owner=name)]
             for name in (names.of(raw) for raw in spec.graph) if name in names.nodes}
    outputs = [names.listed(n, ("outputs", i)) for i, n in enumerate(spec.outputs)]
    output_where = {n: doc.where(("outputs", i)) for i, n in enumerate(outputs)}
    wrt = spec.wrt
    if isinstance(wrt, list):
        wrt = [names.listed(n, ("wrt", i)) for i, n in enumerate(wrt)]
        output_where.update({n: doc.where(("wrt", i)) for i, n in enumerate(wrt)})
    formulas = {names.of(raw): formula for raw, formula in spec.graph.items()}
    inputs = [name for name in (names.of(raw) for raw in spec.inputs) if name in names.all]
    return build_graph(inputs, nodes, outputs, wrt, formulas, output_where,
                       input_shapes=input_shapes, order=spec.order, mode=spec.mode)


def _collect(problems: list, doc: Document, build):
    """`build()`, or None with its error (or each of its errors) added to `problems`, each
    showing its line of the file."""
    try:
        return build()
    except JobProblems as errors:
        found = errors.problems
    except GradsvcError as error:
        found = [error]
    for error in found:
        if error.text is None and error.where is not None:
            error.text, error.caret_col = doc.line_text(error.where), error.where.col
    problems.extend(found)
    return None


def _validate(model, data, doc: Document, base: tuple = ()):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise JobProblems.of(_schema_problems(exc, doc, base)) from None


def _schema_problems(exc: ValidationError, doc: Document, base: tuple) -> list[JobFileError]:
    """One error per schema problem, each with its place and hint. A key reported missing is left
    out where an unknown key beside it is its misspelling ('output:' for 'outputs:'): the unknown
    key's "did you mean" fixes both."""
    problems, seen, misspelt = [], set(), set()
    for detail in sorted(exc.errors(), key=lambda e: e["type"] == "missing"):
        path = base + _data_path(detail["loc"], doc, base)
        if detail["type"] == "missing" and path in misspelt:
            continue
        error = _schema_problem(detail, path, doc)
        meant = _meant_key(error.hint) if detail["type"] == "extra_forbidden" else None
        if meant:
            misspelt.add(path[:-1] + (meant,))
        if (str(error.where), error.message) not in seen:
            seen.add((str(error.where), error.message))
            problems.append(error)
    return problems


def _schema_problem(detail: dict, path: tuple, doc: Document) -> JobFileError:
    label = ".".join(str(p) for p in path) or "job"
    if detail["type"] == "extra_forbidden" and path[:-1] == ("settings",) and \
            path[-1] in DEPLOYMENT_KEYS:
        where = doc.where(path, key=True)
        message = f"'{path[-1]}' is a setting of the deployment, not of a job"
        hint = ("set it in the config file (configs/default.yaml, or the file named by --config "
                "or GRADSVC_CONFIG)")
    elif detail["type"] == "extra_forbidden":
        key = str(detail["loc"][-1])
        where = doc.where(path, key=True)
        message, hint = f"unknown key '{key}'", _unknown_key_hint(key, path, doc)
    elif detail["type"] == "missing":
        where = doc.where(path[:-1])
        message = f"missing required key '{path[-1]}'" + (f" in {'.'.join(map(str, path[:-1]))}"
                                                          if len(path) > 1 else "")
        hint = "see `gradsvc schema` for the job file format"
    elif detail["type"] == "too_short":
        where = doc.where(path)
        message = f"{label} is empty"
        hint = {"inputs": "a job needs at least one input, e.g. `inputs: {a: 2.0}`",
                "graph": "a job needs at least one node, e.g. `graph: {z: a * b}`",
                "outputs": "name at least one node, e.g. `outputs: [z]`"}.get(
            label, "see `gradsvc schema` for the job file format")
    else:
        where = doc.where(path)
        message = f"{label}: {_plain(detail['msg'])}"
        hint = "see `gradsvc schema` for the job file format"
    return JobFileError(message, where=where, text=doc.line_text(where), caret_col=where.col,
                        hint=hint)


_N_FOR_SHAPE = "a tensor generator takes `shape: [..]` (e.g. shape: [4]) rather than `n`"


def _meant_key(hint: str | None) -> str | None:
    """The key an unknown key's hint says was meant (its own 'missing' is then not reported)."""
    if hint and hint.startswith("did you"):
        return hint.split("'")[1]
    return "shape" if hint == _N_FOR_SHAPE else None


def _unknown_key_hint(key: str, path: tuple, doc: Document) -> str:
    allowed = _allowed_keys(path[:-1])
    if key == "n" and "shape" in allowed:
        return _N_FOR_SHAPE
    close = did_you_mean(key, allowed)
    if close:
        return close
    if len(path) == 1 and isinstance(doc.data.get(key), str):  # `R: x * 2` at the left margin
        return (f"'{key}: {doc.data[key]}' looks like a graph node that lost its indentation: "
                "indent it under `graph:` like the nodes there")
    return f"allowed keys here: {', '.join(allowed)}"


def _plain(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _data_path(loc: tuple, doc: Document, base: tuple) -> tuple:
    """Pydantic's error location without the union tags it inserts ('<linspace>'...) and the other
    parts that are not places in the file."""
    path: tuple = ()
    for k, part in enumerate(loc):
        if part in _TAGS:
            continue
        candidate = path + (part,)
        if base + candidate in doc.value_at or base + candidate in doc.key_at or k == len(loc) - 1:
            path = candidate
    return path


def _allowed_keys(path: tuple) -> list[str]:
    model = _MODELS_AT.get(path)
    if model is None and len(path) == 2 and path[0] == "inputs":
        models = [*GENERATORS.values(), TensorInput, FileInput]
        return sorted({k for m in models for k in m.model_fields})
    if model is None and len(path) == 3 and path[0] == "inputs" and path[2] == "tensor":
        return sorted({k for m in TENSOR_GENERATORS.values() for k in m.model_fields})
    return list(model.model_fields) if model else []


def _formula_location(doc: Document, path: tuple) -> Location:
    where = doc.where(path)
    if doc.style_at.get(path) in ("'", '"') and where.col is not None:
        return Location(where.file, where.line, where.col + 1)  # past the opening quote
    return where


class _Names:
    """Input and node names as Python reads them: NFKC-normalized, so `θ` is a name and `𝐚` is
    `a` (the formula parser normalizes identifiers the same way). Bad names and clashes go to
    `problems`; each name the normalization changed gets one note for the user."""

    def __init__(self, spec: JobSpec, doc: Document):
        self.doc = doc
        self.problems: list[GradsvcError] = []
        self.notes: list[str] = []
        self.raw: dict[str, str] = {}  # normalized -> as written
        self.section: dict[str, str] = {}
        for section in ("inputs", "graph"):
            for raw in getattr(spec, section):
                self._define(raw, section)
        self.all = set(self.raw)
        self.nodes = {name for name, section in self.section.items() if section == "graph"}

    def of(self, raw: str) -> str:
        return unicodedata.normalize("NFKC", raw)

    def raw_path(self, path: tuple) -> tuple:
        """A data path under `inputs:` with its normalized name back as written in the file."""
        return (self.raw.get(path[0], path[0]), *path[1:]) if path else path

    def _define(self, raw: str, section: str) -> None:
        name, where = self.of(raw), self.doc.where((section, raw), key=True)
        problem = _name_problem(name)
        if problem:  # still defined, so that its users are not reported as well
            self._problem(f"'{raw}' cannot be used as a name: {problem}", where,
                          "names are letters (of any alphabet), digits and _, starting with a "
                          "letter")
        if name in self.raw:
            first, other = self.raw[name], self.section[name]
            if first != raw:
                message = f"'{raw}' and '{first}' are the same name once normalized ('{name}')"
            elif other == "inputs" and section == "graph":
                message = f"'{raw}' is both an input and a node"
            else:
                message = f"'{raw}' is defined twice"
            self._problem(message, where, "rename one of them")
        else:
            self.raw[name], self.section[name] = raw, section
            self._note(raw, where)

    def _problem(self, message: str, where: Location, hint: str) -> None:
        self.problems.append(GraphError(message, where=where, text=self.doc.line_text(where),
                                        caret_col=where.col, hint=hint))

    def _note(self, raw: str, where: Location) -> None:
        name = self.of(raw)
        note = (f"{where}: note: '{raw}' is read as '{name}' (Unicode NFKC normalization, as "
                "Python reads names)")
        if name != raw and not any(f"'{raw}' is read as" in n for n in self.notes):
            self.notes.append(note)

    def note_formula(self, formula: str, where: Location) -> None:
        """A note for each identifier in a formula that normalization changes."""
        if formula.isascii() or len(formula) > limits.MAX_FORMULA_CHARS:  # nothing to change
            return
        for match in _IDENTIFIER.finditer(formula):
            if not match.group().isascii():
                self._note(match.group(), where)

    def listed(self, raw: str, path: tuple) -> str:
        """A name listed under `outputs:` or `wrt:`, normalized like the definitions."""
        self._note(raw, self.doc.where(path))
        return self.of(raw)


_IDENTIFIER = re.compile(r"[^\W\d]\w*")


def _name_problem(name: str) -> str | None:
    if len(name) > limits.MAX_NAME_CHARS:
        return f"longer than {limits.MAX_NAME_CHARS} characters"
    if not name.isidentifier():
        return "not an identifier"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return "it is a Python keyword"
    if name.startswith("__"):
        return "names may not start with a double underscore"
    if name in CALLABLE:
        return f"it is the function {name}()"
    return None


def _check_op_budget(formula_nodes: dict, doc: Document) -> None:
    total = sum(len(nodes) for nodes in formula_nodes.values())
    if len(formula_nodes) > limits.MAX_GRAPH_NODES or total > limits.MAX_PRIMITIVE_OPS:
        raise LimitError(f"the graph has {len(formula_nodes)} nodes and {total} operations; the "
                         f"limits are {limits.MAX_GRAPH_NODES} and {limits.MAX_PRIMITIVE_OPS}",
                         where=doc.where(("graph",)), hint="split the job (MAX_GRAPH_NODES, "
                         "MAX_PRIMITIVE_OPS)")


# --- settings ---

def default_config_path() -> Path | None:
    env = os.environ.get("GRADSVC_CONFIG")
    if env:
        return Path(env)
    return _SHIPPED_CONFIG if _SHIPPED_CONFIG.is_file() else None


# resolved once: resolving it (a system call per folder of the path) on every job was a large
# share of a service's parse of a small job
_SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


_CONFIGS: dict[str, tuple[tuple, dict]] = {}  # path -> (the file's stat stamp, its settings)
CONFIG_SETTLE_S = 2.0


def load_config(path: str | Path | None) -> dict:
    """The job settings a config file sets (validated), as a dict of only the keys it names (its
    deployment settings aside: see `max_grid_points`)."""
    return {k: v for k, v in _config_values(path).items() if k not in DEPLOYMENT_KEYS}


def max_grid_points(config: str | Path | None = None) -> int:
    """The deployment's grid-size limit: `max_grid_points` of the config file (`config`, else
    the default one), else limits.MAX_GRID_POINTS."""
    path = config if config is not None else default_config_path()
    return _config_values(path).get("max_grid_points", limits.MAX_GRID_POINTS)


def _config_values(path: str | Path | None) -> dict:
    """Every setting a config file sets (validated), as a dict of only the keys it names.

    Parsed once per version of the file: every `gradsvc.run` reads the config, and parsing it
    was a large share of a warm small job (benchmarks/README.md). A version is the file's (mtime,
    size, inode, ctime): an edit, or a file moved over it, is read afresh. A file changed in the last CONFIG_SETTLE_S seconds
    is always read: an edit of the same size within the clock's tick keeps every stamp.
    """
    if path is None:
        return {}
    try:
        info = os.stat(path)
        settled = time.time() - info.st_mtime > CONFIG_SETTLE_S
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino, info.st_ctime_ns) if settled else None
    except (OSError, ValueError):
        stamp = None  # reading it will say what is wrong
    cached = _CONFIGS.get(str(path))
    if stamp is not None and cached is not None and cached[0] == stamp:
        return _copied(cached[1])
    settings = _read_config(path)
    if stamp is not None:
        _CONFIGS[str(path)] = (stamp, settings)
    return _copied(settings)


def _copied(settings: dict) -> dict:
    """A copy the caller may change (settings nest one level: `tolerance`)."""
    return {k: dict(v) if isinstance(v, dict) else v for k, v in settings.items()}


def _read_config(path: str | Path) -> dict:
    text = read_job_text(path)
    doc = load_yaml(text, str(path))
    if doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise JobFileError("a config file is a mapping of settings", where=Location(str(path), 1, 1))
    return _validate(ConfigFile, doc.data, doc).model_dump(exclude_unset=True)


def resolve_settings(job_settings: Settings, overrides: dict | None, config=None) -> Settings:
    layers = [load_config(config if config is not None else default_config_path()),
              job_settings.model_dump(exclude_unset=True),
              {k: v for k, v in (overrides or {}).items() if v is not None}]
    merged: dict = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"setting {'.'.join(map(str, first['loc']))}: {_plain(first['msg'])}",
                         hint="see `gradsvc schema` for allowed settings") from None


def job_schema() -> dict:
    """JSON Schema of job files (for editors: yaml-language-server, VS Code)."""
    schema = JobSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "gradsvc job"
    return schema


def as_job(job, overrides: dict | None = None, config=None) -> Job:
    """Accept a Job, a path, a dict shaped like a job file, or YAML text."""
    if isinstance(job, Job):
        return with_overrides(job, overrides, config)
    if isinstance(job, dict):
        return job_from_dict(job, overrides, config)
    if isinstance(job, Path) or (isinstance(job, str) and "\n" not in job and
                                 (job.endswith((".yaml", ".yml")) or Path(job).is_file())):
        return load_job(job, overrides, config)
    if isinstance(job, str):
        return job_from_text(job, "<text>", overrides, config)
    raise UsageError(f"cannot run a {type(job).__name__}: give a path, YAML text, a dict or a Job")


def with_overrides(job: Job, overrides: dict | None, config=None) -> Job:
    """A loaded job with settings `overrides` (and `config`) applied, as if they had been given
    when it was loaded: they go over earlier overrides, below nothing."""
    new = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not new and config is None:
        return job
    own, earlier, earlier_config = job.setting_layers or (job.settings, {}, None)
    if config is not None and job.grid.size > max_grid_points(config):
        raise LimitError(f"the grid of '{job.name}' has {job.grid.size:,} points, more than the "
                         f"{max_grid_points(config):,} of {config}", where=Location(job.file),
                         hint="the limit is the deployment's max_grid_points (its config file)")
    return _resolved(job, own, {**earlier, **new},
                     config if config is not None else earlier_config)
