"""`gradsvc plot` for jobs with tensors (see plot.py's docstring for what is drawn).

Two kinds of panels, laid out in rows:
  - series over the grid's one varying input, as for scalar jobs: each output's value and its
    gradients; a small tensor (up to MAX_CURVES numbers) gives one line per element, w[0], w[1];
  - curves of a 1-D tensor node against its coordinate tensor, one per grid value (up to
    MAX_CURVES, evenly spaced), and the same for the gradient of each scalar output with respect to
    it where it is a wrt name.
Anything else with tensors (a matrix, a vector with no coordinate, a Jacobian) is listed as not
drawn, with why; a job where nothing is left says so in one line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.tensor_ops import shape_text
from ..errors import UsageError
from .explain import ancestors, formula_uses, number_text
from .plot import (MAX_CURVES, MAX_KINK_SCAN, MAX_LINE_POINTS, PANEL_H, PANEL_W, Drawn, Grids,
                   _legend_and_title, _save, line_points, pyplot)

COLORS = ("#1d4ed8", "#dc2626", "#059669", "#d97706", "#7c3aed")  # one per curve (MAX_CURVES)
KINK_EVALUATIONS = 20 * MAX_KINK_SCAN  # scalar-view nodes x points the kink scan may evaluate


@dataclass
class Panel:
    title: str
    x_name: str
    x: np.ndarray
    lines: list  # (legend label or None, y values)
    kinks: np.ndarray | None = None  # over the grid: where an op sits on a kink


def plot_tensors(grids: Grids, out) -> Drawn:
    """Draw a tensor job's series and curves into `out`; or say in one line why there are none."""
    varying = grids.varying
    if len(varying) > 1:
        raise UsageError(f"'{grids.name}' has a {grids.mode} grid over {len(varying)} varying "
                         "inputs; plot draws 1-D grids (one input varies) for jobs with tensors",
                         hint="fix all but one input to a single value, or open a `gradsvc "
                         "batch` result with gradsvc.load_result (an xarray Dataset)")
    x_name = varying[0] if varying else None
    step = max(1, math.ceil(_points(grids) / MAX_LINE_POINTS))
    shown = line_points(grids.axes[x_name], step) if x_name else np.arange(_points(grids))
    skipped: list[str] = []
    rows = _series_rows(grids, x_name, shown, skipped) if x_name else []
    curves = _curve_panels(grids, x_name, skipped)
    if not rows and not curves:
        raise _nothing(grids, x_name, skipped)
    kinks = _kink_mask(grids, shown) if rows else np.zeros(len(shown), dtype=bool)
    drawn = Drawn("1-D" if x_name else "single-point", (x_name,) if x_name else (), len(shown),
                  step, [], {}, None if kinks is None else int(kinks.sum()),
                  [p.title for p in curves], skipped)
    for row in rows:
        for panel in row:
            panel.kinks = kinks
    _draw(grids, rows + _in_rows(curves, max([len(r) for r in rows], default=2)), drawn, out)
    return drawn


def _points(grids: Grids) -> int:
    return math.prod(len(a) for a in grids.axes.values()) if grids.mode == "product" else \
        max([len(a) for a in grids.axes.values()], default=1)


def _nothing(grids: Grids, x_name: str | None, skipped: list[str]) -> UsageError:
    why = f" ({'; '.join(skipped)})" if skipped else ""
    if x_name is None:
        return UsageError(f"'{grids.name}' is a single point, and none of its tensors is a 1-D "
                          f"node with a coordinate tensor{why}: there is nothing to plot over",
                          hint="a curve needs a sorted 1-D tensor input of the node's length that "
                          "it is computed from, like s in u: a * sin(pi * s); `gradsvc explain` "
                          "walks through the point, `gradsvc graph` draws it")
    return UsageError(f"'{grids.name}' has nothing plot can draw over {x_name}{why}",
                      hint="plot draws scalar outputs, small tensors element by element and 1-D "
                      "tensor nodes against a coordinate tensor")


# --- series over the grid ---

def _series_rows(grids: Grids, x_name: str, shown: np.ndarray, skipped: list[str]) -> list:
    g = grids.graph
    uses = formula_uses(g)
    x = grids.axes[x_name][shown]
    rows = []
    for o in g.outputs:
        value = grids.values.get(o)
        row = []
        if value is not None and _small(value):
            row.append(Panel(o, x_name, x, _element_lines(o, value[shown])))
        elif value is not None and not _is_curve(grids, o):
            skipped.append(f"{o}: {shape_text(value.shape[1:])}, more than {MAX_CURVES} numbers")
        if not g.shape_of(o):
            for w in (w for w in g.wrt if w != o and w in ancestors(g, o, uses)):
                grad = grids.grads[o][w]
                if _small(grad):
                    row.append(Panel(f"d{o}/d{w}", x_name, x, _element_lines(w, grad[shown])))
                elif not _is_curve(grids, w):
                    skipped.append(f"d{o}/d{w}: {shape_text(grad.shape[1:])}, more than "
                                   f"{MAX_CURVES} numbers and no coordinate")
        elif g.wrt:
            skipped.append(f"the Jacobians of {o} (a tensor output)")
        if row:
            rows.append(row)
    return rows


def _small(array: np.ndarray) -> bool:
    return math.prod(array.shape[1:]) <= MAX_CURVES


def _element_lines(name: str, data: np.ndarray) -> list:
    """One line for a scalar; one per element, labelled w[0], w[1], for a small tensor."""
    data = np.asarray(data, dtype=np.float64)
    if data.ndim == 1:
        return [(None, data)]
    flat = data.reshape(len(data), -1)
    shape = data.shape[1:]
    return [(f"{name}[{','.join(map(str, np.unravel_index(k, shape)))}]", flat[:, k])
            for k in range(flat.shape[1])]


# --- curves against a coordinate tensor ---

def coordinate(grids: Grids, name: str) -> str | None:
    """The tensor input a 1-D node is drawn against: sorted, of the node's length, one of the
    inputs it is computed from; one that a trapz integrates over first."""
    g = grids.graph
    shape = g.shape_of(name)
    if len(shape) != 1:
        return None
    used = ancestors(g, name, formula_uses(g))
    found = [t for t in g.tensor_inputs if t in used and t != name and
             _is_axis(grids.tensors.get(t), shape[0])]
    integrated = {n.args[1] for n in g.nodes if n.op == "trapz"}
    found.sort(key=lambda t: t not in integrated)
    return found[0] if found else None


def _is_axis(values, length: int) -> bool:
    if values is None or values.ndim != 1 or len(values) != length or length < 2:
        return False
    steps = np.diff(values)
    return bool(np.all(steps > 0) or np.all(steps < 0))


def _is_curve(grids: Grids, name: str) -> bool:
    return name in grids.graph.named and coordinate(grids, name) is not None


def _curve_panels(grids: Grids, x_name: str | None, skipped: list[str]) -> list[Panel]:
    g = grids.graph
    panels = []
    for name in g.named:
        if not g.shape_of(name):
            continue
        c = coordinate(grids, name)
        if c is None:
            why = "not 1-D" if len(g.shape_of(name)) != 1 else "no coordinate tensor"
            if not _small_node(grids, name):
                skipped.append(f"{name} {shape_text(g.shape_of(name))}: {why}")
            continue
        panels += _curves_of(grids, name, c, x_name, skipped)
    return panels


def _small_node(grids: Grids, name: str) -> bool:
    """A small output is drawn over the grid already (one line per element)."""
    return name in grids.graph.outputs and math.prod(grids.graph.shape_of(name)) <= MAX_CURVES \
        and bool(grids.varying)


def _curves_of(grids: Grids, name: str, c: str, x_name: str | None, skipped: list[str]) -> list:
    values = grids.nodes.get(name, grids.values.get(name))
    picks = _picks(_points(grids))
    coord = np.asarray(grids.tensors[c], dtype=np.float64)
    panels = []
    if values is None:
        skipped.append(f"{name}: value not kept")
    else:
        panels.append(Panel(f"{name} against {c}", c, coord, _grid_lines(grids, x_name, values,
                                                                         picks)))
    for o in grids.graph.outputs:
        if name in grids.grads.get(o, {}) and not grids.graph.shape_of(o):
            panels.append(Panel(f"d{o}/d{name} against {c}", c, coord,
                                _grid_lines(grids, x_name, grids.grads[o][name], picks)))
    return panels


def _picks(points: int) -> list[int]:
    return sorted({int(round(k)) for k in np.linspace(0, points - 1, min(points, MAX_CURVES))})


def _grid_lines(grids: Grids, x_name: str | None, data: np.ndarray, picks: list[int]) -> list:
    """One curve per picked grid point, labelled with its value of the varying input."""
    data = np.asarray(data, dtype=np.float64)
    if x_name is None:
        return [(None, data[0])]
    axis = grids.axes[x_name]
    return [(f"{x_name} = {number_text(float(axis[p]))}", data[p]) for p in picks]


def _in_rows(panels: list[Panel], columns: int) -> list[list[Panel]]:
    return [panels[k:k + columns] for k in range(0, len(panels), columns)]


# --- kinks over the grid: the reference's scalar view at each drawn point ---

def _kink_mask(grids: Grids, shown: np.ndarray) -> np.ndarray | None:
    """Which drawn grid points have an op exactly on a kink (None: too much work to check)."""
    g = grids.graph
    mask = np.zeros(len(shown), dtype=bool)
    if not any(n.primitive is not None and getattr(n.primitive, "branch", None) is not None
               for n in g.nodes):
        return mask
    from ..reference.backprop import forward
    from ..reference.scalarize import scalarize
    view = scalarize(g, grids.tensors)
    kinked = [n for n in view.graph.nodes if n.primitive is not None and n.primitive.branch]
    if len(shown) * len(view.graph.nodes) > KINK_EVALUATIONS:
        return None
    for i, p in enumerate(shown):
        point = {n: float(a[p] if len(a) > 1 else a[0]) for n, a in grids.axes.items()}
        values = forward(view.graph, view.point(point))
        mask[i] = any(n.primitive.at_kink(*(values[a] for a in n.args)) for n in kinked)
    return mask


# --- drawing ---

def _draw(grids: Grids, rows: list[list[Panel]], drawn: Drawn, out) -> None:
    plt = pyplot()
    columns = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), columns, squeeze=False,
                             figsize=(PANEL_W * columns, PANEL_H * len(rows)))
    try:
        for row, panels in zip(axes, rows):
            for ax in row[len(panels):]:
                ax.set_axis_off()
            for ax, panel in zip(row, panels):
                _draw_panel(ax, panel, drawn)
        _legend_and_title(fig, grids, drawn, "dotted line: kink",
                          unscanned="kinks not marked: too many points for the reference")
        _save(fig, out)
    finally:  # a drawing that failed leaves no figure open in pyplot
        plt.close(fig)


def _draw_panel(ax, panel: Panel, drawn: Drawn) -> None:
    bad_total = 0
    for k, (label, y) in enumerate(panel.lines):
        y = np.asarray(y, dtype=np.float64)
        ax.plot(panel.x, np.where(np.isfinite(y), y, np.nan), linewidth=1.2,
                color=COLORS[k % len(COLORS)], label=label)
        bad = ~np.isfinite(y)
        bad_total += int(bad.sum())
        if bad.any():
            ax.plot(panel.x[bad], np.zeros(bad.sum()), "x", color="#dc2626", markersize=6,
                    transform=ax.get_xaxis_transform(), clip_on=False)
    if panel.kinks is not None:
        for k in panel.x[panel.kinks]:
            ax.axvline(k, color="#6b7280", linestyle=":", linewidth=1)
    if any(label for label, _ in panel.lines):
        ax.legend(fontsize=6)
    drawn.panels.append(panel.title)
    drawn.nonfinite[panel.title] = bad_total
    ax.set_title(panel.title + (f"  ({bad_total} non-finite)" if bad_total else ""), fontsize=9,
                 parse_math=False)
    ax.set_xlabel(panel.x_name, fontsize=8, parse_math=False)
    ax.tick_params(labelsize=7)


def tensor_summary(drawn: Drawn) -> str:
    """What the CLI prints after drawing a tensor job."""
    where = (f"{drawn.kind} plot over {' x '.join(drawn.over)}" if drawn.over else
             "plot at a single point")
    bad = sum(drawn.nonfinite.values())
    return (f"{where}, {len(drawn.panels)} panels"
            + (f" ({len(drawn.curves)} against a coordinate tensor)" if drawn.curves else "")
            + (f", {drawn.points:,} points" if drawn.over else "")
            + (f" (1 in {drawn.step} drawn)" if drawn.step > 1 else "")
            + (f", {bad} non-finite marked" if bad else "")
            + (f", {drawn.kinks} on a kink" if drawn.kinks else "")
            + (f"; not drawn: {'; '.join(drawn.skipped)}" if drawn.skipped else ""))
