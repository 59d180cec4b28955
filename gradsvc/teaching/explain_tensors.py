"""`gradsvc explain` for graphs with tensors: the chain rule for whole tensors, then at one element.

The reference sees a tensor graph through its scalar view (reference/scalarize.py): every element a
scalar node named like `W[0,1]`. Every output is walked as the scalar explanation walks it (each
name after every name that uses it), and for each name the text gives
  - the vector-Jacobian product that carries the gradient back through each formula using it,
    written as a formula (vjp_text), with the Jacobian's shape and how many of its entries can be
    nonzero (counted in the scalar view: like reverse mode, nothing builds the Jacobian);
  - the gradient's numbers (a small tensor) or their range;
  - a worked example at one element, the one with the largest gradient: its chain-rule sum over
    the elements of the names that use it, with the reference's numbers, and the seed notebook's
    check (bump it by one, recompute). These are `Step`s, as in a scalar explanation, so one test
    checks both: each sum over paths equals the reference's gradient.
Around the walk: the forward pass with every shape; for trapz, the quadrature weights and the
discrete functional derivative; for `order: 2`, what the Hessian is, with one entry's value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..core.ir import Graph
from ..core.tensor_ops import TENSOR_OPS, shape_text
from ..errors import UsageError
from ..reference.backprop import backward, run_point
from ..reference.hessian import hessian
from ..reference.scalarize import element_name, flatten, nest, scalar_size, scalarize
from . import vjp_text
from .explain import (NONLINEAR, Explanation, Path, Step, _bumped, _central, _check, _chain,
                      _dependence, _explain_order, _factor, _meaning, _users, formula_uses,
                      number_text, TEXT)

SMALL = 8  # a tensor of at most this many numbers is written out, a bigger one by its range
MAX_TERMS = 4  # chain-rule terms written out at one element; a longer sum shows its first ones
MAX_FORMULA = 400  # characters of a written vector-Jacobian product; a longer one is described
MAX_WEIGHTS = 3  # quadrature weights listed at each end
# The scalar view is a Python object per element operation, and each worked element walks it a
# few times: jobs beyond this many scalar operations are refused with a hint, not left to hang.
MAX_SCALAR_OPS = 300_000
MAX_STRUCTURE = 20_000  # a formula's scalar nodes up to which its Jacobians' nonzeros are counted


@dataclass
class Link:
    """How the gradient reaches a name through one formula that uses it."""
    consumer: str
    jacobian: tuple  # the shape of d consumer / d name: consumer's shape + name's shape
    nonzero: int | None  # entries of that Jacobian that can be nonzero (None: not counted)
    reach: tuple[int, int] | None  # fewest and most elements of the name one element uses
    formula: str | None  # the vector-Jacobian product; None when too long to read
    terms: int


@dataclass
class TensorStep:
    """One name's gradient as a whole, and the element worked out (a key of the steps)."""
    name: str
    shape: tuple
    grad: object  # d output / d name, nested lists of the name's shape
    links: list[Link]
    element: str


@dataclass
class Quadrature:
    """A trapz in a formula: its weights and the discrete functional derivative."""
    node: str  # the named node whose formula integrates
    integrand: str
    samples: str  # the sample points' name
    weights: list[float]
    function: str | None = None  # the sampled function (a name the integrand is made of)
    derivative: str | None = None  # d integrand / d function, elementwise, as a formula
    index: int | None = None  # the sample worked out
    local: float | None = None  # d integrand_i / d function_i there
    grad: float | None = None  # d node / d function_i, from the reference's backward pass


@dataclass
class HessianEntry:
    output: str
    wrt: tuple
    blocks: int
    count: int  # numbers in the whole Hessian
    a: str
    b: str
    value: float


@dataclass
class TensorExplanation(Explanation):
    shapes: dict = field(default_factory=dict)  # every visible name's shape at one point
    inputs: dict = field(default_factory=dict)  # tensor inputs' values, nested lists
    walks: dict = field(default_factory=dict)  # per walked output element: its TensorSteps
    quadratures: list = field(default_factory=list)
    hessians: list = field(default_factory=list)


def explain_tensors(job, point: int, lang: str) -> TensorExplanation:
    """The explanation of a job whose graph has tensors, at grid point `point` (checked)."""
    graph = job.graph
    check_size(job)
    view = scalarize(graph, job.grid.tensors)
    coords = job.grid.point(point)
    walker = _Walker(graph, view, view.point(coords))
    steps, walks, unused = {}, {}, {}
    for out in graph.outputs:
        key, walks[key], steps[key], unused[key] = walker.walk(out)
    values = walker.result.values
    forward = [(n, graph.formulas[n], view.value(n, values)) for n in graph.named]
    kinks = sorted({view.graph.node(n).owner for n in walker.result.kinks})
    ex = TensorExplanation(
        job.name, point, job.grid.size, coords, lang, forward, steps, unused, kinks,
        shapes={n: view.shape(n) for n in graph.visible},
        inputs={n: view.value(n, values) for n in graph.tensor_inputs}, walks=walks,
        quadratures=walker.quadratures(), hessians=walker.hessians())
    ex.text = render(ex, graph)
    return ex


def check_size(job) -> None:
    """Refuse, with a hint, a job too big to write out element by element."""
    ops = scalar_size(job.graph)
    if ops > MAX_SCALAR_OPS:
        raise UsageError(f"'{job.name}' is too big to explain element by element: about {ops:,} "
                         f"scalar operations at one point (explain writes out at most "
                         f"{MAX_SCALAR_OPS:,})",
                         hint="explain a smaller version (fewer data rows, smaller layers); "
                         "`gradsvc run` and `gradsvc graph` take it at full size")


class _Walker:
    """The walks of one point: the scalar view, its reference run, and caches shared by outputs."""

    def __init__(self, graph: Graph, view, inputs: dict):
        self.graph, self.view, self.scalar, self.inputs = graph, view, view.graph, inputs
        self.result = run_point(self.scalar, inputs)
        self.values = self.result.values
        self.uses, self.users = formula_uses(graph), _users(graph)
        self.nodes_of: dict[str, list] = {}  # a named node's scalar nodes, in tape order
        for node in self.scalar.nodes:
            self.nodes_of.setdefault(node.owner, []).append(node)
        self._local: dict[str, dict] = {}
        self._deps: dict[str, dict | None] = {}
        self._vjps: dict[tuple, dict] = {}
        self.worked: dict[str, str] = {}  # name -> the element worked out (first walk)

    # --- one output ---

    def walk(self, out: str) -> tuple[str, list[TensorStep], list[Step], list[str]]:
        """The walk of one output: of its first element, one row of the Jacobian, for a tensor."""
        out_el = self.view.names(out)[0]
        order = _explain_order(self.graph, out, self.uses, self.users)
        adjoint = backward(self.scalar, self.values, out_el)
        tensor_steps, steps = [], []
        for name in order:
            element = self._worked_element(out_el, name)
            self.worked.setdefault(name, element)
            links = [] if name == out else [self._link(out, c, name) for c in self.users[name]
                                           if c in order]
            grads = self.result.grads[out_el]
            shape, names = self.view.elements[name]
            tensor_steps.append(TensorStep(name, shape, nest(shape, [grads[e] for e in names]),
                                           links, element))
            steps.append(self._element_step(out, out_el, name, element, adjoint, order))
        unused = [n for n in self.graph.visible if n not in order]
        return out_el, tensor_steps, steps, unused

    def _worked_element(self, out_el: str, name: str) -> str:
        """The element with the largest finite gradient (the first, if none is finite)."""
        names = self.view.names(name)
        grads = self.result.grads[out_el]
        finite = [e for e in names if math.isfinite(grads[e])]
        return max(finite, key=lambda e: abs(grads[e])) if finite else names[0]

    def _element_step(self, out: str, out_el: str, name: str, element: str, adjoint: dict,
                      order: list[str]) -> Step:
        value = self.values[element]
        step = Step(element, value, self.result.grads[out_el][element], self.values[out_el])
        if name == out:
            return step
        for consumer in (c for c in self.users[name] if c in order):
            for c_el in self._reached(consumer, element):
                if c_el in adjoint or c_el == out_el:
                    local = self._local_grads(consumer, c_el).get(element, 0.0)
                    step.paths.append(Path(c_el, adjoint.get(c_el, 0.0), local, None))
        step.affine = _dependence(self.scalar, out_el, element) != NONLINEAR
        step.bumped = _bumped(self.scalar, self.inputs, out_el, element, value + 1.0)
        if not step.affine:
            step.central = _central(self.scalar, self.inputs, out_el, element, value)
        return step

    def _reached(self, consumer: str, element: str) -> list[str]:
        """The consumer's elements whose formula uses `element`."""
        reached = {element}
        for node in self.nodes_of[consumer]:
            if any(a in reached for a in node.args):
                reached.add(node.name)
        return [e for e in self.view.names(consumer) if e in reached]

    def _local_grads(self, consumer: str, c_el: str) -> dict[str, float]:
        """d c_el / d (each element its formula uses), the other names held fixed."""
        if c_el not in self._local:
            own = Graph(tuple(self.nodes_of[consumer]), (), (), (), ())  # only its formula's tape
            self._local[c_el] = backward(own, self.values, c_el, within=consumer)
        return self._local[c_el]

    # --- the tensor-level words ---

    def _link(self, out: str, consumer: str, name: str) -> Link:
        key = (out, consumer)
        if key not in self._vjps:
            shape = self.graph.shape_of(consumer)
            seed = (vjp_text.jacobian_seed(out, shape) if consumer == out else
                    vjp_text.arriving(_row(self.graph, out), consumer, shape))
            self._vjps[key] = vjp_text.formula_vjps(self.graph, consumer, seed)
        sym = self._vjps[key].get(name)
        formula = "0" if sym is None else vjp_text.show(sym)
        nonzero, reach = self._structure(consumer, name)
        return Link(consumer, self.graph.shape_of(consumer) + self.graph.shape_of(name), nonzero,
                    reach, formula if len(formula) <= MAX_FORMULA else None,
                    0 if sym is None else sym.terms)

    def _structure(self, consumer: str, name: str) -> tuple[int | None, tuple | None]:
        """How many entries of d consumer / d name can be nonzero, and how many elements of the
        name one element of the consumer uses (fewest, most): from the scalar view's wiring."""
        deps = self._dependencies(consumer)
        if deps is None:
            return None, None
        mine = set(self.view.names(name))
        counts = [len(deps[e] & mine) for e in self.view.names(consumer)]
        return sum(counts), (min(counts), max(counts))

    def _dependencies(self, consumer: str) -> dict | None:
        """For each element of the consumer, the visible elements its formula reads."""
        if consumer not in self._deps:
            nodes = self.nodes_of[consumer]
            if len(nodes) > MAX_STRUCTURE:
                self._deps[consumer] = None
                return None
            reads: dict[str, frozenset] = {}
            for node in nodes:
                found: set = set()
                for arg in node.args:
                    found |= reads.get(arg, {arg} if self.scalar.node(arg).op != "const" else set())
                reads[node.name] = frozenset(found)
            self._deps[consumer] = {e: reads.get(e, frozenset()) for e in self.view.names(consumer)}
        return self._deps[consumer]

    # --- integrals and second derivatives ---

    def quadratures(self) -> list[Quadrature]:
        found = []
        for name in self.graph.named:
            for node in self.graph.nodes:
                if node.owner == name and node.op == "trapz" and \
                        self.graph.node(node.args[1]).owner == node.args[1]:
                    found.append(self._quadrature(name, node))
        return found

    def _quadrature(self, name: str, node) -> Quadrature:
        y, x = node.args
        s = [self.values[e] for e in self.view.names(x)]
        n = len(s) - 1
        weights = [(s[1] - s[0]) / 2] + [(s[i + 1] - s[i - 1]) / 2 for i in range(1, n)] + \
            [(s[n] - s[n - 1]) / 2]
        own = [m for m in self.graph.nodes if m.owner == name and m.op != "input"]
        texts = vjp_text.forward_texts(self.graph, own, name)
        integrand = texts[y].text if y in texts else y
        q = Quadrature(name, integrand, x, weights)
        if len(self.graph.shape_of(y)) == 1 and _elementwise(self.graph, y):
            self._functional_derivative(q, node, own)
        return q

    def _functional_derivative(self, q: Quadrature, node, own) -> None:
        """d integral / d f_i = w_i · d integrand_i / d f_i, for the sampled function f."""
        y, x = node.args
        shape = self.graph.shape_of(y)
        parts = vjp_text.formula_vjps(self.graph, q.node, vjp_text.Sym("", shape), start=y)
        parts = {f: s for f, s in parts.items() if f != x and self.graph.shape_of(f) == shape}
        if y not in parts and self.graph.node(y).owner == y:
            parts = {y: vjp_text.Sym("", shape)}
        if not parts:
            return
        f, sym = next(iter(parts.items()))
        q.function, q.derivative = f, vjp_text.show(vjp_text.with_shape(sym, ()) if sym.one else sym)
        element = self.worked.get(f) or self.view.names(f)[len(q.weights) // 2]
        q.index = self.view.names(f).index(element)
        if f == y:
            q.local = 1.0
        else:
            y_el = element_name(y, (q.index,))
            if y_el not in self.scalar.position:
                return
            q.local = self._local_grads(q.node, y_el).get(element, 0.0)
        if node.name == q.node:  # the integral is the named node itself: its gradient to compare
            q.grad = self._local_grads(q.node, q.node).get(element, 0.0)

    def hessians(self) -> list[HessianEntry]:
        wrt = self.graph.wrt
        entries = []
        for out in self.graph.hessian_outputs:
            if not wrt:
                continue
            first = self.view.names(wrt[0])
            a = first[0]
            b = first[1] if len(first) > 1 else (self.view.names(wrt[1])[0] if len(wrt) > 1 else a)
            table = hessian(self.scalar, self.values, out, [a, b], directions=[b])
            count = sum(len(self.view.names(w)) for w in wrt) ** 2
            entries.append(HessianEntry(out, tuple(wrt), len(wrt) ** 2, count, a, b, table[a][b]))
        return entries


def _elementwise(graph: Graph, y: str) -> bool:
    """Whether the integrand's sample i depends on the names' elements i alone (no tensor op on
    the way inside the formula): only then is d integral / d f_i = w_i · d y_i / d f_i."""
    if graph.node(y).owner == y:  # trapz(u, s): the samples are a name's own
        return True
    stack = [y]
    while stack:
        node = graph.node(stack.pop())
        if node.op in TENSOR_OPS:
            return False
        stack.extend(a for a in node.args if graph.node(a).owner != a)  # the formula's own parts
    return True


# --- the words ---

WORDS = {
    "en": {
        "shapes": "Each name holds a tensor of the shape shown, at this one point; up to {small} "
                  "numbers are written out, a bigger tensor by its range.",
        "range": "range [{low}, {high}]",
        "nonfinite": ", {count} not finite",
        "backward": "Backward pass for {out} (vector-Jacobian products, from {out} back to the "
                    "inputs): d{out}/dX has the shape of X, and each formula passes it back "
                    "without building its Jacobian.",
        "backward_row": "Backward pass for {out}, a tensor output {shape}: its Jacobian d{out}/dX "
                        "has shape {shape} + the shape of X, one row per element of {out}. "
                        "Reverse mode computes row i with the pass below, seeded with e_i (1 at "
                        "element i, 0 elsewhere); forward mode (mode: forward) pushes one "
                        "column per element of X instead, with the same numbers. Worked out "
                        "here: the row of {element}.",
        "seed": "seed: d{element}/d{out} = e_i with i = {row}",
        "link": "through {consumer} = {formula}: the Jacobian d{consumer}/d{name} has shape "
                "{jacobian}",
        "sparse": "; each element of {consumer} uses {reach} of the {size} elements of {name}, "
                  "so {nonzero} of its {total} entries can be nonzero",
        "reach": "{low} to {high}",
        "vjp": "vector-Jacobian product: {frac} = {formula}",
        "vjp_long": "vector-Jacobian product: {frac} is a sum of {terms} terms, too long to write "
                    "out here; the worked example below follows one element",
        "vjp_part": "from {consumer}: {formula}",
        "vjp_sum": "{frac} = the sum of these {count} products",
        "grad_small": "{frac} = {values}",
        "grad_big": "{frac}: {values} ({count} numbers)",
        "example": "worked example at {element} = {value}:",
        "terms": "{count} terms",
        "integral": "The integral {node} = {formula} is the trapezoid rule: a weighted sum "
                    "Σ_i w_i · y_i of the integrand y = {integrand} at the samples of {x}, with "
                    "the quadrature weights",
        "weights": "w_0 = ({x}_1 - {x}_0)/2,  w_i = ({x}_{{i+1}} - {x}_{{i-1}})/2 inside,  "
                   "w_{n} = ({x}_{n} - {x}_{m})/2",
        "here": "here: {weights}",
        "functional": "So the gradient of the integral with respect to the sampled function "
                      "{f} is the discrete functional derivative: each sample's weight times the "
                      "derivative of the integrand, {derivative}:",
        "functional_sum": "d{node}/d{f}_i = w_i · ({derivative})_i; at i = {i}: {w} · {local} "
                          "= {product}",
        "functional_check": ", as the backward pass finds (d{node}/d{element} = {grad})",
        "functional_limit": "Divided by w_i, the gradient is the functional derivative "
                            "δ{node}/δ{f} = {derivative} at {x}_i, however densely {x} is "
                            "sampled; the gradient itself shrinks with w_i as the samples get "
                            "denser.",
        "integrand_only": "So the gradient of {node} with respect to the integrand's samples is "
                          "the weights themselves: d{node}/dy_i = w_i.",
        "hessian": "Second derivatives (order: 2): the Hessian of {out} holds d²{out}/da db for "
                   "every pair of wrt names a, b ({names}): how the gradient d{out}/da changes "
                   "when b moves, the curvature that Newton's method and uncertainty estimates "
                   "use. It has {blocks} blocks, each of shape a's shape + b's shape, {count} "
                   "numbers in all. One entry, from the reference's forward-over-reverse pass: "
                   "d²{out}/d{a}d{b} = {value}",
        "source": "(numbers from gradsvc's reference backprop in float64 over the scalar view, "
                  "every element a scalar node like {example}: the reference every run is "
                  "checked against)",
    },
    "id": {
        "shapes": "Setiap nama memuat tensor dengan bentuk yang tertera, di titik ini; paling "
                  "banyak {small} angka ditulis lengkap, tensor yang lebih besar ditulis "
                  "rentangnya.",
        "range": "rentang [{low}, {high}]",
        "nonfinite": ", {count} tidak hingga",
        "backward": "Perhitungan mundur untuk {out} (perkalian vektor-Jacobian, dari {out} kembali "
                    "ke input): d{out}/dX berbentuk sama dengan X, dan setiap rumus meneruskannya "
                    "ke belakang tanpa membentuk Jacobian-nya.",
        "backward_row": "Perhitungan mundur untuk {out}, output tensor {shape}: Jacobian "
                        "d{out}/dX berbentuk {shape} + bentuk X, satu baris per elemen {out}. "
                        "Mode mundur menghitung baris i dengan perhitungan di bawah, diawali "
                        "e_i (1 di elemen i, 0 di tempat lain); mode maju (mode: forward) "
                        "mendorong satu kolom per elemen X, dengan angka yang sama. Yang "
                        "diuraikan di sini: baris {element}.",
        "seed": "awal: d{element}/d{out} = e_i dengan i = {row}",
        "link": "melalui {consumer} = {formula}: Jacobian d{consumer}/d{name} berbentuk "
                "{jacobian}",
        "sparse": "; setiap elemen {consumer} memakai {reach} dari {size} elemen {name}, jadi "
                  "{nonzero} dari {total} entrinya bisa tidak nol",
        "reach": "{low} sampai {high}",
        "vjp": "perkalian vektor-Jacobian: {frac} = {formula}",
        "vjp_long": "perkalian vektor-Jacobian: {frac} adalah jumlah {terms} suku, terlalu "
                    "panjang untuk ditulis di sini; contoh di bawah mengikuti satu elemen",
        "vjp_part": "dari {consumer}: {formula}",
        "vjp_sum": "{frac} = jumlah {count} perkalian ini",
        "grad_small": "{frac} = {values}",
        "grad_big": "{frac}: {values} ({count} angka)",
        "example": "contoh pada {element} = {value}:",
        "terms": "{count} suku",
        "integral": "Integral {node} = {formula} adalah aturan trapesium: jumlah berbobot "
                    "Σ_i w_i · y_i dari integran y = {integrand} pada sampel {x}, dengan bobot "
                    "kuadratur",
        "weights": "w_0 = ({x}_1 - {x}_0)/2,  w_i = ({x}_{{i+1}} - {x}_{{i-1}})/2 di dalam,  "
                   "w_{n} = ({x}_{n} - {x}_{m})/2",
        "here": "di sini: {weights}",
        "functional": "Jadi gradien integral terhadap fungsi tersampel {f} adalah turunan "
                      "fungsional diskret: bobot setiap sampel dikali turunan integran, "
                      "{derivative}:",
        "functional_sum": "d{node}/d{f}_i = w_i · ({derivative})_i; pada i = {i}: {w} · {local} "
                          "= {product}",
        "functional_check": ", sama dengan hasil perhitungan mundur (d{node}/d{element} = {grad})",
        "functional_limit": "Dibagi w_i, gradien itu adalah turunan fungsional "
                            "δ{node}/δ{f} = {derivative} di {x}_i, berapa pun kerapatan sampel "
                            "{x}; gradiennya sendiri mengecil bersama w_i saat sampel makin "
                            "rapat.",
        "integrand_only": "Jadi gradien {node} terhadap sampel integran adalah bobot itu "
                          "sendiri: d{node}/dy_i = w_i.",
        "hessian": "Turunan kedua (order: 2): Hessian dari {out} memuat d²{out}/da db untuk "
                   "setiap pasangan nama wrt a, b ({names}): seberapa gradien d{out}/da berubah "
                   "bila b bergerak, kelengkungan yang dipakai metode Newton dan perkiraan "
                   "ketidakpastian. Ada {blocks} blok, masing-masing berbentuk bentuk a + bentuk "
                   "b, {count} angka seluruhnya. Satu entri, dari perhitungan forward-over-reverse "
                   "referensi: d²{out}/d{a}d{b} = {value}",
        "source": "(angka dari backprop referensi gradsvc dalam float64 pada tampilan skalar, "
                  "setiap elemen satu node skalar seperti {example}: acuan pemeriksaan setiap "
                  "run)",
    },
}


def nested_text(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(nested_text(v) for v in value) + "]"
    return number_text(value)


def summary(w: dict, value) -> str:
    """A tensor's numbers when it is small, else its range (and how many are not finite)."""
    numbers = flatten(value)[1]
    if len(numbers) <= SMALL:
        return nested_text(value)
    finite = [x for x in numbers if math.isfinite(x)]
    bad = len(numbers) - len(finite)
    text = w["range"].format(low=number_text(min(finite)), high=number_text(max(finite))) \
        if finite else ""
    return text + (w["nonfinite"].format(count=bad) if bad else "")


def _value_part(w: dict, value) -> str:
    """' = 0.5', ' = [1, -0.5]' or ': range [-1, 3]'."""
    small = not isinstance(value, list) or len(flatten(value)[1]) <= SMALL
    return (" = " if small else ": ") + summary(w, value)


def render(ex: TensorExplanation, graph: Graph) -> str:
    t, w = TEXT[ex.lang], WORDS[ex.lang]
    lines = [_title(t, ex), "", w["shapes"].format(small=SMALL)]
    lines += ["", t["forward"]] + _forward_lines(w, ex, graph)
    for (key, steps), tensor_steps in zip(ex.steps.items(), ex.walks.values()):
        out = graph.outputs[list(ex.steps).index(key)]
        lines += [""] + _backward_lines(t, w, ex, graph, out, key, tensor_steps, steps)
        if ex.unused[key]:
            lines.append("  " + t["unused"].format(out=out, names=", ".join(ex.unused[key])))
    for q in ex.quadratures:
        lines += [""] + _quadrature_lines(w, graph, q)
    for h in ex.hessians:
        lines += ["", w["hessian"].format(out=h.output, names=", ".join(h.wrt), blocks=h.blocks,
                                          count=f"{h.count:,}", a=h.a, b=h.b,
                                          value=number_text(h.value))]
    if ex.kinks:
        lines += ["", t["kinks"].format(names=", ".join(ex.kinks), s="s" if len(ex.kinks) == 1 and
                                        ex.lang == "en" else "")]
    example = next((e for s in ex.walks.values() for ts in s if ts.shape for e in [ts.element]),
                   "W[0,1]")
    lines += ["", w["source"].format(example=example)]
    return "\n".join(lines) + "\n"


def _title(t: dict, ex: TensorExplanation) -> str:
    coords = ", ".join(f"{n} = {number_text(v)}" for n, v in ex.coords.items())
    title = t["title"].format(job=ex.job, point=ex.point, points=f"{ex.points:,}", coords=coords)
    return title if coords else title.rstrip(": ")


def _forward_lines(w: dict, ex: TensorExplanation, graph: Graph) -> list[str]:
    lines = []
    for name in graph.inputs:
        shape = ex.shapes[name]
        if shape:
            lines.append(f"  {name} {shape_text(shape)}{_value_part(w, ex.inputs[name])}")
        else:
            lines.append(f"  {name} = {number_text(ex.coords[name])}")
    for name, formula, value in ex.forward:
        shape = ex.shapes[name]
        lines.append(f"  {name} = {formula}   {shape_text(shape)}{_value_part(w, value)}")
    return lines


def _backward_lines(t: dict, w: dict, ex: TensorExplanation, graph: Graph, out: str, key: str,
                    tensor_steps: list[TensorStep], steps: list[Step]) -> list[str]:
    shape = graph.shape_of(out)
    lines = [w["backward_row"].format(out=out, shape=shape_text(shape), element=key) if shape
             else w["backward"].format(out=out)]
    for ts, step in zip(tensor_steps, steps):
        lines += _name_lines(t, w, ex, graph, out, key, ts, step)
    return lines


def _name_lines(t: dict, w: dict, ex: TensorExplanation, graph: Graph, out: str, key: str,
                ts: TensorStep, step: Step) -> list[str]:
    lines = [f"  {ts.name} {shape_text(ts.shape)}{_value_part(w, _value_of(ex, ts.name))}"]
    if ts.name == out:
        row = key[len(out) + 1:-1]  # p[0] -> 0
        return lines + ["    " + (w["seed"].format(element=key, out=out, row=row) if ts.shape
                                  else t["self"].format(out=out))]
    for link in ts.links:
        lines.append("    " + _link_text(w, ex, ts, link))
    lines += ["      " + line for line in _vjp_lines(w, f"d{_row(graph, out)}/d{ts.name}", ts.links)]
    frac = f"d{key}/d{ts.name}"
    if ts.shape:
        grad = summary(w, ts.grad)
        lines.append("    " + (w["grad_small"].format(frac=frac, values=grad)
                               if len(flatten(ts.grad)[1]) <= SMALL else
                               w["grad_big"].format(frac=frac, values=grad,
                                                    count=len(flatten(ts.grad)[1]))))
        lines.append("    " + w["example"].format(element=step.name, value=number_text(step.value)))
    indent = "      " if ts.shape else "    "
    lines.append(indent + _element_chain(w, key, step))
    lines.append(indent + _meaning(t, key, step))
    lines.append(indent + _check(t, key, step))
    return lines


def _link_text(w: dict, ex: TensorExplanation, ts: TensorStep, link: Link) -> str:
    text = w["link"].format(consumer=link.consumer, formula=_formula_of(ex, link.consumer),
                            name=ts.name, jacobian=shape_text(link.jacobian))
    if link.nonzero is None or not ts.shape:
        return text
    low, high = link.reach
    reach = str(low) if low == high else w["reach"].format(low=low, high=high)
    return text + w["sparse"].format(consumer=link.consumer, reach=reach,
                                     size=math.prod(ts.shape), name=ts.name,
                                     nonzero=f"{link.nonzero:,}",
                                     total=f"{math.prod(link.jacobian):,}")


def _row(graph: Graph, out: str) -> str:
    """What the backward pass differentiates: the output, or row i of a tensor output's Jacobian."""
    return f"{out}[i]" if graph.shape_of(out) else out


def _value_of(ex: TensorExplanation, name: str):
    if name in ex.coords:
        return ex.coords[name]
    return ex.inputs.get(name) or next(v for n, _, v in ex.forward if n == name)


def _formula_of(ex: TensorExplanation, name: str) -> str:
    return next(f for n, f, _ in ex.forward if n == name)


def _vjp_lines(w: dict, frac: str, links: list[Link]) -> list[str]:
    if len(links) == 1:
        link = links[0]
        return [w["vjp"].format(frac=frac, formula=link.formula) if link.formula is not None
                else w["vjp_long"].format(frac=frac, terms=link.terms)]
    lines = [w["vjp_part"].format(consumer=link.consumer, formula=link.formula
                                  if link.formula is not None else "…") for link in links]
    return lines + [w["vjp_sum"].format(frac=frac, count=len(links))]


def _element_chain(w: dict, out: str, step: Step) -> str:
    """The chain-rule sum at one element; past MAX_TERMS terms, the first ones and the count."""
    if len(step.paths) <= MAX_TERMS:
        return _chain(out, step)
    shown = step.paths[:MAX_TERMS - 1]
    symbols = " + ".join(f"d{out}/d{p.consumer} · d{p.consumer}/d{step.name}" for p in shown)
    numbers = " + ".join(f"{_factor(p.outer)} · {_factor(p.local)}" for p in shown)
    count = w["terms"].format(count=len(step.paths))
    return (f"d{out}/d{step.name} = {symbols} + … = {numbers} + … ({count}) = "
            f"{number_text(step.grad)}")


def _quadrature_lines(w: dict, graph: Graph, q: Quadrature) -> list[str]:
    n = len(q.weights) - 1
    lines = [w["integral"].format(node=q.node, formula=graph.formulas[q.node],
                                  integrand=q.integrand, x=q.samples),
             "  " + w["weights"].format(x=q.samples, n=n, m=n - 1),
             "  " + w["here"].format(weights=_weights_text(q.weights))]
    if q.function is None:
        return lines + [w["integrand_only"].format(node=q.node)]
    lines.append(w["functional"].format(f=q.function, derivative=q.derivative))
    if q.local is not None:
        weight = q.weights[q.index]
        text = w["functional_sum"].format(node=q.node, f=q.function, derivative=q.derivative,
                                          i=q.index, w=number_text(weight),
                                          local=number_text(q.local),
                                          product=number_text(weight * q.local))
        if q.grad is not None:
            text += w["functional_check"].format(
                node=q.node, element=element_name(q.function, (q.index,)), grad=number_text(q.grad))
        lines.append("  " + text)
    return lines + [w["functional_limit"].format(node=q.node, f=q.function,
                                                 derivative=q.derivative, x=q.samples)]


def _weights_text(weights: list[float]) -> str:
    """w_0 = 0.01, w_1 = 0.02, …, w_50 = 0.01: a few at each end."""
    n = len(weights)
    picks = list(range(n)) if n <= 2 * MAX_WEIGHTS else \
        list(range(MAX_WEIGHTS)) + [None] + list(range(n - MAX_WEIGHTS, n))
    return ", ".join("…" if i is None else f"w_{i} = {number_text(weights[i])}" for i in picks)
