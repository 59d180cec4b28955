"""The graph IR: what both backends read.

Convention (stated once, used everywhere): a job defines *inputs* and named *nodes*; each node's
formula is flattened into primitive `Node`s (one op each) in topological order. Temporaries a formula
needs are named `owner.k`, which no user name can clash with. For an output `o` and a user-visible name
`v` (input or node), "d o / d v" is the derivative of `o` with respect to a perturbation added to `v`'s
value, everything downstream recomputed: exactly what PyTorch reports for a leaf's `.grad`, or for an
intermediate after `retain_grad()`.

Every node has a shape at one grid point: `()` for a scalar, `(2, 4)` for a matrix. Input shapes come
from the job (tensor inputs), every other shape is inferred when the graph links (`tensor_ops`), so a
shape problem is found before anything runs. A graph whose shapes are all `()` is a scalar graph.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, replace
from functools import cached_property

from .. import limits
from ..errors import GraphError, JobProblems, LimitError, Location
from .ops import op_for, Op
from .tensor_ops import TENSOR_OPS, ShapeError, TensorOp, result_shape


@dataclass(frozen=True)
class Node:
    name: str
    op: str  # "input", "const", or a key of ops.OPS ("ipow" with `param`)
    args: tuple[str, ...] = ()
    const: float | None = None
    param: object = None  # "ipow": the integer exponent; tensor ops: see tensor_ops
    owner: str = ""  # the input or named node whose formula produced this one
    where: Location | None = None  # where in the job file this node's text starts
    shape: tuple[int, ...] = ()  # at one grid point; set when the graph links

    @property
    def primitive(self) -> Op | TensorOp | None:
        if self.op in ("input", "const"):
            return None
        return TENSOR_OPS.get(self.op) or op_for(self.op, self.param)


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]  # topological order: every node after its arguments
    inputs: tuple[str, ...]  # in grid order
    named: tuple[str, ...]  # user-named nodes, in topological order
    outputs: tuple[str, ...]
    wrt: tuple[str, ...]  # names each output is differentiated with respect to
    formulas: dict[str, str] = field(default_factory=dict)
    position: dict[str, int] = field(default_factory=dict)
    order: int = 1  # 2: also the Hessian of every scalar output with respect to the wrt names
    mode: str = "auto"  # how Jacobians are computed: "auto", "reverse" or "forward"

    @property
    def visible(self) -> tuple[str, ...]:
        """Inputs then named nodes: every name a user can see values of."""
        return self.inputs + self.named

    def node(self, name: str) -> Node:
        return self.nodes[self.position[name]]

    @cached_property
    def grid_inputs(self) -> tuple[str, ...]:
        """The inputs that are one number per point (grid axes and scalars), in grid order."""
        return tuple(name for name in self.inputs if not self.shape_of(name))

    @cached_property
    def tensor_inputs(self) -> tuple[str, ...]:
        """The inputs that are the same tensor at every point."""
        return tuple(name for name in self.inputs if self.shape_of(name))

    def shape_of(self, name: str) -> tuple[int, ...]:
        return self.nodes[self.position[name]].shape

    @cached_property
    def has_tensors(self) -> bool:
        """Whether any node holds more than one number per point."""
        return any(n.shape for n in self.nodes)

    @cached_property
    def hessian_outputs(self) -> tuple[str, ...]:
        """The outputs whose Hessians are computed: every scalar output when `order` is 2."""
        return tuple(o for o in self.outputs if not self.shape_of(o)) if self.order == 2 else ()

    @cached_property
    def _structure(self) -> tuple:
        return (tuple((n.name, n.op, n.args, n.const, n.param, n.shape) for n in self.nodes),
                self.inputs, self.named, self.outputs, self.wrt, self.order, self.mode)

    def structure_key(self) -> tuple:
        """Hashable description of the computation (no locations): equal keys compile identically.
        Computed once per graph: it keys the compiled-function cache on every run."""
        return self._structure


def did_you_mean(name: str, candidates) -> str | None:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def build_graph(inputs: list[str], formula_nodes: dict[str, list[Node]], outputs: list[str],
                wrt: str | list[str], formulas: dict[str, str],
                output_where: dict[str, Location] | None = None,
                input_shapes: dict[str, tuple[int, ...]] | None = None, order: int = 1,
                mode: str = "auto") -> Graph:
    """Link parsed formulas into one topologically sorted graph with every node's shape; reject bad
    names, cycles and shapes that do not fit.

    `formula_nodes[name]` holds the primitive nodes of one formula, the last being `name` itself;
    `input_shapes` the shape of each tensor input (the others are scalars at each point).
    """
    output_where = output_where or {}
    input_shapes = input_shapes or {}
    defined = set(inputs) | set(formula_nodes)
    by_name: dict[str, Node] = {n: Node(n, "input", owner=n, shape=tuple(input_shapes.get(n, ())))
                                for n in inputs}
    for nodes in formula_nodes.values():
        for node in nodes:
            by_name[node.name] = node
    undefined = [_undefined(arg, node, defined) for node in by_name.values() for arg in node.args
                 if arg not in by_name]
    if undefined:  # every one, in every formula: one run of `validate` shows them all
        raise JobProblems.of(list({e.message: e for e in undefined}.values()))
    nodes = _with_shapes(_topological_order(by_name, formula_nodes))
    named = tuple(n.name for n in nodes if n.name in formula_nodes)
    for k, out in enumerate(outputs):
        if out in outputs[:k]:
            raise GraphError(f"output '{out}' is listed twice", where=output_where.get(out),
                             hint="list each output once")
        if out not in defined:
            raise GraphError(f"output '{out}' is not an input or a node", where=output_where.get(out),
                             hint=did_you_mean(out, defined) or "outputs must name nodes under `graph:`")
    wrt_names = _resolve_wrt(wrt, tuple(inputs), named, defined, output_where)
    position = {n.name: i for i, n in enumerate(nodes)}
    return Graph(tuple(nodes), tuple(inputs), named, tuple(outputs), wrt_names, dict(formulas), position,
                 order, mode)


def _with_shapes(order: list[Node]) -> list[Node]:
    """Each node with its inferred shape. Every formula's first shape problem is reported; nodes
    that use a node whose shape is unknown are not checked again (their problem is that one)."""
    shapes: dict[str, tuple | None] = {}
    problems: dict[str, GraphError] = {}
    out = []
    for node in order:
        shape: tuple | None = node.shape
        if node.args:
            arg_shapes = [shapes[a] for a in node.args]
            shape = None
            if all(s is not None for s in arg_shapes):
                try:
                    shape = result_shape(node.op, arg_shapes, node.param)
                except ShapeError as error:
                    problems.setdefault(node.owner, _shape_error(node, error))
            node = replace(node, shape=shape or ())
        shapes[node.name] = shape
        out.append(node)
    if problems:
        raise JobProblems.of(list(problems.values()))
    _check_total_size(out)
    return out


def _check_total_size(nodes: list[Node]) -> None:
    """Every node is bounded by itself (tensor_ops); together they are bounded too: a chain of
    big intermediates would hold them all at once."""
    total = sum(math.prod(node.shape) for node in nodes)
    if total > limits.MAX_POINT_ELEMENTS:
        biggest = max(nodes, key=lambda node: math.prod(node.shape))
        raise LimitError(f"the graph's nodes hold {total:,} numbers at one point, more than "
                         f"{limits.MAX_POINT_ELEMENTS:,} (the largest: '{biggest.owner}', "
                         f"{math.prod(biggest.shape):,})", where=biggest.where,
                         hint="use smaller tensors or fewer intermediates (MAX_POINT_ELEMENTS)")


def _written(node: Node) -> str:
    """The op as the formula wrote it: `@`, `*`, indexing, `max()` (not `amax()`)."""
    op = node.primitive
    if node.op == "index":
        return "indexing"
    if getattr(op, "symbol", None):
        return f"`{op.symbol}`"
    if node.op == "matmul":
        return "`@`"
    return f"{getattr(op, 'spelled', '') or node.op}()"


def _shape_error(node: Node, error: ShapeError) -> GraphError:
    what = _written(node)
    return GraphError(f"in the formula of '{node.owner}', {what}: {error}", where=node.where,
                      hint="check the shapes of the inputs and nodes it uses (`gradsvc validate` "
                      "lists every node's shape)")


def _undefined(name: str, user: Node, defined: set[str]) -> GraphError:
    hint = did_you_mean(name, defined) or (
        "Euler's number is not a constant in formulas: write exp(1), or exp(x) for e ** x"
        if name == "e" else "define it under `inputs:` or as a node under `graph:`")
    return GraphError(f"'{name}' is not defined (used in the formula of '{user.owner}')",
                      where=user.where, hint=hint)


def _resolve_wrt(wrt, inputs, named, defined, where) -> tuple[str, ...]:
    if wrt == "all":
        return inputs + named
    if wrt == "inputs":
        return inputs
    for name in wrt:
        if name not in defined:
            raise GraphError(f"wrt name '{name}' is not an input or a node", where=where.get(name),
                             hint=did_you_mean(name, defined) or "use `all`, `inputs` or a list of names")
    return tuple(wrt)


def _topological_order(by_name: dict[str, Node], formula_nodes: dict[str, list[Node]]) -> list[Node]:
    """Depth-first post-order without recursion (graphs may be deep); a back edge is a cycle."""
    order: list[Node] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in by_name:
        if state.get(root):
            continue
        stack = [(root, iter(by_name[root].args))]
        state[root] = 1
        while stack:
            name, pending = stack[-1]
            arg = next(pending, None)
            if arg is None:
                stack.pop()
                state[name] = 2
                order.append(by_name[name])
            elif state.get(arg) == 1:
                raise _cycle_error([n for n, _ in stack], arg, by_name, formula_nodes)
            elif not state.get(arg):
                state[arg] = 1
                stack.append((arg, iter(by_name[arg].args)))
    return order


def _cycle_error(path: list[str], back_to: str, by_name, formula_nodes) -> GraphError:
    cycle = path[path.index(back_to):] + [back_to]
    users = [n for n in dict.fromkeys(by_name[n].owner for n in cycle) if n in formula_nodes]
    users.append(users[0])
    # `path` follows arguments (z needs y needs z); show it in reading order: z -> y -> z means z uses y
    return GraphError(f"the graph has a cycle: {' -> '.join(users)}", where=by_name[users[0]].where,
                      hint="each node may only use inputs and nodes that do not depend on it")
