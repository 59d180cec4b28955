"""One formula's vector-Jacobian products, written as formulas (for `gradsvc explain`).

A named node's formula is a few primitive nodes (core/ir.py). Walking them backwards from the gradient
that arrives at the node, G = d(out)/d(node), each operation's rule turns the gradient of its result
into the gradients of its arguments: a vector-Jacobian product. The Jacobian itself (shape
result.shape + argument.shape, mostly zeros) is never built; this is what reverse mode does. For
h = tanh(X @ W + b) the walk writes dout/dW = Xᵀ @ (dout/dh ⊙ (1 - h²)) and
dout/db = sum(dout/dh ⊙ (1 - h²), axis=0).

The texts are for reading, not for running, and hold no words (they appear unchanged in every
language): ⊙ is the elementwise product, · a product with a scalar, ᵀ a transpose, `G[:, None]`
numpy's new axis (a reduction's gradient is broadcast back along the reduced axis), `w(s)` the
trapezoid weights of the samples s, `e_i` the one-hot seed of a tensor output's Jacobian row.
The walk only reads the graph: every number in an explanation comes from the reference.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

from ..core.ir import Graph, Node
from ..core.tensor_ops import TENSOR_OPS, slice_text

# how tightly a text binds: a text is put in parentheses where a tighter one is needed
COMPARE, SUM, PRODUCT, POWER, ATOM = 0, 1, 2, 3, 4
SUPERSCRIPTS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
BINARY = {"add": ("+", SUM), "sub": ("-", SUM), "mul": ("*", PRODUCT), "div": ("/", PRODUCT),
          "pow": ("**", POWER), "gt": (">", COMPARE), "ge": (">=", COMPARE), "lt": ("<", COMPARE),
          "le": ("<=", COMPARE)}


@dataclass(frozen=True)
class Sym:
    """A tensor-valued formula: `coef` (a fraction num/den, kept unreduced so 2/n stays visible)
    times `text`; an empty text is the number 1 (the gradient of the output with respect to
    itself), broadcast to `shape`."""
    text: str
    shape: tuple
    level: int = ATOM
    coef: tuple[int, int] = (1, 1)
    terms: int = 1  # how many contributions were added up into it
    # gradients that subscripts scatter into a tensor: (subscript, gradient) pairs, merged by
    # `plus` so that q[0] used three times reads as one entry (`text` is then the tensor's name)
    parts: tuple = ()

    @property
    def one(self) -> bool:
        return self.text == ""


def show(s: Sym) -> str:
    """The formula as text: '2/12 · residual', '-t / p', '1/16'."""
    if s.parts:
        return _scattered(s)
    num, den = s.coef
    number = f"{num}/{den}" if den != 1 else str(num)
    if s.one and s.shape and (num, den) == (1, 1):
        return "ones(" + ", ".join(map(str, s.shape)) + ")"
    if s.one:
        return number
    if (num, den) == (1, 1):
        return s.text
    if (num, den) == (-1, 1):
        return "-" + wrap(s.text, s.level, PRODUCT)
    return f"{number} · {wrap(s.text, s.level, PRODUCT)}"


def _scattered(s: Sym) -> str:
    """stack(A, B, C) when int subscripts fill a vector; else zeros_like(x).at[i].set(A)..."""
    subs = [sub for sub, _ in s.parts]
    if len(s.shape) == 1 and sorted(subs) == [str(k) for k in range(s.shape[0])]:
        by = dict(s.parts)
        return "stack(" + ", ".join(show(by[str(k)]) for k in range(s.shape[0])) + ")"
    return f"zeros_like({s.text})" + "".join(f".at[{sub}].set({show(g)})" for sub, g in s.parts)


def level_of(s: Sym) -> int:
    if s.parts:
        return ATOM
    if s.coef == (1, 1):
        return ATOM if s.one else s.level
    return ATOM if s.one and s.coef[1] == 1 and s.coef[0] > 0 else PRODUCT


def wrap(text: str, level: int, need: int) -> str:
    return f"({text})" if level < need else text


def shown(s: Sym, need: int) -> str:
    """The formula as an operand of something binding at `need`."""
    return wrap(show(s), level_of(s), need)


def scale(s: Sym, num: int, den: int = 1) -> Sym:
    n, d = s.coef[0] * num, s.coef[1] * den
    if n % d == 0:  # 12/12 is 1; 2/12 stays as written (it reads as 2/n)
        n, d = n // d, 1
    return replace(s, coef=(n, d))


def times(g: Sym, factor: str, level: int, factor_is_tensor: bool) -> Sym:
    """g ⊙ factor (· where one side is a scalar), the coefficient kept in front."""
    if g.one:
        return replace(g, text=factor, level=level)
    symbol = "⊙" if g.shape and factor_is_tensor else "·"
    right = wrap(factor, level if not factor.startswith("-") else SUM, PRODUCT)  # a · (-x)
    return replace(g, text=f"{wrap(g.text, g.level, PRODUCT)} {symbol} {right}", level=PRODUCT)


def divide(g: Sym, denominator: str, level: int) -> Sym:
    return replace(g, text=f"{wrap(g.text or '1', g.level, PRODUCT)} / {wrap(denominator, level, POWER)}",
                   level=PRODUCT)


def plus(a: Sym, b: Sym) -> Sym:
    if a.parts and b.parts and a.text == b.text:
        merged = dict(a.parts)
        for sub, g in b.parts:
            merged[sub] = plus(merged[sub], g) if sub in merged else g
        return replace(a, parts=tuple(sorted(merged.items())), terms=a.terms + b.terms)
    right = show(b)
    joined = f"{show(a)} - {right[1:]}" if right.startswith("-") else f"{show(a)} + {right}"
    return Sym(joined, a.shape, SUM, terms=a.terms + b.terms)


def with_shape(s: Sym, shape: tuple) -> Sym:
    return replace(s, shape=tuple(shape))


# --- the walk ---

def formula_vjps(graph: Graph, name: str, seed: Sym, start: str | None = None) -> dict[str, Sym]:
    """d(out)/d(v) through `name`'s formula, for every visible name v the formula uses, given the
    gradient `seed` arriving at the node `start` (default: `name` itself; a temporary of the
    formula gives that part's own derivative, e.g. a trapz integrand's)."""
    own = [n for n in graph.nodes if n.owner == name and n.op != "input"]
    texts = forward_texts(graph, own, name)
    adjoint: dict[str, Sym] = {start or name: seed}
    found: dict[str, Sym] = {}
    for node in reversed(own):
        g = adjoint.pop(node.name, None)
        if g is None or not node.args:
            continue
        for arg, part in _rule(graph, node, g, texts):
            if part is None or graph.node(arg).op == "const":
                continue
            target = found if _visible(graph, arg) else adjoint
            target[arg] = plus(target[arg], part) if arg in target else part
    return found


def _visible(graph: Graph, name: str) -> bool:
    return graph.node(name).owner == name


def forward_texts(graph: Graph, own: list[Node], name: str) -> dict[str, Sym]:
    """Every node the formula reads or makes, as a formula in visible names (`X @ W + b`)."""
    texts: dict[str, Sym] = {}

    def arg_text(arg: str) -> Sym:
        node = graph.node(arg)
        if arg in texts:
            return texts[arg]
        if node.op == "const":
            return Sym(const_text(node.const), ())
        return Sym(arg, node.shape)  # a visible name

    for node in own:
        if node.op == "const":
            continue
        texts[node.name] = _text_of(node, [arg_text(a) for a in node.args])
    return texts


def const_text(value: float) -> str:
    from .explain import number_text
    return "pi" if value == math.pi else number_text(value)


def _text_of(node: Node, args: list[Sym]) -> Sym:
    op, shape = node.op, node.shape
    if op == "id":
        return args[0]
    if op == "neg":
        return Sym("-" + wrap(args[0].text, args[0].level, POWER), shape, PRODUCT)
    if op == "ipow":
        return Sym(power_text(args[0], node.param), shape, POWER)
    if op in BINARY:
        symbol, level = BINARY[op]
        left = wrap(args[0].text, args[0].level, level + (op == "pow"))
        right = wrap(args[1].text, args[1].level, level + (op != "pow"))
        return Sym(f"{left} {symbol} {right}", shape, level)
    if op in ("matmul",):
        return Sym(f"{wrap(args[0].text, args[0].level, POWER)} @ {wrap(args[1].text, args[1].level, POWER)}",
                   shape, PRODUCT)
    if op == "index":
        return Sym(f"{wrap(args[0].text, args[0].level, ATOM)}[{subscript_text(node.param)}]", shape)
    extra = []
    if op == "reshape":
        extra = ["[" + ", ".join(map(str, node.param)) + "]"]
    elif op in TENSOR_OPS and TENSOR_OPS[op].axis_keyword and node.param is not None:
        extra = [f"axis={node.param}"]
    spelled = TENSOR_OPS[op].spelled if op in TENSOR_OPS else op  # as formulas call it
    return Sym(f"{spelled}({', '.join([a.text for a in args] + extra)})", shape)


def power_text(base: Sym, n: int) -> str:
    """x², (a + b)³, x ** 12."""
    text = wrap(base.text, base.level, ATOM)
    return text + str(n).translate(SUPERSCRIPTS) if 2 <= n <= 9 else f"{text} ** {n}"


def subscript_text(param: tuple) -> str:
    return ", ".join(str(x) if isinstance(x, int) else slice_text(x) for x in param)


# --- each operation's rule: (argument, the gradient it passes back) ---

def _rule(graph: Graph, node: Node, g: Sym, texts: dict[str, Sym]) -> list[tuple[str, Sym | None]]:
    args = [texts.get(a) or _plain(graph, a) for a in node.args]
    if node.op in TENSOR_OPS:
        return list(zip(node.args, TENSOR_RULES[node.op](node, g, args, texts)))
    return [(a, _unbroadcast(part, graph.shape_of(a)) if part is not None else None)
            for a, part in zip(node.args, _elementwise(node, g, args, texts))]


def _plain(graph: Graph, name: str) -> Sym:
    node = graph.node(name)
    return Sym(const_text(node.const), ()) if node.op == "const" else Sym(name, node.shape)


def _elementwise(node: Node, g: Sym, args: list[Sym], texts: dict[str, Sym]) -> list[Sym | None]:
    op = node.primitive
    if op.no_gradient:
        return [None] * len(args)
    if node.op == "ipow":
        n = node.param
        factor = args[0] if n == 2 else Sym(power_text(args[0], n - 1), args[0].shape, POWER)
        return [scale(times(g, factor.text, factor.level, bool(factor.shape)), n) if n > 1 else g]
    own = texts[node.name].text
    out = []
    for template in op.partial_texts:
        if template in ("1", "0", "-1"):
            out.append({"1": g, "0": None, "-1": scale(g, -1)}[template])
            continue
        used = [args[int(k)] for k in re.findall(r"\{(\d)\}", template)]
        tensor = any(a.shape for a in used)
        if template.startswith("1/"):
            text = _fill(template[2:], args, own, node.name, tensor)
            out.append(divide(g, text, _level(template[2:])))
        else:
            text = _fill(template, args, own, node.name, tensor)
            out.append(times(g, text, _level(text), tensor))
    return out


def _fill(template: str, args: list[Sym], own: str, name: str, tensor: bool) -> str:
    """A partial derivative's text with the arguments' formulas in place (written as in the job
    file); the node's own value written as its name where it is a named node (`1 - h²`, not
    `1 - tanh(X @ W + b)²`)."""
    template = re.sub(r"(?<!\*)\*(?!\*)", " ⊙ " if tensor else " · ", template)
    text = re.sub(r"(\w+)\(\{(\d)\}\)", lambda m: f"{m[1]}({args[int(m[2])].text})", template)
    text = re.sub(r"\{(\d)\}", lambda m: wrap(args[int(m[1])].text, args[int(m[1])].level, ATOM), text)
    if "." not in name:
        text = text.replace(own, name)
    text = re.sub(r"(\b[\w.\[\],]+|\))\*\*(\d)\b", lambda m: m[1] + m[2].translate(SUPERSCRIPTS), text)
    return re.sub(r" +", " ", text)


def _level(text: str) -> int:
    """How tightly a partial derivative's text binds, from its operators outside parentheses."""
    depth, level = 0, ATOM
    for k, ch in enumerate(text):
        depth += (ch in "([") - (ch in ")]")
        if depth:
            continue
        if ch in "+-" and k > 0 and text[k - 1] == " ":
            return SUM
        if ch in "*/⊙·" or (ch == "-" and k == 0):
            level = PRODUCT
    return level


def _unbroadcast(part: Sym, shape: tuple) -> Sym:
    """Broadcasting copied an argument along some axes: its gradient sums over them."""
    full = part.shape
    if tuple(full) == tuple(shape):
        return part
    lead = len(full) - len(shape)
    axes = tuple(range(lead)) + tuple(lead + k for k, n in enumerate(shape)
                                      if n == 1 and full[lead + k] != 1)
    if part.one:  # a sum of copies of a number: the number times the count
        return with_shape(scale(part, math.prod(full[k] for k in axes)), shape)
    if not shape:
        return Sym(f"sum({show(part)})", (), ATOM, terms=part.terms)
    axis = str(axes[0]) if len(axes) == 1 else str(axes)
    return Sym(f"sum({show(part)}, axis={axis})", tuple(shape), ATOM, terms=part.terms)


# --- tensor operations ---

def _transposed(a: Sym) -> str:
    return wrap(a.text, a.level, ATOM) + "ᵀ"


def _matmul(node: Node, g: Sym, args: list[Sym], texts) -> list[Sym]:
    a, b = args
    if not a.shape[1:] and not b.shape[1:]:  # vector · vector: a number
        return [times(g, b.text, b.level, True), times(g, a.text, a.level, True)]
    if len(a.shape) == 2 and len(b.shape) == 2:
        return [Sym(f"{shown(g, POWER)} @ {_transposed(b)}", a.shape, PRODUCT),
                Sym(f"{_transposed(a)} @ {shown(g, POWER)}", b.shape, PRODUCT)]
    if len(a.shape) == 2:  # matrix @ vector
        return [Sym(f"outer({shown(g, SUM)}, {b.text})", a.shape),
                Sym(f"{_transposed(a)} @ {shown(g, POWER)}", b.shape, PRODUCT)]
    return [Sym(f"{wrap(b.text, b.level, POWER)} @ {shown(g, POWER)}", a.shape, PRODUCT),  # vector @ matrix
            Sym(f"outer({a.text}, {shown(g, SUM)})", b.shape)]


def _transpose(node, g, args, texts):
    return [g if g.one else Sym(_transposed(Sym(show(g), g.shape, level_of(g))), args[0].shape)]


def _reshape(node, g, args, texts):
    shape = args[0].shape
    return [with_shape(g, shape) if g.one else
            Sym(f"reshape({show(g)}, [{', '.join(map(str, shape))}])", shape)]


def _pick(g: Sym, subscript: str, shape: tuple) -> Sym:
    """The part of g at `subscript` (the gradient of a stacked or joined argument)."""
    return with_shape(g, shape) if g.one else Sym(f"{wrap(show(g), level_of(g), ATOM)}[{subscript}]",
                                                 shape)


def _stack(node, g, args, texts):
    return [_pick(g, str(k), a.shape) for k, a in enumerate(args)]


def _concat(node, g, args, texts):
    parts, start = [], 0
    for a in args:
        parts.append(_pick(g, f"{start}:{start + a.shape[0]}", a.shape))
        start += a.shape[0]
    return parts


def _index(node, g, args, texts):
    x = args[0]
    return [Sym(x.text, x.shape, parts=((subscript_text(node.param), g),))]


def _spread(g: Sym, axis, shape: tuple) -> Sym:
    """A reduction's gradient, copied back along the reduced axis (all of them for axis=None)."""
    if g.one or axis is None:
        return with_shape(g, shape)
    k = axis % len(shape)
    picks = [":"] * k + ["None"]
    return Sym(f"{wrap(show(g), level_of(g), ATOM)}[{', '.join(picks)}]", shape)


def _reduction(node, g, args, texts):
    x, axis = args[0], node.param
    spread = _spread(g, axis, x.shape)
    if node.op == "sum":
        return [spread]
    if node.op == "mean":
        count = math.prod(x.shape) if axis is None else x.shape[axis]
        return [scale(spread, 1, count)]
    own = texts[node.name].text
    own = node.owner if node.name == node.owner else own
    if node.op == "prod":
        return [times(spread, f"{own} / {wrap(x.text, x.level, POWER)}", PRODUCT, True)]
    return [times(spread, f"({wrap(x.text, x.level, SUM)} == {own})", ATOM, True)]  # max, min


def _cumsum(node, g, args, texts):
    axis = "" if node.param is None else f", axis={node.param}"
    return [Sym(f"flip(cumsum(flip({show(g)}{axis}){axis}){axis})", args[0].shape)]


def _trapz(node, g, args, texts):
    y, x = args
    spread = with_shape(g, y.shape) if g.one or not g.shape else Sym(
        f"{wrap(show(g), level_of(g), ATOM)}[..., None]", y.shape)
    weights = times(spread, f"w({x.text})", ATOM, True)
    slope = f"∂trapz/∂{wrap(x.text, x.level, ATOM)}"  # moving a sample point: (y[i-1] - y[i+1])/2
    if not g.shape:
        return [weights, times(with_shape(g, x.shape), slope, ATOM, True)]
    axes = tuple(range(len(g.shape)))
    return [weights, Sym(f"sum({wrap(show(g), level_of(g), ATOM)}[..., None] ⊙ {slope}, axis={axes})",
                         x.shape)]


TENSOR_RULES = {"matmul": _matmul, "dot": _matmul, "transpose": _transpose, "reshape": _reshape,
                "stack": _stack, "concat": _concat, "index": _index, "sum": _reduction,
                "mean": _reduction, "prod": _reduction, "amax": _reduction, "amin": _reduction,
                "cumsum": _cumsum, "trapz": _trapz}


def jacobian_seed(out: str, shape: tuple) -> Sym:
    """What arrives at the output: 1 for a scalar; e_i, row i's one-hot selector, for a tensor."""
    return Sym("", shape) if not shape else Sym("e_i", shape)


def arriving(out: str, name: str, shape: tuple) -> Sym:
    return Sym(f"d{out}/d{name}", shape)

