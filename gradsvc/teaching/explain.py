"""`gradsvc explain`: the seed notebook's lesson, written out for any graph at one grid point.

For one point it runs the reference (float64, standard library only) and, for every output, walks
the user-visible names backwards from the output, each after every name that uses it, and writes
what the notebook wrote by hand: the value, the local derivatives, the chain-rule product with
numbers ("de/da = de/dc · dc/da = 4 · 3 = 12", a sum where several paths meet), what it means, and
the notebook's check: bump the name by one and recompute. The bump is exact only where the output
is affine in that name (decided from the graph, not guessed from numbers); elsewhere a small-step
central difference is shown beside it.

Local derivatives are taken between visible names: d(consumer)/d(name) differentiates the
consumer's whole formula with the other names held fixed, so a formula of many operations still
reads as one step.

A graph with tensors is explained by `explain_tensors`: per name, the vector-Jacobian products
that carry the gradient back (written as formulas by `vjp_text`), then the same walk as here at one
element of the reference's scalar view; its `steps` are those elements' `Step`s.
"""
from __future__ import annotations

import io
import math
import tokenize
from dataclasses import asdict, dataclass, field

from ..errors import UsageError
from ..core.ir import Graph
from ..reference.backprop import backward, forward, run_point
from ..job.grid import CLI_SPELLING, Spelling
from ..job.spec import as_job
from ..job.tensors import is_number

LANGS = ("en", "id")
CENTRAL_STEP = 1e-6  # relative step of the central difference shown where a bump is not exact

NONE, AFFINE, NONLINEAR = 0, 1, 2  # how a node depends on one chosen name


@dataclass
class Path:
    """One way `name` reaches the output: through `consumer`, whose formula uses it."""
    consumer: str
    outer: float  # d output / d consumer
    local: float  # d consumer / d name
    local_text: str | None  # the local derivative as a formula, when the consumer is one operation


@dataclass
class Step:
    name: str
    value: float
    grad: float  # d output / d name, from the reference backprop
    output_value: float
    paths: list[Path] = field(default_factory=list)
    affine: bool = True  # whether the output is affine in this name (the bump is then exact)
    bumped: float | None = None  # the output with this name raised by one, downstream recomputed
    central: float | None = None  # central difference with a small step (where not affine)


@dataclass
class Explanation:
    job: str
    point: int
    points: int
    coords: dict[str, float]
    lang: str
    forward: list[tuple[str, str, float]]  # (name, formula, value) in evaluation order
    steps: dict[str, list[Step]]  # per output, in the order explained
    unused: dict[str, list[str]]  # per output: visible names it does not depend on
    kinks: list[str]  # user names whose formula sits on a kink at this point
    text: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def explain(job, point: int = 0, lang: str = "en") -> Explanation:
    """The chain-rule explanation of every output at grid point `point`; `.text` is the words.

    Args:
      job: a job file path, YAML text, a dict shaped like a job file, or a loaded `Job`.
      point: the grid point's index.
      lang: "en" (English) or "id" (Indonesian, the seed notebook's language).

    >>> from gradsvc.job.spec import job_from_text
    >>> job = job_from_text("inputs: {a: 2, b: 3, d: 4}\\ngraph: {c: a * b, e: c * d}\\noutputs: [e]")
    >>> [line.strip() for line in explain(job).text.splitlines() if "de/da =" in line]
    ['de/da = de/dc · dc/da = 4 · 3 = 12']
    """
    job = as_job(job)
    if lang not in LANGS:
        raise UsageError(f"unknown language '{lang}'", hint=f"use one of: {', '.join(LANGS)}")
    check_point(job, point)
    graph = job.graph
    if graph.has_tensors:  # the chain rule for whole tensors, then worked out at one element
        from .explain_tensors import explain_tensors
        return explain_tensors(job, point, lang)
    coords = job.grid.point(point)
    result = run_point(graph, coords)
    values = result.values
    uses = formula_uses(graph)
    users = _users(graph)
    steps, unused = {}, {}
    for out in graph.outputs:
        steps[out], unused[out] = _walk(graph, values, coords, out, uses, users)
    fwd = [(n, graph.formulas[n], values[n]) for n in graph.named]
    kinks = sorted({graph.node(n).owner for n in result.kinks})
    ex = Explanation(job.name, point, job.grid.size, coords, lang, fwd, steps, unused, kinks)
    ex.text = render(ex, graph)
    return ex


def check_point(job, point: int, spelled: Spelling = CLI_SPELLING) -> None:
    """A usage error unless `point` indexes the job's grid (for --point, or point=)."""
    size = job.grid.size
    if not 0 <= point < size:
        has = "only one point, 0" if size == 1 else f"{size:,} points, 0 to {size - 1:,}"
        raise UsageError(f"point {point} is outside the grid of '{job.name}' (it has {has})",
                         hint=f"choose {spelled.point} within that range")


# --- the walk ---

def _walk(graph: Graph, values: dict, coords: dict, out: str, uses: dict, users: dict
          ) -> tuple[list[Step], list[str]]:
    adjoint = backward(graph, values, out)
    order = _explain_order(graph, out, uses, users)
    local: dict[str, dict[str, float]] = {}  # consumer -> d consumer / d name, each walked once
    steps = []
    for name in order:
        step = Step(name, values[name], adjoint.get(name, 0.0), values[out])
        if name != out:
            for consumer in users[name]:
                if consumer in adjoint or consumer == out:
                    if consumer not in local:
                        local[consumer] = backward(graph, values, consumer, within=consumer)
                    step.paths.append(Path(consumer, adjoint.get(consumer, 0.0),
                                           local[consumer].get(name, 0.0),
                                           _local_text(graph, values, consumer, name)))
            step.affine = _dependence(graph, out, name) != NONLINEAR
            step.bumped = _bumped(graph, coords, out, name, values[name] + 1.0)
            if not step.affine:
                step.central = _central(graph, coords, out, name, values[name])
        steps.append(step)
    unused = [n for n in graph.visible if n not in order]
    return steps, unused


def _users(graph: Graph) -> dict[str, list[str]]:
    """For each visible name, the named nodes whose formulas use it, in graph order."""
    users: dict[str, list[str]] = {n: [] for n in graph.visible}
    for node in graph.nodes:
        for arg in node.args:
            owner = graph.node(arg).owner
            if arg in users and owner == arg and node.owner != arg and node.owner not in users[arg]:
                users[arg].append(node.owner)
    return users


def formula_uses(graph: Graph) -> dict[str, list[str]]:
    """For each named node, the visible names its formula uses, in the order they appear."""
    uses: dict[str, list[str]] = {n: [] for n in graph.named}
    for node in graph.nodes:
        if node.op in ("input", "const"):
            continue
        found = uses[node.owner]
        for arg in node.args:
            if graph.node(arg).owner == arg and arg != node.owner and arg not in found:
                found.append(arg)
    return uses


def _explain_order(graph: Graph, out: str, uses: dict, users: dict) -> list[str]:
    """The output first, then each name once every name using it (on a path to out) is done;
    among those ready, in the order formulas mention them: e, then c and d, then a and b."""
    relevant = ancestors(graph, out, uses)
    waiting = {n: sum(1 for u in users[n] if u in relevant) for n in relevant}
    order, queue = [], [out]
    while queue:
        name = queue.pop(0)
        order.append(name)
        for arg in uses.get(name, ()):
            waiting[arg] -= 1
            if waiting[arg] == 0:
                queue.append(arg)
    return order


def ancestors(graph: Graph, out: str, uses: dict | None = None) -> set[str]:
    """Visible names the output's value is computed from (and the output itself)."""
    uses = uses if uses is not None else formula_uses(graph)
    found, stack = {out}, [out]
    while stack:
        for arg in uses.get(stack.pop(), ()):
            if arg not in found:
                found.add(arg)
                stack.append(arg)
    return found


def _local_text(graph: Graph, values: dict, consumer: str, name: str) -> str | None:
    """'b' for dc/da when c = a * b: the op's partial written in the formula's own names."""
    node = graph.node(consumer)
    own = [n for n in graph.nodes if n.owner == consumer and n.op != "const"]
    if len(own) != 1 or node.op == "input":
        return None  # a formula of several operations: its local derivative is shown as a number
    shown = [number_text(graph.node(a).const) if graph.node(a).op == "const" else a for a in node.args]
    texts = [t.format(*shown) for a, t in zip(node.args, node.primitive.partial_texts) if a == name]
    return " + ".join(texts) if len(texts) > 1 else texts[0]  # x*x: d/dx = x + x


def _dependence(graph: Graph, out: str, name: str) -> int:
    """NONE, AFFINE or NONLINEAR: how `out` depends on `name`, from the ops' affine classes."""
    dep: dict[str, int] = {}
    for node in graph.nodes:
        if node.name == name:
            dep[node.name] = AFFINE
            continue
        args = [dep.get(a, NONE) for a in node.args]
        op = node.primitive
        if op is None or op.no_gradient or not any(args):
            dep[node.name] = NONE
        elif op.affine == "sum":
            dep[node.name] = max(args)
        elif op.affine == "product":
            dep[node.name] = NONLINEAR if all(args) else max(args)
        elif op.affine == "quotient":
            dep[node.name] = NONLINEAR if args[1] else args[0]
        else:
            dep[node.name] = NONLINEAR
    return dep.get(out, NONE)


def _bumped(graph: Graph, coords: dict, out: str, name: str, new_value: float) -> float:
    return forward(graph, coords, {name: new_value})[out]


def _central(graph: Graph, coords: dict, out: str, name: str, value: float) -> float:
    h = CENTRAL_STEP * max(1.0, abs(value))
    up, down = _bumped(graph, coords, out, name, value + h), _bumped(graph, coords, out, name, value - h)
    return (up - down) / (2 * h)


# --- the words ---

TEXT = {
    "en": {
        "title": "{job}, point {point} of {points}: {coords}",
        "forward": "Forward pass (values):",
        "backward": "Backward pass for {out} (chain rule, from {out} back to the inputs):",
        "self": "d{out}/d{out} = 1 (the output itself)",
        "local": "local derivative: {frac} = {text}",
        "raises": "meaning: raising {name} by one unit raises {out} by {about}{amount}",
        "lowers": "meaning: raising {name} by one unit lowers {out} by {about}{amount}",
        "flat": "meaning: a small change of {name} does not change {out} (to first order)",
        "about": "about ",
        "undefined": "meaning: {out} has no finite rate of change in {name} here",
        "check_exact": "check: {name}: {old} → {new} makes {out} {before} → {after}, {delta} "
                       "(exact: {out} is affine in {name})",
        "check_curved": "check: {name}: {old} → {new} makes {out} {before} → {after}, {delta}; "
                        "{out} is not affine in {name}, so a bump of one is only a rough guide. "
                        "A central difference with step {h} gives {central}{verdict}",
        "agrees": ", matching {frac} = {grad}",
        "differs": ", not {frac} = {grad}: a kink, a domain edge or a steep curve lies within "
                   "the step",
        "unused": "{out} does not depend on: {names}",
        "kinks": "note: at this point {names} sit{s} exactly on a kink; gradsvc uses JAX's "
                 "one-sided rule there (abs'(0) = 1, relu'(0) = 0)",
        "source": "(numbers from gradsvc's reference backprop in float64, the one every run is "
                  "checked against)",
    },
    "id": {
        "title": "{job}, titik {point} dari {points}: {coords}",
        "forward": "Perhitungan maju (nilai):",
        "backward": "Perhitungan mundur untuk {out} (aturan rantai, dari {out} kembali ke input):",
        "self": "d{out}/d{out} = 1 (output itu sendiri)",
        "local": "turunan lokal: {frac} = {text}",
        "raises": "artinya: kenaikan satu nilai dari {name} akan menaikkan nilai {out} "
                  "{about}sebesar {amount}",
        "lowers": "artinya: kenaikan satu nilai dari {name} akan menurunkan nilai {out} "
                  "{about}sebesar {amount}",
        "flat": "artinya: perubahan kecil pada {name} tidak mengubah nilai {out} (orde pertama)",
        "about": "kira-kira ",
        "undefined": "artinya: {out} tidak memiliki laju perubahan yang hingga terhadap {name} di sini",
        "check_exact": "uji: jika {name} diubah {old} → {new}, nilai {out} menjadi {before} → {after}, "
                       "{delta} (tepat: {out} affine terhadap {name})",
        "check_curved": "uji: jika {name} diubah {old} → {new}, nilai {out} menjadi {before} → {after}, "
                        "{delta}; {out} tidak affine terhadap {name}, jadi kenaikan satu nilai hanya "
                        "perkiraan kasar. Beda tengah dengan langkah {h} memberi {central}{verdict}",
        "agrees": ", sesuai dengan {frac} = {grad}",
        "differs": ", bukan {frac} = {grad}: ada kink, batas domain atau lengkung tajam di dalam "
                   "langkah itu",
        "unused": "{out} tidak bergantung pada: {names}",
        "kinks": "catatan: di titik ini {names} tepat berada pada kink; gradsvc memakai aturan "
                 "satu sisi dari JAX di sana (abs'(0) = 1, relu'(0) = 0)",
        "source": "(angka dari backprop referensi gradsvc dalam float64, acuan pemeriksaan setiap "
                  "run)",
    },
}


def number_text(x: float) -> str:
    """Numbers as people write them: 12, not 12.0; six significant digits otherwise."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.6g}"


def _factor(x: float) -> str:
    """A number inside a product: negative ones in parentheses."""
    text = number_text(x)
    return f"({text})" if text.startswith("-") else text


def _signed(x: float) -> str:
    return number_text(x) if x < 0 or not math.isfinite(x) else "+" + number_text(x)


def _substituted(formula: str, values: dict) -> str:
    """The formula with each name replaced by its value: 'a * b' -> '2 * 3'. A negative value is
    parenthesised unless it stands alone as a function's argument: '(-2) ** 2', 'sigmoid(-5.64)'."""
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(formula).readline)
                  if t.start[0] == 1 and t.type not in (tokenize.NEWLINE, tokenize.ENDMARKER)]
    except (tokenize.TokenError, SyntaxError):
        return formula
    out, last = [], 0
    for k, tok in enumerate(tokens):
        out.append(formula[last:tok.start[1]])
        last = tok.end[1]
        if tok.type != tokenize.NAME or tok.string not in values:
            out.append(tok.string)
            continue
        alone = (0 < k < len(tokens) - 1 and tokens[k - 1].string in "(," and
                 tokens[k + 1].string in "),")
        value = values[tok.string]
        out.append(number_text(value) if alone else _factor(value))
    return "".join(out).strip()


def render(ex: Explanation, graph: Graph) -> str:
    t = TEXT[ex.lang]
    coords = ", ".join(f"{n} = {number_text(v)}" for n, v in ex.coords.items())
    lines = [t["title"].format(job=ex.job, point=ex.point, points=f"{ex.points:,}", coords=coords)]
    if ex.forward:
        lines += ["", t["forward"]]
        values = {**ex.coords, **{n: v for n, _, v in ex.forward}}
        for name, formula, value in ex.forward:
            if is_number(formula):  # `k: 3`
                lines.append(f"  {name} = {number_text(value)}")
                continue
            shown = _substituted(formula, values)
            middle = f" = {shown}" if shown not in (formula, number_text(value)) else ""
            lines.append(f"  {name} = {formula}{middle} = {number_text(value)}")
    for out, steps in ex.steps.items():
        lines += ["", t["backward"].format(out=out)]
        for step in steps:
            lines += _step_lines(t, graph, out, step)
        if ex.unused[out]:
            lines.append("  " + t["unused"].format(out=out, names=", ".join(ex.unused[out])))
    if ex.kinks:
        lines += ["", t["kinks"].format(names=", ".join(ex.kinks), s="s" if len(ex.kinks) == 1 and
                                        ex.lang == "en" else "")]
    lines += ["", t["source"]]
    return "\n".join(lines) + "\n"


def _frac(top: str, bottom: str) -> str:
    return f"d{top}/d{bottom}"


def _step_lines(t: dict, graph: Graph, out: str, step: Step) -> list[str]:
    name, lines = step.name, [f"  {step.name} = {number_text(step.value)}"]
    if name == out:
        return lines + ["    " + t["self"].format(out=out)]
    for p in step.paths:
        if p.local_text is not None and p.local_text != number_text(p.local):
            text = f"{p.local_text} = {number_text(p.local)}"
        else:
            text = number_text(p.local)
        local = t["local"].format(frac=_frac(p.consumer, name), text=text)
        lines.append(f"    {local}   ({p.consumer} = {graph.formulas[p.consumer]})")
    lines.append("    " + _chain(out, step))
    lines.append("    " + _meaning(t, out, step))
    lines.append("    " + _check(t, out, step))
    return lines


def _chain(out: str, step: Step) -> str:
    """de/da = de/dc · dc/da = 4 · 3 = 12; a sum over paths where several meet; a path straight
    from the output is its partial derivative, written ∂z/∂a."""
    target = _frac(out, step.name)
    if len(step.paths) == 1 and step.paths[0].consumer == out:
        return f"{target} = {number_text(step.grad)}"
    symbols = " + ".join(f"∂{out}/∂{step.name}" if p.consumer == out else
                         f"{_frac(out, p.consumer)} · {_frac(p.consumer, step.name)}"
                         for p in step.paths)
    numbers = " + ".join(_factor(p.local) if p.consumer == out else
                         f"{_factor(p.outer)} · {_factor(p.local)}" for p in step.paths)
    return f"{target} = {symbols} = {numbers} = {number_text(step.grad)}"


def _meaning(t: dict, out: str, step: Step) -> str:
    g = step.grad
    if not math.isfinite(g):
        return t["undefined"].format(out=out, name=step.name)
    if g == 0:
        return t["flat"].format(out=out, name=step.name)
    about = "" if step.affine else t["about"]
    key = "raises" if g > 0 else "lowers"
    return t[key].format(name=step.name, out=out, about=about, amount=number_text(abs(g)))


def _check(t: dict, out: str, step: Step) -> str:
    fields = dict(name=step.name, out=out, old=number_text(step.value), new=number_text(step.value + 1.0),
                  before=number_text(step.output_value), after=number_text(step.bumped),
                  delta=_signed(step.bumped - step.output_value))
    if step.affine:
        return t["check_exact"].format(**fields)
    c = step.central
    close = math.isfinite(c) and math.isclose(c, step.grad, rel_tol=1e-4, abs_tol=1e-9)
    verdict = t["agrees" if close else "differs"].format(frac=_frac(out, step.name),
                                                          grad=number_text(step.grad))
    h = CENTRAL_STEP * max(1.0, abs(step.value))
    return t["check_curved"].format(**fields, h=f"{h:.2g}", central=number_text(c), verdict=verdict)
