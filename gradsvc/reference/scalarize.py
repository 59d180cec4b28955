"""Tensor graphs as scalar graphs, for the reference (standard library only).

`scalarize(graph, tensors)` turns a graph whose nodes hold tensors into an ordinary scalar `Graph` that
the scalar reference (`forward`, `backward`, `run_point` with its rounding bounds, `hessian`) and
`verify` handle unchanged: every tensor node becomes its element nodes, in C order, named after it:
`W[0,1]`, `h[2]`, temporaries `h.3[0]`; a node of shape () keeps its plain name, so a scalar graph
comes back as the same computation under the same names.
  - a tensor input becomes one scalar input per element (their values come from `tensors`, or from
    the inputs of a point: `ScalarView.point`);
  - an elementwise op (any op of `core.ops`) broadcasts with numpy's rules: one scalar node per
    element of its result;
  - a tensor op is written out by `TENSOR_OPS[op].expand` (a sum is a chain of adds, a product of
    matrices its dot products, an index or a reshape only renames elements). The scalar nodes an
    expansion needs on the way are named `h:1`, `h:2`, ... (`:` is in no user or temporary name).
A name's elements are distinct nodes that it owns and that nothing else in its own formula uses:
where an expansion returns an element of another node (`y: v[0]`, `y: reshape(x, [4])`), one element
twice (`stack(a, a)`), or one it goes on to use (`cumsum`'s running sums), `y` gets an `id` node for that
element instead, so that a perturbation of `y` (the convention of `core.ir`) is not one of `v`, and a
perturbation of y[0] moves no other element of y.
Temporaries may share elements with their arguments: nobody differentiates with respect to them.

The scalar graph's `named` are the elements of the user-named nodes, its `outputs` the elements of the
outputs, its `wrt` the elements of the wrt names; each node's `owner` and `where` are those of the
tensor node it came from.

JAX's tangents and cotangents are whole arrays: an element that no path connects to the perturbation
(or to the output element) still carries a 0, and 0 * inf is nan where an infinite partial meets it
(`sqrt(v)[0]` with v[1] = 0: d/dv[1] is 0 * inf = nan in JAX, 0 element by element). The view keeps,
per tensor node, the elements it is made of, and says which elements carry a tangent in every
direction (`forward_dense`: computed from a wrt name by differentiable steps; the perturbations of
all wrt names go forward together) and which a cotangent for an output (`reverse_dense`), for the
reference to follow JAX there (`reference.hessian`, `verify_jacobians`). Where a temporary joins an
element of a tensor without a tangent to one with (`concat(v, c)`), the element is copied (`id`), so
that the copy carries the tangent and the original, used elsewhere, does not.

`ScalarView` keeps the scalar graph with each name's `(shape, elements)`, and turns flat element
values back into nested lists (`nest`), gradients into Jacobians of shape `output.shape +
name.shape` and Hessians into `output.shape + a.shape + b.shape`.
`run_tensor_point` runs it all at one point: values, Jacobians and (order 2) Hessians as nested lists.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from ..core.ir import Graph, Node
from ..core.ops import COMPARISONS, OPS
from ..core.tensor_ops import TENSOR_OPS, Elements, Shape, broadcast, broadcast_index, flat, indices
from .backprop import run_point
from .hessian import hessian


def element_name(name: str, index: Shape) -> str:
    """`W[0,1]` for an element of W; the plain name for a node of shape ()."""
    return f"{name}[{','.join(map(str, index))}]" if index else name


def nest(shape: Shape, values) -> object:
    """Flat values in C order as nested lists of `shape` (a number for shape ())."""
    values = list(values)
    if len(values) != math.prod(shape):
        raise ValueError(f"{len(values)} values do not fill shape {shape}")
    if not shape:
        return values[0]
    for n in reversed(shape[1:]):
        values = [values[k:k + n] for k in range(0, len(values), n)]
    return values


def flatten(value) -> tuple[Shape, list[float]]:
    """A number, a nested list (or anything with `tolist()`, e.g. a numpy array) as its shape and its
    values in C order; ragged lists are refused."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        return (), [float(value)]
    if not value:
        return (0,), []
    parts = [flatten(v) for v in value]
    shapes = {s for s, _ in parts}
    if len(shapes) > 1:
        raise ValueError(f"a ragged nested list: rows of shapes {sorted(shapes)}")
    return (len(value),) + parts[0][0], [x for _, values in parts for x in values]


@dataclass(frozen=True)
class ScalarView:
    """A tensor graph written out in scalars."""
    graph: Graph  # the scalar graph
    source: Graph  # the tensor graph it was made from
    elements: dict[str, Elements]  # every input and named node: its shape and its elements' names
    tensors: dict[str, tuple[float, ...]]  # each tensor input's element values, in C order
    # every node of the tensor graph, temporaries too: the names of its elements (whole arrays in JAX)
    parts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # the elements of the tensor nodes computed from a wrt name (JAX's tangents reach all of them)
    forward_dense: frozenset[str] = frozenset()
    _known: dict = field(default_factory=dict, compare=False, repr=False)  # computed once

    def shape(self, name: str) -> Shape:
        return self.elements[name][0]

    def reverse_dense(self, output: str) -> frozenset[str]:
        """The elements JAX's cotangents give a number (0 where no path leads) when it
        differentiates the tensor output `output` backwards: every element of every tensor node
        the output is computed from by differentiable steps (a comparison's arguments and a
        `where`'s condition get no cotangent, nor does x in x ** 0)."""
        key = ("reverse_dense", output)
        if key not in self._known:
            reached = {output}
            for node in reversed(self.source.nodes):
                if node.name in reached:
                    reached.update(differentiable_args(node, forward=False))
            self._known[key] = frozenset(e for name in reached for e in self.parts.get(name, ()))
        return self._known[key]

    @property
    def groups(self) -> tuple[tuple[str, ...], ...]:
        """The elements of each tensor node of two or more: one array for JAX."""
        if "groups" not in self._known:
            self._known["groups"] = tuple(names for names in self.parts.values() if len(names) > 1)
        return self._known["groups"]

    def names(self, name: str) -> tuple[str, ...]:
        return self.elements[name][1]

    def point(self, inputs: dict) -> dict[str, float]:
        """The scalar graph's inputs at one point, from the tensor graph's: a number for a scalar
        input, a nested list (or array) for a tensor one; tensor inputs not given are `tensors`."""
        out: dict[str, float] = {}
        for name in self.source.inputs:
            shape, names = self.elements[name]
            if name in inputs:
                got, values = flatten(inputs[name])
                if got != shape:
                    raise ValueError(f"input '{name}' has shape {got}, the graph's is {shape}")
            else:
                values = self.tensors[name] if shape else [inputs[name]]  # KeyError: not given
            out.update(zip(names, values))
        return out

    def value(self, name: str, values: dict[str, float]):
        """A name's value as nested lists, from the scalar graph's node values."""
        shape, names = self.elements[name]
        return nest(shape, (values[n] for n in names))

    def jacobian(self, output: str, name: str, grads: dict[str, dict[str, float]]):
        """d output / d name, shape output.shape + name.shape, from grads[output element][element]
        (`run_point`'s, or `backward`'s adjoints by output element); absent entries are 0."""
        (out_shape, outs), (shape, names) = self.elements[output], self.elements[name]
        return nest(out_shape + shape, (grads[o].get(n, 0.0) for o in outs for n in names))

    def hessian(self, output: str, a: str, b: str, tables: dict[str, dict[str, dict[str, float]]]):
        """d² output / da db, shape output.shape + a.shape + b.shape, from `tables[output element]`,
        each a `hessian()` result over the elements of a and b."""
        (out_shape, outs), (sa, names_a), (sb, names_b) = (self.elements[output], self.elements[a],
                                                           self.elements[b])
        return nest(out_shape + sa + sb,
                    (tables[o][x][y] for o in outs for x in names_a for y in names_b))


_COMPARISONS = frozenset(op.name for op in COMPARISONS.values())


def differentiable_args(node: Node, forward: bool = True) -> tuple[str, ...]:
    """The arguments a derivative flows through in JAX: not a comparison's (its result is a bool),
    not a `where`'s condition; x ** 0 passes zeros forward (a tangent of 0) and nothing back."""
    if node.op in _COMPARISONS:
        return ()
    if node.op == "where":
        return node.args[1:]
    if node.op == "ipow" and node.param == 0 and not forward:
        return ()
    return node.args


REDUCING_OPS = ("sum", "mean", "prod", "amax", "amin", "trapz", "cumsum")


def scalar_size(graph: Graph) -> int:
    """About how many scalar nodes the scalar view of `graph` has, from the shapes alone (before
    building it): a product's multiplications and additions, a reduction's terms."""
    total = 0
    for node in graph.nodes:
        size = math.prod(node.shape)
        if node.op in ("matmul", "dot"):
            size *= 2 * graph.shape_of(node.args[0])[-1]
        elif node.op in REDUCING_OPS:
            size += 2 * math.prod(graph.shape_of(node.args[0]))
        total += max(size, 1)
    return total


def scalarize(graph: Graph, tensors: dict | None = None) -> ScalarView:
    """The scalar graph of a tensor graph (see the module docstring). `tensors` holds the tensor
    inputs' values (nested lists or arrays); their shapes must be the graph's."""
    return _Scalarizer(graph, tensors or {}).run()


class _Scalarizer:
    def __init__(self, graph: Graph, tensors: dict):
        self.graph = graph
        self.tensors_in = tensors
        self.nodes: list[Node] = []
        self.elements: dict[str, Elements] = {}  # every node of the tensor graph
        self.tensors: dict[str, tuple[float, ...]] = {}
        self.scalar_inputs: list[str] = []
        self.owned = set(graph.inputs) | set(graph.named)
        self.moving: set[str] = set()  # tensor nodes computed from a wrt name (JAX: a tangent)
        self.dense: set[str] = set()  # their elements

    def run(self) -> ScalarView:
        g = self.graph
        wrt = set(g.wrt)
        for node in g.nodes:
            if node.name in wrt or any(a in self.moving for a in differentiable_args(node)):
                self.moving.add(node.name)
            if node.op == "input":
                self.input(node)
            elif node.op == "const":
                self.nodes.append(Node(node.name, "const", const=node.const, owner=node.owner,
                                       where=node.where))
                self.elements[node.name] = ((), (node.name,))
            elif node.op in TENSOR_OPS:
                self.tensor_op(node)
            else:
                self.elementwise(node)
            if node.name in self.moving:
                self.dense.update(self.elements[node.name][1])

        def all_of(names):
            return tuple(e for name in names for e in self.elements[name][1])

        named = all_of(g.named)
        formulas = {e: g.formulas[name] for name in g.named if name in g.formulas
                    for e in self.elements[name][1]}
        extra = {k: getattr(g, k) for k in ("order", "mode") if hasattr(g, k)}
        scalar = Graph(nodes=tuple(self.nodes), inputs=tuple(self.scalar_inputs), named=named,
                       outputs=all_of(g.outputs), wrt=all_of(g.wrt), formulas=formulas,
                       position={n.name: i for i, n in enumerate(self.nodes)}, **extra)
        visible = {name: self.elements[name] for name in g.visible}
        parts = {name: names for name, (_, names) in self.elements.items()}
        return ScalarView(scalar, g, visible, self.tensors, parts, frozenset(self.dense))

    def input(self, node: Node) -> None:
        shape = tuple(node.shape)
        names = tuple(element_name(node.name, index) for index in indices(shape))
        if shape:
            if node.name in self.tensors_in:
                got, values = flatten(self.tensors_in[node.name])
                if got != shape:
                    raise ValueError(f"tensor input '{node.name}' has shape {got}, the graph's is "
                                     f"{shape}")
                self.tensors[node.name] = tuple(values)
        for name in names:
            self.nodes.append(Node(name, "input", owner=node.owner, where=node.where))
        self.scalar_inputs.extend(names)
        self.elements[node.name] = (shape, names)

    def elementwise(self, node: Node) -> None:
        if node.op not in OPS and node.op != "ipow":
            raise ValueError(f"node '{node.name}': unknown op '{node.op}'")
        args = [self.elements[a] for a in node.args]
        shape = broadcast(*(s for s, _ in args))
        names = []
        for index in indices(shape):
            name = element_name(node.name, index)
            picks = tuple(arg_names[flat(broadcast_index(index, arg_shape), arg_shape)]
                          for arg_shape, arg_names in args)
            self.nodes.append(Node(name, node.op, picks, param=node.param, owner=node.owner,
                                   where=node.where))
            names.append(name)
        self.elements[node.name] = (shape, tuple(names))

    def tensor_op(self, node: Node) -> None:
        first = len(self.nodes)
        counter = itertools.count(1)

        def emit(op: str, args=(), param=None, const=None) -> str:
            if op != "const" and op not in OPS and op != "ipow":
                raise ValueError(f"an expansion of '{node.op}' emitted the unknown op '{op}'")
            name = f"{node.name}:{next(counter)}"
            self.nodes.append(Node(name, op, tuple(args), const=const, param=param, owner=node.owner,
                                   where=node.where))
            return name

        shape, names = TENSOR_OPS[node.op].expand(emit, [self.elements[a] for a in node.args],
                                                  node.param)
        owned = node.name in self.owned
        moving = node.name in self.moving
        fresh = {n.name for n in self.nodes[first:]}
        if owned:  # an element the expansion goes on to use (cumsum's running sum) is not y's own:
            fresh -= {a for n in self.nodes[first:] for a in n.args}  # perturbing y[0] moves no y[1]
        rename: dict[str, str] = {}
        out = []
        for index, name in zip(indices(shape), names):
            target = element_name(node.name, index)
            if name in fresh and name not in rename:
                rename[name] = target
                out.append(target)
            elif owned or (moving and name not in self.dense):
                # another node's element, one given twice, or one used inside; or one without a
                # tangent joined to ones with (JAX's tangent gives it a 0): copy it
                self.nodes.append(Node(target, "id", (rename.get(name, name),), owner=node.owner,
                                       where=node.where))
                out.append(target)
            else:  # a temporary may share its arguments' elements
                out.append(rename.get(name, name))
        if rename:
            self.nodes[first:] = [
                Node(rename.get(n.name, n.name), n.op, tuple(rename.get(a, a) for a in n.args),
                     const=n.const, param=n.param, owner=n.owner, where=n.where)
                for n in self.nodes[first:]]
        self.elements[node.name] = (tuple(shape), tuple(out))


def run_tensor_point(graph: Graph, inputs: dict, order: int = 1) -> dict:
    """Values, Jacobians and (order 2) Hessians of a tensor graph at one point, as nested lists.

    `inputs` gives every input: a number, or a nested list (or array) for a tensor input. Returns
    {"values": {name: value}, "grads": {output: {name: Jacobian}}, "shapes": {name: shape}} for every
    input and named node, each output and each wrt name (a Jacobian has shape output.shape +
    name.shape), and with `order=2` "hessians": {output: {a: {b: Hessian}}} for each scalar output
    and wrt names a, b (shape a.shape + b.shape).

    >>> from gradsvc.core.expr import parse_formula
    >>> from gradsvc.core.ir import build_graph
    >>> from gradsvc.errors import Location
    >>> at = Location("doc", 1, 1)
    >>> g = build_graph(["v"], {"q": parse_formula("q", "sum(v ** 2)", at, {"v", "q"})}, ["q"], ["v"],
    ...                 {}, input_shapes={"v": (2,)})
    >>> r = run_tensor_point(g, {"v": [1.0, 3.0]}, order=2)
    >>> r["values"]["q"], r["grads"]["q"]["v"], r["hessians"]["q"]["v"]["v"]
    (10.0, [2.0, 6.0], [[2.0, 0.0], [0.0, 2.0]])
    """
    view = scalarize(graph, {n: v for n, v in inputs.items() if n in graph.inputs})
    scalar = view.graph
    result = run_point(scalar, view.point(inputs))
    report = {
        "values": {name: view.value(name, result.values) for name in graph.visible},
        "grads": {out: {name: view.jacobian(out, name, result.grads) for name in graph.wrt}
                  for out in graph.outputs},
        "shapes": {name: view.shape(name) for name in graph.visible},
    }
    if order == 2:
        wrt = tuple(e for name in graph.wrt for e in view.names(name))
        report["hessians"] = {}
        for out in graph.outputs:
            if view.shape(out):
                continue
            tables = {o: hessian(scalar, result.values, o, wrt) for o in view.names(out)}
            report["hessians"][out] = {a: {b: view.hessian(out, a, b, tables) for b in graph.wrt}
                                       for a in graph.wrt}
    return report
