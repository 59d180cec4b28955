"""Tensor inputs in job files: nested lists, generators with a shape, .npy and .csv data files.

Each problem is an error at its place in the job file (`file:line:col`) with a hint; hostile data
files (paths leaving the folder, symlinks, pickles, crafted headers, huge files) each have a named
test with a one-line docstring, like test_security.py.
"""
import json
import os
import time

import numpy as np
import pytest
from numpy.lib import format as npy_format

from gradsvc import limits
from gradsvc.errors import GradsvcError, JobFileError, JobProblems, LimitError
from gradsvc.job import spec
from gradsvc.job.sampling import Sample
from gradsvc.job.spec import content_hash, job_from_text, job_schema, load_job

XY_CSV = "x1,x2,y\n1,2,3\n4,5,6\n7,8,9\n"


def job_text(*inputs: str, graph: str = "z: b * 2") -> str:
    """A job whose inputs are on lines 2, 3, ... in the order given, then `b: 0.5`."""
    lines = ["inputs:", *(f"  {line}" for line in inputs), "  b: 0.5", "graph:", f"  {graph}",
             "outputs: [z]"]
    return "\n".join(lines) + "\n"


def write(folder, *inputs: str, graph: str = "z: b * 2"):
    path = folder / "job.yaml"
    path.write_text(job_text(*inputs, graph=graph), encoding="utf-8")
    return path


def refused(path, cls=GradsvcError, seconds: float = 3.0) -> GradsvcError:
    start = time.perf_counter()
    with pytest.raises(cls) as info:
        load_job(path)
    assert time.perf_counter() - start < seconds
    return info.value


def place(error) -> tuple:
    return (os.path.basename(error.where.file), error.where.line, error.where.col)


# --- what each form gives ---

def test_npy_matrix_beside_the_job(tmp_path):
    w = np.arange(8.0).reshape(2, 4)
    np.save(tmp_path / "w0.npy", w)
    job = load_job(write(tmp_path, "W: {file: w0.npy}"))
    np.testing.assert_array_equal(job.grid.tensors["W"], w)
    assert job.grid.tensors["W"].dtype == np.float64 and job.graph.shape_of("W") == (2, 4)


def test_npy_of_ints_bools_and_fortran_order_become_float64(tmp_path):
    np.save(tmp_path / "i.npy", np.arange(6, dtype=np.int32).reshape(2, 3))
    np.save(tmp_path / "f.npy", np.asfortranarray(np.arange(6.0, dtype=np.float32).reshape(3, 2)))
    np.save(tmp_path / "b.npy", np.array([True, False]))
    job = load_job(write(tmp_path, "I: {file: i.npy}", "F: {file: f.npy}", "B: {file: b.npy}"))
    t = job.grid.tensors
    np.testing.assert_array_equal(t["I"], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(t["F"], np.arange(6.0).reshape(3, 2))
    np.testing.assert_array_equal(t["B"], [1.0, 0.0])
    assert all(a.dtype == np.float64 and a.flags.c_contiguous for a in t.values())


def test_csv_column_columns_and_whole_table(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "xy.csv").write_text(XY_CSV)
    job = load_job(write(tmp_path, "t: {file: data/xy.csv, column: y}",
                         "D: {file: data/xy.csv, columns: [x1, x2]}", "A: {file: data/xy.csv}"))
    t = job.grid.tensors
    np.testing.assert_array_equal(t["t"], [3, 6, 9])
    np.testing.assert_array_equal(t["D"], [[1, 2], [4, 5], [7, 8]])
    np.testing.assert_array_equal(t["A"], [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    assert [f.path for f in job.grid.files] == ["data/xy.csv"]  # read once for three inputs


def test_csv_with_spaces_a_byte_order_mark_and_a_blank_last_line(tmp_path):
    (tmp_path / "xy.csv").write_bytes("\ufeffx, y\n1, 2.5\n-3e2, 4\n\n".encode())
    job = load_job(write(tmp_path, "y: {file: xy.csv, column: y}", "x: {file: xy.csv, column: x}"))
    np.testing.assert_array_equal(job.grid.tensors["y"], [2.5, 4])
    np.testing.assert_array_equal(job.grid.tensors["x"], [1, -300])


def test_nested_list_is_a_tensor_and_a_plain_list_stays_an_axis():
    job = job_from_text(job_text("M: {tensor: [[1, 2, 3], [4, 5, 6]]}", "v: {tensor: [1, 2]}",
                                 "lam: [0.0, 0.5]"), file="job.yaml")
    np.testing.assert_array_equal(job.grid.tensors["M"], [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(job.grid.tensors["v"], [1, 2])
    assert job.grid.names == ("lam", "b") and job.grid.size == 2 and job.grid.shape == (2, 1)
    assert job.graph.inputs == ("M", "v", "lam", "b")  # every input, in file order


def test_generators_with_a_shape_are_reproducible_from_their_seed():
    text = job_text("u: {tensor: {uniform: [-1.0, 1.0], shape: [4], seed: 0}}",
                    "n: {tensor: {normal: [0, 1], shape: [2, 3], seed: 1}}",
                    "s: {tensor: {linspace: [0.0, 1.0, 101]}}",
                    "r: {tensor: {arange: [0, 1, 0.25]}}", "g: {tensor: {logspace: [0, 2, 3]}}")
    t = job_from_text(text, file="job.yaml").grid.tensors
    # the counter-based samples at the flat C-order index, as an axis of the same spec has them
    np.testing.assert_array_equal(t["u"], Sample("uniform", (-1.0, 1.0), 0).span(0, 4))
    axis = job_from_text("inputs: {a: {normal: [0, 1], n: 6, seed: 1}}\ngraph: {z: a}\n"
                         "outputs: z\n").grid.axes[0].values
    np.testing.assert_array_equal(t["n"], axis.reshape(2, 3))
    np.testing.assert_array_equal(t["s"], np.linspace(0, 1, 101))
    np.testing.assert_array_equal(t["r"], [0, 0.25, 0.5, 0.75])
    np.testing.assert_array_equal(t["g"], [1, 10, 100])
    spec._BUILT.clear()  # built afresh, not remembered: the same numbers again
    np.testing.assert_array_equal(job_from_text(text, file="job.yaml").grid.tensors["n"], t["n"])


def test_tensors_are_read_only():
    t = job_from_text(job_text("v: {tensor: [1, 2]}"), file="job.yaml").grid.tensors["v"]
    with pytest.raises(ValueError):
        t[0] = 5.0


def test_a_scalar_job_has_no_tensors_and_the_same_hash():
    text = job_text("a: [1.0, 2.0]")
    job = job_from_text(text, file="job.yaml")
    assert job.grid.tensors == {} and job.grid.files == () and job.grid.names == ("a", "b")
    assert job.content_hash == content_hash(text)
    import hashlib
    assert job.content_hash == hashlib.sha256(text.encode()).hexdigest()


def test_a_job_of_tensors_only_has_one_point():
    for mode in ("product", "zip"):
        job = job_from_text(f"inputs: {{v: {{tensor: [1, 2]}}}}\ngrid: {mode}\ngraph: {{z: v}}\n"
                            "outputs: [z]\n", file="job.yaml")
        assert job.grid.size == 1 and job.grid.axes == ()


def test_a_job_without_a_file_reads_data_from_the_working_folder(tmp_path, monkeypatch):
    np.save(tmp_path / "w.npy", np.ones(3))
    monkeypatch.chdir(tmp_path)
    job = spec.job_from_dict({"inputs": {"W": {"file": "w.npy"}, "b": 1.0}, "graph": {"z": "b"},
                              "outputs": ["z"]})
    np.testing.assert_array_equal(job.grid.tensors["W"], np.ones(3))


def test_the_schema_has_the_tensor_and_file_forms():
    text = json.dumps(job_schema())
    for word in ("TensorInput", "FileInput", "TensorUniform", "shape", "columns"):
        assert word in text, word


# --- caching and reruns ---

def test_editing_the_csv_changes_the_content_hash_and_a_rerun_sees_it(tmp_path):
    """A job that reads files is never served from memory: the same text may mean new data."""
    csv = tmp_path / "xy.csv"
    csv.write_text(XY_CSV)
    text = job_text("t: {file: xy.csv, column: y}")
    file = str(tmp_path / "job.yaml")
    first = job_from_text(text, file=file)
    csv.write_text(XY_CSV.replace("9", "10"))  # same size or not: neither may matter
    second = job_from_text(text, file=file)
    np.testing.assert_array_equal(first.grid.tensors["t"], [3, 6, 9])
    np.testing.assert_array_equal(second.grid.tensors["t"], [3, 6, 10])
    assert first.content_hash != second.content_hash != content_hash(text)
    csv.write_text(XY_CSV.replace("9", "8"))  # the same size as the first version
    assert job_from_text(text, file=file).content_hash not in (first.content_hash,
                                                               second.content_hash)


def test_a_job_of_generated_tensors_is_remembered_by_its_text():
    text = job_text("v: {tensor: {uniform: [0, 1], shape: [3]}}")
    assert job_from_text(text, "j.yaml").grid is job_from_text(text, "j.yaml").grid


# --- problems, each at its place with a hint ---

def test_ragged_list_names_both_shapes():
    with pytest.raises(JobFileError) as info:
        job_from_text(job_text("W: {tensor: [[1, 2], [3, 4, 5]]}"), file="job.yaml")
    e = info.value
    assert e.message == "input 'W' is ragged: W[1] has shape (3,) but W[0] has shape (2,)"
    assert place(e) == ("job.yaml", 2, 24) and "same shape" in e.hint


def test_a_number_beside_a_row_is_ragged():
    with pytest.raises(JobFileError) as info:
        job_from_text(job_text("W: {tensor: [[1, 2], 3]}"), file="job.yaml")
    assert info.value.message == "input 'W' is ragged: W[1] has shape () but W[0] has shape (2,)"
    assert place(info.value) == ("job.yaml", 2, 24)


def test_a_cell_that_is_not_a_number_is_named():
    for cell, shown in (("x", "'x' (str)"), ("true", "True (bool)"), ("null", "null"),
                        ("[]", None)):
        with pytest.raises(GradsvcError) as info:
            job_from_text(job_text(f"W: {{tensor: [[1, 2], [3, {cell}]]}}"), file="job.yaml")
        e = info.value
        assert place(e) == ("job.yaml", 2, 28), cell
        if shown:
            assert e.message == f"input 'W': the cell W[1, 1] is {shown}, not a number"
            assert e.hint == "a tensor's cells are numbers"


def test_a_non_finite_cell_is_named():
    with pytest.raises(JobFileError) as info:
        job_from_text(job_text("W: {tensor: [1, .nan]}"), file="job.yaml")
    assert info.value.message == "input 'W': the cell W[1] is nan"
    assert place(info.value) == ("job.yaml", 2, 19)


def test_a_tensor_of_one_number_says_to_use_a_scalar(tmp_path):
    np.save(tmp_path / "s.npy", np.float64(3.0))
    e = refused(write(tmp_path, "s: {file: s.npy}"), JobFileError)
    assert "0-dimensional" in e.message and "scalar input" in e.hint
    assert place(e) == ("job.yaml", 2, 13)
    with pytest.raises(JobFileError) as info:
        job_from_text(job_text("v: {tensor: {uniform: [0, 1], shape: []}}"), file="job.yaml")
    assert "0-dimensional" in info.value.message and place(info.value) == ("job.yaml", 2, 40)


def test_shape_problems_are_at_the_shape():
    with pytest.raises(JobFileError) as info:
        job_from_text(job_text("v: {tensor: {normal: [0, 1], shape: [2, 0]}}"), file="job.yaml")
    assert info.value.message == ("input 'v' has shape (2, 0): every dimension needs at least one "
                                  "value")
    assert place(info.value) == ("job.yaml", 2, 39)


def test_a_generator_with_n_is_told_to_use_shape():
    with pytest.raises(JobFileError) as info:
        job_from_text(job_text("v: {tensor: {uniform: [0, 1], n: 3}}"), file="job.yaml")
    e = info.value  # one problem: the 'missing shape' is the same mistake
    assert e.message == "unknown key 'n'" and "shape: [..]" in e.hint
    assert place(e) == ("job.yaml", 2, 33)


def test_a_tensor_that_is_neither_list_nor_generator():
    with pytest.raises(JobFileError) as info:
        job_from_text(job_text("v: {tensor: 5}"), file="job.yaml")
    assert info.value.message.startswith("inputs.v.tensor: a tensor is a nested list of numbers")


def test_missing_file_says_where_it_looked_and_what_is_near(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "xy.csv").write_text(XY_CSV)
    e = refused(write(tmp_path, "t: {file: data/yx.csv}"), JobFileError)
    assert e.message == (f"input 't': no such data file 'data/yx.csv' (looked in "
                         f"{tmp_path / 'data'})")
    assert place(e) == ("job.yaml", 2, 13) and e.hint.startswith("did you mean 'data/xy.csv'?")


def test_unknown_column_did_you_mean(tmp_path):
    (tmp_path / "xy.csv").write_text(XY_CSV)
    e = refused(write(tmp_path, "t: {file: xy.csv, column: yy}"), JobFileError)
    assert e.message == "input 't': 'xy.csv' has no column 'yy'; its columns are x1, x2, y"
    assert e.hint == "did you mean 'y'?" and place(e) == ("job.yaml", 2, 29)
    e = refused(write(tmp_path, "D: {file: xy.csv, columns: [x1, x3]}"), JobFileError)
    assert "no column 'x3'" in e.message and place(e) == ("job.yaml", 2, 35)


def test_column_problems(tmp_path):
    (tmp_path / "xy.csv").write_text(XY_CSV)
    np.save(tmp_path / "w.npy", np.ones(2))
    e = refused(write(tmp_path, "t: {file: w.npy, column: y}"), JobFileError)
    assert "picks columns of a .csv file" in e.message and place(e) == ("job.yaml", 2, 28)
    e = refused(write(tmp_path, "t: {file: xy.csv, column: y, columns: [x1]}"), JobFileError)
    assert "both column: and columns:" in e.message
    (tmp_path / "dup.csv").write_text("a,a\n1,2\n")
    e = refused(write(tmp_path, "t: {file: dup.csv, column: a}"), JobFileError)
    assert "2 columns named 'a'" in e.message


def test_bad_csv_cells_name_their_line_and_column(tmp_path):
    for body, words in (("x,y\n1,2\n3,abc\n", "line 3, column 'y' is 'abc', not a number"),
                        ("x,y\n1,\n", "line 2, column 'y' is empty"),
                        ("x,y\n1,nan\n", "line 2, column 'y' is 'nan': not a finite number"),
                        ("x,y\n1,2\n3\n", "line 3 has 1 cells, but the header row has 2"),
                        ("1,2\n3,4\n", "starts with a row of numbers"),
                        ("x,y\n", "has a header row but no rows of numbers"),
                        ("", "has no header row")):
        (tmp_path / "d.csv").write_text(body)
        e = refused(write(tmp_path, "d: {file: d.csv}"), JobFileError)
        assert words in e.message, (body, e.message)
        assert place(e) == ("job.yaml", 2, 13) and e.hint


def test_non_finite_npy_value_is_named_by_its_index(tmp_path):
    np.save(tmp_path / "w.npy", np.array([[1.0, 2.0], [np.inf, 4.0]]))
    e = refused(write(tmp_path, "W: {file: w.npy}"), JobFileError)
    assert e.message == "input 'W': 'w.npy' at [1, 0] is beyond float64's range (at most about 1.8e308)"


def test_every_inputs_problem_is_reported_at_once(tmp_path):
    e = refused(write(tmp_path, "a: {file: nope.npy}", "W: {tensor: [[1], [2, 3]]}",
                      "c: {linspace: [0, 1, 0]}"), JobProblems)
    assert [p.where.line for p in e.problems] == [2, 3, 4]


def test_a_file_with_another_suffix_is_refused(tmp_path):
    (tmp_path / "w.txt").write_text("1 2 3")
    e = refused(write(tmp_path, "W: {file: w.txt}"), JobFileError)
    assert "is not a .npy or .csv file" in e.message


def test_complex_and_string_npy_are_refused(tmp_path):
    for values in (np.array([1 + 2j]), np.array(["a", "b"])):
        np.save(tmp_path / "w.npy", values)
        e = refused(write(tmp_path, "W: {file: w.npy}"), JobFileError)
        assert f"holds {values.dtype} values" in e.message


def test_a_truncated_npy_is_refused(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((4, 4)))
    data = (tmp_path / "w.npy").read_bytes()
    (tmp_path / "w.npy").write_bytes(data[:-8])
    e = refused(write(tmp_path, "W: {file: w.npy}"), JobFileError)
    assert "holds 120 bytes of data, but its header says (4, 4) float64: 128 bytes" in e.message


# --- hostile data files ---

def test_path_traversal_with_dotdot_is_refused(tmp_path):
    """../x.npy would read a file beside the job's folder: refused before any lookup."""
    (tmp_path / "jobs").mkdir()
    np.save(tmp_path / "x.npy", np.ones(2))
    e = refused(write(tmp_path / "jobs", "W: {file: ../x.npy}"), JobFileError)
    assert "outside the job file's folder" in e.message and place(e) == ("job.yaml", 2, 13)
    e = refused(write(tmp_path / "jobs", "W: {file: sub/../../x.npy}"), JobFileError)
    assert "outside the job file's folder" in e.message


def test_absolute_path_is_refused(tmp_path):
    """/abs/x.npy names a file anywhere: data files are relative to the job file."""
    np.save(tmp_path / "x.npy", np.ones(2))
    (tmp_path / "jobs").mkdir()
    e = refused(write(tmp_path / "jobs", f"W: {{file: '{tmp_path / 'x.npy'}'}}"), JobFileError)
    assert "is an absolute path" in e.message and place(e) == ("job.yaml", 2, 13)
    e = refused(write(tmp_path / "jobs", "W: {file: 'C:/x.npy'}"), JobFileError)
    assert "is an absolute path" in e.message


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    """A link inside the folder to a file outside it is refused (so is a linked folder)."""
    np.save(tmp_path / "secret.npy", np.ones(2))
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "w.npy").symlink_to(tmp_path / "secret.npy")
    (tmp_path / "jobs" / "d").symlink_to(tmp_path, target_is_directory=True)
    e = refused(write(tmp_path / "jobs", "W: {file: w.npy}"), JobFileError)
    assert "symbolic link to a file outside the job file's folder" in e.message
    e = refused(write(tmp_path / "jobs", "W: {file: d/secret.npy}"), JobFileError)
    assert "symbolic link to a file outside the job file's folder" in e.message


def test_symlink_inside_the_folder_is_followed(tmp_path):
    np.save(tmp_path / "w.npy", np.ones(2))
    (tmp_path / "link.npy").symlink_to(tmp_path / "w.npy")
    job = load_job(write(tmp_path, "W: {file: link.npy}"))
    np.testing.assert_array_equal(job.grid.tensors["W"], np.ones(2))


class _Payload:
    """Unpickling this makes a directory: proof that a pickle was run."""

    def __init__(self, canary):
        self.canary = str(canary)

    def __reduce__(self):
        return (os.mkdir, (self.canary,))


def test_pickled_object_npy_is_refused_without_unpickling(tmp_path):
    """An object array's .npy holds a pickle: refused from its header, never loaded."""
    canary = tmp_path / "pwned"
    np.save(tmp_path / "w.npy", np.array([_Payload(canary), 1], dtype=object), allow_pickle=True)
    e = refused(write(tmp_path, "W: {file: w.npy}"), JobFileError)
    assert "holds object values (pickled Python objects)" in e.message and "pickle" in e.hint
    assert not canary.exists(), "the pickle was run"


def test_giant_shape_in_a_crafted_npy_header_is_refused_before_reading(tmp_path):
    """A 100-byte .npy whose header claims 1e12 float64s is refused from its header alone."""
    with open(tmp_path / "w.npy", "wb") as f:
        npy_format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                              "shape": (10 ** 6, 10 ** 6)})
        f.write(b"\0" * 16)
    e = refused(write(tmp_path, "W: {file: w.npy}"), LimitError, seconds=1.0)
    assert "1,000,000,000,000 elements" in e.message and "MAX_TENSOR_ELEMENTS" in e.hint


def test_too_many_dimensions_in_a_crafted_npy_header(tmp_path):
    """A header with 40 dimensions of 1 is refused by MAX_TENSOR_DIMS."""
    with open(tmp_path / "w.npy", "wb") as f:
        npy_format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False,
                                              "shape": (1,) * 40})
        f.write(b"\0" * 8)
    e = refused(write(tmp_path, "W: {file: w.npy}"), LimitError)
    assert "40 dimensions" in e.message and "MAX_TENSOR_DIMS" in e.hint


def test_giant_generator_shape_is_refused_before_allocation():
    """shape: [1e6, 1e6, 1e6] is counted in exact integers and refused, nothing allocated."""
    start = time.perf_counter()
    with pytest.raises(LimitError) as info:
        job_from_text(job_text("v: {tensor: {uniform: [0, 1], shape: [1e6, 1e6, 1e6]}}"),
                      file="job.yaml")
    assert time.perf_counter() - start < 1.0
    assert "1,000,000,000,000,000,000 elements" in info.value.message
    assert place(info.value) == ("job.yaml", 2, 40)


def test_tensors_share_one_element_budget():
    """Many tensors each under the limit are refused together once they pass it."""
    half = limits.MAX_TENSOR_ELEMENTS // 2 + 1
    with pytest.raises(LimitError) as info:
        job_from_text(job_text(f"u: {{tensor: {{uniform: [0, 1], shape: [{half}]}}}}",
                               f"v: {{tensor: {{uniform: [0, 1], shape: [{half}]}}}}"),
                      file="job.yaml")
    assert "with the" in info.value.message and info.value.where.line == 3


def test_deeply_nested_list_is_refused():
    """A list nested past MAX_TENSOR_DIMS levels is refused before it is walked further."""
    deep = "[" * 40 + "1" + "]" * 40
    with pytest.raises(LimitError) as info:
        job_from_text(job_text(f"v: {{tensor: {deep}}}"), file="job.yaml")
    assert "MAX_TENSOR_DIMS" in info.value.hint


def test_too_large_file_is_refused_before_reading(tmp_path):
    """A file past MAX_DATA_FILE_BYTES (here a sparse one) is refused from its size alone."""
    with open(tmp_path / "big.csv", "wb") as f:
        f.truncate(limits.MAX_DATA_FILE_BYTES + 1)
    e = refused(write(tmp_path, "W: {file: big.csv}"), LimitError, seconds=1.0)
    assert f"{limits.MAX_DATA_FILE_BYTES + 1:,} bytes" in e.message
    assert "MAX_DATA_FILE_BYTES" in e.hint and place(e) == ("job.yaml", 2, 13)


def test_data_files_share_one_byte_budget(tmp_path, monkeypatch):
    """Two files each under MAX_DATA_FILE_BYTES are refused once together they pass it."""
    monkeypatch.setattr(limits, "MAX_DATA_FILE_BYTES", 300)
    np.save(tmp_path / "a.npy", np.ones(10))
    np.save(tmp_path / "b.npy", np.ones(10))
    e = refused(write(tmp_path, "A: {file: a.npy}", "B: {file: b.npy}"), LimitError)
    assert "'b.npy'" in e.message and "with the 208 of the files before it" in e.message


def test_huge_csv_stops_at_the_element_limit(tmp_path, monkeypatch):
    """A CSV with more values than the limit is refused while it is read, not held whole."""
    monkeypatch.setattr(limits, "MAX_TENSOR_ELEMENTS", 100)
    (tmp_path / "d.csv").write_text("x\n" + "1\n" * 1000)
    e = refused(write(tmp_path, "d: {file: d.csv}"), LimitError)
    assert "more than 100 values" in e.message


def test_a_fifo_is_refused_without_waiting(tmp_path):
    """A named pipe would block a reader forever: refused as not a regular file."""
    os.mkfifo(tmp_path / "w.csv")
    e = refused(write(tmp_path, "W: {file: w.csv}"), JobFileError, seconds=2.0)
    assert "is not a regular file" in e.message


def test_a_folder_is_refused(tmp_path):
    """A directory named like a data file is not read."""
    (tmp_path / "w.npy").mkdir()
    e = refused(write(tmp_path, "W: {file: w.npy}"), JobFileError)
    assert "is not a regular file" in e.message
