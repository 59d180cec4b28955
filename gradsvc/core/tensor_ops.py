"""The tensor operations: for each, its shape rule, its JAX lowering and its reference expansion.

Elementwise operations (the scalar table in `ops`) apply to tensors with numpy's broadcasting and need
nothing here. Each structural operation below has one entry, read by every layer:
  - `shape(arg_shapes, param)`: the result's shape at one grid point, or `ShapeError` naming the
    shapes involved (checked when the graph links, before anything runs);
  - `jax`: the dotted name of its JAX implementation in `engine.jaxops` (a name, not a function:
    this module, like the reference, imports only the standard library and gradsvc's named
    limits); JAX differentiates it by its own rules;
  - `expand(emit, args, param)`: the same computation written with scalar operations of `ops`, for
    the reference: `args` are `Elements` (a shape and the names of its element nodes in C order),
    `emit(op, args, param=None, const=None)` appends one scalar node and returns its name. The
    reference differentiates the expansion with the scalar rules, by its own reverse mode: when the
    two backends agree, that is evidence, not a tautology;
  - `rule`, `syntax`, `spelled`: the derivative rule as people write it, how formulas write the op,
    and the function name they call it by (`gradsvc ops`, the parser, `gradsvc explain`).

`param` is a hashable parameter the parser sets: the axis of a reduction (None for all axes), the
target shape of `reshape`, the subscript of `index` (one item per position: an int, or
("slice", start, stop, step)).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable

from .. import limits

Shape = tuple[int, ...]
Elements = tuple[Shape, tuple[str, ...]]  # a tensor in the reference: its shape, its elements' names


class ShapeError(ValueError):
    """Shapes an operation cannot take; the message names them (the IR adds where)."""


def broadcast(*shapes: Shape) -> Shape:
    """numpy's broadcasting of shapes (right-aligned; a 1 stretches to the other's length)."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for dims in zip(*((1,) * (ndim - len(s)) + tuple(s) for s in shapes)):
        longer = {d for d in dims if d != 1}
        if len(longer) > 1:
            raise ShapeError("shapes " + " and ".join(map(shape_text, shapes)) + " do not broadcast "
                             f"(lengths {' vs '.join(map(str, sorted(longer)))} in one dimension)")
        out.append(longer.pop() if longer else 1)
    return tuple(out)


def broadcast_index(index: Shape, shape: Shape) -> Shape:
    """Which element of a tensor of `shape` broadcasting reads for the result's element `index`."""
    offset = len(index) - len(shape)
    return tuple(0 if d == 1 else i for i, d in zip(index[offset:], shape))


def shape_text(shape: Shape) -> str:
    """A shape as Python writes a tuple: (), (4,), (2, 3)."""
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def indices(shape: Shape):
    """Every index of a tensor of `shape`, in C order."""
    return itertools.product(*(range(n) for n in shape))


def flat(index: Shape, shape: Shape) -> int:
    position = 0
    for i, n in zip(index, shape):
        position = position * n + i
    return position


def _at(tensor: Elements, index: Shape) -> str:
    shape, names = tensor
    return names[flat(index, shape)]


def _fold(emit, op: str, names: list[str]) -> str:
    """names[0] op names[1] op ... from the left: how the reference sums or multiplies. A sum of
    two or more starts from 0, as XLA's reductions start from their initial value: a sum of -0.0s
    is +0.0 in JAX (and 1 / sum(v) +inf), a single term is left as it is."""
    total = names[0]
    if op == "add" and len(names) > 1:
        total = emit("add", (emit("const", (), const=0.0), total))
    for name in names[1:]:
        total = emit(op, (total, name))
    return total


# --- matmul and dot ---

def _matmul_shape(shapes: list[Shape], param) -> Shape:
    a, b = shapes
    if not a or not b or len(a) > 2 or len(b) > 2:
        scalar = ": use * to scale by a scalar" if not a or not b else ""
        raise ShapeError(f"@ and dot take vectors or matrices, got shapes {shape_text(a)} and "
                         f"{shape_text(b)}{scalar}")
    if a[-1] != b[0]:
        raise ShapeError(f"shapes {shape_text(a)} and {shape_text(b)} do not line up for a product: "
                         f"{a[-1]} (last of the first) != {b[0]} (first of the second)")
    return a[:-1] + b[1:]


def _matmul_expand(emit, args: list[Elements], param) -> Elements:
    (sa, _), (sb, _) = a, b = args
    shape = sa[:-1] + sb[1:]
    out = []
    for index in indices(shape):
        row, col = index[:len(sa) - 1], index[len(sa) - 1:]
        terms = [emit("mul", (_at(a, row + (k,)), _at(b, (k,) + col))) for k in range(sa[-1])]
        out.append(_fold(emit, "add", terms))
    return shape, tuple(out)


# --- rearrangements: no arithmetic, the reference only renames ---

def _transpose_shape(shapes: list[Shape], param) -> Shape:
    return shapes[0][::-1]


def _transpose_expand(emit, args: list[Elements], param) -> Elements:
    x = args[0]
    shape = x[0][::-1]
    return shape, tuple(_at(x, index[::-1]) for index in indices(shape))


def _reshape_shape(shapes: list[Shape], param: Shape) -> Shape:
    size = math.prod(shapes[0])
    unknown = [i for i, n in enumerate(param) if n == -1]
    if len(unknown) > 1 or any(n < -1 or n == 0 for n in param):
        raise ShapeError(f"reshape's target {list(param)} may hold positive lengths and one -1")
    known = math.prod(n for n in param if n != -1)
    if unknown:
        if size % known:
            raise ShapeError(f"cannot reshape {shape_text(shapes[0])} ({size} elements) to "
                             f"{list(param)}: {size} is not a multiple of {known}")
        param = tuple(size // known if n == -1 else n for n in param)
    if math.prod(param) != size:
        raise ShapeError(f"cannot reshape {shape_text(shapes[0])} ({size} elements) to "
                         f"{shape_text(tuple(param))} ({math.prod(param)} elements)")
    return tuple(param)


def _reshape_expand(emit, args: list[Elements], param) -> Elements:
    return _reshape_shape([args[0][0]], param), args[0][1]


def _stack_shape(shapes: list[Shape], param) -> Shape:
    if len(set(shapes)) > 1:
        raise ShapeError("stack needs equal shapes, got " + ", ".join(map(shape_text, shapes)))
    return (len(shapes),) + shapes[0]


def _stack_expand(emit, args: list[Elements], param) -> Elements:
    return (len(args),) + args[0][0], tuple(n for _, names in args for n in names)


def _concat_shape(shapes: list[Shape], param) -> Shape:
    if any(not s for s in shapes) or len({s[1:] for s in shapes}) > 1:
        raise ShapeError("concat joins vectors or tensors that agree past their first axis, got "
                         + ", ".join(map(shape_text, shapes)))
    return (sum(s[0] for s in shapes),) + shapes[0][1:]


def _concat_expand(emit, args: list[Elements], param) -> Elements:
    return _concat_shape([s for s, _ in args], param), tuple(n for _, names in args for n in names)


def _index_items(shape: Shape, param: tuple) -> list:
    """Each subscript item as an int (in range, not negative) or a range of ints."""
    if len(param) > len(shape):
        raise ShapeError(f"{len(param)} subscript{'s' * (len(param) != 1)} for shape "
                         f"{shape_text(shape)}, which has "
                         f"{len(shape)} ax{'is' if len(shape) == 1 else 'es'}")
    items = []
    for axis, (item, n) in enumerate(zip(param, shape)):
        if isinstance(item, int):
            if not -n <= item < n:
                raise ShapeError(f"index {item} is out of range for axis {axis} of length {n} "
                                 f"(shape {shape_text(shape)})")
            items.append(item % n)
        else:
            _, start, stop, step = item
            if step == 0:
                raise ShapeError("a slice step cannot be 0")
            chosen = range(*slice(start, stop, step).indices(n))
            if not chosen:
                raise ShapeError(f"the slice {slice_text(item)} selects nothing from axis {axis} "
                                 f"of length {n}")
            items.append(chosen)
    return items + [range(n) for n in shape[len(param):]]


def slice_text(item: tuple) -> str:
    """A subscript's slice as formulas write it: `1:3`, `::2`."""
    _, start, stop, step = item
    text = f"{'' if start is None else start}:{'' if stop is None else stop}"
    return text + (f":{step}" if step is not None else "")


def _index_shape(shapes: list[Shape], param) -> Shape:
    return tuple(len(i) for i in _index_items(shapes[0], param) if isinstance(i, range))


def _index_expand(emit, args: list[Elements], param) -> Elements:
    x = args[0]
    items = _index_items(x[0], param)
    picks = [(i,) if isinstance(i, int) else tuple(i) for i in items]
    shape = tuple(len(i) for i in items if isinstance(i, range))
    return shape, tuple(_at(x, index) for index in itertools.product(*picks))


# --- reductions along an axis (or all axes) ---

def _axis(shape: Shape, axis: int | None, what: str) -> int | None:
    if axis is None:
        return None
    if not -len(shape) <= axis < len(shape) or not shape:
        raise ShapeError(f"{what}: axis={axis} is out of range for shape {shape_text(shape)}")
    return axis % len(shape)


def _reduce_shape(what: str) -> Callable:
    def shape_rule(shapes: list[Shape], param) -> Shape:
        axis = _axis(shapes[0], param, what)
        return () if axis is None else shapes[0][:axis] + shapes[0][axis + 1:]
    return shape_rule


def _groups(x: Elements, axis: int | None) -> tuple[Shape, list[list[str]]]:
    """The result's shape, and for each of its elements the elements of `x` reduced into it."""
    shape, _ = x
    if axis is None:
        return (), [list(x[1])]
    out_shape = shape[:axis] + shape[axis + 1:]
    groups = [[_at(x, index[:axis] + (k,) + index[axis:]) for k in range(shape[axis])]
              for index in indices(out_shape)]
    return out_shape, groups


def _reduce_expand(op: str, divide: bool = False) -> Callable:
    def expand(emit, args: list[Elements], param) -> Elements:
        shape, groups = _groups(args[0], _axis(args[0][0], param, op))
        out = []
        for group in groups:
            total = _fold(emit, op, group)
            if divide:  # mean: the sum divided by the count, as jnp.mean computes it
                total = emit("div", (total, emit("const", (), const=float(len(group)))))
            out.append(total)
        return shape, tuple(out)
    return expand


def _extremum_expand(larger: bool) -> Callable:
    """max(x) / min(x) as JAX differentiates them: d/dx_i = [x_i is the extremum] / (how many
    are), 1/3 each for a three-way tie (a fold of two-argument max gives 1/4, 1/4, 1/2). Written
    with scalar ops: x_i is an extremum when it is at least (at most) r_i, the extremum of the
    others (prefix and suffix folds, so that only a real tie is a kink); the result is the mean of
    the extrema (for min, minus the mean of their negatives: zeros' signs come out as XLA's,
    min(0.0, -0.0) = -0.0). Where an element is nan none compares: the value is -0.0 / 0 = nan,
    the gradient 0 (XLA turns JAX's `ct * (x == max) / count` into a select: 0, not nan) and
    forward mode's tangent 0 / 0 = nan, as JAX's. A single element is itself."""
    pick, test = ("max", "ge") if larger else ("min", "le")

    def expand(emit, args: list[Elements], param) -> Elements:
        shape, groups = _groups(args[0], _axis(args[0][0], param, pick))
        out = []
        for group in groups:
            n = len(group)
            if n == 1:
                out.append(group[0])
                continue
            before = [group[0]]  # before[i]: the extremum of group[:i + 1]
            for name in group[1:-1]:
                before.append(emit(pick, (before[-1], name)))
            after = {n - 1: group[-1]}  # after[i]: the extremum of group[i:]
            for i in range(n - 2, 0, -1):
                after[i] = emit(pick, (group[i], after[i + 1]))
            others = [after[1], *(emit(pick, (before[i - 1], after[i + 1])) for i in range(1, n - 1)),
                      before[n - 2]]
            zero = emit("const", (), const=-0.0)
            hits, terms = [], []
            for name, rest in zip(group, others):
                hit = emit(test, (name, rest))
                hits.append(hit)
                terms.append(emit("where", (hit, name if larger else emit("neg", (name,)), zero)))
            count = _fold(emit, "add", hits)
            mean = emit("div", (_sum(emit, terms), count))
            out.append(mean if larger else emit("neg", (mean,)))
        return shape, tuple(out)
    return expand


def _sum(emit, names: list[str]) -> str:
    """names[0] + names[1] + ... from the left, without XLA's starting 0 (a sum of -0.0s stays -0.0)."""
    total = names[0]
    for name in names[1:]:
        total = emit("add", (total, name))
    return total


def _cumsum_axis(shape: Shape, param) -> int:
    if not shape:
        raise ShapeError("cumsum needs a vector or a tensor, got a scalar")
    return _axis(shape, -1 if param is None else param, "cumsum")


def _cumsum_shape(shapes: list[Shape], param) -> Shape:
    _cumsum_axis(shapes[0], param)
    return shapes[0]


def _cumsum_expand(emit, args: list[Elements], param) -> Elements:
    x = args[0]
    shape = x[0]
    axis = _cumsum_axis(shape, param)
    out = list(x[1])
    for index in indices(shape[:axis] + shape[axis + 1:]):
        running = None
        for k in range(shape[axis]):
            at = flat(index[:axis] + (k,) + index[axis:], shape)
            if running is None and shape[axis] > 1:  # from 0, like XLA's: -0.0 becomes +0.0
                running = emit("add", (emit("const", (), const=0.0), out[at]))
            else:
                running = out[at] if running is None else emit("add", (running, out[at]))
            out[at] = running
    return shape, tuple(out)


# --- the trapezoid integral ---

def _trapz_shape(shapes: list[Shape], param) -> Shape:
    y, x = shapes
    if not y or len(x) != 1 or x[0] != y[-1]:
        raise ShapeError(f"trapz(y, x) integrates along y's last axis over a vector x of the "
                         f"same length, got y {shape_text(y)} and x {shape_text(x)}")
    if x[0] < 2:
        raise ShapeError(f"trapz needs at least 2 samples, got {x[0]}")
    return y[:-1]


def _trapz_expand(emit, args: list[Elements], param) -> Elements:
    """0.5 * sum((x[i+1] - x[i]) * (y[i+1] + y[i])), in jnp.trapezoid's order; with two samples
    (one step) jnp.trapezoid takes its path for a constant step, (x[1] - x[0]) * (sum(y) -
    0.5 * (y[0] + y[1])), and so does the reference (the two differ at infinities and zeros' signs)."""
    y, x = args
    n = x[0][0]
    steps = [emit("sub", (x[1][i + 1], x[1][i])) for i in range(n - 1)]
    half = emit("const", (), const=0.5)
    out = []
    if n == 2:
        for index in indices(y[0][:-1]):
            first, last = _at(y, index + (0,)), _at(y, index + (1,))
            ends = emit("mul", (half, emit("add", (first, last))))
            total = emit("sub", (_fold(emit, "add", [first, last]), ends))
            out.append(emit("mul", (steps[0], total)))
        return y[0][:-1], tuple(out)
    for index in indices(y[0][:-1]):
        terms = [emit("mul", (steps[i], emit("add", (_at(y, index + (i + 1,)), _at(y, index + (i,))))))
                 for i in range(n - 1)]
        out.append(emit("mul", (half, _fold(emit, "add", terms))))
    return y[0][:-1], tuple(out)


@dataclass(frozen=True)
class TensorOp:
    name: str
    min_args: int
    max_args: int | None  # None: any number
    shape: Callable[[list[Shape], object], Shape]
    jax: str  # dotted name of the JAX implementation f(args, param), resolved by the engine
    expand: Callable  # (emit, args: list[Elements], param) -> Elements
    rule: str
    syntax: str  # how formulas write it, for `gradsvc ops`
    spelled: str = ""  # the function name formulas call it by; "" where it is written as syntax
    axis_keyword: bool = False  # accepts `axis=<integer literal>`

    def result_shape(self, shapes: list[Shape], param) -> Shape:
        return self.shape(list(shapes), param)


TENSOR_OPS: dict[str, TensorOp] = {op.name: op for op in [
    TensorOp("matmul", 2, 2, _matmul_shape, "gradsvc.engine.jaxops.products", _matmul_expand,
             "d(A@B)/dA = g Bᵀ, d(A@B)/dB = Aᵀ g  (g: the gradient arriving at A@B)", "a @ b"),
    TensorOp("dot", 2, 2, _matmul_shape, "gradsvc.engine.jaxops.products", _matmul_expand,
             "dot(a, b) is a @ b for vectors and matrices: d/da = g bᵀ, d/db = aᵀ g", "dot(a, b)",
             "dot"),
    TensorOp("transpose", 1, 1, _transpose_shape, "gradsvc.engine.jaxops.transpose", _transpose_expand,
             "d transpose(x)/dx: the arriving gradient, transposed back", "transpose(x)",
             "transpose"),
    TensorOp("reshape", 1, 1, _reshape_shape, "gradsvc.engine.jaxops.reshape", _reshape_expand,
             "d reshape(x)/dx: the arriving gradient, reshaped back", "reshape(x, [2, 3])",
             "reshape"),
    TensorOp("stack", 1, None, _stack_shape, "gradsvc.engine.jaxops.stack", _stack_expand,
             "d stack(a, b, ...)/da: slice 0 of the arriving gradient (1 for b, ...)",
             "stack(a, b, ...)", "stack"),
    TensorOp("concat", 1, None, _concat_shape, "gradsvc.engine.jaxops.concat", _concat_expand,
             "d concat(a, b, ...)/da: the arriving gradient's rows that came from a",
             "concat(a, b, ...)", "concat"),
    TensorOp("index", 1, 1, _index_shape, "gradsvc.engine.jaxops.index", _index_expand,
             "d x[i]/dx = 1 at the selected elements, 0 elsewhere", "v[0], v[1:3] or M[:, 0]"),
    TensorOp("sum", 1, 1, _reduce_shape("sum"), "gradsvc.engine.jaxops.sum", _reduce_expand("add"),
             "d sum(x)/dx_i = 1", "sum(x, axis=k)", "sum", axis_keyword=True),
    TensorOp("mean", 1, 1, _reduce_shape("mean"), "gradsvc.engine.jaxops.mean", _reduce_expand("add", divide=True),
             "d mean(x)/dx_i = 1/n", "mean(x, axis=k)", "mean", axis_keyword=True),
    TensorOp("prod", 1, 1, _reduce_shape("prod"), "gradsvc.engine.jaxops.prod", _reduce_expand("mul"),
             "d prod(x)/dx_i = the product of the other elements", "prod(x, axis=k)", "prod",
             axis_keyword=True),
    TensorOp("amax", 1, 1, _reduce_shape("max"), "gradsvc.engine.jaxops.amax", _extremum_expand(True),
             "d max(x)/dx_i = 1 for the largest element, 0 for the others (a tie of k elements: "
             "1/k each, and a kink)", "max(x, axis=k)", "max", axis_keyword=True),
    TensorOp("amin", 1, 1, _reduce_shape("min"), "gradsvc.engine.jaxops.amin", _extremum_expand(False),
             "d min(x)/dx_i = 1 for the smallest element, 0 for the others (a tie of k elements: "
             "1/k each, and a kink)", "min(x, axis=k)", "min", axis_keyword=True),
    TensorOp("cumsum", 1, 1, _cumsum_shape, "gradsvc.engine.jaxops.cumsum", _cumsum_expand,
             "d cumsum(x)_k/dx_i = 1 for i <= k", "cumsum(x, axis=k)", "cumsum", axis_keyword=True),
    TensorOp("trapz", 2, 2, _trapz_shape, "gradsvc.engine.jaxops.trapz", _trapz_expand,
             "d trapz(y, x)/dy_i = w_i, the trapezoid weights: (x_1 - x_0)/2 at the first sample, "
             "(x_{i+1} - x_{i-1})/2 inside, (x_n - x_{n-1})/2 at the last", "trapz(y, x)", "trapz"),
]}


def result_shape(op: str, shapes: list[Shape], param) -> Shape:
    """The shape of a node of `op` (a tensor op or an elementwise one) with arguments of `shapes`;
    a node may hold at most MAX_TENSOR_ELEMENTS numbers at one point, like the job's tensor inputs
    in all (`v * reshape(v, [n, 1])`, `stack(v, v, ...)` and `@` multiply sizes)."""
    shape = TENSOR_OPS[op].result_shape(shapes, param) if op in TENSOR_OPS else broadcast(*shapes)
    size = math.prod(shape)
    if size > limits.MAX_TENSOR_ELEMENTS:
        raise ShapeError(f"the result would have shape {shape_text(shape)}: {size:,} elements, "
                         f"more than MAX_TENSOR_ELEMENTS ({limits.MAX_TENSOR_ELEMENTS:,}) in one "
                         "node")
    return shape
