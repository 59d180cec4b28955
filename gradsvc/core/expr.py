"""Formula text -> primitive IR nodes, through an `ast` allow-list. Nothing is ever evaluated.

The language: numbers, names, `+ - * / **`, unary `-` and `+`, the comparisons `> >= < <=` (1 or 0,
no gradient), parentheses, and calls of the functions in `ops.CALLABLE` (`where`'s condition must be
a comparison); `pi` is a constant unless an input or node takes that name. Every other Python
construct (attributes, subscripts, lambdas, comprehensions, strings, keywords, unknown functions...) is
rejected with its column and a hint. Length and nesting depth are bounded by `limits`.

>>> [n.op for n in parse_formula("z", "x * sin(y) ** 2", Location("job.yaml", 3, 6), {"x", "y"})]
['sin', 'ipow', 'mul']
"""
from __future__ import annotations

import ast
import math
import re

from .. import limits
from ..errors import FormulaError, LimitError, Location
from .ir import Node, did_you_mean
from .ops import BINARY_SYMBOLS, CALLABLE, COMPARISONS, CONSTANTS

_BINOPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_COMPARE = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<="}

_WHY_NOT = {  # friendlier words for constructs people try
    ast.Attribute: "attribute access (`a.b`)", ast.Subscript: "indexing (`a[i]`)",
    ast.Lambda: "lambda", ast.BoolOp: "`and`/`or`",
    ast.IfExp: "`x if c else y`", ast.NamedExpr: "`:=`", ast.Starred: "`*args`",
    ast.ListComp: "comprehensions", ast.GeneratorExp: "comprehensions", ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions", ast.JoinedStr: "f-strings", ast.List: "lists", ast.Tuple: "tuples",
    ast.Dict: "dicts", ast.Set: "sets", ast.Await: "await", ast.Yield: "yield",
    ast.MatMult: "`@`", ast.FloorDiv: "`//`", ast.Mod: "`%`", ast.BitAnd: "`&`", ast.BitOr: "`|`",
    ast.BitXor: "`^` (use `**` for powers)", ast.LShift: "`<<`", ast.RShift: "`>>`",
    ast.Invert: "`~`", ast.Not: "`not`",
}
_ALIASES = {"ln": "log", "power": "pow", "maximum": "max", "minimum": "min", "fabs": "abs",
            "logistic": "sigmoid", "expit": "sigmoid"}  # other languages' names for our functions
# a number written against a name, `2theta` or `3e5y`: Python's "invalid decimal literal"
_IMPLICIT_PRODUCT = re.compile(r"(?<![\w.])(\d[\d_]*\.?\d*(?:[eE][-+]?\d+)?)([^\W\d]\w*)")
_HINT = ("formulas may use numbers, names, + - * / **, parentheses and the functions "
         + ", ".join(sorted(CALLABLE)))


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
        return self.emit(BINARY_SYMBOLS[symbol].name, (left, right), node)

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
        op = CALLABLE.get(fname)
        if op is None or fname in self.names:
            hint = (f"did you mean '{_ALIASES[fname]}'?" if fname in _ALIASES else
                    did_you_mean(fname, CALLABLE) or _HINT)
            raise self.error(f"unknown function '{fname}'", node, hint)
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

    def visit_name(self, node: ast.Name, depth: int) -> str:
        if node.id in self.names:
            return node.id
        if node.id in CONSTANTS:
            return self.emit("const", (), node, const=CONSTANTS[node.id])
        if node.id in CALLABLE:
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
             ast.Constant: _Flattener.visit_constant}


def _short(text: str, node: ast.AST) -> str:
    segment = ast.get_source_segment(text, node) or "?"
    return segment if len(segment) <= 20 else segment[:17] + "..."


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
        last = nodes[-1]
        nodes[-1] = Node(owner, last.op, last.args, last.const, last.param, owner, last.where)
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
