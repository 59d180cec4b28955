"""`gradsvc graph`: a picture of the computational graph, like the seed notebook's drawings.

Inputs and named nodes are boxes labelled with their value and d(output)/d(node) at one grid point
(from the reference backprop); a tensor's box shows its shape, and its numbers when there are a
few, else their range (the reference sees it through its scalar view; a tensor output's boxes show
the Jacobian). Every operation is an ellipse between its arguments and its result;
constants are small boxes; outputs are highlighted. Layers run left to right; an arrow spanning
several layers passes through a waypoint in each, so it runs between boxes rather than through
them, and an input used far to the right is drawn again (dashed) beside that user instead of
sending a long arrow across the picture. Each layer is ordered by the barycenter of its
neighbours, a few sweeps each way, which keeps crossings few on graphs of tens of nodes.

SVG and PNG are drawn with matplotlib (no system Graphviz needed); DOT is written with pydot for
people who have Graphviz.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..core.tensor_ops import TENSOR_OPS
from ..errors import UsageError
from .explain import check_point, number_text
from .plot import pyplot
from ..reference.backprop import backward, forward
from ..job.spec import Job
from ..core.ir import Graph

FORMATS = (".svg", ".png", ".dot", ".gv")
SWEEPS = 4  # barycenter passes each way
SYMBOLS = {"add": "+", "sub": "−", "mul": "×", "div": "÷", "pow": "pow", "neg": "−x", "id": "=",
           "gt": ">", "ge": "≥", "lt": "<", "le": "≤",
           "matmul": "@", "transpose": "ᵀ", "sum": "Σ", "prod": "Π", "amax": "max", "amin": "min",
           "trapz": "∫ trapz"}
BOX_NUMBERS = 3  # a tensor box lists up to this many numbers, else their range
COLORS = {"input": "#dbeafe", "node": "#f3f4f6", "output": "#fde68a", "op": "#ffffff",
          "const": "#ffffff"}


@dataclass
class Element:
    key: str
    kind: str  # "input", "node", "output", "op", "const"
    label: str
    layer: int = 0
    order: float = 0.0
    preds: list[str] = field(default_factory=list)
    copy_of: str = ""  # an input drawn again beside a far user (dashed), instead of a long arrow


@dataclass
class Picture:
    title: str
    elements: dict[str, Element]  # with "dummy" waypoints where an arrow crosses a layer
    edges: list[tuple[str, str]]
    # how each edge is drawn: the elements it passes, from its source (or the source's copy) on
    routes: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    @property
    def shown(self) -> list[Element]:
        """The graph's own boxes and operations (no waypoints, no copies of inputs)."""
        return [e for e in self.elements.values() if e.kind != "dummy" and not e.copy_of]

    def layers(self) -> list[list[Element]]:
        return _rows(self.elements)


def build_picture(job: Job, point: int = 0, output: str | None = None) -> Picture:
    """The elements, edges and layout of the job's graph at one grid point."""
    graph = job.graph
    check_point(job, point)
    out = output or graph.outputs[0]
    if out not in graph.visible:
        raise UsageError(f"'{out}' is not an input or a node of '{job.name}'",
                         hint=f"outputs: {', '.join(graph.outputs)}")
    coords = job.grid.point(point)
    label = (_tensor_labels(job, coords, out) if graph.has_tensors else
             _scalar_labels(graph, coords, out))
    elements: dict[str, Element] = {}
    edges: list[tuple[str, str]] = []
    result_of: dict[str, str] = {}  # IR node -> the element its value leaves from

    def add(element: Element, *preds: str) -> None:
        element.preds = list(preds)
        elements[element.key] = element
        edges.extend((p, element.key) for p in preds)

    for node in graph.nodes:
        name = node.name
        if node.op == "input":
            add(Element(name, "output" if name in graph.outputs else "input", label(name)))
            result_of[name] = name
            continue
        if node.op == "const":
            if name == node.owner:  # a named constant (`k: 3`): a box with its gradient
                kind = "output" if name in graph.outputs else "node"
                add(Element(name, kind, label(name)))
            else:
                add(Element(name, "const", number_text(node.const)))
            result_of[name] = name
            continue
        op_key = f"op:{name}"
        add(Element(op_key, "op", _op_label(node)), *(result_of[a] for a in node.args))
        result_of[name] = op_key
        if name == node.owner:  # a user-named node: its value gets a box after the operation
            kind = "output" if name in graph.outputs else "node"
            add(Element(name, kind, label(name)), op_key)
            result_of[name] = name
    routes = _layout(elements, edges)
    title = (f"{job.name}, point {point}" + (": " if coords else "")
             + ", ".join(f"{n} = {number_text(v)}" for n, v in coords.items())
             + f"   (labels: value, d{out}/d(node)"
             + ("; a tensor: its shape, and its numbers or their range)" if graph.has_tensors
                else ")"))
    return Picture(title, elements, edges, routes)


def _scalar_labels(graph: Graph, coords: dict, out: str):
    values = forward(graph, coords)
    adjoint = backward(graph, values, out)
    return lambda name: _box_label(name, values[name], out, adjoint.get(name, 0.0))


def _box_label(name: str, value: float, out: str, grad: float) -> str:
    return f"{name} = {number_text(value)}\nd{out}/d{name} = {number_text(grad)}"


def _tensor_labels(job: Job, coords: dict, out: str):
    """Labels from the reference's scalar view: value and d(out)/d(name), or the Jacobian's block
    d(out)/d(name) for a tensor output (one backward pass per element of the output). A graph too
    big for that view shows shapes alone."""
    from ..reference.scalarize import scalarize
    from ..core.tensor_ops import shape_text
    from ..reference.scalarize import scalar_size
    from .explain_tensors import MAX_SCALAR_OPS
    graph = job.graph
    if scalar_size(graph) > MAX_SCALAR_OPS:
        return lambda name: f"{name} {shape_text(graph.shape_of(name))}"
    view = scalarize(graph, job.grid.tensors)
    values = forward(view.graph, view.point(coords))
    adjoints = [backward(view.graph, values, o) for o in view.names(out)]

    def label(name: str) -> str:
        names = view.names(name)
        grads = [a.get(e, 0.0) for a in adjoints for e in names]
        return (_numbers_label(name, graph.shape_of(name), [values[e] for e in names]) + "\n"
                + _numbers_label(f"d{out}/d{name}", graph.shape_of(out) + graph.shape_of(name),
                                 grads))
    return label


def _numbers_label(what: str, shape: tuple, numbers: list[float]) -> str:
    """'c = 0', 'w (2,) = [1, -0.5]', 'h1 (4, 4): -0.96 … 0.97' (the range of a bigger tensor)."""
    from ..core.tensor_ops import shape_text
    if not shape:
        return f"{what} = {number_text(numbers[0])}"
    if len(numbers) <= BOX_NUMBERS:
        return f"{what} {shape_text(shape)} = [{', '.join(map(_short, numbers))}]"
    finite = [x for x in numbers if math.isfinite(x)] or [math.nan]
    return f"{what} {shape_text(shape)}: {_short(min(finite))} … {_short(max(finite))}"


def _short(x: float) -> str:
    """Three significant digits: a range in a box is a glance, not a table."""
    return number_text(float(f"{x:.3g}")) if math.isfinite(x) else number_text(x)


def _op_label(node) -> str:
    if node.op == "ipow":
        return f"**{node.param}"
    if node.op == "index":
        from .vjp_text import subscript_text
        return f"[{subscript_text(node.param)}]"
    label = SYMBOLS.get(node.op, node.op)
    if node.param is not None and node.op in TENSOR_OPS and TENSOR_OPS[node.op].axis_keyword:
        return f"{label} axis={node.param}"
    return label


def _layout(elements: dict[str, Element], edges: list[tuple[str, str]]) -> dict:
    """Sugiyama-style layers. Layer = longest path from a source, then everything but the inputs
    pulled right to just before its first user (`sqrt(t)` used only at the end sits at the end).
    An arrow spanning several layers gets a waypoint in each (a "dummy" element that holds a
    place, so arrows pass between boxes, not through them); each layer is then ordered by its
    neighbours' barycenters. Returns the waypoints of each long edge."""
    for e in elements.values():  # elements were added in topological order
        e.layer = 1 + max((elements[p].layer for p in e.preds), default=-1)
    succs = _successors(elements)
    for e in reversed(list(elements.values())):
        if succs[e.key] and e.kind != "input" and (e.preds or e.kind == "const"):
            e.layer = min(elements[s].layer for s in succs[e.key]) - 1
    routes = {}
    for a, b in edges:
        source = elements[a]
        if not source.preds and source.kind != "const" and elements[b].layer - source.layer > 2:
            a = _copy_beside(elements, source, elements[b].layer - 1)
        chain, prev = [a], a
        for layer in range(elements[a].layer + 1, elements[b].layer):
            key = f"dummy:{a}>{b}:{layer}"
            elements[key] = Element(key, "dummy", "", layer, preds=[prev])
            chain.append(key)
            prev = key
        elements[b].preds = [prev if p == source.key else p for p in elements[b].preds]
        routes[(source.key, b)] = chain + [b]
    succs = _successors(elements)
    rows = _rows(elements)  # every order is still 0: each layer in the order elements were added
    for row in rows:
        for i, e in enumerate(row):
            e.order = float(i)
    for _ in range(SWEEPS):
        for row in rows[1:]:
            _reorder(row, lambda e: e.preds, elements)
        for row in reversed(rows[:-1]):
            _reorder(row, lambda e: succs[e.key], elements)
    return routes


def _rows(elements: dict[str, Element]) -> list[list[Element]]:
    """The elements layer by layer, left to right, each layer in its current order."""
    by_layer: dict[int, list[Element]] = {}
    for e in elements.values():
        by_layer.setdefault(e.layer, []).append(e)
    return [sorted(by_layer[k], key=lambda e: e.order) for k in sorted(by_layer)]


def _copy_beside(elements: dict[str, Element], source: Element, layer: int) -> str:
    """A copy of an input box in `layer`, shared by that layer's users of the input."""
    key = f"copy:{source.key}:{layer}"
    if key not in elements:
        elements[key] = Element(key, source.kind, source.label, layer, copy_of=source.key)
    return key


def _successors(elements: dict[str, Element]) -> dict[str, list[str]]:
    succs: dict[str, list[str]] = {k: [] for k in elements}
    for e in elements.values():
        for p in e.preds:
            succs[p].append(e.key)
    return succs


def _reorder(row: list[Element], neighbours, elements: dict[str, Element]) -> None:
    def barycenter(e: Element) -> float:
        near = neighbours(e)
        return sum(elements[n].order for n in near) / len(near) if near else e.order
    row.sort(key=lambda e: (barycenter(e), e.order))
    for i, e in enumerate(row):
        e.order = float(i)


# --- writers ---

def write_picture(picture: Picture, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"cannot draw a graph as '{suffix or path.name}'",
                         hint=f"name the --out file with one of: {', '.join(FORMATS)}")
    if suffix in (".dot", ".gv"):
        path.write_text(to_dot(picture), encoding="utf-8")
    else:
        _draw(picture, path)


def to_dot(picture: Picture) -> str:
    import pydot

    dot = pydot.Dot("gradsvc", graph_type="digraph", rankdir="LR", label=picture.title,
                    labelloc="t", fontname="Helvetica")
    for e in picture.shown:
        shape = {"op": "ellipse", "const": "plaintext"}.get(e.kind, "box")
        style = "filled,bold" if e.kind == "output" else "filled"
        dot.add_node(pydot.Node(_dot_id(e.key), label=e.label, shape=shape, style=style,
                                fillcolor=COLORS[e.kind], fontname="Helvetica"))
    for a, b in picture.edges:
        dot.add_edge(pydot.Edge(_dot_id(a), _dot_id(b)))
    return dot.to_string()


def _dot_id(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


# sizes in inches
COLUMN, ROW, BOX_W, BOX_H, OP_W, OP_H = 2.3, 0.95, 1.8, 0.62, 0.62, 0.42
OP_CHAR = 0.085  # width of one character of an operation's label (10 points)
MAX_SIDE = 60.0  # bigger graphs still render, scaled down to this many inches per side


def _draw(picture: Picture, path: Path) -> None:
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch

    plt = pyplot()
    layers = picture.layers()
    height = max(len(row) for row in layers)
    width_in, height_in = len(layers) * COLUMN + 0.5, height * ROW + 1.0
    scale = min(1.0, MAX_SIDE / max(width_in, height_in))
    fig = plt.figure(figsize=(width_in * scale, height_in * scale))
    try:
        ax = fig.add_axes((0, 0, 1, 1 - 0.6 / height_in))
        ax.set_xlim(-COLUMN / 2 - 0.25, len(layers) * COLUMN - COLUMN / 2 + 0.25)
        ax.set_ylim(-ROW / 2 - 0.1, height * ROW - ROW / 2 + 0.1)
        ax.axis("off")
        # plain text: the title holds the job's name, the sender's (a `$` would start math text)
        fig.suptitle(picture.title, fontsize=9 * scale, y=1 - 0.15 / height_in, parse_math=False)
        shapes, where = {}, {}  # key -> (ellipse?, half width, half height); key -> centre
        for col, row in enumerate(layers):
            offset = (height - len(row)) * ROW / 2
            for i, e in enumerate(row):
                x, y = col * COLUMN, (height - 1 - i) * ROW - offset
                where[e.key] = (x, y)
                if e.kind == "dummy":
                    continue
                if e.kind == "op":
                    width = max(OP_W, OP_CHAR * len(e.label) + 0.2)  # `Σ axis=0` needs a wider one
                    patch = Ellipse((x, y), width, OP_H, facecolor=COLORS["op"], edgecolor="#374151",
                                    linewidth=1.0)
                    shapes[e.key], size = (True, width / 2, OP_H / 2), 10
                else:
                    w, h = (0.6, 0.3) if e.kind == "const" else (BOX_W, BOX_H)
                    bold = e.kind == "output"
                    patch = FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02",
                                           facecolor=COLORS[e.kind], linewidth=2.2 if bold else 1.0,
                                           edgecolor="#b45309" if bold else "#374151",
                                           linestyle="--" if e.copy_of else "-")
                    shapes[e.key], size = (False, w / 2 + 0.02, h / 2 + 0.02), 8
                patch.set_zorder(2)
                ax.add_artist(patch)  # not add_patch: the limits are set, and updating them is slow
                ax.text(x, y, e.label, ha="center", va="center", fontsize=size * scale,
                        family="DejaVu Sans", zorder=3, parse_math=False)
        color = "#6b7280"
        polylines = []
        for stops in picture.routes.values():
            points = [where[k] for k in stops]
            if len(stops) > 2:  # up to the last waypoint: plain lines, hidden under the boxes
                polylines.append(points[:-1])
            start = points[-2]
            if stops[-2] in shapes:
                start = _boundary(points[-1], points[-2], shapes[stops[-2]])
            end = _boundary(start, points[-1], shapes[stops[-1]])
            ax.add_artist(FancyArrowPatch(start, end, shrinkA=0, shrinkB=1, arrowstyle="-|>",
                                          color=color, mutation_scale=10 * scale, linewidth=0.9,
                                          zorder=1))
        ax.add_collection(LineCollection(polylines, colors=color, linewidths=0.9, zorder=1),
                          autolim=False)
        suffix = path.suffix.lower().lstrip(".")
        # no creation date in SVG/PDF metadata: the same graph gives the same file
        fig.savefig(path, format=suffix, dpi=120, metadata={"Date": None} if suffix != "png" else None)
    finally:  # a drawing that failed leaves no figure open in pyplot
        plt.close(fig)


def _boundary(outside: tuple, centre: tuple, shape: tuple) -> tuple[float, float]:
    """Where the segment from `outside` to a shape's centre crosses the shape's edge (computed,
    because matplotlib's own clipping of arrows at patches bisects and is slow on big graphs)."""
    ellipse, rx, ry = shape
    dx, dy = centre[0] - outside[0], centre[1] - outside[1]
    if dx == 0 and dy == 0:
        return centre
    scale = math.hypot(dx / rx, dy / ry) if ellipse else max(abs(dx) / rx, abs(dy) / ry)
    return centre[0] - dx / scale, centre[1] - dy / scale
