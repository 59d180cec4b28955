"""Results as one Zarr store per job: the Dataset load_result gives (dims, coordinates,
attributes) for product, zip and tensor jobs, read without gradsvc by xarray and dask, the same
numbers on a local disk and under mem://, the sink's resume protocol, twins stored once."""
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

import gradsvc
from gradsvc.api import MemorySink, execute
from gradsvc.errors import ResultError
from gradsvc.storage.dataset import per_point
from gradsvc.storage.layout import result_names
from gradsvc.storage.sink import ZarrSink
from gradsvc.storage.store import load_result, write_result
from conftest import ROOT

PRODUCT = ("name: plane\ninputs:\n  x: {linspace: [-1, 1, 7]}\n  y: [0.5, 1.5, 2.5]\n"
           "graph: {r: x * x + y, f: sin(r) * y}\noutputs: [f]\nwrt: [x, y, r]\n"
           "settings: {chunk_size: 6}\n")  # 7 x 3 points in blocks of 2 x 3


def stored(tmp_path, job, out=None):
    """A job (YAML text, or a job file's path) run through write_result into `out` (default: a
    folder in tmp_path): the Dataset, and gradsvc.run's Result of the same job."""
    job = gradsvc.load_job(job) if not isinstance(job, str) else gradsvc.job_from_text(job)
    written = write_result(out or tmp_path / "out", job, execute)
    return load_result(written.folder, verify=True), gradsvc.run(job)


def test_a_product_grid_is_an_array_with_one_dimension_per_input(tmp_path):
    ds, direct = stored(tmp_path, PRODUCT)
    assert dict(ds.sizes) == {"x": 7, "y": 3}
    np.testing.assert_array_equal(ds["x"].values, np.linspace(-1, 1, 7))
    np.testing.assert_array_equal(ds["y"].values, [0.5, 1.5, 2.5])
    for name in ("f", "df.dx", "df.dy", "df.dr", "r"):
        assert ds[name].dims == ("x", "y") and ds[name].encoding["chunks"] == (2, 3)
    x, y = np.meshgrid(np.linspace(-1, 1, 7), [0.5, 1.5, 2.5], indexing="ij")
    np.testing.assert_allclose(ds["f"].values, np.sin(x * x + y) * y, rtol=1e-15)
    np.testing.assert_allclose(ds["df.dx"].values, np.cos(x * x + y) * y * 2 * x, rtol=1e-14)
    assert ds["f"].sel(x=1.0, y=1.5).values == direct.values["f"][6 * 3 + 1]
    assert ds["df.dr"].attrs == {"quantity": "gradient", "output": "f", "wrt": "r"}
    assert ds["f"].attrs == {"quantity": "value", "node": "f"}
    attrs = ds.attrs
    assert attrs["status"] == "ok" and attrs["verify"]["ok"] and attrs["dtype"] == "float64"
    assert attrs["grid"] == {"mode": "product", "shape": [7, 3], "inputs": ["x", "y"]}
    assert {"run_s", "points_per_s"} <= set(attrs["timings"])
    assert {"gradsvc", "zarr", "xarray"} <= set(attrs["versions"])
    assert attrs["formulas"] == {"r": "x * x + y", "f": "sin(r) * y"}


def test_a_zip_grid_runs_along_point_with_its_inputs_as_coordinates(tmp_path):
    ds, direct = stored(tmp_path, ROOT / "jobs/damped_oscillator.yaml")
    assert dict(ds.sizes) == {"point": 500}
    assert set(ds.coords) == {"t", "k", "A", "w", "phase"}
    assert ds["t"].dims == ("point",) and ds["A"].dims == () and float(ds["A"]) == 2.0
    assert ds["t"].dtype == np.float32  # the job's dtype: what the kernel computed with
    np.testing.assert_array_equal(ds["t"].values, direct.values["t"])
    np.testing.assert_array_equal(ds["k"].values, direct.values["k"])
    for name in ("u", "E", "envelope"):
        assert ds[name].dims == ("point",)
        np.testing.assert_array_equal(ds[name].values, direct.values[name])
    np.testing.assert_array_equal(ds["dE.dt"].values, direct.grads["E"]["t"])
    ordered = ds.sortby("t")  # xarray's own operations work on the coordinates
    assert (np.diff(ordered["t"].values) >= 0).all()


def test_tensor_results_add_their_own_dimensions(tmp_path):
    """A Jacobian's dims are the output's then the wrt name's; a Hessian of one name twice gets
    primes on the second set; tensor inputs are variables of their own dims only."""
    ds, direct = stored(tmp_path, ROOT / "jobs/spherical_jacobian_reverse.yaml")
    assert ds["dp.dq"].dims == ("r", "theta", "phi", "p_0", "q_0")
    assert ds["dp.dq"].attrs == {"quantity": "jacobian", "output": "p", "wrt": "q"}
    np.testing.assert_array_equal(per_point(ds, "dp.dq"), direct.grads["p"]["q"])
    jacobian = ds["dp.dq"].sel(r=2.0, phi=1.0).isel(theta=1).values
    theta = np.linspace(0.3, 2.8, 4)[1]
    assert np.linalg.det(jacobian) == pytest.approx(4.0 * np.sin(theta), rel=1e-12)
    ds, direct = stored(tmp_path, ROOT / "jobs/least_squares.yaml")
    assert ds["d2loss.dw.dw"].dims == ("c", "w_0", "w_0'")
    assert ds["d2loss.dresidual.dresidual"].dims == ("c", "residual_0", "residual_0'")
    assert ds["d2loss.dw.dw"].attrs["wrt"] == ["w", "w"]
    assert ds["X"].dims == ("X_0", "X_1") and ds["X"].shape == (12, 2)
    X = ds["X"].values
    np.testing.assert_allclose(ds["d2loss.dw.dw"].isel(c=0).values, 2 * X.T @ X / 12, rtol=1e-12)
    np.testing.assert_array_equal(per_point(ds, "d2loss.dw.dw"), direct.hessians["loss"]["w"]["w"])


def test_xarray_and_dask_read_a_store_without_gradsvc(tmp_path):
    """A fresh interpreter that never imports gradsvc: xarray.open_zarr and dask.array.from_zarr
    give the same numbers as gradsvc.run, and the attributes hold the job and its verification."""
    ds, direct = stored(tmp_path, PRODUCT)
    reader = ("import json, sys, dask.array, xarray\n"
              "ds = xarray.open_zarr(sys.argv[1])\n"
              "f = dask.array.from_zarr(sys.argv[1], component='df.dx').compute()\n"
              "assert 'gradsvc' not in sys.modules\n"
              "print(json.dumps({'f': ds['f'].values.tolist(), 'dfdx': f.tolist(),\n"
              "                  'dims': list(ds['f'].dims), 'status': ds.attrs['status'],\n"
              "                  'formulas': ds.attrs['formulas'],\n"
              "                  'same_as': ds.attrs['same_as']}))\n")
    done = subprocess.run([sys.executable, "-c", reader, str(tmp_path / "out" / "plane")],
                          capture_output=True, text=True, check=True, cwd=tmp_path)
    read = json.loads(done.stdout)
    assert read["dims"] == ["x", "y"] and read["status"] == "ok" and read["same_as"] == {}
    np.testing.assert_array_equal(np.ravel(read["f"]), direct.values["f"])
    np.testing.assert_array_equal(np.ravel(read["dfdx"]), direct.grads["f"]["x"])
    assert read["formulas"]["f"] == "sin(r) * y"


@pytest.mark.parametrize("job", ["rosenbrock_grid", "damped_oscillator", "least_squares"])
def test_memory_and_local_stores_give_the_numbers_of_gradsvc_run(tmp_path, job):
    path = ROOT / f"jobs/{job}.yaml"
    local, direct = stored(tmp_path, path)
    remote, _ = stored(tmp_path, path, out=f"memory://{tmp_path.name}/out")
    assert set(local.variables) == set(remote.variables)
    for name in local.variables:
        np.testing.assert_array_equal(local[name].values, remote[name].values)
    for name, value in direct.values.items():
        if name in local.data_vars:
            np.testing.assert_array_equal(per_point(local, name), value)
    for out, grads in direct.grads.items():
        for name, grad in grads.items():
            np.testing.assert_array_equal(per_point(remote, f"d{out}.d{name}"), grad)


def test_a_damaged_chunk_under_memory_is_detected(tmp_path):
    import fsspec
    url = f"memory://{tmp_path.name}/out"
    stored(tmp_path, PRODUCT, out=url)
    fs = fsspec.filesystem("memory")
    key = f"/{tmp_path.name}/out/plane/f/c/1/0"
    data = bytearray(fs.cat_file(key))
    data[-1] ^= 1
    fs.pipe_file(key, bytes(data))
    with pytest.raises(ResultError, match=r"f/c/1/0 does not match its checksum \(crc32c\)"):
        load_result(f"{url}/plane")


SEED = ("name: seed\ninputs:\n  a: {linspace: [1, 2, 6]}\n  b: [1.0, 2.0]\n  c: 3.0\n  d: 0.5\n"
        "graph: {x: a + b, y: c * d, z: x * y}\noutputs: [z]\nwrt: inputs\n")


def _chunks(job, block_shape, ranges):
    """Each range's results as the kernel returns them: dz/da and dz/db one array (c*d)."""
    coords = job.grid.coords(np.arange(job.grid.size))
    a, b, c, d = coords.T
    for start, stop in ranges:
        part = slice(start, stop)
        shared = (c * d)[part]
        yield start, stop, [((a + b) * c * d)[part]], [
            shared, shared, ((a + b) * d)[part], ((a + b) * c)[part]]


def test_the_sink_resumes_only_missing_ranges_keeps_twins_once_and_travels_pickled(tmp_path):
    """prepare -> write some ranges -> a new sink (an unpickled one, as a Dask worker gets)
    finds them done; rows() reads stored points back, twins included; rewind forgets them."""
    job = gradsvc.job_from_text(SEED + "settings: {keep_values: outputs}\n")
    assert result_names(job) == ["z", "dz.da", "dz.db", "dz.dc", "dz.dd"]
    block_shape, ranges = job.grid.blocks(4)  # (2, 2, 1, 1): 3 ranges of 4 points
    assert block_shape == (2, 2, 1, 1) and ranges == [(0, 4), (4, 8), (8, 12)]
    folder = tmp_path / "seed"
    sink = ZarrSink(folder, job)
    assert sink.prepare(block_shape, ranges, {2: 1}) == ranges
    chunks = list(_chunks(job, block_shape, ranges))
    sink.write(*chunks[0][:2], chunks[0][2], chunks[0][3])
    worker = pickle.loads(pickle.dumps(sink))  # no open handles travel
    worker.write(*chunks[2][:2], chunks[2][2], chunks[2][3])
    again = ZarrSink(folder, job)
    assert again.prepare(block_shape, ranges, {2: 1}) == [(4, 8)]
    assert not (folder / "dz.db").exists() and (folder / "dz.da" / "zarr.json").exists()
    values, derivatives = again.rows(np.array([1, 9, 11]))
    expected = list(_chunks(job, block_shape, [(0, 12)]))[0]
    np.testing.assert_array_equal(values[0], expected[2][0][[1, 9, 11]])
    for got, want in zip(derivatives, expected[3]):
        np.testing.assert_array_equal(got, want[[1, 9, 11]])
    assert ZarrSink(folder, job).prepare(block_shape, ranges, {}) == ranges  # other twins: anew
    again = ZarrSink(folder, job)
    again.prepare(block_shape, ranges, {})
    again.write(*chunks[1][:2], chunks[1][2], [chunks[1][3][0].copy(), *chunks[1][3][1:]])
    again.rewind()
    assert ZarrSink(folder, job).prepare(block_shape, ranges, {}) == ranges


def test_a_store_is_resumed_only_by_its_kind_of_kernel_and_finished_only_whole(tmp_path):
    """Ranges written by a kernel with the fast sin/cos round otherwise than XLA's: a store of
    another kind of kernel starts anew. Junk in the markers' folder is no marker. A store
    missing a range (written where this process cannot see it) is never declared complete."""
    job = gradsvc.job_from_text(SEED + "settings: {keep_values: outputs}\n")
    block_shape, ranges = job.grid.blocks(4)
    folder = tmp_path / "seed"
    chunks = list(_chunks(job, block_shape, ranges))
    sink = ZarrSink(folder, job)
    sink.prepare(block_shape, ranges, {2: 1}, kernel=(True, False))
    sink.write(*chunks[0][:2], chunks[0][2], chunks[0][3])
    (folder / ".gradsvc" / "done" / "notes.txt~").write_text("an editor's backup")
    (folder / ".gradsvc" / "done" / "4-8").write_text('{"objects": {')  # torn by a kill
    assert ZarrSink(folder, job).prepare(block_shape, ranges, {2: 1},
                                         kernel=(True, False)) == ranges[1:]
    again = ZarrSink(folder, job)
    assert again.prepare(block_shape, ranges, {2: 1}, kernel=(False, False)) == ranges
    again.write(*chunks[0][:2], chunks[0][2], chunks[0][3])
    with pytest.raises(ResultError, match="2 of 3 ranges of points are not in the store"):
        again.finish(job, execute(job, MemorySink(job)))
    assert not (folder / "summary.json").exists()


def test_a_job_kept_as_statistics_stores_attributes_only(tmp_path):
    """keep: stats: no per-point arrays at all; the store is a group with the job and the
    summary in its attributes, and summary.json has the statistics."""
    job = gradsvc.job_from_text(SEED + "settings: {keep: stats}\n")
    written = write_result(tmp_path / "out", job, execute)
    folder = tmp_path / "out" / "seed"
    z = gradsvc.run(SEED).values["z"]
    got = written.summary["stats"]["values"]["z"]
    assert got["count"] == 12 and got["mean"] == pytest.approx(z.mean(), rel=1e-15)
    assert (got["min"], got["max"]) == (z.min(), z.max())
    ds = load_result(folder)
    assert not ds.variables and ds.attrs["stats"] == written.summary["stats"]
    assert ds.attrs["name"] == "seed" and ds.attrs["status"] == "ok"
    assert sorted(p.name for p in folder.iterdir()) == ["summary.json", "zarr.json"]
