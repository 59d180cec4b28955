"""Formula text -> primitive IR nodes, through an `ast` allow-list. Nothing is ever evaluated.

The language: numbers, names, `+ - * / **` and `@` (matrix product), unary `-` and `+`, the comparisons
`> >= < <=` (1 or 0, no gradient), parentheses, calls of the elementwise functions in `ops.CALLABLE`
(`where`'s condition must be a comparison) and of the tensor functions in `tensor_ops.TENSOR_OPS`
(`dot transpose reshape stack concat sum mean prod max min cumsum trapz`; one-argument `max(x)` and
`min(x)` are the reductions `amax`/`amin`, two-argument ones stay elementwise), and subscripts
(`v[0]`, `v[-1]`, `v[1:3]`, `v[::2]`, `M[:, 0]`, `M[1, 0]`). Subscripts, `axis=` and `reshape`'s
target shape (`reshape(x, [2, -1])`) hold integer literals only; `axis=` is the only keyword, taken
by the reductions and `cumsum`. `pi` is a constant unless an input or node takes that name. Every other
Python construct (attributes, names or calls inside subscripts, lambdas, comprehensions, strings, other
keywords, unknown functions...) is rejected with its column and a hint. Shapes are not checked here:
the graph infers them when it links. Length and nesting depth are bounded by `limits`.

>>> [n.op for n in parse_formula("z", "x * sin(y) ** 2", Location("job.yaml", 3, 6), {"x", "y"})]
['sin', 'ipow', 'mul']
>>> [(n.op, n.param) for n in parse_formula("z", "mean(W[0] * v, axis=-1)", Location("job.yaml", 3, 6),
...                                             {"W", "v"})]
[('index', (0,)), ('mul', None), ('mean', -1)]
"""
from __future__ import annotations

import ast
import math
import re
from dataclasses import replace

from .. import limits
from ..errors import FormulaError, LimitError, Location
from .ir import Node, did_you_mean
from .ops import BINARY_SYMBOLS, CALLABLE, COMPARISONS, CONSTANTS
from .tensor_ops import TENSOR_OPS, TensorOp

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.MatMult: "@"}
_COMPARE = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<="}

_WHY_NOT = {  # friendlier words for constructs people try
    ast.Attribute: "attribute access (`a.b`)",
    ast.Lambda: "lambda", ast.BoolOp: "`and`/`or`",
    ast.IfExp: "`x if c else y`", ast.NamedExpr: "`:=`", ast.Starred: "`*args`",
    ast.ListComp: "comprehensions", ast.GeneratorExp: "comprehensions", ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions", ast.JoinedStr: "f-strings", ast.List: "lists", ast.Tuple: "tuples",
    ast.Dict: "dicts", ast.Set: "sets", ast.Await: "await", ast.Yield: "yield",
    ast.FloorDiv: "`//`", ast.Mod: "`%`", ast.BitAnd: "`&`", ast.BitOr: "`|`",
    ast.BitXor: "`^` (use `**` for powers)", ast.LShift: "`<<`", ast.RShift: "`>>`",
    ast.Invert: "`~`", ast.Not: "`not`",
}
_ALIASES = {  # other languages' names for our functions
    "ln": "log", "power": "pow", "maximum": "max", "minimum": "min", "fabs": "abs",
    "logistic": "sigmoid", "expit": "sigmoid", "average": "mean", "amax": "max", "amin": "min",
    "concatenate": "concat", "vstack": "stack", "trapezoid": "trapz",
}

# Tensor functions as formulas call them (one-argument max/min share the elementwise functions'
# names); `matmul` and `index` are syntax, `a @ b` and `v[0]`, and have no name to call.
TENSOR_CALLS: dict[str, TensorOp] = {op.spelled: op for op in TENSOR_OPS.values() if op.spelled}
_WRITTEN_AS = {op.name: op.syntax for op in TENSOR_OPS.values() if not op.spelled}
FUNCTION_NAMES = frozenset(CALLABLE) | frozenset(TENSOR_CALLS)  # every name a formula can call
_USAGE = {"reshape": "reshape(x, [2, 3]) (one length may be -1: the length that fits)",
          "trapz": "trapz(y, x), the integral of y over the samples x along y's last axis"}
MAX_INTEGER_LITERAL = 2 ** 63 - 1  # indices, axes and lengths fit numpy's int64
# a number written against a name, `2theta` or `3e5y`: Python's "invalid decimal literal"
_IMPLICIT_PRODUCT = re.compile(r"(?<![\w.])(\d[\d_]*\.?\d*(?:[eE][-+]?\d+)?)([^\W\d]\w*)")
_HINT = ("formulas may use numbers, names, + - * / ** @, parentheses, subscripts with integers "
         "(v[0], v[1:3], M[:, 0]), the keyword axis= of the reductions (sum(x, axis=0)) and the "
         "functions " + ", ".join(sorted(FUNCTION_NAMES)))
_SUBSCRIPT_HINT = ("index with fixed integers and slices of them: v[0], v[-1], v[1:3], v[::2], "
                   "M[:, 0], M[1, 0]; names and expressions cannot be indices")
_AXIS_HINT = "write a fixed integer, e.g. sum(x, axis=0) or sum(x, axis=-1); axes cannot be computed"
_RESHAPE_HINT = ("write the target shape as a list of integers, e.g. reshape(x, [2, 3]) or "
                 "reshape(x, [-1]) (-1: the length that fits)")


class _Flattener:
    """Turns one formula's syntax tree into primitive nodes, last node named after the formula."""

    def __init__(self, owner: str, text: str, where: Location, names: set[str]):
        self.owner, self.text, self.where, self.names = owner, text, where, names
        self.nodes: list[Node] = []
        self.indent = len(text) - len(text.lstrip())  # the parser sees the stripped text

    def at(self, col: int) -> Location:
        """The file location of 1-based column `col` of the formula."""
        if self.where.line is None:
            return self.where
        return Location(self.where.file, self.where.line, (self.where.col or 1) + col - 1)

    def error(self, message: str, node: ast.AST | None, hint: str = _HINT, cls=FormulaError):
        col = node.col_offset + 1 + self.indent if node is not None else None
        return cls(message, where=self.at(col or 1), text=self.text, caret_col=col, hint=hint)

    def emit(self, op: str, args: tuple[str, ...] = (), node: ast.AST | None = None, **kw) -> str:
        name = f"{self.owner}.{len(self.nodes) + 1}"
        col = node.col_offset + 1 + self.indent if node is not None else 1
        self.nodes.append(Node(name, op, args, owner=self.owner, where=self.at(col), **kw))
        return name

    def visit(self, node: ast.AST, depth: int) -> str:
        if depth > limits.MAX_FORMULA_DEPTH:
            raise self.error(f"formula nests deeper than {limits.MAX_FORMULA_DEPTH} levels", node,
                             "split it into several nodes under `graph:` (limit MAX_FORMULA_DEPTH)",
                             LimitError)
        visitor = _VISITORS.get(type(node))
        if visitor is None:
            what = _WHY_NOT.get(type(node), type(node).__name__)
            raise self.error(f"{what} is not allowed in formulas", node)
        return visitor(self, node, depth + 1)

    def visit_binop(self, node: ast.BinOp, depth: int) -> str:
        symbol = _BINOPS.get(type(node.op))
        if symbol is None:
            what = _WHY_NOT.get(type(node.op), type(node.op).__name__)
            raise self.error(f"the operator {what} is not allowed in formulas", node)
        if symbol == "**" and isinstance(node.left, ast.Name) and node.left.id == "e" \
                and "e" not in self.names:
            exponent = ast.get_source_segment(self.text.strip(), node.right) or "x"
            raise self.error("'e' is not defined: Euler's number is not a constant in formulas",
                             node.left, f"did you mean exp({exponent})?")
        left = self.visit(node.left, depth)
        if symbol == "**":
            return self.power(left, node.right, node, depth)
        right = self.visit(node.right, depth)
        op = "matmul" if symbol == "@" else BINARY_SYMBOLS[symbol].name
        return self.emit(op, (left, right), node)

    def power(self, base: str, exponent: ast.AST, node: ast.AST, depth: int) -> str:
        n = _small_integer_literal(exponent)
        if n is not None:  # x ** 3: exact repeated multiplication, as JAX does for integer powers
            return self.emit("ipow", (base,), node, param=n)
        return self.emit("pow", (base, self.visit(exponent, depth)), node)

    def visit_compare(self, node: ast.Compare, depth: int) -> str:
        if len(node.ops) > 1:
            raise self.error("chained comparisons (a < b < c) are not allowed", node,
                             "compare two things at a time, e.g. where(a < b, where(b < c, ...), ...)")
        symbol = _COMPARE.get(type(node.ops[0]))
        if symbol is None:
            raise self.error("only the comparisons > >= < <= are allowed", node,
                             "floating-point == and != are fragile; compare with a tolerance, "
                             "e.g. abs(a - b) < 1e-9")
        left, right = self.visit(node.left, depth), self.visit(node.comparators[0], depth)
        return self.emit(COMPARISONS[symbol].name, (left, right), node)

    def visit_unary(self, node: ast.UnaryOp, depth: int) -> str:
        operand = self.visit(node.operand, depth)
        if isinstance(node.op, ast.UAdd):
            return operand
        if isinstance(node.op, ast.USub):
            return self.emit("neg", (operand,), node)
        raise self.error(f"the operator {_WHY_NOT.get(type(node.op), '?')} is not allowed", node)

    def visit_call(self, node: ast.Call, depth: int) -> str:
        if not isinstance(node.func, ast.Name):
            what = _WHY_NOT.get(type(node.func), "an expression")
            raise self.error(f"only plain function names can be called, not {what}", node.func)
        fname = node.func.id
        if fname in FUNCTION_NAMES and fname in self.names:
            raise self.error(f"'{fname}' is a name of this job, which hides the function "
                             f"{fname}()", node, f"rename the input or node '{fname}' to call "
                             f"{fname}()")
        if fname not in FUNCTION_NAMES:
            hint = (f"did you mean '{_ALIASES[fname]}'?" if fname in _ALIASES else
                    f"write {_WRITTEN_AS[fname]}" if fname in _WRITTEN_AS else
                    did_you_mean(fname, FUNCTION_NAMES) or _HINT)
            raise self.error(f"unknown function '{fname}'", node, hint)
        op = CALLABLE.get(fname)
        if fname in _EXTREME:  # max, min: elementwise with 2 arguments, reductions with 1
            if len(node.args) not in (1, op.arity):
                most, more = _EXTREME[fname]
                raise self.error(f"{fname}() takes 1 argument (the {most} element) or {op.arity} (the "
                                 f"{more} of two, element by element), got {len(node.args)}", node,
                                 _extremum_hint(fname))
            if len(node.args) == op.arity and node.keywords:
                raise self.error(f"{fname}() of two arguments is elementwise and takes no keyword "
                                 "arguments", node.keywords[0].value, _extremum_hint(fname))
            if len(node.args) == 1:
                op = None
        if op is None:
            return self.tensor_call(node, fname, TENSOR_CALLS[fname], depth)
        if node.keywords:
            raise self.error(f"{fname}() takes no keyword arguments", node.keywords[0].value)
        if len(node.args) != op.arity:
            raise self.error(f"{fname}() takes {op.arity} argument{'s' * (op.arity > 1)}, "
                             f"got {len(node.args)}", node, f"rule: {op.rule}")
        if fname == "pow":
            return self.power(self.visit(node.args[0], depth), node.args[1], node, depth)
        if fname == "where" and not isinstance(node.args[0], ast.Compare):
            raise self.error("where() needs a comparison as its condition", node.args[0],
                             "write it like where(x > 0, a, b): the switch points are then known "
                             "and reported as kinks")
        args = tuple(self.visit(arg, depth) for arg in node.args)
        return self.emit(op.name, args, node)

    def tensor_call(self, node: ast.Call, fname: str, op: TensorOp, depth: int) -> str:
        """sum(x, axis=0), reshape(x, [2, 3]), stack(a, b, c)...: one node, `param` from literals."""
        axis = self.axis(node, fname, op)
        literal = fname == "reshape"  # reshape(x, [2, 3]): the target shape is no argument node
        low, high = op.min_args + literal, op.max_args and op.max_args + literal
        if not low <= len(node.args) <= (high or len(node.args)):
            raise self.error(f"{fname}() takes {_count(low, high)}, got {len(node.args)}", node,
                             f"write it like {_usage(fname, op)}")
        args = tuple(self.visit(arg, depth) for arg in node.args[:len(node.args) - literal])
        param = self.shape_literal(node.args[-1]) if literal else axis
        return self.emit(op.name, args, node, param=param)

    def axis(self, node: ast.Call, fname: str, op: TensorOp) -> int | None:
        """The value of `axis=`, the only keyword formulas know, or None."""
        if node.keywords and not op.axis_keyword:
            raise self.error(f"{fname}() takes no keyword arguments", node.keywords[0].value,
                             f"write it like {_usage(fname, op)}")
        for keyword in node.keywords:
            if keyword.arg is None:
                raise self.error("`**` arguments are not allowed in formulas", keyword, _AXIS_HINT)
            if keyword.arg != "axis":
                raise self.error(f"{fname}() takes only the keyword axis=, not {keyword.arg}=",
                                 keyword, _AXIS_HINT)
        if len(node.keywords) > 1:  # Python's parser leaves a repeated keyword to its compiler
            raise self.error(f"{fname}() is given axis= more than once", node.keywords[1], _AXIS_HINT)
        if not node.keywords:
            return None
        return self.integer(node.keywords[0].value, "axis= must be an integer literal", _AXIS_HINT)

    def shape_literal(self, node: ast.AST) -> tuple[int, ...]:
        """reshape's target: a list of integer literals, lengths of at least 1 and one -1 at most."""
        if not isinstance(node, ast.List):
            raise self.error("reshape()'s target shape must be a list of integer literals like "
                             f"[2, 3], not {_describe(self.text.strip(), node)}", node, _RESHAPE_HINT)
        lengths: list[int] = []
        for item in node.elts:
            n = self.integer(item, "reshape()'s target shape may only hold integer literals",
                             _RESHAPE_HINT)
            if n == -1 and -1 in lengths:
                raise self.error("reshape()'s target shape may hold -1 (the length that fits) only "
                                 "once", item, _RESHAPE_HINT)
            if n < -1 or n == 0:
                raise self.error(f"reshape()'s target shape holds lengths of at least 1 (and one -1), "
                                 f"not {n}", item, _RESHAPE_HINT)
            lengths.append(n)
        return tuple(lengths)

    def visit_subscript(self, node: ast.Subscript, depth: int) -> str:
        value = self.visit(node.value, depth)
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if not items:
            raise self.error("a subscript needs at least one index", node.slice, _SUBSCRIPT_HINT)
        index = tuple(self.index_item(item) for item in items)
        return self.emit("index", (value,), node.slice, param=index)

    def index_item(self, node: ast.AST) -> int | tuple:
        """One position of a subscript: an int, or ("slice", start, stop, step) with None for gaps."""
        if not isinstance(node, ast.Slice):
            return self.integer(node, "subscripts may only hold integer literals", _SUBSCRIPT_HINT)
        parts = tuple(None if part is None else
                      self.integer(part, "slices may only hold integer literals", _SUBSCRIPT_HINT)
                      for part in (node.lower, node.upper, node.step))
        if parts[2] == 0:
            raise self.error("a slice step cannot be 0", node.step, _SUBSCRIPT_HINT)
        return ("slice",) + parts

    def integer(self, node: ast.AST, must: str, hint: str) -> int:
        """An integer literal, possibly negated (`3`, `-1`); anything else is refused at its column."""
        negative = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
        literal = node.operand if negative else node
        if not (isinstance(literal, ast.Constant) and type(literal.value) is int):
            raise self.error(f"{must}, not {_describe(self.text.strip(), node)}", node, hint)
        if literal.value > MAX_INTEGER_LITERAL:
            raise self.error(f"the integer {_short(self.text.strip(), node)} is too large (at most "
                             f"{MAX_INTEGER_LITERAL})", node, hint)
        return -literal.value if negative else literal.value

    def visit_name(self, node: ast.Name, depth: int) -> str:
        if node.id in self.names:
            return node.id
        if node.id in CONSTANTS:
            return self.emit("const", (), node, const=CONSTANTS[node.id])
        if node.id in FUNCTION_NAMES:
            raise self.error(f"'{node.id}' is a function; call it like {node.id}(x)", node)
        return node.id  # resolved (or reported as undefined, with a suggestion) when the graph links

    def visit_constant(self, node: ast.Constant, depth: int) -> str:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"the literal {node.value!r} is not a number", node)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise self.error(f"the number {_short(self.text.strip(), node)} is too large for a "
                             "float64", node, "write a finite number (at most about 1.8e308)")
        return self.emit("const", (), node, const=number)


_VISITORS = {ast.BinOp: _Flattener.visit_binop, ast.UnaryOp: _Flattener.visit_unary,
             ast.Compare: _Flattener.visit_compare,
             ast.Call: _Flattener.visit_call, ast.Name: _Flattener.visit_name,
             ast.Subscript: _Flattener.visit_subscript,
             ast.Constant: _Flattener.visit_constant}


def _short(text: str, node: ast.AST) -> str:
    segment = ast.get_source_segment(text, node) or "?"
    return segment if len(segment) <= 20 else segment[:17] + "..."


_EXTREME = {"max": ("largest", "larger"), "min": ("smallest", "smaller")}


def _extremum_hint(fname: str) -> str:
    most, more = _EXTREME[fname]
    return (f"{fname}(x) or {fname}(x, axis=0) is the {most} element (along an axis); "
            f"{fname}(a, b) the {more} of a and b, element by element")


def _count(low: int, high: int | None) -> str:
    count = f"{low}" if low == high else f"at least {low}" if high is None else f"{low} to {high}"
    return f"{count} argument{'s' * (count.split()[-1] != '1')}"


def _usage(fname: str, op: TensorOp) -> str:
    if fname in _USAGE:
        return _USAGE[fname]
    if op.axis_keyword:
        return f"{fname}(x) or {fname}(x, axis=0)"
    args = {1: "x", 2: "a, b"}.get(op.max_args, "a, b, ...")
    return f"{fname}({args})"


def _describe(text: str, node: ast.AST) -> str:
    """What a user wrote where an integer literal belongs, in words."""
    if isinstance(node, ast.Name):
        return f"the name '{node.id}'"
    operand = node.operand if isinstance(node, ast.UnaryOp) and type(node.op) in (ast.USub, ast.UAdd) \
        else None
    if isinstance(operand, ast.Constant) and type(operand.value) in (float, complex):
        return f"the number {_short(text, node)}"  # -1.5, +2j
    if isinstance(node, ast.Constant):
        value = node.value
        if value is Ellipsis:
            return "`...` (Ellipsis)"
        if value is None or isinstance(value, bool):
            return f"{value!r}"
        if isinstance(value, (int, float, complex)):
            return f"the number {_short(text, node)}"
        return f"the literal {_short(text, node)}"
    kinds = {ast.Call: "the call", ast.Subscript: "the subscript", ast.Tuple: "the tuple",
             ast.List: "the list"}
    if type(node) in kinds:
        return f"{kinds[type(node)]} {_short(text, node)}"
    if type(node) in _WHY_NOT:
        return _WHY_NOT[type(node)]
    return f"the expression {_short(text, node)}"


def _small_integer_literal(node: ast.AST) -> int | None:
    sign = 1
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        sign, node = -1, node.operand
    if isinstance(node, ast.Constant) and type(node.value) is int:
        if node.value <= limits.MAX_INT_EXPONENT:
            return sign * node.value
    return None


def parse_formula(owner: str, text: str, where: Location, names: set[str]) -> list[Node]:
    """Parse one node's formula into primitive nodes; the last one is renamed to `owner`.

    Args:
      owner: the node being defined (`z` in `z: x * y`).
      text: the formula.
      where: where the formula text starts in the job file.
      names: every input and node name (they shadow constants like `pi`).
    Returns:
      The formula's primitive nodes in evaluation order.
    """
    if len(text) > limits.MAX_FORMULA_CHARS:
        raise LimitError(f"formula of '{owner}' has {len(text)} characters, more than "
                         f"{limits.MAX_FORMULA_CHARS}", where=where,
                         hint="split it into several nodes under `graph:` (limit MAX_FORMULA_CHARS)")
    text = text.replace("\r", " ").replace("\n", " ")  # a YAML block scalar may span lines
    flat = _Flattener(owner, text, where, names)
    tree = _parse(text, flat)
    result = flat.visit(tree.body, 0)
    nodes = flat.nodes
    if not nodes or nodes[-1].name != result:  # a bare name (`y: x`) or `+x`: an identity node
        nodes.append(Node(owner, "id", (result,), owner=owner, where=where))
    else:
        nodes[-1] = replace(nodes[-1], name=owner)
    return nodes


def _parse(text: str, flat: _Flattener) -> ast.Expression:
    if "\x00" in text:
        raise flat.error("formula contains a NUL character", None)
    try:
        return ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        if "too many nested parentheses" in exc.msg:
            raise flat.error(exc.msg, None, "split it into several nodes under `graph:` "
                             "(Python's parser nests at most 200 parentheses; MAX_FORMULA_DEPTH)",
                             LimitError) from None
        stripped = text.strip()
        at_end = not exc.offset or exc.offset > len(stripped)  # the parser ran out of input
        col = (len(stripped) + 1 if at_end else exc.offset) + flat.indent
        message = exc.msg if exc.msg != "invalid syntax" else (
            "the formula ends too early" if at_end else "this is not a valid formula")
        raise FormulaError(message, where=flat.at(col or 1), text=text, caret_col=col,
                           hint=_syntax_hint(exc, stripped)) from None
    except (RecursionError, MemoryError):
        raise flat.error("formula is nested too deeply for the parser", None,
                         "split it into several nodes under `graph:` (limit MAX_FORMULA_DEPTH)",
                         LimitError) from None


def _syntax_hint(exc: SyntaxError, text: str) -> str:
    """`2theta` is a product in a maths book: say how to write it."""
    if exc.msg == "invalid decimal literal":
        products = list(_IMPLICIT_PRODUCT.finditer(text))
        near = [m for m in products if m.start() < (exc.offset or 1) <= m.end() + 1] or products
        if near:
            number, name = near[0].groups()
            return f"write {number} * {name}: a number and a name are multiplied with *"
    return _HINT
