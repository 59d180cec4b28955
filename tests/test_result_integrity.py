"""What is on disk is checked before it is trusted: summary.json records every result file's size
and CRC-32; a rerun of `gradsvc batch` recomputes a damaged result and says what was wrong, and
`load_result` refuses one with one clear error; coordinates are what the kernel saw, built
lazily; one job's unexpected exception never stops the others."""
import json
import shutil
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

import gradsvc
from conftest import cli
from gradsvc.storage import integrity
from gradsvc.batch import run_batch
from gradsvc.errors import ResultError
from gradsvc.storage.store import FORMAT_VERSION, load_result

# 1,000 points on a product grid; dz/da and dz/dx are one array, sin(b) (written once, hard-linked)
JOB = ("name: ring\ninputs:\n  a: {linspace: [0, 1, 40]}\n  b: {linspace: [1, 2, 25]}\n"
       "graph: {x: a + b, y: sin(b), z: x * y}\noutputs: [z]\nsettings: {compile_cache: 'off'}\n")
NPY_BYTES = 128 + 8 * 1000  # float64 .npy: a 128-byte header, then the numbers


@pytest.fixture
def ring(tmp_path) -> tuple[Path, Path]:
    """A finished result of JOB: (the job file, the batch's --out folder)."""
    job = tmp_path / "ring.yaml"
    job.write_text(JOB)
    out = tmp_path / "out"
    assert [o.status for o in run_batch([job], out)] == ["ok"]
    return job, out


def arrays(folder: Path) -> dict:
    return {str(p.relative_to(folder)): np.load(p).tolist() for p in sorted(folder.rglob("*.npy"))}


def test_summary_records_every_file_with_its_size_and_checksum(ring):
    """Values, gradients (hard-linked twins too), axes and results.csv: every file but summary.json
    itself, each record equal to the bytes on disk."""
    _, out = ring
    folder = out / "ring"
    files = json.loads((folder / "summary.json").read_text())["files"]
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert set(files) == on_disk - {"summary.json"}
    assert {"values/z.npy", "grads/z/a.npy", "grads/z/x.npy", "axes/a.npy",
            "results.csv"} <= set(files)
    assert (folder / "grads/z/a.npy").stat().st_ino == (folder / "grads/z/x.npy").stat().st_ino
    for name, record in files.items():
        data = (folder / name).read_bytes()
        assert record == {"bytes": len(data), "crc32": zlib.crc32(data)}, name
    assert files["values/z.npy"]["bytes"] == NPY_BYTES


def _delete_npy(folder: Path) -> None:
    (folder / "values/z.npy").unlink()


def _truncate_npy(folder: Path) -> None:
    path = folder / "values/z.npy"
    path.write_bytes(path.read_bytes()[:800])


def _overwrite_values(folder: Path) -> None:
    """Still a valid .npy of the right size and shape: only the checksum can tell."""
    path = folder / "values/z.npy"
    z = np.load(path)
    z[500] = 42.0
    np.save(path, z)


def _delete_grads(folder: Path) -> None:
    shutil.rmtree(folder / "grads")


DAMAGE = {
    "deleted npy": (_delete_npy, "values/z.npy is missing"),
    "truncated npy": (_truncate_npy,
                      f"values/z.npy is truncated: 800 bytes, expected {NPY_BYTES:,}"),
    "overwritten values": (_overwrite_values, "values/z.npy does not match its checksum"),
    "deleted grads folder": (_delete_grads, "grads/ is missing"),
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
def test_load_result_refuses_a_damaged_folder_with_one_clear_error(ring, damage):
    _, out = ring
    folder = out / "ring"
    do, said = DAMAGE[damage]
    do(folder)
    with pytest.raises(ResultError) as caught:
        load_result(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder}: error: damaged result: {said}")
    assert "hint: rerun the `gradsvc batch` that made it" in message and str(out) in message


def test_checksums_of_a_big_result_are_checked_only_when_asked(ring, monkeypatch):
    """Above CHEAP_TO_VERIFY_BYTES a rerun checks sizes only (a stat per file); `--verify-files`
    and `load_result(verify=True)` read and checksum every file; `verify=False` never does."""
    job, out = ring
    folder = out / "ring"
    _overwrite_values(folder)
    assert load_result(folder, verify=False)["values"]["z"][500] == 42.0
    monkeypatch.setattr(integrity, "CHEAP_TO_VERIFY_BYTES", 1000)
    assert load_result(folder)["values"]["z"][500] == 42.0
    with pytest.raises(ResultError, match="does not match its checksum"):
        load_result(folder, verify=True)
    assert "skipped" in cli("batch", job, "--out", out).stdout
    checked = cli("batch", job, "--out", out, "--verify-files")
    assert checked.exit_code == 0
    assert ("ring: values/z.npy does not match its checksum: its contents changed after it was "
            "written; recomputing") in checked.stderr
    assert load_result(folder, verify=True)["values"]["z"][500] != 42.0


def test_a_damaged_header_of_the_right_size_is_refused_by_load_result(ring, monkeypatch):
    """Without checksums, a header whose shape was changed (same byte count) is still caught when
    the array is loaded, as a ResultError, not numpy's ValueError."""
    _, out = ring
    folder = out / "ring"
    path = folder / "grads/z/a.npy"
    data = path.read_bytes()
    path.write_bytes(data.replace(b"(1000,)", b"(999,) "))
    with pytest.raises(ResultError, match=r"grads/z/a.npy holds a \(999,\) float64 array, "
                       r"expected \(1000,\) float64"):
        load_result(folder, verify=False)
    path.write_bytes(b"\x00" * len(data))
    with pytest.raises(ResultError, match="grads/z/a.npy is not a readable .npy file"):
        load_result(folder, verify=False)


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


def test_a_rerun_recomputes_a_folder_whose_summary_is_gone(ring):
    job, out = ring
    (out / "ring" / "summary.json").unlink()
    result = cli("batch", job, "--out", out)
    assert result.exit_code == 0 and "ring: summary.json is missing; recomputing" in result.stderr
    assert load_result(out / "ring")["summary"]["complete"]


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
    assert load_result(out / "ring")["summary"]["key"]["format"] == FORMAT_VERSION


def test_a_float32_job_stores_the_coordinates_the_kernel_saw(tmp_path):
    """Axes are stored in the job's dtype: float32 0.1 is 0.100000001490116, and that is the
    number the kernel computed with; load_result's coords equal an in-memory run's inputs."""
    job = tmp_path / "f32.yaml"
    job.write_text("name: f32\ninputs:\n  a: {linspace: [0.1, 0.7, 7]}\n  b: [0.1, 0.3]\n"
                   "graph: {z: a * b}\noutputs: [z]\nsettings: {dtype: float32}\n")
    run_batch([job], tmp_path / "out")
    r = load_result(tmp_path / "out" / "f32")
    direct = gradsvc.run(job)
    assert r["axes"]["a"].dtype == np.float32
    np.testing.assert_array_equal(r["axes"]["a"], np.linspace(0.1, 0.7, 7).astype(np.float32))
    for name in ("a", "b"):
        assert r["coords"][name].dtype == np.float32
        np.testing.assert_array_equal(r["coords"][name], direct.values[name])
    np.testing.assert_array_equal(r["values"]["z"], r["coords"]["a"] * r["coords"]["b"])
    row = (tmp_path / "out" / "f32" / "results.csv").read_text().splitlines()[1].split(",")
    assert row[1:3] == [repr(float(np.float32(0.1)))] * 2


def test_product_coordinates_are_built_per_input_on_lookup_in_grid_order():
    from gradsvc.storage.store import PointCoords
    axes = {"a": np.array([1.0, 2.0]), "b": np.array([10.0, 20.0, 30.0]), "c": np.array([5.0])}
    coords = PointCoords({"mode": "product", "shape": [2, 3, 1], "inputs": ["a", "b", "c"]}, axes)
    assert list(coords) == ["a", "b", "c"] and not coords._built
    assert coords["b"].tolist() == [10, 20, 30, 10, 20, 30]
    assert set(coords._built) == {"b"}
    digits = np.unravel_index(np.arange(6), (2, 3, 1))
    for name, d in zip("abc", digits):
        np.testing.assert_array_equal(coords[name], axes[name][d])
    assert not coords["a"].flags.writeable
    assert np.shares_memory(coords["c"], axes["c"])  # a scalar input: a view, no per-point array
    assert "built on lookup" in repr(coords) and len(repr(coords)) < 200


def test_loading_a_big_result_allocates_no_per_point_coordinates(tmp_path):
    """2e6 points: load_result itself allocates next to nothing (arrays are memory-mapped, coords
    lazy), and looking one input's coordinates up costs that one array, no index arrays. (Building
    every input's coordinates with unravel_index took ~10x that: 1 GB at 2e7 points.)"""
    job = tmp_path / "big.yaml"
    job.write_text("name: big\ninputs:\n  a: {linspace: [0, 1, 2000]}\n"
                   "  b: {linspace: [0, 1, 1000]}\ngraph: {z: a * b}\noutputs: [z]\nwrt: inputs\n"
                   "settings: {dtype: float32, keep_values: outputs, compile_cache: 'off'}\n")
    run_batch([job], tmp_path / "out")
    one_array = 2_000_000 * 4
    tracemalloc.start()
    try:
        r = load_result(tmp_path / "out" / "big", verify=False)
        load_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        b = r["coords"]["b"]
        lookup_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert load_peak < 1_000_000, f"load_result peaked at {load_peak:,} bytes"
    assert one_array <= lookup_peak < one_array * 1.1, f"one lookup peaked at {lookup_peak:,} bytes"
    assert b[:3].tolist() == pytest.approx([0, 1 / 999, 2 / 999]) and b.dtype == np.float32


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
    (lambda s, folder: (s["files"].pop("values/z.npy"), (folder / "values/z.npy").unlink()),
     "summary.json names values/z.npy but records no such file"),
    (lambda s, folder: s.pop("status"), "summary.json lacks status"),
    (lambda s, folder: s.update(verify=[]),
     "summary.json's grid, dtype, names or status are not what gradsvc writes"),
])
def test_a_rerun_recomputes_a_result_whose_summary_was_edited(ring, tamper, said):
    """What resuming trusts is what load_result trusts: a file dropped with its record, or a
    summary without the fields a rerun reports, is damage to recompute, not a skip or a bug."""
    job, out = ring
    path = out / "ring" / "summary.json"
    summary = json.loads(path.read_text())
    tamper(summary, out / "ring")
    path.write_text(json.dumps(summary))
    result = cli("batch", job, "--out", out)
    assert result.exit_code == 0 and f"ring: {said}; recomputing" in result.stderr
    assert load_result(out / "ring")["values"]["z"].shape == (1000,)


@pytest.mark.parametrize("tamper, said", [
    (lambda s: s["files"].update({"../../outside.npy": {"bytes": 1, "crc32": 0}}),
     "record of '../../outside.npy' is not a file record of this folder"),
    (lambda s: s["nodes"].append("../../../etc/passwd"),
     "summary.json names values/../../../etc/passwd.npy but records no such file"),
    (lambda s: s["files"]["values/z.npy"].update(bytes="8128"),
     "record of 'values/z.npy' is not a file record"),
    (lambda s: s.update(dtype="complex1024"), "grid, dtype, names or status are not what gradsvc"),
    (lambda s: s["grid"].update(shape="40x25"), "grid, dtype, names or status are not what gradsvc"),
    (lambda s: s["files"].update({"values/z\x00.npy": {"bytes": 1, "crc32": 0}}),
     "is not a file record of this folder"),
])
def test_a_tampered_summary_reads_nothing_outside_its_folder(ring, tamper, said):
    """summary.json is read from disk too: the files it names must be recorded ones inside the
    folder, and every file read was size-checked first."""
    _, out = ring
    path = out / "ring" / "summary.json"
    summary = json.loads(path.read_text())
    tamper(summary)
    path.write_text(json.dumps(summary))
    with pytest.raises(ResultError, match=said):
        load_result(out / "ring")


def test_plotting_a_damaged_folder_is_one_message(ring, tmp_path):
    _, out = ring
    _truncate_npy(out / "ring")
    result = cli("plot", out / "ring", "--out", tmp_path / "ring.png")
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert "damaged result: values/z.npy is truncated" in result.stderr
    assert not (tmp_path / "ring.png").exists()
