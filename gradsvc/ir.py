"""The graph IR: what both backends read.

Convention (stated once, used everywhere): a job defines scalar *inputs* and named *nodes*; each node's
formula is flattened into primitive `Node`s (one op each) in topological order. Temporaries a formula
needs are named `owner.k`, which no user name can clash with. For an output `o` and a user-visible name
`v` (input or node), "d o / d v" is the derivative of `o` with respect to a perturbation added to `v`'s
value, everything downstream recomputed: exactly what PyTorch reports for a leaf's `.grad`, or for an
intermediate after `retain_grad()`.

`Node.shape` is `()` for every node today; it is where vector, matrix, Jacobian and Hessian nodes will
say what they hold, without changing how graphs are built or walked.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cached_property

from .errors import GraphError, JobProblems, Location
from .ops import op_for, Op


@dataclass(frozen=True)
class Node:
    name: str
    op: str  # "input", "const", or a key of ops.OPS ("ipow" with `param`)
    args: tuple[str, ...] = ()
    const: float | None = None
    param: int | None = None  # integer exponent for "ipow"
    owner: str = ""  # the input or named node whose formula produced this one
    where: Location | None = None  # where in the job file this node's text starts
    shape: tuple[int, ...] = ()

    @property
    def primitive(self) -> Op | None:
        return None if self.op in ("input", "const") else op_for(self.op, self.param)


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]  # topological order: every node after its arguments
    inputs: tuple[str, ...]  # in grid order
    named: tuple[str, ...]  # user-named nodes, in topological order
    outputs: tuple[str, ...]
    wrt: tuple[str, ...]  # names each output is differentiated with respect to
    formulas: dict[str, str] = field(default_factory=dict)
    position: dict[str, int] = field(default_factory=dict)

    @property
    def visible(self) -> tuple[str, ...]:
        """Inputs then named nodes: every name a user can see values of."""
        return self.inputs + self.named

    def node(self, name: str) -> Node:
        return self.nodes[self.position[name]]

    @cached_property
    def _structure(self) -> tuple:
        return (tuple((n.name, n.op, n.args, n.const, n.param) for n in self.nodes),
                self.inputs, self.named, self.outputs, self.wrt)

    def structure_key(self) -> tuple:
        """Hashable description of the computation (no locations): equal keys compile identically.
        Computed once per graph: it keys the compiled-function cache on every run."""
        return self._structure


def did_you_mean(name: str, candidates) -> str | None:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def build_graph(inputs: list[str], formula_nodes: dict[str, list[Node]], outputs: list[str],
                wrt: str | list[str], formulas: dict[str, str],
                output_where: dict[str, Location] | None = None) -> Graph:
    """Link parsed formulas into one topologically sorted graph; reject bad names and cycles.

    `formula_nodes[name]` holds the primitive nodes of one formula, the last being `name` itself.
    """
    output_where = output_where or {}
    defined = set(inputs) | set(formula_nodes)
    by_name: dict[str, Node] = {n: Node(n, "input", owner=n) for n in inputs}
    for nodes in formula_nodes.values():
        for node in nodes:
            by_name[node.name] = node
    undefined = [_undefined(arg, node, defined) for node in by_name.values() for arg in node.args
                 if arg not in by_name]
    if undefined:  # every one, in every formula: one run of `validate` shows them all
        raise JobProblems.of(list({e.message: e for e in undefined}.values()))
    order = _topological_order(by_name, formula_nodes)
    named = tuple(n.name for n in order if n.name in formula_nodes)
    for k, out in enumerate(outputs):
        if out in outputs[:k]:
            raise GraphError(f"output '{out}' is listed twice", where=output_where.get(out),
                             hint="list each output once")
        if out not in defined:
            raise GraphError(f"output '{out}' is not an input or a node", where=output_where.get(out),
                             hint=did_you_mean(out, defined) or "outputs must name nodes under `graph:`")
    wrt_names = _resolve_wrt(wrt, tuple(inputs), named, defined, output_where)
    position = {n.name: i for i, n in enumerate(order)}
    return Graph(tuple(order), tuple(inputs), named, tuple(outputs), wrt_names, dict(formulas), position)


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
