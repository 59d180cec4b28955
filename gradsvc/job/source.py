"""Safe YAML -> plain Python data plus the file location of every value.

PyYAML's SafeLoader composes the node tree (it never constructs Python objects from tags); this module
then walks the tree itself so that it can
  - allow only the core YAML tags (map, seq, str, int, float, bool, null) and name any other tag;
  - reject duplicate keys, naming both lines, and non-string keys such as YAML 1.1's `no:` or `on:`;
  - count nodes as aliases expand, so an alias bomb stops at `MAX_YAML_NODES` instead of eating memory;
  - read `1e3` as the number 1000 (YAML 1.2 does; YAML 1.1, PyYAML's default, reads a string);
  - remember where each value and each key starts, for `file:line:col` messages.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import limits
from ..errors import JobFileError, LimitError, Location

DataPath = tuple  # a path into the data: ("inputs", "c", "linspace", 2)

_CORE = "tag:yaml.org,2002:"
_ALLOWED_TAGS = {_CORE + t for t in ("map", "seq", "str", "int", "float", "bool", "null")}
# YAML 1.2 floats that YAML 1.1 leaves as strings: 1e3, -2E-5, 6.02e+23 (no dot needed)
_FLOAT_12 = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


@dataclass
class Document:
    data: object
    file: str
    value_at: dict[DataPath, Location] = field(default_factory=dict)
    key_at: dict[DataPath, Location] = field(default_factory=dict)
    style_at: dict[DataPath, str | None] = field(default_factory=dict)  # scalar quoting style
    lines: list[str] = field(default_factory=list)

    def where(self, path: DataPath, key: bool = False) -> Location:
        """The best known location for `path`: its own, else its closest ancestor's."""
        table = self.key_at if key else self.value_at
        for depth in range(len(path), -1, -1):
            if path[:depth] in table:
                return table[path[:depth]]
            if path[:depth] in self.value_at:
                return self.value_at[path[:depth]]
        return Location(self.file, 1, 1)

    def line_text(self, where: Location) -> str | None:
        if where.line and 0 < where.line <= len(self.lines):
            return self.lines[where.line - 1].rstrip()
        return None


def _too_big(where: Location) -> LimitError:
    return LimitError(f"the job is more than {limits.MAX_JOB_FILE_BYTES:,} bytes", where=where,
                      hint="split it into several jobs (MAX_JOB_FILE_BYTES)")


def _read_capped(stream, where: Location) -> str:
    """At most the size limit from a binary stream (file, pipe, stdin), as UTF-8 text."""
    data = stream.read(limits.MAX_JOB_FILE_BYTES + 1)
    if len(data) > limits.MAX_JOB_FILE_BYTES:
        raise _too_big(where)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobFileError(f"the job is not UTF-8 text (byte {exc.start})", where=where) from None


def read_job_text(path: str | Path) -> str:
    """The job file's text, refusing what is too large before reading it."""
    p = Path(path)
    where = Location(str(p))
    if not p.exists() or p.is_dir():
        raise JobFileError(f"no such job file: {p}", where=where,
                           hint="check the path; globs like jobs/*.yaml are expanded by the shell")
    if p.is_file() and p.stat().st_size > limits.MAX_JOB_FILE_BYTES:
        raise _too_big(where)
    try:
        with open(p, "rb") as f:  # also a pipe, such as bash's <(...): read at most the limit
            return _read_capped(f, where)
    except OSError as exc:
        raise JobFileError(f"cannot read the job file: {exc.strerror}", where=where) from None


def read_stdin_text() -> str:
    """A job from standard input, refusing what is too large without reading all of it."""
    import sys
    return _read_capped(sys.stdin.buffer, Location("<stdin>"))


def load_yaml(text: str, file: str) -> Document:
    """Parse YAML text safely; see the module docstring for what is checked."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a str from Python holding a lone surrogate: not text
        raise _not_text(text, file, exc.start) from None
    if size > limits.MAX_JOB_FILE_BYTES:
        raise _too_big(Location(file))
    try:
        root = yaml.compose(text, Loader=_loader_for(text))
    except _TooManyNodes as exc:
        raise _too_many(_loc(file, exc.mark)) from None
    except RecursionError:
        raise _too_deep(text, file) from None
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" in str(exc.problem):  # libyaml's own limit (PyYAML recurses out)
            raise _too_deep(text, file) from None
        mark = exc.problem_mark or exc.context_mark
        where = _loc(file, mark) if mark else Location(file)
        raise JobFileError(f"invalid YAML: {exc.problem or exc.context}", where=where,
                           text=_line(text, where), caret_col=where.col,
                           hint="check indentation, colons and quotes near this place") from None
    except yaml.YAMLError as exc:
        raise JobFileError(f"invalid YAML: {exc}", where=Location(file)) from None
    doc = Document(None, file, lines=text.splitlines())
    if root is None:
        raise JobFileError("the job file is empty", where=Location(file, 1, 1),
                           hint="a job needs at least `inputs:`, `graph:` and `outputs:`")
    try:
        doc.data = _Walker(doc).convert(root, ())
    except RecursionError:
        raise _too_deep(text, file) from None
    return doc


def _not_text(text: str, file: str, index: int) -> JobFileError:
    line = text.count("\n", 0, index) + 1
    where = Location(file, line, index - text.rfind("\n", 0, index))
    return JobFileError(f"the job holds U+{ord(text[index]):04X}, a lone surrogate, which is not "
                        "a character of text", where=where, text=_line(text, where),
                        caret_col=where.col, hint="job files are UTF-8 text: remove it, or decode "
                        "the file's bytes as UTF-8 before passing its text")


# Up to this many characters a text is composed by libyaml (C): it cannot hold more nodes than
# MAX_YAML_NODES before aliases expand, which the walk below counts. libyaml composes a small job
# several times faster than PyYAML's Python parser: the service parses one per request.
C_COMPOSE_MAX_CHARS = 64_000


def _loader_for(text: str):
    if yaml.__with_libyaml__ and len(text) <= C_COMPOSE_MAX_CHARS:
        return yaml.CSafeLoader
    return _CountingLoader


def _style(node) -> str | None:
    """A scalar's quoting style; None for plain (libyaml says '')."""
    return node.style or None


class _TooManyNodes(Exception):
    def __init__(self, mark):
        self.mark = mark


class _CountingLoader(yaml.SafeLoader):
    """Counts nodes as the parser makes them: a long flat list is refused once it passes
    MAX_YAML_NODES, not after all of it is parsed (a 660 kB list took 6 s to parse, then was
    refused). Aliases are not expanded here; the walk below counts them as they expand."""

    def compose_node(self, parent, index):
        self.composed = getattr(self, "composed", 0) + 1
        if self.composed > limits.MAX_YAML_NODES:
            raise _TooManyNodes(self.peek_event().start_mark)
        return super().compose_node(parent, index)


def _too_many(where: Location) -> LimitError:
    return LimitError(f"the YAML expands to more than {limits.MAX_YAML_NODES:,} values",
                      where=where, hint="aliases (*name) may not multiply the document "
                      "(limit MAX_YAML_NODES)")


def _too_deep(text: str, file: str) -> LimitError:
    """The parser ran out of recursion: point at the bracket where the nesting is deepest (the
    only nesting a job can make that deep is of [ and {: block nesting needs a line per level)."""
    return LimitError("the YAML nests too deeply to read", where=_deepest_bracket(text, file),
                      hint="job files need only a few levels of nesting")  # no line: 10,000s wide


def _deepest_bracket(text: str, file: str) -> Location:
    depth, deepest, place, quote = 0, 0, Location(file), None
    for line_no, line in enumerate(text.splitlines(), 1):
        for col, char in enumerate(line, 1):
            if quote:
                quote = None if char == quote else quote
            elif char in "'\"":
                quote = char
            elif char in "[{":
                depth += 1
                if depth > deepest:
                    deepest, place = depth, Location(file, line_no, col)
            elif char in "]}":
                depth -= 1
    return place


def _loc(file: str, mark) -> Location:
    return Location(file, mark.line + 1, mark.column + 1)


def _line(text: str, where: Location) -> str | None:
    lines = text.splitlines()
    return lines[where.line - 1] if where.line and where.line <= len(lines) else None


class _Walker:
    def __init__(self, doc: Document):
        self.doc = doc
        self.constructor = yaml.SafeLoader("")  # only for its scalar constructors
        self.budget = limits.MAX_YAML_NODES

    def error(self, message: str, node, hint: str | None = None) -> JobFileError:
        where = _loc(self.doc.file, node.start_mark)
        return JobFileError(message, where=where, text=self.doc.line_text(where), caret_col=where.col,
                            hint=hint)

    def convert(self, node, path: DataPath):
        self.budget -= 1
        if self.budget < 0:
            raise _too_many(_loc(self.doc.file, node.start_mark))
        if node.tag not in _ALLOWED_TAGS:
            raise self.error(f"the YAML tag {node.tag!r} is not allowed", node,
                             "job files are plain data: remove the tag")
        self.doc.value_at.setdefault(path, _loc(self.doc.file, node.start_mark))
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(child, path + (i,)) for i, child in enumerate(node.value)]
        self.doc.style_at[path] = _style(node)
        return self.scalar(node)

    def scalar(self, node):
        try:
            value = self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:
            raise self.error(f"cannot read this value: {exc}", node) from None
        if isinstance(value, str) and _style(node) is None and _FLOAT_12.match(value):
            return float(value)
        if not isinstance(value, (str, int, float, bool, type(None))):
            # timestamps, binary: SafeLoader would build date/bytes objects we never want
            raise self.error(f"a {type(value).__name__} value is not allowed here", node,
                             "quote it to make it a string")
        return value

    def mapping(self, node, path: DataPath) -> dict:
        result: dict = {}
        first_seen: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == _CORE + "merge":
                raise self.error("YAML merge keys (<<) are not supported", key_node,
                                 "write the keys out in full")
            key = self.convert(key_node, path + ("<key>",))
            if not isinstance(key, str):
                raise self.error(f"the key {key_node.value!r} is read as {type(key).__name__} "
                                 f"{key!r}, not a name", key_node,
                                 f"quote it: \"{key_node.value}\": (YAML 1.1 reads yes/no/on/off "
                                 "as booleans)")
            if key in first_seen:
                first = first_seen[key]
                raise self.error(f"duplicate key '{key}' (first defined on line {first.line})",
                                 key_node, "each key may appear once in a mapping; remove or "
                                 "rename one")
            first_seen[key] = _loc(self.doc.file, key_node.start_mark)
            self.doc.key_at[path + (key,)] = first_seen[key]
            result[key] = self.convert(value_node, path + (key,))
        self.doc.value_at.pop(path + ("<key>",), None)
        return result
