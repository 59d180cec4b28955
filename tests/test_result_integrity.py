"""What is stored is checked before it is trusted: summary.json records every object's size (and
the metadata's CRC-32), each chunk carries its crc32c; a rerun of `gradsvc batch` recomputes a
damaged result and says what was wrong, and `load_result` refuses one with one clear error;
coordinates are what the kernel saw; one job's unexpected exception never stops the others."""
import json
import shutil
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

import gradsvc
from conftest import cli
from gradsvc.batch import run_batch
from gradsvc.errors import ResultError
from gradsvc.storage import integrity
from gradsvc.storage.dataset import per_point, point_coordinate
from gradsvc.storage.store import FORMAT_VERSION, load_result

# 1,000 points on a product grid, in 5 blocks of 8 x 25 (chunk_size 200); dz/da and dz/dx are one
# array, sin(b), stored once
JOB = ("name: ring\ninputs:\n  a: {linspace: [0, 1, 40]}\n  b: {linspace: [1, 2, 25]}\n"
       "graph: {x: a + b, y: sin(b), z: x * y}\noutputs: [z]\n"
       "settings: {compile_cache: 'off', chunk_size: 200}\n")
CHUNK = "z/c/2/0"  # the third block's chunk of z


@pytest.fixture
def ring(tmp_path) -> tuple[Path, Path]:
    """A finished result of JOB: (the job file, the batch's --out folder)."""
    job = tmp_path / "ring.yaml"
    job.write_text(JOB)
    out = tmp_path / "out"
    assert [o.status for o in run_batch([job], out)] == ["ok"]
    return job, out


def arrays(folder: Path) -> dict:
    ds = load_result(folder, verify=True)
    return {name: ds[name].values.tolist() for name in ds.variables}


def recorded(folder: Path, key: str) -> dict:
    return json.loads((folder / "summary.json").read_text())["files"][key]


def test_summary_records_every_object_with_its_size_and_the_small_ones_checksums(ring):
    """Chunks, metadata, done markers and results.csv: every object but summary.json itself, each
    record equal to the bytes on disk; chunks (which carry their own crc32c) by size only."""
    _, out = ring
    folder = out / "ring"
    files = json.loads((folder / "summary.json").read_text())["files"]
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert set(files) == on_disk - {"summary.json"}
    assert {"zarr.json", "z/zarr.json", "dz.da/zarr.json", "a/c/0", "results.csv",
            ".gradsvc/done/0-200"} <= set(files)
    assert {f"z/c/{k}/0" for k in range(5)} <= set(files)
    assert not (folder / "dz.dx").exists()  # the twin of dz.da: stored once
    for name, record in files.items():
        data = (folder / name).read_bytes()
        expected = ({"bytes": len(data)} if integrity.is_chunk(name) else
                    {"bytes": len(data), "crc32": zlib.crc32(data)})
        assert record == expected, name


def _delete_chunk(folder: Path) -> None:
    (folder / CHUNK).unlink()


def _truncate_chunk(folder: Path) -> None:
    path = folder / CHUNK
    path.write_bytes(path.read_bytes()[:10])


def _flip_a_byte(folder: Path) -> None:
    """The same size: only the chunk's crc32c can tell."""
    path = folder / CHUNK
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def _delete_variable(folder: Path) -> None:
    shutil.rmtree(folder / "dz.da")


def _edit_metadata(folder: Path) -> None:
    """A same-size edit of an array's metadata (its fill value): its CRC-32 tells."""
    path = folder / "z" / "zarr.json"
    path.write_text(path.read_text().replace('"NaN"', '"Inf"'))


DAMAGE = {
    "deleted chunk": (_delete_chunk, f"{CHUNK} is missing"),
    "truncated chunk": (_truncate_chunk, f"{CHUNK} is truncated: 10 bytes, expected"),
    "flipped byte": (_flip_a_byte, f"{CHUNK} does not match its checksum (crc32c)"),
    "deleted variable": (_delete_variable, "dz.da/ is missing"),
    "edited metadata": (_edit_metadata, "z/zarr.json does not match its checksum"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_rerun_recomputes_a_damaged_result_and_says_what_was_wrong(ring, damage):
    job, out = ring
    folder = out / "ring"
    before = arrays(folder)
    do, said = DAMAGE[damage]
    do(folder)
    result = cli("batch", job, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert f"ring: {said}" in result.stderr and "recomputing" in result.stderr
    assert "skipped" not in result.stdout
    assert arrays(folder) == before
    listed = json.loads((out / "batch.json").read_text())["jobs"][0]
    assert listed["status"] == "ok" and said in listed["repaired"]
    again = cli("batch", job, "--out", out)
    assert "skipped" in again.stdout and "recomputing" not in again.stderr


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_load_result_refuses_a_damaged_store_with_one_clear_error(ring, damage):
    _, out = ring
    folder = out / "ring"
    do, said = DAMAGE[damage]
    do(folder)
    with pytest.raises(ResultError) as caught:
        load_result(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder}: error: damaged result: {said}")
    assert "hint: rerun the `gradsvc batch` that made it" in message and str(out) in message


def test_chunk_checksums_of_a_big_result_are_checked_only_when_asked(ring, monkeypatch):
    """Above CHEAP_TO_VERIFY_BYTES a rerun checks sizes only (one listing) and the metadata's
    checksums; `--verify-files` and `load_result(verify=True)` read every chunk; `verify=False`
    reads none (zarr still checks a chunk's crc32c whenever the data is read)."""
    job, out = ring
    folder = out / "ring"
    _flip_a_byte(folder)
    lazy = load_result(folder, verify=False)
    with pytest.raises(ValueError, match="checksum"):
        lazy["z"].values
    monkeypatch.setattr(integrity, "CHEAP_TO_VERIFY_BYTES", 1000)
    assert load_result(folder)["z"].shape == (40, 25)
    with pytest.raises(ResultError, match=r"z/c/2/0 does not match its checksum \(crc32c\)"):
        load_result(folder, verify=True)
    assert "skipped" in cli("batch", job, "--out", out).stdout
    checked = cli("batch", job, "--out", out, "--verify-files")
    assert checked.exit_code == 0
    assert ("ring: z/c/2/0 does not match its checksum (crc32c): its contents changed after it "
            "was written; recomputing") in checked.stderr
    assert load_result(folder, verify=True)["z"].values[20, 3] == pytest.approx(
        (20 / 39 + 1 + 3 / 24) * np.sin(1 + 3 / 24), rel=1e-14)


@pytest.mark.parametrize("breakage, said", [
    (lambda f: (f / "summary.json").unlink(),
     "not a finished gradsvc result: summary.json is missing"),
    (lambda f: (f / "summary.json").write_text("{"), "summary.json is not readable JSON"),
    (lambda f: shutil.rmtree(f), "is not a folder"),
])
def test_load_result_of_no_result_says_why(ring, breakage, said):
    _, out = ring
    breakage(out / "ring")
    with pytest.raises(ResultError, match=said):
        load_result(out / "ring")


def test_a_rerun_resumes_a_store_whose_summary_is_gone(ring):
    """Changed from "recomputes": without summary.json a store is what a killed run leaves, and
    this one has every range's done marker, so the rerun computes no point, reads the verified
    points back from the store and writes the summary anew."""
    job, out = ring
    before = arrays(out / "ring")
    (out / "ring" / "summary.json").unlink()
    result = cli("batch", job, "--out", out)
    assert result.exit_code == 0
    assert "ring: resuming the unfinished result of an interrupted run" in result.stderr
    summary = load_result(out / "ring").attrs
    assert summary["complete"] and summary["timings"]["points_computed"] == 0
    assert summary["verify"]["ok"] and arrays(out / "ring") == before


def test_a_result_of_another_format_reruns_and_load_result_says_so(ring):
    job, out = ring
    summary_path = out / "ring" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["key"]["format"] = FORMAT_VERSION - 1
    del summary["files"]
    summary_path.write_text(json.dumps(summary))
    with pytest.raises(ResultError, match=f"written in result format {FORMAT_VERSION - 1}"):
        load_result(out / "ring")
    result = cli("batch", job, "--out", out)
    assert result.exit_code == 0 and "skipped" not in result.stdout
    assert "recomputing" not in result.stderr  # another format is no damage: it is just rewritten
    assert load_result(out / "ring").attrs["key"]["format"] == FORMAT_VERSION


def test_a_format_2_folder_of_npy_files_is_recomputed_over(tmp_path):
    """What format 2 left (a .npy per array, summary.json of format 2) is cleared and replaced."""
    job = tmp_path / "ring.yaml"
    job.write_text(JOB)
    old = tmp_path / "out" / "ring"
    (old / "values").mkdir(parents=True)
    np.save(old / "values" / "z.npy", np.zeros(1000))
    (old / "summary.json").write_text(json.dumps({"complete": True, "key": {"format": 2}}))
    assert [o.status for o in run_batch([job], tmp_path / "out")] == ["ok"]
    assert not (old / "values").exists() and load_result(old)["z"].shape == (40, 25)


def test_a_float32_job_stores_the_coordinates_the_kernel_saw(tmp_path):
    """Axes are stored in the job's dtype: float32 0.1 is 0.100000001490116, and that is the
    number the kernel computed with; each point's coordinates equal an in-memory run's inputs."""
    job = tmp_path / "f32.yaml"
    job.write_text("name: f32\ninputs:\n  a: {linspace: [0.1, 0.7, 7]}\n  b: [0.1, 0.3]\n"
                   "graph: {z: a * b}\noutputs: [z]\nsettings: {dtype: float32}\n")
    run_batch([job], tmp_path / "out")
    ds = load_result(tmp_path / "out" / "f32")
    direct = gradsvc.run(job)
    assert ds["a"].dtype == np.float32
    np.testing.assert_array_equal(ds["a"].values, np.linspace(0.1, 0.7, 7).astype(np.float32))
    for name in ("a", "b"):
        assert point_coordinate(ds, name).dtype == np.float32
        np.testing.assert_array_equal(point_coordinate(ds, name), direct.values[name])
    np.testing.assert_array_equal(ds["z"].values, ds["a"].values[:, None] * ds["b"].values)
    row = (tmp_path / "out" / "f32" / "results.csv").read_text().splitlines()[1].split(",")
    assert row[1:3] == [repr(float(np.float32(0.1)))] * 2


def test_per_point_rows_and_coordinates_are_in_grid_order(ring):
    """A product grid's point i sits at np.unravel_index(i, shape) in the axes: per_point and
    point_coordinate give gradsvc.run's (points, ...) rows."""
    job, out = ring
    ds, direct = load_result(out / "ring"), gradsvc.run(job)
    digits = np.unravel_index(np.arange(1000), (40, 25))
    for name, d in zip("ab", digits):
        np.testing.assert_array_equal(point_coordinate(ds, name), ds[name].values[d])
        np.testing.assert_array_equal(point_coordinate(ds, name), direct.values[name])
    assert not point_coordinate(ds, "a").flags.writeable
    np.testing.assert_array_equal(per_point(ds, "dz.dx"), direct.grads["z"]["x"])


def test_loading_a_big_result_reads_no_point_data(tmp_path):
    """2e6 points: load_result opens the store lazily (after a first load has imported xarray
    and dask, it allocates next to nothing), and one slice reads only its chunks."""
    job = tmp_path / "big.yaml"
    job.write_text("name: big\ninputs:\n  a: {linspace: [0, 1, 2000]}\n"
                   "  b: {linspace: [0, 1, 1000]}\ngraph: {z: a * b}\noutputs: [z]\nwrt: inputs\n"
                   "settings: {dtype: float32, keep_values: outputs, compile_cache: 'off'}\n")
    run_batch([job], tmp_path / "out")
    load_result(tmp_path / "out" / "big", verify=False)
    tracemalloc.start()
    try:
        ds = load_result(tmp_path / "out" / "big", verify=False)
        load_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        row = ds["z"].isel(a=1999).values
        row_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert load_peak < 2_000_000, f"load_result peaked at {load_peak:,} bytes"
    assert row_peak < 2_000_000 * 4, f"one row peaked at {row_peak:,} bytes"
    assert row[:3].tolist() == pytest.approx([0, 1 / 999, 2 / 999]) and row.dtype == np.float32


def test_a_job_whose_loading_raises_a_bug_does_not_stop_the_others(tmp_path, monkeypatch):
    """Any exception from loading one job (here an OverflowError, as `arange: [0, 1e300, 1e-300]`
    once raised) is that job's internal error: the others run and batch.json is written."""
    import gradsvc.batch as batch
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "a_bug.yaml").write_text(JOB.replace("ring", "bug"))
    (jobs / "b_good.yaml").write_text(JOB)
    real = batch.load_job

    def load(path, *args):
        if path.name == "a_bug.yaml":
            raise OverflowError("cannot convert float infinity to integer")
        return real(path, *args)
    monkeypatch.setattr(batch, "load_job", load)
    result = cli("batch", jobs, "--out", tmp_path / "out")
    assert result.exit_code == 70
    assert "a_bug.yaml: internal error: OverflowError: cannot convert" in result.stderr
    assert "hint: this is a bug in gradsvc" in result.stderr
    listed = {j["file"].split("/")[-1]: j["status"]
              for j in json.loads((tmp_path / "out" / "batch.json").read_text())["jobs"]}
    assert listed == {"a_bug.yaml": "error", "b_good.yaml": "ok"}


def test_a_huge_arange_beside_a_valid_job_leaves_the_valid_job_done(tmp_path):
    """The issue's own case, for real: whatever loading that file does (an error of its own, or
    a refusal), the valid job beside it runs and batch.json lists both."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "a_huge.yaml").write_text("inputs: {x: {arange: [0, 1e300, 1e-300]}}\n"
                                      "graph: {z: x}\noutputs: [z]\n")
    (jobs / "b_good.yaml").write_text(JOB)
    result = cli("batch", jobs, "--out", tmp_path / "out")
    listed = {j["file"].split("/")[-1]: j["status"]
              for j in json.loads((tmp_path / "out" / "batch.json").read_text())["jobs"]}
    assert listed["b_good.yaml"] == "ok" and listed["a_huge.yaml"] == "invalid"
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "more values than float64 can count" in result.stderr


@pytest.mark.parametrize("tamper, said", [
    (lambda s, folder: (s["files"].pop(CHUNK), (folder / CHUNK).unlink()),
     f"summary.json names {CHUNK} but records no such object"),
    (lambda s, folder: s.pop("status"), "summary.json lacks status"),
    (lambda s, folder: s.update(verify=[]),
     "summary.json's grid, dtype, names or status are not what gradsvc writes"),
])
def test_a_rerun_recomputes_a_result_whose_summary_was_edited(ring, tamper, said):
    """What resuming trusts is what load_result trusts: an object dropped with its record, or a
    summary without the fields a rerun reports, is damage to recompute, not a skip or a bug."""
    job, out = ring
    path = out / "ring" / "summary.json"
    summary = json.loads(path.read_text())
    tamper(summary, out / "ring")
    path.write_text(json.dumps(summary))
    result = cli("batch", job, "--out", out)
    assert result.exit_code == 0 and f"ring: {said}; recomputing" in result.stderr
    assert load_result(out / "ring")["z"].shape == (40, 25)


@pytest.mark.parametrize("tamper, said", [
    (lambda s: s["files"].update({"../../outside": {"bytes": 1}}),
     "record of '../../outside' is not an object record of this result"),
    (lambda s: s["variables"].update({"../../../etc/passwd": {"shape": [1], "chunks": [1]}}),
     "grid, dtype, names or status are not what gradsvc writes"),
    (lambda s: s["files"]["z/zarr.json"].update(bytes="8128"),
     "record of 'z/zarr.json' is not an object record"),
    (lambda s: s.update(dtype="complex1024"), "grid, dtype, names or status are not what gradsvc"),
    (lambda s: s["grid"].update(shape="40x25"), "grid, dtype, names or status are not what gradsvc"),
    (lambda s: s["files"].update({"z\x00/c": {"bytes": 1}}), "is not an object record of this"),
])
def test_a_tampered_summary_reads_nothing_outside_its_folder(ring, tamper, said):
    """summary.json is read from disk too: the objects it names must be recorded ones inside the
    folder, named as gradsvc names them, and every object read was size-checked first."""
    _, out = ring
    path = out / "ring" / "summary.json"
    summary = json.loads(path.read_text())
    tamper(summary)
    path.write_text(json.dumps(summary))
    with pytest.raises(ResultError, match=said):
        load_result(out / "ring")


def test_plotting_a_damaged_folder_is_one_message(ring, tmp_path):
    _, out = ring
    _truncate_chunk(out / "ring")
    result = cli("plot", out / "ring", "--out", tmp_path / "ring.png")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert f"damaged result: {CHUNK} is truncated" in result.stderr
    assert not (tmp_path / "ring.png").exists()
