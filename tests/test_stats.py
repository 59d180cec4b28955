"""`keep: stats`: streamed statistics against numpy on grids small enough to store, merged in any
split, and through api.execute end to end."""
import json

import numpy as np
import pytest

import gradsvc
from gradsvc.api import execute
from gradsvc.engine.jacobians import derivative_keys
from gradsvc.job.spec import as_job
from gradsvc.storage.stats import (BINS, PILOT_POINTS, Column, Stats, StatsSink, histogram_edges,
                                   stats_json)

# 100 x 80 = 8,000 points: more than the pilot. df/df is 1 everywhere (every point ties, a
# zero-width pilot range); r has many equal values along x = 0 (ties broken by the smallest index)
JOB = """
name: stats-grid
inputs:
  x: {linspace: [-2.0, 2.0, 100]}
  y: {linspace: [-1.0, 3.0, 80]}
grid: product
graph:
  r: x * y - sin(x)
  f: r ** 2 + y
outputs: [f]
"""


@pytest.fixture(scope="module")
def job():
    return as_job(JOB)


@pytest.fixture(scope="module")
def stored(job):
    """The job's every array as gradsvc.run keeps them, in the layout's order."""
    result = gradsvc.run(job)
    assert result.ok and result.points == 8000
    values = [result.values[n] for n in ("r", "f")]
    derivatives = [result.grads[k[1]][k[2]] for k in derivative_keys(job.graph)]
    return values, derivatives


def _fed(job, values, derivatives, ranges, edges=None) -> Stats:
    sink = StatsSink(job, edges=edges)
    for lo, hi in ranges:
        sink.write(lo, hi, [v[lo:hi] for v in values], [d[lo:hi] for d in derivatives])
    return sink.partial()


def _ranges(cuts, size):
    bounds = [0, *cuts, size]
    return list(zip(bounds[:-1], bounds[1:]))


def _assert_like_numpy(column: Column, x: np.ndarray, edges=None):
    """One quantity's statistics against numpy on its finite values."""
    x = np.asarray(x, np.float64)
    finite = np.isfinite(x)
    masked_low, masked_high = np.where(finite, x, np.inf), np.where(finite, x, -np.inf)
    assert (column.count == finite.sum(axis=0)).all()
    scale = 1e-12 * float(np.abs(x[finite]).max(initial=0.0))
    np.testing.assert_allclose(column.mean, np.nanmean(np.where(finite, x, np.nan), axis=0),
                               rtol=1e-12, atol=scale)
    np.testing.assert_allclose(column.std, np.nanstd(np.where(finite, x, np.nan), axis=0),
                               rtol=1e-12, atol=scale)
    assert (column.min == masked_low.min(axis=0)).all()
    assert (column.max == masked_high.max(axis=0)).all()
    assert (column.argmin == masked_low.argmin(axis=0)).all()
    assert (column.argmax == masked_high.argmax(axis=0)).all()
    assert (column.nan == np.isnan(x).sum(axis=0)).all()
    assert (column.posinf == np.isposinf(x).sum(axis=0)).all()
    assert (column.neginf == np.isneginf(x).sum(axis=0)).all()
    if edges is not None:
        counts, _ = np.histogram(x[finite], bins=edges)
        assert column.histogram.tolist() == [int((x[finite] < edges[0]).sum()), *counts.tolist(),
                                             int((x[finite] > edges[-1]).sum())]


def _assert_same(a: Stats, b: Stats):
    """Equal statistics: counts, extremes and histograms exactly, mean and std to 1e-12 of the
    values' magnitude (a mean that cancels to ~0, as r's here, has no relative precision)."""
    for p, q in zip(a.columns, b.columns, strict=True):
        for field in ("count", "min", "argmin", "max", "argmax", "nan", "posinf", "neginf",
                      "edges", "histogram"):
            np.testing.assert_array_equal(getattr(p, field), getattr(q, field), err_msg=field)
        scale = 1e-12 * float(np.maximum(np.abs(q.min), np.abs(q.max)).max())
        np.testing.assert_allclose(p.mean, q.mean, rtol=1e-12, atol=scale)
        np.testing.assert_allclose(p.std, q.std, rtol=1e-12, atol=scale)


def test_one_pass_is_numpy(job, stored):
    values, derivatives = stored
    stats = _fed(job, values, derivatives, [(0, 8000)])
    arrays = values + derivatives
    for column, x in zip(stats.columns, arrays, strict=True):
        edges = histogram_edges(x[:PILOT_POINTS])
        _assert_like_numpy(column, x, edges)
    ones = stats.columns[-1]  # df/df: 1 at every point, so argmin and argmax are the first point
    assert (float(ones.min), int(ones.argmin), int(ones.argmax)) == (1.0, 0, 0)
    assert float(ones.std) == 0.0 and ones.histogram.sum() == 8000


def test_edges_come_from_the_pilot_whatever_the_chunks(job, stored):
    values, derivatives = stored
    arrays = values + derivatives
    for size in (1000, 4096, 5000, 8000):
        sink = StatsSink(job)
        for lo in range(0, 8000, size):
            hi = min(lo + size, 8000)
            sink.write(lo, hi, [v[lo:hi] for v in values], [d[lo:hi] for d in derivatives])
        for got, x in zip(sink.edges, arrays, strict=True):  # numpy's edges for the pilot
            np.testing.assert_array_equal(got, np.histogram_bin_edges(x[:PILOT_POINTS], BINS))
    assert len(sink.edges[-1]) == BINS + 1 and sink.edges[-1][0] == 0.5  # 1 widened by 0.5


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_any_chunk_size_merges_to_one_pass(job, stored, chunk):
    values, derivatives = stored
    whole = _fed(job, values, derivatives, [(0, 8000)])
    _assert_same(_fed(job, values, derivatives, _ranges(range(chunk, 8000, chunk), 8000)), whole)


def test_random_splits_in_any_order_merge_to_one_pass(job, stored):
    values, derivatives = stored
    whole = _fed(job, values, derivatives, [(0, 8000)])
    rng = np.random.default_rng(12)
    for _ in range(3):
        ranges = _ranges(np.sort(rng.choice(np.arange(1, 8000), 40, replace=False)), 8000)
        rng.shuffle(ranges)  # the pilot arrives last, or in pieces: rows wait for it
        _assert_same(_fed(job, values, derivatives, ranges), whole)


def test_parts_given_the_pilot_edges_merge_in_point_order(job, stored):
    """What the Dask executor does: a pilot sink's edges to every task, partials merged in point
    order; the same partials merged twice give the same bits."""
    values, derivatives = stored
    pilot = StatsSink(job)
    pilot.write(0, PILOT_POINTS, [v[:PILOT_POINTS] for v in values],
                [d[:PILOT_POINTS] for d in derivatives])
    parts = [_fed(job, values, derivatives, [r], edges=pilot.edges)
             for r in [(0, 3000), (3000, 3001), (3001, 8000)]]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    _assert_same(merged, _fed(job, values, derivatives, [(0, 8000)]))
    again = parts[0].merge(parts[1]).merge(parts[2])
    for p, q in zip(merged.columns, again.columns):
        assert p.mean.tobytes() == q.mean.tobytes() and p.m2.tobytes() == q.m2.tobytes()


def test_a_part_without_the_pilot_needs_edges(job, stored):
    values, derivatives = stored
    sink = StatsSink(job)
    sink.write(5000, 6000, [v[5000:6000] for v in values], [d[5000:6000] for d in derivatives])
    with pytest.raises(RuntimeError, match="edges="):
        sink.partial()
    with pytest.raises(ValueError, match="one \\(65,\\) array per scalar"):
        StatsSink(job, edges=[np.zeros(3)])


def test_rewind_forgets_everything(job, stored):
    values, derivatives = stored
    sink = StatsSink(job)
    sink.write(0, 8000, [v * 2 for v in values], [d * 2 for d in derivatives])
    sink.rewind()
    assert sink.edges is None
    sink.write(0, 8000, values, derivatives)
    _assert_same(sink.partial(), _fed(job, values, derivatives, [(0, 8000)]))


def test_non_finite_values_are_counted_apart():
    x = np.array([3.0, np.nan, -np.inf, 1.0, np.inf, 1.0, np.nan, 7.0])
    edges = histogram_edges(x[:4])
    column = Stats.of([x[:5]], 0, (edges,)).merge(Stats.of([x[5:]], 5, (edges,))).columns[0]
    _assert_like_numpy(column, x, edges)
    counted = (int(column.count), int(column.nan), int(column.posinf), int(column.neginf))
    assert counted == (4, 2, 1, 1)
    assert (float(column.mean), float(column.min), int(column.argmin)) == (3.0, 1.0, 3)
    assert edges[0] == 1.0 and edges[-1] == 3.0  # the pilot's finite range
    assert column.histogram.tolist()[-1] == 1  # 7 above the pilot's range; inf in no bin


def test_nothing_finite_has_no_mean_and_no_place():
    column = Stats.of([np.array([np.nan, np.inf])], 0, (histogram_edges(np.array([np.nan])),))
    column = column.columns[0]
    assert int(column.count) == 0 and np.isnan(column.std) and int(column.argmin) == -1
    np.testing.assert_array_equal(column.edges, np.linspace(0.0, 1.0, BINS + 1))  # as numpy's


def test_tensor_quantities_elementwise():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 2, 3)).round(1)  # rounded: equal values, ties broken by index
    x[7, 0, 1], x[9, 1, 2], x[11, 1, 2] = np.nan, np.inf, -np.inf
    whole = Stats.of([x], 0).columns[0]
    parts = Stats.of([x[:123]], 0).merge(Stats.of([x[123:]], 123)).columns[0]
    for column in (whole, parts):
        assert column.mean.shape == (2, 3) and column.histogram is None
        _assert_like_numpy(column, x)


def test_chan_merge_past_int64_products():
    """4e9 points a side: n_a * n_b overflows int64; two constant halves 1 and 3 have mean 2 and
    M2 = delta^2 n_a n_b / n = 4 * 4e9 * 4e9 / 8e9 = 8e9."""
    def constant(value):
        half = Column.empty(())
        return Column(np.int64(4_000_000_000), np.float64(value), np.float64(0.0), *[
            getattr(half, f) for f in ("min", "argmin", "max", "argmax", "nan", "posinf",
                                       "neginf")])
    merged = constant(1.0).merge(constant(3.0))
    assert int(merged.count) == 8_000_000_000 and float(merged.mean) == 2.0
    assert float(merged.m2) == 8e9 and float(merged.std) == 1.0


def test_float32_values_are_summed_in_float64():
    x = (np.arange(100_000, dtype=np.float32) * np.float32(0.1)) + np.float32(1e4)
    column = Stats.of([x], 0).columns[0]
    wide = x.astype(np.float64)
    assert float(column.mean) == pytest.approx(wide.mean(), rel=1e-14)
    assert float(column.std) == pytest.approx(wide.std(), rel=1e-12)
    assert float(column.max) == float(x.max()) and int(column.argmax) == 99_999


@pytest.mark.parametrize("pilot", [[2.5] * 3, [0.0], [1e20, 1e20], [-1e308, 1e308],
                                   [1.0, float(np.nextafter(1.0, 2.0))]])
def test_edges_always_rise(pilot):
    edges = histogram_edges(np.array(pilot))
    assert len(edges) == BINS + 1 and np.isfinite(edges).all() and (np.diff(edges) > 0).all()
    assert edges[0] <= min(pilot) and edges[-1] >= max(pilot)


def test_execute_streams_statistics_equal_to_the_arrays(job, stored):
    values, derivatives = stored
    chunked = as_job(job, {"chunk_size": 1000})
    sink = StatsSink(chunked)
    done = execute(chunked, sink)
    assert done.verify.ok and done.timings["chunks"] == 8
    summary = json.loads(json.dumps(stats_json(chunked, sink.partial()), allow_nan=False))
    assert set(summary) == {"values", "grads"}
    assert set(summary["grads"]["f"]) == {"x", "y", "r", "f"}
    r, dfdx = values[0], derivatives[0]
    got = summary["values"]["r"]
    assert got["count"] == 8000 and got["mean"] == pytest.approx(r.mean(), rel=1e-12)
    assert got["std"] == pytest.approx(r.std(), rel=1e-12)
    assert (got["min"], got["argmin"], got["max"], got["argmax"]) == (
        r.min(), int(r.argmin()), r.max(), int(r.argmax()))
    i, j = np.unravel_index(int(r.argmin()), (100, 80))
    assert got["where"]["min"] == {"x": np.linspace(-2, 2, 100)[i], "y": np.linspace(-1, 3, 80)[j]}
    counts, edges = np.histogram(r, bins=histogram_edges(r[:PILOT_POINTS]))
    assert got["histogram"] == {"edges": edges.tolist(), "counts": counts.tolist(),
                                "below": int((r < edges[0]).sum()),
                                "above": int((r > edges[-1]).sum())}
    grad = summary["grads"]["f"]["x"]
    assert grad["mean"] == pytest.approx(dfdx.mean(), rel=1e-12)
    assert (grad["min"], grad["argmin"]) == (dfdx.min(), int(dfdx.argmin()))


def test_non_finite_in_the_summary(job, stored):
    values, derivatives = stored
    r = values[0].copy()
    r[[3, 5000]], r[10] = np.nan, -np.inf
    sink = StatsSink(job)
    sink.write(0, 8000, [r, values[1]], derivatives)
    summary = stats_json(job, sink.partial())
    got = summary["values"]["r"]
    assert (got["count"], got["nan"], got["neginf"], got["posinf"]) == (7997, 2, 1, 0)
    assert got["min"] == np.nanmin(np.where(np.isfinite(r), r, np.nan))
    sink.rewind()
    sink.write(0, 8000, [np.full(8000, np.nan), values[1]], derivatives)
    nothing = stats_json(job, sink.partial())["values"]["r"]
    assert nothing["mean"] == "nan" and nothing["std"] == "nan" and nothing["argmin"] is None
    assert nothing["where"] == {"min": None, "max": None}
    json.dumps(nothing, allow_nan=False)


def test_tensor_job_summary_has_nested_statistics():
    """least_squares.yaml: a (20,) residual, Jacobians, and the Hessians of `order: 2`."""
    job = as_job("jobs/least_squares.yaml")
    result = gradsvc.run(job)
    sink = StatsSink(job)
    execute(job, sink)
    summary = json.loads(json.dumps(stats_json(job, sink.partial()), allow_nan=False))
    residual = result.values["residual"]
    got = summary["values"]["residual"]
    assert "histogram" not in got and len(got["mean"]) == residual.shape[1]
    np.testing.assert_allclose(got["mean"], residual.mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(got["argmax"], residual.argmax(axis=0))
    first = int(residual[:, 0].argmax())
    assert got["where"]["max"][0] == {"c": [0.0, 0.3][first]}
    hessian = result.hessians["loss"]["w"]["w"]
    np.testing.assert_allclose(summary["hessians"]["loss"]["w"]["w"]["mean"], hessian.mean(axis=0),
                               rtol=1e-12)
    loss = summary["values"]["loss"]
    assert loss["count"] == 2 and "histogram" in loss
    assert loss["mean"] == pytest.approx(result.values["loss"].mean(), rel=1e-12)


def test_histograms_merge_only_with_the_same_edges():
    x = np.arange(10.0)
    binned = Stats.of([x[:5]], 0, (histogram_edges(x[:5]),))
    with pytest.raises(ValueError, match="different edges"):
        binned.merge(Stats.of([x[5:]], 5, (histogram_edges(x[5:]),)))
    with pytest.raises(ValueError, match="never binned"):
        binned.merge(Stats.of([x[5:]], 5))
    assert binned.merge(Stats.empty([()])).columns[0].histogram.sum() == 5
    with pytest.raises(ValueError, match="scalar quantities"):
        Stats.of([np.zeros((4, 2))], 0, (histogram_edges(x),))


def test_float32_job_places_extremes_at_its_own_coordinates():
    job = as_job("inputs: {x: {linspace: [0.1, 0.7, 7]}}\ngraph: {y: 3 * x}\noutputs: [y]\n",
                 {"dtype": "float32"})
    sink = StatsSink(job)
    execute(job, sink)
    y = stats_json(job, sink.partial())["values"]["y"]
    assert y["argmax"] == 6 and y["where"]["max"] == {"x": float(np.float32(0.7))}
    assert y["max"] == float(np.float32(3) * np.float32(0.7))
