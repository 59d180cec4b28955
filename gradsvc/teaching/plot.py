"""`gradsvc plot`: values and gradients over the grid, from a job file or a finished result folder.

1-D grids (one input varies): each output's value and each of its gradients against that input.
2-D product grids (two inputs vary): heatmaps of each output's value and of its gradient with
respect to each input. Points where a value or gradient is not finite are marked (red ×), and so
are points where an op sits exactly on a kink (dotted lines in 1-D, black dots in 2-D); kinks are
found by the reference's forward pass at the drawn points, so a result folder needs no rerun.
Large grids are thinned to at most MAX_LINE_POINTS (1-D) or MAX_SIDE_CELLS per side (2-D), and the
title says so.

Jobs with tensors (plot_tensors): over a 1-D grid, each scalar output and its gradients as above (a
gradient with respect to a small tensor, one line per element); and every 1-D tensor node with a
coordinate tensor, one curve per grid value (up to MAX_CURVES), against that coordinate: u against
s for u: a * sin(pi * s). A coordinate is a sorted 1-D tensor input of the node's length that the
node is computed from (data columns are not sorted, so residuals are not drawn against them). Where
the node is a wrt name, the gradient of each scalar output with respect to it is drawn the same
way: for an integral by trapz, the discrete functional derivative.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .explain import ancestors, formula_uses
from ..core.ir import Graph

MAX_LINE_POINTS = 100_000
MAX_SIDE_CELLS = 1_000
MAX_KINK_SCAN = 200_000  # drawn points the reference checks for kinks (a Python loop)
MAX_CURVES = 5  # grid values drawn as curves of a tensor node (evenly spaced over the grid)
PANEL_W, PANEL_H = 3.2, 2.5  # inches


@dataclass
class Grids:
    """What a plot needs, from a run or from a result folder."""
    name: str
    mode: str
    axes: dict[str, np.ndarray]  # every input's axis, in grid order
    values: dict[str, np.ndarray]  # outputs' values over the grid (those that were kept)
    grads: dict[str, dict[str, np.ndarray]]
    graph: Graph
    nodes: dict[str, np.ndarray] = field(default_factory=dict)  # kept named nodes (tensor jobs)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)  # tensor inputs, one point's

    @property
    def varying(self) -> list[str]:
        return [n for n, a in self.axes.items() if len(a) > 1]


def from_job(job) -> Grids:
    from ..api import run
    g = job.graph
    # a tensor job's curves are of named nodes, not only outputs: keep them all (at one point
    # each is a small tensor; MAX_RESULT_BYTES still bounds the run)
    result = run(job, keep_values="all" if g.has_tensors else "outputs")
    nodes = {n: result.values[n] for n in g.named if n in result.values} if g.has_tensors else {}
    return Grids(job.name, job.grid.mode, {a.name: a.values for a in job.grid.axes},
                 {o: result.values[o] for o in g.outputs}, result.grads, g, nodes,
                 dict(job.grid.tensors))


def from_folder(folder: Path) -> Grids:
    """What a plot needs from a finished result's store (read, not recomputed)."""
    from ..job.spec import job_from_dict
    from ..storage.dataset import per_point, point_coordinate
    from ..storage.store import load_result
    if (folder / "batch.json").is_file():
        jobs = sorted(p.name for p in folder.iterdir() if (p / "summary.json").is_file())
        raise UsageError(f"{folder} holds a whole batch; plot one job's folder inside it",
                         hint=f"e.g. {folder / jobs[0]}" if jobs else "run `gradsvc batch` first")
    ds = load_result(folder)
    s = ds.attrs
    if "stats" in s:
        raise UsageError(f"{folder} holds statistics only (keep: stats): no per-point arrays "
                         "to plot", hint="its summary.json has them under \"stats\"; rerun the "
                         "job with keep: arrays (a smaller grid) to plot it")
    inputs = s["grid"]["inputs"]
    tensors = {n: ds[n].values for n in s.get("tensor_inputs", [])}
    # the graph only: tensor inputs need their shapes here, their values come from the store
    placeholders = {n: {"tensor": {"uniform": [0.0, 1.0], "shape": list(t.shape), "seed": 0}}
                    for n, t in tensors.items()}
    job = job_from_dict({"name": s["name"], "inputs": {**{n: 0.0 for n in inputs}, **placeholders},
                         "graph": s["formulas"], "outputs": s["outputs"], "wrt": s["wrt"]})
    values = {o: per_point(ds, o) for o in s["outputs"] if o in ds}
    values.update({n: point_coordinate(ds, n) for n in inputs if n in s["outputs"]})
    grads = {o: {w: per_point(ds, f"d{o}.d{w}") for w in s["wrt"]} for o in s["outputs"]}
    nodes = {n: per_point(ds, n) for n in s["nodes"] if n in job.graph.named} if tensors else {}
    axes = {n: np.atleast_1d(ds[n].values) for n in inputs}
    return Grids(s["name"], s["grid"]["mode"], axes, values, grads, job.graph, nodes, tensors)


@dataclass
class Drawn:
    """What a plot shows: for the CLI's message and for tests."""
    kind: str  # "1-D" or "2-D"
    over: tuple[str, ...]  # the varying inputs
    points: int  # drawn points (or cells)
    step: int  # every step-th point drawn along each axis
    panels: list[str]  # titles, row by row
    nonfinite: dict[str, int]  # panel -> points marked not finite
    kinks: int | None  # drawn points on a kink (None: too many points to check)
    curves: list[str] = field(default_factory=list)  # tensor panels drawn against a coordinate
    skipped: list[str] = field(default_factory=list)  # tensor nodes not drawn, and why

    def __str__(self) -> str:
        if self.curves or self.skipped:
            from .plot_tensors import tensor_summary
            return tensor_summary(self)
        bad = sum(self.nonfinite.values())
        return (f"{self.kind} plot over {' x '.join(self.over)}, {len(self.panels)} panels, "
                f"{self.points:,} points" + (f" (1 in {self.step} drawn)" if self.step > 1 else "")
                + (f", {bad} non-finite marked" if bad else "")
                + (f", {self.kinks} on a kink" if self.kinks else ""))


def plot(grids: Grids, out: Path) -> Drawn:
    """Draw the grids into `out` (.png, .svg or .pdf); returns what was drawn."""
    suffix = out.suffix.lower()
    if suffix not in (".png", ".svg", ".pdf"):
        raise UsageError(f"cannot write a plot as '{suffix or out.name}'",
                         hint="name the --out file with .png, .svg or .pdf")
    varying = grids.varying
    if grids.graph.has_tensors:
        from .plot_tensors import plot_tensors
        return plot_tensors(grids, out)
    if len(varying) == 1:
        return _plot_1d(grids, varying[0], out)
    if len(varying) == 2 and grids.mode == "product":
        return _plot_2d(grids, varying, out)
    if not varying:
        raise UsageError(f"'{grids.name}' is a single point: there is nothing to plot over",
                         hint="`gradsvc explain` walks through that point, `gradsvc graph` draws it")
    shape = f"a {grids.mode} grid over {len(varying)} varying inputs"
    raise UsageError(f"'{grids.name}' has {shape}; plot draws 1-D grids (one input varies) and "
                     "2-D product grids (two vary)",
                     hint="use `gradsvc explain --point I` for single points, or open a "
                     "`gradsvc batch` result with gradsvc.load_result (an xarray Dataset)")


# --- 1-D ---

def _plot_1d(grids: Grids, x_name: str, out: Path) -> Drawn:
    plt = pyplot()
    x_axis = grids.axes[x_name]
    step = max(1, math.ceil(len(x_axis) / MAX_LINE_POINTS))
    shown = line_points(x_axis, step)
    x = x_axis[shown]
    scanned = _kink_mask(grids, _coords_1d(grids, x_name, shown))
    kinks = scanned if scanned is not None else np.zeros(len(shown), dtype=bool)
    g = grids.graph
    uses = formula_uses(g)
    wrt = {o: [w for w in g.wrt if w != o and w in ancestors(g, o, uses)] for o in g.outputs}
    columns = 1 + max(len(w) for w in wrt.values())
    fig, panels = plt.subplots(len(g.outputs), columns, squeeze=False,
                               figsize=(PANEL_W * columns, PANEL_H * len(g.outputs)))
    try:
        drawn = Drawn("1-D", (x_name,), len(x), step, [], {}, None if scanned is None else
                      int(kinks.sum()))
        for ax, label, data in _panels(panels, grids, wrt, drawn):
            y = np.asarray(data[shown], dtype=np.float64)
            ax.plot(x, np.where(np.isfinite(y), y, np.nan), linewidth=1.2, color="#1d4ed8")
            for k in x[kinks]:
                ax.axvline(k, color="#6b7280", linestyle=":", linewidth=1)
            bad = ~np.isfinite(y)
            if bad.any():
                ax.plot(x[bad], np.zeros(bad.sum()), "x", color="#dc2626", markersize=6,
                        transform=ax.get_xaxis_transform(), clip_on=False)
            _label(ax, label, bad, drawn, x_name)
        _legend_and_title(fig, grids, drawn, "dotted line: kink")
        _save(fig, out)
    finally:  # a drawing that failed leaves no figure open in pyplot
        plt.close(fig)
    return drawn


def line_points(x_axis: np.ndarray, step: int) -> np.ndarray:
    """The indices drawn on a 1-D plot: every step-th point, in increasing order of the input (a
    zip grid of random samples is not sorted, and a line through it would zigzag)."""
    shown = np.arange(0, len(x_axis), step)
    return shown[np.argsort(x_axis[shown], kind="stable")]


def _coords_1d(grids: Grids, x_name: str, shown: np.ndarray) -> dict[str, np.ndarray]:
    return {n: (a[shown] if n == x_name else np.full(len(shown), a[0])) for n, a in grids.axes.items()}


# --- 2-D ---

def _plot_2d(grids: Grids, names: list[str], out: Path) -> Drawn:
    plt = pyplot()
    shape = tuple(len(a) for a in grids.axes.values())
    pos = [list(grids.axes).index(n) for n in names]
    steps = [max(1, math.ceil(shape[p] / MAX_SIDE_CELLS)) for p in pos]
    picks = [np.arange(0, shape[p], s) for p, s in zip(pos, steps)]
    index = _flat_index(shape, pos, picks)  # (nx, ny) flat grid indices of the drawn cells
    xs, ys = (grids.axes[n][p] for n, p in zip(names, picks))
    coords = {n: (a[picks[names.index(n)]] if n in names else np.array([a[0]]))
              for n, a in grids.axes.items()}
    mesh = np.meshgrid(*(coords[n] for n in grids.axes), indexing="ij")
    scanned = _kink_mask(grids, {n: m.ravel() for n, m in zip(grids.axes, mesh)})
    kinks = (scanned if scanned is not None else np.zeros(index.size, dtype=bool)
             ).reshape(index.shape)
    g = grids.graph
    wrt_inputs = [w for w in g.wrt if w in g.inputs]
    columns = 1 + len(wrt_inputs)
    fig, panels = plt.subplots(len(g.outputs), columns, squeeze=False,
                               figsize=(PANEL_W * 1.2 * columns, PANEL_H * 1.2 * len(g.outputs)))
    try:
        drawn = Drawn("2-D", tuple(names), index.size, max(steps), [], {},
                      None if scanned is None else int(kinks.sum()))
        mx, my = np.meshgrid(xs, ys, indexing="ij")
        for ax, label, data in _panels(panels, grids, {o: wrt_inputs for o in g.outputs}, drawn):
            z = np.asarray(data, dtype=np.float64)[index]
            bad = ~np.isfinite(z)
            image = ax.pcolormesh(xs, ys, np.ma.masked_invalid(z).T, shading="nearest", cmap="viridis")
            fig.colorbar(image, ax=ax).ax.tick_params(labelsize=7)
            if bad.any():
                ax.plot(mx[bad], my[bad], "x", color="#dc2626", markersize=4)
            if kinks.any():
                ax.plot(mx[kinks], my[kinks], ".", color="black", markersize=3)
            _label(ax, label, bad, drawn, names[0])
            ax.set_ylabel(names[1], fontsize=8, parse_math=False)
        _legend_and_title(fig, grids, drawn, "black dot: kink")
        _save(fig, out)
    finally:  # a drawing that failed leaves no figure open in pyplot
        plt.close(fig)
    return drawn


def _flat_index(shape: tuple, pos: list[int], picks: list[np.ndarray]) -> np.ndarray:
    digits = [np.zeros(1, dtype=np.int64) for _ in shape]
    digits[pos[0]], digits[pos[1]] = picks
    grids = np.meshgrid(*digits, indexing="ij")
    flat = np.ravel_multi_index(tuple(grids), shape)
    return flat.reshape(len(picks[0]), len(picks[1]))


# --- shared ---

def _panels(panels, grids: Grids, wrt: dict[str, list[str]], drawn: Drawn):
    """(axes, label, data) for each drawn panel: per output (a row), its value, then d/d(each
    name in wrt[output]); a value that was not kept says so, and unused panels are blank."""
    for row, o in enumerate(grids.graph.outputs):
        series = [(o, grids.values.get(o))] + [(f"d{o}/d{w}", grids.grads[o][w]) for w in wrt[o]]
        for ax in panels[row][len(series):]:
            ax.set_axis_off()
        for ax, (label, data) in zip(panels[row], series):
            if data is None:
                ax.set_axis_off()
                ax.set_title(f"{label}: value not kept", fontsize=9, parse_math=False)
                continue
            drawn.panels.append(label)
            yield ax, label, data


def _label(ax, label: str, bad: np.ndarray, drawn: Drawn, x_name: str) -> None:
    """Title (with its count of non-finite points, also kept in `drawn`), x label, tick size."""
    drawn.nonfinite[label] = int(bad.sum())
    ax.set_title(label + (f"  ({int(bad.sum())} non-finite)" if bad.any() else ""), fontsize=9,
                 parse_math=False)
    ax.set_xlabel(x_name, fontsize=8, parse_math=False)
    ax.tick_params(labelsize=7)


def _kink_mask(grids: Grids, coords: dict[str, np.ndarray]) -> np.ndarray | None:
    """Which points have an op exactly on a kink: the reference's forward pass at each point
    (only for graphs that have kinked ops). None when there are too many points to check."""
    from ..reference.backprop import forward
    g = grids.graph
    kinked = [n for n in g.nodes if n.primitive is not None and n.primitive.branch is not None]
    n_points = len(next(iter(coords.values())))
    mask = np.zeros(n_points, dtype=bool)
    if not kinked:
        return mask
    if n_points > MAX_KINK_SCAN:
        return None
    names = list(coords)
    for i in range(n_points):
        values = forward(g, {n: float(coords[n][i]) for n in names})
        mask[i] = any(n.primitive.at_kink(*(values[a] for a in n.args)) for n in kinked)
    return mask


def _legend_and_title(fig, grids: Grids, drawn: Drawn, kink_words: str,
                      unscanned: str = f"kinks not marked: over {MAX_KINK_SCAN:,} points") -> None:
    notes = (["red ×: not finite"] if any(drawn.nonfinite.values()) else [])
    notes += [kink_words] if drawn.kinks else []
    if drawn.kinks is None:
        notes.append(unscanned)
    if drawn.step > 1:
        notes.append(f"1 point in {drawn.step} drawn")
    # plain text: a job's name is the sender's, and a `$` in it would start matplotlib's math text
    fig.suptitle(grids.name + (f"   ({'; '.join(notes)})" if notes else ""), fontsize=10,
                 parse_math=False)
    fig.tight_layout()


def pyplot():
    """matplotlib's pyplot, drawing off-screen, with SVG ids that do not change from run to run."""
    import matplotlib
    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "gradsvc"
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out: Path) -> None:
    """Write the figure (its caller closes it, however the drawing ends)."""
    fig.savefig(out, dpi=110, metadata=None if out.suffix.lower() == ".png" else {"Date": None})
