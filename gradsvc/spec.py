"""Job files: the schema (pydantic, so `gradsvc schema` is generated, never hand-kept), validation with
`file:line:col` for every problem, settings precedence, and compiling a job into graph + grid.

Settings precedence, lowest first: the defaults in `Settings` < `configs/default.yaml` (or the file
named by `--config` / `GRADSVC_CONFIG`) < the job's `settings:` < command-line flags or API arguments.
"""
from __future__ import annotations

import hashlib
import keyword
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag,
                      ValidationError)

from . import limits
from .errors import GraphError, JobFileError, LimitError, Location, UsageError
from .expr import parse_formula
from .grid import Grid, build_grid
from .ir import Graph, build_graph, did_you_mean
from .ops import CALLABLE
from .source import Document, load_yaml, read_job_text


def _number(value: Any) -> float:
    # bool is an int in Python and "2" would be coerced by lax validation: both are mistakes here
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")
    return float(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
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


def _input_kind(value: Any) -> str | None:
    if isinstance(value, (int, float, str)):  # a string or bool gets the number validator's message
        return "scalar"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        kinds = [k for k in value if k in GENERATORS]
        return kinds[0] if len(kinds) == 1 else None
    return None


InputSpec = Annotated[Union[
    Annotated[Number, Tag("scalar")],
    Annotated[list[Number], Tag("list")],
    *(Annotated[model, Tag(name)] for name, model in GENERATORS.items()),
], Discriminator(_input_kind, custom_error_type="input_spec", custom_error_message=(
    "an input is a number, a list of numbers, or one of {linspace: [start, stop, num]}, "
    "{arange: [start, stop, step]}, {logspace: [start, stop, num]}, {uniform: [low, high], n, seed}, "
    "{normal: [mean, std], n, seed}"))]


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
    verify_points: Count = Field(2000, ge=1, description="check every point up to this many; "
                                 "above it, a seeded random sample of at most this many points")
    verify_budget: Number = Field(0.1, ge=0, description="for sampled grids: stop checking once "
                                  "verification took this fraction of the compile + run time")
    verify_min_points: Count = Field(32, ge=1, description="sampled grids: always check at least "
                                     "this many points, whatever the budget")
    verify_seed: Count = 0
    fd_points: Count = Field(50, ge=0, description="points given a central finite-difference check")
    tolerance: Tolerance = Tolerance()
    fast_math: bool = Field(True, description="sin/cos by range reduction + polynomials fused "
                            "into the kernel (5x faster than XLA's on CPU; chunks with arguments "
                            "beyond their accurate range are recomputed with XLA's)")
    keep_values: Literal["all", "outputs", "none"] = Field(
        "all", description="which nodes' values are computed and kept (inputs' values are the "
        "grid coordinates); gradients are always kept")
    # YAML reads a bare `off` (like `no` and `false`) as the boolean false: that means off too
    compile_cache: Annotated[str, BeforeValidator(lambda v: "off" if v is False else v)] = Field(
        "~/.cache/gradsvc/jax", description="folder for JAX's persistent compilation cache, "
        "shared by later processes; 'off' disables it")


Formula = Annotated[str, BeforeValidator(
    lambda v: repr(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)]


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
    settings: Settings = Settings()


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
    content_hash: str  # sha256 of the job's text: names a result for caching and reruns


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
    """Like `load_job`, from YAML text."""
    doc = load_yaml(text, file)
    return compile_job(doc, text, overrides, config, default_name)


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
    if not isinstance(doc.data, dict):
        kind = "a list" if isinstance(doc.data, list) else f"the {type(doc.data).__name__} value"
        raise JobFileError(f"a job file is a mapping of keys, but this one is {kind}",
                           where=Location(doc.file, 1, 1), hint="start with `inputs:`, `graph:`, "
                           "`outputs:` at the left margin")
    spec = _validate(JobSpec, doc.data, doc)
    names = _check_names(spec, doc)
    formula_nodes = {}
    for name, formula in spec.graph.items():
        where = _formula_location(doc, ("graph", name))
        formula_nodes[name] = parse_formula(name, formula, where, names)
    _check_op_budget(formula_nodes, doc)
    output_where = {n: doc.where(("outputs", i)) for i, n in enumerate(spec.outputs)}
    if isinstance(spec.wrt, list):
        output_where.update({n: doc.where(("wrt", i)) for i, n in enumerate(spec.wrt)})
    graph = build_graph(list(spec.inputs), formula_nodes, list(spec.outputs), spec.wrt,
                        dict(spec.graph), output_where)
    grid = build_grid(spec.inputs, spec.grid, lambda path: doc.where(("inputs",) + path))
    settings = resolve_settings(spec.settings, overrides, config)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Job(spec.name or default_name, spec.description, doc.file, graph, grid, settings, digest)


def _validate(model, data, doc: Document, base: tuple = ()):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _schema_error(exc, doc, base) from None


def _schema_error(exc: ValidationError, doc: Document, base: tuple) -> JobFileError:
    # an unknown key first: a typo ('output:') also makes the real key missing, and the
    # unknown key's "did you mean" is the message that fixes both
    errors = sorted(exc.errors(), key=lambda e: {"extra_forbidden": 0, "missing": 2}.get(e["type"], 1))
    first = errors[0]
    path = base + _data_path(first["loc"], doc, base)
    more = f" ({len(errors) - 1} more problem{'s' * (len(errors) > 2)} after this one)" \
        if len(errors) > 1 else ""
    label = ".".join(str(p) for p in path) or "job"
    if first["type"] == "extra_forbidden":
        key = str(first["loc"][-1])
        where = doc.where(path, key=True)
        allowed = _allowed_keys(path[:-1])
        hint = did_you_mean(key, allowed) or f"allowed keys here: {', '.join(allowed)}"
        message = f"unknown key '{key}'"
    elif first["type"] == "missing":
        where = doc.where(path[:-1])
        message = f"missing required key '{path[-1]}'" + (f" in {'.'.join(map(str, path[:-1]))}"
                                                          if len(path) > 1 else "")
        hint = "see `gradsvc schema` for the job file format"
    elif first["type"] == "too_short":
        where = doc.where(path)
        message = f"{label} is empty"
        hint = {"inputs": "a job needs at least one input, e.g. `inputs: {a: 2.0}`",
                "graph": "a job needs at least one node, e.g. `graph: {z: a * b}`",
                "outputs": "name at least one node, e.g. `outputs: [z]`"}.get(
            label, "see `gradsvc schema` for the job file format")
    else:
        where = doc.where(path)
        message = f"{label}: {_plain(first['msg'])}"
        hint = "see `gradsvc schema` for the job file format"
    return JobFileError(message + more, where=where, text=doc.line_text(where),
                        caret_col=where.col, hint=hint)


def _plain(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _data_path(loc: tuple, doc: Document, base: tuple) -> tuple:
    """Pydantic's error location without the union tags it inserts ('linspace', 'tagged-union'...)."""
    path: tuple = ()
    for part in loc:
        candidate = path + (part,)
        if base + candidate in doc.value_at or base + candidate in doc.key_at or part == loc[-1]:
            path = candidate
    return path


def _allowed_keys(path: tuple) -> list[str]:
    model = _MODELS_AT.get(path)
    if model is None and len(path) == 2 and path[0] == "inputs":
        return sorted({k for m in GENERATORS.values() for k in m.model_fields})
    return list(model.model_fields) if model else []


def _formula_location(doc: Document, path: tuple) -> Location:
    where = doc.where(path)
    if doc.style_at.get(path) in ("'", '"') and where.col is not None:
        return Location(where.file, where.line, where.col + 1)  # past the opening quote
    return where


def _check_names(spec: JobSpec, doc: Document) -> set[str]:
    for section in ("inputs", "graph"):
        for name in getattr(spec, section):
            problem = _name_problem(name)
            if problem:
                where = doc.where((section, name), key=True)
                raise GraphError(f"'{name}' cannot be used as a name: {problem}", where=where,
                                 text=doc.line_text(where), caret_col=where.col,
                                 hint="names are letters, digits and _, starting with a letter")
    for name in spec.graph:
        if name in spec.inputs:
            where = doc.where(("graph", name), key=True)
            raise GraphError(f"'{name}' is both an input and a node", where=where,
                             hint="rename one of them")
    return set(spec.inputs) | set(spec.graph)


def _name_problem(name: str) -> str | None:
    if len(name) > limits.MAX_NAME_CHARS:
        return f"longer than {limits.MAX_NAME_CHARS} characters"
    if not (name.isascii() and name.isidentifier()):
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
    shipped = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
    return shipped if shipped.is_file() else None


def load_config(path: str | Path | None) -> dict:
    """The settings a config file sets (validated), as a dict of only the keys it names."""
    if path is None:
        return {}
    text = read_job_text(path)
    doc = load_yaml(text, str(path))
    if doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise JobFileError("a config file is a mapping of settings", where=Location(str(path), 1, 1))
    return _validate(Settings, doc.data, doc).model_dump(exclude_unset=True)


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
        return job
    if isinstance(job, dict):
        return job_from_dict(job, overrides, config)
    if isinstance(job, Path) or (isinstance(job, str) and "\n" not in job and
                                 (job.endswith((".yaml", ".yml")) or Path(job).is_file())):
        return load_job(job, overrides, config)
    if isinstance(job, str):
        return job_from_text(job, "<text>", overrides, config)
    raise UsageError(f"cannot run a {type(job).__name__}: give a path, YAML text, a dict or a Job")
