"""Jobs sent as JSON that differ from a job read before only in their inputs' numbers (a service
answering one graph at other points), built from that job instead of being read again.

A JSON text's numbers stand in the text in the order its parser meets them, so the numbers that
are inputs' values can be found in the text itself; the text with those masked (its skeleton)
names the kind of job. A text whose skeleton was read before is that job with its inputs' new
numbers and its own content hash: every other byte of it (formulas, settings, every other number)
is the same, so everything the full reading checked of it holds, and the checks of a number are
made again here (finite, within float64), or the text goes the full way for its error.

Only texts of plain scalar inputs take this way, and only jobs whose reading left no notes. Any
other text (YAML, duplicate keys, NaN, an input that is not a plain number) is read in full. The
places a remembered job records are its first text's: only errors found while reading name them,
and a text with an error is read in full.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import threading
from collections import OrderedDict

import numpy as np

# a JSON string (skipped: numbers inside it are text) or a JSON number
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?')
_MASK = "\0"  # never in a JSON text outside a string, and inside one only escaped
MAX_REMEMBERED = 64
MAX_TEXT_CHARS = 100_000  # longer texts are read in full (their reading is small beside a run)

_REMEMBERED: OrderedDict[tuple, tuple] = OrderedDict()  # key -> (job, input names in text order)
_LOCK = threading.Lock()


class _NotPlain(Exception):
    """A text this way does not take."""


def _refuse(*_):
    raise _NotPlain


def _numbers(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The number tokens of a JSON text and their spans, in order."""
    tokens, spans = [], []
    for match in _TOKEN.finditer(text):
        if not match.group().startswith('"'):
            tokens.append(match.group())
            spans.append(match.span())
    return tokens, spans


def _number_paths(value, path: tuple = ()) -> list[tuple]:
    """The path of every number in the parsed text, in the order the parser met them."""
    if isinstance(value, dict):
        return [p for key, item in value.items() for p in _number_paths(item, path + (key,))]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _number_paths(item, path + (i,))]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [path]
    return []


def _pairs(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):  # the full reading refuses them, naming both lines
        raise _NotPlain
    return dict(pairs)


def _shape(text: str) -> tuple[str, list[str], list[str]] | None:
    """(skeleton, the inputs' names, their number tokens), in text order; None for a text that
    is not JSON of plain scalar inputs."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(text, object_pairs_hook=_pairs, parse_constant=_refuse)
    except (_NotPlain, ValueError, RecursionError):
        return None
    inputs = data.get("inputs") if isinstance(data, dict) else None
    if not isinstance(inputs, dict) or not inputs or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in inputs.values()):
        return None
    tokens, spans = _numbers(text)
    paths = _number_paths(data)
    if len(paths) != len(tokens):  # cannot be for valid JSON: then, to be sure, the full way
        return None
    chosen = [k for k, path in enumerate(paths) if len(path) == 2 and path[0] == "inputs"]
    skeleton, last = [], 0
    for k in chosen:
        start, stop = spans[k]
        skeleton += [text[last:start], _MASK]
        last = stop
    skeleton.append(text[last:])
    return "".join(skeleton), [paths[k][1] for k in chosen], [tokens[k] for k in chosen]


def _value(token: str) -> float:
    """A number token read as the full reading reads it (an integer is exact, then a float)."""
    number = float(token) if any(c in token for c in ".eE") else float(int(token))
    if not math.isfinite(number):
        raise OverflowError(token)
    return number


def known(text: str, context: tuple):
    """The job `text` is, built from a remembered job of its skeleton; None if there is none or
    the text does not take this way. `context`: what else the job depends on (file, name, the
    deployment's limit)."""
    if len(text) > MAX_TEXT_CHARS:
        return None
    shape = _shape(text)
    if shape is None:
        return None
    skeleton, names, tokens = shape
    with _LOCK:
        remembered = _REMEMBERED.get((skeleton, context))
        if remembered is not None:
            _REMEMBERED.move_to_end((skeleton, context))
    if remembered is None:
        return None
    job, order = remembered
    if names != order:
        return None
    try:
        values = dict(zip(names, map(_value, tokens)))
    except (OverflowError, ValueError):
        return None  # the full reading says what is wrong with it
    from .spec import content_hash
    axes = tuple(dataclasses.replace(axis, held=np.array([values[axis.name]]))
                 for axis in job.grid.axes)
    return dataclasses.replace(job, grid=dataclasses.replace(job.grid, axes=axes),
                               content_hash=content_hash(text))


def remember(text: str, context: tuple, job) -> None:
    """Keep `job`, read in full from `text`, for texts of its skeleton, if it is one this way
    can build: plain scalar inputs only (a grid of one point), no notes, no data files."""
    grid = job.grid
    if (len(text) > MAX_TEXT_CHARS or job.notes or grid.files or grid.tensors or grid.size != 1
            or any(axis.held is None or len(axis) != 1 for axis in grid.axes)):
        return
    shape = _shape(text)
    if shape is None or sorted(shape[1]) != sorted(axis.name for axis in grid.axes):
        return
    with _LOCK:
        _REMEMBERED[(shape[0], context)] = (job, shape[1])
        _REMEMBERED.move_to_end((shape[0], context))
        while len(_REMEMBERED) > MAX_REMEMBERED:
            _REMEMBERED.popitem(last=False)
