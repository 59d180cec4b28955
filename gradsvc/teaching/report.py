"""Presentation only: a Result as a rich table or as one JSON object.

JSON has no NaN or infinity; non-finite numbers are written as the strings "nan", "inf", "-inf"
(so the output stays valid JSON for every reader, and nothing is silently turned into null).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from rich.console import Console
from rich.table import Table

from ..core.tensor_ops import shape_text

TABLE_POINTS = 8  # grids up to this many points are shown point by point; larger ones summarised
LISTED = 5  # non-finite / kink / mismatch points shown in the table view (JSON lists more)


def json_number(x: float):
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _json_array(a: np.ndarray):
    """One point: its number (or nested lists, for a tensor); several: a list over points."""
    if a.ndim > 1:
        return json_safe(a[0].tolist() if len(a) == 1 else a.tolist())
    return json_number(a[0]) if len(a) == 1 else [json_number(v) for v in a.tolist()]


def json_safe(obj):
    """Dataclasses, dicts, lists and floats -> plain JSON-able data with non-finite numbers as strings."""
    if dataclasses.is_dataclass(obj):  # field by field: asdict would deep-copy every value first
        return {f.name: json_safe(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return json_number(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def to_json(result) -> dict:
    """The `--format json` object: values and grads as numbers (one point) or lists in grid order;
    a tensor job adds each name's shape at one point and (with `order: 2`) the Hessians."""
    job = result.job
    graph = job.graph
    data = {
        "name": job.name,
        "file": job.file,
        "points": result.points,
        "grid": {"mode": job.grid.mode, "shape": list(result.shape), "inputs": list(job.grid.names)},
        "dtype": result.dtype,
        "device": result.device,
        "outputs": list(job.graph.outputs),
        "wrt": list(job.graph.wrt),
        "values": {name: _json_array(a) for name, a in result.values.items()},
        "grads": {out: {name: _json_array(a) for name, a in g.items()}
                  for out, g in result.grads.items()},
        "verify": verify_json(result.verify),
        "timings": json_safe(result.timings),
        "content_hash": job.content_hash,
        "notes": list(job.notes),
    }
    if graph.has_tensors or graph.hessian_outputs:  # a scalar job's JSON is as it was
        data["shapes"] = {name: list(graph.shape_of(name)) for name in graph.visible}
        data["hessians"] = {out: {a: {b: _json_array(h) for b, h in row.items()}
                                  for a, row in rows.items()}
                            for out, rows in result.hessians.items()}
    return data


def verify_json(report) -> dict:
    """The verification report; the tensor-only parts only where a tensor job filled them."""
    data = json_safe(report)
    for key in ("elements", "hessians", "unchecked"):
        if not data.get(key):
            data.pop(key, None)
    return data


def _plural(n: int, noun: str, every: str = "") -> str:
    return f"{every if n != 1 else ''}{n:,} {noun}{'s' * (n != 1)}"


def _fmt(x: float) -> str:
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.6g}"


def print_table(result, console: Console) -> None:
    job = result.job
    grid = f" ({job.grid.mode} {'x'.join(map(str, result.shape))})" if job.grid.axes else ""
    console.print(f"[bold]{job.name}[/bold]  {job.file}  {_plural(result.points, 'point')}{grid}"
                  f"  {result.dtype} on {result.device}")
    for note in job.notes:  # e.g. a name that Unicode normalization changed
        console.print(note, style="yellow", markup=False)
    if result.points <= TABLE_POINTS:
        for i in range(result.points):
            title = f"point {i}" if result.points > 1 else None
            _print_node_tables(result, console, title, lambda a, i=i: _cell(a[i]))
            _print_hessians(result, console, lambda a, i=i: _cell(a[i]))
    else:
        _print_node_tables(result, console, "over the grid: min .. max", _range)
        _print_hessians(result, console, _range)
    _print_verify(result, console)


SHOWN_CHARS = 36  # a tensor whose numbers fit in this many characters is shown whole in a cell


def _cell(x) -> str:
    """One point's number, or a small tensor's numbers, or a bigger one's shape and range."""
    if np.ndim(x) == 0:
        return _fmt(x)
    x = np.asarray(x)
    if x.size <= SHOWN_CHARS // 2:
        whole = np.array2string(x, separator=", ", formatter={"float_kind": _fmt, "int": _fmt},
                                max_line_width=10_000).replace("\n", "")
        if len(whole) <= SHOWN_CHARS:
            return whole
    return f"{shape_text(x.shape)} {_range(x)}"


def _range(a: np.ndarray) -> str:
    finite = a[np.isfinite(a)]
    note = f" ({a.size - len(finite)} non-finite)" if len(finite) < a.size else ""
    if len(finite) == 0:
        return "all non-finite"
    return f"{_fmt(finite.min())} .. {_fmt(finite.max())}{note}"


def _print_hessians(result, console: Console, cell) -> None:
    """With `order: 2`: each scalar output's Hessian, one row per pair of wrt names."""
    for out, rows in result.hessians.items():
        table = Table(title=f"Hessian of {out}", title_justify="left")
        table.add_column("d²/d(row) d(column)", no_wrap=True)
        names = list(rows)
        for name in names:
            table.add_column(name, justify="right", no_wrap=True)
        for a in names:
            table.add_row(a, *(cell(rows[a][b]) for b in names))
        console.print(table)


FORMULA_MIN = 12  # the formula column wraps down to this width before tables are split


def _print_node_tables(result, console: Console, title: str | None, cell) -> None:
    """One table with a gradient column per output; where that does not fit the terminal, one
    table per output instead, so that numbers are never cut or broken over lines."""
    graph = result.job.graph
    rows = [(name, graph.formulas.get(name, "input"),
             cell(result.values[name]) if name in result.values else "(not kept)",
             {o: cell(result.grads[o][name]) if name in result.grads[o] else ""
              for o in graph.outputs})
            for name in graph.visible]
    groups = [graph.outputs]
    if len(graph.outputs) > 1 and _width(rows, graph.outputs) > console.width:
        groups = [(out,) for out in graph.outputs]
    for outputs in groups:
        named = title if len(groups) == 1 else ", ".join(
            filter(None, (title, f"gradients of {outputs[0]}")))
        console.print(_node_table(rows, named, outputs))


def _width(rows, outputs) -> int:
    """The narrowest the table can be drawn: every number whole, the formula wrapped."""
    columns = [["node", *(r[0] for r in rows)], ["value", *(r[2] for r in rows)],
               *([f"d{o}/d(node)", *(r[3][o] for r in rows)] for o in outputs)]
    numbers = sum(max(map(len, column)) for column in columns)
    return numbers + FORMULA_MIN + 3 * (len(columns) + 1) + 1  # "│ " + " " per column, last "│"


def _node_table(rows, title: str | None, outputs) -> Table:
    """One row per input and node: formula, value and d(output)/d(node) for each of `outputs`.
    Numbers never wrap; a long formula does."""
    table = Table(title=title, title_justify="left")
    table.add_column("node", no_wrap=True, min_width=max(len(r[0]) for r in rows))
    table.add_column("formula", style="dim", min_width=FORMULA_MIN)
    table.add_column("value", justify="right", no_wrap=True)
    for out in outputs:
        table.add_column(f"d{out}/d(node)", justify="right", no_wrap=True)
    for name, formula, value, grads in rows:
        table.add_row(name, formula, value, *(grads[o] for o in outputs))
    return table


def _coords(coords: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in coords.items()) or "the only point"


def _print_verify(result, console: Console) -> None:
    v = result.verify
    if v.unchecked:
        console.print(f"[yellow bold]NOT CHECKED[/yellow bold] against the reference: {v.unchecked}")
        _print_timings(result, console)
        return
    mark = "[green]verified[/green]" if v.ok else "[red bold]MISMATCH[/red bold]"
    scope = f"a seeded sample of {v.checked_points:,} points" if v.sampled else \
        _plural(v.checked_points, "point", "all ")
    console.print(f"{mark}: {scope} against the pure-Python reference "
                  f"({v.compared:,} numbers, {v.mismatches} outside tolerance); "
                  f"max abs err {v.max_abs_err:.3g}, max rel err {v.max_rel_err:.3g}")
    _print_tensor_checks(v, console)
    if v.floor_note:  # fewer points than verify_min_points fitted in the budget
        console.print(f"  {v.floor_note}", style="yellow", markup=False)
    if v.worst is not None and v.max_abs_err > 0:
        w = v.worst
        console.print(f"  closest to tolerance: point {w.index} ({_coords(w.coords)}) {w.quantity}: "
                      f"|jax - reference| = {w.abs_err:.3g}, {w.abs_err / w.tolerance:.2g} of the "
                      f"tolerance {w.tolerance:.3g}")
    fd = v.fd
    console.print(f"  finite differences: {fd['checked']:,} gradients at "
                  f"{_plural(fd['checked_points'], 'point')}, "
                  f"{fd['mismatches']} mismatches, max rel err {fd['max_rel_err']:.3g}"
                  f" (skipped: {fd['skipped_kink']} across a kink, {fd['skipped_nonfinite']} non-finite, "
                  f"{fd['inconclusive']} inconclusive)")
    for item in v.mismatch_points[:LISTED]:
        console.print(f"  [red]mismatch[/red] at point {item['index']} ({_coords(item['coords'])}): "
                      f"{item['quantity']} jax={_fmt(item['jax'])} reference={_fmt(item['reference'])}")
    for item in fd["mismatch_points"][:LISTED]:
        console.print(f"  [red]fd mismatch[/red] at point {item['index']} ({_coords(item['coords'])}): "
                      f"{item['quantity']} reference={_fmt(item['reference'])} "
                      f"finite difference={_fmt(item['finite_difference'])}")
    _listing(console, "non-finite", v.nonfinite_count, v.nonfinite_points, "quantities")
    _listing(console, "on a kink", v.kink_count, v.kink_points, "nodes")
    _listing(console, f"beyond {result.dtype} range", v.overflow_count, v.overflow_points, "nodes")
    if v.ill_conditioned:
        console.print(f"  [yellow]{v.ill_conditioned} comparisons ill-conditioned (not held to a "
                      f"tolerance)[/yellow]:")
        for item in v.ill_conditioned_points[:LISTED]:
            console.print(f"    point {item['index']} ({_coords(item['coords'])}): {item['quantity']} "
                          f"jax={_fmt(item['jax'])} reference={_fmt(item['reference'])} "
                          f"({item['reason']})")
    from ..api import RECOMPILED  # loaded already: the result came from it
    t = result.timings
    if t.get("compiled_from") == RECOMPILED:
        console.print("  the kernel first used (from a cache) disagreed with the reference: it was "
                      "thrown away, and these numbers are from one compiled afresh", style="yellow",
                      markup=False)
    _print_timings(result, console)


def _print_timings(result, console: Console) -> None:
    t = result.timings
    console.print(f"  [dim]compile {t['compile_s']:.3f}s, run {t['run_s']:.3f}s, verify "
                  f"{t['verify_s']:.3f}s[/dim]")


def _print_tensor_checks(v, console: Console) -> None:
    """How much of a tensor job's numbers were compared, and its Hessian checks."""
    e, h = v.elements, v.hessians
    if e:
        console.print(f"  elements compared per point: {e['values_checked']:,} of "
                      f"{e['values_total']:,} values, {e['derivatives_checked']:,} of "
                      f"{e['derivatives_total']:,} derivatives")
        if e.get("whole_array"):
            console.print(f"  {e['whole_array']:,} entries follow JAX's whole-array convention "
                          "(0 x inf where a partial is infinite), checked against it",
                          style="yellow", markup=False)
    if h:
        console.print(f"  Hessians: {h['compared']:,} entries at {_plural(h['points'], 'point')}, "
                      f"{h['mismatches']} outside tolerance; {h['fd_checked']} checked by central "
                      f"differences of the reference gradient, {h['fd_mismatches']} mismatches"
                      + (f" ({h['fd_skipped_kink']} across a kink, skipped)"
                         if h.get("fd_skipped_kink") else ""))
        for item in h.get("mismatch_points", [])[:LISTED]:
            console.print(f"  [red]mismatch[/red] at point {item['index']} "
                          f"({_coords(item['coords'])}): {item['quantity']} "
                          f"jax={_fmt(item['jax'])} reference={_fmt(item['reference'])}")


def _listing(console: Console, label: str, count: int, points: list[dict], key: str) -> None:
    if not count:
        return
    console.print(f"  [yellow]{count} point{'s' * (count != 1)} {label}[/yellow]:")
    for item in points[:LISTED]:
        console.print(f"    point {item['index']} ({_coords(item['coords'])}): {', '.join(item[key])}")
    if count > LISTED:
        console.print(f"    ... and {count - LISTED} more (see --format json)")
